using SpecEdge.EdgeClient.Client;

namespace SpecEdge.Bench;

/// <summary>Measured inputs of the analytical model for one mode.</summary>
/// <param name="Gamma">Drafts per round.</param>
/// <param name="TokensPerRound">Measured mean tokens committed per round (L̄).</param>
/// <param name="DraftMsPerToken">Draft time per token (t_d).</param>
/// <param name="RoundTripMs">Link round trip plus per-round transport overhead (RTT).</param>
/// <param name="VerifyMs">Verification step time (V).</param>
/// <param name="FirstStageMs">Time on the verifier from a round's start to the early verdict the edge acts on (V₁): the first exit stage when every exit speaks, later when only a deeper exit is confident enough.</param>
/// <param name="HitRate">Share of rounds that began on a used pre-drafted round (h): hits over rounds, not over early verdicts, since a round without an early verdict pre-drafts nothing.</param>
/// <param name="SentHitRate">
/// Conditional mode: of <paramref name="HitRate"/>, the share of rounds that began on a conditional round already at the
/// verifier (the rest began on a pre-drafted round kept unsent, as pre-emptive rounds do); null: all of them.
/// </param>
/// <param name="BackingVerdictMs">
/// Conditional mode: the verifier's time to the first early verdict that backed the round's final outcome (its own
/// verdict or one of its alternatives), when the edge could start drafting the round that went ahead; null: <paramref name="FirstStageMs"/>.
/// </param>
internal sealed record ModelInputs(double Gamma, double TokensPerRound, double DraftMsPerToken, double RoundTripMs, double VerifyMs, double FirstStageMs, double HitRate, double? SentHitRate = null, double? BackingVerdictMs = null);

/// <summary>
/// Expected milliseconds per committed token of each mode, from acceptance, hit rate, γ, round trip, draft and verify
/// times (docs/benchmarks.md derives each formula):
/// <list type="bullet">
/// <item>cloud: V per token (tokens stream; one round trip before the first);</item>
/// <item>edge: t_d per token;</item>
/// <item>speculative: (γ·t_d + RTT + V) / L̄;</item>
/// <item>pre-emptive: (γ·t_d + RTT + V − h·min(γ·t_d, V − V₁)) / L̄;</item>
/// <item>conditional: (h_s·max(V, V₁* + RTT + γ·t_d) + h_p·(γ·t_d + RTT + V − min(γ·t_d, V − V₁)) + (1 − h_s − h_p)·(γ·t_d + RTT + V)) / L̄,
/// where h_s are rounds begun on a conditional round already at the verifier, h_p those begun on a pre-drafted round
/// kept unsent (a later exit's, or one over the round's candidates), and V₁* the time of the first early verdict that
/// backed the outcome;</item>
/// <item>proactive: (γ·t_d + RTT + V − h·min(γ·t_d, RTT + V)) / L̄.</item>
/// </list>
/// Drafting modes also pay, once per generation, the Open round trip and the prompt's prefill (RTT + V), spread over
/// the generation's tokens. Auto mode is the sum of what its sessions did (<see cref="AutoMsPerToken"/>).
/// </summary>
internal static class AnalyticalModel
{
    /// <summary>
    /// V₁ as measured: the mean time to the first early verdict of the rounds that had one (the verifier stamps it);
    /// <paramref name="fallback"/> when no round had one.
    /// </summary>
    public static double EarlyVerdictMs(IEnumerable<RoundRecord> rounds, double fallback)
    {
        var times = rounds.Where(r => r.EarlyVerdicts.Count > 0).Select(r => r.EarlyVerdicts[0].ElapsedMs).ToList();
        return times.Count == 0 ? fallback : times.Average();
    }

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

    /// <summary>
    /// Auto mode, from what it did: every session pays its start (RTT + V), its drafting rounds the conditional formula
    /// with their own inputs, its cloud tokens V each. <paramref name="drafting"/> describes the drafting rounds only.
    /// </summary>
    public static double AutoMsPerToken(ModelInputs drafting, int draftingRounds, int cloudTokens, double cloudVerifyMs, int sessions, int tokens)
    {
        var draft = drafting.Gamma * drafting.DraftMsPerToken;
        var plainRound = draft + drafting.RoundTripMs + drafting.VerifyMs;
        var total = (sessions * (drafting.RoundTripMs + drafting.VerifyMs))
            + (draftingRounds == 0 ? 0 : draftingRounds * PerRound("conditional", drafting, draft, plainRound))
            + (cloudTokens * cloudVerifyMs);
        return total / tokens;
    }

    private static double PerRound(string mode, ModelInputs m, double draft, double plainRound) =>
        mode switch
        {
            "speculative" or "adaptive" => plainRound,
            "preemptive" => plainRound - (m.HitRate * Math.Min(draft, m.VerifyMs - m.FirstStageMs)),
            "conditional" => Conditional(m, draft, plainRound),
            "proactive" => plainRound - (m.HitRate * Math.Min(draft, m.RoundTripMs + m.VerifyMs)),
            _ => double.NaN,
        };

    private static double Conditional(ModelInputs m, double draft, double plainRound)
    {
        var sent = m.SentHitRate ?? m.HitRate;
        var kept = m.HitRate - sent;
        var backing = m.BackingVerdictMs ?? m.FirstStageMs;
        return (sent * Math.Max(m.VerifyMs, backing + m.RoundTripMs + draft))
            + (kept * (plainRound - Math.Min(draft, m.VerifyMs - m.FirstStageMs)))
            + ((1 - m.HitRate) * plainRound);
    }

    /// <summary>
    /// V₁*: over the rounds an early verdict backed (its own verdict or one of its alternatives matched the final
    /// verdict), the mean time to the first such verdict; null when none did.
    /// </summary>
    public static double? BackingVerdictMs(IEnumerable<RoundRecord> rounds)
    {
        var times = rounds.Select(r => r.EarlyVerdicts.FirstOrDefault(e => e.Matched || e.MatchedAlternative))
            .Where(e => e is not null)
            .Select(e => e!.ElapsedMs)
            .ToList();
        return times.Count == 0 ? null : times.Average();
    }
}
