using System.Globalization;
using System.Reflection;
using Google.Protobuf;
using SpecEdge.Shared.Models.Checkpoints;
using SpecEdge.Shared.Models.Onnx;
using SpecEdge.Shared.Tokenization;

namespace SpecEdge.Shared.Models.Conversion;

/// <summary>When weights go to an external data file instead of inside the ONNX graphs.</summary>
public enum ExternalDataPolicy
{
    /// <summary>External when the weights would not fit protobuf's 2 GB limit.</summary>
    Auto,

    /// <summary>Always external (one shared <c>weights.bin</c>).</summary>
    Always,

    /// <summary>Always inside the graphs (fails for models over 2 GB).</summary>
    Never,
}

/// <summary>How a checkpoint is converted.</summary>
public sealed record ConversionOptions
{
    /// <summary>Exit layers; empty converts a single draft-style graph, otherwise the staged target form.</summary>
    public IReadOnlyList<int> Exits { get; init; } = [];

    /// <summary>Weight storage in the ONNX files: float32 or float16 (with float32 compute, cast once at load).</summary>
    public TensorDType WeightsDtype { get; init; } = TensorDType.Float32;

    /// <summary>
    /// The type the graphs compute in: float32, or float16 for GPU verification (weights, activations, KV cache and
    /// the hidden state between stages in float16; norms accumulate and softmax runs in float32; logits are float32).
    /// Float16 compute stores the weights as float16 whatever <see cref="WeightsDtype"/> says.
    /// </summary>
    public TensorDType ComputeDtype { get; init; } = TensorDType.Float32;

    /// <summary>What the weights are stored as: float16 when computing in float16, else <see cref="WeightsDtype"/>.</summary>
    internal TensorDType StorageDtype => ComputeDtype == TensorDType.Float16 ? TensorDType.Float16 : WeightsDtype;

    /// <summary>
    /// Block quantization of the projections and LM head (a draft only: a staged target is the model whose output
    /// SpecEdge reproduces, so it keeps its weights).
    /// </summary>
    public WeightQuantization Quantization { get; init; } = WeightQuantization.None;

    /// <summary>MatMulNBits' accuracy_level for quantized weights: 0 (float32 compute) or 4 (int8 activations, faster on CPU).</summary>
    public int QuantizationAccuracyLevel { get; init; } = 4;

    /// <summary>
    /// A safetensors file of trained exit heads (<c>exits.{L}.norm.weight</c>, <c>exits.{L}.proj.weight</c>,
    /// <c>exits.{L}.lm_head.weight</c>); every tensor must belong to a requested exit. When null, an
    /// <c>exit_adapters.safetensors</c> in the checkpoint folder is used for the exits it has weights for.
    /// </summary>
    public string? ExitAdaptersPath { get; init; }

    /// <summary>Where the weights go: inside each graph, or one shared <c>weights.bin</c> (default: by size).</summary>
    public ExternalDataPolicy ExternalData { get; init; } = ExternalDataPolicy.Auto;

    /// <summary>
    /// Called with (layer graphs written, layer graphs in total) as the conversion goes: each layer is written twice,
    /// in the shared-buffer and the batched graph form.
    /// </summary>
    public Action<int, int>? Progress { get; init; }
}

/// <summary>Converts a Hugging Face Llama checkpoint folder into a SpecEdge model folder (ONNX graphs + manifest).</summary>
public static class ModelConverter
{
    /// <summary>The graph of a model converted without exits.</summary>
    public const string DraftGraphFile = "model.onnx";

    /// <summary>The layout of what a conversion writes; part of the conversion cache key, raised when it changes (2: batched graphs; 3: their attention without concatenating the past).</summary>
    public const int GraphFormat = 3;
    /// <summary>The shared external weights file.</summary>
    public const string ExternalDataFile = "weights.bin";

    /// <summary>The exit-adapter file a checkpoint folder may hold (and a converted folder keeps).</summary>
    public const string ExitAdaptersFile = "exit_adapters.safetensors";

    /// <summary>Weights above this many bytes go to external data under <see cref="ExternalDataPolicy.Auto"/> (protobuf caps a message at 2 GB).</summary>
    public const long InlineLimitBytes = 1_800_000_000L;

    private static readonly string[] CopiedFiles =
    [
        LlamaCheckpoint.ConfigFileName, TokenizerFiles.TokenizerJson, TokenizerFiles.SentencePieceModel,
        "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
    ];

