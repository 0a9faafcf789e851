using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;
using SpecEdge.CloudVerifier.Configuration;
using SpecEdge.CloudVerifier.Scheduling;
using SpecEdge.CloudVerifier.Security;
using SpecEdge.CloudVerifier.Services;
using SpecEdge.CloudVerifier.Sessions;
using SpecEdge.CloudVerifier.Telemetry;

namespace SpecEdge.CloudVerifier.Hosting;

/// <summary>
/// The verifier in any ASP.NET Core host: <c>services.AddSpecEdgeVerifier(configuration.GetSection("Verifier"))</c> and
/// <c>app.MapSpecEdgeVerifier()</c>. The host owns Kestrel (HTTP/2 for gRPC, TLS), logging and ONNX Runtime's natives;
/// the verifier loads and warms up its model in the background once the host starts (readiness NOT_SERVING until then).
/// </summary>
public static class SpecEdgeVerifierExtensions
{
    /// <summary>
    /// Adds the verifier: its options bound from <paramref name="section"/> (the <c>Verifier</c> section's keys: Model,
    /// Device, Limits, Batching, ApiKeys, Telemetry…) and validated at start, then <paramref name="configure"/>; the
    /// model, scheduler, sessions, security, health, metrics and traces.
    /// </summary>
    public static IServiceCollection AddSpecEdgeVerifier(this IServiceCollection services, IConfiguration section, Action<VerifierOptions>? configure = null)
    {
        services.AddSpecEdgeVerifierServices(section);
        if (configure is not null)
        {
            services.Configure(configure);
        }

        services.AddHostedService<ModelLoadingService>();
        return services.AddSpecEdgeVerifierTelemetry(section, configure);
    }

    /// <summary>Maps the <c>specedge.v1.Verifier</c> gRPC service, the gRPC health service and server reflection.</summary>
    public static IEndpointRouteBuilder MapSpecEdgeVerifier(this IEndpointRouteBuilder endpoints)
    {
        endpoints.MapGrpcService<VerifierService>();
        endpoints.MapGrpcHealthChecksService();
        endpoints.MapGrpcReflectionService();
        return endpoints;
    }

    /// <summary>Everything but the telemetry exporters (the command adds those after its host's own configuration).</summary>
    internal static IServiceCollection AddSpecEdgeVerifierServices(this IServiceCollection services, IConfiguration section)
    {
        services.AddOptions<VerifierOptions>()
            .Bind(section)
            .ValidateDataAnnotations()
            .ValidateOnStart();
        services.AddSingleton<IValidateOptions<VerifierOptions>, NestedOptionsValidator>();
        services.TryAddSingleton(TimeProvider.System);
        services.AddSingleton<TargetModel>();
        services.AddSingleton<BatchScheduler>();
        services.AddSingleton<SessionRegistry>();
        services.AddSingleton<ApiKeyAuthenticator>();
        services.AddSingleton<VerifierReadiness>();
        services.AddSingleton<VerifierMetrics>();
        services.AddHostedService<DrainCoordinator>();
        services.AddGrpc(o =>
        {
            o.MaxReceiveMessageSize = 16 * 1024 * 1024;
            o.Interceptors.Add<CallGate>();
            o.Interceptors.Add<AuthInterceptor>();
        });
        // Readiness ("" and specedge.v1.Verifier) apart from liveness ("liveness"); Check runs the checks at each call.
        services.AddGrpcHealthChecks(o =>
        {
            o.Services.Map("", r => r.Tags.Contains(VerifierReadiness.ReadyTag));
            o.Services.Map(SpecEdge.Protocol.V1.Verifier.Descriptor.FullName, r => r.Tags.Contains(VerifierReadiness.ReadyTag));
            o.Services.Map(VerifierReadiness.LivenessService, r => r.Tags.Contains(VerifierReadiness.LiveTag));
        })
            .AddCheck<ReadinessHealthCheck>("ready", tags: [VerifierReadiness.ReadyTag])
            .AddCheck("live", () => Microsoft.Extensions.Diagnostics.HealthChecks.HealthCheckResult.Healthy("answering"), tags: [VerifierReadiness.LiveTag]);
        services.Configure<Microsoft.Extensions.Diagnostics.HealthChecks.HealthCheckPublisherOptions>(o =>
        {
            o.Delay = TimeSpan.Zero;
            o.Period = TimeSpan.FromSeconds(1);
        });
        services.AddGrpcReflection();
        return services;
    }

