using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Grpc.Core;
using SpecEdge.EdgeClient.Client;
using SpecEdge.EdgeClient.Drafting;
using SpecEdge.EdgeClient.Transport;
using SpecEdge.Protocol.V1;
using SpecEdge.Shared.Decoding;
using SpecEdge.Shared.Protocol;
using SpecEdge.Shared.Tokenization;
using DomainFinish = SpecEdge.Shared.Decoding.FinishReason;

namespace SpecEdge.EdgeClient.Decoding;

/// <summary>
/// Speculative decoding over one Decode stream, in four flavours: plain speculative (draft, send, wait); pre-emptive
/// (on an early verdict, draft the next round from the provisional prefix while the verifier finishes); conditional
/// (pre-emptive, and the pre-drafted round goes out before the final verdict, marked with the condition it assumes);
/// and proactive (pre-draft on the edge's own guess that every draft stands, without early exits).
/// Only final verdicts commit tokens.
/// </summary>
internal sealed class SpeculativeRunner
{
    private readonly Verifier.VerifierClient _grpc;
    private readonly DraftEngine _engine;
    private readonly GenerationRequest _request;
    private readonly GenerationTracker _tracker;
    private readonly ModelDescription _verifier;
    private readonly TimeProvider _time;
    private readonly StopRule _stop;
    private readonly AdaptiveDraftLength? _adaptive;
    private readonly GenerationMode _mode;
    private readonly TimeSpan _roundTimeout;
    private int _maxDrafts;

    public SpeculativeRunner(Verifier.VerifierClient grpc, DraftEngine engine, GenerationRequest request, GenerationTracker tracker, ModelDescription verifier, TimeProvider time, TimeSpan roundTimeout)
    {
        _roundTimeout = roundTimeout;
        _grpc = grpc;
        _engine = engine;
        _request = request;
        _tracker = tracker;
        _verifier = verifier;
        _time = time;
        _mode = request.Mode;
        var maxLength = (int)Math.Min(verifier.Limits.MaxSequenceLength, (uint)engine.MaxSequenceLength);
        _stop = new StopRule(tracker.PromptLength, request.MaxNewTokens, maxLength, request.StopAtEos, engine.Model.Tokenizer.Eos);
        _maxDrafts = Math.Min(request.DraftTokens, (int)verifier.Limits.MaxDraftTokens);
        _adaptive = request.AdaptiveDraftTokens ? new AdaptiveDraftLength(request.DraftTokens, _maxDrafts) : null;
    }

    public async IAsyncEnumerable<CommittedToken> RunAsync([EnumeratorCancellation] CancellationToken cancellationToken)
    {
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        using var call = _grpc.Decode(cancellationToken: stop.Token);
        var inbox = Channel.CreateBounded<VerifierMessage>(new BoundedChannelOptions(64) { SingleReader = true, SingleWriter = true });
        var reader = ReadAsync(call.ResponseStream, inbox.Writer, stop.Token);
        var state = new RoundState();
        try
        {
            await call.RequestStream.WriteAsync(new EdgeMessage { Open = BuildOpen() }, stop.Token).ConfigureAwait(false);
            var first = await ReadWithDeadlineAsync(inbox.Reader, "the session to open", stop.Token).ConfigureAwait(false);
            if (first.KindCase != VerifierMessage.KindOneofCase.Opened)
            {
                throw new ProtocolViolationException($"the verifier answered Open with {first.KindCase}, not Opened");
            }

            _maxDrafts = Math.Min(_maxDrafts, (int)first.Opened.MaxDraftTokens);
            _tracker.LapMs();
            while (true)
            {
                var committed = await RunRoundAsync(call.RequestStream, inbox.Reader, state, stop.Token).ConfigureAwait(false);
                foreach (var token in committed)
                {
                    yield return token;
                }

                if (_tracker.FinishReason != DomainFinish.None)
                {
                    break;
                }
            }

            await state.CancelBranchAsync(_tracker).ConfigureAwait(false);
            await call.RequestStream.CompleteAsync().ConfigureAwait(false);
            while (await inbox.Reader.WaitToReadAsync(stop.Token).ConfigureAwait(false))
            {
                inbox.Reader.TryRead(out _);
            }

            await reader.ConfigureAwait(false);
        }
        finally
        {
            await state.CancelBranchAsync(null).ConfigureAwait(false);
            await stop.CancelAsync().ConfigureAwait(false);
            try
            {
                await reader.ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is OperationCanceledException or RpcException)
            {
            }
        }
    }

