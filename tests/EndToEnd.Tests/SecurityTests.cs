using System.Net;
using Grpc.Core;
using Grpc.Health.V1;
using Grpc.Net.Client;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using SpecEdge.CloudVerifier.Hosting;
using SpecEdge.CloudVerifier.Security;
using SpecEdge.EdgeClient.Client;
using SpecEdge.Protocol.V1;
using SpecEdge.Shared.Tokenization;
using SpecEdge.TestUtilities;

namespace SpecEdge.EndToEnd.Tests;

/// <summary>API keys, TLS and mutual TLS on real Kestrel; certificates are made by the test.</summary>
public sealed class SecurityTests : IAsyncLifetime
{
    private const string GoodKey = "edge-key-7f3a9c";
    private const string SlowKey = "slow-key-51d2e0";
    private const string RevokedKey = "old-key-a04b77";
    private readonly TempDirectory _temp = new("security");
    private readonly List<WebApplication> _apps = [];
    private TestPair _pair = null!;

    public Task InitializeAsync()
    {
        _pair = TestModels.WritePair(_temp.Combine("pair"));
        return Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        foreach (var app in _apps)
        {
            await app.StopAsync().DefaultTimeout();
            await app.DisposeAsync();
        }

        _temp.Dispose();
    }

    [Fact]
    public async Task ApiKeys_MissingWrongRevoked_Unauthenticated_ValidGenerates_SecretsNeverLogged()
    {
        var logs = new CapturingLoggerProvider();
        var (address, _) = await StartAsync("http://127.0.0.1:0", KeyConfig(), logs);
        using var channel = GrpcChannel.ForAddress(address);
        var client = new Verifier.VerifierClient(channel);

        var missing = await Assert.ThrowsAsync<RpcException>(() => client.DescribeAsync(new DescribeRequest()).ResponseAsync.DefaultTimeout());
        var wrong = await Assert.ThrowsAsync<RpcException>(() => client.DescribeAsync(new DescribeRequest(), Bearer("not-a-key")).ResponseAsync.DefaultTimeout());
        var revoked = await Assert.ThrowsAsync<RpcException>(() => client.DescribeAsync(new DescribeRequest(), Bearer(RevokedKey)).ResponseAsync.DefaultTimeout());

        Assert.Equal(StatusCode.Unauthenticated, missing.StatusCode);
        Assert.Contains("requires an API key", missing.Status.Detail);
        Assert.Equal(StatusCode.Unauthenticated, wrong.StatusCode);
        Assert.Contains("not valid", wrong.Status.Detail);
        Assert.Equal(StatusCode.Unauthenticated, revoked.StatusCode);
        Assert.Contains("revoked", revoked.Status.Detail);

        await using var edge = await SpecEdgeClient.ConnectAsync(new EdgeClientOptions { Server = address, DraftModel = _pair.DraftDir, ApiKey = GoodKey }).DefaultTimeout();
        var report = await edge.Generate(new GenerationRequest { PromptIds = [new TokenId(1), new TokenId(2)], MaxNewTokens = 6 }).RunToEndAsync().DefaultTimeout();
        Assert.Equal(6, report.NewTokens);

        var logged = string.Join('\n', logs.Messages.Select(m => m.Message));
        Assert.Contains("missing key", logged);
        Assert.Contains("revoked key 'old'", logged);
        foreach (var secret in new[] { GoodKey, SlowKey, RevokedKey, "not-a-key" })
        {
            Assert.DoesNotContain(secret, logged);
        }
    }

    [Fact]
    public async Task ApiKeys_OverRateLimit_ResourceExhausted()
    {
        var (address, _) = await StartAsync("http://127.0.0.1:0", KeyConfig());
        using var channel = GrpcChannel.ForAddress(address);
        var client = new Verifier.VerifierClient(channel);

        for (var i = 0; i < 3; i++)
        {
            await client.DescribeAsync(new DescribeRequest(), Bearer(SlowKey)).ResponseAsync.DefaultTimeout();
        }

        var over = await Assert.ThrowsAsync<RpcException>(() => client.DescribeAsync(new DescribeRequest(), Bearer(SlowKey)).ResponseAsync.DefaultTimeout());

        Assert.Equal(StatusCode.ResourceExhausted, over.StatusCode);
        Assert.Contains("over its limit of 3 calls per minute", over.Status.Detail);
        Assert.Equal("1000", over.Trailers.GetValue("grpc-retry-pushback-ms"));
    }

