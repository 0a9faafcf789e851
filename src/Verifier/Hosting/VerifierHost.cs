using System.Globalization;
using System.Net;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Options;
using SpecEdge.CloudVerifier.Configuration;
using SpecEdge.CloudVerifier.Logging;
using SpecEdge.CloudVerifier.Scheduling;
using SpecEdge.CloudVerifier.Security;
using SpecEdge.CloudVerifier.Sessions;

namespace SpecEdge.CloudVerifier.Hosting;

/// <summary>Builds the verifier's web application: configuration, services, gRPC endpoints, health and reflection.</summary>
public static class VerifierHost
{
    /// <summary>Short switches for people and scripts, mapped onto configuration keys.</summary>
    public static readonly IReadOnlyDictionary<string, string> ShortSwitches = new Dictionary<string, string>
    {
        ["--model"] = "Verifier:Model",
        ["--device"] = "Verifier:Device",
        ["--compute"] = "Verifier:Compute",
        ["--exits"] = "Verifier:Exits",
        ["--threads"] = "Verifier:IntraOpThreads",
        ["--profile"] = "Verifier:ComputeProfile",
        ["--calibration"] = "Verifier:Calibration",
        ["--max-sessions"] = "Verifier:Limits:MaxSessions",
        ["--max-draft-tokens"] = "Verifier:Limits:MaxDraftTokens",
        ["--max-leaves"] = "Verifier:Limits:MaxLeaves",
        ["--cache"] = "Verifier:CacheDirectory",
        ["--tls-cert"] = "Verifier:Tls:CertificatePath",
        ["--tls-key"] = "Verifier:Tls:KeyPath",
        ["--client-ca"] = "Verifier:Tls:ClientCaPath",
        ["--grace"] = "Verifier:ShutdownGraceSeconds",
        ["--drain-delay"] = "Verifier:DrainDelaySeconds",
        ["--metrics-url"] = "Verifier:Telemetry:MetricsUrl",
        ["--otlp"] = "Verifier:Telemetry:OtlpEndpoint",
    };

    /// <summary>Switches without a value.</summary>
    public static readonly IReadOnlySet<string> Flags = new HashSet<string>(StringComparer.Ordinal) { "--allow-plaintext", "--require-client-cert" };

    private static readonly HashSet<string> AspNetSwitches = new(StringComparer.OrdinalIgnoreCase) { "--urls", "--environment", "--contentRoot", "--applicationName", "--config" };

    /// <summary>The first command-line switch nobody understands, or null; unknown switches would otherwise be ignored silently.</summary>
    public static string? UnknownSwitch(IEnumerable<string> args)
    {
        foreach (var arg in args)
        {
            if (!arg.StartsWith("--", StringComparison.Ordinal))
            {
                continue;
            }

            var name = arg.Split('=', 2)[0];
            if (!ShortSwitches.ContainsKey(name) && !Flags.Contains(name) && !AspNetSwitches.Contains(name) && !name.Contains(':', StringComparison.Ordinal))
            {
                return name;
            }
        }

        return null;
    }

    /// <summary>Where the verifier listens when neither <c>--urls</c> nor configuration says.</summary>
    public const string DefaultUrl = "http://127.0.0.1:50051";

    /// <summary>Creates the verifier application from command-line arguments (short switches, <c>--urls</c>, <c>--Verifier:*</c>).</summary>
    /// <param name="args">The command line.</param>
    /// <param name="configure">Extra configuration for hosts that embed the verifier (tests, the demo, benchmarks).</param>
    /// <param name="defaultUrl">The listen address when none is configured; null leaves Kestrel's configuration alone.</param>
    public static WebApplication Create(string[] args, Action<WebApplicationBuilder>? configure = null, string? defaultUrl = null)
    {
        var (valued, flags, configFiles) = SplitArguments(args);
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions
        {
            Args = valued,
            ContentRootPath = AppContext.BaseDirectory,
        });
        foreach (var file in configFiles)
        {
            builder.Configuration.AddJsonFile(Path.GetFullPath(file), optional: false);
        }

