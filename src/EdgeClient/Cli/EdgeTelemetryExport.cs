using OpenTelemetry;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;
using SpecEdge.EdgeClient.Client;

namespace SpecEdge.EdgeClient.Cli;

/// <summary>
/// The CLI's OTLP export of the edge's meter and spans (<see cref="EdgeTelemetry"/>), for the command's lifetime:
/// on with <c>--otlp URL</c> or the standard <c>OTEL_EXPORTER_OTLP_ENDPOINT</c> (and its companions, such as
/// <c>OTEL_EXPORTER_OTLP_PROTOCOL</c>); disposing it exports what is left.
/// </summary>
internal sealed class EdgeTelemetryExport : IDisposable
{
    private readonly MeterProvider _metrics;
    private readonly TracerProvider _traces;

    private EdgeTelemetryExport(string? endpoint)
    {
        var resource = ResourceBuilder.CreateDefault().AddService("specedge-edge", serviceVersion: typeof(EdgeTelemetry).Assembly.GetName().Version?.ToString());
        _metrics = Sdk.CreateMeterProviderBuilder().SetResourceBuilder(resource).AddMeter(EdgeTelemetry.MeterName).AddOtlpExporter(o => SetEndpoint(o, endpoint)).Build();
        _traces = Sdk.CreateTracerProviderBuilder().SetResourceBuilder(resource).AddSource(EdgeTelemetry.ActivitySourceName).AddOtlpExporter(o => SetEndpoint(o, endpoint)).Build();
    }

    /// <summary>Starts exporting when an endpoint is configured; null otherwise.</summary>
    /// <exception cref="UsageException">The endpoint is not an http(s) URL.</exception>
    public static EdgeTelemetryExport? Start(string? endpoint)
    {
        if (endpoint is not null && (!Uri.TryCreate(endpoint, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https")))
        {
            throw new UsageException($"--otlp: '{endpoint}' is not an OTLP endpoint such as http://collector:4317");
        }

        return endpoint is not null || !string.IsNullOrEmpty(Environment.GetEnvironmentVariable("OTEL_EXPORTER_OTLP_ENDPOINT"))
            ? new EdgeTelemetryExport(endpoint)
            : null;
    }

    public void Dispose()
    {
        _traces.Dispose();
        _metrics.Dispose();
    }

    private static void SetEndpoint(OpenTelemetry.Exporter.OtlpExporterOptions options, string? endpoint)
    {
        if (endpoint is not null)
        {
            options.Endpoint = new Uri(endpoint);
        }
    }
}
