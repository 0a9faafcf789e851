using System.ComponentModel.DataAnnotations;
using SpecEdge.Shared.Decoding;

namespace SpecEdge.CloudVerifier.Configuration;

/// <summary>
/// The verifier's configuration, bound from the <c>Verifier</c> section (appsettings.json, <c>Verifier__*</c>
/// environment variables, <c>--Verifier:*</c> or the short command-line switches) and validated at start-up.
/// </summary>
public sealed class VerifierOptions
{
    /// <summary>The configuration section these options bind from.</summary>
    public const string SectionName = "Verifier";

    /// <summary>Default for <see cref="DefaultExitThreshold"/>.</summary>
    public const float DefaultThreshold = 0.5f;

    /// <summary>The target model: a converted SpecEdge folder or a Hugging Face checkpoint folder (converted on first use).</summary>
    [Required(ErrorMessage = "Verifier:Model is required: give --model DIR (a converted model or a Hugging Face checkpoint folder)")]
    public string Model { get; set; } = string.Empty;

    /// <summary>
    /// Exit layers (e.g. <c>2,4</c>) to cut a checkpoint at when converting it (default: the checkpoint's
    /// <c>"specedge_exits"</c>, if any); ignored for a converted folder.
    /// </summary>
    public string? Exits { get; set; }

    /// <summary><c>cpu</c> (default) or <c>cuda</c>; CUDA falls back to the CPU, loudly, when it cannot load.</summary>
    [RegularExpression("^(cpu|cuda)$", ErrorMessage = "Verifier:Device must be 'cpu' or 'cuda'")]
    public string Device { get; set; } = "cpu";

    /// <summary>
    /// The type a checkpoint is converted to compute in on first use: <c>f32</c> (default) or <c>f16</c> (for a GPU: half
    /// the memory; see the README's "Models"); ignored for a converted folder, which says its own.
    /// </summary>
    [RegularExpression("^(f32|f16)$", ErrorMessage = "Verifier:Compute must be 'f32' or 'f16'")]
    public string Compute { get; set; } = "f32";

    /// <summary>The CUDA device index when <see cref="Device"/> is <c>cuda</c> (default 0).</summary>
    public int DeviceId { get; set; }

    /// <summary>ONNX Runtime intra-op threads; 0 lets ONNX Runtime choose.</summary>
    [Range(0, 1024)]
    public int IntraOpThreads { get; set; }

    /// <summary>How rounds of different sessions share the model's steps.</summary>
    [Required]
    public BatchingOptions Batching { get; set; } = new();

    /// <summary>Confidence an exit needs before its provisional verdict is sent, for exits without their own threshold (default 0.5).</summary>
    [Range(0.0, 1.0, ErrorMessage = "Verifier:DefaultExitThreshold must lie in [0, 1]")]
    public float DefaultExitThreshold { get; set; } = DefaultThreshold;

    /// <summary>Per-exit thresholds, in exit order, each in [0, 1]; a calibration file may set them instead.</summary>
    public float[] ExitThresholds { get; set; } = [];

    /// <summary>A calibration file written by <c>specedge-edge calibrate</c>, whose chosen thresholds the verifier uses.</summary>
    public string? Calibration { get; set; }

    /// <summary>A compute profile (a built-in name or a profile file) whose verification floors the verifier emulates.</summary>
    public string? ComputeProfile { get; set; }

    /// <summary>Where converted checkpoints are cached; the default cache when empty.</summary>
    public string? CacheDirectory { get; set; }

    /// <summary>What one verifier accepts (the <c>Verifier:Limits</c> section).</summary>
    [Required]
    public VerifierLimits Limits { get; set; } = new();

    /// <summary>Serve plaintext HTTP/2 on addresses other than loopback (a warning is logged). Off by default: use TLS.</summary>
    public bool AllowPlaintext { get; set; }

    /// <summary>TLS and mutual TLS (the <c>Verifier:Tls</c> section).</summary>
    public TlsOptions Tls { get; set; } = new();

