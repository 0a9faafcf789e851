using System.Runtime.CompilerServices;
using Grpc.Core;
using SpecEdge.EdgeClient.Client;
using SpecEdge.EdgeClient.Transport;
using SpecEdge.Protocol.V1;
using SpecEdge.Shared.Protocol;
using SpecEdge.Shared.Tokenization;
using DomainFinish = SpecEdge.Shared.Decoding.FinishReason;

namespace SpecEdge.EdgeClient.Decoding;

/// <summary>
/// Cloud-only autoregressive decoding: the verifier generates alone and streams each token (the baseline). A resumed
/// generation sends the tokens committed so far as its prompt and asks for the rest.
/// </summary>
internal sealed class CloudRunner(Verifier.VerifierClient grpc, GenerationRequest request, GenerationTracker tracker, TimeSpan tokenTimeout)
{
    public async IAsyncEnumerable<CommittedToken> RunAsync([EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var generate = new GenerateRequest
        {
            Sampling = request.Sampling.ToWire(),
            MaxNewTokens = request.MaxNewTokens - tracker.Generated,
            StopAtEos = request.StopAtEos,
            ClientLabel = request.ClientLabel ?? "specedge-edge cloud",
        };
        generate.PromptIds.AddRange(tracker.Tokens.Select(t => t.Value));
        tracker.Phase = GenerationPhase.Prefill;
        using var call = grpc.Generate(generate, cancellationToken: cancellationToken);
        tracker.LapMs();
        var round = tracker.Rounds.Count;
        while (await NextAsync(call.ResponseStream, cancellationToken).ConfigureAwait(false))
        {
            var reply = call.ResponseStream.Current;
            tracker.Phase = GenerationPhase.Streaming;
            var wall = tracker.LapMs();
            var verifyMs = reply.ComputeMicros / 1000.0;
            tracker.AddRound(new RoundRecord
            {
                Round = ++round,
                Drafted = 0,
                Accepted = 0,
                Committed = 1,
                DraftMs = 0,
                NetworkAndQueueMs = GenerationTracker.Round3(Math.Max(0, wall - verifyMs)),
                VerifyMs = GenerationTracker.Round3(verifyMs),
                QueueMs = GenerationTracker.Round3(reply.QueueMicros / 1000.0),
                StageMs = [GenerationTracker.Round3(verifyMs)],
                WallMs = GenerationTracker.Round3(wall),
            });
            foreach (var token in tracker.Commit([new TokenId(reply.TokenId)]))
            {
                yield return token;
            }

            if (reply.Finished)
            {
                tracker.Phase = GenerationPhase.Idle;
                tracker.FinishReason = reply.FinishReason.ToDomain();
                break;
            }
        }

        if (tracker.FinishReason == DomainFinish.None)
        {
            throw new ProtocolViolationException("the verifier ended the Generate stream before a finished token");
        }
    }

    private async Task<bool> NextAsync(IAsyncStreamReader<GenerateReply> replies, CancellationToken cancellationToken)
    {
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(tokenTimeout);
        try
        {
            return await replies.MoveNext(deadline.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new Transport.RoundTimeoutException($"no token from the verifier within {tokenTimeout.TotalSeconds:0.###} s");
        }
    }
}
