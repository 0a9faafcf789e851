using System.Text.Json;

namespace SpecEdge.Shared.Models.Checkpoints;

/// <summary>
/// A Hugging Face Llama checkpoint folder: <c>config.json</c>, one <c>model.safetensors</c> or shards listed in
/// <c>model.safetensors.index.json</c>, and tokenizer files. Tensors are memory-mapped and read on demand.
/// </summary>
public sealed class LlamaCheckpoint : IDisposable
{
    /// <summary>The Hugging Face configuration file.</summary>
    public const string ConfigFileName = "config.json";
    /// <summary>The weights of a single-file checkpoint.</summary>
    public const string SingleFileName = "model.safetensors";
    /// <summary>The index of a sharded checkpoint.</summary>
    public const string IndexFileName = "model.safetensors.index.json";

    private readonly List<SafetensorsFile> _files;
    private readonly Dictionary<string, (SafetensorsFile File, TensorInfo Info)> _tensors;

    private (string Name, float[] Data)? _lastFused;

    private LlamaCheckpoint(string directory, LlamaConfig config, List<SafetensorsFile> files, Dictionary<string, (SafetensorsFile, TensorInfo)> tensors)
    {
        Directory = directory;
        Config = config;
        _files = files;
        _tensors = tensors;
    }

    /// <summary>The checkpoint folder.</summary>
    public string Directory { get; }

    /// <summary>Its configuration.</summary>
    public LlamaConfig Config { get; }

    /// <summary>The safetensors files of the checkpoint, in shard order.</summary>
    public IReadOnlyList<string> WeightFiles => _files.ConvertAll(f => f.Path);

    /// <summary>Every tensor the checkpoint holds.</summary>
    public IEnumerable<string> TensorNames => _tensors.Keys;

    /// <summary>True when <paramref name="directory"/> looks like a Hugging Face checkpoint (has config.json and safetensors weights).</summary>
    public static bool IsCheckpointFolder(string directory) =>
        File.Exists(Path.Combine(directory, ConfigFileName))
        && (File.Exists(Path.Combine(directory, SingleFileName)) || File.Exists(Path.Combine(directory, IndexFileName)));

    /// <summary>Opens a checkpoint folder and checks that every tensor the architecture needs is there with the right shape.</summary>
    /// <exception cref="ModelFormatException">A file is missing or corrupt, or a tensor is missing or has the wrong shape.</exception>
    public static LlamaCheckpoint Open(string directory)
    {
        if (!System.IO.Directory.Exists(directory))
        {
            throw new ModelFormatException(directory, "checkpoint folder not found");
        }

        var config = LlamaConfig.Load(Path.Combine(directory, ConfigFileName));
        var files = new List<SafetensorsFile>();
        var tensors = new Dictionary<string, (SafetensorsFile, TensorInfo)>(StringComparer.Ordinal);
        try
        {
            foreach (var shard in ListShards(directory))
            {
                var file = SafetensorsFile.Open(shard);
                files.Add(file);
                foreach (var (name, info) in file.Tensors)
                {
                    if (!tensors.TryAdd(name, (file, info)))
                    {
                        throw new ModelFormatException(shard, $"tensor '{name}' is also in {tensors[name].Item1.Path}");
                    }
                }
            }

            var checkpoint = new LlamaCheckpoint(directory, config, files, tensors);
            checkpoint.CheckTensors();
            return checkpoint;
        }
        catch
        {
            foreach (var file in files)
            {
                file.Dispose();
            }

            throw;
        }
    }

    /// <summary>The tensor <paramref name="name"/>, read as float32.</summary>
    /// <remarks>
    /// A Phi-3 checkpoint's separate projections are read out of its fused tensors: q, k and v are consecutive row
    /// blocks of <c>qkv_proj</c>, gate and up the two halves of <c>gate_up_proj</c>.
    /// </remarks>
    public float[] ReadFloat32(string name)
    {
        if (Config.FusedProjections && FusedSource(name) is { } fused)
        {
            var (fusedFile, fusedInfo) = Get(fused.Tensor);
            if (_lastFused?.Name != fused.Tensor)
            {
                // The parts are read one after another (q, k, v; gate, up): read each fused tensor once, not per part.
                _lastFused = (fused.Tensor, fusedFile.ReadFloat32(fusedInfo));
            }

            var columns = (int)fusedInfo.Shape[1];
            return _lastFused.Value.Data.AsSpan(fused.FirstRow * columns, fused.Rows * columns).ToArray();
        }

        var (file, info) = Get(name);
        return file.ReadFloat32(info);
    }

