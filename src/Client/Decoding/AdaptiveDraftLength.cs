using SpecEdge.Shared.Numerics;

namespace SpecEdge.EdgeClient.Decoding;

/// <summary>
/// Chooses γ (drafts per round) by Thompson sampling from what the rounds themselves measured, not from a formula that
/// assumes independent acceptance and drafting on the critical path.
/// <list type="bullet">
/// <item><b>Tokens per round.</b> Each draft position i has a Beta posterior over the chance it stands given the ones
/// before it stood (every round that reached position i is a trial). A round of γ drafts commits on average
/// E[γ] = 1 + Σ_{j ≤ γ} Π_{i ≤ j} p_i tokens. Acceptance falls along a round (a draft far ahead rests on more guesses),
/// which the independent-acceptance formula misses.</item>
/// <item><b>Time per round.</b> A least-squares line of a round's wall time (from one final verdict to the next)
/// against γ: its slope is what one more draft really costs, which pre-drafting makes far less than a draft's compute
/// when drafting overlaps verification. Until rounds of two γ values have been seen, the slope is the measured
/// drafting time per token, uncertain by as much.</item>
/// </list>
/// Each choice samples every p_i and the slope from their posteriors and takes the γ with the least sampled time per
/// token: γ values whose worth is uncertain get tried, and settled ones win (Thompson sampling over γ, as EESD does).
/// Statistics decay by <see cref="Discount"/> per round, so the choice follows a changing link. One instance learns
/// across a client's generations of one mode.
/// </summary>
public sealed class AdaptiveDraftLength
{
    /// <summary>Weight kept by older observations per new round.</summary>
    public const double Discount = 0.97;

    /// <summary>Pseudo-rounds of a position's prior, at the mean of the position before it.</summary>
    public const double PriorRounds = 2;

    private readonly int _max;
    private readonly double[] _stood;
    private readonly double[] _tried;
    private SplitMix64 _random;
    private readonly Lock _lock = new();
    private double _weight;
    private double _sumX;
    private double _sumY;
    private double _sumXX;
    private double _sumXY;
    private double _sumYY;
    private double _draftMs;

    /// <summary>Starts at <paramref name="initial"/> drafts per round, never above <paramref name="max"/>.</summary>
    /// <param name="initial">The first γ.</param>
    /// <param name="max">The largest γ to try.</param>
    /// <param name="seed">Seed of the sampling (fixed: runs repeat).</param>
    public AdaptiveDraftLength(int initial, int max, ulong seed = 0x5EED)
    {
        _max = Math.Max(1, max);
        Current = Math.Clamp(initial, 1, _max);
        _stood = new double[_max];
        _tried = new double[_max];
        _random = new SplitMix64(seed);
    }

    /// <summary>The γ to use next.</summary>
    public int Current { get; private set; }

    /// <summary>The largest γ it tries.</summary>
    public int Max => _max;

    /// <summary>The posterior mean chance that draft position <paramref name="position"/> (0-based) stands, given the ones before it stood.</summary>
    public double PositionAcceptance(int position)
    {
        lock (_lock)
        {
            var mean = 0.5;
            for (var i = 0; i <= position; i++)
            {
                mean = (_stood[i] + (PriorRounds * mean)) / (_tried[i] + PriorRounds);
            }

            return mean;
        }
    }

    /// <summary>Expected tokens a round of <paramref name="gamma"/> drafts commits when each draft stands with probability <paramref name="alpha"/> independently.</summary>
    public static double ExpectedTokens(double alpha, int gamma) =>
        alpha >= 1.0 ? gamma + 1 : (1 - Math.Pow(alpha, gamma + 1)) / (1 - alpha);

    /// <summary>Expected tokens a round of <paramref name="gamma"/> drafts commits with per-position chances <paramref name="stand"/> (position i given the ones before it).</summary>
    public static double ExpectedTokens(ReadOnlySpan<double> stand, int gamma)
    {
        var expected = 1.0;
        var reach = 1.0;
        for (var i = 0; i < gamma; i++)
        {
            reach *= stand[i];
            expected += reach;
        }

        return expected;
    }

    /// <summary>The γ in [1, max] with the least (intercept + slope·γ) / E[γ].</summary>
    public static int Best(ReadOnlySpan<double> stand, double intercept, double slope)
    {
        var best = 1;
        var bestCost = double.PositiveInfinity;
        for (var gamma = 1; gamma <= stand.Length; gamma++)
        {
            var cost = (intercept + (slope * gamma)) / ExpectedTokens(stand, gamma);
            if (cost < bestCost - 1e-9)
            {
                bestCost = cost;
                best = gamma;
            }
        }

        return best;
    }