        builder.Configuration.AddCommandLine(valued, ShortSwitches.ToDictionary(kv => kv.Key, kv => kv.Value));
        builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Verifier:AllowPlaintext"] = flags.Contains("--allow-plaintext") ? "true" : null,
            ["Verifier:Tls:RequireClientCertificate"] = flags.Contains("--require-client-cert") ? "true" : null,
        }.Where(kv => kv.Value is not null));
        if (defaultUrl is not null && string.IsNullOrEmpty(builder.Configuration["urls"]) && !builder.Configuration.GetSection("Kestrel:Endpoints").Exists())
        {
            builder.WebHost.UseUrls(defaultUrl);
        }

        // Read without validating the verifier options: the host builds these before the model loads, and a bad setting
        // must fail in LoadModel with its own message. The drain delay comes out of the same shutdown budget.
        builder.Services.Configure<HostOptions>(host => host.ShutdownTimeout = TimeSpan.FromSeconds(
            (int.TryParse(builder.Configuration[$"{VerifierOptions.SectionName}:{nameof(VerifierOptions.ShutdownGraceSeconds)}"], out var grace) && grace >= 0 ? grace : 20)
            + (int.TryParse(builder.Configuration[$"{VerifierOptions.SectionName}:{nameof(VerifierOptions.DrainDelaySeconds)}"], out var delay) && delay >= 0 ? delay : 0)));
        builder.WebHost.ConfigureKestrel((context, kestrel) =>
        {
            var tls = context.Configuration.GetSection(VerifierOptions.SectionName).Get<VerifierOptions>()?.Tls ?? new TlsOptions();
            if (tls.Enabled)
            {
                kestrel.ConfigureHttpsDefaults(https => TlsSetup.Configure(https, tls));
            }
        });
        var section = builder.Configuration.GetSection(VerifierOptions.SectionName);
        builder.Services.AddSpecEdgeVerifierServices(section);
        configure?.Invoke(builder);
        // After the embedding host's configuration, which may set the telemetry endpoints.
        builder.Services.AddSpecEdgeVerifierTelemetry(section);

        var app = builder.Build();
        app.MapSpecEdgeVerifier();
        return app;
    }

    /// <summary>An HttpListener prefix from a metrics address: <c>0.0.0.0</c> and <c>*</c> become <c>+</c> (every address), and it ends in a slash.</summary>
    internal static string? NormalizePrefix(string? url)
    {
        if (string.IsNullOrWhiteSpace(url))
        {
            return null;
        }

        var prefix = url.Trim().Replace("://0.0.0.0:", "://+:", StringComparison.Ordinal).Replace("://*:", "://+:", StringComparison.Ordinal);
        return prefix.EndsWith('/') ? prefix : prefix + "/";
    }

    /// <summary>The host and port of a normalized metrics prefix (<c>http://HOST:PORT/</c>).</summary>
    internal static (string Host, int Port) SplitPrefix(string prefix)
    {
        var authority = prefix["http://".Length..].TrimEnd('/');
        var colon = authority.LastIndexOf(':');
        return (authority[..colon], int.Parse(authority[(colon + 1)..], CultureInfo.InvariantCulture));
    }

    /// <summary>
    /// Runs the verifier as its command does: listens at once (readiness NOT_SERVING, Verifier calls UNAVAILABLE), loads
    /// and warms up the model, turns SERVING, and serves until stopped. A model that fails to load stops the server and
    /// throws its error.
    /// </summary>
    public static async Task RunAsync(WebApplication app)
    {
        CheckTransport(app, app.Services.GetRequiredService<IOptions<VerifierOptions>>().Value);
        await app.StartAsync().ConfigureAwait(false);
        if (NormalizePrefix(app.Services.GetRequiredService<IOptions<VerifierOptions>>().Value.Telemetry.MetricsUrl) is { } metrics)
        {
            VerifierLog.MetricsEndpoint(app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("SpecEdge.CloudVerifier"), metrics);
        }

        try
        {
            // The transport was checked before the server started.
            await Task.Run(() => Load(app.Services), app.Lifetime.ApplicationStopping).ConfigureAwait(false);
        }
        catch
        {
            await app.StopAsync().ConfigureAwait(false);
            throw;
        }

        await app.WaitForShutdownAsync().ConfigureAwait(false);
    }

    /// <summary>The served exits' thresholds and where they came from, for output: "layer 2 ≥ 0.30, layer 4 ≥ 0.05 (calibrated: FILE)".</summary>
    public static string DescribeThresholds(WebApplication app)
    {
        var target = app.Services.GetRequiredService<TargetModel>();
        var calibration = app.Services.GetRequiredService<IOptions<VerifierOptions>>().Value.Calibration;
        if (target.Thresholds.Count == 0)
        {
            return "none (the target has no exits)";
        }

        var list = string.Join(", ", target.Model.Manifest.Exits.Select((layer, i) => string.Create(CultureInfo.InvariantCulture, $"layer {layer} ≥ {target.Thresholds[i]:0.00}")));
        return string.IsNullOrEmpty(calibration) ? list : $"{list} (calibrated: {calibration})";
    }

    /// <summary>
    /// Loads the target model (validating the options) before the server listens, so a bad model or setting fails
    /// start-up with its own message rather than the first call.
    /// </summary>
    public static void LoadModel(WebApplication app)
    {
        var options = app.Services.GetRequiredService<IOptions<VerifierOptions>>().Value;
        CheckTransport(app, options);
        Load(app.Services);
    }

    /// <summary>Loads and warms up the model once per host (later calls find it done), then turns readiness SERVING.</summary>
    internal static void Load(IServiceProvider services)
    {
        var readiness = services.GetRequiredService<VerifierReadiness>();
        lock (readiness.LoadLock)
        {
            if (readiness.ModelLoaded)
            {
                return;
            }

            var started = System.Diagnostics.Stopwatch.StartNew();
            var target = services.GetRequiredService<TargetModel>();
            services.GetRequiredService<SessionRegistry>();
            WarmUp(services.GetRequiredService<BatchScheduler>(), target);
            var logger = services.GetRequiredService<ILoggerFactory>().CreateLogger("SpecEdge.CloudVerifier");
            var m = target.Model;
            VerifierLog.Serving(logger, m.Directory, m.Config.NumHiddenLayers, string.Join(",", m.Manifest.Exits), m.VocabSize, m.Device.ToString(), target.Profile.Label);
            readiness.MarkReady();
            VerifierLog.Ready(logger, started.ElapsedMilliseconds);
        }
    }

    /// <summary>One step through every stage on a scratch slot, so the first session does not pay ONNX Runtime's first-run costs.</summary>
    private static void WarmUp(BatchScheduler scheduler, TargetModel target)
    {
        var slot = scheduler.OpenSlot();
        try
        {
            var token = target.Model.Tokenizer.Bos ?? new Shared.Tokenization.TokenId(0);
            scheduler.RunAsync(slot, new[] { token, token }, observer: null, CancellationToken.None).GetAwaiter().GetResult();
            scheduler.Finished(slot);
        }
        finally
        {
            scheduler.CloseSlot(slot);
        }
    }

    /// <summary>
    /// Plaintext HTTP/2 only on loopback, unless <see cref="VerifierOptions.AllowPlaintext"/> is set (then with a warning);
    /// https:// addresses need a configured certificate.
    /// </summary>
    private static void CheckTransport(WebApplication app, VerifierOptions options)
    {
        var configuration = app.Services.GetRequiredService<IConfiguration>();
        var urls = (configuration["urls"] ?? string.Empty).Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Concat(configuration.GetSection("Kestrel:Endpoints").GetChildren().Select(e => e["Url"]).OfType<string>())
            .Concat(app.Urls);
        var logger = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("SpecEdge.CloudVerifier");
        foreach (var url in urls.Distinct(StringComparer.OrdinalIgnoreCase))
        {
            if (!Uri.TryCreate(url.Replace("*", "0.0.0.0", StringComparison.Ordinal).Replace("+", "0.0.0.0", StringComparison.Ordinal), UriKind.Absolute, out var uri))
            {
                throw new OptionsValidationException(VerifierOptions.SectionName, typeof(VerifierOptions), [$"'{url}' is not a listen address such as http://127.0.0.1:50051"]);
            }

            if (uri.Scheme == "https" && !options.Tls.Enabled)
            {
                throw new OptionsValidationException(VerifierOptions.SectionName, typeof(VerifierOptions), [$"{url} is https but no certificate is configured: give --tls-cert and --tls-key"]);
            }

            if (uri.Scheme == "http" && !IsLoopback(uri.Host))
            {
                if (!options.AllowPlaintext)
                {
                    throw new OptionsValidationException(VerifierOptions.SectionName, typeof(VerifierOptions), [$"{url} would serve plaintext HTTP/2 off loopback: listen on https:// with --tls-cert/--tls-key, or pass --allow-plaintext to accept unencrypted traffic"]);
                }

                VerifierLog.PlaintextOffLoopback(logger, url);
            }
        }
    }

    private static bool IsLoopback(string host) =>
        host is "localhost" || (IPAddress.TryParse(host.Trim('[', ']'), out var address) && IPAddress.IsLoopback(address));

    private static (string[] Valued, HashSet<string> Flags, List<string> ConfigFiles) SplitArguments(string[] args)
    {
        var valued = new List<string>();
        var flags = new HashSet<string>(StringComparer.Ordinal);
        var configFiles = new List<string>();
        for (var i = 0; i < args.Length; i++)
        {
            if (Flags.Contains(args[i]))
            {
                flags.Add(args[i]);
            }
            else if (args[i] == "--config" && i + 1 < args.Length)
            {
                configFiles.Add(args[++i]);
            }
            else
            {
                valued.Add(args[i]);
            }
        }

        return ([.. valued], flags, configFiles);
    }

    /// <summary>
    /// Starts a verifier on an ephemeral loopback port (plaintext HTTP/2) for embedding hosts, and returns it with its
    /// address. Console logging is kept to warnings.
    /// </summary>
    public static async Task<(WebApplication App, Uri Address)> StartLoopbackAsync(string modelDirectory, Action<VerifierOptions>? options = null, Action<WebApplicationBuilder>? configure = null, CancellationToken cancellationToken = default)
    {
        var app = Create([], builder =>
        {
            builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0, l => l.Protocols = HttpProtocols.Http2));
            builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?> { ["Logging:LogLevel:Default"] = "Warning" });
            builder.Services.Configure<VerifierOptions>(o =>
            {
                o.Model = modelDirectory;
                options?.Invoke(o);
            });
            configure?.Invoke(builder);
        });
        LoadModel(app);
        await app.StartAsync(cancellationToken).ConfigureAwait(false);
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        return (app, new Uri(address));
    }
}
