using SpecEdge.EdgeClient.Client;
using SpecEdge.EdgeClient.Link;
using SpecEdge.LinkEmulator;
using SpecEdge.Shared.Decoding;
using SpecEdge.Shared.Runtime;
using SpecEdge.Shared.Timing;
using SpecEdge.Shared.Tokenization;
using SpecEdge.TestUtilities;

namespace SpecEdge.EndToEnd.Tests;

/// <summary>
/// Greedy output of every speculative mode is the target's, token by token: identical to cloud autoregressive decoding
/// and to local target-only decoding, over 20 prompts × γ ∈ {1, 2, 4, 8}, with and without an emulated link. Exits
/// send every provisional verdict (threshold 0), so many are wrong and the two exits often disagree.
/// </summary>
public sealed class GreedyExactnessTests(ByteVocabularyVerifier verifier) : IClassFixture<ByteVocabularyVerifier>
{
    private const int NewTokens = 20;
    private const string Link = "rtt=2ms,jitter=1ms,bw=50mbit";
    private static readonly IReadOnlyList<int[]> Prompts = MakePrompts(20);
    private static readonly Dictionary<int, IReadOnlyList<int>> LocalCache = [];

    public static TheoryData<int, bool> GammaAndLink() => new()
    {
        { 1, false }, { 2, false }, { 4, false }, { 8, false },
        { 1, true }, { 2, true }, { 4, true }, { 8, true },
    };

    public static TheoryData<GenerationMode, bool> Modes() => new()
    {
        { GenerationMode.Preemptive, false },
        { GenerationMode.Conditional, false },
        { GenerationMode.Proactive, false },
        { GenerationMode.Speculative, true },
        { GenerationMode.Conditional, true },
        { GenerationMode.Proactive, true },
    };

    [Theory]
    [MemberData(nameof(GammaAndLink))]
    public async Task Speculative_GreedyOutput_IdenticalToCloudAndLocalTarget(int gamma, bool withLink)
    {
        await using var client = await verifier.ConnectAsync(withLink ? LinkProfile.Parse(Link) : null);
        var accepted = 0;
        var drafted = 0;
        for (var p = 0; p < Prompts.Count; p++)
        {
            var local = LocalGreedy(p);
            var cloud = await RunAsync(client, p, GenerationMode.Cloud, gamma);
            var speculative = await RunAsync(client, p, GenerationMode.Speculative, gamma);

            Assert.Equal(local, cloud.TokenIds);
            Assert.Equal(local, speculative.TokenIds);
            accepted += speculative.AcceptedTokens;
            drafted += speculative.DraftTokens;
        }

        // The pair must exercise both acceptance and rejection, or the test would prove little.
        Assert.InRange(accepted / (double)drafted, 0.05, 0.95);
    }

    [Theory]
    [MemberData(nameof(Modes))]
    public async Task EveryMode_GreedyOutput_IdenticalToCloud(GenerationMode mode, bool adaptive)
    {
        await using var client = await verifier.ConnectAsync();
        var misses = 0;
        var hits = 0;
        foreach (var gamma in new[] { 1, 2, 4, 8 })
        {
            for (var p = 0; p < Prompts.Count; p++)
            {
                var report = await RunAsync(client, p, mode, gamma, adaptive);

                Assert.Equal(LocalGreedy(p), report.TokenIds);
                misses += report.EarlyExits.Misses;
                hits += report.EarlyExits.Hits;
            }
        }

        if (mode != GenerationMode.Speculative)
        {
            // Forced misses: with every provisional verdict sent, pre-drafting is often wrong, and right at other times.
            Assert.True(misses > 0, $"{mode}: no pre-drafted round was ever wrong");
            Assert.True(hits > 0, $"{mode}: no pre-drafted round was ever right");
        }
    }

