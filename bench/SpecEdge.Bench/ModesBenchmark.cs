using System.CommandLine;
using System.Globalization;
using SpecEdge.Bench.Matrix;
using SpecEdge.CloudVerifier.Hosting;
using SpecEdge.Demo;
using SpecEdge.EdgeClient.Client;
using SpecEdge.EdgeClient.Link;
using SpecEdge.LinkEmulator;
using SpecEdge.Shared.Decoding;
using SpecEdge.Shared.Protocol;
using SpecEdge.Shared.Timing;

namespace SpecEdge.Bench;

/// <summary>
/// <c>modes</c>: ms per committed token of every mode, side by side in one run, through the link emulator at each round
/// trip, under a compute profile; with hit rates and the analytical expectation from the measured acceptance, hit rate
/// and times. Modes are interleaved prompt by prompt so they share the machine's noise.
/// </summary>
internal static class ModesBenchmark
{
    /// <summary>The first four of the offline analyses' prompts, in turn.</summary>
    private static readonly string[] Prompts = [.. OfflineRounds.Prompts.Take(4)];

    public static Command Create()
    {
        var rtts = new Option<string>("--rtt") { Description = "Link round trips in ms.", DefaultValueFactory = _ => "20,100" };
        var profile = new Option<string>("--profile") { Description = "Compute profile.", DefaultValueFactory = _ => ComputeProfiles.TenToOne.Name };
        var modes = new Option<string>("--modes") { Description = "Modes to compare; MODE@γ fixes γ for one entry (e.g. conditional@8), MODE@adaptive adapts it up to --max-draft-tokens; 'adaptive' alone is speculative@adaptive; a +kN suffix pre-drafts N candidates per early verdict (e.g. conditional+k3); a +tN suffix drafts token trees, N leaves beside each draft (e.g. conditional+t1; auto drafts trees of its own unless given +t0).", DefaultValueFactory = _ => "cloud,speculative,preemptive,conditional,proactive,adaptive" };
        var maxGamma = new Option<int>("--max-draft-tokens") { Description = "The largest γ adaptive entries may choose.", DefaultValueFactory = _ => 8 };
        var prompts = new Option<int>("--prompts") { Description = "Prompts per mode.", DefaultValueFactory = _ => 3 };
        var tokens = new Option<int>("--tokens") { Description = "New tokens per prompt.", DefaultValueFactory = _ => 48 };
        var gamma = new Option<int>("--draft-tokens") { Description = "γ.", DefaultValueFactory = _ => 4 };
        var threshold = new Option<float?>("--exit-threshold") { Description = "Exit threshold (default: the pair's models/calibration.json; else 0 for the synthetic pair, 0.5 for a trained one)." };
        var warmup = new Option<int>("--warmup") { Description = "Generations each entry runs before it is measured (its client's adaptive γ and auto policy learn from them; 0: every entry starts fresh).", DefaultValueFactory = _ => 0 };
        var reportsOut = new Option<string?>("--reports-out") { Description = "Also write every generation's full report (its rounds included), one JSON object per line, to this file." };
        var command = new Command("modes", "Every mode side by side through emulated links under a compute profile, with the analytical expectation.") { rtts, profile, modes, prompts, tokens, gamma, threshold, maxGamma, warmup, reportsOut };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var pair = DefaultModels.Resolve();
            var computeProfile = ComputeProfiles.Resolve(parse.GetValue(profile)!);
            var modeList = parse.GetValue(modes)!.Split(',', StringSplitOptions.TrimEntries);
            var entries = modeList.ToDictionary(m => m, m => ParseEntry(m, parse.GetValue(gamma)));
            Console.WriteLine($"models: {pair.Description}; compute: {computeProfile.Label}; γ = {parse.GetValue(gamma)}; {parse.GetValue(prompts)} prompts × {parse.GetValue(tokens)} tokens per mode, greedy{(parse.GetValue(warmup) > 0 ? $", after {parse.GetValue(warmup)} unmeasured warm-up generation(s) per entry" : string.Empty)}; one client per entry");
            var (app, address) = await VerifierHost.StartLoopbackAsync(pair.Target, o =>
            {
                o.ServePair(pair, parse.GetValue(threshold));
                o.IntraOpThreads = 1;
                o.ComputeProfile = computeProfile.IsEmulated ? parse.GetValue(profile) : null; // a built-in name or a file path, as given
            }, cancellationToken: cancellationToken);
            await using var _ = app;
            Console.WriteLine($"exit thresholds {VerifierHost.DescribeThresholds(app)}");
            await using var reportsFile = parse.GetValue(reportsOut) is { } path ? new StreamWriter(path) : null;
            foreach (var rtt in MatrixAxes.ParseDoubles(parse.GetValue(rtts)!, "--rtt"))
            {
                var link = LinkProfile.Parse(string.Create(CultureInfo.InvariantCulture, $"rtt={rtt}ms"));
                // One client per entry: what an entry's adaptive γ and auto policy learn stays within it, so entries
                // sharing a mode (conditional@adaptive and auto's drafting, chains and trees) do not teach each other.
                var clients = new Dictionary<string, SpecEdgeClient>();
                var results = modeList.ToDictionary(m => m, m => new List<GenerationReport>());
                try
                {
                    foreach (var mode in modeList)
                    {
                        clients[mode] = await SpecEdgeClient.ConnectAsync(EmulatedLink.Apply(new EdgeClientOptions { Server = address, DraftModel = pair.Draft, IntraOpThreads = 1, Profile = computeProfile }, link), cancellationToken: cancellationToken);
                    }

                    // Warm-up generations first (p < 0, unmeasured), on prompts from the end of the list.
                    for (var p = -parse.GetValue(warmup); p < parse.GetValue(prompts); p++)
                    {
                        foreach (var mode in modeList)
                        {
                            var entry = entries[mode];
                            var report = await clients[mode].Generate(new GenerationRequest
                            {
                                PromptText = p >= 0 ? Prompts[p % Prompts.Length] : Prompts[Prompts.Length - 1 - ((-p - 1) % Prompts.Length)],
                                Mode = entry.Kind,
                                AdaptiveDraftTokens = entry.Adaptive,
                                DraftTokens = entry.Adaptive ? parse.GetValue(maxGamma) : entry.Gamma,
                                Candidates = entry.Candidates,
                                Leaves = entry.Leaves,
                                MaxNewTokens = parse.GetValue(tokens),
                                Sampling = SamplingConfig.Greedy,
                                StopAtEos = false,
                            }).RunToEndAsync(cancellationToken);
                            if (p < 0)
                            {
                                continue;
                            }

                            results[mode].Add(report);
                            if (reportsFile is not null)
                            {
                                await reportsFile.WriteLineAsync(string.Create(CultureInfo.InvariantCulture, $"{{\"rtt_ms\": {rtt}, \"entry\": \"{mode}\", \"prompt\": {p}, \"report\": {report.ToJson().ReplaceLineEndings(" ")}}}"));
                            }

                            Console.Error.Write(".");
                        }
                    }
                }
                finally
                {
                    foreach (var client in clients.Values)
                    {
                        await client.DisposeAsync();
                    }
                }

                Console.Error.WriteLine();
                Print(rtt, results, entries, parse.GetValue(gamma), parse.GetValue(tokens), computeProfile);
                foreach (var (mode, reports) in results.Where(r => entries[r.Key].Candidates is > 1))
                {
                    // How often the final verdict was the exit's own or one of the alternatives it sent: the share of rounds pre-drafted for, timing aside.
                    var exits = reports.SelectMany(r => r.EarlyExits.PerExit).GroupBy(e => e.Layer).OrderBy(g => g.Key)
                        .Select(g => string.Create(CultureInfo.InvariantCulture, $"exit {g.Key}: {g.Sum(e => e.Verdicts)} verdicts, {g.Sum(e => e.Hits)} confirmed, {g.Sum(e => e.AlternativeHits)} more were one of its alternatives"));
                    Console.WriteLine();
                    Console.WriteLine($"{mode}: {string.Join("; ", exits)}.");
                }

                foreach (var (mode, reports) in results.Where(r => entries[r.Key].Mode == "auto"))
                {
                    Console.WriteLine();
                    Console.WriteLine($"{mode}: each generation's sessions and ms per token: {string.Join("; ", reports.Select(r => string.Create(CultureInfo.InvariantCulture, $"{string.Join(" → ", r.ModesUsed)} {r.LatencyMs.PerToken:F1}")))}.");
                }
            }

            return 0;
        });
        return command;
    }

    /// <summary>
    /// A --modes entry: MODE, MODE@γ or MODE@adaptive ("adaptive" alone: speculative, adapting), each optionally
    /// followed by +kN (N candidates pre-drafted per early verdict: multi-candidate pre-drafting) and +tN (token trees:
    /// N leaves beside each draft; +t0 a chain; without it, the mode's choice: trees for auto, chains otherwise).
    /// </summary>
    private static ModeEntry ParseEntry(string entry, int gamma)
    {
        int? candidates = null;
        int? leaves = null;
        var parts = entry.Split('+');
        foreach (var part in parts.Skip(1))
        {
            var valid = part.Length > 1 && int.TryParse(part.AsSpan(1), NumberStyles.Integer, CultureInfo.InvariantCulture, out var n) ? n : -1;
            switch (part.FirstOrDefault())
            {
                case 'k' when valid >= 1 && valid <= ProtocolLimits.MaxCandidates:
                    candidates = valid;
                    break;
                case 't' when valid >= 0 && valid <= ProtocolLimits.MaxLeafWidth:
                    leaves = valid;
                    break;
                default:
                    throw new FormatException($"--modes: '{entry}': +kN takes N from 1 to {ProtocolLimits.MaxCandidates}, +tN from 0 to {ProtocolLimits.MaxLeafWidth}");
            }
        }

        var head = parts[0];
        var at = head.IndexOf('@', StringComparison.Ordinal);
        var (mode, suffix) = head == "adaptive" ? ("speculative", "adaptive") : at < 0 ? (head, null) : (head[..at], head[(at + 1)..]);
        var kind = GenerationModes.Parse(mode) ?? throw new FormatException($"--modes: unknown mode '{entry}'");
        return suffix is null || suffix == "adaptive" ? new ModeEntry(mode, kind, gamma, suffix is not null, candidates, leaves)
            : int.TryParse(suffix, NumberStyles.Integer, CultureInfo.InvariantCulture, out var g) && g >= 1 ? new ModeEntry(mode, kind, g, false, candidates, leaves)
            : throw new FormatException($"--modes: '{entry}': γ must be a positive integer or 'adaptive'");
    }

    /// <summary>A parsed --modes entry.</summary>
    private sealed record ModeEntry(string Mode, GenerationMode Kind, int Gamma, bool Adaptive, int? Candidates, int? Leaves);

    private static void Print(double rtt, Dictionary<string, List<GenerationReport>> results, Dictionary<string, ModeEntry> entries, int gamma, int tokensPerPrompt, ComputeProfile profile)
    {
        // Shared measurements across modes: verification and first-stage time, transport overhead per round.
        // From plain speculative rounds (fixed γ): their drafting is all on the critical path, so it measures t_d.
        var spec = results.FirstOrDefault(kv => entries[kv.Key] is { Mode: "speculative", Adaptive: false, Leaves: null or 0 }).Value
            ?? results.Values.First(r => r.Any(x => x.DraftTokens > 0));
        var rounds = spec.SelectMany(r => r.PerRound).ToList();
        var verify = rounds.Average(r => r.VerifyMs);
        var firstStage = rounds.Average(r => r.StageMs.Count > 1 ? r.StageMs[0] : r.VerifyMs);
        var transport = rounds.Average(r => r.NetworkAndQueueMs);
        var draftPerToken = rounds.Where(r => r.Drafted > 0).Average(r => r.DraftMs / r.Drafted);
        var cloudRounds = results.TryGetValue("cloud", out var c) ? c.SelectMany(r => r.PerRound).ToList() : [];
        var cloudVerify = cloudRounds.Count > 0 ? cloudRounds.Average(r => r.VerifyMs) : verify;
        Console.WriteLine();
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"### Round trip {rtt} ms (emulated link), {profile.Label}"));
        Console.WriteLine();
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"Measured: verification V = {verify:F1} ms per round ({cloudVerify:F1} ms per cloud token), first exit stage V₁ = {firstStage:F1} ms, draft t_d = {draftPerToken:F2} ms/token, round time beyond verification (link + transport) = {transport:F1} ms."));
        Console.WriteLine();
        Console.WriteLine("| mode | ms/token | speed-up vs cloud | tokens/round | acceptance | early verdicts | hit rate | ready rounds | expected ms/token | measured vs expected |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|---|---|");
        var cloudMsPerToken = results.TryGetValue("cloud", out var cloud) ? cloud.Sum(r => r.LatencyMs.Total) / cloud.Sum(r => r.NewTokens) : double.NaN;
        foreach (var (mode, reports) in results)
        {
            var tokens = reports.Sum(r => r.NewTokens);
            var msPerToken = reports.Sum(r => r.LatencyMs.Total) / tokens;
            var roundCount = reports.Sum(r => r.Rounds);
            var drafted = reports.Sum(r => r.DraftTokens);
            var hits = reports.Sum(r => r.EarlyExits.Hits);
            var alternateHits = reports.Sum(r => r.EarlyExits.AlternateHits);
            var misses = reports.Sum(r => r.EarlyExits.Misses);
            var hitRate = hits + misses == 0 ? 0 : hits / (double)(hits + misses);
            var modeGamma = drafted == 0 ? gamma : drafted / (double)roundCount;
            var earlyMs = AnalyticalModel.EarlyVerdictMs(reports.SelectMany(r => r.PerRound), firstStage);
            // Conditional rounds that went ahead and held: every one sent and not dropped.
            var sentHits = reports.Sum(r => r.EarlyExits.ConditionalRoundsSent - r.EarlyExits.ConditionalRoundsDropped);
            var inputs = new ModelInputs(modeGamma, tokens / (double)roundCount, draftPerToken, transport, mode == "cloud" ? cloudVerify : verify, earlyMs, roundCount == 0 ? 0 : hits / (double)roundCount,
                roundCount == 0 ? null : sentHits / (double)roundCount, AnalyticalModel.BackingVerdictMs(reports.SelectMany(r => r.PerRound)));
            var modelMode = mode == "adaptive" ? "adaptive" : entries[mode].Mode;
            double expected;
            if (modelMode == "auto")
            {
                // Its drafting rounds with their own γ, tokens per round and hits; its cloud tokens at the cloud's V.
                var draftRounds = reports.SelectMany(r => r.PerRound).Where(r => r.Drafted > 0).ToList();
                var cloudTokens = reports.SelectMany(r => r.PerRound).Where(r => r.Drafted == 0).Sum(r => r.Committed);
                var draftInputs = draftRounds.Count == 0 ? inputs : inputs with
                {
                    Gamma = draftRounds.Average(r => r.Drafted),
                    TokensPerRound = draftRounds.Average(r => r.Committed),
                    HitRate = hits / (double)draftRounds.Count,
                    SentHitRate = sentHits / (double)draftRounds.Count,
                };
                expected = AnalyticalModel.AutoMsPerToken(draftInputs, draftRounds.Count, cloudTokens, cloudVerify, reports.Sum(r => r.ModesUsed.Count), tokens);
            }
            else
            {
                expected = AnalyticalModel.MsPerToken(modelMode, inputs, tokensPerPrompt);
            }

            var gap = (msPerToken - expected) / expected;
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"| {mode} | {msPerToken:F2} | {cloudMsPerToken / msPerToken:F2}x | {tokens / (double)roundCount:F2} | {(drafted == 0 ? "-" : (reports.Sum(r => r.AcceptedTokens) / (double)drafted).ToString("P0", CultureInfo.InvariantCulture))} | {reports.Sum(r => r.EarlyExits.EarlyVerdicts)} | {(hits + misses == 0 ? "-" : hitRate.ToString("P0", CultureInfo.InvariantCulture))}{(alternateHits > 0 ? $" ({alternateHits} alt.)" : string.Empty)} | {reports.Sum(r => r.EarlyExits.RoundsStartedWithoutWaiting)}/{roundCount} | {expected:F2} | {Math.Round(gap * 100):+0;-0;0}%{(Math.Abs(gap) > 0.10 ? " ⚠" : string.Empty)} |"));
        }
    }
}
