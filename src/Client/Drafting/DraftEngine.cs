using SpecEdge.Shared.Decoding;
using SpecEdge.Shared.Runtime;
using SpecEdge.Shared.Timing;
using SpecEdge.Shared.Tokenization;

namespace SpecEdge.EdgeClient.Drafting;

/// <summary>
/// A drafted round: the tokens, when sampling the distribution each was drawn from, and, when the caller asked after each
/// draft whether to go on, the draft's probability of each token it chose (its confidence: the arg-max's softmax
/// probability when greedy, the drawn token's when sampling), and the round's leaves when a token tree was asked for.
/// </summary>
public sealed record DraftedRound(TokenId[] Tokens, SparseDistribution[]? Distributions, TimeSpan Elapsed, float[]? Confidences = null)
{
    /// <summary>The token tree's leaves beside the drafts, in order of depth (none for a chain).</summary>
    public DraftLeaf[] Leaves { get; init; } = [];

    /// <summary>The first <paramref name="count"/> drafts, with the leaves beside them.</summary>
    public DraftedRound Take(int count) =>
        count >= Tokens.Length ? this : new DraftedRound(Tokens[..count], Distributions?[..count], Elapsed, Confidences?[..count]) { Leaves = Leaves[..DraftLeaf.FirstAt(Leaves, count)] };
}

/// <summary>Asked after each draft whether to draft one more, given the confidences of the drafts so far.</summary>
/// <param name="confidences">The draft's probability of each token drafted so far in this call.</param>
/// <returns>True to draft another.</returns>
public delegate bool DraftContinuation(ReadOnlySpan<float> confidences);

/// <summary>
/// Owns the draft model's sequence. Drafting continues any prefix: the cache keeps the longest prefix it shares with
/// the new one and re-feeds the rest in one step. So drafting on a provisional prefix (a branch) and falling back to
/// the final prefix after a miss need no copies of the cache, only the re-feed of the tokens that differ.
/// One call at a time: a call made while another runs waits for it (the cache follows one prefix; branches drafted
/// ahead on several provisional outcomes take turns). <see cref="Dispose"/> may come from another thread: it waits for
/// the model run in progress (freeing the native context under a run crashes ONNX Runtime), and later calls throw
/// <see cref="ObjectDisposedException"/>.
/// </summary>
public sealed class DraftEngine : IDisposable
{
    /// <summary>Default for the most entries a sampled draft distribution sends (the draft samples from this truncation).</summary>
    public const int DefaultWireTopK = 64;

    private readonly DecodeContext _context;
    private readonly List<TokenId> _cached = [];
    private readonly TokenSampler _sampler;
    private readonly float[] _probabilities;
    private readonly ComputeProfile _profile;
    private readonly TimeProvider _time;
    private readonly int _wireTopK;

    /// <summary>Held while the native context is used (a run, or reading its logits); <see cref="Dispose"/> takes it too.</summary>
    private readonly Lock _gate = new();

    /// <summary>Held for a whole drafting call, across its compute floors: calls take turns.</summary>
    private readonly SemaphoreSlim _turn = new(1, 1);
    private bool _disposed;

    /// <summary>A draft engine over <paramref name="model"/> (its own KV cache), with drafting floors from <paramref name="profile"/>.</summary>
    public DraftEngine(LanguageModel model, ComputeProfile? profile = null, TimeProvider? time = null, int wireTopK = DefaultWireTopK, int? maxSequenceLength = null)
    {
        Model = model;
        _context = model.CreateContext(maxSequenceLength);
        _sampler = new TokenSampler(model.VocabSize);
        _probabilities = new float[model.VocabSize];
        _profile = profile ?? ComputeProfile.Real;
        _time = time ?? TimeProvider.System;
        _wireTopK = wireTopK;
    }

    /// <summary>The draft model.</summary>
    public LanguageModel Model { get; }

    /// <summary>The longest sequence the draft's cache holds.</summary>
    public int MaxSequenceLength => _context.MaxLength;

