using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using OpenTelemetry;
using OpenTelemetry.Metrics;
using SpecEdge.EdgeClient.Client;

namespace SpecEdge.Bench.Reliability;

/// <summary>What <c>fleet</c> runs.</summary>
internal sealed record FleetOptions
{
    public int Replicas { get; init; } = 3;

    public int Edges { get; init; } = 32;

    public int GenerationsPerEdge { get; init; } = 4;

    public int Tokens { get; init; } = 32;

    public bool Prometheus { get; init; } = true;

    public string? OutputDirectory { get; init; }

    /// <summary>When verifier 1 is SIGKILLed (it comes back 2 s later).</summary>
    public TimeSpan KillAt { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>When verifier 2 is sent SIGTERM (it drains and stays down).</summary>
    public TimeSpan TerminateAt { get; init; } = TimeSpan.FromSeconds(4);
}

/// <summary>The fleet run's outcome.</summary>
internal sealed record FleetReport
{
    public required int Generations { get; init; }

    public required int Failed { get; init; }

    public required int Identical { get; init; }

    public required int Interrupted { get; init; }

    public required IReadOnlyDictionary<string, int> ModeCounts { get; init; }

    /// <summary>Decode and Generate calls per replica, from nginx's access log (the upstream that answered each call).</summary>
    public required IReadOnlyDictionary<string, int> CallsPerReplica { get; init; }

    public required IReadOnlyList<string> Faults { get; init; }

    public required double Seconds { get; init; }

    public required IReadOnlyList<string> Errors { get; init; }

    /// <summary>Prometheus query results (query → JSON answer), when Prometheus ran.</summary>
    public required IReadOnlyDictionary<string, string> Queries { get; init; }
}

/// <summary>
/// A fleet behind a real load balancer: <see cref="FleetOptions.Replicas"/> verifier processes behind nginx
/// (<c>grpc_pass</c>, consistent hashing on the edge's <c>x-specedge-session</c> header), many edges in mixed modes
/// connecting to nginx alone, one verifier killed with SIGKILL (and restarted) and another drained with SIGTERM
/// mid-run, and Prometheus scraping the verifiers and the edges. Every output is compared with the target's own greedy
/// output.
/// </summary>
internal static class FleetRun
{
    private static readonly GenerationMode[] Modes = [GenerationMode.Speculative, GenerationMode.Preemptive, GenerationMode.Conditional, GenerationMode.Proactive, GenerationMode.Cloud, GenerationMode.Auto];

    /// <summary>The PromQL the run records (docs/reliability.md shows the answers).</summary>
    public static readonly IReadOnlyList<(string Name, string Query)> RecordedQueries =
    [
        ("scrapes answered / attempted per target", "sum by (job, instance) (sum_over_time(up[15m])) / sum by (job, instance) (count_over_time(up[15m]))"),
        ("acceptance rate (verifier)", "sum(increase(specedge_verifier_draft_accepted_total[15m])) / sum(increase(specedge_verifier_draft_tokens_total[15m]))"),
        ("sessions per replica", "sum by (instance) (increase(specedge_verifier_sessions_total[15m]))"),
        ("rounds per replica", "sum by (instance) (increase(specedge_verifier_rounds_total[15m]))"),
        ("early-verdict hit rate per exit", "sum by (specedge_exit_layer) (increase(specedge_verifier_early_verdicts_scored_total{specedge_early_verdict_outcome=\"hit\"}[15m])) / sum by (specedge_exit_layer) (increase(specedge_verifier_early_verdicts_scored_total[15m]))"),
        ("round time split, seconds (edge)", "sum by (specedge_phase) (increase(specedge_edge_round_phase_duration_seconds_sum[15m]))"),
        ("round time split, share (edge)", "sum by (specedge_phase) (increase(specedge_edge_round_phase_duration_seconds_sum[15m])) / ignoring(specedge_phase) group_left sum(increase(specedge_edge_round_phase_duration_seconds_sum[15m]))"),
        ("verifier queue wait p90, seconds", "histogram_quantile(0.9, sum by (le) (increase(specedge_verifier_queue_duration_seconds_bucket[15m])))"),
        ("sessions handed off", "sum(increase(specedge_verifier_sessions_handed_off_total[15m]))"),
        ("edge resumes", "sum(increase(specedge_edge_resumes_total[15m]))"),
        ("edge retries", "sum(increase(specedge_edge_retries_total[15m]))"),
        ("edge failovers", "sum(increase(specedge_edge_failovers_total[15m]))"),
        ("verifier refusals by code", "sum by (rpc_grpc_status_code) (increase(specedge_verifier_refusals_total[15m]))"),
    ];

