namespace SpecEdge.Bench;

/// <summary>Measured inputs of the analytical model for one mode.</summary>
/// <param name="Gamma">Drafts per round.</param>
/// <param name="TokensPerRound">Measured mean tokens committed per round (L̄).</param>
/// <param name="DraftMsPerToken">Draft time per token (t_d).</param>
/// <param name="RoundTripMs">Link round trip plus per-round transport overhead (RTT).</param>
/// <param name="VerifyMs">Verification step time (V).</param>
/// <param name="FirstStageMs">Time to the first exit's verdict on the verifier (V₁).</param>
/// <param name="HitRate">Share of pre-drafted rounds used (h).</param>
internal sealed record ModelInputs(double Gamma, double TokensPerRound, double DraftMsPerToken, double RoundTripMs, double VerifyMs, double FirstStageMs, double HitRate);

/// <summary>
/// Expected milliseconds per committed token of each mode, from acceptance, hit rate, γ, round trip, draft and verify
/// times (docs/benchmarks.md derives each formula):
/// <list type="bullet">
/// <item>cloud: V per token (tokens stream; one round trip before the first);</item>
/// <item>edge: t_d per token;</item>
/// <item>speculative: (γ·t_d + RTT + V) / L̄;</item>
/// <item>pre-emptive: (γ·t_d + RTT + V − h·min(γ·t_d, V − V₁)) / L̄;</item>
/// <item>conditional: (h·max(V, V₁ + RTT + γ·t_d) + (1 − h)·(γ·t_d + RTT + V)) / L̄;</item>
/// <item>proactive: (γ·t_d + RTT + V − h·min(γ·t_d, RTT + V)) / L̄.</item>
/// </list>
/// Drafting modes also pay, once per generation, the Open round trip and the prompt's prefill (RTT + V), spread over
/// the generation's tokens.
/// </summary>
internal static class AnalyticalModel
{
    public static double MsPerToken(string mode, ModelInputs m, int tokens)
    {
        var draft = m.Gamma * m.DraftMsPerToken;
        var plainRound = draft + m.RoundTripMs + m.VerifyMs;
        var startup = (m.RoundTripMs + m.VerifyMs) / tokens;
        return mode switch
        {
            "cloud" => (m.RoundTripMs + (tokens * m.VerifyMs)) / tokens,
            "edge" => m.DraftMsPerToken,
            _ => startup + PerRound(mode, m, draft, plainRound) / m.TokensPerRound,
        };
    }

    private static double PerRound(string mode, ModelInputs m, double draft, double plainRound) =>
        mode switch
        {
            "speculative" or "adaptive" => plainRound,
            "preemptive" => plainRound - (m.HitRate * Math.Min(draft, m.VerifyMs - m.FirstStageMs)),
            "conditional" => (m.HitRate * Math.Max(m.VerifyMs, m.FirstStageMs + m.RoundTripMs + draft)) + ((1 - m.HitRate) * plainRound),
            "proactive" => plainRound - (m.HitRate * Math.Min(draft, m.RoundTripMs + m.VerifyMs)),
            _ => double.NaN,
        };
}
