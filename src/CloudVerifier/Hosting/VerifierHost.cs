using System.Net;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection.Extensions;
using SpecEdge.CloudVerifier.Configuration;
using SpecEdge.CloudVerifier.Logging;
using SpecEdge.CloudVerifier.Scheduling;
using SpecEdge.CloudVerifier.Services;
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
        ["--exits"] = "Verifier:Exits",
        ["--threads"] = "Verifier:IntraOpThreads",
        ["--profile"] = "Verifier:ComputeProfile",
        ["--calibration"] = "Verifier:Calibration",
        ["--max-sessions"] = "Verifier:Limits:MaxSessions",
        ["--max-draft-tokens"] = "Verifier:Limits:MaxDraftTokens",
        ["--cache"] = "Verifier:CacheDirectory",
    };

    private static readonly HashSet<string> AspNetSwitches = new(StringComparer.OrdinalIgnoreCase) { "--urls", "--environment", "--contentRoot", "--applicationName" };

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
            if (!ShortSwitches.ContainsKey(name) && !AspNetSwitches.Contains(name) && !name.Contains(':', StringComparison.Ordinal))
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
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions
        {
            Args = args,
            ContentRootPath = AppContext.BaseDirectory,
        });
        builder.Configuration.AddCommandLine(args, ShortSwitches.ToDictionary(kv => kv.Key, kv => kv.Value));
        if (defaultUrl is not null && string.IsNullOrEmpty(builder.Configuration["urls"]) && !builder.Configuration.GetSection("Kestrel:Endpoints").Exists())
        {
            builder.WebHost.UseUrls(defaultUrl);
        }

        builder.Services.AddOptions<VerifierOptions>()
            .Bind(builder.Configuration.GetSection(VerifierOptions.SectionName))
            .ValidateDataAnnotations()
            .Validate(o => o.Limits is not null, "Verifier:Limits is required")
            .ValidateOnStart();
        builder.Services.TryAddSingleton(TimeProvider.System);
        builder.Services.AddSingleton<TargetModel>();
        builder.Services.AddSingleton<ModelScheduler>();
        builder.Services.AddSingleton<SessionRegistry>();
        builder.Services.AddGrpc(o => o.MaxReceiveMessageSize = 16 * 1024 * 1024);
        builder.Services.AddGrpcHealthChecks().AddCheck("model", () => Microsoft.Extensions.Diagnostics.HealthChecks.HealthCheckResult.Healthy());
        builder.Services.AddGrpcReflection();
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(30));
        configure?.Invoke(builder);

        var app = builder.Build();
        app.MapGrpcService<VerifierService>();
        app.MapGrpcHealthChecksService();
        app.MapGrpcReflectionService();
        app.Lifetime.ApplicationStarted.Register(() =>
        {
            var target = app.Services.GetRequiredService<TargetModel>();
            var logger = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("SpecEdge.CloudVerifier");
            var m = target.Model;
            VerifierLog.Serving(logger, m.Directory, m.Config.NumHiddenLayers, string.Join(",", m.Manifest.Exits), m.VocabSize, m.Device.ToString(), target.Profile.Label);
        });
        return app;
    }

    /// <summary>
    /// Loads the target model (validating the options) before the server listens, so a bad model or setting fails
    /// start-up with its own message rather than the first call.
    /// </summary>
    public static void LoadModel(WebApplication app) => app.Services.GetRequiredService<TargetModel>();

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
