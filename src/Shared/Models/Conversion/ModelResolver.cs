using System.Security.Cryptography;
using System.Text;
using SpecEdge.Shared.Models.Checkpoints;

namespace SpecEdge.Shared.Models.Conversion;

/// <summary>
/// Turns a model folder given by a user into a converted model folder: a converted folder is used as it is; a Hugging
/// Face checkpoint is converted on first use into a cache folder keyed by the checkpoint's files and the conversion
/// options, and reused afterwards.
/// </summary>
public static class ModelResolver
{
    /// <summary>Environment variable that moves the conversion cache (default <c>~/.cache/specedge/models</c>).</summary>
    public const string CacheEnvironmentVariable = "SPECEDGE_CACHE";

    /// <summary>Where converted checkpoints are cached when no folder is given.</summary>
    public static string DefaultCacheRoot =>
        Environment.GetEnvironmentVariable(CacheEnvironmentVariable) is { Length: > 0 } configured
            ? Path.Combine(configured, "models")
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "specedge", "models");

    /// <summary>Resolves <paramref name="directory"/> to a converted model folder.</summary>
    /// <param name="directory">A converted model folder or a Hugging Face checkpoint folder.</param>
    /// <param name="options">How to convert a checkpoint (exits, dtype); a converted folder must already match its exits.</param>
    /// <param name="cacheRoot">Where converted checkpoints are kept; <see cref="DefaultCacheRoot"/> when null.</param>
    /// <param name="log">Told when a conversion starts (it may take a while).</param>
    /// <exception cref="ModelFormatException">The folder is neither a converted model nor a checkpoint, or is invalid.</exception>
    /// <exception cref="ArgumentException">A converted folder has other exits than asked for.</exception>
    public static string Resolve(string directory, ConversionOptions? options = null, string? cacheRoot = null, Action<string>? log = null)
    {
        options ??= new ConversionOptions();
        if (!Directory.Exists(directory))
        {
            throw new ModelFormatException(directory, "model folder not found");
        }

        if (ModelManifest.Exists(directory))
        {
            var manifest = ModelManifest.Load(directory);
            if (options.Exits.Count > 0 && !manifest.Exits.SequenceEqual(options.Exits))
            {
                throw new ArgumentException($"{directory} is a converted model with exits [{string.Join(",", manifest.Exits)}], not [{string.Join(",", options.Exits)}]; convert the checkpoint again or drop the exits option");
            }

            return directory;
        }

        if (!LlamaCheckpoint.IsCheckpointFolder(directory))
        {
            throw new ModelFormatException(directory, "neither a converted SpecEdge model (specedge.json) nor a Hugging Face checkpoint (config.json + model.safetensors or model.safetensors.index.json)");
        }

        var target = Path.Combine(cacheRoot ?? DefaultCacheRoot, CacheKey(directory, options));
        if (ModelManifest.Exists(target))
        {
            return target;
        }

        log?.Invoke($"converting checkpoint {directory} into {target} (first use)");
        var lastQuarter = 0;
        var withProgress = log is null ? options : options with
        {
            // A large checkpoint takes minutes: say how far it is every quarter, so a first start is not silent.
            Progress = (done, total) =>
            {
                options.Progress?.Invoke(done, total);
                var quarter = done * 4 / total;
                if (quarter > lastQuarter)
                {
                    lastQuarter = quarter;
                    log($"converting {directory}: {quarter * 25}% ({done} of {total} layer graphs written)");
                }
            },
        };
        try
        {
            ModelConverter.Convert(directory, target, withProgress);
        }
        catch (IOException) when (ModelManifest.Exists(target))
        {
            // Another process converted the same checkpoint at the same time and moved its result in first.
        }

        return target;
    }

    /// <summary>
    /// A key over what the converted output depends on: the converter version, the options, config.json and tokenizer
    /// files by content, and each weight file by name, size, modification time and header.
    /// </summary>
    public static string CacheKey(string directory, ConversionOptions options)
    {
        var key = new StringBuilder();
        key.Append(ModelConverter.Version).Append('|').Append(ModelConverter.GraphFormat).Append('|').Append(string.Join(",", options.Exits)).Append('|').Append(options.WeightsDtype)
            .Append('|').Append(options.ExternalData).Append('|');
        if (options.ComputeDtype != Checkpoints.TensorDType.Float32)
        {
            key.Append("compute-").Append(options.ComputeDtype).Append('|');
        }

        if (options.Quantization != Onnx.WeightQuantization.None)
        {
            key.Append(options.Quantization).Append(options.QuantizationAccuracyLevel).Append('|');
        }

        if (options.ExitAdaptersPath is { } adapters)
        {
            key.Append(ModelManifest.HashFile(adapters)).Append('|');
        }

        foreach (var file in Directory.EnumerateFiles(directory).Order(StringComparer.Ordinal))
        {
            var name = Path.GetFileName(file);
            var info = new FileInfo(file);
            if (name.EndsWith(".safetensors", StringComparison.Ordinal))
            {
                key.Append(name).Append(':').Append(info.Length).Append(':').Append(info.LastWriteTimeUtc.Ticks).Append(':').Append(HeaderHash(file)).Append('|');
            }
            else if (name.EndsWith(".json", StringComparison.Ordinal) || name.EndsWith(".model", StringComparison.Ordinal))
            {
                key.Append(name).Append(':').Append(ModelManifest.HashFile(file)).Append('|');
            }
        }

        var hash = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(key.ToString())));
        return $"{Path.GetFileName(Path.GetFullPath(directory).TrimEnd(Path.DirectorySeparatorChar))}-{hash[..16]}";
    }

    private static string HeaderHash(string path)
    {
        using var stream = File.OpenRead(path);
        var buffer = new byte[(int)Math.Min(stream.Length, 1 << 16)];
        stream.ReadExactly(buffer);
        return Convert.ToHexStringLower(SHA256.HashData(buffer))[..16];
    }
}
