using System.CommandLine;
using SpecEdge.Bench.Matrix;
using SpecEdge.CloudVerifier.Hosting;
using SpecEdge.Demo;
using SpecEdge.Shared.Timing;

namespace SpecEdge.Bench;

/// <summary>
/// <c>matrix</c>: the latency suite users run: modes × link round trip × bandwidth × jitter × γ on a prompt set, with
/// warm-up and repeats, against an in-process verifier through the link emulator (or a remote verifier over the real
/// link). Writes results.json, results.csv, report.md and PNG plots.
/// </summary>
internal static class MatrixBenchmark
{
    private static readonly string[] Prompts =
    [
        "And God said",
        "In the beginning",
        "The edge drafts and the cloud verifies",
        "Blessed are the",
    ];

    public static Command Create()
    {
        var quick = new Option<bool>("--quick") { Description = "A short preset (3 round trips, 2 bandwidths, γ 4 and adaptive, 2 prompts): under 5 minutes." };
        var modes = new Option<string?>("--modes") { Description = "Modes (default: cloud, edge, speculative, preemptive, conditional, proactive)." };
        var rtt = new Option<string?>("--rtt") { Description = "Round trips in ms (default 0,10,25,50,100,200)." };
        var bw = new Option<string?>("--bw") { Description = "Bandwidths (default unlimited,10mbit,1mbit)." };
        var jitter = new Option<string?>("--jitter") { Description = "Jitter as percent of the round trip (default 0,10)." };
        var gamma = new Option<string?>("--gamma") { Description = "γ values (default 2,4,8,adaptive)." };
        var profile = new Option<string>("--profile") { Description = "Compute profile: real, ratio-10x, paper-nano-a100, paper-robot, or a file.", DefaultValueFactory = _ => "real" };
        var prompts = new Option<int?>("--prompts") { Description = "Prompts per cell (default 2)." };
        var tokens = new Option<int?>("--tokens") { Description = "New tokens per generation (default 48; quick 32)." };
        var repeats = new Option<int>("--repeats") { Description = "Repeats of the prompt set per cell.", DefaultValueFactory = _ => 1 };
        var warmup = new Option<int>("--warmup") { Description = "Warm-up generations per cell (not measured).", DefaultValueFactory = _ => 1 };
        var server = new Option<string?>("--server") { Description = "Measure against this remote verifier over the real link (the link axes are then not emulated)." };
        var draft = new Option<string?>("--draft") { Description = "Draft model (default: the built-in pair's)." };
        var output = new Option<string>("--out") { Description = "Output folder.", DefaultValueFactory = _ => Path.Combine("bench-results", DateTime.UtcNow.ToString("yyyyMMdd-HHmmss", System.Globalization.CultureInfo.InvariantCulture)) };
        var threshold = new Option<float?>("--exit-threshold") { Description = "Exit threshold of the in-process verifier (default: the pair's models/calibration.json; else 0 for the synthetic pair, 0.5 for a trained one)." };
        var command = new Command("matrix", "The latency matrix: modes × round trip × bandwidth × jitter × γ, with JSON, CSV, a Markdown report and plots.")
        {
            quick, modes, rtt, bw, jitter, gamma, profile, prompts, tokens, repeats, warmup, server, draft, output, threshold,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var error = parse.InvocationConfiguration.Error;
            try
            {
                var preset = parse.GetValue(quick) ? MatrixAxes.Quick : MatrixAxes.Full;
                var axes = preset with
                {
                    Modes = parse.GetValue(modes) is { } m ? MatrixAxes.ParseModes(m) : preset.Modes,
                    RoundTripsMs = parse.GetValue(rtt) is { } r ? MatrixAxes.ParseDoubles(r, "--rtt") : preset.RoundTripsMs,
                    Bandwidths = parse.GetValue(bw) is { } b ? MatrixAxes.ParseBandwidths(b) : preset.Bandwidths,
                    JitterFractions = parse.GetValue(jitter) is { } j ? [.. MatrixAxes.ParseDoubles(j, "--jitter").Select(p => p / 100)] : preset.JitterFractions,
                    Gammas = parse.GetValue(gamma) is { } g ? MatrixAxes.ParseGammas(g) : preset.Gammas,
                };
                var computeProfile = ComputeProfiles.Resolve(parse.GetValue(profile)!);
                var pair = DefaultModels.Resolve();
                var promptCount = parse.GetValue(prompts) ?? 2;
                var tokenCount = parse.GetValue(tokens) ?? (parse.GetValue(quick) ? 32 : 48);
                var promptSet = Prompts.Take(Math.Clamp(promptCount, 1, Prompts.Length)).ToList();
                var commandLine = "specedge-bench " + string.Join(' ', Environment.GetCommandLineArgs().Skip(1));
                Uri address;
                Microsoft.AspNetCore.Builder.WebApplication? app = null;
                var remote = parse.GetValue(server) is not null;
                if (parse.GetValue(server) is { } url)
                {
                    address = Uri.TryCreate(url, UriKind.Absolute, out var u) ? u : throw new FormatException($"--server: '{url}' is not a URL");
                }
                else
                {
                    (app, address) = await VerifierHost.StartLoopbackAsync(pair.Target, o =>
                    {
                        o.ServePair(pair, parse.GetValue(threshold));
                        o.IntraOpThreads = 1;
                        o.ComputeProfile = computeProfile.IsEmulated ? computeProfile.Name : null;
                    }, cancellationToken: cancellationToken);
                }

                try
                {
                    error.WriteLine($"matrix: {(remote ? "the real link" : $"{axes.Links().Count()} emulated links")} × {axes.ModeCells().Count()} mode cells, {promptSet.Count} prompt(s) × {tokenCount} tokens × {parse.GetValue(repeats)} repeat(s); compute {computeProfile.Label}; writing to {parse.GetValue(output)}");
                    var runner = new MatrixRunner(address, parse.GetValue(draft) ?? pair.Draft, computeProfile, promptSet, tokenCount, parse.GetValue(repeats), parse.GetValue(warmup), remote, error);
                    var cells = await runner.RunAsync(axes, cancellationToken);
                    MatrixOutput.Write(parse.GetValue(output)!, cells, commandLine, pair.Description, computeProfile, remote ? $"real link to {address}" : "emulated (in-process link emulator)");
                    error.WriteLine($"matrix: {cells.Count(c => c.Status == "ok")} cells ok, {cells.Count(c => c.Status != "ok")} failed, {cells.Count(c => c.Flagged)} more than 10 % from the model; wrote {parse.GetValue(output)}");
                    return 0;
                }
                finally
                {
                    if (app is not null)
                    {
                        await app.DisposeAsync();
                    }
                }
            }
            catch (FormatException ex)
            {
                error.WriteLine($"specedge-bench: error: {ex.Message}");
                return 2;
            }
        });
        return command;
    }
}
