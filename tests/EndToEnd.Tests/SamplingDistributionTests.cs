using Microsoft.Extensions.DependencyInjection;
using SpecEdge.CloudVerifier.Scheduling;
using SpecEdge.EdgeClient.Client;
using SpecEdge.Shared.Decoding;
using SpecEdge.Shared.Tokenization;
using SpecEdge.TestUtilities;

namespace SpecEdge.EndToEnd.Tests;

/// <summary>A pair with a six-token vocabulary (no tokenizer), so joint distributions of two tokens are small enough to test.</summary>
public sealed class SmallVocabularyVerifier : KestrelVerifier
{
    public const int Vocab = 6;

    protected override TestPair CreatePair(string root) =>
        TestModels.WritePair(root, TestModels.PairTarget(seed: 11, vocab: Vocab) with { HeadScale = 0.8 }, exits: [1]);
}

/// <summary>
/// Sampling stays exact end to end: the first two tokens that speculative decoding (plain, pre-emptive, conditional)
/// generates over gRPC follow the target's own joint distribution, computed exactly from the independent reference
/// forward pass, alone and with four edges sharing batched steps. A chi-square goodness-of-fit test with its threshold
/// fixed here.
/// </summary>
public sealed class SamplingDistributionTests(SmallVocabularyVerifier verifier) : IClassFixture<SmallVocabularyVerifier>
{
    private const int Samples = 2500;
    private static readonly int[] Prompt = [1, 4, 2];

    public static TheoryData<GenerationMode> Modes() => [GenerationMode.Speculative, GenerationMode.Preemptive, GenerationMode.Conditional];

    [Theory]
    [MemberData(nameof(Modes))]
    public async Task FirstTwoTokens_FollowTargetJointDistribution(GenerationMode mode)
    {
        var (counts, acceptance) = await DrawAsync(mode, clients: 1);

        AssertFollowsTarget(counts, acceptance, $"{mode}");
    }

    /// <summary>
    /// The same draws from four edges at once, so their rounds share the verifier's batched steps (the scheduler's
    /// counters prove it): batching leaves the distribution unchanged.
    /// </summary>
    [Fact]
    public async Task FirstTwoTokens_FourEdgesSharingBatches_FollowTargetJointDistribution()
    {
        var scheduler = verifier.App.Services.GetRequiredService<BatchScheduler>();
        var before = scheduler.Counters.SharedSteps;

        var (counts, acceptance) = await DrawAsync(GenerationMode.Conditional, clients: 4);

        AssertFollowsTarget(counts, acceptance, "conditional, four edges batched");
        Assert.True(scheduler.Counters.SharedSteps - before > Samples / 10, "the four edges' rounds seldom shared a step");
    }

    /// <summary>
    /// Conditional mode with three candidates per round: under sampling the verifier sends no alternatives, but the
    /// round may still send more than one conditional round when a later exit's sampled verdict differs; the
    /// distribution stays the target's.
    /// </summary>
    [Fact]
    public async Task FirstTwoTokens_ConditionalThreeCandidates_FollowTargetJointDistribution()
    {
        var (counts, acceptance) = await DrawAsync(GenerationMode.Conditional, clients: 1, candidates: 3);

        AssertFollowsTarget(counts, acceptance, "conditional, three candidates");
    }

    /// <summary>
    /// Token trees under sampling: beside each draft, leaves drawn independently from the draft's distribution, checked
    /// with SpecInfer's multi-step speculative sampling; the joint distribution stays the target's, and leaves are
    /// really taken (a round committing two tokens past its accepted drafts took one).
    /// </summary>
    [Theory]
    [InlineData(GenerationMode.Speculative, 2)]
    [InlineData(GenerationMode.Conditional, 1)]
    public async Task FirstTwoTokens_Trees_FollowTargetJointDistribution(GenerationMode mode, int leaves)
    {
        var (counts, acceptance) = await DrawAsync(mode, clients: 1, leaves: leaves);

        AssertFollowsTarget(counts, acceptance, $"{mode}, {leaves} leaves per draft");
        Assert.True(_leavesTaken > Samples / 50, $"{mode}: only {_leavesTaken} rounds took a leaf");
    }

    /// <summary>Trees under sampling from four edges at once, their rounds sharing batched steps with tree attention.</summary>
    [Fact]
    public async Task FirstTwoTokens_TreesFromFourEdgesSharingBatches_FollowTargetJointDistribution()
    {
        var scheduler = verifier.App.Services.GetRequiredService<BatchScheduler>();
        var before = scheduler.Counters.SharedSteps;

        var (counts, acceptance) = await DrawAsync(GenerationMode.Conditional, clients: 4, leaves: 2);

        AssertFollowsTarget(counts, acceptance, "conditional, two leaves per draft, four edges batched");
        Assert.True(_leavesTaken > Samples / 50, $"only {_leavesTaken} rounds took a leaf");
        Assert.True(scheduler.Counters.SharedSteps - before > Samples / 10, "the four edges' rounds seldom shared a step");
    }

