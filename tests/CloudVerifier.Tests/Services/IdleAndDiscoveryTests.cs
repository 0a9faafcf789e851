using Grpc.Core;
using Grpc.Net.Client;
using Grpc.Reflection.V1Alpha;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.TestHost;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;
using SpecEdge.CloudVerifier.Hosting;
using SpecEdge.Protocol.V1;
using SpecEdge.TestUtilities;

namespace SpecEdge.CloudVerifier.Tests.Services;

/// <summary>Idle sessions are evicted (on a fake clock), and server reflection lists the Verifier service.</summary>
public sealed class IdleAndDiscoveryTests : IAsyncLifetime
{
    private readonly TempDirectory _temp = new("idle");
    private readonly FakeTimeProvider _time = new();
    private WebApplication? _app;
    private GrpcChannel? _channel;

    public async Task InitializeAsync()
    {
        var pair = TestModels.WritePair(_temp.Path);
        _app = VerifierHost.Create([], builder =>
        {
            builder.WebHost.UseTestServer();
            builder.Services.AddSingleton<TimeProvider>(_time);
            builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?>
            {
                ["Logging:LogLevel:Default"] = "Error",
                ["Verifier:Model"] = pair.TargetDir,
                ["Verifier:IntraOpThreads"] = "1",
                ["Verifier:Limits:IdleTimeoutSeconds"] = "30",
            });
        });
        VerifierHost.LoadModel(_app);
        await _app.StartAsync().DefaultTimeout();
        _channel = GrpcChannel.ForAddress("http://verifier", new GrpcChannelOptions { HttpHandler = _app.GetTestServer().CreateHandler() });
    }

    public async Task DisposeAsync()
    {
        _channel?.Dispose();
        if (_app is not null)
        {
            await _app.StopAsync().DefaultTimeout();
            await _app.DisposeAsync();
        }

        _temp.Dispose();
    }

    [Fact]
    public async Task Decode_SilentEdge_EvictedAfterIdleTimeout()
    {
        await using var stream = new RawStream(new Verifier.VerifierClient(_channel!));
        await stream.SendAsync(new Open { PromptIds = { 1, 2, 3 }, MaxNewTokens = 8, Sampling = new Sampling() });
        Assert.Equal(VerifierMessage.KindOneofCase.Opened, (await stream.ReadAsync()).KindCase);

        _time.Advance(TimeSpan.FromSeconds(29));
        var pending = stream.ExpectErrorAsync();
        Assert.False(pending.IsCompleted);
        _time.Advance(TimeSpan.FromSeconds(2));
        var error = await pending;

        Assert.Equal(StatusCode.DeadlineExceeded, error.StatusCode);
        Assert.Contains("session closed after 30 s without a message from the edge", error.Status.Detail);
    }

    [Fact]
    public async Task Reflection_ListsTheVerifierService()
    {
        var reflection = new ServerReflection.ServerReflectionClient(_channel!);
        using var call = reflection.ServerReflectionInfo();
        await call.RequestStream.WriteAsync(new ServerReflectionRequest { ListServices = string.Empty }).DefaultTimeout();
        await call.RequestStream.CompleteAsync().DefaultTimeout();
        Assert.True(await call.ResponseStream.MoveNext(CancellationToken.None).DefaultTimeout());

        var services = call.ResponseStream.Current.ListServicesResponse.Service.Select(s => s.Name).ToList();

        Assert.Contains("specedge.v1.Verifier", services);
        Assert.Contains("grpc.health.v1.Health", services);
    }
}
