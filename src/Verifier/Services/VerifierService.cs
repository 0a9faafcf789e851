using System.Threading.Channels;
using Grpc.Core;
using SpecEdge.CloudVerifier.Hosting;
using SpecEdge.CloudVerifier.Logging;
using SpecEdge.CloudVerifier.Scheduling;
using SpecEdge.CloudVerifier.Security;
using SpecEdge.CloudVerifier.Sessions;
using SpecEdge.CloudVerifier.Telemetry;
using SpecEdge.Protocol.V1;
using SpecEdge.Shared.Decoding;
using DomainFinish = SpecEdge.Shared.Decoding.FinishReason;
using SpecEdge.Shared.Protocol;
using SpecEdge.Shared.Runtime;
using SpecEdge.Shared.Tokenization;

namespace SpecEdge.CloudVerifier.Services;

/// <summary>
/// Samples the token after a Generate step from the final stage's logits (on the scheduler's thread).
/// </summary>
internal sealed class NextToken(AcceptanceRule rule, SamplingConfig sampling, int finalStage) : IStageObserver
{
    public int Position { get; set; }

    public TokenId Token { get; private set; }

    public void OnStage(int stage, LogitsView logits)
    {
        if (stage == finalStage)
        {
            Token = rule.SampleTarget(logits.Last, sampling, Position);
        }
    }
}

/// <summary>
/// The gRPC Verifier service. A Decode stream has one reader loop (client messages into a small bounded inbox), one
/// processing loop (rounds in order) and one writer (a bounded outbox drained to the response stream).
/// </summary>
public sealed class VerifierService : Verifier.VerifierBase
{
    /// <summary>
    /// Rounds a stream may have waiting while one is verified: with K candidates per round, up to K - 1 sent after the one
    /// being verified (each dropped once read), K for the next round, and the next round sent fresh after its final
    /// verdict if none held: 2K (2 with one candidate: a conditional round and one more).
    /// </summary>
    private static int InboxCapacity(DecodeSession session) => 2 * session.Candidates;

    private const int OutboxCapacity = 16;

    /// <summary>How long a shutting-down verifier waits for an edge to end its side after <c>Draining</c>.</summary>
    private static readonly TimeSpan HandOffTimeout = TimeSpan.FromSeconds(2);

    private readonly TargetModel _target;
    private readonly BatchScheduler _scheduler;
    private readonly SessionRegistry _sessions;
    private readonly TimeProvider _time;
    private readonly VerifierMetrics _metrics;
    private readonly ILogger<VerifierService> _logger;

    /// <summary>Created per call by ASP.NET Core's gRPC host, over the verifier's shared services.</summary>
    public VerifierService(TargetModel target, BatchScheduler scheduler, SessionRegistry sessions, TimeProvider time, VerifierMetrics metrics, ILogger<VerifierService> logger)
    {
        _target = target;
        _scheduler = scheduler;
        _sessions = sessions;
        _time = time;
        _metrics = metrics;
        _logger = logger;
    }

    /// <summary>What the verifier serves: model, tokenizer, exits and limits.</summary>
    public override Task<ModelDescription> Describe(DescribeRequest request, ServerCallContext context) => Task.FromResult(_target.Describe());

