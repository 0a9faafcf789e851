using System.Globalization;
using SpecEdge.CloudVerifier.Hosting;
using SpecEdge.EdgeClient.Client;
using SpecEdge.EdgeClient.Link;

namespace SpecEdge.Demo;

/// <summary>Runs the demo plan and prints the streamed text and the comparison table.</summary>
internal sealed class DemoRunner(TextWriter output, TextWriter error)
{
    /// <summary>Runs the plan; returns false when a greedy speculative output differs from cloud decoding.</summary>
    public async Task<bool> RunAsync(ModelPair pair, DemoPlan plan, float? exitThreshold, CancellationToken cancellationToken)
    {
        output.WriteLine($"SpecEdge demo: {pair.Description}");
        output.WriteLine($"  target {pair.Target} (exits [{string.Join(",", pair.Exits)}]), draft {pair.Draft}");
        output.WriteLine($"  link {plan.Link?.ToString() ?? "none (loopback)"}; compute {plan.Profile.Label}; γ = {plan.DraftTokens}; {plan.Sampling}");
        output.WriteLine("  starting the verifier in this process (a checkpoint is converted to ONNX on first use)…");
        var (app, address) = await VerifierHost.StartLoopbackAsync(pair.Target, o =>
        {
            o.ServePair(pair, exitThreshold);
            o.IntraOpThreads = 1;
            o.ComputeProfile = plan.Profile.IsEmulated ? plan.Profile.Name : null;
        }, cancellationToken: cancellationToken);
        await using var _ = app;
        var link = plan.Link is { IsIdeal: false } profile ? new EmulatedLink(profile) : null;
        var options = new EdgeClientOptions
        {
            Server = address,
            DraftModel = pair.Draft,
            IntraOpThreads = 1,
            Profile = plan.Profile,
        };
        await using var client = await SpecEdgeClient.ConnectAsync(link?.ApplyTo(options) ?? options, cancellationToken: cancellationToken);
        output.WriteLine($"  exit thresholds {VerifierHost.DescribeThresholds(app)}");
        output.WriteLine($"  verifier at {address}{(link?.Relay is { } relay ? $", reached through the link emulator at {relay.LocalEndPoint}" : string.Empty)}");

        // Warm-up: one short generation per mode, not measured, so the first mode measured does not pay for JIT
        // compilation and ONNX Runtime's first runs.
        output.WriteLine("  warming up every mode…");
        foreach (var mode in plan.Modes)
        {
            await client.Generate(Request(plan, mode, 0, maxNewTokens: Math.Min(8, plan.MaxNewTokens))).RunToEndAsync(cancellationToken);
        }

        output.WriteLine();

        // Prompt by prompt, every mode in turn (as the modes benchmark does), so no mode is measured only early or late.
        var results = plan.Modes.Select(m => new ModeResult(m.Label, m.Mode)).ToList();
        var cloudMode = plan.Modes.Select(m => m.Mode).ToList().IndexOf(GenerationMode.Cloud);
        for (var p = 0; p < plan.Prompts.Count; p++)
        {
            // The reference: the cloud mode's own run when it is in the plan (first, whatever the order of --modes),
            // else an unmeasured cloud run, so every speculative output is compared with cloud decoding.
            IReadOnlyList<int> reference;
            if (cloudMode >= 0)
            {
                reference = await RunOneAsync(client, plan, plan.Modes[cloudMode], p, results[cloudMode], cancellationToken);
            }
            else
            {
                reference = (await client.Generate(Request(plan, new DemoMode("cloud", GenerationMode.Cloud, false), p)).RunToEndAsync(cancellationToken)).TokenIds;
            }

            for (var m = 0; m < plan.Modes.Count; m++)
            {
                if (m == cloudMode)
                {
                    continue;
                }

                var tokens = await RunOneAsync(client, plan, plan.Modes[m], p, results[m], cancellationToken);
                if (plan.Modes[m].Mode != GenerationMode.Edge)
                {
                    results[m].SameAsCloud &= reference.SequenceEqual(tokens);
                    results[m].Compared = true;
                }
            }
        }

        output.WriteLine();
        PrintTable(results, plan);
        return !(plan.Sampling.IsGreedy && results.Any(r => r.Compared && !r.SameAsCloud));
    }

    private async Task<IReadOnlyList<int>> RunOneAsync(SpecEdgeClient client, DemoPlan plan, DemoMode mode, int prompt, ModeResult result, CancellationToken cancellationToken)
    {
        var generation = client.Generate(Request(plan, mode, prompt));
        if (!plan.Quiet)
        {
            output.Write($"[{mode.Label}] {plan.Prompts[prompt]}");
        }

        await foreach (var token in generation.WithCancellation(cancellationToken))
        {
            if (!plan.Quiet)
            {
                output.Write(Printable(token.Text));
            }
        }

        if (!plan.Quiet)
        {
            output.WriteLine();
        }

        var report = generation.Report!;
        result.Add(report);
        return report.TokenIds;
    }