    [Fact]
    public async Task ApiKeys_OverSessionLimit_ResourceExhausted()
    {
        var (address, _) = await StartAsync("http://127.0.0.1:0", KeyConfig());
        using var channel = GrpcChannel.ForAddress(address);
        var client = new Verifier.VerifierClient(channel);
        var calls = new List<AsyncDuplexStreamingCall<EdgeMessage, VerifierMessage>>();
        try
        {
            for (var i = 0; i < 3; i++)
            {
                var call = client.Decode(Bearer(GoodKey));
                calls.Add(call);
                var open = new Open { MaxNewTokens = 4, Sampling = new Sampling(), PromptIds = { 1, 2 } };
                await call.RequestStream.WriteAsync(new EdgeMessage { Open = open }).DefaultTimeout();
                if (i < 2)
                {
                    Assert.True(await call.ResponseStream.MoveNext(CancellationToken.None).DefaultTimeout());
                }
            }

            var error = await Assert.ThrowsAsync<RpcException>(() => calls[2].ResponseStream.MoveNext(CancellationToken.None).DefaultTimeout());
            Assert.Equal(StatusCode.ResourceExhausted, error.StatusCode);
            Assert.Contains("API key 'edge' already holds its maximum of 2 sessions", error.Status.Detail);
        }
        finally
        {
            calls.ForEach(c => c.Dispose());
        }
    }

