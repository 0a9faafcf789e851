using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Globalization;
using System.Net;
using Grpc.Core;
using Grpc.Health.V1;
using Grpc.Net.Client;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Configuration;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using SpecEdge.CloudVerifier.Configuration;
using SpecEdge.CloudVerifier.Hosting;
using SpecEdge.CloudVerifier.Telemetry;
using SpecEdge.EdgeClient.Client;
using SpecEdge.Protocol.V1;
using SpecEdge.Shared.Tokenization;
using SpecEdge.TestUtilities;

namespace SpecEdge.EndToEnd.Tests;

/// <summary>
/// Meters and activity listeners are process-wide: the telemetry tests run alone, so no other test's verifier or edge
/// adds to what they count.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class TelemetryCollection
{
    public const string Name = "telemetry (process-wide listeners)";
}

/// <summary>
/// The verifier's Prometheus endpoint and the edge's meter say what a generation's <c>--json</c> report says; one trace
/// runs from the edge's generation through the verifier's session and rounds; health tells the truth while the model
/// loads and while the verifier drains.
/// </summary>
[Collection(TelemetryCollection.Name)]
public sealed class TelemetryTests : IAsyncLifetime
{
    private static readonly TokenId[] Prompt = [new(256), new(84), new(104), new(101)];
    private readonly TempDirectory _temp = new("telemetry");
    private readonly List<WebApplication> _apps = [];
    private TestPair _pair = null!;

