using System.Globalization;
using System.Text;
using System.Text.Json;
using SpecEdge.Shared.Timing;

namespace SpecEdge.Bench.Matrix;

/// <summary>Writes a matrix run: JSON and CSV of every cell, a Markdown report with the tables, and PNG plots.</summary>
internal static class MatrixOutput
{
    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    public static void Write(string directory, IReadOnlyList<CellResult> cells, string command, string models, ComputeProfile profile, string linkKind)
    {
        Directory.CreateDirectory(directory);
        File.WriteAllText(Path.Combine(directory, "results.json"), JsonSerializer.Serialize(new { command, models, compute = profile.Label, links = linkKind, cells }, JsonOptions));
        File.WriteAllText(Path.Combine(directory, "results.csv"), Csv(cells));
        MatrixPlots.Write(directory, cells);
        File.WriteAllText(Path.Combine(directory, "report.md"), Report(cells, command, models, profile, linkKind));
    }

    private static string Csv(IReadOnlyList<CellResult> cells)
    {
        var text = new StringBuilder();
        var maxStages = cells.Max(c => c.PerRoundMs.Stages.Count);
        text.Append("link,rtt_ms,bandwidth_bps,jitter_fraction,mode,gamma,status,error,generations,tokens,rounds,ms_per_token,ms_per_token_median,speedup_vs_cloud,acceptance_rate,tokens_per_round,mean_gamma,early_verdicts,hit_rate,ready_rounds,draft_ms,uplink_ms,queue_ms");
        for (var s = 0; s < maxStages; s++)
        {
            text.Append(CultureInfo.InvariantCulture, $",stage{s}_ms");
        }

        text.AppendLine(",downlink_ms,idle_ms,wall_ms,expected_ms_per_token,model_gap,flagged");
        foreach (var c in cells)
        {
            var b = c.PerRoundMs;
            text.Append(CultureInfo.InvariantCulture, $"\"{c.Link}\",{c.RoundTripMs},{c.BandwidthBitsPerSecond},{c.JitterFraction},{c.Mode},{c.Gamma},{c.Status},\"{c.Error?.Replace("\"", "'", StringComparison.Ordinal)}\",{c.Generations},{c.Tokens},{c.Rounds},{c.MsPerToken:F3},{c.MsPerTokenMedian:F3},{c.SpeedupVsCloud:F3},{c.AcceptanceRate:F3},{c.TokensPerRound:F3},{c.MeanGamma:F2},{c.EarlyVerdicts},{c.HitRate:F3},{c.ReadyRounds},{b.Draft:F3},{b.Uplink:F3},{b.Queue:F3}");
            for (var s = 0; s < maxStages; s++)
            {
                text.Append(CultureInfo.InvariantCulture, $",{(s < b.Stages.Count ? b.Stages[s] : 0):F3}");
            }

            text.AppendLine(CultureInfo.InvariantCulture, $",{b.Downlink:F3},{b.Idle:F3},{b.Wall:F3},{c.ExpectedMsPerToken:F3},{c.ModelGap:F3},{c.Flagged}");
        }

        return text.ToString();
    }

    private static string Report(IReadOnlyList<CellResult> cells, string command, string models, ComputeProfile profile, string linkKind)
    {
        var text = new StringBuilder();
        text.AppendLine("# SpecEdge latency matrix");
        text.AppendLine();
        text.AppendLine(CultureInfo.InvariantCulture, $"Command: `{command}`");
        text.AppendLine();
        text.AppendLine(CultureInfo.InvariantCulture, $"Models: {models}. Compute: {profile.Label}. Links: {linkKind}. Greedy decoding; ms/token is wall time over all of a cell's tokens.");
        text.AppendLine();
        foreach (var group in cells.GroupBy(c => c.Link))
        {
            text.AppendLine(CultureInfo.InvariantCulture, $"## {group.Key}");
            text.AppendLine();
            text.AppendLine("| mode | γ | ms/token | speed-up vs cloud | tokens/round | acceptance | hit rate | ready rounds | draft | uplink | queue | stages | downlink | idle | expected ms/token | gap |");
            text.AppendLine("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
            foreach (var c in group)
            {
                if (c.Status != "ok")
                {
                    text.AppendLine(CultureInfo.InvariantCulture, $"| {c.Mode} | {c.Gamma} | failed: {c.Error} | | | | | | | | | | | | | |");
                    continue;
                }

                var b = c.PerRoundMs;
                text.AppendLine(CultureInfo.InvariantCulture,
                    $"| {c.Mode} | {c.Gamma} | {c.MsPerToken:F2} | {c.SpeedupVsCloud:F2}x | {c.TokensPerRound:F2} | {(c.Mode is "cloud" or "edge" ? "-" : c.AcceptanceRate.ToString("P0", CultureInfo.InvariantCulture))} | {(c.HitRate == 0 && c.EarlyVerdicts == 0 && c.Mode is not "proactive" ? "-" : c.HitRate.ToString("P0", CultureInfo.InvariantCulture))} | {c.ReadyRounds}/{c.Rounds} | {b.Draft:F1} | {b.Uplink:F1} | {b.Queue:F1} | {string.Join(" + ", b.Stages.Select(s => s.ToString("F1", CultureInfo.InvariantCulture)))} | {b.Downlink:F1} | {b.Idle:F1} | {c.ExpectedMsPerToken:F2} | {Math.Round(c.ModelGap * 100):+0;-0;0}%{(c.Flagged ? " ⚠" : string.Empty)} |");
            }

            text.AppendLine();
        }

        var flagged = cells.Where(c => c.Flagged).ToList();
        text.AppendLine("## Cells more than 10 % from the analytical model");
        text.AppendLine();
        if (flagged.Count == 0)
        {
            text.AppendLine("None: every cell is within 10 % of the model.");
        }

        foreach (var c in flagged)
        {
            text.AppendLine(CultureInfo.InvariantCulture, $"- {c.Link}, {c.Mode} γ={c.Gamma}: measured {c.MsPerToken:F2} ms/token, expected {c.ExpectedMsPerToken:F2} ({Math.Round(c.ModelGap * 100):+0;-0;0}%): {c.Explanation}.");
        }

        text.AppendLine();
        text.AppendLine("Plots: `ms_per_token.png` (ms per token against round trip, per mode, unlimited bandwidth, no jitter), `speedup.png` (speed-up over cloud autoregressive decoding), `breakdown.png` (where a round's time goes, per mode, at each round trip).");
        return text.ToString();
    }
}
