using System.Runtime.CompilerServices;
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
/// Speculative decoding over one Decode stream, in four flavours (<see cref="ModePolicy"/>): plain speculative (draft,
/// send, wait); pre-emptive (on an early verdict, draft the next round from the provisional prefix while the verifier
/// finishes); conditional (pre-emptive, and the pre-drafted round goes out before the final verdict, marked with the
/// condition it assumes); and proactive (pre-draft on the edge's own guess that every draft stands, without early exits).
/// A round is: take drafts (the round already sent ahead, a pre-drafted branch, or fresh ones), send, wait for the final
/// verdict while acting on early verdicts, commit. What is drafted ahead lives in one state machine
/// (<see cref="PreDraftMachine"/>); the stream in <see cref="IDecodeStream"/>. Only final verdicts commit tokens.
/// </summary>
internal sealed class SpeculativeRunner
{
    private readonly DraftEngine _engine;
    private readonly GenerationRequest _request;
    private readonly GenerationTracker _tracker;
    private readonly ModelDescription _verifier;
    private readonly TimeProvider _time;
    private readonly StopRule _stop;
    private readonly AdaptiveDraftLength? _adaptive;

    /// <summary>With adaptive γ, asked after each draft whether to draft another.</summary>
    private readonly DraftContinuation? _more;
    private readonly ModePolicy _policy;
    private readonly TimeSpan _roundTimeout;
    private readonly Func<CancellationToken, IDecodeStream> _open;
    private readonly PreDraftMachine _ahead;
    private readonly Func<bool>? _leave;
    private int _maxDrafts;
    private uint _round = 1;
    private uint _lastExitLayer;
    private readonly int _candidates;
    private readonly int _leafWidth;
    private int _maxLeaves;
    private long _previousVerdictAt;

    public SpeculativeRunner(Verifier.VerifierClient grpc, DraftEngine engine, GenerationRequest request, GenerationTracker tracker, ModelDescription verifier, TimeProvider time, TimeSpan roundTimeout)
        : this(token => new GrpcDecodeStream(grpc, token), engine, request, tracker, verifier, time, roundTimeout)
    {
    }

    /// <summary>Over any <see cref="IDecodeStream"/> (tests script one).</summary>
    /// <param name="open">Opens the Decode stream.</param>
    /// <param name="engine">The draft.</param>
    /// <param name="request">The generation.</param>
    /// <param name="tracker">The committed sequence and the figures.</param>
    /// <param name="verifier">What the verifier serves.</param>
    /// <param name="time">The clock.</param>
    /// <param name="roundTimeout">How long a round may wait for its verdict.</param>
    /// <param name="adaptive">The client's γ controller for this mode (it learns across generations), when γ adapts.</param>
    /// <param name="leave">Asked after every round: true ends the session early (auto mode giving way to the cloud).</param>
    internal SpeculativeRunner(Func<CancellationToken, IDecodeStream> open, DraftEngine engine, GenerationRequest request, GenerationTracker tracker, ModelDescription verifier, TimeProvider time, TimeSpan roundTimeout, AdaptiveDraftLength? adaptive = null, Func<bool>? leave = null)
    {
        _leave = leave;
        _roundTimeout = roundTimeout;
        _open = open;
        _engine = engine;
        _request = request;
        _tracker = tracker;
        _verifier = verifier;
        _time = time;
        _policy = ModePolicy.For(request.Mode);
        _candidates = request.Candidates ?? 1;
        _leafWidth = request.Leaves ?? 0;
        _ahead = new PreDraftMachine(new RoundStats(tracker), _policy.SendsAhead ? _candidates : 1);
        var maxLength = (int)Math.Min(verifier.Limits.MaxSequenceLength, (uint)engine.MaxSequenceLength);
        _stop = new StopRule(tracker.PromptLength, request.MaxNewTokens, maxLength, request.StopAtEos, engine.Model.Tokenizer.Eos);
        _maxDrafts = Math.Min(request.DraftTokens, (int)verifier.Limits.MaxDraftTokens);
        // The client passes its controller for this mode and γ (SpecEdgeClient.AdaptiveFor); a runner built alone makes one.
        _adaptive = !request.AdaptiveDraftTokens ? null
            : adaptive ?? new AdaptiveDraftLength(_maxDrafts);
        _more = _adaptive is not { } controller ? null
            : _policy.GuessesAhead ? confidences => confidences.Length <= 1 || controller.Continue(confidences[..^1]) // one more: the guess after the drafts
            : controller.Continue;
    }