    private Open BuildOpen()
    {
        var open = new Open
        {
            Sampling = _request.Sampling.ToWire(),
            MaxNewTokens = _request.MaxNewTokens,
            StopAtEos = _request.StopAtEos,
            DraftVocabSize = _engine.Model.VocabSize,
            DraftTokenizerSha256 = _engine.Model.Manifest.Tokenizer.Sha256 ?? string.Empty,
            EarlyVerdicts = _mode.UsesEarlyVerdicts(),
            ClientLabel = _request.ClientLabel ?? $"specedge-edge {_mode.Name()}",
        };
        // A resumed generation (after a failover) re-opens with the tokens committed so far.
        open.PromptIds.AddRange(_tracker.Tokens.Take(_tracker.PromptLength).Select(t => t.Value));
        open.CommittedIds.AddRange(_tracker.Tokens.Skip(_tracker.PromptLength).Select(t => t.Value));
        if (_request.ExitThresholds is { } thresholds)
        {
            open.ExitThresholds.AddRange(thresholds);
        }

        return open;
    }

    /// <summary>Runs one round to its final verdict and returns the tokens it committed.</summary>
    private async Task<List<CommittedToken>> RunRoundAsync(IClientStreamWriter<EdgeMessage> requests, ChannelReader<VerifierMessage> inbox, RoundState state, CancellationToken cancellationToken)
    {
        var committedLength = _tracker.Tokens.Count;
        var round = state.Round;
        TokenId[] drafts;
        double draftMs;
        long sentAt;
        DateTimeOffset sentWall;
        bool ready;

        if (state.Conditional is { } conditional && conditional.Round == round)
        {
            // Already in flight: the verifier started it right after the previous final verdict.
            drafts = conditional.Drafts.Tokens;
            draftMs = 0;
            sentAt = state.PreviousVerdictAt;
            sentWall = conditional.SentWall;
            ready = true;
            state.Conditional = null;
        }
        else
        {
            var (drafted, waitedMs, wasReady, guess) = await TakeDraftsAsync(state, committedLength, cancellationToken).ConfigureAwait(false);
            drafts = drafted.Tokens;
            draftMs = waitedMs;
            ready = wasReady;
            sentAt = _time.GetTimestamp();
            sentWall = _time.GetUtcNow();
            await SendAsync(requests, round, committedLength, drafted, null, cancellationToken).ConfigureAwait(false);
            if (_mode == GenerationMode.Proactive && guess is { } next)
            {
                // Guess that every draft stands and the draft's own next token follows; pre-draft the next round on it.
                StartBranch(state, new Verdict(drafts.Length, next).ToCondition(round), drafts, committedLength);
            }
        }

        state.EarlyThisRound.Clear();
        FinalVerdict? final = null;
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(_roundTimeout);
        while (final is null)
        {
            var branchTask = state.Branch is { Sent: false } b && _mode == GenerationMode.Conditional && state.Conditional is null ? b.Task : null;
            if (branchTask is not null && !branchTask.IsCompleted)
            {
                var messageReady = inbox.WaitToReadAsync(deadline.Token).AsTask();
                await Task.WhenAny(messageReady, branchTask).ConfigureAwait(false);
            }

            if (branchTask is { IsCompletedSuccessfully: true } && state.Branch is { Sent: false } toSend && state.Conditional is null)
            {
                // The pre-drafted round is ready before the final verdict: send it now, conditioned on the early verdict.
                toSend.Sent = true;
                state.Conditional = new InFlight(round + 1, toSend.Condition, branchTask.Result, _time.GetUtcNow());
                await SendAsync(requests, round + 1, toSend.Prefix.Count, branchTask.Result, toSend.Condition, cancellationToken).ConfigureAwait(false);
                continue;
            }

            if (!inbox.TryRead(out var message))
            {
                // Nothing to read although the wait for a message ended: the stream ended or the deadline passed (the
                // read below reports which). Looping back while the branch drafts would spin on a wait that returns at once.
                message = await ReadWithDeadlineAsync(inbox, $"round {round}'s final verdict", cancellationToken, deadline).ConfigureAwait(false);
            }

            switch (message.KindCase)
            {
                case VerifierMessage.KindOneofCase.Early when message.Early.Round == round:
                    await OnEarlyVerdictAsync(message.Early, state, drafts, committedLength).ConfigureAwait(false);
                    break;
                case VerifierMessage.KindOneofCase.Final when message.Final.Round == round:
                    final = message.Final;
                    break;
                case VerifierMessage.KindOneofCase.Dropped:
                    break;
                case VerifierMessage.KindOneofCase.Early:
                    // An early verdict of a round already settled (a conditional round's exit): nothing to do.
                    break;
                default:
                    throw new ProtocolViolationException($"unexpected {message.KindCase} (round {RoundOf(message)}) while waiting for round {round}");
            }
        }

        var arrived = _time.GetTimestamp();
        var arrivedWall = _time.GetUtcNow();
        var verdict = final.ToDomain();
        var accepted = verdict.Accepted;
        if (!verdict.Fits(drafts.Length, _engine.Model.VocabSize))
        {
            throw new ProtocolViolationException($"round {round}: the verdict ({accepted} accepted, next {final.NextId}) does not fit the {drafts.Length} drafts sent");
        }

        var newTokens = verdict.Tokens(drafts);
        var committed = _tracker.Commit(newTokens);
        if (final.Finished)
        {
            _tracker.FinishReason = final.FinishReason.ToDomain();
        }

        var earlyRecords = ScoreEarlyVerdicts(state, final);
        var timings = final.Timings ?? new ServerTimings();
        var verifyMs = timings.StageMicros.Sum() / 1000.0;
        var waitMs = _time.GetElapsedTime(sentAt, arrived).TotalMilliseconds;
        var (uplinkMs, downlinkMs) = SplitLink(timings, sentWall, arrivedWall);
        var wallMs = _tracker.LapMs();
        var record = new RoundRecord
        {
            Round = (int)round,
            Drafted = drafts.Length,
            Accepted = accepted,
            Committed = newTokens.Length,
            DraftMs = GenerationTracker.Round3(draftMs),
            NetworkAndQueueMs = GenerationTracker.Round3(Math.Max(0, waitMs - verifyMs)),
            VerifyMs = GenerationTracker.Round3(verifyMs),
            QueueMs = GenerationTracker.Round3(timings.QueueMicros / 1000.0),
            StageMs = [.. timings.StageMicros.Select(m => GenerationTracker.Round3(m / 1000.0))],
            EarlyVerdicts = earlyRecords,
            WallMs = GenerationTracker.Round3(wallMs),
            UplinkMs = uplinkMs,
            DownlinkMs = downlinkMs,
            IdleMs = GenerationTracker.Round3(Math.Max(0, wallMs - draftMs - Math.Max(0, waitMs - verifyMs) - verifyMs)),
            StartedWithoutWaiting = ready,
        };
        _tracker.AddRound(record);
        if (ready)
        {
            _tracker.StartedWithoutWaiting++;
        }

        _adaptive?.Observe(drafts.Length, accepted, draftMs > 0 ? draftMs : _adaptive.DraftMsPerToken * drafts.Length, Math.Max(0, waitMs - verifyMs), verifyMs);
        state.PreviousVerdictAt = arrived;
        await SettleAsync(state, final).ConfigureAwait(false);
        state.Round = round + 1;
        return committed;
    }