    /// <summary>One speculative generation: Open, then rounds answered with early and final verdicts, until it ends.</summary>
    public override async Task Decode(IAsyncStreamReader<EdgeMessage> requestStream, IServerStreamWriter<VerifierMessage> responseStream, ServerCallContext context)
    {
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken);
        using var idle = new CancellationTokenSource(Timeout.InfiniteTimeSpan, _time);
        var idleTimeout = TimeSpan.FromSeconds(_target.Limits.IdleTimeoutSeconds);
        var outbox = Channel.CreateBounded<VerifierMessage>(new BoundedChannelOptions(OutboxCapacity) { SingleReader = true });
        var writer = DrainAsync(outbox.Reader, responseStream, stop.Token);
        var sessionId = "(opening)";
        using var span = VerifierTracing.StartSession("specedge.verifier.decode", context);
        DecodeSession? session = null;
        Task reader = Task.CompletedTask;
        try
        {
            idle.CancelAfter(idleTimeout);
            var open = await ReadOpenAsync(requestStream, idle.Token, stop.Token).ConfigureAwait(false);
            idle.CancelAfter(Timeout.InfiniteTimeSpan);
            var plan = DecodeSession.Plan(open, _target);
            using var slot = _sessions.Reserve(Identity(context), _scheduler.BytesPerSession);
            (session, var opened) = await DecodeSession.OpenAsync(plan, _target, _scheduler, _time, stop.Token).ConfigureAwait(false);
            sessionId = session.Id;
            _metrics.SessionOpened("decode");
            span?.SetTag("specedge.session.id", sessionId);
            span?.SetTag("specedge.prompt.tokens", open.PromptIds.Count);
            VerifierLog.SessionOpened(_logger, sessionId, open.ClientLabel, open.PromptIds.Count, open.CommittedIds.Count, session.Sampling.ToString(), open.EarlyVerdicts);
            // Armed before Opened goes out, so the idle window never starts after the edge has seen Opened (armed after
            // it, the idle test's fake clock could advance in between, and the eviction came 29 s late).
            idle.CancelAfter(idleTimeout);
            await outbox.Writer.WriteAsync(new VerifierMessage { Opened = opened }, stop.Token).ConfigureAwait(false);

            var capacity = InboxCapacity(session);
            var inbox = Channel.CreateBounded<(Draft Draft, DateTimeOffset ReceivedAt)>(new BoundedChannelOptions(capacity) { SingleReader = true, SingleWriter = true, FullMode = BoundedChannelFullMode.Wait });
            reader = ReadRoundsAsync(requestStream, inbox.Writer, capacity, idle, _time, stop.Token);
            try
            {
                await ProcessRoundsAsync(session, inbox.Reader, outbox.Writer, idle, idleTimeout, reader, _sessions, _metrics, stop.Token).ConfigureAwait(false);
            }
            catch (RpcException ex) when (ex.StatusCode == StatusCode.Unavailable && _sessions.ShuttingDown)
            {
                _metrics.SessionHandedOff();
                span?.SetTag("specedge.session.handed_off", true);
                await HandOffAsync(inbox.Reader, outbox, writer, idle, session.CommittedLength, stop.Token).ConfigureAwait(false);
                throw;
            }

            await AwaitEdgeCloseAsync(inbox.Reader, outbox, writer, idle, idleTimeout, stop.Token).ConfigureAwait(false);
            VerifierLog.SessionEnded(_logger, sessionId, session.LastRound, session.Generated, session.Finished ? session.FinishReason.ToString() : "closed by the edge");
        }
        catch (RpcException ex)
        {
            VerifierLog.MessageRefused(_logger, sessionId, ex.StatusCode, ex.Status.Detail);
            span?.SetStatus(System.Diagnostics.ActivityStatusCode.Error, ex.Status.Detail);
            throw;
        }
        catch (OperationCanceledException) when (idle.IsCancellationRequested && !context.CancellationToken.IsCancellationRequested)
        {
            VerifierLog.SessionIdle(_logger, sessionId, _target.Limits.IdleTimeoutSeconds);
            throw new RpcException(new Status(StatusCode.DeadlineExceeded, $"session closed after {_target.Limits.IdleTimeoutSeconds} s without a message from the edge (Limits:IdleTimeoutSeconds)"));
        }
        finally
        {
            outbox.Writer.TryComplete();
            await ObserveAsync(writer).ConfigureAwait(false);
            await stop.CancelAsync().ConfigureAwait(false);
            await ObserveAsync(reader).ConfigureAwait(false);
            if (session is not null)
            {
                session.Dispose();
            }
        }
    }

    /// <summary>Cloud autoregressive decoding: the target alone, one token per batched step, streamed as it is drawn.</summary>
    public override async Task Generate(GenerateRequest request, IServerStreamWriter<GenerateReply> responseStream, ServerCallContext context)
    {
        var cancellationToken = context.CancellationToken;
        var model = _target.Model;
        var limits = _target.Limits;
        if (request.PromptIds.Count == 0)
        {
            throw Refusal.InvalidArgument("GenerateRequest.prompt_ids is empty: a prompt needs at least one token");
        }

        if (request.PromptIds.Count > limits.MaxPromptTokens || request.PromptIds.Count >= _target.MaxSequenceLength)
        {
            throw Refusal.InvalidArgument($"the prompt holds {request.PromptIds.Count} tokens, over the verifier's limit of {Math.Min(limits.MaxPromptTokens, _target.MaxSequenceLength - 1)}");
        }

        for (var i = 0; i < request.PromptIds.Count; i++)
        {
            if ((uint)request.PromptIds[i] >= (uint)model.VocabSize)
            {
                throw Refusal.InvalidArgument($"GenerateRequest.prompt_ids[{i}] = {request.PromptIds[i]} is outside the vocabulary of {model.VocabSize}");
            }
        }

        if (request.MaxNewTokens < 1 || request.MaxNewTokens > limits.MaxNewTokens)
        {
            throw Refusal.InvalidArgument($"GenerateRequest.max_new_tokens = {request.MaxNewTokens} is out of range: use 1 to {limits.MaxNewTokens}");
        }

        var sampling = request.Sampling.ToConfig();
        if (sampling.Validate() is { } problem)
        {
            throw Refusal.InvalidArgument($"GenerateRequest.sampling: {problem}");
        }

        using var span = VerifierTracing.StartSession("specedge.verifier.generate", context);
        using var slot = _sessions.Reserve(Identity(context), _scheduler.BytesPerSession);
        _metrics.SessionOpened("generate");
        var sequence = _scheduler.OpenSlot();
        try
        {
            var tokens = request.PromptIds.Select(id => new TokenId(id)).ToList();
            var stopRule = new StopRule(tokens.Count, request.MaxNewTokens, _target.MaxSequenceLength, request.StopAtEos, model.Tokenizer.Eos);
            var next = new NextToken(_target.CreateAcceptanceRule(), sampling, model.Stages.Count - 1);
            var feed = tokens.ToArray();
            for (uint index = 0; ; index++)
            {
                // One row per token in the shared batches (the prompt first, in chunks).
                var start = _time.GetTimestamp();
                next.Position = tokens.Count;
                var outcome = await _scheduler.RunAsync(sequence, feed, next, cancellationToken).ConfigureAwait(false);
                var token = next.Token;
                _metrics.TokenGenerated();
                var (_, reason) = stopRule.Apply(tokens.Count, [token]);
                tokens.Add(token);
                await responseStream.WriteAsync(new GenerateReply
                {
                    TokenId = token.Value,
                    Index = index,
                    Finished = reason != DomainFinish.None,
                    FinishReason = reason.ToWire(),
                    ComputeMicros = (long)(_time.GetElapsedTime(start) - outcome.Queued).TotalMicroseconds,
                    QueueMicros = (long)outcome.Queued.TotalMicroseconds,
                }, cancellationToken).ConfigureAwait(false);
                if (reason != DomainFinish.None)
                {
                    _scheduler.Finished(sequence);
                    return;
                }

                if (_sessions.ShuttingDown)
                {
                    throw ShuttingDown(tokens.Count);
                }

                feed = [token];
            }
        }
        finally
        {
            _scheduler.CloseSlot(sequence);
        }
    }

    /// <summary>Wire form of a session's verdict on a round.</summary>
    private static VerifierMessage ToWire(RoundVerdict verdict) => verdict switch
    {
        EarlyRoundVerdict early => new VerifierMessage
        {
            Early = new EarlyVerdict
            {
                Round = early.Round,
                ExitLayer = (uint)early.ExitLayer,
                Confidence = (float)early.Confidence,
                ElapsedMicros = (long)early.Elapsed.TotalMicroseconds,
                Alternatives = { early.Alternatives.Select(a => a.ToWire()) },
            }.With(early.Verdict),
        },
        FinalRoundVerdict final => new VerifierMessage
        {
            Final = new FinalVerdict
            {
                Round = final.Round,
                Finished = final.Finish != DomainFinish.None,
                FinishReason = final.Finish.ToWire(),
                CommittedLength = (uint)final.CommittedLength,
                Timings = ToWire(final.Timings),
            }.With(final.Verdict),
        },
        DroppedRound dropped => new VerifierMessage { Dropped = new RoundDropped { Round = dropped.Round, Reason = dropped.Reason, Invalid = dropped.Invalid } },
        _ => throw new ArgumentOutOfRangeException(nameof(verdict), verdict.GetType().Name, "unknown round verdict"),
    };

    private static ServerTimings ToWire(RoundTimings timings)
    {
        var wire = new ServerTimings
        {
            QueueMicros = (long)timings.Queued.TotalMicroseconds,
            TotalMicros = (long)timings.Total.TotalMicroseconds,
            EmulatedMicros = (long)timings.Emulated.TotalMicroseconds,
            ReceivedUnixMicros = ToUnixMicros(timings.Received),
            VerdictUnixMicros = ToUnixMicros(timings.Decided),
        };
        foreach (var stage in timings.Stages)
        {
            wire.StageMicros.Add((long)stage.TotalMicroseconds);
        }

        return wire;
    }

    private static long ToUnixMicros(DateTimeOffset time) => (time - DateTimeOffset.UnixEpoch).Ticks / 10;

    private static async Task<Open> ReadOpenAsync(IAsyncStreamReader<EdgeMessage> requests, CancellationToken idle, CancellationToken stop)
    {
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(idle, stop);
        if (!await requests.MoveNext(linked.Token).ConfigureAwait(false))
        {
            throw Refusal.FailedPrecondition("the stream ended before Open: a Decode stream starts with Open");
        }

        return requests.Current.KindCase == EdgeMessage.KindOneofCase.Open
            ? requests.Current.Open
            : throw Refusal.FailedPrecondition($"the first message was {requests.Current.KindCase}: a Decode stream starts with Open");
    }

    private static RpcException ShuttingDown(int committedLength) =>
        new(new Status(StatusCode.Unavailable, $"the verifier is shutting down: resume the generation on another verifier (committed length {committedLength})"));

    private static ApiKeyIdentity? Identity(ServerCallContext context) =>
        context.UserState.TryGetValue(ApiKeyAuthenticator.UserStateKey, out var identity) ? (ApiKeyIdentity)identity : null;

    private static async Task ReadRoundsAsync(IAsyncStreamReader<EdgeMessage> requests, ChannelWriter<(Draft Draft, DateTimeOffset ReceivedAt)> inbox, int capacity, CancellationTokenSource idle, TimeProvider time, CancellationToken stop)
    {
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(idle.Token, stop);
        try
        {
            while (await requests.MoveNext(linked.Token).ConfigureAwait(false))
            {
                var message = requests.Current;
                switch (message.KindCase)
                {
                    case EdgeMessage.KindOneofCase.Draft:
                        if (!inbox.TryWrite((message.Draft, time.GetUtcNow())))
                        {
                            throw Refusal.FailedPrecondition($"round {message.Draft.Round} arrived while {capacity} rounds were already waiting: send a round after the previous final verdict, or at most Open.candidates conditional rounds ahead");
                        }

                        break;
                    case EdgeMessage.KindOneofCase.Open:
                        throw Refusal.FailedPrecondition("a second Open on the same stream: one Decode stream is one generation");
                    case EdgeMessage.KindOneofCase.Close:
                        inbox.TryComplete();
                        return;
                    default:
                        throw Refusal.InvalidArgument("an empty EdgeMessage: set open, draft or close");
                }
            }

            inbox.TryComplete();
        }
        catch (Exception ex)
        {
            inbox.TryComplete(ex);
            throw;
        }
    }

    private static async Task ProcessRoundsAsync(DecodeSession session, ChannelReader<(Draft Draft, DateTimeOffset ReceivedAt)> inbox, ChannelWriter<VerifierMessage> outbox, CancellationTokenSource idle, TimeSpan idleTimeout, Task reader, SessionRegistry sessions, VerifierMetrics metrics, CancellationToken stop)
    {
        using var waitForRound = CancellationTokenSource.CreateLinkedTokenSource(stop, sessions.Stopping);
        var early = new List<EarlyRoundVerdict>();
        try
        {
            while (true)
            {
                // Rounds in flight finish; between rounds, a shutting-down verifier sends the edge elsewhere.
                bool more;
                try
                {
                    more = await inbox.WaitToReadAsync(waitForRound.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException) when (sessions.ShuttingDown && !stop.IsCancellationRequested)
                {
                    more = false;
                }

                if (sessions.ShuttingDown)
                {
                    throw ShuttingDown(session.CommittedLength);
                }

                if (!more)
                {
                    return;
                }

                var (draft, receivedAt) = await inbox.ReadAsync(stop).ConfigureAwait(false);
                idle.CancelAfter(Timeout.InfiniteTimeSpan);
                if (draft.Condition is not null && session.CheckCondition(draft) is { } dropped)
                {
                    metrics.RoundDropped();
                    await outbox.WriteAsync(ToWire(dropped), stop).ConfigureAwait(false);
                }
                else
                {
                    using var span = VerifierTracing.Source.StartActivity("specedge.verifier.round");
                    span?.SetTag("specedge.round", draft.Round);
                    span?.SetTag("specedge.round.drafted", draft.Ids.Count);
                    early.Clear();
                    await foreach (var verdict in session.VerifyAsync(draft, stop, receivedAt).ConfigureAwait(false))
                    {
                        await outbox.WriteAsync(ToWire(verdict), stop).ConfigureAwait(false);
                        Observe(verdict, draft, early, metrics, span);
                    }
                }

                if (session.Finished)
                {
                    return;
                }

                idle.CancelAfter(idleTimeout);
            }
        }
        catch (ChannelClosedException ex) when (ex.InnerException is not null)
        {
            // The reader failed (a bad message or an idle timeout): its error is the stream's error.
            await reader.ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Counts a verdict once it is written: an early verdict as sent, a final one with its round and the early verdicts it scores.</summary>
    private static void Observe(RoundVerdict verdict, Draft draft, List<EarlyRoundVerdict> early, VerifierMetrics metrics, System.Diagnostics.Activity? span)
    {
        switch (verdict)
        {
            case EarlyRoundVerdict e:
                early.Add(e);
                metrics.EarlyVerdictSent(e.ExitLayer);
                span?.AddEvent(new System.Diagnostics.ActivityEvent("specedge.early_verdict", tags: new System.Diagnostics.ActivityTagsCollection { ["specedge.exit.layer"] = e.ExitLayer, ["specedge.verdict.accepted"] = e.Verdict.Accepted }));
                break;
            case FinalRoundVerdict final:
                foreach (var e in early)
                {
                    metrics.EarlyVerdictScored(e.ExitLayer, e.Verdict == final.Verdict);
                }

                metrics.RoundVerified(draft.Ids.Count, final.Verdict.Accepted, draft.Condition is not null, final.Timings.Stages, final.Timings.Total, final.Timings.Queued);
                span?.SetTag("specedge.round.accepted", final.Verdict.Accepted);
                break;
        }
    }

    /// <summary>
    /// After the last verdict, sends everything written so far and waits for the edge to end its side of the stream, so
    /// the call closes in order on both sides rather than with a reset. Rounds still arriving (a pre-drafted round sent
    /// before the edge learned the generation was over) are discarded; an edge that never ends its side is let go after
    /// the idle timeout.
    /// </summary>
    private static async Task AwaitEdgeCloseAsync(ChannelReader<(Draft Draft, DateTimeOffset ReceivedAt)> inbox, Channel<VerifierMessage> outbox, Task writer, CancellationTokenSource idle, TimeSpan idleTimeout, CancellationToken stop)
    {
        outbox.Writer.TryComplete();
        await ObserveAsync(writer).ConfigureAwait(false);
        idle.CancelAfter(idleTimeout);
        try
        {
            await foreach (var _ in inbox.ReadAllAsync(stop).ConfigureAwait(false))
            {
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException or ChannelClosedException or RpcException or IOException or InvalidOperationException)
        {
            // The edge went away (a cancel or reset reads as an IOException), or stayed silent: it is let go either way.
        }
    }

    /// <summary>
    /// Shutting down: sends <c>Draining</c>, then lets the edge end its side as after a last verdict, but waiting at most
    /// <see cref="HandOffTimeout"/>. Kestrel closes a draining connection once its calls end; a client still sending could
    /// then lose the UNAVAILABLE status that follows to the torn-down connection, so the edge is told first, in a message.
    /// </summary>
    private static async Task HandOffAsync(ChannelReader<(Draft Draft, DateTimeOffset ReceivedAt)> inbox, Channel<VerifierMessage> outbox, Task writer, CancellationTokenSource idle, int committedLength, CancellationToken stop)
    {
        using (var bounded = CancellationTokenSource.CreateLinkedTokenSource(stop))
        {
            bounded.CancelAfter(HandOffTimeout);
            try
            {
                await outbox.Writer.WriteAsync(new VerifierMessage { Draining = new Draining { CommittedLength = (uint)committedLength } }, bounded.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (!stop.IsCancellationRequested)
            {
                // The edge reads nothing and the outbox is full: there is no room for the notice; the status still follows.
            }
        }

        await AwaitEdgeCloseAsync(inbox, outbox, writer, idle, HandOffTimeout, stop).ConfigureAwait(false);
    }

    private static async Task DrainAsync(ChannelReader<VerifierMessage> outbox, IServerStreamWriter<VerifierMessage> responses, CancellationToken cancellationToken)
    {
        await foreach (var message in outbox.ReadAllAsync(cancellationToken).ConfigureAwait(false))
        {
            await responses.WriteAsync(message, cancellationToken).ConfigureAwait(false);
        }
    }

    private static async Task ObserveAsync(Task task)
    {
        try
        {
            await task.ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is OperationCanceledException or RpcException or IOException or InvalidOperationException)
        {
            // Already reported through the stream's status, or the stream is gone.
        }
    }
}
