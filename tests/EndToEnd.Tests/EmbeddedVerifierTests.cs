using System.Net;
using Grpc.Health.V1;
using Grpc.Net.Client;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Logging;
using SpecEdge.CloudVerifier.Hosting;
using SpecEdge.EdgeClient.Client;
using SpecEdge.Shared.Runtime;
using SpecEdge.Shared.Tokenization;
using SpecEdge.TestUtilities;

namespace SpecEdge.EndToEnd.Tests;

/// <summary>
/// The verifier library in a plain ASP.NET Core host, as an embedder writes it: <c>AddSpecEdgeVerifier</c> and
/// <c>MapSpecEdgeVerifier</c>, nothing of <c>VerifierHost</c>. The model loads in the background once the host starts.
/// </summary>
public sealed class EmbeddedVerifierTests : IDisposable
{
    private readonly TempDirectory _temp = new("embedded");
    private readonly TestPair _pair;

    public EmbeddedVerifierTests()
    {
        _pair = TestModels.WritePair(_temp.Path);
    }

    public void Dispose() => _temp.Dispose();

    [Fact]
    public async Task AddAndMapSpecEdgeVerifier_PlainHost_TurnsServingAndGeneratesTheTargetsOutput()
    {
        await using var app = Build(_pair.TargetDir);
        await app.StartAsync().DefaultTimeout();
        using var channel = GrpcChannel.ForAddress(app.Urls.First());
        var health = new Health.HealthClient(channel);

        await WaitForAsync(async () => (await health.CheckAsync(new HealthCheckRequest())).Status == HealthCheckResponse.Types.ServingStatus.Serving);
        await using var client = await SpecEdgeClient.ConnectAsync(new EdgeClientOptions { Server = new Uri(app.Urls.First()), DraftModel = _pair.DraftDir, IntraOpThreads = 1 }).DefaultTimeout();
        var prompt = new TokenId[] { new(256), new(70), new(71) };
        var report = await client.Generate(new GenerationRequest { PromptIds = prompt, Mode = GenerationMode.Conditional, MaxNewTokens = 16, DraftTokens = 3, StopAtEos = false }).RunToEndAsync().DefaultTimeout();

        using var model = TestModels.Load(_pair.TargetDir);
        Assert.Equal(TargetOnlyDecoding.Greedy(model, prompt, 16).Select(t => t.Value), report.TokenIds);
    }

    [Fact]
    public async Task AddSpecEdgeVerifier_ModelMissing_TheHostStops()
    {
        var missing = Path.Combine(_temp.Path, "no-such-model");
        await using var app = Build(missing);
        await app.StartAsync().DefaultTimeout();

        await WaitForAsync(() => Task.FromResult(app.Lifetime.ApplicationStopping.IsCancellationRequested));
    }

    private static WebApplication Build(string model)
    {
        var builder = WebApplication.CreateBuilder();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0, l => l.Protocols = HttpProtocols.Http2));
        builder.Logging.ClearProviders();
        builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?> { ["SpecEdge:Model"] = model, ["SpecEdge:IntraOpThreads"] = "1" });
        builder.Services.AddSpecEdgeVerifier(builder.Configuration.GetSection("SpecEdge"), o => o.DefaultExitThreshold = 0);
        var app = builder.Build();
        app.MapSpecEdgeVerifier();
        return app;
    }

    private static async Task WaitForAsync(Func<Task<bool>> condition)
    {
        var deadline = DateTime.UtcNow + TestTimeouts.Default;
        while (!await condition())
        {
            Assert.True(DateTime.UtcNow < deadline, "the condition never held");
            await Task.Delay(50);
        }
    }
}
