using SpecEdge.Bench.Reliability;
using SpecEdge.TestUtilities;

namespace SpecEdge.EndToEnd.Tests;

/// <summary>
/// Short CI versions of the reliability proofs (the long ones are <c>specedge-bench soak|load|fuzz</c>, figures in
/// docs/reliability.md): real-process fault injection, 64 concurrent clients, protocol fuzzing.
/// </summary>
public sealed class ReliabilityProofTests : IDisposable
{
    private readonly TempDirectory _temp = new("proofs");
    private readonly TestPair _pair;

    public ReliabilityProofTests()
    {
        _pair = TestModels.WritePair(_temp.Path);
    }

    [Fact]
    public async Task Soak_RealProcessesKilledDroppedStalled_EveryOutputIdentical()
    {
        var report = await FaultSoak.RunAsync(_pair.TargetDir, _pair.DraftDir, minFaults: 15, tokens: 24, seed: 7, TextWriter.Null, CancellationToken.None).WaitAsync(TimeSpan.FromMinutes(4));

        Assert.True(report.FaultsInterrupting >= 15, $"{report.FaultsInterrupting} faults interrupted a generation");
        Assert.True(report.FaultsByKind["kill -9 + restart"] > 0, "no verifier process was killed");
        Assert.True(report.Interrupted > 0, "no generation was interrupted by a fault");
        // The faults land where they were aimed: every phase of a generation's conversation, both verifiers.
        var phases = report.InterruptingBy(f => f.Phase);
        foreach (var phase in new[] { "Prefill", "MidRound", "BetweenEarlyAndFinal", "ConditionalInFlight", "Streaming" })
        {
            Assert.True(phases.GetValueOrDefault(phase) > 0, $"no fault interrupted a generation at {phase}: {string.Join(", ", phases)}");
        }

        Assert.Equal(2, report.InterruptingBy(f => f.Batching).Count);
        Assert.Empty(report.Errors);
        Assert.Equal(report.Generations, report.Identical);
        Assert.Equal(0, report.TokensLost);
        Assert.Equal(0, report.TokensDuplicated);
        Assert.Equal(0, report.TokensWrong);
    }

    [Fact]
    public async Task Load_64ConcurrentClients_NoFailedGeneration()
    {
        var report = await LoadTest.RunAsync(_pair.TargetDir, _pair.DraftDir, clients: 64, TimeSpan.FromSeconds(3), tokens: 16, TextWriter.Null, CancellationToken.None).WaitAsync(TimeSpan.FromMinutes(3));

        Assert.Empty(report.Errors);
        Assert.Equal(0, report.Failed);
        Assert.True(report.Generations >= 64, $"only {report.Generations} generations finished");
        Assert.True(report.RoundP99Ms >= report.RoundP50Ms);
    }

    [Fact]
    public async Task Fuzz_MutatedSequences_DefinedStatusesAndHealthySessionExact()
    {
        var report = await ProtocolFuzzer.RunAsync(_pair.TargetDir, _pair.DraftDir, sequences: 3000, seed: 11, parallel: 4, TextWriter.Null, CancellationToken.None).WaitAsync(TimeSpan.FromMinutes(3));

        Assert.Empty(report.Problems);
        Assert.Equal(0, report.Undefined);
        Assert.Equal(0, report.ValidRefused);
        Assert.True(report.Outcomes.GetValueOrDefault("OK") > 0);
        Assert.True(report.Outcomes.GetValueOrDefault("InvalidArgument") > 0);
        Assert.True(report.Outcomes.GetValueOrDefault("FailedPrecondition") > 0);
        Assert.True(report.HealthyGenerations > 0);
        Assert.Equal(report.HealthyGenerations, report.HealthyIdentical);
        Assert.True(report.SharedSteps > 0, "the fuzzed sessions never shared a batched step with another session");
    }

    public void Dispose() => _temp.Dispose();
}