    /// <summary>The converter's version, recorded in manifests and in conversion cache keys.</summary>
    public static string Version { get; } =
        typeof(ModelConverter).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion.Split('+')[0] ?? "0.0.0";

    /// <summary>Converts <paramref name="checkpointDir"/> into <paramref name="outputDir"/>, which must not exist or be empty.</summary>
    /// <exception cref="ModelFormatException">The checkpoint or the adapter file is invalid.</exception>
    /// <exception cref="ArgumentException">The exits are invalid for this model, or the output folder holds files.</exception>
    public static ModelManifest Convert(string checkpointDir, string outputDir, ConversionOptions options)
    {
        if (Directory.Exists(outputDir) && Directory.EnumerateFileSystemEntries(outputDir).Any())
        {
            throw new ArgumentException($"output folder '{outputDir}' is not empty; choose a new folder or remove it", nameof(outputDir));
        }

        if (options.WeightsDtype == TensorDType.BFloat16)
        {
            throw new ArgumentException("ONNX weights are written as f32 or f16 (bf16 checkpoints are read and converted)", nameof(options));
        }

        if (options.Quantization != WeightQuantization.None && options.Exits.Count > 0)
        {
            throw new ArgumentException("quantization applies to drafts: a staged target (with exits) is the model whose output is reproduced, so its weights stay as they are", nameof(options));
        }

        if (options.ComputeDtype == TensorDType.BFloat16)
        {
            throw new ArgumentException("graphs compute in f32 or f16", nameof(options));
        }

        if (options.ComputeDtype == TensorDType.Float16 && options.Quantization != WeightQuantization.None)
        {
            throw new ArgumentException("quantized drafts compute in float32: float16 compute is for the verifier's target", nameof(options));
        }

        if (options.QuantizationAccuracyLevel is not (0 or 1 or 2 or 3 or 4))
        {
            throw new ArgumentException($"quantization accuracy level {options.QuantizationAccuracyLevel} is not one of 0-4", nameof(options));
        }

        using var checkpoint = LlamaCheckpoint.Open(checkpointDir);
        var config = checkpoint.Config;
        if (config.HeadDim % 8 != 0)
        {
            throw new UnsupportedModelException(
                Path.Combine(checkpointDir, LlamaCheckpoint.ConfigFileName),
                $"head_dim = {config.HeadDim} is not a multiple of 8, which ONNX Runtime's GroupQueryAttention kernel needs");
        }

        var exits = ValidateExits(options.Exits, config);
        var bundled = Path.Combine(checkpointDir, ExitAdaptersFile);
        var adaptersPath = options.ExitAdaptersPath ?? (exits.Count > 0 && File.Exists(bundled) ? bundled : null);
        using var adapters = adaptersPath is null ? null : SafetensorsFile.Open(adaptersPath);
        var heads = BuildExitHeads(exits, adapters, config, strict: options.ExitAdaptersPath is not null);

        var parent = Path.GetDirectoryName(Path.GetFullPath(outputDir))!;
        Directory.CreateDirectory(parent);
        var staging = Path.Combine(parent, $".{Path.GetFileName(Path.GetFullPath(outputDir))}.converting-{Guid.NewGuid():N}");
        Directory.CreateDirectory(staging);
        try
        {
            var manifest = WriteModel(checkpoint, adapters, exits, heads, staging, options);
            if (Directory.Exists(outputDir))
            {
                Directory.Delete(outputDir);
            }

            Directory.Move(staging, outputDir);
            return manifest;
        }
        catch
        {
            Directory.Delete(staging, recursive: true);
            throw;
        }
    }

