using System.Diagnostics;
using System.Globalization;
using SpecEdge.EdgeClient.Client;
using SpecEdge.EdgeClient.Link;
using SpecEdge.Shared.Decoding;
using SpecEdge.Shared.Timing;

namespace SpecEdge.Bench.Matrix;

/// <summary>Measured figures of one matrix cell (a link and a decoding configuration).</summary>
internal sealed record CellResult
{
    public required string Link { get; init; }

    public required double RoundTripMs { get; init; }

    public required double BandwidthBitsPerSecond { get; init; }

    public required double JitterFraction { get; init; }

    public required string Mode { get; init; }

    /// <summary>γ as configured: a number, "adaptive", or "-" for modes that do not draft.</summary>
    public required string Gamma { get; init; }

    public required string Status { get; init; }

    public string? Error { get; init; }

    public int Generations { get; init; }

    public int Tokens { get; init; }

    public int Rounds { get; init; }

    public double MsPerToken { get; init; }

    public double MsPerTokenMedian { get; init; }

    public double SpeedupVsCloud { get; set; }

    public double AcceptanceRate { get; init; }

    public double TokensPerRound { get; init; }

    public double MeanGamma { get; init; }

    public int EarlyVerdicts { get; init; }

    public double HitRate { get; init; }

    /// <summary>Share of rounds that began on a used pre-drafted round (the analytical model's h).</summary>
    public double HitsPerRound { get; init; }

    /// <summary>Mean verifier time to a round's first early verdict, over rounds that had one (NaN when none did).</summary>
    public double EarlyVerdictMs { get; init; }

    public int ReadyRounds { get; init; }

    /// <summary>Mean per round: draft, uplink, queue, each stage, downlink, idle.</summary>
    public required Breakdown PerRoundMs { get; init; }

    public double ExpectedMsPerToken { get; set; }

    public double ModelGap { get; set; }

    public bool Flagged { get; set; }

    public string? Explanation { get; set; }
}

/// <summary>Where a round's time went, averaged over a cell's rounds.</summary>
internal sealed record Breakdown(double Draft, double Uplink, double Queue, IReadOnlyList<double> Stages, double Downlink, double Idle, double Wall)
{
    public static Breakdown Empty { get; } = new(0, 0, 0, [], 0, 0, 0);
}

