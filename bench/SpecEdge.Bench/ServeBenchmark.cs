using System.Collections.Concurrent;
using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using ScottPlot;
using SpecEdge.Bench.Matrix;
using SpecEdge.CloudVerifier.Hosting;
using SpecEdge.CloudVerifier.Scheduling;
using SpecEdge.Demo;
using SpecEdge.EdgeClient.Client;
using SpecEdge.Shared.Timing;

namespace SpecEdge.Bench;

/// <summary>One cell of the serve benchmark: a number of clients against one verifier, batching on or off, one profile.</summary>
internal sealed record ServeCell(
    string Profile,
    bool Batching,
    int Clients,
    double Seconds,
    int Generations,
    int Failed,
    long Tokens,
    double TokensPerSecond,
    double ClientMsPerTokenMedian,
    double ClientMsPerTokenWorst,
    double RoundP50Ms,
    double RoundP99Ms,
    double DraftMsPerRound,
    double MeanBatchRows,
    double MeanBatchTokens,
    double BusyShare,
    double StepMs,
    double FloorShareOfStep,
    long Steps);

/// <summary>
/// <c>serve</c>: many edges against one verifier, continuous batching on and off, under real compute and an emulated
/// GPU profile; total committed tokens per second, each client's ms per token, round latency, batch sizes and the
/// verifier's busy share. Every cell of one run is measured side by side on the same machine.
/// </summary>
internal static class ServeBenchmark
{
    private static readonly string[] Prompts =
    [
        "The robot picked up the",
        "Once upon a time, a small",
        "The weather today is",
        "In the kitchen there was a",
        "She opened the door and saw",
        "The little dog ran to the",
    ];

    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    public static Command Create()
    {
        var clients = new Option<string>("--clients") { Description = "Client counts.", DefaultValueFactory = _ => "1,4,16,64" };
        var batching = new Option<string>("--batching") { Description = "on, off or both.", DefaultValueFactory = _ => "on,off" };
        var profiles = new Option<string>("--profiles") { Description = "Compute profiles.", DefaultValueFactory = _ => $"real,{ComputeProfiles.PaperNanoA100.Name}" };
        var seconds = new Option<double>("--seconds") { Description = "Measured seconds per cell (after a warm-up generation per client).", DefaultValueFactory = _ => 15 };
        var tokens = new Option<int>("--tokens") { Description = "New tokens per generation.", DefaultValueFactory = _ => 32 };
        var mode = new Option<string>("--mode") { Description = "The clients' decoding mode.", DefaultValueFactory = _ => "preemptive" };
        var gamma = new Option<int>("--draft-tokens") { Description = "γ.", DefaultValueFactory = _ => 4 };
        var window = new Option<int>("--window-us") { Description = "The verifier's batching window (Verifier:Batching:WindowMicroseconds).", DefaultValueFactory = _ => 0 };
        var output = new Option<string?>("--out") { Description = "Folder for results.json, results.csv, report.md and the plots (throughput_ratio.png, client_latency_ratio.png)." };
        var replot = new Option<string?>("--replot") { Description = "Only redraw the plots of a finished run from its results.json in this folder (nothing is measured)." };
        var command = new Command("serve", "One verifier, many edges: throughput and per-client latency with continuous batching on and off.") { clients, batching, profiles, seconds, tokens, mode, gamma, window, output, replot };
        command.SetAction(async (parse, cancellationToken) =>
        {
            if (parse.GetValue(replot) is { } finished)
            {
                Plot(finished, JsonSerializer.Deserialize<List<ServeCell>>(File.ReadAllText(Path.Combine(finished, "results.json")), Json)!);
                return 0;
            }

            var clientCounts = MatrixAxes.ParsePositiveInts(parse.GetValue(clients)!, "--clients");
            var batchingValues = parse.GetValue(batching)!.Split(',', StringSplitOptions.TrimEntries).Select(v => v switch
            {
                "on" => true,
                "off" => false,
                _ => throw new FormatException($"--batching: '{v}' is not on or off"),
            }).ToList();
            var profileList = parse.GetValue(profiles)!.Split(',', StringSplitOptions.TrimEntries).Select(ComputeProfiles.Resolve).ToList();
            if (!Enum.TryParse<GenerationMode>(parse.GetValue(mode), ignoreCase: true, out var generationMode))
            {
                throw new FormatException($"--mode: '{parse.GetValue(mode)}' is not a mode");
            }

            var pair = DefaultModels.Resolve();
            var header = $"models: {pair.Description}; mode {generationMode}, γ = {parse.GetValue(gamma)}, {parse.GetValue(tokens)} tokens per generation, greedy; {parse.GetValue(seconds)} s per cell; batching window {parse.GetValue(window)} µs; no link emulation (loopback)";
            Console.WriteLine(header);
            var cells = new List<ServeCell>();
            foreach (var profile in profileList)
            {
                foreach (var count in clientCounts)
                {
                    foreach (var on in batchingValues)
                    {
                        var cell = await RunCellAsync(pair, profile, on, parse.GetValue(window), count, TimeSpan.FromSeconds(parse.GetValue(seconds)), parse.GetValue(tokens), generationMode, parse.GetValue(gamma), cancellationToken);
                        Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture, $"[serve] {profile.Name} batching {(on ? "on" : "off")} × {count}: {cell.TokensPerSecond:F1} tok/s, {cell.ClientMsPerTokenMedian:F1} ms/token, rows {cell.MeanBatchRows:F2}"));
                        cells.Add(cell);
                    }
                }
            }

            var report = Report(cells, header, profileList);
            Console.WriteLine(report);
            if (parse.GetValue(output) is { } folder)
            {
                Directory.CreateDirectory(folder);
                File.WriteAllText(Path.Combine(folder, "results.json"), JsonSerializer.Serialize(cells, Json));
                File.WriteAllText(Path.Combine(folder, "results.csv"), Csv(cells));
                File.WriteAllText(Path.Combine(folder, "report.md"), $"# serve\n\nCommand: `specedge-bench {string.Join(' ', parse.Tokens.Select(t => t.Value))}`\n\n{report}");
                Plot(folder, cells);
            }

            return cells.Sum(c => c.Failed) == 0 ? 0 : 1;
        });
        return command;
    }

    private static async Task<ServeCell> RunCellAsync(ModelPair pair, ComputeProfile profile, bool batching, int windowMicroseconds, int clients, TimeSpan duration, int tokens, GenerationMode mode, int gamma, CancellationToken cancellationToken)
    {
        var (app, address) = await VerifierHost.StartLoopbackAsync(pair.Target, o =>
        {
            o.ServePair(pair, threshold: null);
            o.IntraOpThreads = 1;
            o.ComputeProfile = profile.IsEmulated ? profile.Name : null;
            o.Batching.Enabled = batching;
            o.Batching.WindowMicroseconds = windowMicroseconds;
            o.Limits.MaxSessions = clients + 8;
        }, cancellationToken: cancellationToken);
        await using var _ = app;
        var scheduler = app.Services.GetRequiredService<BatchScheduler>();
        var edges = new List<SpecEdgeClient>();
        try
        {
            for (var i = 0; i < clients; i++)
            {
                edges.Add(await SpecEdgeClient.ConnectAsync(new EdgeClientOptions { Server = address, DraftModel = pair.Draft, IntraOpThreads = 1, Profile = profile, RoundTimeout = TimeSpan.FromSeconds(120) }, cancellationToken: cancellationToken));
            }

            GenerationRequest Request(int client, int iteration) => new()
            {
                PromptText = Prompts[(client + iteration) % Prompts.Length],
                Mode = mode,
                DraftTokens = gamma,
                MaxNewTokens = tokens,
                StopAtEos = false,
                ClientLabel = $"serve client {client}",
            };

            // Warm-up: one generation each, all at once (the runs that follow start from a steady state).
            await Task.WhenAll(edges.Select((edge, i) => edge.Generate(Request(i, 0)).RunToEndAsync(cancellationToken)));

            var before = scheduler.Counters;
            var rounds = new ConcurrentBag<double>();
            var drafts = new ConcurrentBag<double>();
            var perClient = new double[clients];
            long tokenCount = 0;
            int generations = 0, failed = 0;
            var watch = Stopwatch.StartNew();
            await Task.WhenAll(edges.Select((edge, index) => Task.Run(async () =>
            {
                double ms = 0;
                var produced = 0;
                for (var iteration = 1; watch.Elapsed < duration && !cancellationToken.IsCancellationRequested; iteration++)
                {
                    try
                    {
                        var report = await edge.Generate(Request(index, iteration)).RunToEndAsync(cancellationToken);
                        Interlocked.Add(ref tokenCount, report.NewTokens);
                        ms += report.LatencyMs.Total;
                        produced += report.NewTokens;
                        foreach (var round in report.PerRound)
                        {
                            rounds.Add(round.WallMs);
                            drafts.Add(round.DraftMs);
                        }
                    }
                    catch (Exception ex) when (ex is not OperationCanceledException)
                    {
                        Interlocked.Increment(ref failed);
                        Console.Error.WriteLine($"[serve] client {index}: {ex.Message.Split('\n')[0]}");
                    }

                    Interlocked.Increment(ref generations);
                }

                perClient[index] = produced == 0 ? double.NaN : ms / produced;
            }, cancellationToken)));
            var elapsed = watch.Elapsed;
            var after = scheduler.Counters;
            var steps = after.Steps - before.Steps;
            var sortedRounds = rounds.ToList();
            var clientMs = perClient.Where(v => !double.IsNaN(v)).ToList();
            return new ServeCell(
                profile.Name,
                batching,
                clients,
                elapsed.TotalSeconds,
                generations,
                failed,
                tokenCount,
                tokenCount / elapsed.TotalSeconds,
                Stats.Median(clientMs),
                clientMs.Count == 0 ? double.NaN : clientMs.Max(),
                Stats.Median(sortedRounds),
                Stats.Percentile(sortedRounds, 0.99),
                drafts.IsEmpty ? 0 : drafts.Average(),
                steps == 0 ? 0 : (after.Rows - before.Rows) / (double)steps,
                steps == 0 ? 0 : (after.Tokens - before.Tokens) / (double)steps,
                (after.Busy - before.Busy) / elapsed,
                steps == 0 ? 0 : (after.Busy - before.Busy).TotalMilliseconds / steps,
                after.Busy == before.Busy ? 0 : (after.Floors - before.Floors) / (after.Busy - before.Busy),
                steps);
        }
        finally
        {
            foreach (var edge in edges)
            {
                await edge.DisposeAsync();
            }
        }
    }

    private static string Report(List<ServeCell> cells, string header, List<ComputeProfile> profiles)
    {
        var text = new StringBuilder();
        text.AppendLine(header).AppendLine();
        foreach (var profile in profiles)
        {
            text.AppendLine(CultureInfo.InvariantCulture, $"## {profile.Label}").AppendLine();
            text.AppendLine("| clients | batching | tokens/s | × unbatched | client ms/token (median) | worst client | × lone client | round p50 ms | round p99 ms | edge draft ms/round | rows/step | tokens/step | step ms | floor share of step | verifier busy | failed |");
            text.AppendLine("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
            var ofProfile = cells.Where(c => c.Profile == profile.Name).ToList();
            foreach (var cell in ofProfile.OrderBy(c => c.Clients).ThenByDescending(c => c.Batching))
            {
                var unbatched = ofProfile.FirstOrDefault(c => c.Clients == cell.Clients && !c.Batching);
                var lone = ofProfile.FirstOrDefault(c => c.Clients == 1 && c.Batching == cell.Batching);
                text.AppendLine(string.Create(CultureInfo.InvariantCulture,
                    $"| {cell.Clients} | {(cell.Batching ? "on" : "off")} | {cell.TokensPerSecond:F1} | {(unbatched is null ? "-" : $"{cell.TokensPerSecond / unbatched.TokensPerSecond:F2}x")} | {cell.ClientMsPerTokenMedian:F2} | {cell.ClientMsPerTokenWorst:F2} | {(lone is null ? "-" : $"{cell.ClientMsPerTokenMedian / lone.ClientMsPerTokenMedian:F2}x")} | {cell.RoundP50Ms:F1} | {cell.RoundP99Ms:F1} | {cell.DraftMsPerRound:F1} | {cell.MeanBatchRows:F2} | {cell.MeanBatchTokens:F1} | {cell.StepMs:F1} | {cell.FloorShareOfStep:P0} | {cell.BusyShare:P0} | {cell.Failed} |"));
            }

            text.AppendLine();
        }

        return text.ToString();
    }

    private static string Csv(List<ServeCell> cells)
    {
        var text = new StringBuilder("profile,batching,clients,seconds,generations,failed,tokens,tokens_per_second,client_ms_per_token_median,client_ms_per_token_worst,round_p50_ms,round_p99_ms,draft_ms_per_round,mean_batch_rows,mean_batch_tokens,busy_share,step_ms,floor_share_of_step,steps\n");
        foreach (var c in cells)
        {
            text.AppendLine(string.Create(CultureInfo.InvariantCulture, $"{c.Profile},{(c.Batching ? "on" : "off")},{c.Clients},{c.Seconds:F2},{c.Generations},{c.Failed},{c.Tokens},{c.TokensPerSecond:F3},{c.ClientMsPerTokenMedian:F3},{c.ClientMsPerTokenWorst:F3},{c.RoundP50Ms:F3},{c.RoundP99Ms:F3},{c.DraftMsPerRound:F3},{c.MeanBatchRows:F3},{c.MeanBatchTokens:F3},{c.BusyShare:F4},{c.StepMs:F3},{c.FloorShareOfStep:F4},{c.Steps}"));
        }

        return text.ToString();
    }

    private static void Plot(string folder, List<ServeCell> cells)
    {
        // Ratios, measured side by side: batching on against off at each client count, and each client's ms per token
        // against a lone client's (same profile and batching).
        RatioPlot(Path.Combine(folder, "throughput_ratio.png"), cells, c => c.Batching, (cell, all) => all.FirstOrDefault(o => o.Profile == cell.Profile && o.Clients == cell.Clients && !o.Batching) is { } off ? cell.TokensPerSecond / off.TokensPerSecond : double.NaN, "total throughput, batching on ÷ off", "one verifier, many edges: throughput gained by batching");
        RatioPlot(Path.Combine(folder, "client_latency_ratio.png"), cells, _ => true, (cell, all) => all.FirstOrDefault(o => o.Profile == cell.Profile && o.Clients == 1 && o.Batching == cell.Batching) is { } lone ? cell.ClientMsPerTokenMedian / lone.ClientMsPerTokenMedian : double.NaN, "client ms per token ÷ a lone client's", "what sharing the verifier costs each client");
    }

    private static void RatioPlot(string path, List<ServeCell> cells, Func<ServeCell, bool> include, Func<ServeCell, List<ServeCell>, double> ratio, string yLabel, string title)
    {
        var plot = new Plot();
        var palette = new ScottPlot.Palettes.Category10();
        var index = 0;
        foreach (var series in cells.Where(include).GroupBy(c => $"{c.Profile}, batching {(c.Batching ? "on" : "off")}").OrderBy(g => g.Key, StringComparer.Ordinal))
        {
            var points = series.OrderBy(c => c.Clients).Select(c => (X: Math.Log2(c.Clients), Y: ratio(c, cells))).Where(p => !double.IsNaN(p.Y)).ToList();
            if (points.Count == 0)
            {
                continue;
            }

            var scatter = plot.Add.Scatter(points.Select(p => p.X).ToArray(), points.Select(p => p.Y).ToArray());
            scatter.LegendText = series.Key;
            scatter.Color = palette.GetColor(index++);
            scatter.LineWidth = 2;
            scatter.MarkerSize = 7;
            scatter.LinePattern = series.First().Batching ? LinePattern.Solid : LinePattern.Dashed;
        }

        var ticks = cells.Select(c => c.Clients).Distinct().Order().Select(n => new Tick(Math.Log2(n), n.ToString(CultureInfo.InvariantCulture))).ToArray();
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(ticks);
        plot.XLabel("clients");
        plot.YLabel(yLabel);
        plot.Title(title);
        plot.ShowLegend(Alignment.UpperLeft);
        plot.SavePng(path, 1000, 600);
    }

}
