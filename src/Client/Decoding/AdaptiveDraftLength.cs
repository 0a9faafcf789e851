namespace SpecEdge.EdgeClient.Decoding;

/// <summary>
/// Chooses how many drafts each round carries, draft by draft, from the draft's confidence in each token and what the
/// rounds measured: a dynamic draft length (as SpecDec++, Huang et al. 2024, and DISCO, Mamou et al. 2024, stop drafting
/// on a predicted rejection), here with the stopping rule derived from measured costs rather than a tuned threshold.
/// <list type="bullet">
/// <item><b>Will a draft stand?</b> The chance a draft stands, the ones before it having stood, is the draft's
/// confidence (its probability of the token it chose) made calibrated: ten confidence bins, each a Beta posterior over
/// how often the drafts in it stood (every draft the verifier reached is a trial), starting from the bin's own
/// confidence as half a pseudo-round (a weak prior: a draft model's confidence may be far from calibrated, as the
/// trained pair's under-confident draft is, and a fresh controller should follow the first verdicts, not its prior),
/// and kept non-decreasing in confidence. The chance that every draft so far stands (the reach) is the product of
/// theirs.</item>
/// <item><b>What a draft costs against what a token is worth.</b> Over many rounds the time per token is c = T/L (round
/// time over tokens per round). One more draft adds s to T and its chance of standing to L, which lowers c exactly when
/// that chance exceeds λ = s / c. s is the slope of a least-squares line of a round's wall time (one final verdict to
/// the next) against its drafts: what one more draft really costs, far less than a draft's compute when pre-drafting
/// hides drafting behind verification. Until the drafts per round have varied, s is the measured drafting time per
/// token on the critical path.</item>
/// <item><b>Looking past the next draft.</b> The next draft's confidence is known only once its step is paid, and a weak
/// draft is often followed by confident ones, which nearly always stand. So the rule is the optimal stopping of a
/// small dynamic programme: drafting one more is worth its chance of standing (reach × the next draft's calibrated
/// chance, drawn from the bins as often as drafts fell in them) less λ, plus the worth of being free to go on from
/// there. Looking one draft ahead alone stopped too early on the trained pair.</item>
/// <item><b>Token trees.</b> With leaves beside the drafts, a draft that falls may still leave a round one token more
/// (a leaf at its depth stands). How often a leaf takes a fallen draft's place is learned too (a Beta posterior from 0,
/// so a chain's controller never counts it), and a draft's worth becomes its chance of standing plus its chance of
/// falling times that rate: trees make longer rounds worth more.</item>
/// </list>
/// Statistics decay per round (<see cref="Discount"/> for timing, <see cref="CalibrationDiscount"/> for the
/// calibration), so the choice follows a changing link. One instance learns across a client's generations of one mode.
/// A round drafts at least one token and at most <see cref="Max"/>.
/// </summary>
public sealed class AdaptiveDraftLength
{
    /// <summary>Weight kept by older timing observations per new round.</summary>
    public const double Discount = 0.97;

    /// <summary>Weight kept by older acceptance observations per new round (how a draft's confidence maps to standing drifts slower than a link).</summary>
    public const double CalibrationDiscount = 0.99;

    /// <summary>
    /// Pseudo-rounds of a confidence bin's prior, at the bin's own confidence (and of the leaf rate's, at 0). Two held a
    /// fresh controller's rounds short for its first generations on the trained pair, whose draft is under-confident
    /// (drafts of confidence 0.3–0.4 stand 87 % of the time); half a round lets the first verdicts decide.
    /// </summary>
    public const double PriorRounds = 0.5;

    /// <summary>Confidence bins of the calibration, of equal width over [0, 1].</summary>
    public const int Bins = 10;

    /// <summary>Points of the reach-chance grid the value of drafting on is kept at.</summary>
    private const int Grid = 65;

    /// <summary>Pseudo-drafts per bin in how often drafts fall in each (the next draft's confidence, before it is drafted).</summary>
    private const double BinSharePrior = 0.2;

    /// <summary>The threshold before any round has been timed.</summary>
    private const double DefaultThreshold = 0.25;

    private readonly int _max;

    /// <summary>The value of going on drafting, per drafts so far and reach chance (a grid over [0, 1]): <see cref="Revalue"/>.</summary>
    private readonly double[][] _value;
    private readonly double[] _binStood = new double[Bins];
    private readonly double[] _binTried = new double[Bins];
    private readonly double[] _binDrafted = new double[Bins];

    /// <summary>Σ over the bins of (drafts in the bin + <see cref="BinSharePrior"/>): how <see cref="GoOn"/> weighs them, set when the bins change.</summary>
    private double _shareTotal;
    private readonly double[] _calibrated = new double[Bins];
    private readonly Lock _lock = new();
    private double _leafHits;
    private double _leafTrials;
    private double _leafRate;
    private double _weight;
    private double _sumX;
    private double _sumY;
    private double _sumXX;
    private double _sumXY;
    private double _sumTokens;
    private double _draftMs;
    private double? _slope;
    private double _threshold = DefaultThreshold;

