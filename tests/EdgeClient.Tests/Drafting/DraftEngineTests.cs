using Microsoft.Extensions.Time.Testing;
using SpecEdge.EdgeClient.Drafting;
using SpecEdge.EdgeClient.Tests.Decoding;
using SpecEdge.Shared.Decoding;
using SpecEdge.Shared.Timing;
using SpecEdge.Shared.Tokenization;
using SpecEdge.TestUtilities;

namespace SpecEdge.EdgeClient.Tests.Drafting;

/// <summary>The draft engine's one cache under calls that overlap, as branches drafted ahead on several outcomes do.</summary>
public sealed class DraftEngineTests(RoundLoopFixture fixture) : IClassFixture<RoundLoopFixture>
{
    /// <summary>
    /// Four calls on four different prefixes at once, each token held to a 2 ms floor so they would interleave: each
    /// gets what it gets alone. Calls that shared the cache step by step would draft on each other's prefixes.
    /// </summary>
    [Fact]
    public async Task OverlappingCalls_TakeTurns_EachDraftsOnItsOwnPrefix()
    {
        IReadOnlyList<TokenId>[] prefixes =
        [
            [.. RoundLoopFixture.Prompt],
            [.. RoundLoopFixture.Prompt, new TokenId(101)],
            [.. RoundLoopFixture.Prompt, new TokenId(7), new TokenId(9)],
            [new TokenId(256), new TokenId(33)],
        ];
        using var alone = new DraftEngine(fixture.Model);
        var expected = new List<int[]>();
        foreach (var prefix in prefixes)
        {
            expected.Add([.. (await alone.DraftAsync(prefix, 6, SamplingConfig.Greedy, CancellationToken.None)).Tokens.Select(t => t.Value)]);
        }

        using var shared = new DraftEngine(fixture.Model, new ComputeProfile { Name = "2ms", DraftMsPerToken = 2 });
        var drafted = await Task.WhenAll(prefixes.Select(p => Task.Run(async () => await shared.DraftAsync(p, 6, SamplingConfig.Greedy, CancellationToken.None)))).WaitAsync(TimeSpan.FromMinutes(1));

        Assert.Equal(expected, drafted.Select(d => d.Tokens.Select(t => t.Value).ToArray()));
    }

    [Fact]
    public async Task CallWaitingItsTurn_Cancelled_EndsWithoutDrafting()
    {
        // On a fake clock the first call's floors pass only when the test says so: it holds the turn throughout.
        var time = new FakeTimeProvider();
        using var engine = new DraftEngine(fixture.Model, new ComputeProfile { Name = "50ms", DraftMsPerToken = 50 }, time);
        using var cancel = new CancellationTokenSource();
        var first = Task.Run(async () => await engine.DraftAsync(RoundLoopFixture.Prompt, 4, SamplingConfig.Greedy, CancellationToken.None));
        await WaitUntilAsync(() => engine.TokensFed > 0); // the first call has run a step: it holds the turn
        var second = Task.Run(async () => await engine.DraftAsync([.. RoundLoopFixture.Prompt, new TokenId(5)], 4, SamplingConfig.Greedy, cancel.Token));
        await cancel.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => second).WaitAsync(TimeSpan.FromSeconds(30));
        Assert.False(first.IsCompleted);
        while (!first.IsCompleted)
        {
            time.Advance(TimeSpan.FromMilliseconds(50));
            await Task.Delay(5);
        }

        Assert.Equal(4, (await first).Tokens.Length);

