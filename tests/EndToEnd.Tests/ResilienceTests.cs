using Grpc.Core;
using Grpc.Net.Client;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.DependencyInjection;
using SpecEdge.CloudVerifier.Configuration;
using SpecEdge.CloudVerifier.Hosting;
using SpecEdge.EdgeClient.Client;
using SpecEdge.EdgeClient.Link;
using SpecEdge.EdgeClient.Transport;
using SpecEdge.LinkEmulator;
using SpecEdge.Protocol.V1;
using SpecEdge.Shared.Decoding;
using SpecEdge.Shared.Runtime;
using SpecEdge.Shared.Tokenization;
using SpecEdge.TestUtilities;

namespace SpecEdge.EndToEnd.Tests;

/// <summary>
/// The edge keeps every committed token through failures: broken connections, stalled links, a verifier shutting down,
/// a verifier gone for good (failover), and with the opt-in degraded policy, no verifier at all. Output is identical to
/// the fault-free run: nothing lost, nothing repeated.
/// </summary>
public sealed class ResilienceTests : IAsyncLifetime
{
    private const int NewTokens = 40;
    private static readonly TokenId[] Prompt = [new(256), new(84), new(104), new(101)];
    private readonly TempDirectory _temp = new("resilience");
    private readonly List<WebApplication> _apps = [];
    private readonly Dictionary<SpecEdgeClient, EmulatedLink> _links = [];
    private TestPair _pair = null!;
    private IReadOnlyList<int> _expected = [];

    public async Task InitializeAsync()
    {
        _pair = TestModels.WritePair(_temp.Path);
        using var model = TestModels.Load(_pair.TargetDir);
        _expected = TargetOnlyDecoding.Greedy(model, Prompt, NewTokens).Select(t => t.Value).ToList();
        await Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        foreach (var app in _apps)
        {
            await app.DisposeAsync();
        }

        _temp.Dispose();
    }

    [Fact]
    public async Task DroppedConnections_EveryFewRounds_OutputIdentical()
    {
        var address = await StartVerifierAsync();
        await using var client = await ConnectAsync([address], "rtt=2ms");
        var relay = RelayOf(client);
        var generation = client.Generate(Request(GenerationMode.Speculative));
        var tokens = new List<int>();
        var drops = 0;

        await foreach (var token in generation.WithCancellation(CancellationToken.None))
        {
            tokens.Add(token.Id.Value);
            if (tokens.Count % 7 == 0)
            {
                drops += relay.DropConnections();
            }
        }

        Assert.True(drops >= 3, $"only {drops} connections dropped");
        Assert.Equal(_expected, tokens);
        Assert.True(generation.Report!.Resilience.Sessions > 1);
    }

    /// <summary>
    /// Sampling through dropped streams: a resumed session draws the same random numbers (they depend only on the seed
    /// and the position), so each sampled generation interrupted by drops is token for token the uninterrupted one, in
    /// every drafting mode. (Its distribution is therefore the uninterrupted one's, which the sampling tests check.)
    /// </summary>
    [Theory]
    [InlineData(GenerationMode.Speculative)]
    [InlineData(GenerationMode.Preemptive)]
    [InlineData(GenerationMode.Conditional)]
    [InlineData(GenerationMode.Proactive)]
    public async Task Sampling_DroppedConnections_ResumedOutputIdenticalToUninterrupted(GenerationMode mode)
    {
        var address = await StartVerifierAsync();
        await using var steady = await ConnectAsync([address]);
        await using var dropping = await ConnectAsync([address], "rtt=2ms");
        var drops = 0;
        for (var seed = 1UL; seed <= 3; seed++)
        {
            var request = Request(mode) with { Sampling = new SamplingConfig { Temperature = 1f, TopP = 0.95f, Seed = seed } };
            var expected = (await steady.Generate(request).RunToEndAsync().DefaultTimeout()).TokenIds;
            var tokens = new List<int>();
            await foreach (var token in dropping.Generate(request).WithCancellation(CancellationToken.None))
            {
                tokens.Add(token.Id.Value);
                if (tokens.Count % 9 == 0)
                {
                    drops += RelayOf(dropping).DropConnections();
                }
            }

            Assert.Equal(expected, tokens);
        }

        Assert.True(drops >= 3, $"only {drops} connections dropped");
    }

