using System.CommandLine;
using SpecEdge.Demo;
using SpecEdge.TestUtilities;

namespace SpecEdge.EndToEnd.Tests;

/// <summary>The demo compares every mode with cloud decoding, whatever the order of --modes, and says so in its exit code.</summary>
public sealed class DemoTests : IDisposable
{
    private readonly TempDirectory _temp = new("demo");

    public void Dispose() => _temp.Dispose();

    [Fact]
    public async Task Run_CloudListedLastOrAbsent_EveryModeComparedWithCloudAndExitZero()
    {
        var pair = TestModels.WritePair(_temp.Path, exits: [1, 2]);
        foreach (var modes in new[] { "speculative,preemptive,cloud", "conditional,proactive,conditional+tree" })
        {
            var output = new StringWriter();
            var error = new StringWriter();
            var code = await DemoCommand.Create().Parse(["--target", pair.TargetDir, "--draft", pair.DraftDir, "--exits", "1,2", "--modes", modes, "--prompts", "2", "--max-new-tokens", "12", "--link", "none", "--profile", "real", "--exit-threshold", "0", "--quiet"])
                .InvokeAsync(new InvocationConfiguration { Output = output, Error = error }).WaitAsync(TimeSpan.FromMinutes(2));

            Assert.True(code == 0, $"exit {code}: {error}");
            var rows = output.ToString().Split('\n').Where(l => l.StartsWith("| ", StringComparison.Ordinal)).Skip(1).ToList();
            foreach (var mode in modes.Split(',').Where(m => m != "cloud"))
            {
                Assert.Contains(rows, r => r.StartsWith($"| {mode} ", StringComparison.Ordinal) && r.Contains("= cloud", StringComparison.Ordinal));
            }
        }
    }
}