    public async IAsyncEnumerable<CommittedToken> RunAsync([EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var stream = _open(cancellationToken);
        try
        {
            await OpenAsync(stream, cancellationToken).ConfigureAwait(false);
            while (_tracker.FinishReason == DomainFinish.None)
            {
                foreach (var token in await RunRoundAsync(stream, cancellationToken).ConfigureAwait(false))
                {
                    yield return token;
                }

                if (_tracker.FinishReason == DomainFinish.None && _leave?.Invoke() == true)
                {
                    break;
                }
            }

            await _ahead.CancelAsync().ConfigureAwait(false);
            await stream.CloseAsync(cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            await _ahead.AbandonAsync().ConfigureAwait(false);
            await stream.DisposeAsync().ConfigureAwait(false);
        }
    }

    private async Task OpenAsync(IDecodeStream stream, CancellationToken cancellationToken)
    {
        _tracker.Phase = GenerationPhase.Prefill;
        await stream.SendAsync(new EdgeMessage { Open = BuildOpen() }, cancellationToken).ConfigureAwait(false);
        using var deadline = Deadline();
        var first = await stream.ReadAsync($"the session to open within {_roundTimeout.TotalSeconds:0.###} s", deadline.Token, cancellationToken).ConfigureAwait(false);
        if (first.KindCase != VerifierMessage.KindOneofCase.Opened)
        {
            throw new ProtocolViolationException($"the verifier answered Open with {first.KindCase}, not Opened");
        }

        _maxDrafts = Math.Min(_maxDrafts, (int)first.Opened.MaxDraftTokens);
        // A verifier that takes no leaves (batching off, or its limit 0) gets chains: the engine drafts none then.
        _maxLeaves = (int)first.Opened.MaxLeaves;

        _lastExitLayer = first.Opened.Exits.Count == 0 ? 0 : first.Opened.Exits.Max(e => e.Layer);
        _tracker.Phase = GenerationPhase.Idle;
        _tracker.LapMs();
    }

    private CancellationTokenSource Deadline() => new(_roundTimeout, _time);

    private Open BuildOpen()
    {
        var open = new Open
        {
            Sampling = _request.Sampling.ToWire(),
            MaxNewTokens = _request.MaxNewTokens,
            StopAtEos = _request.StopAtEos,
            DraftVocabSize = _engine.Model.VocabSize,
            DraftTokenizerSha256 = _engine.Model.Manifest.Tokenizer.Sha256 ?? string.Empty,
            EarlyVerdicts = _policy.Mode.UsesEarlyVerdicts(),
            ClientLabel = _request.ClientLabel ?? $"specedge-edge {_policy.Mode.Name()}",
            Candidates = _policy.DraftsOnEarlyVerdicts ? (uint)_candidates : 1,
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
    private async Task<List<CommittedToken>> RunRoundAsync(IDecodeStream stream, CancellationToken cancellationToken)
    {
        var committedLength = _tracker.Tokens.Count;
        var start = await StartRoundAsync(stream, committedLength, cancellationToken).ConfigureAwait(false);
        _tracker.Phase = GenerationPhase.MidRound;
        var (final, early) = await AwaitFinalAsync(stream, start.Sent, committedLength, cancellationToken).ConfigureAwait(false);
        _tracker.Phase = GenerationPhase.Idle;
        var arrived = _time.GetTimestamp();
        var committed = Commit(final, start, early, arrived);
        _previousVerdictAt = arrived;
        await _ahead.SettleAsync(final).ConfigureAwait(false);
        _round++;
        return committed;
    }

    /// <summary>How a round began: its drafts, how long the edge waited for them, whether they were ready, and when it went out.</summary>
    private sealed record RoundStart(DraftedRound Sent, double DraftMs, bool Ready, long SentAt, DateTimeOffset SentWall)
    {
        public TokenId[] Drafts => Sent.Tokens;

        public double ComputeMs => Sent.Elapsed.TotalMilliseconds;
    }

    /// <summary>The round's drafts: already at the verifier (a conditional round that held), a pre-drafted branch, or fresh; sent unless already there.</summary>
    private async Task<RoundStart> StartRoundAsync(IDecodeStream stream, int committedLength, CancellationToken cancellationToken)
    {
        if (_ahead.TakeAccepted(_round) is { } ahead)
        {
            // Already in flight: the verifier started it right after the previous final verdict.
            return new RoundStart(ahead.Drafts, 0, true, _previousVerdictAt, ahead.SentWall);
        }

        var (taken, waitedMs, wasReady, guess) = await TakeDraftsAsync(committedLength, cancellationToken).ConfigureAwait(false);
        var drafted = WithinRoom(taken, committedLength);
        var start = new RoundStart(drafted, waitedMs, wasReady, _time.GetTimestamp(), _time.GetUtcNow());
        await SendAsync(stream, _round, committedLength, drafted, null, cancellationToken).ConfigureAwait(false);
        if (_policy.GuessesAhead && guess is { } next)
        {
            // Guess that every draft stands and the draft's own next token follows; pre-draft the next round on it.
            var condition = new Verdict(drafted.Tokens.Length, next).ToCondition(_round);
            await _ahead.OnProvisionalAsync([condition], (c, after) => StartBranch(c, drafted.Tokens, committedLength, after)).ConfigureAwait(false);
        }

        return start;
    }

    /// <summary>
    /// Waits for the round's final verdict, acting on early verdicts meanwhile (and, in conditional mode, sending the
    /// pre-drafted round as soon as it is ready). Returns the final verdict and the round's early verdicts.
    /// </summary>
    private async Task<(FinalVerdict Final, List<EarlyVerdict> Early)> AwaitFinalAsync(IDecodeStream stream, DraftedRound sent, int committedLength, CancellationToken cancellationToken)
    {
        var early = new List<EarlyVerdict>();
        using var deadline = Deadline();
        while (true)
        {
            if (_policy.SendsAhead && _ahead.PendingBranch() is { } drafting)
            {
                // A message or the branch, whichever comes first: never a spin (an ended stream or a passed deadline
                // ends the wait too, and the read below reports it).
                using var both = CancellationTokenSource.CreateLinkedTokenSource(deadline.Token, cancellationToken);
                var woke = await Task.WhenAny(stream.WaitForMessageAsync(both.Token), drafting).ConfigureAwait(false);
                if (woke == drafting && _ahead.ReadyToSend() is null)
                {
                    // A branch ended with nothing to send (it failed, or the round's candidates are all out): wait on
                    // the rest. No spin: the ended branch is no longer pending.
                    continue;
                }
            }

            if (_policy.SendsAhead && _ahead.ReadyToSend() is { } branch)
            {
                await SendAheadAsync(stream, branch, cancellationToken).ConfigureAwait(false);
                continue;
            }

            var message = stream.TryRead(out var waiting)
                ? waiting
                : await stream.ReadAsync($"round {_round}'s final verdict within {_roundTimeout.TotalSeconds:0.###} s", deadline.Token, cancellationToken).ConfigureAwait(false);
            switch (message.KindCase)
            {
                case VerifierMessage.KindOneofCase.Early when message.Early.Round == _round:
                    early.Add(message.Early);
                    await OnEarlyVerdictAsync(message.Early, sent, committedLength).ConfigureAwait(false);
                    break;
                case VerifierMessage.KindOneofCase.Final when message.Final.Round == _round:
                    return (message.Final, early);
                case VerifierMessage.KindOneofCase.Dropped:
                case VerifierMessage.KindOneofCase.Early:
                    // A dropped conditional round (sent again as this round), or an early verdict of a round already settled.
                    break;
                default:
                    throw new ProtocolViolationException($"unexpected {message.KindCase} (round {RoundOf(message)}) while waiting for round {_round}");
            }
        }
    }

    /// <summary>The pre-drafted round is ready before the final verdict: send it now, conditioned on the verdict it assumes.</summary>
    private async Task SendAheadAsync(IDecodeStream stream, Branch branch, CancellationToken cancellationToken)
    {
        var drafted = WithinRoom(await branch.Task.ConfigureAwait(false), branch.Prefix.Count);
        _ahead.MarkSent(branch, new SentAhead(_round + 1, branch.Condition, drafted, _time.GetUtcNow()));
        await SendAsync(stream, _round + 1, branch.Prefix.Count, drafted, branch.Condition, cancellationToken).ConfigureAwait(false);
        _tracker.Phase = GenerationPhase.ConditionalInFlight;
    }

    /// <summary>Commits a final verdict's tokens and records the round.</summary>
    private List<CommittedToken> Commit(FinalVerdict final, RoundStart start, List<EarlyVerdict> early, long arrived)
    {
        var arrivedWall = _time.GetUtcNow();
        var verdict = final.ToDomain();
        var drafts = start.Drafts;
        EnsureFits(verdict, $"round {_round}: the verdict", start.Sent);

        var newTokens = verdict.Tokens(drafts);
        var committed = _tracker.Commit(newTokens);
        if (final.Finished)
        {
            _tracker.FinishReason = final.FinishReason.ToDomain();
        }

        var timings = final.Timings ?? new ServerTimings();
        var verifyMs = timings.StageMicros.Sum() / 1000.0;
        var waitMs = _time.GetElapsedTime(start.SentAt, arrived).TotalMilliseconds;
        var (uplinkMs, downlinkMs) = SplitLink(timings, start.SentWall, arrivedWall);
        var wallMs = _tracker.LapMs();
        var networkMs = Math.Max(0, waitMs - verifyMs);
        _tracker.AddRound(new RoundRecord
        {
            Round = (int)_round,
            Drafted = drafts.Length,
            Accepted = verdict.Accepted,
            Committed = newTokens.Length,
            DraftMs = GenerationTracker.Round3(start.DraftMs),
            NetworkAndQueueMs = GenerationTracker.Round3(networkMs),
            VerifyMs = GenerationTracker.Round3(verifyMs),
            QueueMs = GenerationTracker.Round3(timings.QueueMicros / 1000.0),
            StageMs = [.. timings.StageMicros.Select(m => GenerationTracker.Round3(m / 1000.0))],
            EarlyVerdicts = ScoreEarlyVerdicts(early, verdict),
            WallMs = GenerationTracker.Round3(wallMs),
            UplinkMs = uplinkMs,
            DownlinkMs = downlinkMs,
            IdleMs = GenerationTracker.Round3(Math.Max(0, wallMs - start.DraftMs - networkMs - verifyMs)),
            StartedWithoutWaiting = start.Ready,
            DraftComputeMs = GenerationTracker.Round3(start.ComputeMs),
        });
        if (start.Ready)
        {
            _tracker.StartedWithoutWaiting++;
        }

        // A session's first round also carries the prompt's prefill: its wall time says nothing about γ.
        if (_adaptive is { } adaptive)
        {
            // Where a draft fell beside leaves, whether one of them stood (what trees add to a longer round).
            var leaves = start.Sent.Leaves;
            bool? leafStood = verdict.Branch is not null ? true
                : verdict.Accepted < drafts.Length && DraftLeaf.FirstAt(leaves, verdict.Accepted) is var j && j < leaves.Length && leaves[j].Depth == verdict.Accepted ? false
                : null;
            adaptive.Observe(drafts.Length, start.Sent.Confidences, verdict.Accepted, _tracker.Rounds.Count == 1 ? double.NaN : wallMs, start.DraftMs > 0 ? start.DraftMs : double.NaN, leafStood);
        }
        return committed;
    }

    /// <summary>The drafts for the round about to be sent: the pre-drafted branch when it matches the committed prefix, else fresh ones.</summary>
    private async Task<(DraftedRound Drafts, double WaitedMs, bool WasReady, TokenId? Guess)> TakeDraftsAsync(int committedLength, CancellationToken cancellationToken)
    {
        if (await _ahead.TakeBranchAsync(_tracker.Tokens).ConfigureAwait(false) is { } branch)
        {
            var wasReady = branch.Task.IsCompleted;
            var start = _time.GetTimestamp();
            var drafted = await branch.Task.ConfigureAwait(false);
            branch.Release();
            return (Trim(drafted, committedLength, out var guess), _time.GetElapsedTime(start).TotalMilliseconds, wasReady, guess);
        }

        var gamma = DraftCount(committedLength);
        var extra = _policy.GuessesAhead && gamma > 0 ? 1 : 0;
        var fresh = await _engine.DraftAsync(_tracker.Tokens, gamma + extra, _request.Sampling, cancellationToken, _more, _leafWidth, _maxLeaves).ConfigureAwait(false);
        TokenId? freshGuess = null;
        var sent = extra == 1 ? Trim(fresh, committedLength, out freshGuess) : fresh;
        return (sent, fresh.Elapsed.TotalMilliseconds, false, freshGuess);
    }

    /// <summary>
    /// Proactive rounds draft one token more than they send: the edge's guess of the token after the drafts. With
    /// adaptive γ the last token is that guess whenever there are two (drafting stops one past where the rule stopped).
    /// </summary>
    private DraftedRound Trim(DraftedRound round, int committedLength, out TokenId? next)
    {
        var guessed = _adaptive is null ? round.Tokens.Length > DraftCount(committedLength) : round.Tokens.Length > 1;
        if (!_policy.GuessesAhead || round.Tokens.Length == 0 || !guessed)
        {
            next = null;
            return round;
        }

        next = round.Tokens[^1];
        return round.Take(round.Tokens.Length - 1);
    }

    /// <summary>
    /// The round with no more leaves than the sequence has room for after its drafts (the verifier scores every leaf in
    /// the step: base + drafts + leaves must stay under the longest sequence), the deepest dropped first.
    /// </summary>
    private DraftedRound WithinRoom(DraftedRound round, int baseLength)
    {
        var room = Math.Max(0, _stop.MaxSequenceLength - baseLength - round.Tokens.Length - 1);
        return round.Leaves.Length <= room ? round : round with { Leaves = round.Leaves[..room] };
    }

    /// <summary>A verdict that cannot answer the round it names (more drafts than sent, a leaf not sent) is the verifier's bug.</summary>
    private void EnsureFits(Verdict verdict, string what, DraftedRound sent)
    {
        if (!verdict.Fits(sent.Tokens.Length, _engine.Model.VocabSize, sent.Leaves))
        {
            throw new ProtocolViolationException($"{what} ({verdict.Describe()}) does not fit the {sent.Tokens.Length} drafts and {sent.Leaves.Length} leaves sent");
        }
    }

    private int DraftCount(int committedLength)
    {
        // The controller's cap was set from the verifier's description; the session's Opened limit (_maxDrafts) may be lower.
        var gamma = Math.Min(_adaptive?.Max ?? _maxDrafts, _maxDrafts);
        return Math.Max(0, Math.Min(gamma, _stop.MaxUsefulDrafts(committedLength)));
    }

    private async Task OnEarlyVerdictAsync(EarlyVerdict early, DraftedRound sent, int committedLength)
    {
        _tracker.EarlyVerdicts++;
        _tracker.Exit((int)early.ExitLayer).Verdicts++;
        if (_tracker.Phase == GenerationPhase.MidRound)
        {
            _tracker.Phase = GenerationPhase.BetweenEarlyAndFinal;
        }

        var provisional = early.ToDomain();
        EnsureFits(provisional, "early verdict", sent);
        if (_policy.DraftsOnEarlyVerdicts)
        {
            // The exit's own verdict first, then the alternatives it ranks next (multi-candidate pre-drafting). An exit
            // before the last leaves one of the round's candidates to the later exits, which agree with the final
            // verdict more often: its own verdict, should it differ.
            var wanted = early.ExitLayer >= _lastExitLayer ? _candidates : Math.Max(1, _candidates - 1);
            var conditions = new List<Condition>(wanted) { provisional.ToCondition(early.Round) };
            foreach (var alternative in early.Alternatives)
            {
                var verdict = alternative.ToDomain();
                if (conditions.Count >= wanted)
                {
                    break;
                }

                EnsureFits(verdict, "early verdict alternative", sent);
                var condition = verdict.ToCondition(early.Round);
                if (!conditions.Contains(condition))
                {
                    conditions.Add(condition);
                }
            }

            await _ahead.OnProvisionalAsync(conditions, (c, after) => StartBranch(c, sent.Tokens, committedLength, after)).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Starts drafting the next round on the prefix a provisional verdict implies, once <paramref name="after"/> (the
    /// branch started before it, more likely) has ended; null when that verdict would end the generation.
    /// </summary>
    private Branch? StartBranch(Condition condition, TokenId[] drafts, int committedLength, Task? after)
    {
        var implied = condition.ToDomain().Tokens(drafts);
        var (kept, reason) = _stop.Apply(committedLength, implied);
        if (reason != DomainFinish.None || kept != implied.Length)
        {
            return null;
        }

        var prefix = new List<TokenId>(committedLength + implied.Length);
        prefix.AddRange(_tracker.Tokens);
        prefix.AddRange(implied);

        var gamma = DraftCount(prefix.Count);
        var extra = _policy.GuessesAhead && gamma > 0 ? 1 : 0;
        var cancel = new CancellationTokenSource();
        var token = cancel.Token;
        var task = Task.Run(
            async () =>
            {
                // Most likely first: start after the branch before (the engine takes one call at a time in any case).
                if (after is not null)
                {
                    try
                    {
                        await after.WaitAsync(token).ConfigureAwait(false);
                    }
                    catch (Exception) when (!token.IsCancellationRequested)
                    {
                        // The branch before ended however it ended (stopped, or failed and reported there): this one drafts now.
                    }
                }

                return await _engine.DraftAsync(prefix, gamma + extra, _request.Sampling, token, _more, _leafWidth, _maxLeaves).ConfigureAwait(false);
            },
            CancellationToken.None);
        return new Branch(prefix, condition, task, cancel);
    }

    private List<EarlyVerdictRecord> ScoreEarlyVerdicts(List<EarlyVerdict> early, Verdict final)
    {
        var records = new List<EarlyVerdictRecord>(early.Count);
        foreach (var verdict in early)
        {
            var exit = _tracker.Exit((int)verdict.ExitLayer);
            var matched = verdict.ToDomain() == final;
            var matchedAlternative = false;
            for (var a = 0; !matched && !matchedAlternative && a < verdict.Alternatives.Count; a++)
            {
                matchedAlternative = verdict.Alternatives[a].ToDomain() == final;
            }

            if (matched)
            {
                exit.Hits++;
            }
            else
            {
                exit.Misses++;
                if (matchedAlternative)
                {
                    exit.AlternativeHits++;
                }
            }

            records.Add(new EarlyVerdictRecord((int)verdict.ExitLayer, Math.Round(verdict.Confidence, 6), (int)verdict.Accepted, verdict.NextId, matched, Math.Round(verdict.ElapsedMicros / 1000.0, 3), verdict.Alternatives.Count, matchedAlternative));
        }

        return records;
    }

    private static async Task SendAsync(IDecodeStream stream, uint round, int baseLength, DraftedRound drafted, Condition? condition, CancellationToken cancellationToken)
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

        draft.Leaves.AddRange(drafted.Leaves.Select(l => l.ToWire()));

        await stream.SendAsync(new EdgeMessage { Draft = draft }, cancellationToken).ConfigureAwait(false);
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
}