/// <summary>Runs the matrix: for each link, one client through the link emulator (or the real link of a remote verifier), every mode cell with warm-up and repeats.</summary>
internal sealed class MatrixRunner(Uri verifier, string draftDir, ComputeProfile profile, IReadOnlyList<string> prompts, int tokens, int repeats, int warmup, bool remote, TextWriter progress)
{
    public async Task<List<CellResult>> RunAsync(MatrixAxes axes, CancellationToken cancellationToken)
    {
        var links = remote ? [new LinkCell(double.NaN, 0, 0)] : axes.Links().ToList();
        var modes = axes.ModeCells().ToList();
        var total = links.Count * modes.Count;
        var done = 0;
        var results = new List<CellResult>();
        var clock = Stopwatch.StartNew();
        foreach (var link in links)
        {
            SpecEdgeClient? client = null;
            try
            {
                client = await SpecEdgeClient.ConnectAsync(EmulatedLink.Apply(new EdgeClientOptions
                {
                    Server = verifier,
                    DraftModel = draftDir,
                    IntraOpThreads = 1,
                    Profile = profile,
                }, remote ? null : link.ToProfile()), cancellationToken: cancellationToken);
            }
            catch (Exception ex) when (ex is VerifierUnavailableException or ModelMismatchException or FormatException)
            {
                foreach (var mode in modes)
                {
                    results.Add(Failed(link, mode, ex.Message));
                    progress.WriteLine($"[{++done}/{total}] {link.Label} {mode.Label}: FAILED ({ex.Message})");
                }

                continue;
            }

            await using (client)
            {
                foreach (var mode in modes)
                {
                    var cell = await RunCellAsync(client, link, mode, cancellationToken);
                    results.Add(cell);
                    done++;
                    var eta = clock.Elapsed / done * (total - done);
                    progress.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"[{done}/{total}] {(remote ? "remote link" : link.Label)} {mode.Label}: {(cell.Status == "ok" ? $"{cell.MsPerToken:F2} ms/token, {cell.TokensPerRound:F2} tokens/round" : $"FAILED ({cell.Error})")} (about {eta.TotalMinutes:F1} min left)"));
                }
            }
        }

        Analyse(results);
        return results;
    }

    private async Task<CellResult> RunCellAsync(SpecEdgeClient client, LinkCell link, ModeCell mode, CancellationToken cancellationToken)
    {
        var reports = new List<GenerationReport>();
        try
        {
            for (var run = -warmup; run < repeats * prompts.Count; run++)
            {
                var report = await client.Generate(new GenerationRequest
                {
                    PromptText = prompts[(run + prompts.Count) % prompts.Count],
                    Mode = mode.GenerationMode,
                    DraftTokens = mode.Gamma == ModeCell.Adaptive ? 8 : Math.Max(1, mode.Gamma),
                    AdaptiveDraftTokens = mode.Gamma == ModeCell.Adaptive,
                    MaxNewTokens = tokens,
                    Sampling = SamplingConfig.Greedy,
                    StopAtEos = false,
                    ClientLabel = $"bench {mode.Label}",
                }).RunToEndAsync(cancellationToken);
                if (run >= 0)
                {
                    reports.Add(report);
                }
            }
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            return Failed(link, mode, ex.Message.Split('\n')[0]);
        }

        var rounds = reports.SelectMany(r => r.PerRound).ToList();
        var tokenCount = reports.Sum(r => r.NewTokens);
        var drafted = reports.Sum(r => r.DraftTokens);
        var hits = reports.Sum(r => r.EarlyExits.Hits);
        var misses = reports.Sum(r => r.EarlyExits.Misses);
        var stageCount = rounds.Count == 0 ? 0 : rounds.Max(r => r.StageMs.Count);
        return new CellResult
        {
            Link = link.Label,
            RoundTripMs = link.RoundTripMs,
            BandwidthBitsPerSecond = link.BitsPerSecond,
            JitterFraction = link.JitterFraction,
            Mode = mode.Mode,
            Gamma = mode.GammaLabel,
            Status = "ok",
            Generations = reports.Count,
            Tokens = tokenCount,
            Rounds = rounds.Count,
            MsPerToken = reports.Sum(r => r.LatencyMs.Total) / tokenCount,
            MsPerTokenMedian = Stats.Median([.. reports.Select(r => r.LatencyMs.PerToken)]),
            AcceptanceRate = drafted == 0 ? 0 : reports.Sum(r => r.AcceptedTokens) / (double)drafted,
            TokensPerRound = rounds.Count == 0 ? 0 : tokenCount / (double)rounds.Count,
            MeanGamma = rounds.Count == 0 ? 0 : drafted / (double)rounds.Count,
            EarlyVerdicts = reports.Sum(r => r.EarlyExits.EarlyVerdicts),
            HitRate = hits + misses == 0 ? 0 : hits / (double)(hits + misses),
            HitsPerRound = rounds.Count == 0 ? 0 : hits / (double)rounds.Count,
            EarlyVerdictMs = AnalyticalModel.EarlyVerdictMs(rounds, double.NaN),
            ReadyRounds = reports.Sum(r => r.EarlyExits.RoundsStartedWithoutWaiting),
            PerRoundMs = rounds.Count == 0 ? Breakdown.Empty : new Breakdown(
                rounds.Average(r => r.DraftMs),
                rounds.Average(r => r.UplinkMs ?? (r.NetworkAndQueueMs - r.QueueMs) / 2),
                rounds.Average(r => r.QueueMs),
                [.. Enumerable.Range(0, stageCount).Select(s => rounds.Average(r => s < r.StageMs.Count ? r.StageMs[s] : 0))],
                rounds.Average(r => r.DownlinkMs ?? (r.NetworkAndQueueMs - r.QueueMs) / 2),
                rounds.Average(r => r.IdleMs),
                rounds.Average(r => r.WallMs)),
        };
    }

    /// <summary>Speed-ups against the cloud cell of the same link, and the analytical expectation of every cell.</summary>
    private void Analyse(List<CellResult> results)
    {
        foreach (var group in results.Where(r => r.Status == "ok").GroupBy(r => r.Link))
        {
            var cells = group.ToList();
            var cloud = cells.FirstOrDefault(c => c.Mode == "cloud");
            var speculative = cells.Where(c => c.Mode == "speculative" && c.Rounds > 0).ToList();
            var draftPerToken = speculative.Count > 0 ? speculative.Average(c => c.PerRoundMs.Draft / Math.Max(c.MeanGamma, 1)) : profile.DraftMsPerToken;

            // Transport per round comes from the plain speculative cell with the same γ (its rounds do not overlap),
            // since message sizes, and so serialization under a cap, depend on γ.
            double Transport(CellResult cell)
            {
                var source = speculative.FirstOrDefault(c => c.Gamma == cell.Gamma) ?? speculative.FirstOrDefault();
                return source is null ? double.NaN : source.PerRoundMs.Uplink + source.PerRoundMs.Queue + source.PerRoundMs.Downlink;
            }

            foreach (var cell in cells)
            {
                if (cloud is not null)
                {
                    cell.SpeedupVsCloud = cloud.MsPerToken / cell.MsPerToken;
                }

                var verify = cell.PerRoundMs.Stages.Sum();
                var inputs = new ModelInputs(
                    cell.MeanGamma,
                    cell.TokensPerRound,
                    cell.Mode == "edge" ? cell.MsPerToken : draftPerToken,
                    cell.Mode == "cloud" ? (double.IsNaN(cell.RoundTripMs) ? Transport(cell) : cell.RoundTripMs) + cell.PerRoundMs.Queue : Transport(cell),
                    verify,
                    !double.IsNaN(cell.EarlyVerdictMs) ? cell.EarlyVerdictMs : cell.PerRoundMs.Stages.Count > 1 ? cell.PerRoundMs.Stages[0] : verify,
                    cell.HitsPerRound);
                cell.ExpectedMsPerToken = AnalyticalModel.MsPerToken(cell.Mode == "speculative" && cell.Gamma == "adaptive" ? "adaptive" : cell.Mode, inputs, tokens);
                cell.ModelGap = (cell.MsPerToken - cell.ExpectedMsPerToken) / cell.ExpectedMsPerToken;
                cell.Flagged = Math.Abs(cell.ModelGap) > 0.10;
                if (cell.Flagged)
                {
                    cell.Explanation = Explain(cell, draftPerToken, Transport(cell));
                }
            }
        }
    }

    /// <summary>What the per-round figures say about a cell the model misses by more than 10 %.</summary>
    private static string Explain(CellResult cell, double draftPerToken, double borrowedTransport)
    {
        var b = cell.PerRoundMs;
        if (cell.Mode is not "cloud" and not "edge" && cell.MeanGamma > 0 && b.Draft / cell.MeanGamma > 1.5 * draftPerToken)
        {
            return string.Create(CultureInfo.InvariantCulture, $"drafting took {b.Draft / cell.MeanGamma:F2} ms per token in this cell against {draftPerToken:F2} ms across the link's cells: the edge was slowed (edge and verifier share this machine's 2 cores), not the link");
        }

        var transport = b.Uplink + b.Queue + b.Downlink;
        if (cell.Mode is not "cloud" and not "edge" && !double.IsNaN(borrowedTransport) && Math.Abs(transport - borrowedTransport) > 0.3 * Math.Max(borrowedTransport, 0.5))
        {
            return string.Create(CultureInfo.InvariantCulture, $"this cell's own transport was {transport:F2} ms per round against the {borrowedTransport:F2} ms the model borrows from the plain speculative cell (a cell of a few dozen rounds: a few slow ones move its mean)");
        }

        if (b.Wall < 2)
        {
            return string.Create(CultureInfo.InvariantCulture, $"rounds of {b.Wall:F2} ms: fixed per-round costs (hand-offs between the gRPC reader, the drafting task and the decoding loop; HTTP/2 framing) are the same size as the modelled parts and not counted by the model");
        }

        if (cell.Mode == "cloud")
        {
            return "cloud tokens stream; under a bandwidth cap or jitter each token's delivery adds to the compute the model counts";
        }

        if (cell.BandwidthBitsPerSecond > 0 && cell.BandwidthBitsPerSecond <= 1e6)
        {
            return "a 1 Mbit/s cap queues each message behind the stream's other frames (headers, window updates, pings); the transport time borrowed from the plain speculative cell does not carry over exactly";
        }

        if (b.Idle > 0.1 * b.Wall)
        {
            return string.Create(CultureInfo.InvariantCulture, $"idle time {b.Idle:F1} ms of a {b.Wall:F1} ms round (edge work between verdicts the model leaves out)");
        }

        if (cell.JitterFraction > 0)
        {
            return "jitter: the model uses mean link times, and a round waits for its slowest message";
        }

        return cell.ModelGap > 0
            ? "per-round overhead beyond the modelled parts (first-round drafting, committing, task scheduling on a 2-core machine)"
            : "overlap larger than modelled (pre-drafted rounds that finished earlier than the formula assumes)";
    }

    private static CellResult Failed(LinkCell link, ModeCell mode, string error) => new()
    {
        Link = link.Label,
        RoundTripMs = link.RoundTripMs,
        BandwidthBitsPerSecond = link.BitsPerSecond,
        JitterFraction = link.JitterFraction,
        Mode = mode.Mode,
        Gamma = mode.GammaLabel,
        Status = "failed",
        Error = error,
        PerRoundMs = Breakdown.Empty,
    };
}
