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

    [Fact]
    public void BatchStageFloor_MoreRows_StepFloorOnceAndTheOtherRowsAtTheBatchedRate()
    {
        var gpu = QuarterFirst with { VerifyMsPerToken = 1, VerifyMsPerBatchedToken = 0.5 };

        // 16 rows of 5 tokens: 40 + 1·5 + 0.5·15·5 = 82.5 ms for the step, a quarter of it in the first stage.
        Assert.Equal(82.5 / 4, gpu.BatchStageFloor(0, 2, 16, 5).TotalMilliseconds, 9);
        Assert.Equal(gpu.StageFloor(1, 2, 5), gpu.BatchStageFloor(1, 2, 1, 5));
    }

    [Fact]
    public void Load_BatchedTokenField_ReadFromSnakeCaseAndNegativeRefused()
    {
        var path = Path.Combine(Path.GetTempPath(), $"profile-{Guid.NewGuid():N}.json");
        try
        {
            File.WriteAllText(path, """{"name": "gpu", "verify_ms_per_step": 60, "verify_ms_per_batched_token": 0.05}""");
            Assert.Equal(0.05, ComputeProfile.Load(path).VerifyMsPerBatchedToken);

            File.WriteAllText(path, """{"name": "gpu", "verify_ms_per_step": 60, "verify_ms_per_batched_token": -1}""");
            var error = Assert.Throws<FormatException>(() => ComputeProfile.Load(path));
            Assert.Contains("verify_ms_per_batched_token", error.Message);
        }
        finally
        {
            File.Delete(path);
        }
    }
}
