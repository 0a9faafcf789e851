using SpecEdge.EdgeClient.Drafting;
using SpecEdge.EdgeClient.Tests.Decoding;
using SpecEdge.Shared.Decoding;
using SpecEdge.Shared.Timing;
using SpecEdge.Shared.Tokenization;

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
        using var engine = new DraftEngine(fixture.Model, new ComputeProfile { Name = "50ms", DraftMsPerToken = 50 });
        using var cancel = new CancellationTokenSource();
        await engine.DraftAsync(RoundLoopFixture.Prompt, 1, SamplingConfig.Greedy, CancellationToken.None); // warm: the first run is slow, and would outlast the floors
        var first = engine.DraftAsync(RoundLoopFixture.Prompt, 4, SamplingConfig.Greedy, CancellationToken.None).AsTask();

        var second = engine.DraftAsync([.. RoundLoopFixture.Prompt, new TokenId(5)], 4, SamplingConfig.Greedy, cancel.Token).AsTask();
        await cancel.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => second).WaitAsync(TimeSpan.FromSeconds(30));
        Assert.False(first.IsCompleted, "the first call ended before the second was cancelled: nothing was waiting");
        Assert.Equal(4, (await first.WaitAsync(TimeSpan.FromSeconds(30))).Tokens.Length);
    }
}