    public static async Task<FleetReport> RunAsync(string targetDir, string draftDir, FleetOptions options, TextWriter log, CancellationToken cancellationToken)
    {
        var nginx = FindExecutable("nginx") ?? throw new InvalidOperationException("nginx is not installed: apt-get install nginx (bench/fleet/run-fleet.sh installs it)");
        var prometheusPath = options.Prometheus
            ? FindExecutable("prometheus") ?? throw new InvalidOperationException("prometheus is not installed: apt-get install prometheus, or pass --no-prometheus")
            : null;
        var work = Directory.CreateTempSubdirectory("specedge-fleet-");
        var prompts = ReferenceOutputs.Prompts(new Random(11), 8);
        var expected = ReferenceOutputs.Greedy(targetDir, prompts, options.Tokens);

        var metricsPorts = Enumerable.Range(0, options.Replicas).Select(_ => VerifierProcess.FreePort()).ToList();
        var verifiers = metricsPorts.Select(m => new VerifierProcess(targetDir, VerifierProcess.FreePort(),
            ["--metrics-url", $"http://127.0.0.1:{m}/", "--drain-delay", "1", "--grace", "10", "--max-sessions", "128"])).ToList();
        Process? balancer = null;
        Process? prometheus = null;
        MeterProvider? edgeMetrics = null;
        try
        {
            await Task.WhenAll(verifiers.Select(v => v.StartAsync(cancellationToken)));
            log.WriteLine($"[fleet] {verifiers.Count} verifiers on {string.Join(", ", verifiers.Select(v => v.Port))}");

            var balancerPort = VerifierProcess.FreePort();
            var config = Path.Combine(work.FullName, "nginx.conf");
            await File.WriteAllTextAsync(config, NginxConfig(work.FullName, balancerPort, verifiers.Select(v => v.Port)), cancellationToken);
            var balancerOutput = new ConcurrentQueue<string>();
            balancer = ChildProcess.Start(nginx, ["-p", work.FullName, "-c", config, "-g", "daemon off;"], balancerOutput);
            await WaitForPortAsync(balancerPort, balancer, balancerOutput, cancellationToken);
            log.WriteLine($"[fleet] nginx on {balancerPort} (config {config})");

            var edgeMetricsPort = VerifierProcess.FreePort();
            edgeMetrics = Sdk.CreateMeterProviderBuilder()
                .AddMeter(EdgeTelemetry.MeterName)
                .AddPrometheusHttpListener(o =>
                {
                    o.Host = "127.0.0.1";
                    o.Port = edgeMetricsPort;
                    o.ScrapeResponseCacheDurationMilliseconds = 0;
                })
                .Build();
            var prometheusPort = VerifierProcess.FreePort();
            if (prometheusPath is not null)
            {
                var promConfig = Path.Combine(work.FullName, "prometheus.yml");
                await File.WriteAllTextAsync(promConfig, PrometheusConfig(metricsPorts, edgeMetricsPort), cancellationToken);
                var prometheusOutput = new ConcurrentQueue<string>();
                prometheus = ChildProcess.Start(prometheusPath, [$"--config.file={promConfig}", $"--storage.tsdb.path={Path.Combine(work.FullName, "tsdb")}", $"--web.listen-address=127.0.0.1:{prometheusPort}"], prometheusOutput);
                await WaitForPortAsync(prometheusPort, prometheus, prometheusOutput, cancellationToken);
                log.WriteLine($"[fleet] prometheus on {prometheusPort}");
            }

            var total = options.Edges * options.GenerationsPerEdge;
            var done = 0;
            var faults = new ConcurrentQueue<string>();
            var watch = Stopwatch.StartNew();
            using var stopFaults = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            var faultsDone = false;
            var injector = Task.Run(async () =>
            {
                // Time-based, so both land while generations are in flight: SIGKILL one verifier (it comes back 2 s
                // later), SIGTERM another (it drains and stays down). Edges keep generating until both are over and the
                // drained verifier has exited.
                await Task.Delay(options.KillAt, stopFaults.Token);
                verifiers[0].Kill();
                faults.Enqueue(string.Create(CultureInfo.InvariantCulture, $"{watch.Elapsed.TotalSeconds:F1} s: SIGKILL verifier 1 (port {verifiers[0].Port}) with {Volatile.Read(ref done)} generations done"));
                await Task.Delay(2000, stopFaults.Token);
                await verifiers[0].StartAsync(stopFaults.Token);
                faults.Enqueue(string.Create(CultureInfo.InvariantCulture, $"{watch.Elapsed.TotalSeconds:F1} s: verifier 1 back"));
                if (verifiers.Count > 1)
                {
                    var wait = options.TerminateAt - watch.Elapsed;
                    if (wait > TimeSpan.Zero)
                    {
                        await Task.Delay(wait, stopFaults.Token);
                    }

                    verifiers[1].Terminate();
                    faults.Enqueue(string.Create(CultureInfo.InvariantCulture, $"{watch.Elapsed.TotalSeconds:F1} s: SIGTERM verifier 2 (port {verifiers[1].Port}: drains, stays down) with {Volatile.Read(ref done)} generations done"));
                    await verifiers[1].WaitForExitAsync(stopFaults.Token);
                    faults.Enqueue(string.Create(CultureInfo.InvariantCulture, $"{watch.Elapsed.TotalSeconds:F1} s: verifier 2 exited after draining"));
                }

                Volatile.Write(ref faultsDone, true);
            }, CancellationToken.None);

            var results = new ConcurrentBag<(string Mode, bool Identical, bool Interrupted, string? Error)>();
            var balancerAddress = new Uri($"http://127.0.0.1:{balancerPort}");
            await Parallel.ForEachAsync(Enumerable.Range(0, options.Edges), new ParallelOptions { MaxDegreeOfParallelism = options.Edges, CancellationToken = cancellationToken }, async (edge, token) =>
            {
                await using var client = await SpecEdgeClient.ConnectAsync(new EdgeClientOptions
                {
                    Server = balancerAddress,
                    DraftModel = draftDir,
                    IntraOpThreads = 1,
                    RoundTimeout = TimeSpan.FromSeconds(30),
                    MaxRetries = 60,
                    RetryDelay = TimeSpan.FromMilliseconds(100),
                    BreakDuration = TimeSpan.FromMilliseconds(500),
                }, cancellationToken: token);
                for (var g = 0; g < options.GenerationsPerEdge || !Volatile.Read(ref faultsDone); g++)
                {
                    var p = (edge + g) % prompts.Count;
                    var mode = Modes[(edge + g * 5) % Modes.Length];
                    // Odd edges pre-draft three candidates per early verdict (multi-candidate pre-drafting) in the modes that use them.
                    var candidates = edge % 2 == 1 && mode is GenerationMode.Preemptive or GenerationMode.Conditional ? 3 : 1;
                    var label = candidates > 1 ? $"{mode.Name()}+k{candidates}" : mode.Name();
                    var output = new List<int>();
                    string? error = null;
                    var interrupted = false;
                    try
                    {
                        var generation = client.Generate(new GenerationRequest { ClientLabel = $"fleet-edge-{edge}", PromptIds = prompts[p], Mode = mode, Candidates = candidates, MaxNewTokens = options.Tokens, DraftTokens = 3, StopAtEos = false });
                        await foreach (var t in generation.WithCancellation(token))
                        {
                            output.Add(t.Id.Value);
                        }

                        interrupted = generation.Report!.Resilience.Sessions > 1;
                    }
                    catch (Exception ex) when (ex is not OperationCanceledException || !token.IsCancellationRequested)
                    {
                        error = $"edge {edge} {label} prompt {p}: {ex.Message.Split('\n')[0]}";
                    }

                    var identical = error is null && output.SequenceEqual(expected[p]);
                    results.Add((label, identical, interrupted, error));
                    var finished = Interlocked.Increment(ref done);
                    if (finished % Math.Max(1, total / 8) == 0 || error is not null || !identical)
                    {
                        log.WriteLine($"[fleet] {finished}/{total} generations, last: edge {edge} {label} {(error ?? (identical ? "identical" : "DIFFERS"))}");
                    }
                }
            });
            var seconds = watch.Elapsed.TotalSeconds;
            await stopFaults.CancelAsync();
            try
            {
                await injector;
            }
            catch (OperationCanceledException)
            {
                faults.Enqueue("the run ended before every fault was injected");
            }

            var queries = new Dictionary<string, string>();
            if (prometheus is not null)
            {
                // Two more scrapes, so the last generations are in the series.
                await Task.Delay(2500, cancellationToken);
                using var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{prometheusPort}") };
                foreach (var (name, query) in RecordedQueries)
                {
                    var answer = await http.GetStringAsync(new Uri($"/api/v1/query?query={Uri.EscapeDataString(query)}", UriKind.Relative), cancellationToken);
                    queries[$"{name}: {query}"] = answer;
                }
            }

            // nginx's worker shares the master's output pipes: stop the whole tree, then read its complete access log.
            Stop(balancer);
            balancer = null;
            var calls = CallsPerReplica(Path.Combine(work.FullName, "access.log"), verifiers, metricsPorts);
            if (options.OutputDirectory is { } output)
            {
                Directory.CreateDirectory(output);
                File.Copy(config, Path.Combine(output, "nginx.conf"), overwrite: true);
                File.Copy(Path.Combine(work.FullName, "access.log"), Path.Combine(output, "nginx-access.log"), overwrite: true);
                if (prometheus is not null)
                {
                    File.Copy(Path.Combine(work.FullName, "prometheus.yml"), Path.Combine(output, "prometheus.yml"), overwrite: true);
                    await File.WriteAllTextAsync(Path.Combine(output, "prometheus-queries.json"), JsonSerializer.Serialize(queries.ToDictionary(kv => kv.Key, kv => JsonDocument.Parse(kv.Value).RootElement), new JsonSerializerOptions { WriteIndented = true }), cancellationToken);
                }
            }

            var list = results.ToList();
            return new FleetReport
            {
                Generations = list.Count,
                Failed = list.Count(r => r.Error is not null),
                Identical = list.Count(r => r.Identical),
                Interrupted = list.Count(r => r.Interrupted),
                ModeCounts = list.GroupBy(r => r.Mode).ToDictionary(g => g.Key, g => g.Count()),
                CallsPerReplica = calls,
                Faults = [.. faults],
                Seconds = seconds,
                Errors = [.. list.Where(r => r.Error is not null).Select(r => r.Error!)],
                Queries = queries,
            };
        }
        finally
        {
            edgeMetrics?.Dispose();
            Stop(prometheus);
            Stop(balancer);
            foreach (var verifier in verifiers)
            {
                await verifier.DisposeAsync();
            }

            try
            {
                work.Delete(recursive: true);
            }
            catch (IOException)
            {
                // Left for the temp cleaner.
            }
        }
    }