    /// <summary>
    /// OpenTelemetry: the verifier's meter and activity source (and ASP.NET Core's, Kestrel's and the runtime's meters),
    /// a Prometheus scrape endpoint on its own HTTP/1.1 listener when <c>Telemetry:MetricsUrl</c> is set, and OTLP
    /// export of metrics and traces when <c>Telemetry:OtlpEndpoint</c> or <c>OTEL_EXPORTER_OTLP_ENDPOINT</c> is.
    /// </summary>
    internal static IServiceCollection AddSpecEdgeVerifierTelemetry(this IServiceCollection services, IConfiguration section, Action<VerifierOptions>? configure = null)
    {
        var settings = new VerifierOptions();
        section.Bind(settings);
        configure?.Invoke(settings);
        var metricsUrl = VerifierHost.NormalizePrefix(settings.Telemetry.MetricsUrl);
        var otlp = settings.Telemetry.OtlpEndpoint;
        var useOtlp = !string.IsNullOrEmpty(otlp) || !string.IsNullOrEmpty(Environment.GetEnvironmentVariable("OTEL_EXPORTER_OTLP_ENDPOINT"));
        if (metricsUrl is null && !useOtlp)
        {
            return services;
        }

        var telemetry = services.AddOpenTelemetry()
            .ConfigureResource(r => r.AddService("specedge-verifier", serviceVersion: typeof(VerifierHost).Assembly.GetName().Version?.ToString()));
        telemetry.WithMetrics(metrics =>
        {
            metrics.AddMeter(VerifierMetrics.MeterName, "Microsoft.AspNetCore.Hosting", "Microsoft.AspNetCore.Server.Kestrel", "System.Runtime");
            if (metricsUrl is not null)
            {
                var (host, port) = VerifierHost.SplitPrefix(metricsUrl);
                metrics.AddPrometheusHttpListener(o =>
                {
                    o.Host = host;
                    o.Port = port;
                    // Every scrape reads the instruments now (a cached answer would hide what a test just did).
                    o.ScrapeResponseCacheDurationMilliseconds = 0;
                });
            }

            if (useOtlp)
            {
                metrics.AddOtlpExporter(o => SetEndpoint(o, otlp));
            }
        });
        if (useOtlp)
        {
            telemetry.WithTracing(tracing => tracing
                .AddSource(VerifierMetrics.ActivitySourceName, "Microsoft.AspNetCore")
                .AddOtlpExporter(o => SetEndpoint(o, otlp)));
        }

        return services;

        static void SetEndpoint(OpenTelemetry.Exporter.OtlpExporterOptions o, string? endpoint)
        {
            if (!string.IsNullOrEmpty(endpoint))
            {
                o.Endpoint = new Uri(endpoint);
            }
        }
    }
}

/// <summary>
/// Loads and warms up the model in the background once the host has started (an embedding host that does not call
/// <see cref="VerifierHost.LoadModel"/> itself); a model that fails to load stops the host, logged.
/// </summary>
internal sealed class ModelLoadingService(IServiceProvider services, IHostApplicationLifetime lifetime, ILogger<ModelLoadingService> logger) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        // After the server listens (readiness answers NOT_SERVING meanwhile), as the verifier's own command does.
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using (lifetime.ApplicationStarted.Register(() => started.TrySetResult()))
        using (stoppingToken.Register(() => started.TrySetCanceled(stoppingToken)))
        {
            try
            {
                await started.Task.ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }

        try
        {
            await Task.Run(() => VerifierHost.Load(services), stoppingToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            Logging.VerifierLog.LoadFailed(logger, ex.Message);
            lifetime.StopApplication();
        }
    }
}
