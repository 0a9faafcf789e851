using System.CommandLine;
using System.Globalization;
using SpecEdge.CloudVerifier.Hosting;
using SpecEdge.EdgeClient.Client;
using SpecEdge.Shared.Decoding;
using SpecEdge.Shared.Models.Synthetic;
using SpecEdge.Shared.Tokenization;

namespace SpecEdge.Bench;

/// <summary>
/// <c>overhead</c>: the verifier's own overhead per round on loopback: the round time the client sees (draft sent to
/// final verdict) minus the model's run time the verifier reports (no emulated link, no compute floors). What remains is
/// serialization, HTTP/2, scheduling and validation on both sides.
/// </summary>
internal static class OverheadBenchmark
{
    public static Command Create()
    {
        var rounds = new Option<int>("--tokens") { Description = "New tokens per generation.", DefaultValueFactory = _ => 200 };
        var generations = new Option<int>("--generations") { Description = "Generations to run.", DefaultValueFactory = _ => 5 };
        var command = new Command("overhead", "The verifier's per-round overhead on loopback (client round time minus model run time).") { rounds, generations };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var spec = new SyntheticModelSpec { Layers = 2, Hidden = 128, Heads = 4, KvHeads = 2, Intermediate = 256, Vocab = 1024, Seed = 301, MaxPositions = 1024, LayerOutputScale = 0.15 };
            var target = BenchModels.Converted("overhead-target", spec);
            var draft = BenchModels.Converted("overhead-draft", spec with { Layers = 1 });
            var (app, address) = await VerifierHost.StartLoopbackAsync(target, o => o.IntraOpThreads = 1, cancellationToken: cancellationToken);
            await using var _ = app;
            await using var client = await SpecEdgeClient.ConnectAsync(new EdgeClientOptions { Server = address, DraftModel = draft, IntraOpThreads = 1 }, cancellationToken: cancellationToken);
            var overhead = new List<double>();
            var wait = new List<double>();
            var verify = new List<double>();
            for (var g = 0; g < parse.GetValue(generations) + 1; g++)
            {
                var report = await client.Generate(new GenerationRequest
                {
                    PromptIds = [new TokenId(1), new TokenId(2), new TokenId(3)],
                    MaxNewTokens = parse.GetValue(rounds),
                    DraftTokens = 4,
                    Sampling = SamplingConfig.Greedy,
                    StopAtEos = false,
                }).RunToEndAsync(cancellationToken);
                if (g == 0)
                {
                    continue; // warm-up
                }

                foreach (var round in report.PerRound.Skip(1))
                {
                    overhead.Add(round.NetworkAndQueueMs);
                    wait.Add(round.NetworkAndQueueMs + round.VerifyMs);
                    verify.Add(round.VerifyMs);
                }
            }

            Console.WriteLine("| rounds | round time seen by the client, median ms | model run time, median ms | overhead (round − run), median ms | overhead p90 ms |");
            Console.WriteLine("|---|---|---|---|---|");
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {overhead.Count} | {Stats.Median(wait):F3} | {Stats.Median(verify):F3} | {Stats.Median(overhead):F3} | {Stats.Percentile(overhead, 0.9):F3} |"));
            return 0;
        });
        return command;
    }
}