    /// <summary>API keys; when any is configured every Verifier call needs <c>authorization: Bearer KEY</c>.</summary>
    public List<ApiKeyOptions> ApiKeys { get; set; } = [];

    /// <summary>
    /// A test seam, not configuration (internal, so no configuration source binds it): the acceptance rule's correction
    /// after a rejection. Tests set a wrong one to show that the distribution tests would catch it.
    /// </summary>
    internal RejectionCorrection RejectionCorrection { get; set; } = RejectionCorrection.Residual;

    /// <summary>On SIGTERM, how long rounds in flight may finish before the verifier exits (default 20 s).</summary>
    [Range(0, 3600)]
    public int ShutdownGraceSeconds { get; set; } = 20;

    /// <summary>
    /// On SIGTERM, how long readiness answers NOT_SERVING (new sessions refused, open ones carrying on) before open
    /// sessions are told to move and the server stops (default 0). Give a balancer or Kubernetes time to see it.
    /// </summary>
    [Range(0, 600)]
    public int DrainDelaySeconds { get; set; }

    /// <summary>Metrics and traces (the <c>Verifier:Telemetry</c> section).</summary>
    public TelemetryOptions Telemetry { get; set; } = new();
}

/// <summary>Where the verifier's metrics and traces go.</summary>
public sealed class TelemetryOptions
{
    /// <summary>
    /// Serve Prometheus' scrape endpoint (<c>/metrics</c>) on its own HTTP/1.1 listener at this prefix, e.g.
    /// <c>http://+:9464/</c> (every address) or <c>http://127.0.0.1:9464/</c>; none when empty.
    /// </summary>
    [RegularExpression(@"^$|^http://[^/]+:\d+/?$", ErrorMessage = "Verifier:Telemetry:MetricsUrl must look like http://+:9464/ or http://127.0.0.1:9464/ (plain HTTP, a port, no path)")]
    public string? MetricsUrl { get; set; }

    /// <summary>
    /// Export metrics and traces over OTLP to this endpoint (e.g. <c>http://collector:4317</c>); also on when the
    /// standard <c>OTEL_EXPORTER_OTLP_ENDPOINT</c> variable is set. None when both are empty.
    /// </summary>
    public string? OtlpEndpoint { get; set; }
}

/// <summary>TLS from configured certificates (PEM files), and optional mutual TLS.</summary>
public sealed class TlsOptions
{
    /// <summary>The server certificate (PEM); with <see cref="KeyPath"/>, serve HTTPS on the https:// addresses.</summary>
    public string? CertificatePath { get; set; }

    /// <summary>The certificate's private key (PEM).</summary>
    public string? KeyPath { get; set; }

    /// <summary>Require a client certificate issued by <see cref="ClientCaPath"/> (mutual TLS).</summary>
    public bool RequireClientCertificate { get; set; }

    /// <summary>The CA certificate (PEM) client certificates must chain to.</summary>
    public string? ClientCaPath { get; set; }

    /// <summary>True when a server certificate is configured (the verifier serves HTTPS).</summary>
    public bool Enabled => !string.IsNullOrEmpty(CertificatePath);
}

/// <summary>One API key, stored as the SHA-256 of the key (hex), never the key itself.</summary>
public sealed class ApiKeyOptions
{
    /// <summary>A name for logs and metrics (never the key).</summary>
    [Required]
    public string Name { get; set; } = string.Empty;

    /// <summary>SHA-256 of the key, 64 hex digits (<c>specedge-cloud --hash-key</c> prints it).</summary>
    [Required]
    [RegularExpression("^[0-9a-fA-F]{64}$", ErrorMessage = "an API key's Sha256 must be 64 hex digits (specedge-cloud --hash-key prints it)")]
    public string Sha256 { get; set; } = string.Empty;

    /// <summary>Sessions this key may hold at once (default 16).</summary>
    [Range(1, 100_000)]
    public int MaxSessions { get; set; } = 16;