    private static ModelManifest WriteModel(LlamaCheckpoint checkpoint, SafetensorsFile? adapters, IReadOnlyList<int> exits, IReadOnlyList<ExitHeadWeights> heads, string dir, ConversionOptions options)
    {
        var config = checkpoint.Config;
        var external = options.ExternalData switch
        {
            ExternalDataPolicy.Always => true,
            ExternalDataPolicy.Never => false,
            _ => EstimateBytes(config, exits.Count, options.StorageDtype) > InlineLimitBytes,
        };

        float[] Read(string name)
        {
            if (name.StartsWith("exits.", StringComparison.Ordinal))
            {
                return adapters!.ReadFloat32(adapters.Tensors[name]);
            }

            return checkpoint.ReadFloat32(name);
        }

        var boundaries = new List<int> { 0 };
        boundaries.AddRange(exits);
        boundaries.Add(config.NumHiddenLayers);
        var stages = new List<StageManifest>();
        var layersDone = 0;
        var metadata = new Dictionary<string, string>
        {
            ["specedge.architecture"] = LlamaConfig.Architecture,
            ["specedge.kv_layout"] = ModelManifest.SharedBufferKvLayout,
        };

        using (var store = new InitializerStore(external ? Path.Combine(dir, ExternalDataFile) : null))
        {
            var writer = new LlamaGraphWriter(
                config,
                Read,
                options.StorageDtype,
                store,
                _ => options.Progress?.Invoke(++layersDone, 2 * config.NumHiddenLayers),
                options.Quantization,
                options.QuantizationAccuracyLevel,
                options.ComputeDtype);
            for (var s = 0; s < boundaries.Count - 1; s++)
            {
                var isLast = s == boundaries.Count - 2;
                var head = isLast ? new ExitHeadWeights(config.NumHiddenLayers, null, null, null) : heads[s];
                var file = exits.Count == 0 ? DraftGraphFile : $"stage{s}.onnx";
                var stageMetadata = new Dictionary<string, string>(metadata)
                {
                    ["specedge.stage"] = s.ToString(CultureInfo.InvariantCulture),
                    ["specedge.layers"] = $"{boundaries[s]}-{boundaries[s + 1]}",
                };
                var graph = writer.BuildStage(boundaries[s], boundaries[s + 1], head, emitHidden: !isLast, Version, stageMetadata);
                using (var stream = File.Create(Path.Combine(dir, file)))
                {
                    graph.WriteTo(stream);
                }

                // The same stage with attention for a batch of sequences (the verifier's form); the weights are shared.
                var batchedFile = Path.ChangeExtension(file, ".batched.onnx");
                var batchedMetadata = new Dictionary<string, string>(stageMetadata) { ["specedge.kv_layout"] = ModelManifest.BatchedKvLayout };
                var batched = writer.BuildStage(boundaries[s], boundaries[s + 1], head, emitHidden: !isLast, Version, batchedMetadata, AttentionForm.Batched);
                using (var stream = File.Create(Path.Combine(dir, batchedFile)))
                {
                    batched.WriteTo(stream);
                }

                stages.Add(new StageManifest { File = file, BatchedFile = batchedFile, FirstLayer = boundaries[s], EndLayer = boundaries[s + 1], IsExit = !isLast });
            }
        }

        return WriteManifest(checkpoint, adapters, exits, stages, external, dir, options);
    }

    /// <summary>Copies the checkpoint's side files and writes the manifest: every file's size and hash, the weights' hash.</summary>
    private static ModelManifest WriteManifest(LlamaCheckpoint checkpoint, SafetensorsFile? adapters, IReadOnlyList<int> exits, List<StageManifest> stages, bool external, string dir, ConversionOptions options)
    {
        var config = checkpoint.Config;
        foreach (var name in CopiedFiles)
        {
            var source = Path.Combine(checkpoint.Directory, name);
            if (File.Exists(source))
            {
                File.Copy(source, Path.Combine(dir, name));
            }
        }

        if (adapters is not null)
        {
            File.Copy(adapters.Path, Path.Combine(dir, ExitAdaptersFile));
        }

        var tokenizer = TokenizerFiles.Load(dir, config.VocabSize, config.BosTokenId, config.EosTokenIds);
        var tokenizerFile = TokenizerFiles.Find(dir);
        var files = new SortedDictionary<string, FileHash>(StringComparer.Ordinal);
        foreach (var path in Directory.EnumerateFiles(dir))
        {
            files[Path.GetFileName(path)] = new FileHash(new FileInfo(path).Length, ModelManifest.HashFile(path));
        }

        var weightFiles = stages.Select(s => s.File).Concat(stages.Select(s => s.BatchedFile).OfType<string>()).Append(external ? ExternalDataFile : null).OfType<string>();
        var weightsHash = System.Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(
            System.Text.Encoding.UTF8.GetBytes(string.Join('\n', weightFiles.Select(f => $"{f}:{files[f].Sha256}")))));