    // Where a separate projection lives inside a fused tensor: the tensor, its first row and its row count.
    private (string Tensor, int FirstRow, int Rows)? FusedSource(string name)
    {
        var c = Config;
        var q = c.NumAttentionHeads * c.HeadDim;
        var kv = c.NumKeyValueHeads * c.HeadDim;
        for (var i = 0; i < c.NumHiddenLayers; i++)
        {
            if (name == LlamaTensorNames.QProj(i))
            {
                return (LlamaTensorNames.QkvProj(i), 0, q);
            }

            if (name == LlamaTensorNames.KProj(i))
            {
                return (LlamaTensorNames.QkvProj(i), q, kv);
            }

            if (name == LlamaTensorNames.VProj(i))
            {
                return (LlamaTensorNames.QkvProj(i), q + kv, kv);
            }

            if (name == LlamaTensorNames.GateProj(i))
            {
                return (LlamaTensorNames.GateUpProj(i), 0, c.IntermediateSize);
            }

            if (name == LlamaTensorNames.UpProj(i))
            {
                return (LlamaTensorNames.GateUpProj(i), c.IntermediateSize, c.IntermediateSize);
            }
        }

        return null;
    }

    /// <summary>Location and layout of a tensor.</summary>
    public (SafetensorsFile File, TensorInfo Info) Get(string name) =>
        _tensors.TryGetValue(name, out var entry)
            ? entry
            : throw new ModelFormatException(Directory, $"tensor '{name}' is missing from the checkpoint");

    /// <summary>Whether the checkpoint holds a tensor called <paramref name="name"/>.</summary>
    public bool Contains(string name) => _tensors.ContainsKey(name);

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var file in _files)
        {
            file.Dispose();
        }
    }

    private static IEnumerable<string> ListShards(string directory)
    {
        var single = Path.Combine(directory, SingleFileName);
        var index = Path.Combine(directory, IndexFileName);
        if (File.Exists(index))
        {
            Dictionary<string, string>? weightMap;
            try
            {
                using var doc = JsonDocument.Parse(File.ReadAllBytes(index));
                weightMap = doc.RootElement.TryGetProperty("weight_map", out var map) && map.ValueKind == JsonValueKind.Object
                    ? map.EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetString() ?? string.Empty)
                    : null;
            }
            catch (JsonException ex)
            {
                throw new ModelFormatException(index, $"shard index is not valid JSON ({ex.Message})", ex);
            }

            if (weightMap is null || weightMap.Count == 0)
            {
                throw new ModelFormatException(index, "shard index has no 'weight_map' object");
            }

            var shards = weightMap.Values.Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal).ToList();
            foreach (var shard in shards)
            {
                if (shard.Length == 0 || Path.IsPathRooted(shard) || shard.Contains("..", StringComparison.Ordinal) || !File.Exists(Path.Combine(directory, shard)))
                {
                    throw new ModelFormatException(index, $"weight_map names shard '{shard}', which is not a file in the checkpoint folder");
                }
            }

            return shards.Select(s => Path.Combine(directory, s));
        }

        if (File.Exists(single))
        {
            return [single];
        }

        throw new ModelFormatException(directory, $"no weights: neither {SingleFileName} nor {IndexFileName} is in the folder");
    }

    private void CheckTensors()
    {
        var c = Config;
        Expect(LlamaTensorNames.Embedding, c.VocabSize, c.HiddenSize);
        Expect(LlamaTensorNames.FinalNorm, c.HiddenSize);
        if (!c.TieWordEmbeddings)
        {
            Expect(LlamaTensorNames.LmHead, c.VocabSize, c.HiddenSize);
        }

        for (var i = 0; i < c.NumHiddenLayers; i++)
        {
            Expect(LlamaTensorNames.InputNorm(i), c.HiddenSize);
            Expect(LlamaTensorNames.PostAttentionNorm(i), c.HiddenSize);
            if (c.FusedProjections)
            {
                Expect(LlamaTensorNames.QkvProj(i), (c.NumAttentionHeads + (2 * c.NumKeyValueHeads)) * c.HeadDim, c.HiddenSize);
                Expect(LlamaTensorNames.GateUpProj(i), 2 * c.IntermediateSize, c.HiddenSize);
            }
            else
            {
                Expect(LlamaTensorNames.QProj(i), c.NumAttentionHeads * c.HeadDim, c.HiddenSize);
                Expect(LlamaTensorNames.KProj(i), c.NumKeyValueHeads * c.HeadDim, c.HiddenSize);
                Expect(LlamaTensorNames.VProj(i), c.NumKeyValueHeads * c.HeadDim, c.HiddenSize);
                Expect(LlamaTensorNames.GateProj(i), c.IntermediateSize, c.HiddenSize);
                Expect(LlamaTensorNames.UpProj(i), c.IntermediateSize, c.HiddenSize);
            }

            if (c.AttentionBias)
            {
                Expect(LlamaTensorNames.Bias(LlamaTensorNames.QProj(i)), c.NumAttentionHeads * c.HeadDim);
                Expect(LlamaTensorNames.Bias(LlamaTensorNames.KProj(i)), c.NumKeyValueHeads * c.HeadDim);
                Expect(LlamaTensorNames.Bias(LlamaTensorNames.VProj(i)), c.NumKeyValueHeads * c.HeadDim);
            }

            Expect(LlamaTensorNames.OProj(i), c.HiddenSize, c.NumAttentionHeads * c.HeadDim);
            Expect(LlamaTensorNames.DownProj(i), c.HiddenSize, c.IntermediateSize);
        }
    }

    private void Expect(string name, params long[] shape)
    {
        var (file, info) = Get(name);
        if (!info.Shape.SequenceEqual(shape))
        {
            throw new ModelFormatException(file.Path, $"tensor '{name}' has shape [{string.Join(", ", info.Shape)}] but config.json implies [{string.Join(", ", shape)}]");
        }
    }
}

