using SpecEdge.Shared.Models.Checkpoints;
using SpecEdge.Shared.Models.Conversion;
using SpecEdge.Shared.Models.Synthetic;

using SpecEdge.CloudVerifier.Configuration;
using SpecEdge.Shared.Models;

namespace SpecEdge.Demo;

/// <summary>A target (with its exit layers) and a draft that share one tokenizer.</summary>
/// <param name="Target">The target's checkpoint or converted folder.</param>
/// <param name="Draft">The draft's checkpoint or converted folder.</param>
/// <param name="Exits">The exit layers to cut the target at.</param>
/// <param name="Description">Where the pair comes from, for output.</param>
/// <param name="Trained">False for the seeded synthetic stand-in (its text is noise).</param>
/// <param name="Calibration">The exit calibration shipped with the pair (<c>specedge-edge calibrate --out</c>), if any.</param>
public sealed record ModelPair(string Target, string Draft, IReadOnlyList<int> Exits, string Description, bool Trained, string? Calibration = null)
{
    /// <summary>The exit threshold to use without a calibration: 0 (every early verdict) for random weights, else 0.5.</summary>
    public float FallbackExitThreshold => Trained ? 0.5f : 0f;
}

/// <summary>
/// The built-in default model pair: the trained pair committed under <c>models/</c> when the repository has it, else a
/// seeded synthetic stand-in written on first use into the cache (a draft drawn with the target's seed and fewer layers,
/// so that it often agrees with the target).
/// </summary>
public static class DefaultModels
{
    /// <summary>The synthetic target: 4 layers, hidden 128, GQA 4/2, byte vocabulary; exit after layer 2.</summary>
    public static SyntheticModelSpec SyntheticTarget { get; } = new()
    {
        Layers = 4,
        Hidden = 128,
        Heads = 4,
        KvHeads = 2,
        Intermediate = 256,
        Vocab = 258,
        Seed = 2025,
        MaxPositions = 1024,
        LayerOutputScale = 0.15,
    };

    /// <summary>The synthetic draft: the target's first layer (same seed and sizes, one layer).</summary>
    public static SyntheticModelSpec SyntheticDraft { get; } = SyntheticTarget with { Layers = 1 };

    /// <summary>The synthetic target's exit layers.</summary>
    public static IReadOnlyList<int> SyntheticExits { get; } = [2];

    /// <summary>The exit calibration beside the trained pair: <c>models/calibration.json</c>.</summary>
    public const string CalibrationFileName = "calibration.json";

    /// <summary>The SHA-256 of every weight, config and tokenizer file of the trained pair (<c>sha256sum</c> format).</summary>
    public const string ChecksumFileName = "SHA256SUMS";

    /// <summary>The trained pair under <c>models/</c> (found from the working folder or the program's folder upwards), else the synthetic pair.</summary>
    public static ModelPair Resolve(string? cacheRoot = null)
    {
        if (FindRepositoryModels() is { } trained)
        {
            return trained;
        }

        var root = Path.Combine(cacheRoot ?? Path.GetDirectoryName(ModelResolver.DefaultCacheRoot)!, "synthetic-pair-v1");
        var target = Path.Combine(root, "target");
        var draft = Path.Combine(root, "draft");
        if (!File.Exists(Path.Combine(target, "config.json")) || !File.Exists(Path.Combine(draft, "config.json")))
        {
            var staging = root + $".tmp-{Guid.NewGuid():N}";
            SyntheticCheckpoint.Write(Path.Combine(staging, "target"), SyntheticTarget);
            SyntheticCheckpoint.Write(Path.Combine(staging, "draft"), SyntheticDraft);
            try
            {
                if (Directory.Exists(root))
                {
                    Directory.Delete(root, recursive: true);
                }

                Directory.Move(staging, root);
            }
            catch (IOException) when (File.Exists(Path.Combine(target, "config.json")))
            {
                Directory.Delete(staging, recursive: true);
            }
        }

        return new ModelPair(target, draft, SyntheticExits, "synthetic stand-in (seeded random weights: the text is noise; the trained pair replaces it)", Trained: false);
    }

