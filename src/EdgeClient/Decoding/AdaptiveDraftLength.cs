namespace SpecEdge.EdgeClient.Decoding;

/// <summary>
/// Chooses γ (drafts per round) to minimise the expected time per committed token. With acceptance rate α per draft
/// (each draft stands with probability α, independently), a round of γ drafts commits on average
/// E[γ] = (1 − α^(γ+1)) / (1 − α) tokens (accepted drafts plus the next token), and costs
/// T(γ) = γ·t_draft + t_link + t_verify(γ), where t_verify(γ) = v₀ + v₁·(γ + 1). The rule picks
/// argmin over 1 ≤ γ ≤ γ_max of T(γ) / E[γ]; see docs/protocol.md. Measurements are exponential moving averages,
/// seeded with the configured γ until a few rounds have been seen.
/// </summary>
public sealed class AdaptiveDraftLength
{
    /// <summary>Weight of the newest measurement in the moving averages.</summary>
    public const double Smoothing = 0.3;

    private readonly int _max;
    private int _observations;
    private double _successes;
    private double _trials;
    private double _meanX;
    private double _meanY;
    private double _meanXX;
    private double _meanXY;

    /// <summary>Starts at <paramref name="initial"/> drafts per round, never above <paramref name="max"/>.</summary>
    public AdaptiveDraftLength(int initial, int max)
    {
        _max = Math.Max(1, max);
        Current = Math.Clamp(initial, 1, _max);
    }

    /// <summary>The γ to use next.</summary>
    public int Current { get; private set; }

    /// <summary>The running estimate of a draft's acceptance probability.</summary>
    public double Acceptance { get; private set; } = 0.5;

    /// <summary>The running estimate of drafting time per token, in ms.</summary>
    public double DraftMsPerToken { get; private set; }

    /// <summary>The running estimate of a round's link and queue time, in ms.</summary>
    public double LinkMs { get; private set; }

    /// <summary>The running estimate of verification's fixed time per round, in ms.</summary>
    public double VerifyFixedMs { get; private set; }

    /// <summary>The running estimate of verification's time per scored token, in ms.</summary>
    public double VerifyMsPerToken { get; private set; }

    /// <summary>Expected tokens committed by a round of <paramref name="gamma"/> drafts at acceptance <paramref name="alpha"/>.</summary>
    public static double ExpectedTokens(double alpha, int gamma) =>
        alpha >= 1.0 ? gamma + 1 : (1 - Math.Pow(alpha, gamma + 1)) / (1 - alpha);

    /// <summary>Expected milliseconds per committed token of a round of <paramref name="gamma"/> drafts.</summary>
    public static double ExpectedMsPerToken(int gamma, double alpha, double draftMsPerToken, double linkMs, double verifyFixedMs, double verifyMsPerToken) =>
        ((gamma * draftMsPerToken) + linkMs + verifyFixedMs + (verifyMsPerToken * (gamma + 1))) / ExpectedTokens(alpha, gamma);

    /// <summary>The γ in [1, <paramref name="max"/>] with the least expected time per token.</summary>
    public static int Best(int max, double alpha, double draftMsPerToken, double linkMs, double verifyFixedMs, double verifyMsPerToken)
    {
        var best = 1;
        var bestCost = double.PositiveInfinity;
        for (var gamma = 1; gamma <= max; gamma++)
        {
            var cost = ExpectedMsPerToken(gamma, alpha, draftMsPerToken, linkMs, verifyFixedMs, verifyMsPerToken);
            if (cost < bestCost - 1e-9)
            {
                bestCost = cost;
                best = gamma;
            }
        }

        return best;
    }

    /// <summary>Takes one round's measurements and chooses the next γ.</summary>
    public void Observe(int drafted, int accepted, double draftMs, double linkMs, double verifyMs)
    {
        if (drafted <= 0)
        {
            return;
        }

        // Each draft position tried is one Bernoulli trial: the accepted ones succeeded, the first rejection (if any) failed.
        var trials = accepted + (accepted < drafted ? 1 : 0);
        var x = drafted + 1.0;
        if (_observations == 0)
        {
            (_successes, _trials) = (accepted, trials);
            DraftMsPerToken = draftMs / drafted;
            LinkMs = linkMs;
            (_meanX, _meanY, _meanXX, _meanXY) = (x, verifyMs, x * x, x * verifyMs);
        }
        else
        {
            _successes = Blend(_successes, accepted);
            _trials = Blend(_trials, trials);
            DraftMsPerToken = Blend(DraftMsPerToken, draftMs / drafted);
            LinkMs = Blend(LinkMs, linkMs);
            (_meanX, _meanY, _meanXX, _meanXY) = (Blend(_meanX, x), Blend(_meanY, verifyMs), Blend(_meanXX, x * x), Blend(_meanXY, x * verifyMs));
        }

        Acceptance = _trials > 0 ? Math.Clamp(_successes / _trials, 0.0, 0.99) : 0.5;

        // Verification time against tokens scored, as a least-squares line over the moving averages: with one round
        // size seen, it is all fixed cost.
        var variance = _meanXX - (_meanX * _meanX);
        VerifyMsPerToken = variance > 0.25 ? Math.Max(0, (_meanXY - (_meanX * _meanY)) / variance) : 0;
        VerifyFixedMs = Math.Max(0, _meanY - (VerifyMsPerToken * _meanX));
        _observations++;
        if (_observations >= 2)
        {
            Current = Best(_max, Acceptance, DraftMsPerToken, LinkMs, VerifyFixedMs, VerifyMsPerToken);
        }
    }

    private static double Blend(double old, double value) => ((1 - Smoothing) * old) + (Smoothing * value);
}