    /// <summary>Drafts at most <paramref name="max"/> tokens a round.</summary>
    /// <param name="max">The most drafts a round may carry.</param>
    public AdaptiveDraftLength(int max)
    {
        _max = Math.Max(1, max);
        _value = new double[_max + 1][];
        for (var i = 0; i <= _max; i++)
        {
            _value[i] = new double[Grid];
        }

        _shareTotal = ShareTotal();
        Recalibrate();
        Revalue();
    }

    /// <summary>The most drafts a round may carry (drafting stops earlier when <see cref="Continue"/> says so).</summary>
    public int Max => _max;

    /// <summary>The current λ: what a draft costs, in tokens (its marginal round time over the time per token).</summary>
    internal double Threshold
    {
        get
        {
            lock (_lock)
            {
                return _threshold;
            }
        }
    }

    /// <summary>The calibrated chance that a draft of confidence <paramref name="confidence"/> stands, given the ones before it stood.</summary>
    internal double Calibrated(float confidence)
    {
        lock (_lock)
        {
            return _calibrated[Bin(confidence)];
        }
    }

    /// <summary>
    /// Whether to draft one more after drafts of <paramref name="confidences"/> (this round's so far): fewer than
    /// <see cref="Max"/> were drafted, and going on is worth more than λ a draft (see the class remarks).
    /// </summary>
    public bool Continue(ReadOnlySpan<float> confidences)
    {
        if (confidences.Length >= _max)
        {
            return false;
        }

        lock (_lock)
        {
            var reach = 1.0;
            foreach (var confidence in confidences)
            {
                reach *= _calibrated[Bin(confidence)];
            }

            return GoOn(confidences.Length, reach) > 0;
        }
    }

    /// <summary>The learned chance that a leaf stands where a draft fell (0 for chains).</summary>
    internal double LeafRate
    {
        get
        {
            lock (_lock)
            {
                return _leafRate;
            }
        }
    }

    /// <summary>
    /// Takes one round: how many drafts it sent and the draft's confidence in each (empty when not known: the
    /// calibration then learns nothing from it), how many stood, the round's wall time from the previous final verdict
    /// to this one (NaN: not timed, as a round that carried a prefill), the time its drafts took on the critical path
    /// (NaN when they were drafted ahead and ready), and, for a round that carried leaves where its draft fell, whether
    /// one of them stood (null: no draft fell, or no leaf was there).
    /// </summary>
    public void Observe(int drafted, ReadOnlySpan<float> confidences, int accepted, double wallMs, double draftMs, bool? leafStood = null)
    {
        if (drafted <= 0)
        {
            return;
        }

        lock (_lock)
        {
            for (var b = 0; b < Bins; b++)
            {
                _binStood[b] *= CalibrationDiscount;
                _binTried[b] *= CalibrationDiscount;
                _binDrafted[b] *= CalibrationDiscount;
            }

            _leafHits *= CalibrationDiscount;
            _leafTrials *= CalibrationDiscount;
            if (leafStood is { } stood)
            {
                _leafTrials++;
                _leafHits += stood ? 1 : 0;
            }

            _leafRate = _leafHits / (_leafTrials + PriorRounds);

            if (confidences.Length == drafted)
            {
                // Every draft counts toward how often drafts fall in its bin; every draft the verifier reached is a
                // trial: those before the first rejection stood, the rejected one did not.
                for (var i = 0; i < drafted; i++)
                {
                    var bin = Bin(confidences[i]);
                    _binDrafted[bin]++;
                    if (i <= accepted)
                    {
                        _binTried[bin]++;
                        _binStood[bin] += i < accepted ? 1 : 0;
                    }
                }
            }

            _shareTotal = ShareTotal();
            Recalibrate();
            if (wallMs > 0)
            {
                Time(drafted, accepted + (leafStood == true ? 1 : 0), wallMs, draftMs);
            }

            Revalue();
        }
    }

    /// <summary>Takes a timed round (its drafts, and the tokens it committed less one) into the line of wall time against drafts, and sets λ from it.</summary>
    private void Time(int drafted, int accepted, double wallMs, double draftMs)
    {
        (_weight, _sumX, _sumY, _sumXX, _sumXY, _sumTokens) = (
            (_weight * Discount) + 1,
            (_sumX * Discount) + drafted,
            (_sumY * Discount) + wallMs,
            (_sumXX * Discount) + ((double)drafted * drafted),
            (_sumXY * Discount) + (drafted * wallMs),
            (_sumTokens * Discount) + Math.Min(accepted, drafted + 1) + 1);
        if (!double.IsNaN(draftMs))
        {
            // Drafting compute per token on the critical path (a pre-drafted round that was ready costs it nothing: NaN).
            _draftMs = _draftMs == 0 ? draftMs / drafted : (0.7 * _draftMs) + (0.3 * draftMs / drafted);
        }

        _threshold = Math.Clamp(MarginalMs() * _sumTokens / _sumY, 0, 1);
    }

