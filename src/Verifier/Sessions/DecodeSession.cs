using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Threading.Channels;
using SpecEdge.CloudVerifier.Hosting;
using SpecEdge.CloudVerifier.Scheduling;
using SpecEdge.Protocol.V1;
using SpecEdge.Shared.Decoding;
using SpecEdge.Shared.Protocol;
using SpecEdge.Shared.Runtime;
using SpecEdge.Shared.Tokenization;
using DomainFinish = SpecEdge.Shared.Decoding.FinishReason;

namespace SpecEdge.CloudVerifier.Sessions;

/// <summary>
/// One generation on the verifier: the KV cache of the committed prefix (all but the last committed token, which the
/// next round feeds first), and the rounds checked against it. A round scores [last committed token, drafts…] in one
/// step, stage by stage; after an exit stage a provisional verdict may go out at once; the final verdict commits
/// tokens and rolls the cache back to the committed prefix. Rounds are processed one at a time, in order.
/// </summary>
internal sealed class DecodeSession : IDisposable
{
    private readonly TargetModel _target;
    private readonly BatchScheduler _scheduler;
    private readonly TimeProvider _time;
    private readonly SequenceSlot _slot;
    private readonly int _contextLength;
    private readonly AcceptanceRule _rule;
    private readonly TokenSampler _sampler;
    private readonly float[] _probabilities;
    private readonly List<TokenId> _tokens;
    private readonly StopRule _stop;
    private readonly SamplingConfig _sampling;
    private readonly bool _earlyVerdicts;
    private readonly int _candidates;
    private readonly IReadOnlyList<float> _thresholds;
    private readonly TokenId[] _step;
    private readonly int[] _parents;
    private readonly RowTopTwo[] _topTwo;
    private readonly List<SparseDistribution> _distributions = [];
    private readonly int _promptLength;
    private int _lastRoundDrafts;

    private DecodeSession(TargetModel target, BatchScheduler scheduler, TimeProvider time, SessionPlan plan)
    {
        _target = target;
        _scheduler = scheduler;
        _time = time;
        _tokens = plan.Tokens;
        _promptLength = plan.PromptLength;
        _stop = plan.Stop;
        _sampling = plan.Sampling;
        _earlyVerdicts = plan.EarlyVerdicts;
        _candidates = plan.Candidates;
        _thresholds = plan.Thresholds;
        _contextLength = plan.ContextLength;
        _slot = scheduler.OpenSlot();
        _rule = target.CreateAcceptanceRule();
        _sampler = new TokenSampler(target.Model.VocabSize);
        _probabilities = new float[target.Model.VocabSize];
        _step = new TokenId[target.MaxRoundTokens];
        _parents = new int[_step.Length];
        _topTwo = _candidates > 1 ? new RowTopTwo[target.Limits.MaxDraftTokens + 1] : [];
        Id = Guid.NewGuid().ToString("N")[..12];
    }

    public string Id { get; }

    public int CommittedLength => _tokens.Count;

    public int Generated => _tokens.Count - _promptLength;

    public uint LastRound { get; private set; }

    /// <summary>The last final verdict (accepted drafts and the token after them), or null before the first.</summary>
    public Verdict? LastVerdict { get; private set; }

    public bool Finished { get; private set; }

    public DomainFinish FinishReason { get; private set; }

    public SamplingConfig Sampling => _sampling;

    /// <summary>Conditional rounds the edge may send for one round (Open.candidates, at least 1).</summary>
    public int Candidates => _candidates;

