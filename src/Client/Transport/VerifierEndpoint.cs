using System.Security.Cryptography.X509Certificates;
using Grpc.Core;
using Grpc.Core.Interceptors;
using Grpc.Net.Client;
using Grpc.Net.Client.Balancer;
using Grpc.Net.Client.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Polly;
using Polly.CircuitBreaker;
using SpecEdge.EdgeClient.Client;
using SpecEdge.Protocol.V1;

namespace SpecEdge.EdgeClient.Transport;

/// <summary>
/// One verifier the edge may use: its channel (through an emulated link when asked), a client that sends the API key,
/// and a circuit breaker that stops sending work to it for a while after repeated failures.
/// </summary>
internal sealed class VerifierEndpoint : IAsyncDisposable
{
    private readonly GrpcChannel _channel;
    private readonly CircuitBreakerStateProvider _breakerState;

    private readonly IAsyncDisposable? _hooked;

    private VerifierEndpoint(Uri address, GrpcChannel channel, IAsyncDisposable? hooked, CallInvoker invoker, ResiliencePipeline breaker, CircuitBreakerStateProvider breakerState)
    {
        Address = address;
        _channel = channel;
        _hooked = hooked;
        Client = new Verifier.VerifierClient(invoker);
        Breaker = breaker;
        _breakerState = breakerState;
    }

    public Uri Address { get; }

    public Verifier.VerifierClient Client { get; }

    /// <summary>Runs work against this verifier, counting its failures.</summary>
    public ResiliencePipeline Breaker { get; }

    public bool Available => _breakerState.CircuitState is CircuitState.Closed or CircuitState.HalfOpen;

    public static VerifierEndpoint Create(Uri server, EdgeClientOptions options)
    {
        var handler = new SocketsHttpHandler
        {
            ConnectTimeout = options.ConnectTimeout,
            EnableMultipleHttp2Connections = true,
            PooledConnectionIdleTimeout = Timeout.InfiniteTimeSpan,
            KeepAlivePingDelay = TimeSpan.FromSeconds(30),
            KeepAlivePingTimeout = TimeSpan.FromSeconds(15),
            // The trace context the verifier sees is the generation's, set per call (EdgeTelemetry.AddCallMetadata), not
            // that of an HTTP client span nobody records.
            ActivityHeadersPropagator = null,
        };
        if (options.TrustedCaPath is { } caPath)
        {
            var ca = X509Certificate2.CreateFromPem(File.ReadAllText(caPath));
            handler.SslOptions.RemoteCertificateValidationCallback = (_, certificate, _, errors) =>
            {
                if (certificate is null)
                {
                    return false;
                }

                using var chain = new X509Chain();
                chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
                chain.ChainPolicy.CustomTrustStore.Add(ca);
                chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
                var nameOk = (errors & System.Net.Security.SslPolicyErrors.RemoteCertificateNameMismatch) == 0;
                return nameOk && chain.Build(new X509Certificate2(certificate));
            };
        }

        if (options.ClientCertificatePath is { } certPath)
        {
            handler.SslOptions.ClientCertificates = [X509Certificate2.CreateFromPemFile(certPath, options.ClientKeyPath)];
        }

        var channelOptions = new GrpcChannelOptions
        {
            HttpHandler = handler,
            ThrowOperationCanceledOnCancellation = true,
            MaxReceiveMessageSize = 16 * 1024 * 1024,
        };
        var target = server.ToString();
        if (options.Balancing == VerifierBalancing.SessionHash)
        {
            // Client-side balancing: the resolver finds every verifier behind the name, the picker hashes the session.
            var resolver = options.Resolver ?? new DnsResolverFactory(TimeSpan.FromSeconds(15));
            target = $"{resolver.Name}:///{server.Host}:{server.Port}";
            var services = new ServiceCollection();
            services.AddSingleton(resolver);
            services.AddSingleton<LoadBalancerFactory>(new SessionHashLoadBalancerFactory());
            channelOptions.ServiceProvider = services.BuildServiceProvider();
            channelOptions.Credentials = server.Scheme == "https" ? ChannelCredentials.SecureSsl : ChannelCredentials.Insecure;
            channelOptions.ServiceConfig = new ServiceConfig { LoadBalancingConfigs = { new LoadBalancingConfig(SessionHashLoadBalancerFactory.PolicyName) } };
        }

        var channel = GrpcChannel.ForAddress(target, channelOptions);
        // Every call carries its generation's session-affinity key and trace context (a balancer hashes on the first).
        CallInvoker invoker = channel.CreateCallInvoker().Intercept(EdgeTelemetry.AddCallMetadata);
        if (options.ApiKey is { Length: > 0 } key)
        {
            invoker = invoker.Intercept(metadata =>
            {
                metadata.Add("authorization", $"Bearer {key}");
                return metadata;
            });
        }

        var state = new CircuitBreakerStateProvider();
        var breaker = new ResiliencePipelineBuilder { TimeProvider = options.Time }
            .AddCircuitBreaker(new CircuitBreakerStrategyOptions
            {
                ShouldHandle = new PredicateBuilder().Handle<Exception>(Resilience.IsTransient),
                FailureRatio = 0.5,
                MinimumThroughput = 2,
                SamplingDuration = TimeSpan.FromSeconds(30),
                BreakDuration = options.BreakDuration,
                StateProvider = state,
            })
            .Build();
        // Last, so a hook sees the finished handler (a link emulator routes its connections through a relay).
        var hooked = options.ConnectionHook?.Invoke(server, handler);
        return new VerifierEndpoint(server, channel, hooked, invoker, breaker, state);
    }

    /// <summary>
    /// Asks the verifier to describe itself, within <paramref name="timeout"/>. The channel reports a passed deadline as
    /// <see cref="OperationCanceledException"/> (ThrowOperationCanceledOnCancellation, which the Polly timeouts need); this
    /// gives it back as the RPC failure it is.
    /// </summary>
    /// <exception cref="RpcException">The call failed; DeadlineExceeded when no answer came within the timeout.</exception>
    public async Task<ModelDescription> DescribeAsync(TimeSpan timeout, CancellationToken cancellationToken)
    {
        try
        {
            return await Client.DescribeAsync(new DescribeRequest(), deadline: DateTime.UtcNow + timeout, cancellationToken: cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new RpcException(new Status(StatusCode.DeadlineExceeded, $"Describe, {timeout.TotalSeconds:0.###} s"));
        }
    }

    public async ValueTask DisposeAsync()
    {
        _channel.Dispose();
        if (_hooked is not null)
        {
            await _hooked.DisposeAsync().ConfigureAwait(false);
        }
    }
}