    [Fact]
    public async Task StalledLink_LongerThanRoundTimeout_OutputIdentical()
    {
        var address = await StartVerifierAsync();
        await using var client = await ConnectAsync([address], "rtt=2ms", roundTimeout: TimeSpan.FromMilliseconds(800));
        var generation = client.Generate(Request(GenerationMode.Conditional));
        var tokens = new List<int>();
        var stalled = false;

        await foreach (var token in generation.WithCancellation(CancellationToken.None))
        {
            tokens.Add(token.Id.Value);
            if (!stalled && tokens.Count >= 10)
            {
                stalled = true;
                RelayOf(client).Stall(TimeSpan.FromSeconds(2));
            }
        }

        Assert.Equal(_expected, tokens);
        Assert.True(generation.Report!.Resilience.Retries >= 1);
    }

    [Fact]
    public async Task VerifierGone_FailsOverToSecond_OutputIdentical()
    {
        var first = await StartVerifierAsync();
        var second = await StartVerifierAsync();
        await using var client = await ConnectAsync([first, second]);
        var generation = client.Generate(Request(GenerationMode.Preemptive));
        var tokens = new List<int>();

        await foreach (var token in generation.WithCancellation(CancellationToken.None))
        {
            tokens.Add(token.Id.Value);
            if (tokens.Count == 12)
            {
                await _apps[0].DisposeAsync();
                _apps.RemoveAt(0);
            }
        }

        Assert.Equal(_expected, tokens);
        Assert.Equal([first.ToString(), second.ToString()], generation.Report!.Resilience.Verifiers);
    }

    [Fact]
    public async Task VerifierShuttingDown_SessionResumesElsewhere_OutputIdentical()
    {
        var first = await StartVerifierAsync();
        var second = await StartVerifierAsync();
        await using var client = await ConnectAsync([first, second]);
        var generation = client.Generate(Request(GenerationMode.Speculative));
        var tokens = new List<int>();
        Task? stopping = null;

        await foreach (var token in generation.WithCancellation(CancellationToken.None))
        {
            tokens.Add(token.Id.Value);
            if (tokens.Count == 8)
            {
                stopping = _apps[0].StopAsync();
            }
        }

        await stopping!.DefaultTimeout();
        Assert.Equal(_expected, tokens);
        Assert.Equal([first.ToString(), second.ToString()], generation.Report!.Resilience.Verifiers);

        // Told the first verifier is going away, the edge resumes on the second at once, not on the first again.
        Assert.Equal(2, generation.Report.Resilience.Sessions);
    }

    [Fact]
    public async Task ShuttingDown_SendsDrainingThenUnavailable()
    {
        var address = await StartVerifierAsync();
        using var channel = GrpcChannel.ForAddress(address);
        var client = new Verifier.VerifierClient(channel);
        using var open = client.Decode();
        await open.RequestStream.WriteAsync(new EdgeMessage { Open = new Open { PromptIds = { 1, 2 }, MaxNewTokens = 8, Sampling = new Sampling() } }).DefaultTimeout();
        Assert.True(await open.ResponseStream.MoveNext(CancellationToken.None).DefaultTimeout());

        var stopping = _apps[0].StopAsync();
        Assert.True(await open.ResponseStream.MoveNext(CancellationToken.None).DefaultTimeout());
        var draining = open.ResponseStream.Current;
        await open.RequestStream.CompleteAsync().DefaultTimeout();
        var error = await Assert.ThrowsAsync<RpcException>(() => open.ResponseStream.MoveNext(CancellationToken.None).DefaultTimeout());
        await stopping.DefaultTimeout();

        Assert.Equal(VerifierMessage.KindOneofCase.Draining, draining.KindCase);
        Assert.Equal(2u, draining.Draining.CommittedLength);
        Assert.True(error.StatusCode == StatusCode.Unavailable, $"expected Unavailable, got {error}");
        Assert.Contains("shutting down: resume the generation on another verifier (committed length 2)", error.Status.Detail);
    }