    /// <summary>The drafts for the round about to be sent: the pre-drafted branch when it matches the committed prefix, else fresh ones.</summary>
    private async Task<(DraftedRound Drafts, double WaitedMs, bool WasReady, TokenId? Guess)> TakeDraftsAsync(RoundState state, int committedLength, CancellationToken cancellationToken)
    {
        if (state.Branch is { } branch && !branch.Sent && branch.Prefix.SequenceEqual(_tracker.Tokens))
        {
            state.Branch = null;
            var wasReady = branch.Task.IsCompleted;
            var start = _time.GetTimestamp();
            var drafted = await branch.Task.ConfigureAwait(false);
            branch.Dispose();
            _tracker.Hits++;
            return (Trim(drafted, out var guess), _time.GetElapsedTime(start).TotalMilliseconds, wasReady, guess);
        }

        await state.CancelBranchAsync(_tracker).ConfigureAwait(false);
        var gamma = DraftCount(committedLength);
        var extra = _mode == GenerationMode.Proactive && gamma > 0 ? 1 : 0;
        var fresh = await _engine.DraftAsync(_tracker.Tokens, gamma + extra, _request.Sampling, cancellationToken).ConfigureAwait(false);
        TokenId? freshGuess = null;
        var sent = extra == 1 ? Trim(fresh, out freshGuess) : fresh;
        return (sent, fresh.Elapsed.TotalMilliseconds, false, freshGuess);

        // Proactive rounds draft one token more than they send: the edge's guess of the token after the drafts.
        DraftedRound Trim(DraftedRound round, out TokenId? next)
        {
            if (_mode != GenerationMode.Proactive || round.Tokens.Length == 0 || round.Tokens.Length <= DraftCount(committedLength))
            {
                next = null;
                return round;
            }

            next = round.Tokens[^1];
            return new DraftedRound(round.Tokens[..^1], round.Distributions?[..^1], round.Elapsed);
        }
    }