    /// <summary>nginx: gRPC to the verifiers, consistent hashing on the session header, the next upstream on a connect error.</summary>
    internal static string NginxConfig(string prefix, int port, IEnumerable<int> verifierPorts)
    {
        var servers = new StringBuilder();
        foreach (var p in verifierPorts)
        {
            servers.Append(CultureInfo.InvariantCulture, $"    server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;\n");
        }

        return $$"""
            worker_processes 1;
            pid {{prefix}}/nginx.pid;
            error_log {{prefix}}/error.log warn;
            events { worker_connections 4096; }
            http {
              log_format upstream '$msec $http_x_specedge_session $request_uri $upstream_addr $status';
              access_log {{prefix}}/access.log upstream;
              client_body_temp_path {{prefix}}/client_body;
              proxy_temp_path {{prefix}}/proxy;
              fastcgi_temp_path {{prefix}}/fastcgi;
              uwsgi_temp_path {{prefix}}/uwsgi;
              scgi_temp_path {{prefix}}/scgi;
              upstream verifiers {
                hash $http_x_specedge_session consistent;
            {{servers}}  }
              server {
                listen 127.0.0.1:{{port}} http2;
                location / {
                  grpc_pass grpc://verifiers;
                  grpc_next_upstream error timeout;
                  grpc_next_upstream_tries 3;
                  grpc_connect_timeout 1s;
                  grpc_read_timeout 300s;
                  grpc_send_timeout 300s;
                  client_body_timeout 300s;
                  client_max_body_size 0;
                }
              }
            }

            """;
    }