    /// <summary>Calls this key may start per minute (default 600).</summary>
    [Range(1, 10_000_000)]
    public int RequestsPerMinute { get; set; } = 600;

    /// <summary>A revoked key is refused like an unknown one.</summary>
    public bool Revoked { get; set; }
}

/// <summary>
/// Continuous batching (the <c>Verifier:Batching</c> section): rounds, prefills and cloud Generate steps of different
/// sessions that are ready at the same time run as one model call per stage.
/// </summary>
public sealed class BatchingOptions
{
    /// <summary>Default for <see cref="MaxRows"/>.</summary>
    public const int DefaultMaxRows = 32;

    /// <summary>Default for <see cref="TokenBudget"/>.</summary>
    public const int DefaultTokenBudget = 512;

    /// <summary>Default for <see cref="PrefillChunkTokens"/>.</summary>
    public const int DefaultPrefillChunkTokens = 32;

    /// <summary>Batch sessions' steps (default true). Off: one session's step at a time, as a semaphore would.</summary>
    public bool Enabled { get; set; } = true;

    /// <summary>The most sessions one step serves (default 32).</summary>
    [Range(1, 4096)]
    public int MaxRows { get; set; } = DefaultMaxRows;

    /// <summary>The most tokens one step runs, padding included: rows × the longest row (default 512).</summary>
    [Range(1, 1_000_000)]
    public int TokenBudget { get; set; } = DefaultTokenBudget;

    /// <summary>A prompt longer than this is prefilled in chunks of this many tokens, one per step, between other sessions' rounds (default 32).</summary>
    [Range(1, 4096)]
    public int PrefillChunkTokens { get; set; } = DefaultPrefillChunkTokens;

    /// <summary>
    /// How long a step may wait, in microseconds, for the sessions the previous step served to send their next round
    /// (default 0: a step takes what is ready, and rounds arriving while it runs join the next one). Worth about the
    /// edges' round trip when that is short next to a step (a GPU step of tens of ms, edges on a fast network): a
    /// session whose next round misses the step's start otherwise waits a whole step. It waits for nobody else, and
    /// not at all once they are back.
    /// </summary>
    [Range(0, 1_000_000)]
    public int WindowMicroseconds { get; set; }
}

/// <summary>What one verifier accepts.</summary>
public sealed class VerifierLimits
{
    /// <summary>Decode sessions open at once (default 64); more get ResourceExhausted.</summary>
    [Range(1, 100_000)]
    public int MaxSessions { get; set; } = 64;

    /// <summary>Drafts one round may carry (default 16).</summary>
    [Range(1, 256)]
    public int MaxDraftTokens { get; set; } = 16;

    /// <summary>
    /// Leaves one round may carry beside its drafts, a token tree (default 32; 0 takes chains only). Trees run in the
    /// batched graphs only: with batching off the verifier takes none.
    /// </summary>
    [Range(0, 256)]
    public int MaxLeaves { get; set; } = 32;

    /// <summary>Prompt tokens (plus committed tokens when resuming) an Open may carry (default 2048).</summary>
    [Range(1, 1_000_000)]
    public int MaxPromptTokens { get; set; } = 2048;

    /// <summary>New tokens one generation may ask for (default 4096).</summary>
    [Range(1, 1_000_000)]
    public int MaxNewTokens { get; set; } = 4096;

    /// <summary>The longest sequence a session holds; the model's maximum when 0.</summary>
    [Range(0, 1_000_000)]
    public int MaxSequenceLength { get; set; }

    /// <summary>A session with no message for this long is closed (default 300 s).</summary>
    [Range(1, 86_400)]
    public int IdleTimeoutSeconds { get; set; } = 300;

    /// <summary>
    /// KV-cache memory all sessions together may hold, in MiB; 0 sets it to half of the memory available to the
    /// process. A session that would pass it is refused with ResourceExhausted and a retry hint.
    /// </summary>
    [Range(0.0, 16_000_000.0)]
    public double KvBudgetMegabytes { get; set; }
}
