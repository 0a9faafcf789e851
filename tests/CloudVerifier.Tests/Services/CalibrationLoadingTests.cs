using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using SpecEdge.CloudVerifier.Hosting;
using SpecEdge.Shared.Calibration;
using SpecEdge.TestUtilities;

namespace SpecEdge.CloudVerifier.Tests.Services;

public sealed class CalibrationLoadingTests(VerifierFixture fixture) : IClassFixture<VerifierFixture>
{
    [Fact]
    public void Startup_CalibrationFile_SetsExitThresholds()
    {
        using var temp = new TempDirectory("calibration");
        var path = temp.Combine("calibration.json");
        new CalibrationReport
        {
            Model = "target",
            TargetPrecision = 0.8,
            Rounds = 10,
            DraftTokens = 40,
            Exits = [new ExitCalibration { Layer = 1, Bins = [], Threshold = 0.35 }],
        }.Save(path);
        var app = VerifierHost.Create([], builder => builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Verifier:Model"] = fixture.Pair.TargetDir,
            ["Verifier:Calibration"] = path,
        }));

        var target = app.Services.GetRequiredService<TargetModel>();

        Assert.Equal([0.35f], target.Thresholds);
        Assert.Equal(0.35f, target.Describe().Exits.Single().Threshold);
    }

    [Fact]
    public void Startup_CalibrationFileMissing_FailsNamingIt()
    {
        var app = VerifierHost.Create([], builder => builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Verifier:Model"] = fixture.Pair.TargetDir,
            ["Verifier:Calibration"] = "/no/such/calibration.json",
        }));

        var ex = Assert.Throws<FormatException>(() => VerifierHost.LoadModel(app));

        Assert.Contains("/no/such/calibration.json: calibration file not found", ex.Message);
    }
}