    /// <summary>Tokens fed to the draft model over this engine's life (prefill and catch-up included).</summary>
    public long TokensFed { get; private set; }

    /// <summary>
    /// Drafts up to <paramref name="count"/> tokens after <paramref name="prefix"/>. Greedy drafts are the draft's
    /// arg-max; sampled drafts are drawn from the draft's distribution (cut to the wire top-k) with the random numbers
    /// of their sequence positions, and come with that distribution. With <paramref name="more"/>, drafting stops early
    /// once it answers false (a draft costs a step: the question is asked before the step, on the confidences so far).
    /// With <paramref name="leaves"/> above 0 the round is a token tree: beside each draft, that many leaves from the same
    /// row (no extra step), <paramref name="maxLeaves"/> in all at most, shallowest first: greedy, the row's next most
    /// likely tokens after the draft; sampling, tokens drawn independently from the draft's distribution, as
    /// SpecInfer's acceptance rule needs them.
    /// </summary>
    public async ValueTask<DraftedRound> DraftAsync(IReadOnlyList<TokenId> prefix, int count, SamplingConfig sampling, CancellationToken cancellationToken, DraftContinuation? more = null, int leaves = 0, int maxLeaves = int.MaxValue)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(leaves);
        ArgumentOutOfRangeException.ThrowIfNegative(maxLeaves);
        await _turn.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            return await DraftInTurnAsync(prefix, count, sampling, more, leaves, maxLeaves, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _turn.Release();
        }
    }

    private async ValueTask<DraftedRound> DraftInTurnAsync(IReadOnlyList<TokenId> prefix, int count, SamplingConfig sampling, DraftContinuation? more, int leafWidth, int maxLeaves, CancellationToken cancellationToken)
    {
        var start = _time.GetTimestamp();
        count = Math.Min(count, _context.MaxLength - prefix.Count);
        if (count <= 0)
        {
            return new DraftedRound([], sampling.IsGreedy ? null : [], TimeSpan.Zero, []);
        }

        var tokens = new TokenId[count];
        var distributions = sampling.IsGreedy ? null : new SparseDistribution[count];
        // Confidences only for a caller that asks after each draft (adaptive γ): fixed-γ rounds skip the exp-sum.
        var confidences = more is null ? null : new float[count];
        var leaves = leafWidth == 0 || maxLeaves == 0 ? null : new List<DraftLeaf>(Math.Min(count * leafWidth, maxLeaves));
        var top = leaves is null ? null : new int[leafWidth + 1];
        var draftConfig = sampling.IsGreedy ? sampling : sampling with { TopK = sampling.TopK > 0 ? Math.Min(sampling.TopK, _wireTopK) : _wireTopK };
        LogitsView row = default;
        for (var i = 0; i < count; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var position = prefix.Count + i;
            lock (_gate)
            {
                ObjectDisposedException.ThrowIf(_disposed, this);
                if (i == 0)
                {
                    row = SyncTo(prefix);
                }

                if (sampling.IsGreedy)
                {
                    // With leaves, the draft and its runners-up come from one pass over the row.
                    var width = leaves is null ? 0 : Math.Min(leafWidth, maxLeaves - leaves.Count);
                    if (width == 0)
                    {
                        tokens[i] = TokenSampler.ArgMax(row.Last);
                    }
                    else
                    {
                        var ranked = top!.AsSpan(0, Math.Min(width + 1, row.Last.Length));
                        TokenSampler.Top(row.Last, ranked);
                        tokens[i] = new TokenId(ranked[0]);
                        for (var k = 1; k < ranked.Length; k++)
                        {
                            leaves!.Add(new DraftLeaf(i, new TokenId(ranked[k])));
                        }
                    }

                    if (confidences is not null)
                    {
                        confidences[i] = RowTopTwo.ArgMaxProbability(row.Last, tokens[i].Value, _probabilities);
                    }
                }
                else
                {
                    _sampler.Distribution(row.Last, draftConfig, _probabilities);
                    var q = SparseDistribution.FromDense(_probabilities, _wireTopK);
                    distributions![i] = q;
                    tokens[i] = SampleSparse(q, SamplingRandom.Uniform(sampling.Seed, position, RandomPurpose.Draft));
                    if (confidences is not null)
                    {
                        confidences[i] = q.ProbabilityOf(tokens[i]);
                    }

                    for (var k = 0; leaves is not null && k < leafWidth && leaves.Count < maxLeaves; k++)
                    {
                        leaves.Add(new DraftLeaf(i, SampleSparse(q, SamplingRandom.Uniform(sampling.Seed, position, RandomPurpose.Leaf, k))));
                    }
                }

                if (i < count - 1 && more is not null && !more(confidences!.AsSpan(0, i + 1)))
                {
                    count = i + 1;
                }

                if (i < count - 1)
                {
                    row = Feed([tokens[i]]);
                }
            }

            // A step in progress is not cut short by a cancellation (a device cannot abort a forward pass); the next is not begun.
            await ComputeFloor.WaitAsync(_time, start, _profile.DraftFloor(i + 1), CancellationToken.None).ConfigureAwait(false);
        }

        // Drafting may stop early (count shrinks): no leaf was made past the last draft.
        return new DraftedRound(tokens[..count], distributions?[..count], _time.GetElapsedTime(start), confidences?[..count]) { Leaves = leaves is null ? [] : [.. leaves] };
    }

    /// <summary>The draft model's own next token after <paramref name="prefix"/> (edge-only decoding).</summary>
    public async ValueTask<TokenId> NextAsync(IReadOnlyList<TokenId> prefix, SamplingConfig sampling, AcceptanceRule rule, CancellationToken cancellationToken)
    {
        await _turn.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            var start = _time.GetTimestamp();
            TokenId next;
            lock (_gate)
            {
                ObjectDisposedException.ThrowIf(_disposed, this);
                next = rule.SampleTarget(SyncTo(prefix).Last, sampling, prefix.Count);
            }

            await ComputeFloor.WaitAsync(_time, start, _profile.DraftFloor(1), cancellationToken).ConfigureAwait(false);
            return next;
        }
        finally
        {
            _turn.Release();
        }
    }

    /// <summary>Waits for the run in progress, then frees the draft's cache; later calls throw <see cref="ObjectDisposedException"/>.</summary>
    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            _context.Dispose();
        }
    }

    // Makes the cache hold prefix[..^1] and returns the logits row of prefix[^1] (what comes after the prefix).
    private LogitsView SyncTo(IReadOnlyList<TokenId> prefix)
    {
        if (prefix.Count == 0)
        {
            throw new ArgumentException("drafting needs a non-empty prefix", nameof(prefix));
        }

        var keep = 0;
        var limit = Math.Min(_cached.Count, prefix.Count - 1);
        while (keep < limit && _cached[keep] == prefix[keep])
        {
            keep++;
        }

        _context.Rollback(keep);
        _cached.RemoveRange(keep, _cached.Count - keep);
        var pending = new TokenId[prefix.Count - keep];
        for (var i = 0; i < pending.Length; i++)
        {
            pending[i] = prefix[keep + i];
        }

        LogitsView row = default;
        for (var start = 0; start < pending.Length; start += _context.MaxStepTokens)
        {
            row = Feed(pending.AsSpan(start, Math.Min(_context.MaxStepTokens, pending.Length - start)));
        }

        return row;
    }

    private LogitsView Feed(ReadOnlySpan<TokenId> tokens)
    {
        var logits = _context.Forward(tokens);
        _cached.AddRange(tokens);
        TokensFed += tokens.Length;
        return logits;
    }

    private static TokenId SampleSparse(SparseDistribution q, double u)
    {
        double acc = 0;
        for (var i = 0; i < q.Count; i++)
        {
            acc += q.Probabilities[i];
            if (acc > u)
            {
                return new TokenId(q.Ids[i]);
            }
        }

        return new TokenId(q.Ids[^1]);
    }
}