    private int DraftCount(int committedLength)
    {
        var gamma = _adaptive?.Current ?? _maxDrafts;
        return Math.Max(0, Math.Min(gamma, _stop.MaxUsefulDrafts(committedLength)));
    }

    private async Task OnEarlyVerdictAsync(EarlyVerdict early, RoundState state, TokenId[] drafts, int committedLength)
    {
        _tracker.EarlyVerdicts++;
        _tracker.Exit((int)early.ExitLayer).Verdicts++;
        state.EarlyThisRound.Add(early);
        var provisional = early.ToDomain();
        if (!provisional.Fits(drafts.Length, _engine.Model.VocabSize))
        {
            throw new ProtocolViolationException($"early verdict ({early.Accepted} accepted, next {early.NextId}) does not fit the {drafts.Length} drafts sent");
        }

        var condition = provisional.ToCondition(early.Round);
        if (state.Branch is { } existing && existing.Condition.Equals(condition))
        {
            return;
        }

        if (state.Branch is { Sent: false })
        {
            // A later exit disagrees with the one the branch was drafted on: restart it from the new provisional prefix.
            await state.CancelBranchAsync(_tracker).ConfigureAwait(false);
        }

        if (state.Branch is null)
        {
            StartBranch(state, condition, drafts, committedLength);
        }
    }

