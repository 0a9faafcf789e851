using SpecEdge.Shared.Tokenization;

namespace SpecEdge.Shared.Decoding;

/// <summary>
/// The speculative-decoding acceptance rule (Leviathan et al. 2023; Chen et al. 2023), which makes the output exactly the
/// target's: greedy, draft i stands while it equals the target's arg-max; sampling, draft dᵢ stands with probability
/// min(1, p(dᵢ)/q(dᵢ)); at the first rejection the next token is drawn from norm(max(0, p − q)); when all stand, a bonus
/// token is drawn from p. Random numbers come from <see cref="SamplingRandom"/> keyed by sequence position, so the
/// same round checked on an early exit's logits uses the very numbers the final check uses.
/// </summary>
public sealed class AcceptanceRule
{
    private readonly TokenSampler _sampler;
    private readonly float[] _p;
    private readonly RejectionCorrection _correction;

    /// <summary>A rule over a vocabulary of <paramref name="vocabSize"/> tokens (its scratch buffers are sized to it).</summary>
    public AcceptanceRule(int vocabSize)
        : this(vocabSize, RejectionCorrection.Residual)
    {
    }

    /// <summary>A test seam: the rule with a deliberately wrong correction, so tests can show they would catch it.</summary>
    internal AcceptanceRule(int vocabSize, RejectionCorrection correction)
    {
        _sampler = new TokenSampler(vocabSize);
        _p = new float[vocabSize];
        _correction = correction;
    }

    /// <summary>Checks a round (a chain of drafts).</summary>
    /// <param name="drafts">The drafted tokens, in order.</param>
    /// <param name="draftDistributions">For sampling, the distribution each draft was drawn from; ignored when greedy.</param>
    /// <param name="targetRow">The target's logits for scored position i (0 … drafts.Length): position i predicts the token after draft i − 1.</param>
    /// <param name="config">The sampling configuration of the generation.</param>
    /// <param name="basePosition">The sequence position of the first draft (the committed length before the round).</param>
    public Verdict Verify(ReadOnlySpan<TokenId> drafts, IReadOnlyList<SparseDistribution>? draftDistributions, Func<int, ReadOnlySpan<float>> targetRow, SamplingConfig config, long basePosition) =>
        Verify(drafts, [], draftDistributions, targetRow, config, basePosition);

