using System.CommandLine;
using SpecEdge.Bench;
using SpecEdge.Shared.Timing;
using SpecEdge.TestUtilities;

namespace SpecEdge.EndToEnd.Tests;

/// <summary>The benchmark commands refuse bad input with one clear message naming it.</summary>
public sealed class BenchCommandTests : IDisposable
{
    private readonly TempDirectory _temp = new("bench-cli");

    [Theory]
    [InlineData(new[] { "--modes", "speculative,warp" }, "--modes: unknown mode 'warp'")]
    [InlineData(new[] { "--rtt", "10,fast" }, "--rtt: 'fast' is not a non-negative number")]
    [InlineData(new[] { "--bw", "10mb" }, "unknown unit 'mb'")]
    [InlineData(new[] { "--gamma", "4,zero" }, "--gamma: 'zero' is not a positive integer or 'adaptive'")]
    [InlineData(new[] { "--profile", "jetson-9000" }, "unknown compute profile 'jetson-9000'")]
    [InlineData(new[] { "--server", "not a url" }, "--server: 'not a url' is not a URL")]
    public async Task Matrix_BadOption_OneClearMessage(string[] options, string message)
    {
        var (code, error) = await RunAsync(["matrix", .. options, "--out", _temp.Combine("out")]);

        Assert.Equal(2, code);
        Assert.Contains(message, error);
    }

    [Fact]
    public async Task Matrix_ProfileFileMissingName_NamesTheProblem()
    {
        var file = _temp.Combine("profile.json");
        await File.WriteAllTextAsync(file, "{ \"draft_ms_per_token\": 5 }");

        var (code, error) = await RunAsync(["matrix", "--profile", file, "--out", _temp.Combine("out")]);

        Assert.Equal(2, code);
        Assert.Contains($"{file}: not a valid compute profile", error);
    }

    [Fact]
    public void ProfileFile_RoundTripsThroughSaveAndLoad()
    {
        var path = _temp.Combine("mine.json");
        var profile = new ComputeProfile { Name = "mine", Description = "test", DraftMsPerToken = 3.5, VerifyMsPerStep = 40, VerifyMsPerToken = 1.25, StageFractions = [0.3, 0.7] };

        profile.Save(path);

        Assert.Equal(profile with { StageFractions = [] }, ComputeProfile.Load(path) with { StageFractions = [] });
        Assert.Equal([0.3, 0.7], ComputeProfile.Load(path).StageFractions);
    }

    private static async Task<(int Code, string Error)> RunAsync(string[] args)
    {
        var root = new RootCommand { MatrixBenchmark.Create() };
        var error = new StringWriter();
        var code = await root.Parse(args).InvokeAsync(new InvocationConfiguration { Output = TextWriter.Null, Error = error }).DefaultTimeout();
        return (code, error.ToString());
    }

    public void Dispose() => _temp.Dispose();
}
