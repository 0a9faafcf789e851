namespace SpecEdge.EdgeClient.Client;

/// <summary>How a generation is decoded.</summary>
public enum GenerationMode
{
    /// <summary>Speculative decoding: the edge drafts γ tokens, the verifier checks them, one round trip per round.</summary>
    Speculative,

    /// <summary>Cloud-only autoregressive decoding with the target (the baseline).</summary>
    Cloud,

    /// <summary>Edge-only decoding with the draft model (no verifier; the output is the draft's).</summary>
    Edge,

    /// <summary>Early-exit pre-emptive drafting (Venkatesha et al.): the next round is drafted on the verifier's early verdict.</summary>
    Preemptive,

    /// <summary>Pre-emptive drafting, and the pre-drafted round is sent before the final verdict, conditioned on the early one.</summary>
    Conditional,

    /// <summary>Proactive drafting (as SpecEdge does): the next round is drafted on the edge's own guess, without early exits.</summary>
    Proactive,

    /// <summary>
    /// Chosen from measurements: conditional drafting with adaptive γ while it beats the verifier generating alone,
    /// cloud streaming when it does not (switching mid-generation; exact either way).
    /// </summary>
    Auto,
}

/// <summary>Command-line names of the modes.</summary>
public static class GenerationModes
{
    /// <summary>The mode's command-line name (<c>speculative</c>, <c>preemptive</c>…).</summary>
    public static string Name(this GenerationMode mode) => mode.ToString().ToLowerInvariant();

    /// <summary>A mode by its command-line name, or null when there is none by that name.</summary>
    public static GenerationMode? Parse(string name) => name.ToLowerInvariant() switch
    {
        "speculative" or "spec" => GenerationMode.Speculative,
        "cloud" or "autoregressive" => GenerationMode.Cloud,
        "edge" => GenerationMode.Edge,
        "preemptive" or "pre-emptive" => GenerationMode.Preemptive,
        "conditional" or "pipelined" => GenerationMode.Conditional,
        "proactive" => GenerationMode.Proactive,
        "auto" => GenerationMode.Auto,
        _ => null,
    };

    /// <summary>Whether the mode needs a verifier.</summary>
    public static bool UsesVerifier(this GenerationMode mode) => mode != GenerationMode.Edge;

    /// <summary>Whether the mode needs a draft model.</summary>
    public static bool UsesDraft(this GenerationMode mode) => mode != GenerationMode.Cloud;

    /// <summary>Whether the mode asks the verifier for early verdicts.</summary>
    public static bool UsesEarlyVerdicts(this GenerationMode mode) => mode is GenerationMode.Preemptive or GenerationMode.Conditional;

    /// <summary>Every mode's name, comma-separated, for help and error messages.</summary>
    public static string AllNames => "speculative, cloud, edge, preemptive, conditional, proactive, auto";
}
