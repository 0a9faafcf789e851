using Grpc.Core;
using Grpc.Net.Client;
using SpecEdge.CloudVerifier.Hosting;
using SpecEdge.Protocol.V1;
using SpecEdge.TestUtilities;

namespace SpecEdge.CloudVerifier.Tests.Services;

/// <summary>A verifier torn down while its model is busy frees the model only after the step in flight.</summary>
public sealed class ShutdownTests : IDisposable
{
    private readonly TempDirectory _temp = new("shutdown");

    public void Dispose() => _temp.Dispose();

    /// <summary>
    /// Disposing the host while four calls decode at once. Before the scheduler drained its runs on disposal, ONNX
    /// Runtime freed the session under a running stage (the four calls now share batched steps) and the whole process died (SIGSEGV) within a few rounds of this
    /// loop; a crash here takes the test host down, which the run reports as a failure.
    /// </summary>
    [Fact]
    public async Task Dispose_WhileCallsDecode_RunsFinishBeforeTheModelIsFreed()
    {
        var pair = TestModels.WritePair(_temp.Path);
        for (var i = 0; i < 20; i++)
        {
            var (app, address) = await VerifierHost.StartLoopbackAsync(pair.TargetDir, o => o.IntraOpThreads = 1).DefaultTimeout();
            using var channel = GrpcChannel.ForAddress(address);
            var client = new Verifier.VerifierClient(channel);
            var calls = Enumerable.Range(0, 4).Select(async _ =>
            {
                try
                {
                    using var call = client.Generate(new GenerateRequest { PromptIds = { 1, 2, 3 }, MaxNewTokens = 200, Sampling = new Sampling() });
                    while (await call.ResponseStream.MoveNext(CancellationToken.None))
                    {
                    }
                }
                catch (RpcException)
                {
                    // The host went away mid-call: any status will do, as long as the process lives.
                }
            }).ToList();

            await Task.Delay(30 + (i % 7 * 5));
            await app.DisposeAsync();
            await Task.WhenAll(calls).DefaultTimeout();
        }
    }
}
