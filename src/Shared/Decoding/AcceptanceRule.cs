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

    /// <summary>Checks a round.</summary>
    /// <param name="drafts">The drafted tokens, in order.</param>
    /// <param name="draftDistributions">For sampling, the distribution each draft was drawn from; ignored when greedy.</param>
    /// <param name="targetRow">The target's logits for scored position i (0 … drafts.Length): position i predicts the token after draft i − 1.</param>
    /// <param name="config">The sampling configuration of the generation.</param>
    /// <param name="basePosition">The sequence position of the first draft (the committed length before the round).</param>
    public Verdict Verify(ReadOnlySpan<TokenId> drafts, IReadOnlyList<SparseDistribution>? draftDistributions, Func<int, ReadOnlySpan<float>> targetRow, SamplingConfig config, long basePosition)
    {
        if (config.IsGreedy)
        {
            for (var i = 0; i < drafts.Length; i++)
            {
                var best = TokenSampler.ArgMax(targetRow(i));
                if (best != drafts[i])
                {
                    return new Verdict(i, best);
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
            for (var j = 0; j < q.Count && _correction == RejectionCorrection.Residual; j++)
            {
                var id = q.Ids[j];
                _p[id] = Math.Max(0f, _p[id] - q.Probabilities[j]);
            }

            return new Verdict(i, TokenSampler.Sample(_p, SamplingRandom.Uniform(config.Seed, position, RandomPurpose.Residual)));
        }

        return new Verdict(drafts.Length, SampleTarget(targetRow(drafts.Length), config, basePosition + drafts.Length));
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