    /// <summary>
    /// Token trees: beside each draft, the draft's next one or two most likely tokens as leaves, scored by the verifier
    /// in the same step with tree attention. The output stays the target's, and leaves are really taken (a round that
    /// commits two tokens past its accepted drafts took one), so the kept leaf's cache is what later rounds read.
    /// </summary>
    [Theory]
    [InlineData(GenerationMode.Speculative, 1)]
    [InlineData(GenerationMode.Speculative, 2)]
    [InlineData(GenerationMode.Conditional, 1)]
    [InlineData(GenerationMode.Preemptive, 2)]
    [InlineData(GenerationMode.Proactive, 1)]
    public async Task Trees_GreedyOutput_IdenticalToTarget(GenerationMode mode, int leaves)
    {
        await using var client = await verifier.ConnectAsync();
        var taken = 0;
        foreach (var gamma in new[] { 2, 4 })
        {
            for (var p = 0; p < Prompts.Count; p++)
            {
                var report = await RunAsync(client, p, mode, gamma, leaves: leaves);

                Assert.Equal(LocalGreedy(p), report.TokenIds);
                taken += TreeRounds.LeavesTaken(report);
            }
        }

        Assert.True(taken > 0, $"{mode}: no round took a leaf");
    }

    [Fact]
    public async Task Preemptive_TwoExits_EarlyVerdictsFromBothExits()
    {
        await using var client = await verifier.ConnectAsync();

        var report = await RunAsync(client, 0, GenerationMode.Preemptive, 4);

        Assert.Equal([1, 2], report.EarlyExits.PerExit.Select(e => e.Layer));
        Assert.All(report.EarlyExits.PerExit, e => Assert.Equal(report.Rounds, e.Verdicts));
    }

    private static async Task<GenerationReport> RunAsync(SpecEdgeClient client, int prompt, GenerationMode mode, int gamma, bool adaptive = false, int leaves = 0) =>
        await client.Generate(new GenerationRequest
        {
            Leaves = leaves,
            PromptIds = Prompts[prompt].Select(t => new TokenId(t)).ToList(),
            Mode = mode,
            DraftTokens = gamma,
            AdaptiveDraftTokens = adaptive,
            MaxNewTokens = NewTokens,
            Sampling = SamplingConfig.Greedy,
        }).RunToEndAsync().DefaultTimeout();

    private IReadOnlyList<int> LocalGreedy(int prompt)
    {
        lock (LocalCache)
        {
            if (LocalCache.TryGetValue(prompt, out var cached))
            {
                return cached;
            }
        }

        using var model = TestModels.Load(verifier.Pair.TargetDir);
        var result = TargetOnlyDecoding.Greedy(model, [.. Prompts[prompt].Select(t => new TokenId(t))], NewTokens, stopAtEos: true).Select(t => t.Value).ToList();

        lock (LocalCache)
        {
            LocalCache[prompt] = result;
        }

        return result;
    }

    private static List<int[]> MakePrompts(int count)
    {
        var random = new Random(1234);
        return Enumerable.Range(0, count)
            .Select(i => new[] { 256 }.Concat(Enumerable.Range(0, 2 + random.Next(14)).Select(_ => random.Next(32, 127))).ToArray())
            .ToList();
    }
}

/// <summary>The byte-vocabulary pair behind a verifier that emulates a slow GPU step (ratio-10x: 50 ms, a quarter to the first exit).</summary>
public sealed class SlowStepVerifier : KestrelVerifier
{
    protected override TestPair CreatePair(string root) => TestModels.WritePair(root, exits: [1, 2]);

    protected override void Configure(SpecEdge.CloudVerifier.Configuration.VerifierOptions options) => options.ComputeProfile = ComputeProfiles.TenToOne.Name;
}