    public Task InitializeAsync()
    {
        _pair = TestModels.WritePair(_temp.Path);
        return Task.CompletedTask;
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
    public async Task PrometheusEndpointAndEdgeMeter_AgreeWithTheReport()
    {
        var metricsPort = TestPlaces.FreePort();
        using var edge = new EdgeMeterRecorder();
        var address = await StartVerifierAsync(metricsPort);
        await using var client = await ConnectAsync(address);

        var report = await client.Generate(Request(GenerationMode.Conditional)).RunToEndAsync().DefaultTimeout();
        var scrape = await ScrapeAsync(metricsPort);

        Assert.True(report.Rounds > 5, $"only {report.Rounds} rounds");
        Assert.True(report.EarlyExits.EarlyVerdicts > 0, "no early verdicts: the test would not check them");
        // A dropped conditional round is sent again under its number; the report's rounds are those with a final verdict.
        Assert.Equal(report.Rounds, scrape.Sum("specedge_verifier_rounds_total"));
        Assert.Equal(report.EarlyExits.ConditionalRoundsDropped, scrape.Sum("specedge_verifier_rounds_dropped_total"));
        Assert.Equal(report.DraftTokens, scrape.Sum("specedge_verifier_draft_tokens_total"));
        Assert.Equal(report.AcceptedTokens, scrape.Sum("specedge_verifier_draft_accepted_total"));
        Assert.Equal(report.AcceptedTokens, scrape.Sum("specedge_verifier_draft_position_verdicts_total", ("specedge_draft_accepted", "true")));
        Assert.Equal(report.PerRound.Count(r => r.Accepted >= 1), scrape.Sum("specedge_verifier_draft_position_verdicts_total", ("specedge_draft_position", "1"), ("specedge_draft_accepted", "true")));
        Assert.Equal(report.EarlyExits.EarlyVerdicts, scrape.Sum("specedge_verifier_early_verdicts_total"));
        foreach (var exit in report.EarlyExits.PerExit)
        {
            var layer = exit.Layer.ToString(CultureInfo.InvariantCulture);
            Assert.Equal(exit.Hits, scrape.Sum("specedge_verifier_early_verdicts_scored_total", ("specedge_exit_layer", layer), ("specedge_early_verdict_outcome", "hit")));
            Assert.Equal(exit.Misses, scrape.Sum("specedge_verifier_early_verdicts_scored_total", ("specedge_exit_layer", layer), ("specedge_early_verdict_outcome", "miss")));
        }

        Assert.Equal(report.Rounds, scrape.Sum("specedge_verifier_stage_duration_seconds_count", ("specedge_stage", "0")));
        Assert.Equal(report.Resilience.Sessions, scrape.Sum("specedge_verifier_sessions_total", ("specedge_session_kind", "decode")));
        // Zero, and present: a missing series would sum to zero too.
        Assert.True(scrape.Has("specedge_verifier_sessions_active") && scrape.Has("specedge_verifier_kv_cache_usage_bytes"), "the session gauges are missing from the scrape");
        Assert.Equal(0, scrape.Sum("specedge_verifier_sessions_active"));
        Assert.Equal(0, scrape.Sum("specedge_verifier_kv_cache_usage_bytes"));
        Assert.True(scrape.Sum("specedge_verifier_batch_steps_total") >= report.Rounds, "fewer model steps than rounds");

        Assert.Equal(report.Rounds, edge.Sum("specedge.edge.rounds"));
        Assert.Equal(report.NewTokens, edge.Sum("specedge.edge.tokens"));
        Assert.Equal(1, edge.Count("specedge.edge.generation.time_per_token"));
        Assert.Equal(report.LatencyMs.PerToken / 1000, edge.Sum("specedge.edge.generation.time_per_token"), 6);
        Assert.Equal(report.TimeBreakdownMs.Draft / 1000, edge.Sum("specedge.edge.round.phase.duration", "draft"), 3);
        Assert.Equal(report.TimeBreakdownMs.NetworkAndQueue / 1000, edge.Sum("specedge.edge.round.phase.duration", "network"), 3);
        Assert.Equal(report.TimeBreakdownMs.Verify / 1000, edge.Sum("specedge.edge.round.phase.duration", "verify"), 3);

        // Every metric the Grafana dashboard queries is an instrument one side publishes, under the name Prometheus
        // shows it by (the naming below is checked against the real exposition wherever the scrape has the series).
        var names = edge.Published.ToDictionary(PrometheusName, i => i);
        var inScrape = names.Keys.Where(n => scrape.Has(n)).ToList();
        Assert.True(inScrape.Count(n => n.StartsWith("specedge_verifier_", StringComparison.Ordinal)) >= 15, $"the naming matched only {string.Join(", ", inScrape)}");
        var dashboard = File.ReadAllText(Path.Combine(TestPlaces.RepositoryRoot(), "deploy", "grafana", "specedge-dashboard.json"));
        var queried = System.Text.RegularExpressions.Regex.Matches(dashboard, "specedge_(verifier|edge)_[a-z_]+").Select(m => m.Value).Distinct().ToList();
        Assert.True(queried.Count >= 20, $"the dashboard queries only {queried.Count} metrics");
        foreach (var metric in queried)
        {
            var series = System.Text.RegularExpressions.Regex.Replace(metric, "_(bucket|sum|count)$", string.Empty);
            Assert.True(names.ContainsKey(series), $"the dashboard queries {metric}, which no instrument exports (published: {string.Join(", ", names.Keys.Order())})");
        }
    }

    /// <summary>
    /// OpenTelemetry's Prometheus naming: dots become underscores, the unit a suffix (s: seconds, By: bytes; an
    /// annotation such as {token} none), and a monotonic counter ends in _total.
    /// </summary>
    private static string PrometheusName(Instrument instrument)
    {
        var name = instrument.Name.Replace('.', '_');
        name += instrument.Unit switch
        {
            "s" => "_seconds",
            "By" => "_bytes",
            _ => string.Empty,
        };
        var monotonic = instrument.GetType().IsGenericType && instrument.GetType().GetGenericTypeDefinition() is var t && (t == typeof(Counter<>) || t == typeof(ObservableCounter<>));
        return monotonic ? name + "_total" : name;
    }

    [Fact]
    public async Task OneTrace_FromTheEdgeGeneration_ThroughTheVerifierSessionAndRounds()
    {
        var stopped = new ConcurrentQueue<Activity>();
        using var listener = new ActivityListener
        {
            ShouldListenTo = source => source.Name is EdgeTelemetry.ActivitySourceName or VerifierMetrics.ActivitySourceName,
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = stopped.Enqueue,
        };
        ActivitySource.AddActivityListener(listener);
        var address = await StartVerifierAsync();
        await using var client = await ConnectAsync(address);

        var report = await client.Generate(Request(GenerationMode.Conditional)).RunToEndAsync().DefaultTimeout();

        var generation = Assert.Single(stopped, a => a.OperationName == "specedge.edge.generation");
        var session = Assert.Single(stopped, a => a.OperationName == "specedge.verifier.decode");
        Assert.Equal(generation.TraceId, session.TraceId);
        Assert.Equal(generation.SpanId, session.ParentSpanId);
        Assert.Equal(generation.GetTagItem("specedge.session.key"), session.GetTagItem("specedge.session.key"));
        Assert.NotNull(session.GetTagItem("specedge.session.key"));
        var edgeRounds = stopped.Where(a => a.OperationName == "specedge.edge.round").ToList();
        var verifierRounds = stopped.Where(a => a.OperationName == "specedge.verifier.round").ToList();
        Assert.Equal(report.Rounds, edgeRounds.Count);
        Assert.All(edgeRounds, r => Assert.Equal(generation.SpanId, r.ParentSpanId));
        Assert.Equal(report.Rounds, verifierRounds.Count);
        Assert.All(verifierRounds, r => Assert.Equal(session.SpanId, r.ParentSpanId));
        Assert.Equal(report.EarlyExits.EarlyVerdicts, verifierRounds.Sum(r => r.Events.Count(e => e.Name == "specedge.early_verdict")));
    }

    [Fact]
    public async Task Health_NotServingWhileLoadingAndFromTheFirstMomentOfDraining()
    {
        var app = VerifierHost.Create([], builder =>
        {
            builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0, l => l.Protocols = HttpProtocols.Http2));
            builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?> { ["Logging:LogLevel:Default"] = "Warning" });
            builder.Services.Configure<VerifierOptions>(o =>
            {
                o.Model = _pair.TargetDir;
                o.IntraOpThreads = 1;
                o.DrainDelaySeconds = 3;
            });
        });
        _apps.Add(app);
        await app.StartAsync().DefaultTimeout();
        using var channel = GrpcChannel.ForAddress(app.Urls.First());
        var health = new Health.HealthClient(channel);
        var verifier = new Verifier.VerifierClient(channel);

        Assert.Equal(HealthCheckResponse.Types.ServingStatus.NotServing, (await health.CheckAsync(new HealthCheckRequest())).Status);
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.NotServing, (await health.CheckAsync(new HealthCheckRequest { Service = "specedge.v1.Verifier" })).Status);
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, (await health.CheckAsync(new HealthCheckRequest { Service = VerifierReadiness.LivenessService })).Status);
        var loading = await Assert.ThrowsAsync<RpcException>(() => verifier.DescribeAsync(new DescribeRequest()).ResponseAsync);
        Assert.Equal(StatusCode.Unavailable, loading.StatusCode);
        Assert.Contains("loading", loading.Status.Detail);

        VerifierHost.LoadModel(app);
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, (await health.CheckAsync(new HealthCheckRequest())).Status);
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, (await health.CheckAsync(new HealthCheckRequest { Service = "specedge.v1.Verifier" })).Status);
        await using (var client = await ConnectAsync(new Uri(app.Urls.First())))
        {
            Assert.Equal(8, (await client.Generate(Request(GenerationMode.Speculative) with { MaxNewTokens = 8 }).RunToEndAsync().DefaultTimeout()).NewTokens);
        }

        var stopping = app.StopAsync();
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.NotServing, (await health.CheckAsync(new HealthCheckRequest())).Status);
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, (await health.CheckAsync(new HealthCheckRequest { Service = VerifierReadiness.LivenessService })).Status);
        var draining = await Assert.ThrowsAsync<RpcException>(async () =>
        {
            using var call = verifier.Generate(new GenerateRequest { PromptIds = { 256, 84 }, MaxNewTokens = 2 });
            await call.ResponseStream.MoveNext();
        });
        Assert.Equal(StatusCode.Unavailable, draining.StatusCode);
        Assert.Contains("draining", draining.Status.Detail);
        Assert.False(stopping.IsCompleted, "the verifier stopped before its drain delay");
        await stopping.WaitAsync(TimeSpan.FromSeconds(30));
    }

    [Fact]
    public async Task Otlp_TheVerifierAndTheEdgeCli_ExportTheirMetricsAndSpans()
    {
        await using var collector = await OtlpReceiver.StartAsync();
        var (app, address) = await VerifierHost.StartLoopbackAsync(_pair.TargetDir, o =>
        {
            o.IntraOpThreads = 1;
            o.DefaultExitThreshold = 0;
        }, builder => builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?> { ["Verifier:Telemetry:OtlpEndpoint"] = collector.Address.ToString() })).DefaultTimeout();

        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var code = await SpecEdge.EdgeClient.Cli.EdgeCli.Build().Parse(["generate", "--server", address.ToString(), "--draft", _pair.DraftDir, "--prompt-ids", "256,84,104", "--max-new-tokens", "12", "--mode", "conditional", "--otlp", collector.Address.ToString()])
            .InvokeAsync(new System.CommandLine.InvocationConfiguration { Output = stdout, Error = stderr }).DefaultTimeout();
        Assert.True(code == 0, stderr.ToString());
        await app.DisposeAsync().AsTask().DefaultTimeout();

        // Disposal flushes both sides' exporters; the OTLP protobuf carries instrument and span names as UTF-8.
        Assert.True(collector.Received("MetricsService", "specedge.verifier.rounds"), collector.Summary());
        Assert.True(collector.Received("MetricsService", "specedge.edge.round.phase.duration"), collector.Summary());
        Assert.True(collector.Received("TraceService", "specedge.verifier.decode"), collector.Summary());
        Assert.True(collector.Received("TraceService", "specedge.verifier.round"), collector.Summary());
        Assert.True(collector.Received("TraceService", "specedge.edge.generation"), collector.Summary());
    }

    private static GenerationRequest Request(GenerationMode mode) => new()
    {
        PromptIds = Prompt,
        Mode = mode,
        MaxNewTokens = 40,
        DraftTokens = 3,
        StopAtEos = false,
    };

    private async Task<Uri> StartVerifierAsync(int? metricsPort = null)
    {
        var (app, address) = await VerifierHost.StartLoopbackAsync(_pair.TargetDir, o =>
        {
            o.IntraOpThreads = 1;
            o.DefaultExitThreshold = 0;
        }, builder =>
        {
            if (metricsPort is { } port)
            {
                builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?> { ["Verifier:Telemetry:MetricsUrl"] = $"http://127.0.0.1:{port}/" });
            }
        }).DefaultTimeout();
        _apps.Add(app);
        return address;
    }

    private Task<SpecEdgeClient> ConnectAsync(Uri address) =>
        SpecEdgeClient.ConnectAsync(new EdgeClientOptions
        {
            Server = address,
            DraftModel = _pair.DraftDir,
            IntraOpThreads = 1,
            RoundTimeout = TimeSpan.FromSeconds(10),
        }).DefaultTimeout();

    private static async Task<PrometheusScrape> ScrapeAsync(int port)
    {
        using var http = new HttpClient();
        var text = await http.GetStringAsync(new Uri($"http://127.0.0.1:{port}/metrics")).DefaultTimeout();
        return new PrometheusScrape(text);
    }

    /// <summary>
    /// A minimal OTLP/gRPC receiver on Kestrel (HTTP/2): keeps each Export request's protobuf body by service, answers
    /// with an empty message and status OK.
    /// </summary>
    private sealed class OtlpReceiver : IAsyncDisposable
    {
        private readonly WebApplication _app;
        private readonly ConcurrentQueue<(string Service, byte[] Body)> _requests = new();

        private OtlpReceiver(WebApplication app) => _app = app;

        public Uri Address => new(_app.Urls.First());

        public static async Task<OtlpReceiver> StartAsync()
        {
            var builder = WebApplication.CreateSlimBuilder();
            builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0, l => l.Protocols = HttpProtocols.Http2));
            builder.Logging.ClearProviders();
            var app = builder.Build();
            var receiver = new OtlpReceiver(app);
            app.MapPost("/opentelemetry.proto.collector.{signal}.v1.{service}/Export", async (HttpContext context, string service) =>
            {
                using var body = new MemoryStream();
                await context.Request.Body.CopyToAsync(body);
                receiver._requests.Enqueue((service, body.ToArray()));
                context.Response.ContentType = "application/grpc";
                context.Response.AppendTrailer("grpc-status", "0");
                await context.Response.Body.WriteAsync(new byte[5]);
            });
            await app.StartAsync();
            return receiver;
        }

        public bool Received(string service, string text)
        {
            var bytes = System.Text.Encoding.UTF8.GetBytes(text);
            return _requests.Any(r => r.Service == service && r.Body.AsSpan().IndexOf(bytes) >= 0);
        }

        public string Summary() => $"received: {string.Join(", ", _requests.GroupBy(r => r.Service).Select(g => $"{g.Key} ×{g.Count()}"))}";

        public ValueTask DisposeAsync() => _app.DisposeAsync();
    }

    /// <summary>Prometheus' text format, read as samples: name, labels, value.</summary>
    private sealed class PrometheusScrape
    {
        private readonly List<(string Name, Dictionary<string, string> Labels, double Value)> _samples = [];

        public PrometheusScrape(string text)
        {
            foreach (var raw in text.Split('\n'))
            {
                var line = raw.Trim();
                if (line.Length == 0 || line.StartsWith('#'))
                {
                    continue;
                }

                var brace = line.IndexOf('{', StringComparison.Ordinal);
                var space = line.LastIndexOf(' ');
                var labels = new Dictionary<string, string>(StringComparer.Ordinal);
                string name;
                string rest;
                if (brace >= 0 && brace < space)
                {
                    name = line[..brace];
                    var close = line.LastIndexOf('}');
                    foreach (var pair in line[(brace + 1)..close].Split(',', StringSplitOptions.RemoveEmptyEntries))
                    {
                        var eq = pair.IndexOf('=', StringComparison.Ordinal);
                        labels[pair[..eq]] = pair[(eq + 1)..].Trim('"');
                    }

                    rest = line[(close + 1)..].Trim();
                }
                else
                {
                    name = line[..line.IndexOf(' ', StringComparison.Ordinal)];
                    rest = line[name.Length..].Trim();
                }

                // A sample may carry a timestamp after its value.
                _samples.Add((name, labels, double.Parse(rest.Split(' ')[0], CultureInfo.InvariantCulture)));
            }
        }

        /// <summary>Whether any sample belongs to <paramref name="series"/> (a histogram's through its _bucket, _sum and _count).</summary>
        public bool Has(string series) => _samples.Any(s => s.Name == series || s.Name == series + "_bucket" || s.Name == series + "_sum" || s.Name == series + "_count");

        public int Sum(string name, params (string Label, string Value)[] filter) =>
            (int)Math.Round(_samples.Where(s => s.Name == name && filter.All(f => s.Labels.GetValueOrDefault(f.Label) == f.Value)).Sum(s => s.Value));
    }

    /// <summary>
    /// Listens to the edge's meter (measurements summed and counted per instrument and phase) and notes every instrument
    /// both sides publish.
    /// </summary>
    private sealed class EdgeMeterRecorder : IDisposable
    {
        private readonly MeterListener _listener = new();
        private readonly ConcurrentDictionary<string, (double Sum, int Count)> _totals = new();
        private readonly ConcurrentDictionary<string, Instrument> _published = new();

        public EdgeMeterRecorder()
        {
            _listener.InstrumentPublished = (instrument, listener) =>
            {
                if (instrument.Meter.Name is EdgeTelemetry.MeterName or VerifierMetrics.MeterName)
                {
                    _published.TryAdd(instrument.Name, instrument);
                }

                if (instrument.Meter.Name == EdgeTelemetry.MeterName)
                {
                    listener.EnableMeasurementEvents(instrument);
                }
            };
            _listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) => Add(instrument, value, tags));
            _listener.SetMeasurementEventCallback<double>((instrument, value, tags, _) => Add(instrument, value, tags));
            _listener.Start();
        }

        public IEnumerable<Instrument> Published => _published.Values;

        public double Sum(string name, string? phase = null) => _totals.GetValueOrDefault(Key(name, phase)).Sum;

        public int Count(string name) => _totals.GetValueOrDefault(Key(name, null)).Count;

        public void Dispose() => _listener.Dispose();

        private static string Key(string name, string? phase) => phase is null ? name : $"{name}/{phase}";

        private void Add(Instrument instrument, double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            string? phase = null;
            foreach (var tag in tags)
            {
                if (tag.Key == "specedge.phase")
                {
                    phase = (string?)tag.Value;
                }
            }

            _totals.AddOrUpdate(Key(instrument.Name, phase), (value, 1), (_, t) => (t.Sum + value, t.Count + 1));
        }
    }
}