    private void StartBranch(RoundState state, Condition condition, TokenId[] drafts, int committedLength)
    {
        var prefix = new List<TokenId>(committedLength + (int)condition.Accepted + 1);
        prefix.AddRange(_tracker.Tokens);
        prefix.AddRange(condition.ToDomain().Tokens(drafts));
        var (kept, reason) = _stop.Apply(committedLength, prefix.ToArray().AsSpan(committedLength));
        if (reason != DomainFinish.None || kept != prefix.Count - committedLength)
        {
            return; // the provisional verdict would end the generation: nothing to pre-draft
        }

        var gamma = DraftCount(prefix.Count);
        var extra = _mode == GenerationMode.Proactive && gamma > 0 ? 1 : 0;
        var cancel = new CancellationTokenSource();
        var task = Task.Run(async () => await _engine.DraftAsync(prefix, gamma + extra, _request.Sampling, cancel.Token).ConfigureAwait(false), CancellationToken.None);
        state.Branch = new Branch(prefix, condition, task, cancel);
    }

    private List<EarlyVerdictRecord> ScoreEarlyVerdicts(RoundState state, FinalVerdict final)
    {
        var records = new List<EarlyVerdictRecord>(state.EarlyThisRound.Count);
        foreach (var early in state.EarlyThisRound)
        {
            var exit = _tracker.Exit((int)early.ExitLayer);
            var matched = early.ToDomain() == final.ToDomain();
            if (matched)
            {
                exit.Hits++;
            }
            else
            {
                exit.Misses++;
            }

            records.Add(new EarlyVerdictRecord((int)early.ExitLayer, Math.Round(early.Confidence, 6), (int)early.Accepted, early.NextId, matched, Math.Round(early.ElapsedMicros / 1000.0, 3)));
        }

        return records;
    }

    /// <summary>After a final verdict: keep the in-flight conditional round if its condition held, else count the pre-drafted work lost.</summary>
    private async Task SettleAsync(RoundState state, FinalVerdict final)
    {
        if (state.Conditional is { } conditional)
        {
            if (!final.Finished && conditional.Condition.ToDomain() == final.ToDomain())
            {
                _tracker.Hits++;
                state.Branch?.Dispose();
                state.Branch = null;
            }
            else
            {
                // The verifier drops it; the round is sent again.
                _tracker.Misses++;
                _tracker.Dropped++;
                _tracker.Wasted += conditional.Drafts.Tokens.Length;
                state.Conditional = null;
                if (state.Branch is { Sent: true })
                {
                    state.Branch.Dispose();
                    state.Branch = null;
                }
            }
        }

        if (final.Finished)
        {
            await state.CancelBranchAsync(_tracker).ConfigureAwait(false);
        }
    }

