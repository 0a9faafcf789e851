using System.Diagnostics;
using System.Net;
using SpecEdge.EdgeClient.Client;
using SpecEdge.LinkEmulator;

namespace SpecEdge.Bench.Reliability;

/// <summary>One injected fault: what, when in the generation, and whether it interrupted the generation.</summary>
internal sealed record InjectedFault(string Kind, string Phase, string Mode, string Batching, bool Interrupted);

/// <summary>What a soak run did and found.</summary>
internal sealed record SoakReport
{
    public required int Generations { get; init; }

    public required int Identical { get; init; }

    /// <summary>Every fault injected.</summary>
    public int Faults => FaultList.Count;

    /// <summary>Faults that interrupted a generation in flight: its session broke or timed out and it opened another.</summary>
    public int FaultsInterrupting => FaultList.Count(f => f.Interrupted);

    /// <summary>Aims abandoned: the aimed-at phase did not come before the generation ended.</summary>
    public required int MissedAims { get; init; }

    public required IReadOnlyList<InjectedFault> FaultList { get; init; }

    /// <summary>Faults by kind (every kind listed, with 0 when none was injected).</summary>
    public IReadOnlyDictionary<string, int> FaultsByKind => FaultSoak.Kinds.ToDictionary(k => k, k => FaultList.Count(f => f.Kind == k));

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

    /// <summary>Interrupting faults counted by one of their fields.</summary>
    public IReadOnlyDictionary<string, int> InterruptingBy(Func<InjectedFault, string> key) =>
        FaultList.Where(f => f.Interrupted).GroupBy(key).OrderBy(g => g.Key, StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.Count());
}

/// <summary>
/// Fault injection with real processes, aimed at generations in flight: two verifier processes (one batching, one not)
/// behind link relays, emulating a GPU's verification times (the paper-nano-a100 profile) so each phase of a round
/// lasts long enough to aim at. Generations run one after another in every mode; the injector waits for the running
/// generation to reach a chosen phase — the verifier prefilling, a round in flight, between an early and a final
/// verdict, a conditional round in flight, cloud tokens streaming — and then kills its verifier with SIGKILL
/// (restarting it), drops its connections, or stalls its link past the round deadline. A fault counts as interrupting
/// when the generation had to open another session after it. Every output is compared token by token with the target's
/// own greedy output.
/// </summary>
internal static class FaultSoak
{
    private static readonly GenerationMode[] Modes = [GenerationMode.Speculative, GenerationMode.Preemptive, GenerationMode.Conditional, GenerationMode.Proactive, GenerationMode.Cloud, GenerationMode.Auto];

    internal static readonly string[] Kinds = ["kill -9 + restart", "drop connections", "stall link 1.5-3 s"];

    /// <summary>The phases each mode passes through with its verifier, the rarer first (the first aims of a short run go there).</summary>
    private static GenerationPhase[] PhasesOf(GenerationMode mode) => mode switch
    {
        GenerationMode.Cloud => [GenerationPhase.Streaming, GenerationPhase.Prefill],
        GenerationMode.Conditional => [GenerationPhase.ConditionalInFlight, GenerationPhase.BetweenEarlyAndFinal, GenerationPhase.MidRound, GenerationPhase.Prefill],
        GenerationMode.Auto => [GenerationPhase.ConditionalInFlight, GenerationPhase.BetweenEarlyAndFinal, GenerationPhase.MidRound, GenerationPhase.Prefill],
        GenerationMode.Preemptive => [GenerationPhase.BetweenEarlyAndFinal, GenerationPhase.MidRound, GenerationPhase.Prefill],
        _ => [GenerationPhase.MidRound, GenerationPhase.Prefill],
    };

