using System.ComponentModel.DataAnnotations;

namespace SpecEdge.CloudVerifier.Configuration;

/// <summary>
/// The verifier's configuration, bound from the <c>Verifier</c> section (appsettings.json, <c>Verifier__*</c>
/// environment variables, <c>--Verifier:*</c> or the short command-line switches) and validated at start-up.
/// </summary>
public sealed class VerifierOptions
{
    public const string SectionName = "Verifier";

    /// <summary>Default for <see cref="DefaultExitThreshold"/>.</summary>
    public const float DefaultThreshold = 0.5f;

    /// <summary>The target model: a converted SpecEdge folder or a Hugging Face checkpoint folder (converted on first use).</summary>
    [Required(ErrorMessage = "Verifier:Model is required: give --model DIR (a converted model or a Hugging Face checkpoint folder)")]
    public string Model { get; set; } = string.Empty;

    /// <summary>Exit layers (e.g. <c>2,4</c>) to cut a checkpoint at when converting it; ignored for a converted folder.</summary>
    public string? Exits { get; set; }

    /// <summary><c>cpu</c> (default) or <c>cuda</c>; CUDA falls back to the CPU, loudly, when it cannot load.</summary>
    [RegularExpression("^(cpu|cuda)$", ErrorMessage = "Verifier:Device must be 'cpu' or 'cuda'")]
    public string Device { get; set; } = "cpu";

    public int DeviceId { get; set; }

    /// <summary>ONNX Runtime intra-op threads; 0 lets ONNX Runtime choose.</summary>
    [Range(0, 1024)]
    public int IntraOpThreads { get; set; }

    /// <summary>How many model runs may go at once (default 1: sessions take turns on the device).</summary>
    [Range(1, 256)]
    public int MaxConcurrentRuns { get; set; } = 1;

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

    [Required]
    public VerifierLimits Limits { get; set; } = new();
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
}