    /// <summary>
    /// Checks a round whose drafts carry leaves (a token tree: the chain, and beside the draft at some depths other
    /// tokens with the same parent). At the first depth where the draft falls, the leaves there are tried in order; one
    /// that stands is committed and followed by the target's token after it (scored position drafts.Length + 1 + j for
    /// leaf j). Greedy, the leaf stands when it is the target's arg-max. Sampling follows SpecInfer's multi-step
    /// speculative sampling (Miao et al., "SpecInfer", ASPLOS 2024, Algorithm 2 and Theorem 4.2): the leaves are drawn
    /// independently from the same draft distribution q as the draft at their depth; after a rejection the target's p
    /// becomes norm(max(0, p − q)), the next child x stands with probability min(1, p(x)/q(x)) under it, and when every
    /// child falls the token is drawn from the last residual. The committed token is then distributed exactly as p.
    /// </summary>
    /// <param name="drafts">The drafted chain, in order.</param>
    /// <param name="leaves">The leaves, in order of depth (their scored positions follow the chain's).</param>
    /// <param name="draftDistributions">For sampling, the distribution each draft (and the leaves at its depth) was drawn from; ignored when greedy.</param>
    /// <param name="targetRow">The target's logits for scored position i: 0 … drafts.Length for the chain, drafts.Length + 1 + j for leaf j.</param>
    /// <param name="config">The sampling configuration of the generation.</param>
    /// <param name="basePosition">The sequence position of the first draft (the committed length before the round).</param>
    public Verdict Verify(ReadOnlySpan<TokenId> drafts, ReadOnlySpan<DraftLeaf> leaves, IReadOnlyList<SparseDistribution>? draftDistributions, Func<int, ReadOnlySpan<float>> targetRow, SamplingConfig config, long basePosition)
    {
        if (config.IsGreedy)
        {
            for (var i = 0; i < drafts.Length; i++)
            {
                var best = TokenSampler.ArgMax(targetRow(i));
                if (best != drafts[i])
                {
                    var j = DraftLeaf.IndexOf(leaves, i, best);
                    return j < 0 ? new Verdict(i, best) : new Verdict(i, TokenSampler.ArgMax(targetRow(DraftLeaf.Row(drafts.Length, j))), best);
                }
            }

            return new Verdict(drafts.Length, TokenSampler.ArgMax(targetRow(drafts.Length)));
        }

        if (draftDistributions is null || draftDistributions.Count != drafts.Length)
        {
            throw new ArgumentException($"sampling needs the draft distribution of each of the {drafts.Length} drafts", nameof(draftDistributions));
        }

        for (var i = 0; i < drafts.Length; i++)
        {
            var position = basePosition + i;
            _sampler.Distribution(targetRow(i), config, _p);
            var q = draftDistributions[i];
            var qd = q.ProbabilityOf(drafts[i]);
            if (!(qd > 0f))
            {
                throw new ArgumentException($"draft {i} (token {drafts[i]}) has probability 0 in its own draft distribution", nameof(draftDistributions));
            }

            var u = SamplingRandom.Uniform(config.Seed, position, RandomPurpose.Accept);
            if (u * qd < _p[drafts[i].Value])
            {
                continue;
            }

            // Rejected: the correction comes from the residual max(0, p − q).
            if (_correction == RejectionCorrection.Residual)
            {
                SubtractScaled(q, 1f);
            }

            // The leaves at this depth, in order, against the residual (kept unnormalised: total is its mass).
            for (var j = DraftLeaf.FirstAt(leaves, i); j < leaves.Length && leaves[j].Depth == i; j++)
            {
                var leaf = leaves[j].Token;
                var ql = q.ProbabilityOf(leaf);
                if (!(ql > 0f))
                {
                    throw new ArgumentException($"leaf {j} (token {leaf}) has probability 0 in the draft distribution of its depth {i}", nameof(leaves));
                }

                var total = TokenSampler.Mass(_p);
                if (!(total > 0))
                {
                    break;
                }

                var v = SamplingRandom.Uniform(config.Seed, position, RandomPurpose.LeafAccept, j);
                if (v * ql * total < _p[leaf.Value])
                {
                    return new Verdict(i, SampleTarget(targetRow(DraftLeaf.Row(drafts.Length, j)), config, position + 1), leaf);
                }

                SubtractScaled(q, (float)total);
            }

            return new Verdict(i, TokenSampler.Sample(_p, SamplingRandom.Uniform(config.Seed, position, RandomPurpose.Residual)));
        }

        return new Verdict(drafts.Length, SampleTarget(targetRow(drafts.Length), config, basePosition + drafts.Length));
    }

    /// <summary>p ← max(0, p − scale · q) over q's support.</summary>
    private void SubtractScaled(SparseDistribution q, float scale)
    {
        for (var j = 0; j < q.Count; j++)
        {
            var id = q.Ids[j];
            _p[id] = Math.Max(0f, _p[id] - (scale * q.Probabilities[j]));
        }
    }

    /// <summary>Draws the token at <paramref name="position"/> from the target's own distribution (autoregressive decoding, bonus tokens).</summary>
    public TokenId SampleTarget(ReadOnlySpan<float> logits, SamplingConfig config, long position)
    {
        if (config.IsGreedy)
        {
            return TokenSampler.ArgMax(logits);
        }

        _sampler.Distribution(logits, config, _p);
        return TokenSampler.Sample(_p, SamplingRandom.Uniform(config.Seed, position, RandomPurpose.Target));
    }
}

/// <summary>Where the token after a rejected draft comes from.</summary>
internal enum RejectionCorrection
{
    /// <summary>norm(max(0, p − q)): the rule that keeps the output distribution the target's.</summary>
    Residual,

    /// <summary>p itself: the classic mistake (it over-weights tokens the draft already favours). For tests only.</summary>
    TargetDistribution,
}
