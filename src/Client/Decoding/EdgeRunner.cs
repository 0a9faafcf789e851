using System.Runtime.CompilerServices;
using SpecEdge.EdgeClient.Client;
using SpecEdge.EdgeClient.Drafting;
using SpecEdge.Shared.Decoding;

namespace SpecEdge.EdgeClient.Decoding;

/// <summary>
/// Decoding with the draft model alone, one token at a time: edge mode (the draft's own output), and the degraded policy
/// (tokens marked unverified while no verifier answers; the caller stops the loop when one does).
/// </summary>
/// <param name="engine">The draft.</param>
/// <param name="request">The generation.</param>
/// <param name="tracker">The generation's committed tokens and records.</param>
/// <param name="maxLength">The longest sequence (a verifier's limit, so a degraded generation can resume on it); the draft's when null.</param>
/// <param name="verified">Whether the tokens count as verified (false while degraded).</param>
internal sealed class EdgeRunner(DraftEngine engine, GenerationRequest request, GenerationTracker tracker, int? maxLength = null, bool verified = true)
{
    public async IAsyncEnumerable<CommittedToken> RunAsync([EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var stop = new StopRule(tracker.PromptLength, request.MaxNewTokens, Math.Min(maxLength ?? int.MaxValue, engine.MaxSequenceLength), request.StopAtEos, engine.Model.Tokenizer.Eos);
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
            foreach (var token in tracker.Commit([next], verified))
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