    private static GenerationRequest Request(DemoPlan plan, DemoMode mode, int prompt, int? maxNewTokens = null) => new()
    {
        PromptText = plan.Prompts[prompt],
        Mode = mode.Mode,
        MaxNewTokens = maxNewTokens ?? plan.MaxNewTokens,
        DraftTokens = plan.DraftTokens,
        AdaptiveDraftTokens = mode.Adaptive,
        Leaves = mode.Leaves,
        Sampling = plan.Sampling,
        StopAtEos = false,
        ClientLabel = $"demo {mode.Label}",
    };

    private void PrintTable(List<ModeResult> results, DemoPlan plan)
    {
        var cloud = results.FirstOrDefault(r => r.Mode == GenerationMode.Cloud);
        var headers = new[] { "mode", "new tokens", "acceptance", "mean accepted len", "ms/token", "speed-up vs cloud", "early verdicts", "hit rate", "ready rounds", "output" };
        var rows = results.Select(r => new[]
        {
            r.Label,
            r.Tokens.ToString(CultureInfo.InvariantCulture),
            r.Drafted == 0 ? "-" : (r.Accepted / (double)r.Drafted).ToString("P0", CultureInfo.InvariantCulture),
            r.Drafted == 0 ? "-" : (r.Tokens / (double)r.Rounds).ToString("F2", CultureInfo.InvariantCulture),
            (r.TotalMs / r.Tokens).ToString("F2", CultureInfo.InvariantCulture),
            cloud is null ? "-" : ((cloud.TotalMs / cloud.Tokens) / (r.TotalMs / r.Tokens)).ToString("F2", CultureInfo.InvariantCulture) + "x",
            r.EarlyVerdicts == 0 ? "-" : r.EarlyVerdicts.ToString(CultureInfo.InvariantCulture),
            r.Hits + r.Misses == 0 ? "-" : (r.Hits / (double)(r.Hits + r.Misses)).ToString("P0", CultureInfo.InvariantCulture),
            r.Rounds == 0 || r.Drafted == 0 ? "-" : r.Ready.ToString(CultureInfo.InvariantCulture) + "/" + r.Rounds.ToString(CultureInfo.InvariantCulture),
            r.Mode == GenerationMode.Cloud ? "reference" : r.Mode == GenerationMode.Edge ? "draft's own" : !r.Compared ? "-" : r.SameAsCloud ? "= cloud" : "DIFFERS",
        }).ToList();
        var widths = headers.Select((h, i) => Math.Max(h.Length, rows.Max(r => r[i].Length))).ToArray();
        output.WriteLine("| " + string.Join(" | ", headers.Select((h, i) => h.PadRight(widths[i]))) + " |");
        output.WriteLine("|" + string.Join("|", widths.Select(w => new string('-', w + 2))) + "|");
        foreach (var row in rows)
        {
            output.WriteLine("| " + string.Join(" | ", row.Select((c, i) => c.PadRight(widths[i]))) + " |");
        }

        output.WriteLine();
        output.WriteLine($"{plan.Prompts.Count} prompts x {plan.MaxNewTokens} new tokens per mode, modes interleaved prompt by prompt after a warm-up; ms/token is wall time over all prompts; 'ready rounds' had their drafts ready when the previous verdict came; 'output' compares with cloud decoding of the same prompt.");
        if (plan.Sampling.IsGreedy && results.Any(r => r.Compared && !r.SameAsCloud))
        {
            error.WriteLine("specedge-demo: error: a speculative mode's greedy output differs from cloud autoregressive decoding (see 'output'); exit code 3.");
        }
    }

    private static string Printable(string text)
    {
        var chars = text.Select(c => char.IsControl(c) && c != '\n' ? '·' : c).ToArray();
        return new string(chars).Replace("\n", " ", StringComparison.Ordinal);
    }

    private sealed class ModeResult(string label, GenerationMode mode)
    {
        public string Label { get; } = label;

        public GenerationMode Mode { get; } = mode;

        public int Tokens { get; private set; }

        public int Rounds { get; private set; }

        public int Drafted { get; private set; }

        public int Accepted { get; private set; }

        public double TotalMs { get; private set; }

        public int EarlyVerdicts { get; private set; }

        public int Hits { get; private set; }

        public int Misses { get; private set; }

        public int Ready { get; private set; }

        public bool SameAsCloud { get; set; } = true;

        public bool Compared { get; set; }

        public void Add(GenerationReport report)
        {
            Tokens += report.NewTokens;
            Rounds += report.Rounds;
            Drafted += report.DraftTokens;
            Accepted += report.AcceptedTokens;
            TotalMs += report.LatencyMs.Total;
            EarlyVerdicts += report.EarlyExits.EarlyVerdicts;
            Hits += report.EarlyExits.Hits;
            Misses += report.EarlyExits.Misses;
            Ready += report.EarlyExits.RoundsStartedWithoutWaiting;
        }
    }
}
