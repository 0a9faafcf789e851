using SpecEdge.Shared.Timing;

namespace SpecEdge.Shared.Tests.Timing;

/// <summary>How a profile spreads a verification step over the target's stages.</summary>
public sealed class ComputeProfileTests
{
    private static readonly ComputeProfile QuarterFirst = new() { Name = "q", Description = "test", DraftMsPerToken = 5, VerifyMsPerStep = 40, StageFractions = [1, 3] };

    [Fact]
    public void StageFloor_StagesMatchTheFractions_ScaledToTheStep()
    {
        Assert.Equal(TimeSpan.FromMilliseconds(10), QuarterFirst.StageFloor(0, 2, 5));
        Assert.Equal(TimeSpan.FromMilliseconds(30), QuarterFirst.StageFloor(1, 2, 5));
    }

    [Fact]
    public void StageFloor_MoreStagesThanFractions_FirstKeepsItsShareAndTheRestSplitEvenly()
    {
        var stages = Enumerable.Range(0, 3).Select(s => QuarterFirst.StageFloor(s, 3, 5).TotalMilliseconds).ToArray();

        Assert.Equal([10, 15, 15], stages);
    }

    [Fact]
    public void StageFloor_NoFractions_EvenSplit()
    {
        var even = QuarterFirst with { StageFractions = [] };

        Assert.Equal(TimeSpan.FromMilliseconds(10), even.StageFloor(2, 4, 5));
    }
}