    /// <summary>
    /// What one more draft adds to a round's wall time: the fitted slope while drafts per round vary; the last fitted
    /// slope once they no longer do (every round at the cap, say: the fit that sent them there still holds); the
    /// drafting time per token before any fit.
    /// </summary>
    private double MarginalMs()
    {
        var meanX = _sumX / _weight;
        var varX = (_sumXX / _weight) - (meanX * meanX);
        if (varX < 0.1)
        {
            return _slope ?? _draftMs;
        }

        var meanY = _sumY / _weight;
        _slope = Math.Max(0, ((_sumXY / _weight) - (meanX * meanY)) / varX);
        return _slope.Value;
    }

    /// <summary>
    /// The bins' posterior means made non-decreasing in confidence (pool-adjacent-violators, weighted by each bin's
    /// trials and prior): a more confident draft is not less likely to stand, so a bin seldom seen borrows from its
    /// neighbours instead of keeping its prior.
    /// </summary>
    private void Recalibrate()
    {
        Span<double> value = stackalloc double[Bins];
        Span<double> weight = stackalloc double[Bins];
        Span<int> length = stackalloc int[Bins];
        var blocks = 0;
        for (var b = 0; b < Bins; b++)
        {
            value[blocks] = BinMean(b);
            weight[blocks] = _binTried[b] + PriorRounds;
            length[blocks] = 1;
            blocks++;
            while (blocks > 1 && value[blocks - 2] > value[blocks - 1])
            {
                var merged = weight[blocks - 2] + weight[blocks - 1];
                value[blocks - 2] = ((value[blocks - 2] * weight[blocks - 2]) + (value[blocks - 1] * weight[blocks - 1])) / merged;
                weight[blocks - 2] = merged;
                length[blocks - 2] += length[blocks - 1];
                blocks--;
            }
        }

        var bin = 0;
        for (var block = 0; block < blocks; block++)
        {
            for (var i = 0; i < length[block]; i++)
            {
                _calibrated[bin++] = value[block];
            }
        }
    }

    /// <summary>
    /// What drafting one more is worth, in tokens less λ per draft, after <paramref name="drafted"/> drafts that all
    /// stand with chance <paramref name="reach"/>: the next draft's confidence is not known before its step is paid, so
    /// its chance q is drawn from the bins as often as drafts fell in them; it adds reach·q tokens (and reach·(1 − q)·h
    /// more with leaves, h the leaf rate), costs λ, and leaves the choice to go on again from reach·q (the value of that
    /// choice, from <see cref="Revalue"/>). Positive: draft.
    /// </summary>
    private double GoOn(int drafted, double reach)
    {
        if (drafted >= _max)
        {
            return double.NegativeInfinity;
        }

        var worth = 0.0;
        for (var b = 0; b < Bins; b++)
        {
            var share = _binDrafted[b] + BinSharePrior;
            var next = reach * _calibrated[b];
            var leaf = (reach - next) * _leafRate;
            worth += share * (next + leaf - _threshold + Interpolate(_value[drafted + 1], next));
        }

        return worth / _shareTotal;
    }

    private double ShareTotal()
    {
        var total = 0.0;
        for (var b = 0; b < Bins; b++)
        {
            total += _binDrafted[b] + BinSharePrior;
        }

        return total;
    }

    /// <summary>
    /// The value of being free to go on drafting, for every number of drafts so far and every reach chance on a grid:
    /// V_max = 0, V_n(P) = max(0, GoOn(n, P)). Drafting past a weak draft can pay because the drafts after it may be
    /// confident ones (which here nearly always stand); a rule that looked one draft ahead would stop too soon.
    /// </summary>
    private void Revalue()
    {
        Array.Clear(_value[_max]);
        for (var n = _max - 1; n >= 0; n--)
        {
            for (var g = 0; g < Grid; g++)
            {
                _value[n][g] = Math.Max(0, GoOn(n, g / (double)(Grid - 1)));
            }
        }
    }

    private static double Interpolate(double[] values, double reach)
    {
        var x = Math.Clamp(reach, 0, 1) * (Grid - 1);
        var low = Math.Min((int)x, Grid - 2);
        var fraction = x - low;
        return (values[low] * (1 - fraction)) + (values[low + 1] * fraction);
    }

    private static int Bin(float confidence) => Math.Clamp((int)(confidence * Bins), 0, Bins - 1);

    private double BinMean(int bin)
    {
        var prior = (bin + 0.5) / Bins;
        return (_binStood[bin] + (PriorRounds * prior)) / (_binTried[bin] + PriorRounds);
    }
}
