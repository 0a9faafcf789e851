using System.CommandLine;
using System.Globalization;
using SpecEdge.Bench.Reliability;
using SpecEdge.Demo;
using SpecEdge.Shared.Models.Conversion;

namespace SpecEdge.Bench;

/// <summary><c>soak</c>, <c>load</c> and <c>fuzz</c>: the reliability proofs, with the figures docs/reliability.md records.</summary>
internal static class ReliabilityCommands
{
    public static Command Soak()
    {
        var faults = new Option<int>("--faults") { Description = "Keep going until this many faults interrupted a generation in flight.", DefaultValueFactory = _ => 100 };
        var tokens = new Option<int>("--tokens") { Description = "New tokens per generation.", DefaultValueFactory = _ => 48 };
        var seed = new Option<int>("--seed") { DefaultValueFactory = _ => 1 };
        var command = new Command("soak", "Fault injection with real verifier processes, aimed at generations in flight (mid-prefill, mid-round, between an early and a final verdict, during a conditional round, mid-stream): kill -9 and restart, dropped connections, stalled links. Every output must equal the fault-free one.") { faults, tokens, seed };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var (target, draft) = Pair();
            var report = await FaultSoak.RunAsync(target, draft, parse.GetValue(faults), parse.GetValue(tokens), parse.GetValue(seed), Console.Error, cancellationToken);
            Console.WriteLine("| generations | identical to fault-free | generations interrupted | faults injected | faults that interrupted a generation in flight | missed aims | tokens committed | lost | duplicated | wrong | sessions opened | retries | seconds |");
            Console.WriteLine("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {report.Generations} | {report.Identical} | {report.Interrupted} | {report.Faults} | {report.FaultsInterrupting} | {report.MissedAims} | {report.TokensCommitted} | {report.TokensLost} | {report.TokensDuplicated} | {report.TokensWrong} | {report.SessionsOpened} | {report.Retries} | {report.Seconds:F0} |"));
            Console.WriteLine();
            Console.WriteLine("Faults that interrupted a generation in flight:");
            Console.WriteLine();
            Console.WriteLine($"- by phase: {string.Join(", ", report.InterruptingBy(f => f.Phase).Select(kv => $"{kv.Key} {kv.Value}"))}");
            Console.WriteLine($"- by kind: {string.Join(", ", report.InterruptingBy(f => f.Kind).Select(kv => $"{kv.Key} {kv.Value}"))}");
            Console.WriteLine($"- by mode: {string.Join(", ", report.InterruptingBy(f => f.Mode).Select(kv => $"{kv.Key} {kv.Value}"))}");
            Console.WriteLine($"- by verifier: {string.Join(", ", report.InterruptingBy(f => f.Batching).Select(kv => $"{kv.Key} {kv.Value}"))}");
            Console.WriteLine($"- landed without interrupting (a stall or drop the session rode out): {report.Faults - report.FaultsInterrupting}");
            foreach (var error in report.Errors)
            {
                Console.WriteLine($"- error: {error}");
            }

