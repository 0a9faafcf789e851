using SpecEdge.EdgeClient.Decoding;

namespace SpecEdge.EdgeClient.Tests.Decoding;

/// <summary>The adaptive γ rule on cases whose answer is known by hand.</summary>
public sealed class AdaptiveDraftLengthTests
{
    [Theory]
    [InlineData(0.0, 3, 1.0)]
    [InlineData(1.0, 3, 4.0)]
    [InlineData(0.5, 1, 1.5)]
    [InlineData(0.5, 3, 1.875)]
    public void ExpectedTokens_GeometricSeries(double alpha, int gamma, double expected)
    {
        Assert.Equal(expected, AdaptiveDraftLength.ExpectedTokens(alpha, gamma), 9);
    }

    [Fact]
    public void ExpectedMsPerToken_HandComputedCase()
    {
        // γ = 2, α = 0.5: E = 1 + 0.5 + 0.25 = 1.75 tokens; T = 2·10 + 40 + 20 + 5·3 = 95 ms.
        Assert.Equal(95 / 1.75, AdaptiveDraftLength.ExpectedMsPerToken(2, 0.5, 10, 40, 20, 5), 9);
    }

    [Fact]
    public void Best_AcceptanceZero_DraftsOne()
    {
        Assert.Equal(1, AdaptiveDraftLength.Best(8, 0.0, 5, 50, 20, 0));
    }

    [Fact]
    public void Best_PerfectDraftAndFreeDrafting_DraftsTheMaximum()
    {
        Assert.Equal(8, AdaptiveDraftLength.Best(8, 0.99, 0, 50, 20, 0));
    }

    [Fact]
    public void Best_LongLinkFavoursLongerRoundsThanShortLink()
    {
        var shortLink = AdaptiveDraftLength.Best(16, 0.8, 5, 2, 10, 1);
        var longLink = AdaptiveDraftLength.Best(16, 0.8, 5, 200, 10, 1);

        Assert.True(longLink > shortLink, $"long link chose γ={longLink}, short link γ={shortLink}");
    }

    [Fact]
    public void Best_MatchesBruteForceOverTheFormula()
    {
        // α = 0.7, draft 4 ms/token, link 30 ms, verify 10 + 2·(γ+1) ms.
        var costs = Enumerable.Range(1, 10).Select(g => (g, c: ((g * 4.0) + 30 + 10 + (2.0 * (g + 1))) / ((1 - Math.Pow(0.7, g + 1)) / 0.3))).ToList();
        var expected = costs.MinBy(x => x.c).g;

        Assert.Equal(expected, AdaptiveDraftLength.Best(10, 0.7, 4, 30, 10, 2));
    }

    [Fact]
    public void Observe_AllAccepted_RaisesGamma_AllRejected_LowersIt()
    {
        var up = new AdaptiveDraftLength(initial: 4, max: 12);
        var down = new AdaptiveDraftLength(initial: 4, max: 12);
        for (var i = 0; i < 10; i++)
        {
            up.Observe(up.Current, up.Current, draftMs: up.Current * 2.0, linkMs: 60, verifyMs: 20);
            down.Observe(down.Current, 0, draftMs: down.Current * 2.0, linkMs: 60, verifyMs: 20);
        }

        Assert.True(up.Current > 4, $"γ stayed at {up.Current} although every draft stood");
        Assert.Equal(1, down.Current);
        Assert.True(up.Acceptance > 0.9);
        Assert.True(down.Acceptance < 0.05);
    }
}