    /// <summary>
    /// Takes one round: <paramref name="drafted"/> drafts sent, <paramref name="accepted"/> of them stood, the round's
    /// wall time from the previous final verdict to this one, and the time its drafts took on the critical path (NaN
    /// when they were drafted ahead and ready); then chooses the next γ.
    /// </summary>
    public void Observe(int drafted, int accepted, double wallMs, double draftMs)
    {
        if (drafted <= 0)
        {
            return;
        }

        lock (_lock)
        {
            for (var i = 0; i < _max; i++)
            {
                _stood[i] *= Discount;
                _tried[i] *= Discount;
            }

            for (var i = 0; i < Math.Min(drafted, _max); i++)
            {
                if (i < accepted)
                {
                    _stood[i]++;
                    _tried[i]++;
                }
                else
                {
                    _tried[i]++;
                    break;
                }
            }

            if (!(wallMs > 0))
            {
                // No timing (a round that also carried a prefill): acceptance only.
                Current = _weight > 0 ? Choose() : Current;
                return;
            }

            (_weight, _sumX, _sumY, _sumXX, _sumXY, _sumYY) = (
                (_weight * Discount) + 1,
                (_sumX * Discount) + drafted,
                (_sumY * Discount) + wallMs,
                (_sumXX * Discount) + ((double)drafted * drafted),
                (_sumXY * Discount) + (drafted * wallMs),
                (_sumYY * Discount) + (wallMs * wallMs));
            if (!double.IsNaN(draftMs))
            {
                // Drafting compute per token (a pre-drafted round that was ready costs the critical path nothing: NaN).
                _draftMs = _draftMs == 0 ? draftMs / drafted : (0.7 * _draftMs) + (0.3 * draftMs / drafted);
            }

            Current = Choose();
        }
    }

    private int Choose()
    {
        // Each position's posterior starts from the one before it (two pseudo-rounds at its mean): a position seldom
        // reached is assumed about as likely to stand as its neighbour, not a coin flip.
        Span<double> stand = stackalloc double[_max];
        var previousMean = 0.5;
        for (var i = 0; i < _max; i++)
        {
            var a = _stood[i] + (PriorRounds * previousMean);
            var b = _tried[i] - _stood[i] + (PriorRounds * (1 - previousMean));
            stand[i] = SampleBeta(a, b);
            previousMean = a / (a + b);
        }

        var meanX = _sumX / _weight;
        var meanY = _sumY / _weight;
        double slope;
        if (Fit() is { } fit)
        {
            slope = Math.Max(0, fit.Slope + (fit.SlopeError * SampleNormal()));
        }
        else
        {
            // One γ seen: a draft may cost anything from nothing (drafting hidden) to its compute.
            slope = Math.Max(0, _draftMs * (1 + SampleNormal()));
        }

        var intercept = Math.Max(0, meanY - (slope * meanX));
        return Best(stand, intercept, slope);
    }

    /// <summary>The least-squares line of wall time against γ, with the slope's standard error; null while γ has not varied.</summary>
    private (double Intercept, double Slope, double SlopeError)? Fit()
    {
        if (_weight <= 0)
        {
            return null;
        }

        var meanX = _sumX / _weight;
        var meanY = _sumY / _weight;
        var varX = (_sumXX / _weight) - (meanX * meanX);
        if (varX < 0.1)
        {
            return null;
        }

        var slope = ((_sumXY / _weight) - (meanX * meanY)) / varX;
        var varY = Math.Max(0, (_sumYY / _weight) - (meanY * meanY));
        var residual = Math.Max(0, varY - (slope * slope * varX));
        var slopeError = Math.Sqrt(residual / Math.Max(1, _weight - 2) / varX);
        return (meanY - (slope * meanX), slope, slopeError);
    }

    private double SampleNormal() => _random.NextGaussian();

    private double SampleBeta(double a, double b)
    {
        var x = SampleGamma(a);
        var y = SampleGamma(b);
        return x / (x + y);
    }

    // Marsaglia and Tsang's method (shape ≥ 1; smaller shapes boosted by U^(1/shape)).
    private double SampleGamma(double shape)
    {
        if (shape < 1)
        {
            return SampleGamma(shape + 1) * Math.Pow(1.0 - _random.NextDouble(), 1 / shape);
        }

        var d = shape - (1.0 / 3);
        var c = 1 / Math.Sqrt(9 * d);
        while (true)
        {
            double x, v;
            do
            {
                x = SampleNormal();
                v = 1 + (c * x);
            }
            while (v <= 0);

            v = v * v * v;
            var u = 1.0 - _random.NextDouble();
            if (Math.Log(u) < (0.5 * x * x) + d - (d * v) + (d * Math.Log(v)))
            {
                return d * v;
            }
        }
    }
}