/// <summary>Hugging Face tensor names of a <c>LlamaForCausalLM</c> checkpoint.</summary>
public static class LlamaTensorNames
{
    /// <summary>The token embedding.</summary>
    public const string Embedding = "model.embed_tokens.weight";
    /// <summary>The final RMSNorm weight.</summary>
    public const string FinalNorm = "model.norm.weight";
    /// <summary>The output projection (absent when tied to the embedding).</summary>
    public const string LmHead = "lm_head.weight";

    /// <summary>Layer <paramref name="layer"/>'s input RMSNorm weight.</summary>
    public static string InputNorm(int layer) => $"model.layers.{layer}.input_layernorm.weight";

    /// <summary>Layer <paramref name="layer"/>'s post-attention RMSNorm weight.</summary>
    public static string PostAttentionNorm(int layer) => $"model.layers.{layer}.post_attention_layernorm.weight";

    /// <summary>Layer <paramref name="layer"/>'s query projection.</summary>
    public static string QProj(int layer) => $"model.layers.{layer}.self_attn.q_proj.weight";

    /// <summary>Phi-3's fused query, key and value projection of layer <paramref name="layer"/>.</summary>
    public static string QkvProj(int layer) => $"model.layers.{layer}.self_attn.qkv_proj.weight";

    /// <summary>Phi-3's fused MLP gate and up projection of layer <paramref name="layer"/> (gate first).</summary>
    public static string GateUpProj(int layer) => $"model.layers.{layer}.mlp.gate_up_proj.weight";

    /// <summary>The bias beside a projection's weight (<c>….q_proj.weight</c> → <c>….q_proj.bias</c>).</summary>
    public static string Bias(string weight) => weight[..^".weight".Length] + ".bias";

    /// <summary>Layer <paramref name="layer"/>'s key projection.</summary>
    public static string KProj(int layer) => $"model.layers.{layer}.self_attn.k_proj.weight";

    /// <summary>Layer <paramref name="layer"/>'s value projection.</summary>
    public static string VProj(int layer) => $"model.layers.{layer}.self_attn.v_proj.weight";

    /// <summary>Layer <paramref name="layer"/>'s attention output projection.</summary>
    public static string OProj(int layer) => $"model.layers.{layer}.self_attn.o_proj.weight";

    /// <summary>Layer <paramref name="layer"/>'s MLP gate projection.</summary>
    public static string GateProj(int layer) => $"model.layers.{layer}.mlp.gate_proj.weight";

    /// <summary>Layer <paramref name="layer"/>'s MLP up projection.</summary>
    public static string UpProj(int layer) => $"model.layers.{layer}.mlp.up_proj.weight";

    /// <summary>Layer <paramref name="layer"/>'s MLP down projection.</summary>
    public static string DownProj(int layer) => $"model.layers.{layer}.mlp.down_proj.weight";
}
