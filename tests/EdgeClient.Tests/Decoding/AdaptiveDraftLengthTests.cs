using SpecEdge.EdgeClient.Decoding;

namespace SpecEdge.EdgeClient.Tests.Decoding;

/// <summary>The γ controller: its formulas on cases worked by hand, and its choices in simulated conditions whose best γ is known.</summary>
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
    public void ExpectedTokens_PerPosition_HandComputedCase()
    {
        // Position 1 stands 80 % of the time, position 2 half the time once 1 stood: 1 + 0.8 + 0.8·0.5 = 2.2.
        Assert.Equal(2.2, AdaptiveDraftLength.ExpectedTokens([0.8, 0.5], 2), 9);
    }

    [Fact]
    public void Best_HandComputedCases()
    {
        double[] stand = [0.9, 0.9, 0.9, 0.1];

        // Free drafts: every extra draft adds tokens, so the most.
        Assert.Equal(4, AdaptiveDraftLength.Best(stand, 60, 0));

        // 10 ms a draft: γ = 3 costs 90 / 3.439 = 26.2 ms per token, γ = 4 costs 100 / 3.512 = 28.5.
        Assert.Equal(3, AdaptiveDraftLength.Best(stand, 60, 10));
    }

    [Theory]
    [InlineData(0.0, 8, 8)]
    [InlineData(40.0, 1, 2)]
    public void Observe_SimulatedRounds_SettlesOnTheBestGamma(double msPerDraft, int low, int high)
    {
        // Rounds of 80 ms plus msPerDraft per draft; each draft stands with 75 % chance once the ones before it stood.
        // Free drafts: the best γ is the largest. At 40 ms a draft: γ = 1 costs 120 / 1.75 = 68.6 ms per token,
        // γ = 2 costs 160 / 2.31 = 69.2, γ = 3 costs 200 / 2.73 = 73.2: one or two.
        var controller = new AdaptiveDraftLength(initial: 4, max: 8);
        var random = new Random(3);
        var chosen = new List<int>();
        for (var round = 0; round < 300; round++)
        {
            var gamma = controller.Current;
            var accepted = 0;
            while (accepted < gamma && random.NextDouble() < 0.75)
            {
                accepted++;
            }

            controller.Observe(gamma, accepted, 80 + (msPerDraft * gamma) + (random.NextDouble() * 4), msPerDraft * gamma);
            if (round >= 200)
            {
                chosen.Add(controller.Current);
            }
        }

        var settled = chosen.Count(g => g >= low && g <= high) / (double)chosen.Count;
        Assert.True(settled >= 0.8, $"γ in [{low}, {high}] only {settled:P0} of the last 100 rounds: {string.Join(",", chosen)}");
        // The discounted statistics keep about 33 rounds: the estimate of 0.75 is good to about ±0.08 (one standard deviation).
        Assert.InRange(controller.PositionAcceptance(0), 0.55, 0.95);
    }
}
