using Microsoft.Extensions.Logging;
using SpecEdge.Shared.Runtime;
using SpecEdge.TestUtilities;

namespace SpecEdge.Shared.Tests.Runtime;

public sealed class ExecutionDeviceTests : IDisposable
{
    private readonly TempDirectory _temp = new("device");

    [Fact]
    public void Load_CudaWithoutCuda_FallsBackToCpuLoudlyAndStillComputes()
    {
        var (_, converted) = TestModels.WriteAndConvert(_temp.Path, TestModels.Small());
        var logs = new CapturingLoggerProvider();
        using var model = LanguageModel.Load(converted, new RuntimeOptions { Device = ExecutionDevice.Cuda, IntraOpThreads = 1 }, logs.CreateLogger("test"));
        using var context = model.CreateContext();
        var logits = context.Forward([new Shared.Tokenization.TokenId(1), new Shared.Tokenization.TokenId(2)]);

        Assert.Equal(ExecutionDevice.Cpu, model.Device);
        Assert.False(string.IsNullOrWhiteSpace(model.FallbackReason));
        Assert.Contains(logs.Messages, m => m.Level == LogLevel.Warning && m.Message.Contains("CUDA execution provider could not load", StringComparison.Ordinal));
        Assert.Equal(2, logits.Rows);
    }

    [Fact]
    public void Load_IntraOpThreads_IsHonouredWithoutError()
    {
        var (_, converted) = TestModels.WriteAndConvert(_temp.Combine("threads"), TestModels.Small());

        using var model = LanguageModel.Load(converted, new RuntimeOptions { IntraOpThreads = 1 });

        Assert.Equal(ExecutionDevice.Cpu, model.Device);
        Assert.Null(model.FallbackReason);
    }

    public void Dispose() => _temp.Dispose();
}
