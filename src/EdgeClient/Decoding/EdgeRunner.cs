using System.Runtime.CompilerServices;
using SpecEdge.EdgeClient.Client;
using SpecEdge.EdgeClient.Drafting;
using SpecEdge.Shared.Decoding;

namespace SpecEdge.EdgeClient.Decoding;

/// <summary>Edge-only decoding with the draft model: no verifier, so the output is the draft model's own.</summary>
internal sealed class EdgeRunner(DraftEngine engine, GenerationRequest request, GenerationTracker tracker)
{
    public async IAsyncEnumerable<CommittedToken> RunAsync([EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var stop = new StopRule(tracker.PromptLength, request.MaxNewTokens, engine.MaxSequenceLength, request.StopAtEos, engine.Model.Tokenizer.Eos);
        var rule = new AcceptanceRule(engine.Model.VocabSize);
        tracker.LapMs();
        for (var round = 1; ; round++)
        {
            var next = await engine.NextAsync(tracker.Tokens, request.Sampling, rule, cancellationToken).ConfigureAwait(false);
            var (_, reason) = stop.Apply(tracker.Tokens.Count, [next]);
            var wall = tracker.LapMs();
            tracker.AddRound(new RoundRecord
            {
                Round = round,
                Drafted = 0,
                Accepted = 0,
                Committed = 1,
                DraftMs = GenerationTracker.Round3(wall),
                NetworkAndQueueMs = 0,
                VerifyMs = 0,
                WallMs = GenerationTracker.Round3(wall),
            });
            foreach (var token in tracker.Commit([next]))
            {
                yield return token;
            }

            if (reason != FinishReason.None)
            {
                tracker.FinishReason = reason;
                yield break;
            }
        }
    }
}