    private int _leavesTaken;

    private async Task<(long[] Counts, double Acceptance)> DrawAsync(GenerationMode mode, int clients, int candidates = 1, int leaves = 0)
    {
        var counts = new long[SmallVocabularyVerifier.Vocab * SmallVocabularyVerifier.Vocab];
        var drafted = 0;
        var accepted = 0;
        await Task.WhenAll(Enumerable.Range(0, clients).Select(async c =>
        {
            await using var client = await verifier.ConnectAsync();
            for (var seed = (ulong)c; seed < Samples; seed += (ulong)clients)
            {
                var report = await client.Generate(new GenerationRequest
                {
                    PromptIds = Prompt.Select(t => new TokenId(t)).ToList(),
                    Mode = mode,
                    DraftTokens = 2,
                    MaxNewTokens = 2,
                    Candidates = candidates,
                    Leaves = leaves,
                    Sampling = new SamplingConfig { Temperature = 1f, Seed = seed + (1000UL * (ulong)mode) + (100_000UL * (ulong)(clients - 1)) + (10_000_000UL * (ulong)(candidates - 1)) + (1_000_000_000UL * (ulong)leaves) },
                }).RunToEndAsync().DefaultTimeout();
                Interlocked.Add(ref _leavesTaken, TreeRounds.LeavesTaken(report));
                Interlocked.Increment(ref counts[(report.TokenIds[0] * SmallVocabularyVerifier.Vocab) + report.TokenIds[1]]);
                Interlocked.Add(ref drafted, report.DraftTokens);
                Interlocked.Add(ref accepted, report.AcceptedTokens);
            }
        })).WaitAsync(TimeSpan.FromMinutes(3));
        return (counts, accepted / (double)drafted);
    }

    private void AssertFollowsTarget(long[] counts, double acceptance, string what)
    {
        var (chi2, dof) = ChiSquare(counts, ExactJoint());
        var critical = ChiSquareCritical(dof);
        Assert.True(chi2 < critical, $"{what}: chi-square {chi2:F1} ≥ {critical:F1} with {dof} degrees of freedom");
        Assert.InRange(acceptance, 0.05, 0.95);
    }

    /// <summary>p(t1, t2) = p(t1 | prompt) · p(t2 | prompt, t1), from the reference forward pass and a plain softmax.</summary>
    private double[] ExactJoint()
    {
        var reference = verifier.Pair.Target.Reference();
        var v = SmallVocabularyVerifier.Vocab;
        var first = ReferenceLlama.Softmax(reference.Forward(Prompt).Logits[^1]);
        var joint = new double[v * v];
        for (var t1 = 0; t1 < v; t1++)
        {
            var second = ReferenceLlama.Softmax(reference.Forward([.. Prompt, t1]).Logits[^1]);
            for (var t2 = 0; t2 < v; t2++)
            {
                joint[(t1 * v) + t2] = first[t1] * second[t2];
            }
        }

        return joint;
    }

    /// <summary>Pearson's statistic, pooling cells expected to hold fewer than 5 draws into one.</summary>
    private static (double Chi2, int Dof) ChiSquare(long[] counts, double[] p)
    {
        var total = counts.Sum();
        double chi2 = 0;
        var cells = 0;
        double pooledExpected = 0;
        long pooledObserved = 0;
        for (var i = 0; i < counts.Length; i++)
        {
            var expected = total * p[i];
            if (expected < 5)
            {
                pooledExpected += expected;
                pooledObserved += counts[i];
                continue;
            }

            chi2 += (counts[i] - expected) * (counts[i] - expected) / expected;
            cells++;
        }

        if (pooledExpected > 0)
        {
            chi2 += (pooledObserved - pooledExpected) * (pooledObserved - pooledExpected) / pooledExpected;
            cells++;
        }

        return (chi2, cells - 1);
    }

    /// <summary>The chi-square critical value at significance 1e-4 (Wilson–Hilferty; z = 3.719).</summary>
    private static double ChiSquareCritical(int dof)
    {
        const double Z = 3.719;
        var a = 2.0 / (9.0 * dof);
        return dof * Math.Pow(1 - a + (Z * Math.Sqrt(a)), 3);
    }
}