            return report.Identical == report.Generations ? 0 : 1;
        });
        return command;
    }

    public static Command Load()
    {
        var clients = new Option<int>("--clients") { DefaultValueFactory = _ => 64 };
        var seconds = new Option<double>("--seconds") { DefaultValueFactory = _ => 120 };
        var tokens = new Option<int>("--tokens") { DefaultValueFactory = _ => 32 };
        var command = new Command("load", "Many concurrent edge clients against one verifier for a bounded time: failures, round latency p50/p99, throughput.") { clients, seconds, tokens };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var (target, draft) = Pair();
            var report = await LoadTest.RunAsync(target, draft, parse.GetValue(clients), TimeSpan.FromSeconds(parse.GetValue(seconds)), parse.GetValue(tokens), Console.Error, cancellationToken);
            Console.WriteLine("| clients | seconds | generations | failed | tokens | tokens/s | round p50 ms | round p99 ms |");
            Console.WriteLine("|---|---|---|---|---|---|---|---|");
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {report.Clients} | {report.Seconds:F0} | {report.Generations} | {report.Failed} | {report.Tokens} | {report.TokensPerSecond:F1} | {report.RoundP50Ms:F1} | {report.RoundP99Ms:F1} |"));
            foreach (var error in report.Errors.Take(10))
            {
                Console.WriteLine($"- error: {error}");
            }

            return report.Failed == 0 ? 0 : 1;
        });
        return command;
    }

    public static Command Fuzz()
    {
        var sequences = new Option<int>("--sequences") { DefaultValueFactory = _ => 100_000 };
        var seed = new Option<int>("--seed") { DefaultValueFactory = _ => 1 };
        var parallel = new Option<int>("--parallel") { DefaultValueFactory = _ => 4 };
        var command = new Command("fuzz", "Protocol fuzzing: generated and mutated Decode sequences; every one must end with a defined status while a healthy session keeps its exact output.") { sequences, seed, parallel };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var (target, draft) = Pair();
            var report = await ProtocolFuzzer.RunAsync(target, draft, parse.GetValue(sequences), parse.GetValue(seed), parse.GetValue(parallel), Console.Error, cancellationToken);
            Console.WriteLine("| sequences | seconds | outcomes | undefined statuses | valid sequences refused | healthy generations | identical | batched steps shared by sessions |");
            Console.WriteLine("|---|---|---|---|---|---|---|---|");
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {report.Sequences} | {report.Seconds:F0} | {string.Join(", ", report.Outcomes.OrderByDescending(kv => kv.Value).Select(kv => $"{kv.Key}: {kv.Value}"))} | {report.Undefined} | {report.ValidRefused} | {report.HealthyGenerations} | {report.HealthyIdentical} | {report.SharedSteps} |"));
            foreach (var problem in report.Problems)
            {
                Console.WriteLine($"- {problem}");
            }

            return report.Undefined == 0 && report.ValidRefused == 0 && report.HealthyIdentical == report.HealthyGenerations ? 0 : 1;
        });
        return command;
    }

    public static Command Fleet()
    {
        var replicas = new Option<int>("--replicas") { Description = "Verifier processes behind nginx.", DefaultValueFactory = _ => 3 };
        var edges = new Option<int>("--edges") { Description = "Edges running at once, through nginx only.", DefaultValueFactory = _ => 32 };
        var generations = new Option<int>("--generations") { Description = "Generations per edge, in rotating modes.", DefaultValueFactory = _ => 4 };
        var tokens = new Option<int>("--tokens") { Description = "New tokens per generation.", DefaultValueFactory = _ => 32 };
        var noPrometheus = new Option<bool>("--no-prometheus") { Description = "Run without Prometheus (the CI variant)." };
        var killAt = new Option<double>("--kill-at") { Description = "Seconds into the run when verifier 1 is SIGKILLed (back 2 s later).", DefaultValueFactory = _ => 1 };
        var termAt = new Option<double>("--term-at") { Description = "Seconds into the run when verifier 2 gets SIGTERM (drains, stays down).", DefaultValueFactory = _ => 4 };
        var output = new Option<string?>("--out") { Description = "Folder for nginx.conf, its access log, prometheus.yml and the Prometheus query answers." };
        var command = new Command("fleet", "Verifier processes behind nginx (gRPC, consistent hashing on the edge's session header), many edges in mixed modes, one verifier SIGKILLed and one drained with SIGTERM mid-run, Prometheus scraping: no failed generation, every output the target's.") { replicas, edges, generations, tokens, noPrometheus, killAt, termAt, output };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var (target, draft) = Pair();
            var report = await FleetRun.RunAsync(target, draft, new FleetOptions
            {
                Replicas = parse.GetValue(replicas),
                Edges = parse.GetValue(edges),
                GenerationsPerEdge = parse.GetValue(generations),
                Tokens = parse.GetValue(tokens),
                Prometheus = !parse.GetValue(noPrometheus),
                OutputDirectory = parse.GetValue(output),
                KillAt = TimeSpan.FromSeconds(parse.GetValue(killAt)),
                TerminateAt = TimeSpan.FromSeconds(parse.GetValue(termAt)),
            }, Console.Error, cancellationToken);
            Console.WriteLine("| generations | failed | identical to the target's | interrupted by a fault (resumed) | by mode | verifier calls per replica (nginx log) | seconds |");
            Console.WriteLine("|---|---|---|---|---|---|---|");
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {report.Generations} | {report.Failed} | {report.Identical} | {report.Interrupted} | {string.Join(", ", report.ModeCounts.OrderBy(kv => kv.Key).Select(kv => $"{kv.Key}: {kv.Value}"))} | {string.Join(", ", report.CallsPerReplica.Select(kv => $"{kv.Key}: {kv.Value}"))} | {report.Seconds:F0} |"));
            Console.WriteLine();
            foreach (var fault in report.Faults)
            {
                Console.WriteLine($"- fault: {fault}");
            }

            foreach (var (query, answer) in report.Queries)
            {
                Console.WriteLine($"- prometheus: {query}");
                Console.WriteLine($"  {answer}");
            }

            foreach (var error in report.Errors)
            {
                Console.WriteLine($"- error: {error}");
            }

            var spread = report.CallsPerReplica.Values.Count(v => v > 0);
            return report.Failed == 0 && report.Identical == report.Generations && spread == report.CallsPerReplica.Count ? 0 : 1;
        });
        return command;
    }

    private static (string Target, string Draft) Pair()
    {
        var pair = DefaultModels.Resolve();
        return (ModelResolver.Resolve(pair.Target, new ConversionOptions { Exits = pair.Exits }), ModelResolver.Resolve(pair.Draft));
    }
}