    /// <summary>Validates an Open and works out what the session needs (its prefix, rules and KV-cache length).</summary>
    /// <exception cref="Grpc.Core.RpcException">InvalidArgument or FailedPrecondition saying what is wrong.</exception>
    public static SessionPlan Plan(Open open, TargetModel target)
    {
        var model = target.Model;
        var limits = target.Limits;
        if (open.PromptIds.Count == 0)
        {
            throw Refusal.InvalidArgument("Open.prompt_ids is empty: a prompt needs at least one token");
        }

        var prefix = open.PromptIds.Count + open.CommittedIds.Count;
        if (prefix > limits.MaxPromptTokens)
        {
            throw Refusal.InvalidArgument($"the prompt holds {prefix} tokens (prompt_ids + committed_ids), over the verifier's limit of {limits.MaxPromptTokens} (Limits:MaxPromptTokens)");
        }

        if (prefix >= target.MaxSequenceLength)
        {
            throw Refusal.InvalidArgument($"the prompt holds {prefix} tokens, which leaves no room in {target.LengthLimit}");
        }

        CheckIds(open.PromptIds, "Open.prompt_ids", model.VocabSize);
        CheckIds(open.CommittedIds, "Open.committed_ids", model.VocabSize);
        if (open.MaxNewTokens < 1 || open.MaxNewTokens > limits.MaxNewTokens)
        {
            throw Refusal.InvalidArgument($"Open.max_new_tokens = {open.MaxNewTokens} is out of range: use 1 to {limits.MaxNewTokens}");
        }

        if (open.CommittedIds.Count >= open.MaxNewTokens)
        {
            throw Refusal.FailedPrecondition($"Open.committed_ids already holds {open.CommittedIds.Count} tokens, the whole max_new_tokens = {open.MaxNewTokens}: nothing is left to generate");
        }

        var sampling = open.Sampling.ToConfig();
        if (sampling.Validate() is { } samplingProblem)
        {
            throw Refusal.InvalidArgument($"Open.sampling: {samplingProblem}");
        }

        var manifest = model.Manifest;
        if (open.DraftVocabSize != 0 && open.DraftVocabSize != manifest.VocabSize)
        {
            throw Refusal.FailedPrecondition($"the draft's vocabulary of {open.DraftVocabSize} tokens differs from the target's {manifest.VocabSize}: draft and target must share one vocabulary");
        }

        if (open.DraftTokenizerSha256.Length > 0 && manifest.Tokenizer.Sha256 is { } targetHash && open.DraftTokenizerSha256 != targetHash)
        {
            throw Refusal.FailedPrecondition($"the draft's tokenizer (sha256 {Short(open.DraftTokenizerSha256)}) differs from the target's (sha256 {Short(targetHash)}): draft and target must share one tokenizer");
        }

        IReadOnlyList<float> thresholds = target.Thresholds;
        if (open.ExitThresholds.Count > 0)
        {
            if (open.ExitThresholds.Count != manifest.Exits.Count)
            {
                throw Refusal.InvalidArgument($"Open.exit_thresholds has {open.ExitThresholds.Count} values but the target has {manifest.Exits.Count} exits");
            }

            foreach (var t in open.ExitThresholds)
            {
                if (!(t >= 0f && t <= 1f))
                {
                    throw Refusal.InvalidArgument($"Open.exit_thresholds value {t} is outside [0, 1]");
                }
            }

            thresholds = [.. open.ExitThresholds];
        }

        if (open.Candidates > ProtocolLimits.MaxCandidates)
        {
            throw Refusal.InvalidArgument($"Open.candidates = {open.Candidates} is out of range: use 0 to {ProtocolLimits.MaxCandidates}");
        }

        var tokens = new List<TokenId>(prefix + open.MaxNewTokens);
        tokens.AddRange(open.PromptIds.Select(id => new TokenId(id)));
        tokens.AddRange(open.CommittedIds.Select(id => new TokenId(id)));
        var stop = new StopRule(open.PromptIds.Count, open.MaxNewTokens, target.MaxSequenceLength, open.StopAtEos, model.Tokenizer.Eos);

        // The cache only needs room for this generation: the prefix, the new tokens, and a last round's drafts.
        var contextLength = Math.Min(target.MaxSequenceLength, open.PromptIds.Count + open.MaxNewTokens + target.MaxRoundTokens);
        return new SessionPlan(tokens, open.PromptIds.Count, stop, sampling, open.EarlyVerdicts, thresholds, contextLength, model.KvBytesPerContext(contextLength), (int)Math.Max(1, open.Candidates));
    }

