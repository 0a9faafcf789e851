using System.Globalization;
using Microsoft.Extensions.Options;
using SpecEdge.CloudVerifier.Configuration;
using SpecEdge.CloudVerifier.Logging;
using SpecEdge.Protocol.V1;
using SpecEdge.Shared.Decoding;
using SpecEdge.Shared.Models.Checkpoints;
using SpecEdge.Shared.Models.Conversion;
using SpecEdge.Shared.Runtime;
using SpecEdge.Shared.Timing;

namespace SpecEdge.CloudVerifier.Hosting;

/// <summary>
/// The target model the verifier serves, loaded once at start-up (a checkpoint folder is converted on first use) and
/// shared by every session; with its exits' thresholds, the effective limits and the compute profile.
/// </summary>
public sealed class TargetModel : IDisposable
{
    private readonly RejectionCorrection _correction;

    /// <summary>Loads the configured model (converting a checkpoint on first use) and resolves its exits, thresholds, limits and profile.</summary>
    public TargetModel(IOptions<VerifierOptions> options, ILogger<TargetModel> logger)
    {
        var o = options.Value;
        var exits = ParseExits(o.Exits);
        if (exits.Count == 0 && LlamaCheckpoint.IsCheckpointFolder(o.Model))
        {
            // A checkpoint made by SpecEdge's training recipe names its trained exits in config.json.
            exits = [.. LlamaConfig.Load(Path.Combine(o.Model, LlamaCheckpoint.ConfigFileName)).SuggestedExits];
        }

        var compute = TensorDTypes.ParseCli(o.Compute) ?? TensorDType.Float32;
        var directory = ModelResolver.Resolve(o.Model, new ConversionOptions { Exits = exits, ComputeDtype = compute }, string.IsNullOrEmpty(o.CacheDirectory) ? null : o.CacheDirectory, message => VerifierLog.Converting(logger, message));
        var device = o.Device == "cuda" ? ExecutionDevice.Cuda : ExecutionDevice.Cpu;
        Limits = o.Limits;
        MaxLeaves = o.Batching.Enabled ? o.Limits.MaxLeaves : 0;
        Model = LanguageModel.Load(directory, new RuntimeOptions
        {
            Device = device,
            DeviceId = o.DeviceId,
            IntraOpThreads = o.IntraOpThreads,
            MaxStepTokens = Math.Max(RuntimeOptions.DefaultMaxStepTokens, MaxRoundTokens),
            // Batching runs the batched graphs over a KV arena in host memory; without it, each session decodes on its
            // own cache with the fused GroupQueryAttention (on CUDA, a cache in device memory: the GPU's form until the
            // arena can live there too).
            Attention = o.Batching.Enabled ? Shared.Models.Onnx.AttentionForm.Batched : Shared.Models.Onnx.AttentionForm.SharedBuffer,
        }, logger);
        MaxSequenceLength = o.Limits.MaxSequenceLength > 0 ? Math.Min(o.Limits.MaxSequenceLength, Model.MaxSequenceLength) : Model.MaxSequenceLength;
        Profile = string.IsNullOrEmpty(o.ComputeProfile) ? ComputeProfile.Real : ComputeProfiles.Resolve(o.ComputeProfile);
        Thresholds = ResolveThresholds(o, Model.Manifest.Exits.Count);
        ModelId = Path.GetFileName(Path.GetFullPath(o.Model).TrimEnd(Path.DirectorySeparatorChar));
        _correction = o.RejectionCorrection;
    }

    /// <summary>The loaded model: the batched graph form with batching on, the shared-buffer form with it off.</summary>
    public LanguageModel Model { get; }

    /// <summary>A name for the model: its folder's name.</summary>
    public string ModelId { get; }

    /// <summary>The longest sequence a session holds (the limit or the model's maximum, whichever is smaller).</summary>
    public int MaxSequenceLength { get; }

    /// <summary>The compute profile whose verification floors the verifier emulates (<see cref="ComputeProfile.Real"/> when none).</summary>
    public ComputeProfile Profile { get; }

    /// <summary>The confidence each exit needs before its provisional verdict is sent, in exit order.</summary>
    public IReadOnlyList<float> Thresholds { get; }

    /// <summary>The configured limits.</summary>
    public VerifierLimits Limits { get; }

    /// <summary>The most leaves a round may carry: the limit with batching on (the batched graphs take any attention bias), 0 with it off.</summary>
    public int MaxLeaves { get; }

    /// <summary>The most tokens one round scores: the last committed token, the drafts and the leaves.</summary>
    public int MaxRoundTokens => Limits.MaxDraftTokens + MaxLeaves + 1;

