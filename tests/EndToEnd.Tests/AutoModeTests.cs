using SpecEdge.EdgeClient.Client;
using SpecEdge.EdgeClient.Link;
using SpecEdge.LinkEmulator;
using SpecEdge.Shared.Decoding;
using SpecEdge.Shared.Runtime;
using SpecEdge.Shared.Timing;
using SpecEdge.Shared.Tokenization;
using SpecEdge.TestUtilities;
using Xunit.Abstractions;

namespace SpecEdge.EndToEnd.Tests;

/// <summary>
/// <c>--mode auto</c> against a verifier whose steps take 50 ms (ratio-10x), drafting at this machine's speed: over a short link drafting
/// wins and auto keeps drafting; over a 1 s round trip every drafting round costs several times what the verifier
/// generating alone costs per token, and auto gives way to cloud streaming mid-generation. The output is the target's either way.
/// </summary>
public sealed class AutoModeTests(SlowStepVerifier verifier, ITestOutputHelper output) : IClassFixture<SlowStepVerifier>
{
    private const int NewTokens = 48;
    private static readonly int[] Prompt = [256, 84, 104, 101, 32, 113];

    [Theory]
    [InlineData(null, new[] { "conditional" })]
    [InlineData("rtt=1000ms", new[] { "conditional", "cloud" })]
    public async Task Auto_DraftsWhileItWins_ElseStreamsFromTheCloud_OutputExact(string? link, string[] modesUsed)
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

            // The draft at this machine's own speed (a fraction of a millisecond a token): with half its drafts
            // standing, a round of the 50 ms step commits more than one token, so drafting beats the cloud clearly.
            Profile = ComputeProfile.Real,
        }, link is null ? null : LinkProfile.Parse(link))).DefaultTimeout();

        var report = await client.Generate(new GenerationRequest
        {
            PromptIds = [.. Prompt.Select(t => new TokenId(t))],
            Mode = GenerationMode.Auto,
            MaxNewTokens = NewTokens,
            StopAtEos = false,
            Sampling = SamplingConfig.Greedy,
        }).RunToEndAsync().WaitAsync(TimeSpan.FromMinutes(1));

        Assert.Equal(expected, report.TokenIds);
        Assert.Equal("auto", report.Mode);
        // The rounds behind the decision, so a failure shows why auto chose as it did.
        var rounds = string.Join("\n", report.PerRound.Select(r =>
            $"round {r.Round}: drafted {r.Drafted}, committed {r.Committed}, wall {r.WallMs:F1} ms, draft {r.DraftMs:F1}, network {r.NetworkAndQueueMs:F1}, verify {r.VerifyMs:F1}, ready {r.StartedWithoutWaiting}"));
        Assert.True(modesUsed.SequenceEqual(report.ModesUsed), $"modes used: {string.Join(",", report.ModesUsed)}, expected {string.Join(",", modesUsed)}\n{rounds}");
        output.WriteLine(rounds);
        Assert.Equal(0, report.UnverifiedTokens);
    }

    /// <summary>
    /// Auto drafts token trees of its own (three leaves a draft) unless the request says otherwise: with the mode's
    /// choice some rounds take a leaf (they commit two tokens past their accepted drafts); with <c>Leaves = 0</c> none
    /// does, though it drafts. Each run has a client of its own, so the second does not start from what the first
    /// taught auto. The output is the target's both ways.
    /// </summary>
    [Fact]
    public async Task Auto_DraftsTreesUnlessToldNot_OutputExact()
    {
        List<int> expected;
        using (var model = TestModels.Load(verifier.Pair.TargetDir))
        {
            expected = [.. TargetOnlyDecoding.Greedy(model, [.. Prompt.Select(t => new TokenId(t))], NewTokens, stopAtEos: false).Select(t => t.Value)];
        }

        var taken = new Dictionary<int, int>();
        foreach (var leaves in new int?[] { null, 0 })
        {
            await using var client = await SpecEdgeClient.ConnectAsync(new EdgeClientOptions { Server = verifier.Address, DraftModel = verifier.Pair.DraftDir, IntraOpThreads = 1 }).DefaultTimeout();
            var report = await client.Generate(new GenerationRequest
            {
                PromptIds = [.. Prompt.Select(t => new TokenId(t))],
                Mode = GenerationMode.Auto,
                Leaves = leaves,
                MaxNewTokens = NewTokens,
                StopAtEos = false,
                Sampling = SamplingConfig.Greedy,
            }).RunToEndAsync().WaitAsync(TimeSpan.FromMinutes(1));

            Assert.Equal(expected, report.TokenIds);
            Assert.Contains(report.PerRound, r => r.Drafted > 0);
            taken[leaves ?? -1] = TreeRounds.LeavesTaken(report);
        }

        Assert.True(taken[-1] > 0, "auto's own choice took no leaf");
        Assert.Equal(0, taken[0]);
    }
}