/// <summary>
/// Greedy exactness where timing matters: every drafting mode, fixed and adaptive γ, over a 20 ms link with 10 ms of
/// jitter to a verifier whose steps take 50 ms, so early verdicts come well before final ones and conditional rounds
/// really travel ahead (asserted: some were used as sent, some dropped).
/// </summary>
public sealed class JitteredLinkExactnessTests(SlowStepVerifier verifier) : IClassFixture<SlowStepVerifier>
{
    private const int NewTokens = 16;
    private static readonly int[] Prompt = [256, 84, 104, 101, 32];

    public static TheoryData<GenerationMode, bool> Modes() => new()
    {
        { GenerationMode.Speculative, false },
        { GenerationMode.Speculative, true },
        { GenerationMode.Preemptive, false },
        { GenerationMode.Preemptive, true },
        { GenerationMode.Conditional, false },
        { GenerationMode.Conditional, true },
        { GenerationMode.Proactive, false },
        { GenerationMode.Proactive, true },
    };

    [Theory]
    [MemberData(nameof(Modes))]
    public async Task EveryMode_JitteredLinkAndSlowSteps_IdenticalToTargetOnly(GenerationMode mode, bool adaptive)
    {
        var (expected, report) = await GenerateAsync(mode, adaptive, candidates: 1);

        Assert.Equal(expected, report.TokenIds);
        if (mode == GenerationMode.Conditional)
        {
            Assert.True(report.EarlyExits.ConditionalRoundsSent > 0, "no conditional round travelled ahead of its predecessor's final verdict");
        }
    }

    /// <summary>
    /// Multi-candidate pre-drafting: on each early verdict the edge drafts for the exit's verdict and the alternatives
    /// it ranks next, one after another, and in conditional mode sends each as a conditional round for the same round
    /// number; the verifier verifies the one that holds and drops the rest. The output stays the target's.
    /// </summary>
    [Theory]
    [InlineData(GenerationMode.Preemptive, 3)]
    [InlineData(GenerationMode.Conditional, 2)]
    [InlineData(GenerationMode.Conditional, 4)]
    public async Task Candidates_JitteredLinkAndSlowSteps_IdenticalToTargetOnly(GenerationMode mode, int candidates)
    {
        var (expected, report) = await GenerateAsync(mode, adaptive: false, candidates);

        Assert.Equal(expected, report.TokenIds);
        var early = report.PerRound.SelectMany(r => r.EarlyVerdicts).ToList();
        Assert.NotEmpty(early);
        Assert.All(early, e => Assert.InRange(e.Alternatives, 0, candidates - 1));
        Assert.Contains(early, e => e.Alternatives > 0);
    }

    /// <summary>The target's own greedy output, and a generation in <paramref name="mode"/> over the jittered link.</summary>
    private async Task<(List<int> Expected, GenerationReport Report)> GenerateAsync(GenerationMode mode, bool adaptive, int candidates)
    {
        List<int> expected;
        using (var model = TestModels.Load(verifier.Pair.TargetDir))
        {
            expected = [.. TargetOnlyDecoding.Greedy(model, [.. Prompt.Select(t => new TokenId(t))], NewTokens, stopAtEos: false).Select(t => t.Value)];
        }

        await using var client = await SpecEdgeClient.ConnectAsync(EmulatedLink.Apply(new EdgeClientOptions
        {
            Server = verifier.Address,
            DraftModel = verifier.Pair.DraftDir,
            IntraOpThreads = 1,
            Profile = ComputeProfiles.TenToOne,
        }, LinkProfile.Parse("rtt=20ms,jitter=10ms"))).DefaultTimeout();

        var report = await client.Generate(new GenerationRequest
        {
            PromptIds = [.. Prompt.Select(t => new TokenId(t))],
            Mode = mode,
            DraftTokens = 3,
            AdaptiveDraftTokens = adaptive,
            Candidates = candidates,
            MaxNewTokens = NewTokens,
            StopAtEos = false,
            Sampling = SamplingConfig.Greedy,
        }).RunToEndAsync().WaitAsync(TimeSpan.FromMinutes(1));
        return (expected, report);
    }
}