    /// <summary>The stage index whose logits are exit <paramref name="exit"/>'s (stages before the last end at exits).</summary>
    public static int StageOfExit(int exit) => exit;

    /// <summary>What the verifier serves, as the Describe call answers it.</summary>
    public ModelDescription Describe()
    {
        var manifest = Model.Manifest;
        var description = new ModelDescription
        {
            ModelId = ModelId,
            Architecture = manifest.Architecture,
            VocabSize = manifest.VocabSize,
            TokenizerKind = manifest.Tokenizer.Kind,
            TokenizerSha256 = manifest.Tokenizer.Sha256 ?? string.Empty,
            WeightsSha256 = manifest.WeightsSha256,
            NumLayers = (uint)manifest.NumLayers,
            Device = Model.Device.ToString().ToLowerInvariant(),
            ServerVersion = ModelConverter.Version,
            ComputeProfile = Profile.IsEmulated ? Profile.Label : string.Empty,
            Limits = new Limits
            {
                MaxSessions = (uint)Limits.MaxSessions,
                MaxDraftTokens = (uint)Limits.MaxDraftTokens,
                MaxPromptTokens = (uint)Limits.MaxPromptTokens,
                MaxNewTokens = (uint)Limits.MaxNewTokens,
                MaxSequenceLength = (uint)MaxSequenceLength,
                IdleTimeoutSeconds = (uint)Limits.IdleTimeoutSeconds,
                MaxLeaves = (uint)MaxLeaves,
            },
        };
        description.Exits.AddRange(ExitInfos(Thresholds));
        return description;
    }

    /// <summary>The exits' layers with the given thresholds, in exit order.</summary>
    public IEnumerable<ExitInfo> ExitInfos(IReadOnlyList<float> thresholds) =>
        Model.Manifest.Exits.Select((layer, i) => new ExitInfo { Layer = (uint)layer, Threshold = thresholds[i] });

    /// <summary>
    /// What bounds a sequence, for error messages: a Mistral model's sliding window when that is the bound (attention
    /// over the whole context is exact only within it), else the maximum sequence length.
    /// </summary>
    public string LengthLimit => Model.Config.SlidingWindow is { } window && window == MaxSequenceLength
        ? $"the model's sliding window of {window} tokens (sliding_window in config.json: SpecEdge attends to the whole context, which is exact only within the window)"
        : $"the maximum sequence length of {MaxSequenceLength}";

    /// <summary>A session's acceptance rule (each session owns one: it keeps scratch buffers).</summary>
    internal AcceptanceRule CreateAcceptanceRule() => new(Model.VocabSize, _correction);

    /// <inheritdoc/>
    public void Dispose() => Model.Dispose();

    private static List<int> ParseExits(string? text)
    {
        var exits = new List<int>();
        if (string.IsNullOrWhiteSpace(text))
        {
            return exits;
        }

        foreach (var part in text.Split(',', StringSplitOptions.TrimEntries))
        {
            if (!int.TryParse(part, NumberStyles.Integer, CultureInfo.InvariantCulture, out var layer))
            {
                throw new OptionsValidationException(VerifierOptions.SectionName, typeof(VerifierOptions), [$"Verifier:Exits: '{part}' is not an integer (expected a list such as 2,4)"]);
            }

            exits.Add(layer);
        }

        return exits;
    }

    private static float[] ResolveThresholds(VerifierOptions o, int exitCount)
    {
        var thresholds = Enumerable.Repeat(o.DefaultExitThreshold, exitCount).ToArray();
        if (!string.IsNullOrEmpty(o.Calibration))
        {
            var calibrated = SpecEdge.Shared.Calibration.CalibrationReport.LoadThresholds(o.Calibration);
            if (calibrated.Count != exitCount)
            {
                throw new OptionsValidationException(VerifierOptions.SectionName, typeof(VerifierOptions), [$"Verifier:Calibration: {o.Calibration} holds thresholds for {calibrated.Count} exits, the model has {exitCount}"]);
            }

            thresholds = [.. calibrated];
        }

        if (o.ExitThresholds.Length > 0)
        {
            if (o.ExitThresholds.Length != exitCount)
            {
                throw new OptionsValidationException(VerifierOptions.SectionName, typeof(VerifierOptions), [$"Verifier:ExitThresholds has {o.ExitThresholds.Length} values, the model has {exitCount} exits"]);
            }

            thresholds = o.ExitThresholds;
        }

        foreach (var t in thresholds)
        {
            if (!(t >= 0f && t <= 1f))
            {
                throw new OptionsValidationException(VerifierOptions.SectionName, typeof(VerifierOptions), [$"exit threshold {t.ToString(CultureInfo.InvariantCulture)} is outside [0, 1]"]);
            }
        }

        return thresholds;
    }
}