        var manifest = new ModelManifest
        {
            Kind = exits.Count == 0 ? ModelKind.Draft : ModelKind.Staged,
            Config = config.ToJson(),
            VocabSize = config.VocabSize,
            NumLayers = config.NumHiddenLayers,
            NumKeyValueHeads = config.NumKeyValueHeads,
            HeadDim = config.HeadDim,
            HiddenSize = config.HiddenSize,
            MaxPositions = config.MaxPositionEmbeddings,
            WeightsDtype = options.StorageDtype.CliName(),
            ComputeDtype = options.ComputeDtype.CliName(),
            Quantization = options.Quantization == WeightQuantization.None
                ? null
                : new QuantizationManifest(options.Quantization.CliName(), BlockQuantizer.DefaultBlockSize, options.QuantizationAccuracyLevel),
            Stages = stages,
            Exits = exits,
            ExitAdapters = adapters is null ? null : ExitAdaptersFile,
            Tokenizer = new TokenizerManifest(tokenizer.Kind, tokenizerFile is null ? null : Path.GetFileName(tokenizerFile), tokenizerFile is null ? null : files[Path.GetFileName(tokenizerFile)].Sha256),
            Files = files,
            WeightsSha256 = weightsHash,
            Source = Path.GetFullPath(checkpoint.Directory),
            Converter = $"specedge {Version}",
        };
        manifest.Save(dir);

        // The files were hashed a moment ago: the first load need not hash them again.
        manifest.WriteStamp(dir);
        return manifest;
    }

    private static IReadOnlyList<int> ValidateExits(IReadOnlyList<int> exits, LlamaConfig config)
    {
        for (var i = 0; i < exits.Count; i++)
        {
            if (exits[i] < 1 || exits[i] >= config.NumHiddenLayers)
            {
                throw new ArgumentException($"exit layer {exits[i]} is out of range: exits must lie in 1..{config.NumHiddenLayers - 1} for a {config.NumHiddenLayers}-layer model", nameof(exits));
            }

            if (i > 0 && exits[i] <= exits[i - 1])
            {
                throw new ArgumentException($"exit layers must be strictly increasing ({string.Join(",", exits)})", nameof(exits));
            }
        }

        return exits;
    }

    private static List<ExitHeadWeights> BuildExitHeads(IReadOnlyList<int> exits, SafetensorsFile? adapters, LlamaConfig config, bool strict)
    {
        var heads = new List<ExitHeadWeights>();
        if (adapters is not null && exits.Count == 0)
        {
            throw new ArgumentException("exit adapters were given but no exits", nameof(adapters));
        }

        var used = new HashSet<string>(StringComparer.Ordinal);
        foreach (var layer in exits)
        {
            string? Find(string part, params long[] shape)
            {
                var name = $"exits.{layer}.{part}";
                if (adapters is null || !adapters.Tensors.TryGetValue(name, out var info))
                {
                    return null;
                }

                if (!info.Shape.SequenceEqual(shape))
                {
                    throw new ModelFormatException(adapters.Path, $"tensor '{name}' has shape [{string.Join(", ", info.Shape)}], expected [{string.Join(", ", shape)}]");
                }

                used.Add(name);
                return name;
            }

            heads.Add(new ExitHeadWeights(
                layer,
                Find("norm.weight", config.HiddenSize),
                Find("proj.weight", config.HiddenSize, config.HiddenSize),
                Find("lm_head.weight", config.VocabSize, config.HiddenSize)));
        }

        if (adapters is not null && strict)
        {
            var unused = adapters.Tensors.Keys.Where(k => !used.Contains(k)).ToList();
            if (unused.Count > 0)
            {
                throw new ModelFormatException(adapters.Path, $"tensors {string.Join(", ", unused.Take(5))} match no exit in {string.Join(",", exits)} (expected exits.{{L}}.norm.weight, exits.{{L}}.proj.weight or exits.{{L}}.lm_head.weight)");
            }
        }

        return heads;
    }

    private static long EstimateBytes(LlamaConfig c, int exits, TensorDType dtype)
    {
        long perLayer = (2L * c.HiddenSize)
            + (2L * c.HiddenSize * c.NumAttentionHeads * c.HeadDim)
            + (2L * c.HiddenSize * c.NumKeyValueHeads * c.HeadDim)
            + (3L * c.HiddenSize * c.IntermediateSize);
        long heads = (long)c.VocabSize * c.HiddenSize * (exits + 1);
        long embedding = (long)c.VocabSize * c.HiddenSize;
        return ((c.NumHiddenLayers * perLayer) + heads + embedding) * dtype.SizeOf();
    }
}