    [Fact]
    public async Task KvBudget_TooSmall_ResourceExhaustedWithRetryHint()
    {
        var address = await StartVerifierAsync(o => o.Limits.KvBudgetMegabytes = 0.1);
        using var channel = GrpcChannel.ForAddress(address);
        using var call = new Verifier.VerifierClient(channel).Decode();
        await call.RequestStream.WriteAsync(new EdgeMessage { Open = new Open { PromptIds = { 1 }, MaxNewTokens = 4000, Sampling = new Sampling() } }).DefaultTimeout();

        var error = await Assert.ThrowsAsync<RpcException>(() => call.ResponseStream.MoveNext(CancellationToken.None).DefaultTimeout());

        Assert.Equal(StatusCode.ResourceExhausted, error.StatusCode);
        Assert.Contains("budget of 0.1 MiB", error.Status.Detail);
        Assert.Equal("1000", error.Trailers.GetValue("grpc-retry-pushback-ms"));
    }

    [Fact]
    public async Task DegradedPolicy_NoVerifier_DraftContinuesMarkedUnverified_ThenVerifiedAgain()
    {
        var address = await StartVerifierAsync();
        // Drafting at 20 ms a token keeps the degraded stretch going until the link is back. After the stall, reopening the
        // session (prefill of the committed tokens, then a round) must fit in the 1.5 s watchdog, even on a busy machine.
        await using var client = await ConnectAsync([address], "rtt=2ms", roundTimeout: TimeSpan.FromMilliseconds(400), degradedAfter: TimeSpan.FromSeconds(1.5), probeInterval: TimeSpan.FromMilliseconds(200), draftMsPerToken: 20);
        var generation = client.Generate(Request(GenerationMode.Speculative) with { MaxNewTokens = 150 });
        var tokens = new List<CommittedToken>();

        await foreach (var token in generation.WithCancellation(CancellationToken.None))
        {
            tokens.Add(token);
            if (tokens.Count == 6)
            {
                RelayOf(client).Stall(TimeSpan.FromSeconds(3));
            }
        }

        var report = generation.Report!;
        Assert.Equal(150, tokens.Count);
        Assert.NotEmpty(report.UnverifiedTokenIndices);
        Assert.Equal(report.UnverifiedTokenIndices, tokens.Where(t => !t.Verified).Select(t => t.Index));
        Assert.True(tokens[^1].Verified, "decoding did not return to the verifier once it answered again");

        // Until the first unverified token, the output is the target's own.
        var firstUnverified = report.UnverifiedTokenIndices[0];
        Assert.Equal(_expected.Take(Math.Min(firstUnverified, _expected.Count)), tokens.Take(firstUnverified).Select(t => t.Id.Value).Take(_expected.Count));
    }

    [Fact]
    public async Task DegradedPolicyOff_NoVerifierAtAll_FailsWithClearError()
    {
        var address = await StartVerifierAsync();
        await using var client = await ConnectAsync([address], roundTimeout: TimeSpan.FromMilliseconds(300), retries: 2);
        await _apps[0].DisposeAsync();
        _apps.Clear();

        var ex = await Assert.ThrowsAsync<VerifierUnavailableException>(() => client.Generate(Request(GenerationMode.Speculative)).RunToEndAsync().DefaultTimeout());

        Assert.Contains("no verifier could finish the generation after 2 retries", ex.Message);
    }