    private static async Task SendAsync(IClientStreamWriter<EdgeMessage> requests, uint round, int baseLength, DraftedRound drafted, Condition? condition, CancellationToken cancellationToken)
    {
        var draft = new Draft
        {
            Round = round,
            BaseLength = (uint)baseLength,
            DraftMicros = (long)drafted.Elapsed.TotalMicroseconds,
            Condition = condition,
        };
        draft.Ids.AddRange(drafted.Tokens.Select(t => t.Value));
        if (drafted.Distributions is { } distributions)
        {
            draft.Distributions.AddRange(distributions.Select(d => d.ToWire()));
        }

        await requests.WriteAsync(new EdgeMessage { Draft = draft }, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Reads the next message, failing with <see cref="RoundTimeoutException"/> when the deadline passes first.</summary>
    private async Task<VerifierMessage> ReadWithDeadlineAsync(ChannelReader<VerifierMessage> inbox, string what, CancellationToken cancellationToken, CancellationTokenSource? deadline = null)
    {
        using var own = deadline is null ? CancellationTokenSource.CreateLinkedTokenSource(cancellationToken) : null;
        own?.CancelAfter(_roundTimeout);
        var token = (deadline ?? own!).Token;
        try
        {
            return await inbox.ReadAsync(token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new RoundTimeoutException($"no answer for {what} within {_roundTimeout.TotalSeconds:0.###} s");
        }
    }

    private static async Task ReadAsync(IAsyncStreamReader<VerifierMessage> responses, ChannelWriter<VerifierMessage> inbox, CancellationToken cancellationToken)
    {
        try
        {
            while (await responses.MoveNext(cancellationToken).ConfigureAwait(false))
            {
                if (responses.Current.KindCase == VerifierMessage.KindOneofCase.Draining)
                {
                    // The verifier is shutting down: this session ends here (the call is cancelled on the way out) and the
                    // retry pipeline re-opens it elsewhere with the committed tokens.
                    throw new RpcException(new Status(StatusCode.Unavailable, $"the verifier is shutting down: resume the generation on another verifier (committed length {responses.Current.Draining.CommittedLength})"));
                }

                await inbox.WriteAsync(responses.Current, cancellationToken).ConfigureAwait(false);
            }

            inbox.TryComplete();
        }
        catch (Exception ex)
        {
            inbox.TryComplete(ex);
            throw;
        }
    }

    /// <summary>Uplink and downlink times from both sides' wall clocks; null when the clocks visibly disagree.</summary>
    private static (double? Uplink, double? Downlink) SplitLink(ServerTimings timings, DateTimeOffset sent, DateTimeOffset arrived)
    {
        if (timings.ReceivedUnixMicros == 0 || timings.VerdictUnixMicros == 0)
        {
            return (null, null);
        }

        var up = (timings.ReceivedUnixMicros - ((sent - DateTimeOffset.UnixEpoch).Ticks / 10)) / 1000.0;
        var down = (((arrived - DateTimeOffset.UnixEpoch).Ticks / 10) - timings.VerdictUnixMicros) / 1000.0;
        return up < 0 || down < 0 ? (null, null) : (GenerationTracker.Round3(up), GenerationTracker.Round3(down));
    }

    private static uint RoundOf(VerifierMessage message) => message.KindCase switch
    {
        VerifierMessage.KindOneofCase.Early => message.Early.Round,
        VerifierMessage.KindOneofCase.Final => message.Final.Round,
        VerifierMessage.KindOneofCase.Dropped => message.Dropped.Round,
        _ => 0,
    };

    /// <summary>A round drafted ahead on a provisional prefix.</summary>
    private sealed class Branch(List<TokenId> prefix, Condition condition, Task<DraftedRound> task, CancellationTokenSource cancel) : IDisposable
    {
        public List<TokenId> Prefix { get; } = prefix;

        public Condition Condition { get; } = condition;

        public Task<DraftedRound> Task { get; } = task;

        public CancellationTokenSource Cancel { get; } = cancel;

        /// <summary>Sent to the verifier as a conditional round.</summary>
        public bool Sent { get; set; }

        public void Dispose() => Cancel.Dispose();
    }

    private sealed record InFlight(uint Round, Condition Condition, DraftedRound Drafts, DateTimeOffset SentWall);

    private sealed class RoundState
    {
        public uint Round { get; set; } = 1;

        public Branch? Branch { get; set; }

        public InFlight? Conditional { get; set; }

        public long PreviousVerdictAt { get; set; }

        public List<EarlyVerdict> EarlyThisRound { get; } = [];

        /// <summary>Stops and forgets the branch; its drafted tokens count as wasted when a tracker is given.</summary>
        public async Task CancelBranchAsync(GenerationTracker? tracker)
        {
            if (Branch is not { } branch)
            {
                return;
            }

            Branch = null;
            await branch.Cancel.CancelAsync().ConfigureAwait(false);
            try
            {
                var drafted = await branch.Task.ConfigureAwait(false);
                if (tracker is not null && !branch.Sent)
                {
                    tracker.Wasted += drafted.Tokens.Length;
                    tracker.Misses++;
                }
            }
            catch (OperationCanceledException)
            {
                if (tracker is not null && !branch.Sent)
                {
                    tracker.Misses++;
                }
            }
            finally
            {
                branch.Dispose();
            }
        }
    }
}