    /// <summary>The exit layers a checkpoint suggests in its config.json (<c>"specedge_exits": [2, 4]</c>); none when absent.</summary>
    public static IReadOnlyList<int> ExitsOf(string checkpoint) =>
        LlamaConfig.Load(Path.Combine(checkpoint, LlamaCheckpoint.ConfigFileName)).SuggestedExits;

    /// <summary>
    /// A trained pair folder (<c>target/</c>, <c>draft/</c>, optional <c>calibration.json</c>), its files checked
    /// against the folder's <c>SHA256SUMS</c> when it has one, so an edited or truncated weight file is refused before
    /// it is converted into a model that writes garbage.
    /// </summary>
    /// <exception cref="ModelFormatException">A file listed in <c>SHA256SUMS</c> is missing, or the list is malformed.</exception>
    /// <exception cref="ModelIntegrityException">A file's content differs from its recorded hash.</exception>
    public static ModelPair LoadTrainedPair(string models)
    {
        var sums = Path.Combine(models, ChecksumFileName);
        if (File.Exists(sums))
        {
            VerifyChecksums(models, sums);
        }

        var target = Path.Combine(models, "target");
        var calibration = Path.Combine(models, CalibrationFileName);
        return new ModelPair(target, Path.Combine(models, "draft"), ExitsOf(target), $"trained pair in {models}", Trained: true, File.Exists(calibration) ? calibration : null);
    }

    private static void VerifyChecksums(string models, string sums)
    {
        var lineNumber = 0;
        foreach (var line in File.ReadLines(sums))
        {
            lineNumber++;
            if (string.IsNullOrWhiteSpace(line))
            {
                continue;
            }

            // sha256sum's format: 64 hex digits, two spaces (or space and '*'), the relative path.
            if (line.Length < 67 || line[64] != ' ' || !line[..64].All(char.IsAsciiHexDigitLower))
            {
                throw new ModelFormatException(sums, $"line {lineNumber} is not '<sha256>  <file>'");
            }

            var name = line[66..];
            var path = Path.Combine(models, name);
            if (!File.Exists(path))
            {
                throw new ModelFormatException(path, $"listed in {ChecksumFileName} but missing");
            }

            var actual = ModelManifest.HashFile(path);
            if (actual != line[..64])
            {
                throw new ModelIntegrityException(path, line[..64], actual, $"the shipped file was truncated or edited; restore it (git checkout -- {Path.GetFileName(models)}/{name})");
            }
        }
    }

    /// <summary>The committed trained pair, or null when this checkout has none.</summary>
    public static ModelPair? FindRepositoryModels()
    {
        foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
        {
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                var models = Path.Combine(dir.FullName, "models");
                var target = Path.Combine(models, "target");
                var draft = Path.Combine(models, "draft");
                if (File.Exists(Path.Combine(target, "config.json")) && File.Exists(Path.Combine(draft, "config.json")))
                {
                    return LoadTrainedPair(models);
                }
            }
        }

        return null;
    }
}

/// <summary>The demo's and the benchmarks' way of serving a <see cref="ModelPair"/> from an in-process verifier.</summary>
public static class ModelPairServing
{
    /// <summary>
    /// Serves <paramref name="pair"/>: its exits, and as exit thresholds <paramref name="threshold"/> when given, else the
    /// pair's shipped calibration, else its fallback threshold.
    /// </summary>
    public static void ServePair(this VerifierOptions options, ModelPair pair, float? threshold)
    {
        options.Exits = string.Join(",", pair.Exits);
        if (threshold is { } explicitThreshold)
        {
            options.DefaultExitThreshold = explicitThreshold;
        }
        else if (pair.Calibration is { } calibration)
        {
            options.Calibration = calibration;
        }
        else
        {
            options.DefaultExitThreshold = pair.FallbackExitThreshold;
        }
    }
}
