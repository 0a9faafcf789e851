using System.Text.Json;
using System.Text.Json.Serialization;

namespace SpecEdge.EdgeClient.Client;

/// <summary>What one round cost and gave.</summary>
public sealed record RoundRecord
{
    /// <summary>The round's number (1 for the first).</summary>
    public required int Round { get; init; }

    /// <summary>Drafts sent (γ of this round).</summary>
    public required int Drafted { get; init; }

    /// <summary>Drafts the final verdict accepted.</summary>
    public required int Accepted { get; init; }

    /// <summary>Tokens the round committed (accepted drafts plus the next token, cut at the end of the generation).</summary>
    public required int Committed { get; init; }

    /// <summary>Edge time spent drafting this round (on the critical path; pre-drafted rounds count the part still running when needed).</summary>
    public required double DraftMs { get; init; }

    /// <summary>From sending the round to its final verdict, minus the verifier's compute: network, serialization and queueing.</summary>
    public required double NetworkAndQueueMs { get; init; }

    /// <summary>The verifier's compute for the round (every stage).</summary>
    public required double VerifyMs { get; init; }

    /// <summary>Of <see cref="NetworkAndQueueMs"/>, the time the round waited for a model slot on the verifier.</summary>
    public double QueueMs { get; init; }

    /// <summary>The verifier's time in each stage of the target (one entry for an unstaged target).</summary>
    public IReadOnlyList<double> StageMs { get; init; } = [];

    /// <summary>
    /// Time from sending the round to its arrival at the verifier, from both sides' wall clocks: meaningful when they
    /// agree (one machine, or synchronised clocks); null when the clocks visibly disagree.
    /// </summary>
    public double? UplinkMs { get; init; }

    /// <summary>Time from the verifier writing the final verdict to its arrival at the edge (same caveat as <see cref="UplinkMs"/>).</summary>
    public double? DownlinkMs { get; init; }

    /// <summary>Wall time of the round spent neither drafting, on the network, queued nor verifying (edge bookkeeping, waiting on a branch).</summary>
    public double IdleMs { get; init; }

    /// <summary>The early verdicts of this round, each with whether the final verdict matched it.</summary>
    public IReadOnlyList<EarlyVerdictRecord> EarlyVerdicts { get; init; } = [];

    /// <summary>Wall time from the previous round's final verdict (or the start) to this round's.</summary>
    public required double WallMs { get; init; }

    /// <summary>The round was ready (pre-drafted, or already sent as a conditional round) when the previous verdict came.</summary>
    public bool StartedWithoutWaiting { get; init; }

    /// <summary>How long the round's drafts took to draft, wherever that fell (ahead of the round or on its critical path).</summary>
    public double DraftComputeMs { get; init; }
}

/// <summary>One early verdict and whether the final verdict matched it.</summary>
/// <param name="ExitLayer">The exit that gave it.</param>
/// <param name="Confidence">Its confidence (<c>docs/protocol.md</c>).</param>
/// <param name="Accepted">The drafts it accepted.</param>
/// <param name="NextId">The token it chose after them.</param>
/// <param name="Matched">The final verdict was the same.</param>
/// <param name="ElapsedMs">The verifier's time from the round's start to writing it.</param>
/// <param name="Alternatives">The alternative outcomes that came with it (multi-candidate pre-drafting).</param>
/// <param name="MatchedAlternative">The final verdict was one of those alternatives.</param>
public sealed record EarlyVerdictRecord(int ExitLayer, double Confidence, int Accepted, int NextId, bool Matched, double ElapsedMs = 0, int Alternatives = 0, bool MatchedAlternative = false);

/// <summary>Early-verdict outcomes of one exit.</summary>
public sealed record ExitRecord
{
    /// <summary>The exit layer.</summary>
    public required int Layer { get; init; }

    /// <summary>Early verdicts this exit sent.</summary>
    public int Verdicts { get; set; }

    /// <summary>Of them, those the final verdict confirmed.</summary>
    public int Hits { get; set; }

    /// <summary>Of them, those the final verdict contradicted.</summary>
    public int Misses { get; set; }

    /// <summary>Of the misses, those where the final verdict was one of the alternatives the exit sent with its verdict (multi-candidate pre-drafting).</summary>
    public int AlternativeHits { get; set; }

    /// <summary>Hits over verdicts scored.</summary>
    public double HitRate => Verdicts == 0 ? 0 : (double)Hits / Verdicts;
}

