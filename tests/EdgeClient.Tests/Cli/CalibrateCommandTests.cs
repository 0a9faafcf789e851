using System.CommandLine;
using SpecEdge.EdgeClient.Cli;
using SpecEdge.EdgeClient.Client;
using SpecEdge.Shared.Calibration;
using SpecEdge.TestUtilities;

namespace SpecEdge.EdgeClient.Tests.Cli;

public sealed class CalibrateCommandTests(CliVerifierFixture fixture) : IClassFixture<CliVerifierFixture>
{
    [Fact]
    public void Build_PicksLowestLevelReachingPrecision()
    {
        // Exit 2: confidences 0.15 (half right), 0.45 (80 % right), 0.85 (all right); 20 verdicts each.
        var records = new List<EarlyVerdictRecord>();
        for (var i = 0; i < 20; i++)
        {
            records.Add(new EarlyVerdictRecord(2, 0.15, 1, 5, i % 2 == 0));
            records.Add(new EarlyVerdictRecord(2, 0.45, 1, 5, i % 5 != 0));
            records.Add(new EarlyVerdictRecord(2, 0.85, 1, 5, true));
        }

        var report = CalibrateCommand.Build("m", 0.85, 60, 240, [2], records);

        var exit = Assert.Single(report.Exits);
        // ≥ 0.1: 60 verdicts, 46 right = 77 %; ≥ 0.2 (first level above 0.15): 40 verdicts, 36 right = 90 % ≥ 85 %.
        Assert.Equal(0.2, exit.Threshold);
        Assert.Equal(0.9, exit.PrecisionAtThreshold, 9);
        Assert.Equal(40 / 60.0, exit.CoverageAtThreshold, 9);
        Assert.Equal(60, exit.Bins[0].Verdicts);
    }

    [Fact]
    public void Build_NoLevelReachesPrecision_ThresholdOne()
    {
        var records = Enumerable.Range(0, 50).Select(i => new EarlyVerdictRecord(1, 0.99, 0, 1, i % 2 == 0)).ToList();

        var report = CalibrateCommand.Build("m", 0.9, 50, 200, [1], records);

        Assert.Equal(1.0, report.Exits[0].Threshold);
    }

    [Fact]
    public async Task Calibrate_AgainstVerifier_WritesReportTheVerifierCanLoad()
    {
        var path = Path.Combine(fixture.Root, "calibration.json");
        var prompts = Path.Combine(fixture.Root, "prompts.txt");
        await File.WriteAllLinesAsync(prompts, ["Hello", "The quick brown fox", "Once upon"]);
        var output = new StringWriter();
        var error = new StringWriter();

        var code = await EdgeCli.Build().Parse(["calibrate", "--server", fixture.Address.ToString(), "--draft", fixture.Pair.DraftDir, "--prompts", prompts, "--max-new-tokens", "24", "--out", path, "--precision", "0.5"])
            .InvokeAsync(new InvocationConfiguration { Output = output, Error = error }).DefaultTimeout();

        Assert.True(code == 0, error.ToString());
        Assert.Contains("exit after layer 1", output.ToString());
        var thresholds = CalibrationReport.LoadThresholds(path);
        var threshold = Assert.Single(thresholds);
        Assert.InRange(threshold, 0f, 1f);
    }
}
