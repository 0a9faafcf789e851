using System.Collections.Concurrent;
using System.Globalization;
using Microsoft.Extensions.DependencyInjection;
using SpecEdge.CloudVerifier.Scheduling;
using SpecEdge.EdgeClient.Client;
using SpecEdge.Shared.Decoding;
using SpecEdge.Shared.Runtime;
using SpecEdge.Shared.Tokenization;
using SpecEdge.TestUtilities;

namespace SpecEdge.EndToEnd.Tests;

/// <summary>
/// Batching changes nobody's output: 16 edges at once, mixing every mode (cloud Generate included), draft lengths, token trees and
/// prompts of 1 to 70 tokens (the longer ones prefilled in chunks between other sessions' rounds), starting at staggered
/// times, each get exactly the target-only greedy decoding of their prompt.
/// </summary>
/// <remarks>
/// CI runs <see cref="DefaultCombinations"/> combinations; <c>SPECEDGE_BATCH_COMBINATIONS=240</c> runs the long proof
/// (docs/benchmarks.md, Batching).
/// </remarks>
public sealed class BatchedExactnessTests(ByteVocabularyVerifier verifier) : IClassFixture<ByteVocabularyVerifier>
{
    private const int DefaultCombinations = 64;
    private const int Clients = 16;
    private const int NewTokens = 16;
    private static readonly GenerationMode[] Modes = [GenerationMode.Cloud, GenerationMode.Speculative, GenerationMode.Preemptive, GenerationMode.Conditional, GenerationMode.Proactive];
    private static readonly int[] Gammas = [1, 2, 4, 8];

    [Fact]
    public async Task SixteenConcurrentEdges_EveryModeAndPromptLength_IdenticalToTargetOnly()
    {
        var combinations = int.TryParse(Environment.GetEnvironmentVariable("SPECEDGE_BATCH_COMBINATIONS"), NumberStyles.Integer, CultureInfo.InvariantCulture, out var n) && n > 0 ? n : DefaultCombinations;
        var random = new Random(77);
        var work = new ConcurrentQueue<(int Index, int[] Prompt, GenerationMode Mode, int Gamma, int Leaves)>();
        for (var i = 0; i < combinations; i++)
        {
            var length = i % 5 == 4 ? 33 + random.Next(38) : 1 + random.Next(20);
            int[] prompt = [256, .. Enumerable.Range(0, length - 1).Select(_ => random.Next(32, 127))];
            // Every third combination drafts token trees, so tree rows share steps with chains and prefills (padded to
            // the longest row), and taken leaves move cache entries of slots the batch rearranges.
            work.Enqueue((i, prompt, Modes[i % Modes.Length], Gammas[(i / Modes.Length) % Gammas.Length], i % 3 == 1 ? 1 + (i % 4) : 0));
        }

        var expected = work.ToDictionary(w => w.Index, w => LocalGreedy(w.Prompt));
        var scheduler = verifier.App.Services.GetRequiredService<BatchScheduler>();
        var before = scheduler.Counters;
        var failures = new ConcurrentBag<string>();
        var modesSeen = new ConcurrentDictionary<GenerationMode, int>();
        var leavesTaken = 0;

        await Task.WhenAll(Enumerable.Range(0, Clients).Select(c => Task.Run(async () =>
        {
            await using var client = await verifier.ConnectAsync();
            var stagger = new Random(c);
            while (work.TryDequeue(out var item))
            {
                await Task.Delay(stagger.Next(0, 15));
                var report = await client.Generate(new GenerationRequest
                {
                    PromptIds = [.. item.Prompt.Select(t => new TokenId(t))],
                    Mode = item.Mode,
                    DraftTokens = item.Gamma,
                    AdaptiveDraftTokens = item.Index % 7 == 3,
                    Leaves = item.Leaves,
                    MaxNewTokens = NewTokens,
                    Sampling = SamplingConfig.Greedy,
                }).RunToEndAsync().WaitAsync(TimeSpan.FromSeconds(60));
                modesSeen.AddOrUpdate(item.Mode, 1, (_, v) => v + 1);
                Interlocked.Add(ref leavesTaken, TreeRounds.LeavesTaken(report));
                if (!report.TokenIds.SequenceEqual(expected[item.Index]))
                {
                    failures.Add($"combination {item.Index} ({item.Mode}, γ={item.Gamma}, leaves {item.Leaves}, prompt of {item.Prompt.Length}): got [{string.Join(",", report.TokenIds)}], want [{string.Join(",", expected[item.Index])}]");
                }
            }
        }))).WaitAsync(TimeSpan.FromMinutes(5));

        Assert.Empty(failures);
        Assert.Equal(Modes.Length, modesSeen.Count);
        Assert.True(leavesTaken > 0, "no round took a leaf");

        // The proof is only as good as the batching it saw: steps must really have served several sessions at once.
        var after = scheduler.Counters;
        var meanRows = (after.Rows - before.Rows) / (double)(after.Steps - before.Steps);
        Assert.True(meanRows > 1.5, $"mean rows per step {meanRows:F2}: the sessions did not share steps");
    }

    private IReadOnlyList<int> LocalGreedy(int[] prompt)
    {
        using var model = TestModels.Load(verifier.Pair.TargetDir);
        return TargetOnlyDecoding.Greedy(model, [.. prompt.Select(t => new TokenId(t))], NewTokens, stopAtEos: true).Select(t => t.Value).ToList();
    }
}