/// <summary>The result of a generation: text, tokens, and where the time went. <c>--json</c> prints it.</summary>
public sealed record GenerationReport
{
    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower) },
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    /// <summary>The decoding mode's name.</summary>
    public required string Mode { get; init; }

    /// <summary>The generated text (the new tokens only).</summary>
    public required string Text { get; init; }

    /// <summary>The new tokens only.</summary>
    public required IReadOnlyList<int> TokenIds { get; init; }

    /// <summary>New tokens committed.</summary>
    public int NewTokens => TokenIds.Count;

    /// <summary>Tokens of the prompt (with the beginning-of-sequence token when there is one).</summary>
    public int PromptTokens { get; init; }

    /// <summary>Why the generation ended (<c>eos</c>, <c>length</c>, <c>context</c>).</summary>
    public required string FinishReason { get; init; }

    /// <summary>Rounds sent to the verifier (tokens, for cloud and edge modes).</summary>
    public required int Rounds { get; init; }

    /// <summary>Drafted tokens sent for verification.</summary>
    public required int DraftTokens { get; init; }

    /// <summary>Drafted tokens the verifier accepted.</summary>
    public required int AcceptedTokens { get; init; }

    /// <summary>Accepted drafts over drafts sent.</summary>
    public double AcceptanceRate => DraftTokens == 0 ? 0 : (double)AcceptedTokens / DraftTokens;

    /// <summary>Tokens committed per round (accepted drafts + 1).</summary>
    public double MeanAcceptedLength => Rounds == 0 ? 0 : (double)NewTokens / Rounds;

    /// <summary>Wall time: to the first token, in all, and per token.</summary>
    public required LatencySummary LatencyMs { get; init; }

    /// <summary>Summed over rounds.</summary>
    public required TimeBreakdown TimeBreakdownMs { get; init; }

    /// <summary>Early verdicts and what pre-drafting on them gained or lost.</summary>
    public required EarlyExitSummary EarlyExits { get; init; }

    /// <summary>γ per round when drafts were sent (constant unless adaptive).</summary>
    public required IReadOnlyList<RoundRecord> PerRound { get; init; }

    /// <summary>The modes the generation's sessions ran in, in order (more than the requested one only in auto mode).</summary>
    public IReadOnlyList<string> ModesUsed { get; init; } = [];

    /// <summary>The compute this run measured on: real, or which emulated profile.</summary>
    public required string Compute { get; init; }

    /// <summary>The emulated link between edge and verifier, or "none".</summary>
    public required string Link { get; init; }

    /// <summary>Indices of new tokens committed without verification (degraded policy); empty when every token is the target's.</summary>
    public IReadOnlyList<int> UnverifiedTokenIndices { get; init; } = [];

    /// <summary>Tokens generated by the draft alone while no verifier answered (degraded policy); 0 means the output is the target's.</summary>
    public int UnverifiedTokens => UnverifiedTokenIndices.Count;

    /// <summary>Sessions, retries and verifiers the generation used.</summary>
    public ResilienceSummary Resilience { get; init; } = new(0, 0, []);

    /// <summary>The report as indented JSON (snake_case).</summary>
    public string ToJson() => JsonSerializer.Serialize(this, JsonOptions);
}

/// <summary>A generation's latency.</summary>
/// <param name="Total">From the request to the last token committed (closing the stream afterwards is not counted).</param>
/// <param name="FirstToken">From the request to the first token committed.</param>
/// <param name="PerToken"><paramref name="Total"/> over the new tokens.</param>
public sealed record LatencySummary(double Total, double FirstToken, double PerToken);

/// <summary>How many sessions a generation opened (more than one after failovers), retries, and the verifiers used.</summary>
public sealed record ResilienceSummary(int Sessions, int Retries, IReadOnlyList<string> Verifiers);

/// <summary>Where a generation's time went, in milliseconds summed over its rounds: drafting, link and queue, verification, and the queue alone.</summary>
public sealed record TimeBreakdown(double Draft, double NetworkAndQueue, double Verify, double Queue);

/// <summary>Early verdicts and pre-drafting outcomes.</summary>
public sealed record EarlyExitSummary
{
    /// <summary>Early verdicts received.</summary>
    public int EarlyVerdicts { get; init; }

    /// <summary>Pre-drafted rounds that were used.</summary>
    public int Hits { get; init; }

    /// <summary>Of <see cref="Hits"/>, those drafted on an alternative outcome the exit ranked after its own verdict (multi-candidate pre-drafting).</summary>
    public int AlternateHits { get; init; }

    /// <summary>Pre-drafted rounds thrown away.</summary>
    public int Misses { get; init; }

    /// <summary>Hits over hits and misses.</summary>
    public double HitRate => Hits + Misses == 0 ? 0 : (double)Hits / (Hits + Misses);

    /// <summary>Per exit: verdicts, and how many the final verdict confirmed.</summary>
    public IReadOnlyList<ExitRecord> PerExit { get; init; } = [];

    /// <summary>Pre-drafted tokens thrown away after a miss.</summary>
    public int PreDraftedTokensWasted { get; init; }

    /// <summary>Rounds whose drafts were ready when the previous final verdict arrived.</summary>
    public int RoundsStartedWithoutWaiting { get; init; }

    /// <summary>Rounds sent ahead of their predecessor's final verdict, with the condition they assume.</summary>
    public int ConditionalRoundsSent { get; init; }

    /// <summary>Conditional rounds the verifier dropped because their condition failed.</summary>
    public int ConditionalRoundsDropped { get; init; }
}