    // minFaults: keep going until this many faults interrupted a generation in flight.
    public static async Task<SoakReport> RunAsync(string targetDir, string draftDir, int minFaults, int tokens, int seed, TextWriter log, CancellationToken cancellationToken)
    {
        var random = new Random(seed);
        var prompts = ReferenceOutputs.Prompts(random, 6);
        var expected = ReferenceOutputs.Greedy(targetDir, prompts, tokens);

        string[] emulateGpu = ["--profile", "paper-nano-a100"];
        await using var a = new VerifierProcess(targetDir, VerifierProcess.FreePort(), emulateGpu);
        await using var b = new VerifierProcess(targetDir, VerifierProcess.FreePort(), [.. emulateGpu, "--Verifier:Batching:Enabled=false"]);
        await Task.WhenAll(a.StartAsync(cancellationToken), b.StartAsync(cancellationToken));
        await using var relayA = LinkRelay.Start(new IPEndPoint(IPAddress.Loopback, a.Port), LinkProfile.Ideal);
        await using var relayB = LinkRelay.Start(new IPEndPoint(IPAddress.Loopback, b.Port), LinkProfile.Ideal);
        var processes = new[] { a, b };
        var relays = new[] { relayA, relayB };
        var batching = new[] { "batching on", "batching off" };

        var faults = new List<InjectedFault>();
        var restarts = new List<Task>();
        var missedAims = 0;
        var aims = new Dictionary<GenerationMode, int>();
        var watch = Stopwatch.StartNew();
        int generations = 0, identical = 0, sessions = 0, retries = 0, interrupted = 0;
        long committed = 0, lost = 0, duplicated = 0, wrong = 0;
        var errors = new List<string>();
        while (faults.Count(f => f.Interrupted) < minFaults && !cancellationToken.IsCancellationRequested)
        {
            var p = generations % prompts.Count;
            var mode = Modes[generations % Modes.Length];
            var output = new List<int>();
            // A fresh edge per generation, preferring each verifier in turn, so faults land on both (an edge stays on
            // whichever verifier it last failed over to).
            await using var client = generations % 2 == 0 ? await Connect(relayA.HttpAddress, relayB.HttpAddress) : await Connect(relayB.HttpAddress, relayA.HttpAddress);
            var generation = client.Generate(new GenerationRequest { PromptIds = prompts[p], Mode = mode, MaxNewTokens = tokens, DraftTokens = 3, StopAtEos = false });
            using var ended = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            var injector = Task.Run(() => AimAsync(generation, mode, ended.Token), CancellationToken.None);
            try
            {
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

            await ended.CancelAsync();
            var landed = await injector;
            faults.AddRange(landed);
            generations++;
            committed += output.Count;
            lost += Math.Max(0, expected[p].Count - output.Count);
            duplicated += Math.Max(0, output.Count - expected[p].Count);
            wrong += output.Zip(expected[p]).Count(x => x.First != x.Second);
            if (output.SequenceEqual(expected[p]))
            {
                identical++;
            }

            log.WriteLine($"[soak] generation {generations} ({mode}): {(output.SequenceEqual(expected[p]) ? "identical" : "DIFFERS")}; faults {string.Join(", ", landed.Select(f => $"{f.Kind} at {f.Phase}{(f.Interrupted ? "" : " (did not interrupt)")}"))}; {faults.Count(f => f.Interrupted)} interrupting so far");
        }

        await Task.WhenAll(restarts);

        return new SoakReport
        {
            Generations = generations,
            Identical = identical,
            MissedAims = missedAims,
            FaultList = faults,
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

        Task<SpecEdgeClient> Connect(Uri primary, Uri fallback) => SpecEdgeClient.ConnectAsync(new EdgeClientOptions
        {
            Server = primary,
            FallbackServers = [fallback],
            DraftModel = draftDir,
            IntraOpThreads = 1,
            RoundTimeout = TimeSpan.FromSeconds(1),
            MaxRetries = 40,
            RetryDelay = TimeSpan.FromMilliseconds(50),
            BreakDuration = TimeSpan.FromSeconds(1),
        }, cancellationToken: cancellationToken);

        // Aims up to two faults at one generation: waits for a phase (rotating through the mode's), injects a fault into
        // the verifier or link its session is on, then waits for the generation to reopen and commit again before the
        // next, so each fault meets a generation in flight rather than one still recovering.
        async Task<List<InjectedFault>> AimAsync(Generation generation, GenerationMode mode, CancellationToken ended)
        {
            var landed = new List<InjectedFault>();
            var phases = PhasesOf(mode);
            try
            {
                while (!ended.IsCancellationRequested && landed.Count < 2)
                {
                    var tracker = generation.Tracker;
                    if (tracker is null)
                    {
                        await Task.Delay(1, ended);
                        continue;
                    }

                    var aim = aims.GetValueOrDefault(mode);
                    var phase = phases[aim % phases.Length];
                    var deadline = Stopwatch.StartNew();
                    while (tracker.Phase != phase && deadline.Elapsed < TimeSpan.FromSeconds(1))
                    {
                        await Task.Delay(1, ended);
                    }

                    aims[mode] = aim + 1;
                    if (tracker.Phase != phase)
                    {
                        missedAims++;
                        continue;
                    }

                    var which = tracker.CurrentVerifier == relayB.HttpAddress.ToString() ? 1 : 0;
                    var (sessionsBefore, retriesBefore) = (tracker.Sessions, tracker.Retries);
                    var kind = Kinds[random.Next(Kinds.Length)];
                    if (kind == Kinds[0] && !processes[which].Ready)
                    {
                        kind = Kinds[1];
                    }

                    switch (Array.IndexOf(Kinds, kind))
                    {
                        case 0:
                            var process = processes[which];
                            process.Kill();
                            // Drawn here: Random is not thread-safe, and one draw order keeps a seed's run repeatable.
                            var restartDelay = random.Next(200, 1200);
                            restarts.Add(Task.Run(async () =>
                            {
                                await Task.Delay(restartDelay, CancellationToken.None);
                                await process.StartAsync(CancellationToken.None);
                            }));

                            break;
                        case 1:
                            relays[which].DropConnections();
                            break;
                        default:
                            relays[which].Stall(TimeSpan.FromMilliseconds(random.Next(1500, 3000)));
                            break;
                    }

                    // The fault interrupted the generation if it opened another session (or retried) afterwards.
                    var settle = Stopwatch.StartNew();
                    while (tracker.Sessions == sessionsBefore && tracker.Retries == retriesBefore && settle.Elapsed < TimeSpan.FromSeconds(10) && !ended.IsCancellationRequested)
                    {
                        await Task.Delay(2, CancellationToken.None);
                    }

                    landed.Add(new InjectedFault(kind, phase.ToString(), mode.Name(), batching[which], tracker.Sessions > sessionsBefore || tracker.Retries > retriesBefore));
                    var generated = tracker.Generated;
                    while (tracker.Generated == generated && !ended.IsCancellationRequested)
                    {
                        await Task.Delay(2, ended);
                    }
                }
            }
            catch (OperationCanceledException)
            {
                // The generation ended.
            }

            return landed;
        }
    }
}