    /// <summary>Allocates the session's cache, prefills the prefix, and returns the session and its Opened reply.</summary>
    public static async Task<(DecodeSession Session, Opened Reply)> OpenAsync(SessionPlan plan, TargetModel target, BatchScheduler scheduler, TimeProvider time, CancellationToken cancellationToken)
    {
        var session = new DecodeSession(target, scheduler, time, plan);
        try
        {
            var prefill = await session.PrefillAsync(cancellationToken).ConfigureAwait(false);
            var reply = new Opened
            {
                SessionId = session.Id,
                CommittedLength = (uint)plan.Tokens.Count,
                MaxDraftTokens = (uint)target.Limits.MaxDraftTokens,
                MaxLeaves = (uint)target.MaxLeaves,
                PrefillMicros = (long)prefill.TotalMicroseconds,
            };
            reply.Exits.AddRange(target.ExitInfos(plan.Thresholds));
            return (session, reply);
        }
        catch
        {
            session.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Decides what to do with a conditional round: null when its condition holds (verify it), otherwise the
    /// RoundDropped to send: the condition did not hold, or the round cannot apply at all (marked invalid). The session
    /// is unchanged either way and still expects round <see cref="LastRound"/> + 1.
    /// </summary>
    public DroppedRound? CheckCondition(Draft draft)
    {
        var condition = draft.Condition;
        string? invalid = null;
        if (Finished)
        {
            invalid = $"the generation has finished ({FinishReason})";
        }
        else if (draft.Round != LastRound + 1)
        {
            invalid = $"round {draft.Round} arrived after the session moved on: it expects round {LastRound + 1}";
        }
        else if (condition.Round != LastRound || LastVerdict is null)
        {
            invalid = $"the condition names round {condition.Round}, but the last verified round is {LastRound}: a conditional round must follow the round it assumes";
        }
        else if (condition.Accepted > _lastRoundDrafts || (condition.HasBranchId && condition.Accepted == _lastRoundDrafts))
        {
            invalid = $"the condition assumes {condition.Accepted} accepted drafts{(condition.HasBranchId ? " and a leaf after them" : string.Empty)}, but round {condition.Round} carried only {_lastRoundDrafts}: an impossible prefix";
        }
        else if (condition.HasBranchId && (uint)condition.BranchId >= (uint)_target.Model.VocabSize)
        {
            invalid = $"the condition's branch_id {condition.BranchId} is outside the vocabulary of {_target.Model.VocabSize}: an impossible prefix";
        }
        else if ((uint)condition.NextId >= (uint)_target.Model.VocabSize)
        {
            invalid = $"the condition's next_id {condition.NextId} is outside the vocabulary of {_target.Model.VocabSize}: an impossible prefix";
        }

        if (invalid is not null)
        {
            return new DroppedRound(draft.Round, invalid, Invalid: true);
        }

        var last = LastVerdict!.Value;
        return last == condition.ToDomain()
            ? null
            : new DroppedRound(draft.Round, $"round {condition.Round} ended with {last.Describe()}, not {condition.ToDomain().Describe()}", Invalid: false);
    }

    /// <summary>
    /// Verifies one round: its early verdicts as each exit stage of its batched step ends (those whose confidence clears
    /// the exit's threshold), then its final verdict, which commits tokens.
    /// </summary>
    /// <exception cref="Grpc.Core.RpcException">The round is out of order, does not match the session, or carries bad ids or distributions.</exception>
    public async IAsyncEnumerable<RoundVerdict> VerifyAsync(Draft draft, [EnumeratorCancellation] CancellationToken cancellationToken, DateTimeOffset? receivedAt = null)
    {
        var started = _time.GetTimestamp();
        var received = receivedAt ?? _time.GetUtcNow();
        var (drafts, leaves) = Validate(draft);
        var committed = _tokens.Count;
        var gamma = drafts.Length;
        // The session's step buffer: it stays untouched while the step is queued, since a session has one round at a time.
        // A tree's step is [last, drafts…, leaves…]: draft i follows step token i, a leaf at depth a the one before draft a.
        _step[0] = _tokens[^1];
        drafts.CopyTo(_step.AsSpan(1));
        for (var j = 0; j < leaves.Length; j++)
        {
            _step[gamma + 1 + j] = leaves[j].Token;
        }

        var step = _step.AsMemory(0, gamma + 1 + leaves.Length);
        ReadOnlyMemory<int> parents = default;
        if (leaves.Length > 0)
        {
            for (var i = 0; i <= gamma; i++)
            {
                _parents[i] = i - 1;
            }

            for (var j = 0; j < leaves.Length; j++)
            {
                _parents[gamma + 1 + j] = leaves[j].Depth;
            }

            parents = _parents.AsMemory(0, step.Length);
        }

        var round = new RoundCheck(this, draft.Round, drafts, leaves, committed, started);
        var run = _scheduler.RunAsync(_slot, step, round, cancellationToken, parents);
        _ = run.ContinueWith(static (_, state) => ((Channel<EarlyRoundVerdict>)state!).Writer.TryComplete(), round.Early, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        await foreach (var early in round.Early.Reader.ReadAllAsync(cancellationToken).ConfigureAwait(false))
        {
            yield return early;
        }

        var outcome = await run.ConfigureAwait(false);
        var final = round.Final ?? throw new InvalidOperationException("the round's step ended without its final stage");
        var (kept, reason) = Commit(drafts, final, committed);
        LastVerdict = final.Cut(drafts, kept);
        yield return new FinalRoundVerdict(draft.Round, LastVerdict.Value, reason, _tokens.Count, new RoundTimings(
            outcome.Queued, outcome.Stages, _time.GetElapsedTime(started), outcome.Emulated, received, _time.GetUtcNow()));
    }

    /// <summary>Prefills the committed prefix except its last token, which the first round feeds.</summary>
    private async Task<TimeSpan> PrefillAsync(CancellationToken cancellationToken)
    {
        var start = _time.GetTimestamp();
        if (_tokens.Count > 1)
        {
            await _scheduler.RunAsync(_slot, _tokens.ToArray().AsMemory(0, _tokens.Count - 1), null, cancellationToken).ConfigureAwait(false);
        }

        return _time.GetElapsedTime(start);
    }

    private (TokenId[] Drafts, DraftLeaf[] Leaves) Validate(Draft draft)
    {
        if (Finished)
        {
            throw Refusal.FailedPrecondition($"the generation has finished ({FinishReason}); no more rounds are taken");
        }

        if (draft.Round != LastRound + 1)
        {
            throw Refusal.FailedPrecondition($"round {draft.Round} is out of order: the session expects round {LastRound + 1}");
        }

        if (draft.BaseLength != _tokens.Count)
        {
            throw Refusal.FailedPrecondition($"round {draft.Round}: base_length {draft.BaseLength} does not match the session's committed length {_tokens.Count}");
        }

        var limits = _target.Limits;
        if (draft.Ids.Count > limits.MaxDraftTokens)
        {
            throw Refusal.InvalidArgument($"round {draft.Round}: {draft.Ids.Count} drafts are over the verifier's limit of {limits.MaxDraftTokens} per round");
        }

        if (draft.Leaves.Count > _target.MaxLeaves)
        {
            throw Refusal.InvalidArgument(_target.MaxLeaves == 0
                ? $"round {draft.Round}: {draft.Leaves.Count} leaves, but this verifier takes chains only (Limits:MaxLeaves is 0, or batching is off)"
                : $"round {draft.Round}: {draft.Leaves.Count} leaves are over the verifier's limit of {_target.MaxLeaves} per round");
        }

        if (_tokens.Count + draft.Ids.Count + draft.Leaves.Count >= _contextLength)
        {
            throw Refusal.InvalidArgument($"round {draft.Round}: {draft.Ids.Count} drafts and {draft.Leaves.Count} leaves after {_tokens.Count} tokens would pass the session's maximum sequence length of {_contextLength}");
        }

        CheckIds(draft.Ids, $"round {draft.Round}: Draft.ids", _target.Model.VocabSize);
        var drafts = new TokenId[draft.Ids.Count];
        for (var i = 0; i < drafts.Length; i++)
        {
            drafts[i] = new TokenId(draft.Ids[i]);
        }

        var leaves = draft.Leaves.Count == 0 ? [] : new DraftLeaf[draft.Leaves.Count];
        for (var j = 0; j < leaves.Length; j++)
        {
            var leaf = draft.Leaves[j];
            if (leaf.Depth >= drafts.Length || (j > 0 && leaf.Depth < draft.Leaves[j - 1].Depth))
            {
                throw Refusal.InvalidArgument($"round {draft.Round}: leaf {j} has depth {leaf.Depth}; leaves need a depth under the round's {drafts.Length} drafts, in order of depth");
            }

            if ((uint)leaf.Id >= (uint)_target.Model.VocabSize)
            {
                throw Refusal.InvalidArgument($"round {draft.Round}: leaf {j}'s id {leaf.Id} is outside the vocabulary of {_target.Model.VocabSize}");
            }

            leaves[j] = leaf.ToDomain();
        }

        _distributions.Clear();
        if (!_sampling.IsGreedy)
        {
            if (draft.Distributions.Count != drafts.Length)
            {
                throw Refusal.InvalidArgument($"round {draft.Round}: sampling needs one distribution per draft, got {draft.Distributions.Count} for {drafts.Length} drafts");
            }

            for (var i = 0; i < drafts.Length; i++)
            {
                var wire = draft.Distributions[i];
                if (wire.Ids.Count != wire.Probabilities.Count)
                {
                    throw Refusal.InvalidArgument($"round {draft.Round}: distribution {i} has {wire.Ids.Count} ids but {wire.Probabilities.Count} probabilities");
                }

                var distribution = wire.ToDomain();
                if (distribution.Validate(_target.Model.VocabSize) is { } problem)
                {
                    throw Refusal.InvalidArgument($"round {draft.Round}: distribution {i}: {problem}");
                }

                if (!(distribution.ProbabilityOf(drafts[i]) > 0f))
                {
                    throw Refusal.InvalidArgument($"round {draft.Round}: draft {i} (token {drafts[i]}) has probability 0 in its own distribution");
                }

                _distributions.Add(distribution);
            }

            for (var j = 0; j < leaves.Length; j++)
            {
                if (!(_distributions[leaves[j].Depth].ProbabilityOf(leaves[j].Token) > 0f))
                {
                    throw Refusal.InvalidArgument($"round {draft.Round}: leaf {j} (token {leaves[j].Token}) has probability 0 in the distribution of its depth {leaves[j].Depth}: a leaf is drawn from that distribution");
                }
            }
        }

        LastRound = draft.Round;
        _lastRoundDrafts = drafts.Length;
        return (drafts, leaves);
    }

    private Verdict Decide(TokenId[] drafts, DraftLeaf[] leaves, LogitsView logits, int committed) =>
        _rule.Verify(drafts, leaves, _sampling.IsGreedy ? null : _distributions, i => logits.Row(i), _sampling, committed);

    /// <summary>The scored row of the leaf a verdict took (the first at its depth with its token).</summary>
    private static int LeafRowOf(TokenId[] drafts, DraftLeaf[] leaves, Verdict verdict)
    {
        var j = DraftLeaf.IndexOf(leaves, verdict.Accepted, verdict.Branch!.Value);
        return j >= 0 ? DraftLeaf.Row(drafts.Length, j) : throw new InvalidOperationException($"the verdict took a leaf {verdict.Branch} at depth {verdict.Accepted} that the round does not carry");
    }

    /// <summary>An exit's provisional verdict on a round, or null when its confidence is under the exit's threshold.</summary>
    private EarlyRoundVerdict? EarlyVerdict(uint round, int exit, TokenId[] drafts, DraftLeaf[] leaves, LogitsView exitLogits, int committed, long started)
    {
        var whole = Decide(drafts, leaves, exitLogits, committed);
        var kept = Kept(drafts, whole, committed);
        var verdict = whole.Cut(drafts, kept);
        // With alternatives wanted (greedy, a chain verdict the stop rule left whole: a cut one ends the generation),
        // every row's top two are worked out once; the confidence is their arg-max probabilities' least over the
        // verdict's rows.
        var rows = _candidates > 1 && _sampling.IsGreedy && whole.Branch is null && kept == whole.Length ? TopTwo(exitLogits, drafts.Length + 1) : null;
        // The verdict's rows: row i gives the token after the first i drafts; a taken leaf's own row gives the token after it.
        var confidence = rows is not null ? LeastSure(rows.AsSpan(0, kept))
            : Confidence(exitLogits, verdict.Accepted + 1, verdict.Branch is null ? -1 : LeafRowOf(drafts, leaves, verdict));
        if (confidence < _thresholds[exit])
        {
            return null;
        }

        // The verdict's arg-max and the distribution's agree except on an exact tie; then send none rather than guess.
        IReadOnlyList<RankedVerdict> alternatives = rows is not null && rows[verdict.Accepted].First == verdict.Next
            ? VerdictAlternatives.Rank(drafts, verdict, rows.AsSpan(0, drafts.Length + 1), _candidates - 1, leaves, j => TokenSampler.ArgMax(exitLogits.Row(DraftLeaf.Row(drafts.Length, j))))
            : [];

        return new EarlyRoundVerdict(round, _target.Model.Manifest.Exits[exit], verdict, confidence, _time.GetElapsedTime(started), alternatives);
    }

    /// <summary>The least of the rows' arg-max probabilities: a verdict is as sure as its least sure row.</summary>
    private static double LeastSure(ReadOnlySpan<RowTopTwo> rows)
    {
        double least = 1;
        foreach (var row in rows)
        {
            least = Math.Min(least, row.FirstProbability);
        }

        return least;
    }

    /// <summary>
    /// The top two tokens of each of the first <paramref name="count"/> rows under the exit's distribution (temperature
    /// 1), in the session's buffer (a session's exits run one after another on the scheduler's thread).
    /// </summary>
    private RowTopTwo[] TopTwo(LogitsView exitLogits, int count)
    {
        for (var i = 0; i < count; i++)
        {
            _topTwo[i] = RowTopTwo.FromLogits(exitLogits.Row(i), _probabilities);
        }

        return _topTwo;
    }

    /// <summary>
    /// An exit's confidence in its verdict: the smallest, over the rows the verdict rests on (the accepted drafts and
    /// the next token), of the exit distribution's largest probability. The verdict is as sure as its least sure row;
    /// on the trained pair this ranks verdicts better than the product of the rows' probabilities
    /// (<c>docs/protocol.md</c>, Confidence).
    /// </summary>
    private double Confidence(LogitsView exitLogits, int chainRows, int leafRow)
    {
        double confidence = 1;
        for (var i = 0; i < chainRows; i++)
        {
            confidence = Math.Min(confidence, MostLikely(exitLogits.Row(i)));
        }

        return leafRow < 0 ? confidence : Math.Min(confidence, MostLikely(exitLogits.Row(leafRow)));
    }

    /// <summary>The largest probability of the exit's distribution at a row (temperature 1 when greedy, the session's sampling otherwise).</summary>
    private double MostLikely(ReadOnlySpan<float> row)
    {
        if (_sampling.IsGreedy)
        {
            // The largest probability is 1 / Σ exp(l − max), vectorised, without writing the distribution.
            return RowTopTwo.ArgMaxProbability(row, TensorPrimitives.IndexOfMax(row), _probabilities);
        }

        _sampler.Distribution(row, _sampling, _probabilities);
        var max = 0f;
        foreach (var p in _probabilities)
        {
            max = Math.Max(max, p);
        }

        return max;
    }

    /// <summary>A verdict's new tokens (accepted drafts, then the next token), cut where the generation stops.</summary>
    private (TokenId[] Tokens, DomainFinish Reason) Produced(TokenId[] drafts, Verdict verdict, int committed)
    {
        var produced = verdict.Tokens(drafts);
        var (kept, reason) = _stop.Apply(committed, produced);
        return (produced[..kept], reason);
    }

    private int Kept(TokenId[] drafts, Verdict verdict, int committed) => Produced(drafts, verdict, committed).Tokens.Length;

    private (int Kept, DomainFinish Reason) Commit(TokenId[] drafts, Verdict verdict, int committed)
    {
        var (tokens, reason) = Produced(drafts, verdict, committed);
        _tokens.AddRange(tokens);

        // Keep the cache of everything but the new last token: [old last, the kept drafts].
        _slot.Rollback(_tokens.Count - 1);
        if (reason != DomainFinish.None)
        {
            Finished = true;
            FinishReason = reason;
            _scheduler.Finished(_slot);
        }

        return (tokens.Length, reason);
    }

    public void Dispose() => _scheduler.CloseSlot(_slot);

    /// <summary>
    /// One round in its batched step: after each exit stage, the exit's verdict (sent at once when confident); after the
    /// last stage, the final verdict. Runs on the scheduler's thread while the session awaits the step.
    /// </summary>
    private sealed class RoundCheck(DecodeSession session, uint round, TokenId[] drafts, DraftLeaf[] leaves, int committed, long started) : IStageObserver
    {
        public Channel<EarlyRoundVerdict> Early { get; } = Channel.CreateUnbounded<EarlyRoundVerdict>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });

        public Verdict? Final { get; private set; }

        public void OnStage(int stage, LogitsView logits)
        {
            if (stage == session._target.Model.Stages.Count - 1)
            {
                var final = session.Decide(drafts, leaves, logits, committed);
                if (final.Branch is not null)
                {
                    // The taken leaf's keys and values take the place of the draft it replaced (cache position
                    // committed − 1 + step index), here on the scheduler's thread, before any later step reads the slot.
                    session._slot.MoveToken(committed - 1 + LeafRowOf(drafts, leaves, final), committed + final.Accepted);
                }

                Final = final;
            }
            else if (session._earlyVerdicts && session.EarlyVerdict(round, stage, drafts, leaves, logits, committed, started) is { } early)
            {
                Early.Writer.TryWrite(early);
            }
        }
    }

    private static void CheckIds(IReadOnlyList<int> ids, string field, int vocab)
    {
        for (var i = 0; i < ids.Count; i++)
        {
            if ((uint)ids[i] >= (uint)vocab)
            {
                throw Refusal.InvalidArgument($"{field}[{i}] = {ids[i]} is outside the vocabulary of {vocab}");
            }
        }
    }

    private static string Short(string hash) => hash.Length > 12 ? hash[..12] + "…" : hash;
}

/// <summary>What an Open asks for, validated: the session's prefix, rules, and the KV cache it needs.</summary>
internal sealed record SessionPlan(List<TokenId> Tokens, int PromptLength, StopRule Stop, SamplingConfig Sampling, bool EarlyVerdicts, IReadOnlyList<float> Thresholds, int ContextLength, long KvBytes, int Candidates = 1);