        // The cancelled call left the cache alone: the first drafted what it drafts with no other call about.
        using var alone = new DraftEngine(fixture.Model);
        Assert.Equal((await alone.DraftAsync(RoundLoopFixture.Prompt, 4, SamplingConfig.Greedy, CancellationToken.None)).Tokens, (await first).Tokens);
    }

    /// <summary>
    /// Greedy drafts drafted with a continuation come with the draft's confidence in each: the softmax probability of its arg-max, checked against
    /// the plain-C# reference forward pass. A continuation that says stop after two drafts gets those two, the same as
    /// the first two of a full round.
    /// </summary>
    [Fact]
    public async Task GreedyDrafts_ConfidenceIsTheReferenceSoftmaxMax_AndAContinuationStopsThem()
    {
        using var temp = new TempDirectory("draft-confidence");
        var spec = TestModels.Small(seed: 23);
        var (model, converted) = TestModels.WriteAndConvert(temp.Path, spec);
        using var lm = TestModels.Load(converted);
        using var engine = new DraftEngine(lm);
        int[] prompt = [5, 17, 42];

        var full = await engine.DraftAsync([.. prompt.Select(t => new TokenId(t))], 6, SamplingConfig.Greedy, CancellationToken.None, _ => true);
        var asked = new List<int>();
        var stopped = await engine.DraftAsync([.. prompt.Select(t => new TokenId(t))], 6, SamplingConfig.Greedy, CancellationToken.None, confidences =>
        {
            asked.Add(confidences.Length);
            return confidences.Length < 2;
        });

        var sequence = prompt.Concat(full.Tokens.Select(t => t.Value)).ToArray();
        var logits = new ReferenceLlama(model.Config, model.Weights).Forward(sequence).Logits;
        Assert.Equal(6, full.Confidences!.Length);
        for (var i = 0; i < 6; i++)
        {
            var row = logits[prompt.Length - 1 + i];
            var max = row.Max();
            Assert.Equal(Array.IndexOf(row, max), full.Tokens[i].Value);
            Assert.Equal(1 / row.Sum(l => Math.Exp(l - max)), full.Confidences[i], 1e-4);
        }

        Assert.Equal([1, 2], asked);
        Assert.Equal(full.Tokens[..2], stopped.Tokens);
        // The second call continues the cache the first left (a different path through the model): equal to float rounding.
        Assert.All(stopped.Confidences!.Zip(full.Confidences[..2]), pair => Assert.Equal(pair.Second, pair.First, 1e-5));
    }

    /// <summary>
    /// A greedy token tree: beside each draft, the next most likely tokens of the row the draft came from, in order, as
    /// the reference forward pass ranks them; drafting the tree leaves the chain as it was, and cutting the round cuts
    /// its leaves with it.
    /// </summary>
    [Fact]
    public async Task GreedyLeaves_AreTheReferenceRowsRunnersUp_AndTheChainIsUnchanged()
    {
        using var temp = new TempDirectory("draft-leaves");
        var spec = TestModels.Small(seed: 29);
        var (model, converted) = TestModels.WriteAndConvert(temp.Path, spec);
        using var lm = TestModels.Load(converted);
        using var engine = new DraftEngine(lm);
        TokenId[] prompt = [new(3), new(30), new(9)];

        var chain = await engine.DraftAsync(prompt, 4, SamplingConfig.Greedy, CancellationToken.None);
        var tree = await engine.DraftAsync(prompt, 4, SamplingConfig.Greedy, CancellationToken.None, leaves: 2);

        Assert.Equal(chain.Tokens, tree.Tokens);
        Assert.Empty(chain.Leaves);
        var logits = new ReferenceLlama(model.Config, model.Weights).Forward([.. prompt.Concat(tree.Tokens).Select(t => t.Value)]).Logits;
        for (var depth = 0; depth < 4; depth++)
        {
            var row = logits[prompt.Length - 1 + depth];
            var ranked = Enumerable.Range(0, row.Length).OrderByDescending(n => row[n]).ToArray();
            Assert.Equal(ranked[0], tree.Tokens[depth].Value);
            Assert.Equal([ranked[1], ranked[2]], tree.Leaves.Where(l => l.Depth == depth).Select(l => l.Token.Value));
        }

        Assert.Equal(tree.Leaves.Where(l => l.Depth < 2), tree.Take(2).Leaves);
    }

    private static async Task WaitUntilAsync(Func<bool> condition)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, "the condition did not hold within 30 s");
            await Task.Delay(2);
        }
    }
}