    [Fact]
    public async Task Health_WithoutKey_Serving()
    {
        var (address, _) = await StartAsync("http://127.0.0.1:0", KeyConfig());
        using var channel = GrpcChannel.ForAddress(address);

        var health = await new Health.HealthClient(channel).CheckAsync(new HealthCheckRequest()).ResponseAsync.DefaultTimeout();

        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, health.Status);
    }

    [Theory]
    [InlineData("http://0.0.0.0:0")]
    [InlineData("http://*:0")]
    public void Plaintext_OffLoopback_RefusedUnlessAllowed(string url)
    {
        var refused = VerifierHost.Create(["--urls", url], builder => Configure(builder, []));
        var ex = Assert.Throws<OptionsValidationException>(() => VerifierHost.LoadModel(refused));
        Assert.Contains("would serve plaintext HTTP/2 off loopback", ex.Message);

        var logs = new CapturingLoggerProvider();
        var allowed = VerifierHost.Create(["--urls", url, "--allow-plaintext"], builder => Configure(builder, [], logs));
        VerifierHost.LoadModel(allowed);
        Assert.Contains(logs.Messages, m => m.Level == LogLevel.Warning && m.Message.Contains("traffic and API keys travel unencrypted", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Tls_TrustedCa_Generates_UntrustedRefused()
    {
        var certs = TestCertificates.Create(_temp.Combine("certs"));
        var (address, _) = await StartAsync("https://127.0.0.1:0", new Dictionary<string, string?>
        {
            ["Verifier:Tls:CertificatePath"] = certs.ServerCertPath,
            ["Verifier:Tls:KeyPath"] = certs.ServerKeyPath,
        });

        await using (var edge = await SpecEdgeClient.ConnectAsync(new EdgeClientOptions { Server = address, DraftModel = _pair.DraftDir, TrustedCaPath = certs.CaPath }).DefaultTimeout())
        {
            var report = await edge.Generate(new GenerationRequest { PromptIds = [new TokenId(3), new TokenId(4)], MaxNewTokens = 5 }).RunToEndAsync().DefaultTimeout();
            Assert.Equal(5, report.NewTokens);
        }

        var untrusted = await Assert.ThrowsAsync<VerifierUnavailableException>(() => SpecEdgeClient.ConnectAsync(new EdgeClientOptions { Server = address, DraftModel = _pair.DraftDir }).DefaultTimeout());
        Assert.Contains($"cannot use the verifier at {address}", untrusted.Message);
    }

    [Fact]
    public async Task MutualTls_ClientCertificateRequired_FromTheConfiguredCa()
    {
        var certs = TestCertificates.Create(_temp.Combine("mtls"));
        var (address, _) = await StartAsync("https://127.0.0.1:0", new Dictionary<string, string?>
        {
            ["Verifier:Tls:CertificatePath"] = certs.ServerCertPath,
            ["Verifier:Tls:KeyPath"] = certs.ServerKeyPath,
            ["Verifier:Tls:RequireClientCertificate"] = "true",
            ["Verifier:Tls:ClientCaPath"] = certs.CaPath,
        });

        await using (var edge = await SpecEdgeClient.ConnectAsync(new EdgeClientOptions
        {
            Server = address,
            DraftModel = _pair.DraftDir,
            TrustedCaPath = certs.CaPath,
            ClientCertificatePath = certs.ClientCertPath,
            ClientKeyPath = certs.ClientKeyPath,
        }).DefaultTimeout())
        {
            var report = await edge.Generate(new GenerationRequest { PromptIds = [new TokenId(5)], MaxNewTokens = 4 }).RunToEndAsync().DefaultTimeout();
            Assert.Equal(4, report.NewTokens);
        }

        await Assert.ThrowsAsync<VerifierUnavailableException>(() => SpecEdgeClient.ConnectAsync(new EdgeClientOptions { Server = address, DraftModel = _pair.DraftDir, TrustedCaPath = certs.CaPath }).DefaultTimeout());
        await Assert.ThrowsAsync<VerifierUnavailableException>(() => SpecEdgeClient.ConnectAsync(new EdgeClientOptions
        {
            Server = address,
            DraftModel = _pair.DraftDir,
            TrustedCaPath = certs.CaPath,
            ClientCertificatePath = certs.OtherClientCertPath,
            ClientKeyPath = certs.OtherClientKeyPath,
        }).DefaultTimeout());
    }

    [Fact]
    public void HashKey_IsSha256OfTheTrimmedKey()
    {
        Assert.Equal("2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b", ApiKeyAuthenticator.Hash(" secret\n"));
    }

    private static Metadata Bearer(string key) => new() { { "authorization", $"Bearer {key}" } };

    private static Dictionary<string, string?> KeyConfig() => new()
    {
        ["Verifier:ApiKeys:0:Name"] = "edge",
        ["Verifier:ApiKeys:0:Sha256"] = ApiKeyAuthenticator.Hash(GoodKey),
        ["Verifier:ApiKeys:0:MaxSessions"] = "2",
        ["Verifier:ApiKeys:1:Name"] = "slow",
        ["Verifier:ApiKeys:1:Sha256"] = ApiKeyAuthenticator.Hash(SlowKey),
        ["Verifier:ApiKeys:1:RequestsPerMinute"] = "3",
        ["Verifier:ApiKeys:2:Name"] = "old",
        ["Verifier:ApiKeys:2:Sha256"] = ApiKeyAuthenticator.Hash(RevokedKey),
        ["Verifier:ApiKeys:2:Revoked"] = "true",
    };

    private void Configure(WebApplicationBuilder builder, Dictionary<string, string?> settings, CapturingLoggerProvider? logs = null)
    {
        builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?>(settings)
        {
            ["Verifier:Model"] = _pair.TargetDir,
            ["Verifier:IntraOpThreads"] = "1",
            ["Logging:LogLevel:Default"] = "Warning",
        });
        if (logs is not null)
        {
            builder.Logging.AddProvider(logs);
        }
    }

    private async Task<(Uri Address, WebApplication App)> StartAsync(string url, Dictionary<string, string?> settings, CapturingLoggerProvider? logs = null)
    {
        var app = VerifierHost.Create(["--urls", url], builder => Configure(builder, settings, logs));
        VerifierHost.LoadModel(app);
        await app.StartAsync().DefaultTimeout();
        _apps.Add(app);
        var bound = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        return (new Uri(bound.Replace("[::]", IPAddress.Loopback.ToString(), StringComparison.Ordinal)), app);
    }
}
