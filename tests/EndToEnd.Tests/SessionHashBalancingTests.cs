using System.Collections.Concurrent;
using Grpc.Core;
using Grpc.Core.Interceptors;
using Grpc.Net.Client.Balancer;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using SpecEdge.CloudVerifier.Hosting;
using SpecEdge.EdgeClient.Client;
using SpecEdge.Shared.Runtime;
using SpecEdge.Shared.Tokenization;
using SpecEdge.TestUtilities;

namespace SpecEdge.EndToEnd.Tests;

/// <summary>
/// Client-side balancing without a balancer in front: the edge resolves one name to three real verifiers and sends each
/// generation to one of them by its session key; the generations spread, each stays on its verifier, and a verifier that
/// goes away mid-generation costs nothing but a resume elsewhere. (Name resolution is Grpc.Net.Client's static resolver
/// instead of DNS: one test machine cannot give a name three loopback ports.)
/// </summary>
public sealed class SessionHashBalancingTests : IAsyncLifetime
{
    private const int NewTokens = 24;
    private static readonly TokenId[] Prompt = [new(256), new(72), new(105), new(33)];
    private readonly TempDirectory _temp = new("session-hash");
    private readonly List<WebApplication> _apps = [];
    private readonly List<SessionLog> _logs = [];
    private TestPair _pair = null!;
    private List<int> _expected = [];

    public async Task InitializeAsync()
    {
        _pair = TestModels.WritePair(_temp.Path);
        using (var model = TestModels.Load(_pair.TargetDir))
        {
            _expected = TargetOnlyDecoding.Greedy(model, Prompt, NewTokens).Select(t => t.Value).ToList();
        }

        for (var i = 0; i < 3; i++)
        {
            var log = new SessionLog();
            var (app, _) = await VerifierHost.StartLoopbackAsync(_pair.TargetDir, o => o.IntraOpThreads = 1, builder =>
            {
                builder.Services.AddSingleton(log);
                builder.Services.Configure<Grpc.AspNetCore.Server.GrpcServiceOptions>(o => o.Interceptors.Add<SessionLogInterceptor>());
            }).DefaultTimeout();
            _apps.Add(app);
            _logs.Add(log);
        }
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
    public async Task Generations_SpreadOverTheResolvedVerifiers_EachStaysOnOne()
    {
        await using var client = await ConnectAsync();
        var modes = new[] { GenerationMode.Speculative, GenerationMode.Conditional, GenerationMode.Cloud, GenerationMode.Preemptive };

        for (var g = 0; g < 12; g++)
        {
            var report = await client.Generate(Request(modes[g % modes.Length])).RunToEndAsync().DefaultTimeout();
            Assert.Equal(_expected, report.TokenIds);
        }

        var keysPerVerifier = _logs.Select(l => l.Sessions.Distinct().ToHashSet()).ToList();
        Assert.Equal(12, keysPerVerifier.Sum(k => k.Count));
        Assert.True(keysPerVerifier.Count(k => k.Count > 0) >= 2, $"every generation went to one verifier: {string.Join(", ", keysPerVerifier.Select(k => k.Count))}");
        for (var i = 0; i < keysPerVerifier.Count; i++)
        {
            for (var j = i + 1; j < keysPerVerifier.Count; j++)
            {
                Assert.Empty(keysPerVerifier[i].Intersect(keysPerVerifier[j]));
            }
        }
    }

    [Fact]
    public async Task AVerifierGoingAway_MidGeneration_TheGenerationResumesOnAnother()
    {
        await using var client = await ConnectAsync();
        var generation = client.Generate(Request(GenerationMode.Speculative));
        var tokens = new List<int>();
        int? stopped = null;
        await foreach (var token in generation.WithCancellation(CancellationToken.None))
        {
            tokens.Add(token.Id.Value);
            if (stopped is null && tokens.Count == 8)
            {
                stopped = _logs.FindIndex(l => !l.Sessions.IsEmpty);
                await _apps[stopped.Value].StopAsync().DefaultTimeout();
            }
        }

        Assert.Equal(_expected, tokens);
        Assert.True(generation.Report!.Resilience.Sessions > 1, "the generation never left the stopped verifier");
        var key = _logs[stopped!.Value].Sessions.First();
        Assert.Contains(_logs.Where((_, i) => i != stopped), l => l.Sessions.Contains(key));
    }

    private GenerationRequest Request(GenerationMode mode) => new()
    {
        PromptIds = Prompt,
        Mode = mode,
        MaxNewTokens = NewTokens,
        DraftTokens = 3,
        StopAtEos = false,
    };

    private Task<SpecEdgeClient> ConnectAsync()
    {
        var addresses = _apps.Select(a => new Uri(a.Urls.First())).Select(u => new BalancerAddress(u.Host, u.Port)).ToArray();
        return SpecEdgeClient.ConnectAsync(new EdgeClientOptions
        {
            Server = new Uri("http://verifiers.test:50051"),
            Balancing = VerifierBalancing.SessionHash,
            Resolver = new StaticResolverFactory(_ => addresses),
            DraftModel = _pair.DraftDir,
            IntraOpThreads = 1,
            RoundTimeout = TimeSpan.FromSeconds(5),
            RetryDelay = TimeSpan.FromMilliseconds(50),
            MaxRetries = 10,
        }).DefaultTimeout();
    }

    /// <summary>The session keys of the Decode and Generate calls one verifier served.</summary>
    public sealed class SessionLog
    {
        public ConcurrentQueue<string> Sessions { get; } = new();
    }

    /// <summary>Records each Decode and Generate call's session key on the verifier it reached.</summary>
    public sealed class SessionLogInterceptor(SessionLog log) : Interceptor
    {
        public override Task DuplexStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, DuplexStreamingServerMethod<TRequest, TResponse> continuation)
        {
            Record(context);
            return continuation(requestStream, responseStream, context);
        }

        public override Task ServerStreamingServerHandler<TRequest, TResponse>(TRequest request, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation)
        {
            Record(context);
            return continuation(request, responseStream, context);
        }

        private void Record(ServerCallContext context)
        {
            if (context.RequestHeaders.GetValue(EdgeTelemetry.SessionHeader) is { } key)
            {
                log.Sessions.Enqueue(key);
            }
        }
    }
}
