using System.Diagnostics;
using System.Net;
using SpecEdge.EdgeClient.Client;
using SpecEdge.LinkEmulator;
using SpecEdge.Shared.Runtime;
using SpecEdge.Shared.Tokenization;

namespace SpecEdge.Bench.Reliability;

/// <summary>What a soak run did and found.</summary>
internal sealed record SoakReport
{
    public required int Generations { get; init; }

    public required int Identical { get; init; }

    public required int Faults { get; init; }

    public required IReadOnlyDictionary<string, int> FaultsByKind { get; init; }

    public required long TokensCommitted { get; init; }

    public required long TokensLost { get; init; }

    public required long TokensDuplicated { get; init; }

    public required long TokensWrong { get; init; }

    public required int SessionsOpened { get; init; }

    public required int Retries { get; init; }

    /// <summary>Generations a fault interrupted (they needed more than one session).</summary>
    public required int Interrupted { get; init; }

    public required double Seconds { get; init; }

    public required IReadOnlyList<string> Errors { get; init; }
}

/// <summary>
/// Fault injection with real processes: two verifier processes behind link relays; generations run one after another in
/// every mode while an injector kills a verifier with SIGKILL (restarting it), drops every connection, or stalls a link
/// past the round deadline. Every generation's output is compared token by token with the fault-free output, computed
/// locally from the target model.
/// </summary>
internal static class FaultSoak
{
    private static readonly GenerationMode[] Modes = [GenerationMode.Speculative, GenerationMode.Preemptive, GenerationMode.Conditional, GenerationMode.Proactive, GenerationMode.Cloud];

    public static async Task<SoakReport> RunAsync(string targetDir, string draftDir, int minFaults, int tokens, int seed, TextWriter log, CancellationToken cancellationToken)
    {
        var random = new Random(seed);
        var prompts = Enumerable.Range(0, 6).Select(p => new[] { 256 }.Concat(Enumerable.Range(0, 3 + p).Select(_ => random.Next(32, 127))).Select(t => new TokenId(t)).ToArray()).ToList();
        var expected = prompts.Select(p => LocalGreedy(targetDir, p, tokens)).ToList();

        await using var a = new VerifierProcess(targetDir, VerifierProcess.FreePort());
        await using var b = new VerifierProcess(targetDir, VerifierProcess.FreePort());
        await Task.WhenAll(a.StartAsync(cancellationToken), b.StartAsync(cancellationToken));
        await using var relayA = LinkRelay.Start(new IPEndPoint(IPAddress.Loopback, a.Port), LinkProfile.Ideal);
        await using var relayB = LinkRelay.Start(new IPEndPoint(IPAddress.Loopback, b.Port), LinkProfile.Ideal);
        var processes = new[] { a, b };
        var relays = new[] { relayA, relayB };

        await using var client = await SpecEdgeClient.ConnectAsync(new EdgeClientOptions
        {
            Server = relayA.HttpAddress,
            FallbackServers = [relayB.HttpAddress],
            DraftModel = draftDir,
            IntraOpThreads = 1,
            RoundTimeout = TimeSpan.FromSeconds(1),
            MaxRetries = 40,
            RetryDelay = TimeSpan.FromMilliseconds(50),
            BreakDuration = TimeSpan.FromSeconds(1),
        }, cancellationToken: cancellationToken);

        var faults = new Dictionary<string, int> { ["kill -9 + restart"] = 0, ["drop connections"] = 0, ["stall link 1.5-3 s"] = 0 };
        var faultCount = 0;
        using var stopInjecting = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var injector = Task.Run(async () =>
        {
            var restarts = new List<Task>();
            while (!stopInjecting.IsCancellationRequested)
            {
                try
                {
                    await Task.Delay(random.Next(150, 700), stopInjecting.Token);
                }
                catch (OperationCanceledException)
                {
                    break;
                }

                var which = random.Next(2);
                string kind;
                switch (random.Next(10))
                {
                    case < 3:
                        if (!processes[which].Ready)
                        {
                            continue;
                        }

                        processes[which].Kill();
                        var process = processes[which];
                        restarts.Add(Task.Run(async () =>
                        {
                            await Task.Delay(random.Next(200, 1200), CancellationToken.None);
                            await process.StartAsync(CancellationToken.None);
                        }));
                        kind = "kill -9 + restart";
                        break;
                    case < 7:
                        relays[which].DropConnections();
                        kind = "drop connections";
                        break;
                    default:
                        relays[which].Stall(TimeSpan.FromMilliseconds(random.Next(1500, 3000)));
                        kind = "stall link 1.5-3 s";
                        break;
                }

                lock (faults)
                {
                    faults[kind]++;
                    faultCount++;
                }
            }

            await Task.WhenAll(restarts);
        }, CancellationToken.None);

        var watch = Stopwatch.StartNew();
        int generations = 0, identical = 0, sessions = 0, retries = 0, interrupted = 0;
        long committed = 0, lost = 0, duplicated = 0, wrong = 0;
        var errors = new List<string>();
        try
        {
            while (Volatile.Read(ref faultCount) < minFaults && !cancellationToken.IsCancellationRequested)
            {
                var p = generations % prompts.Count;
                var mode = Modes[generations % Modes.Length];
                var output = new List<int>();
                try
                {
                    var generation = client.Generate(new GenerationRequest { PromptIds = prompts[p], Mode = mode, MaxNewTokens = tokens, DraftTokens = 3, StopAtEos = false });
                    await foreach (var token in generation.WithCancellation(cancellationToken))
                    {
                        output.Add(token.Id.Value);
                    }

                    sessions += generation.Report!.Resilience.Sessions;
                    retries += generation.Report.Resilience.Retries;
                    interrupted += generation.Report.Resilience.Sessions > 1 ? 1 : 0;
                }
                catch (Exception ex) when (ex is not OperationCanceledException)
                {
                    errors.Add($"{mode} prompt {p}: {ex.Message.Split('\n')[0]}");
                }

                generations++;
                committed += output.Count;
                lost += Math.Max(0, expected[p].Count - output.Count);
                duplicated += Math.Max(0, output.Count - expected[p].Count);
                wrong += output.Zip(expected[p]).Count(x => x.First != x.Second);
                if (output.SequenceEqual(expected[p]))
                {
                    identical++;
                }

                log.WriteLine($"[soak] generation {generations} ({mode}): {(output.SequenceEqual(expected[p]) ? "identical" : "DIFFERS")}, {Volatile.Read(ref faultCount)} faults so far");
            }
        }
        finally
        {
            await stopInjecting.CancelAsync();
            await injector;
        }

        return new SoakReport
        {
            Generations = generations,
            Identical = identical,
            Faults = faultCount,
            FaultsByKind = faults,
            TokensCommitted = committed,
            TokensLost = lost,
            TokensDuplicated = duplicated,
            TokensWrong = wrong,
            SessionsOpened = sessions,
            Retries = retries,
            Interrupted = interrupted,
            Seconds = watch.Elapsed.TotalSeconds,
            Errors = errors,
        };
    }

    private static List<int> LocalGreedy(string targetDir, TokenId[] prompt, int count)
    {
        using var model = LanguageModel.Load(targetDir, new RuntimeOptions { IntraOpThreads = 1 });
        return TargetOnlyDecoding.Greedy(model, prompt, count).Select(t => t.Value).ToList();
    }
}
