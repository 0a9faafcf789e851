using Grpc.Core;
using Grpc.Core.Interceptors;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Options;
using SpecEdge.CloudVerifier.Configuration;
using SpecEdge.CloudVerifier.Logging;
using SpecEdge.CloudVerifier.Sessions;
using SpecEdge.CloudVerifier.Telemetry;

namespace SpecEdge.CloudVerifier.Hosting;

/// <summary>Where a verifier is in its life: what its readiness health check answers.</summary>
public enum VerifierState
{
    /// <summary>Listening, the model not yet loaded and warmed up: NOT_SERVING, Verifier calls refused (UNAVAILABLE).</summary>
    Loading,

    /// <summary>Serving: SERVING.</summary>
    Ready,

    /// <summary>Shutting down: NOT_SERVING from the first moment, new sessions refused, open ones finishing or sent elsewhere.</summary>
    Draining,
}

/// <summary>
/// The verifier's readiness, apart from its liveness. Readiness (gRPC health services <c>""</c> and
/// <c>specedge.v1.Verifier</c>) is SERVING only between the end of the warm-up and the start of draining; liveness
/// (service <c>liveness</c>) is SERVING whenever the process answers. A balancer or Kubernetes routes on the first and
/// restarts on the second.
/// </summary>
public sealed class VerifierReadiness
{
    /// <summary>The gRPC health service name of liveness.</summary>
    public const string LivenessService = "liveness";

    /// <summary>The health-check tag of readiness checks.</summary>
    public const string ReadyTag = "ready";

    /// <summary>The health-check tag of liveness checks.</summary>
    public const string LiveTag = "live";

    private int _state = (int)VerifierState.Loading;
    private volatile bool _modelLoaded;

    /// <summary>The current state.</summary>
    public VerifierState State => (VerifierState)Volatile.Read(ref _state);

    /// <summary>True once the model was loaded (the state may have moved on to draining since).</summary>
    public bool ModelLoaded => _modelLoaded;

    /// <summary>Held while this host loads its model, so it loads once (the command and a background loader may both try).</summary>
    internal Lock LoadLock { get; } = new();

    /// <summary>The model is loaded and warmed up: the verifier is ready, unless it already began draining.</summary>
    public void MarkReady()
    {
        _modelLoaded = true;
        Interlocked.CompareExchange(ref _state, (int)VerifierState.Ready, (int)VerifierState.Loading);
    }

    /// <summary>Draining begins: readiness turns NOT_SERVING and stays so.</summary>
    public void BeginDraining() => Volatile.Write(ref _state, (int)VerifierState.Draining);

    /// <summary>The readiness check: healthy only when <see cref="VerifierState.Ready"/>.</summary>
    public HealthCheckResult Check() => State switch
    {
        VerifierState.Ready => HealthCheckResult.Healthy("serving"),
        VerifierState.Loading => HealthCheckResult.Unhealthy("loading and warming up the model"),
        _ => HealthCheckResult.Unhealthy("draining"),
    };
}

/// <summary>The readiness health check over <see cref="VerifierReadiness"/>.</summary>
internal sealed class ReadinessHealthCheck(VerifierReadiness readiness) : IHealthCheck
{
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default) => Task.FromResult(readiness.Check());
}

/// <summary>
/// The first interceptor of every call: Verifier calls are refused with UNAVAILABLE while the model loads and new
/// sessions while the verifier drains (the edge retries elsewhere), and every Verifier call that ends with an error
/// status is counted by method and code.
/// </summary>
internal sealed class CallGate(VerifierReadiness readiness, VerifierMetrics metrics) : Interceptor
{
    private const string ServicePrefix = "/specedge.v1.Verifier/";

    public override Task<TResponse> UnaryServerHandler<TRequest, TResponse>(TRequest request, ServerCallContext context, UnaryServerMethod<TRequest, TResponse> continuation)
    {
        Admit(context);
        return Counted(context, () => continuation(request, context));
    }

    public override Task ServerStreamingServerHandler<TRequest, TResponse>(TRequest request, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation)
    {
        Admit(context);
        return Counted(context, async () =>
        {
            await continuation(request, responseStream, context).ConfigureAwait(false);
            return true;
        });
    }

    public override Task DuplexStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, DuplexStreamingServerMethod<TRequest, TResponse> continuation)
    {
        Admit(context);
        return Counted(context, async () =>
        {
            await continuation(requestStream, responseStream, context).ConfigureAwait(false);
            return true;
        });
    }

    /// <summary>Runs the call, counting an error status it ends with.</summary>
    private async Task<T> Counted<T>(ServerCallContext context, Func<Task<T>> call)
    {
        try
        {
            return await call().ConfigureAwait(false);
        }
        catch (RpcException ex)
        {
            Count(context, ex);
            throw;
        }
    }

    private void Admit(ServerCallContext context)
    {
        if (!context.Method.StartsWith(ServicePrefix, StringComparison.Ordinal))
        {
            return;
        }

        var state = readiness.State;
        if (state == VerifierState.Loading)
        {
            metrics.AdmissionRefused("loading");
            Refuse(context, "the verifier is still loading and warming up its model: retry in a moment or use another verifier");
        }

        if (state == VerifierState.Draining && !context.Method.EndsWith("/Describe", StringComparison.Ordinal))
        {
            metrics.AdmissionRefused("draining");
            Refuse(context, "the verifier is draining: open the session on another verifier");
        }
    }

    private void Refuse(ServerCallContext context, string detail)
    {
        var ex = new RpcException(new Status(StatusCode.Unavailable, detail));
        Count(context, ex);
        throw ex;
    }

    private void Count(ServerCallContext context, RpcException ex)
    {
        if (context.Method.StartsWith(ServicePrefix, StringComparison.Ordinal))
        {
            metrics.CallRefused(context.Method[ServicePrefix.Length..], ex.StatusCode);
        }
    }
}

/// <summary>
/// Shutdown in order: on SIGTERM (or any stop) readiness turns NOT_SERVING at once and new sessions are refused; after
/// <see cref="VerifierOptions.DrainDelaySeconds"/> (time for a balancer or Kubernetes to see it), open sessions are
/// told to move (<see cref="SessionRegistry.BeginShutdown"/>) and the server stops, letting rounds in flight finish
/// within the shutdown grace.
/// </summary>
internal sealed class DrainCoordinator(VerifierReadiness readiness, IServiceProvider services, IOptions<VerifierOptions> options, ILogger<DrainCoordinator> logger) : IHostedLifecycleService
{
    public Task StartingAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StartedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public async Task StoppingAsync(CancellationToken cancellationToken)
    {
        readiness.BeginDraining();
        var delay = TimeSpan.FromSeconds(options.Value.DrainDelaySeconds);
        if (delay > TimeSpan.Zero)
        {
            VerifierLog.DrainDelay(logger, (int)delay.TotalSeconds);
            try
            {
                await Task.Delay(delay, cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                // The host's shutdown timeout ran out first: move the sessions now.
            }
        }

        if (readiness.ModelLoaded)
        {
            services.GetRequiredService<SessionRegistry>().BeginShutdown();
        }
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StoppedAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