    /// <summary>
    /// A verifier that answers Open with a final verdict breaks the protocol: the edge fails at once with
    /// <see cref="ProtocolViolationException"/> after one attempt, instead of retrying a bug as if it were an outage.
    /// </summary>
    [Fact]
    public async Task ProtocolBreakingVerifier_FailsOnceWithProtocolViolation_NotRetried()
    {
        var real = await StartVerifierAsync();
        using var realChannel = GrpcChannel.ForAddress(real);
        var broken = new ProtocolBreakingVerifier(new Verifier.VerifierClient(realChannel));
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.ConfigureKestrel(k => k.Listen(System.Net.IPAddress.Loopback, 0, l => l.Protocols = Microsoft.AspNetCore.Server.Kestrel.Core.HttpProtocols.Http2));
        builder.Services.AddGrpc();
        builder.Services.AddSingleton(broken);
        var app = builder.Build();
        app.MapGrpcService<ProtocolBreakingVerifier>();
        await app.StartAsync().DefaultTimeout();
        _apps.Add(app);
        var address = new Uri(app.Urls.First());
        await using var client = await ConnectAsync([address], retries: 8);

        var error = await Assert.ThrowsAsync<ProtocolViolationException>(() => client.Generate(Request(GenerationMode.Speculative)).RunToEndAsync().DefaultTimeout());

        Assert.Contains("answered Open with Final", error.Message);
        Assert.Equal(1, broken.DecodeCalls);
    }

    private GenerationRequest Request(GenerationMode mode) => new()
    {
        PromptIds = Prompt,
        Mode = mode,
        MaxNewTokens = NewTokens,
        DraftTokens = 3,
        StopAtEos = false,
    };

    private async Task<Uri> StartVerifierAsync(Action<VerifierOptions>? configure = null)
    {
        var (app, address) = await VerifierHost.StartLoopbackAsync(_pair.TargetDir, o =>
        {
            o.IntraOpThreads = 1;
            o.DefaultExitThreshold = 0;
            o.ShutdownGraceSeconds = 5;
            configure?.Invoke(o);
        }).DefaultTimeout();
        _apps.Add(app);
        return address;
    }

    private async Task<SpecEdgeClient> ConnectAsync(IReadOnlyList<Uri> servers, string? link = null, TimeSpan? roundTimeout = null, TimeSpan? degradedAfter = null, TimeSpan? probeInterval = null, int retries = 8, double draftMsPerToken = 0)
    {
        var emulated = link is null ? null : new EmulatedLink(LinkProfile.Parse(link));
        var options = new EdgeClientOptions
        {
            Server = servers[0],
            FallbackServers = [.. servers.Skip(1)],
            DraftModel = _pair.DraftDir,
            IntraOpThreads = 1,
            RoundTimeout = roundTimeout ?? TimeSpan.FromSeconds(5),
            RetryDelay = TimeSpan.FromMilliseconds(50),
            MaxRetries = retries,
            BreakDuration = TimeSpan.FromMilliseconds(500),
            DegradedAfter = degradedAfter,
            ProbeInterval = probeInterval ?? TimeSpan.FromSeconds(1),
            Profile = new SpecEdge.Shared.Timing.ComputeProfile { Name = "slow-edge", DraftMsPerToken = draftMsPerToken },
        };
        var client = await SpecEdgeClient.ConnectAsync(emulated?.ApplyTo(options) ?? options).DefaultTimeout();
        if (emulated is not null)
        {
            _links[client] = emulated;
        }

        return client;
    }

    /// <summary>The link emulator's relay in front of the client's primary verifier.</summary>
    private LinkRelay RelayOf(SpecEdgeClient client) => _links[client].Relay!;
}

/// <summary>Describes the real verifier's model (so the edge connects), then answers every Open with a final verdict.</summary>
public sealed class ProtocolBreakingVerifier(Verifier.VerifierClient real) : Verifier.VerifierBase
{
    private int _decodeCalls;

    public int DecodeCalls => Volatile.Read(ref _decodeCalls);

    public override async Task<ModelDescription> Describe(DescribeRequest request, ServerCallContext context) =>
        await real.DescribeAsync(request, cancellationToken: context.CancellationToken);

    public override async Task Decode(IAsyncStreamReader<EdgeMessage> requestStream, IServerStreamWriter<VerifierMessage> responseStream, ServerCallContext context)
    {
        Interlocked.Increment(ref _decodeCalls);
        if (await requestStream.MoveNext(context.CancellationToken))
        {
            await responseStream.WriteAsync(new VerifierMessage { Final = new FinalVerdict { Round = 1, NextId = 1 } });
        }
    }
}