    private static string PrometheusConfig(IEnumerable<int> verifierMetricsPorts, int edgeMetricsPort) => $"""
        global:
          scrape_interval: 1s
          evaluation_interval: 1s
        scrape_configs:
          - job_name: specedge-verifier
            static_configs:
              - targets: [{string.Join(", ", verifierMetricsPorts.Select(p => $"'127.0.0.1:{p}'"))}]
          - job_name: specedge-edge
            static_configs:
              - targets: ['127.0.0.1:{edgeMetricsPort}']

        """;

    /// <summary>Verifier calls per replica, from the upstream address nginx logged for each (the last one, after a retry).</summary>
    private static Dictionary<string, int> CallsPerReplica(string accessLog, IReadOnlyList<VerifierProcess> verifiers, IReadOnlyList<int> metricsPorts)
    {
        string Name(int i) => $"verifier {i + 1} (:{verifiers[i].Port}, metrics :{metricsPorts[i]})";
        var calls = verifiers.Select((_, i) => Name(i)).ToDictionary(x => x, _ => 0);
        foreach (var line in File.ReadLines(accessLog))
        {
            var fields = line.Split(' ');
            if (fields.Length < 5 || !fields[2].Contains("/specedge.v1.Verifier/", StringComparison.Ordinal) || fields[2].EndsWith("/Describe", StringComparison.Ordinal))
            {
                continue;
            }

            var upstream = fields[3].Split(',').Last().Trim();
            for (var i = 0; i < verifiers.Count; i++)
            {
                if (upstream == $"127.0.0.1:{verifiers[i].Port}")
                {
                    calls[Name(i)]++;
                }
            }
        }

        return calls;
    }


