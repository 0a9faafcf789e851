using Grpc.Core;
using Grpc.Net.Client;
using SpecEdge.CloudVerifier.Hosting;
using SpecEdge.Protocol.V1;
using SpecEdge.TestUtilities;

namespace SpecEdge.CloudVerifier.Tests.Services;

/// <summary>A Mistral target serves sequences within its sliding window and refuses longer ones, naming the window.</summary>
public sealed class SlidingWindowTests : IDisposable
{
    private readonly TempDirectory _temp = new("sliding-window");

    public void Dispose() => _temp.Dispose();

    [Fact]
    public async Task Open_PromptPastTheSlidingWindow_InvalidArgumentNamingIt()
    {
        var spec = TestModels.PairTarget() with { Arch = "mistral", SlidingWindow = 24, MaxPositions = 128 };
        var pair = TestModels.WritePair(_temp.Path, spec);
        var (app, address) = await VerifierHost.StartLoopbackAsync(pair.TargetDir, o => o.IntraOpThreads = 1).DefaultTimeout();
        await using var _ = app;
        using var channel = GrpcChannel.ForAddress(address);
        var client = new Verifier.VerifierClient(channel);

        Assert.Equal(24u, (await client.DescribeAsync(new DescribeRequest()).ResponseAsync.DefaultTimeout()).Limits.MaxSequenceLength);
        using var call = client.Decode();
        await call.RequestStream.WriteAsync(new EdgeMessage { Open = new Open { PromptIds = { Enumerable.Range(1, 30) }, MaxNewTokens = 4, Sampling = new Sampling() } }).DefaultTimeout();
        var error = await Assert.ThrowsAsync<RpcException>(() => call.ResponseStream.MoveNext(CancellationToken.None).DefaultTimeout());

        Assert.Equal(StatusCode.InvalidArgument, error.StatusCode);
        Assert.Contains("sliding window of 24 tokens", error.Status.Detail);
    }
}