    private static async Task WaitForPortAsync(int port, Process process, ConcurrentQueue<string> output, CancellationToken cancellationToken)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (true)
        {
            try
            {
                using var socket = new System.Net.Sockets.TcpClient();
                await socket.ConnectAsync(System.Net.IPAddress.Loopback, port, cancellationToken);
                return;
            }
            catch (System.Net.Sockets.SocketException) when (DateTime.UtcNow < deadline && !process.HasExited)
            {
                await Task.Delay(100, cancellationToken);
            }
            catch (System.Net.Sockets.SocketException ex)
            {
                throw new InvalidOperationException($"{process.StartInfo.FileName} did not listen on {port} ({(process.HasExited ? $"exited with {process.ExitCode}" : "no answer")}): {string.Join(" | ", output)}", ex);
            }
        }
    }


    private static void Stop(Process? process)
    {
        if (process is { HasExited: false })
        {
            process.Kill(entireProcessTree: true);
            process.WaitForExit(10_000);
        }

        process?.Dispose();
    }

    private static string? FindExecutable(string name) =>
        (Environment.GetEnvironmentVariable("PATH") ?? string.Empty).Split(':').Append("/usr/sbin").Append("/usr/bin")
            .Select(dir => Path.Combine(dir, name)).FirstOrDefault(File.Exists);
}
