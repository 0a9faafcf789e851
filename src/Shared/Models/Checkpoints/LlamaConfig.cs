using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace SpecEdge.Shared.Models.Checkpoints;

/// <summary>The architecture hyper-parameters of a Llama-family checkpoint, as read from its Hugging Face <c>config.json</c>.</summary>
public sealed record LlamaConfig
{
    /// <summary>The architecture name SpecEdge implements.</summary>
    public const string Architecture = "LlamaForCausalLM";

    /// <summary>Mistral's architecture name: Llama's layers, with sliding-window attention.</summary>
    public const string MistralArchitecture = "MistralForCausalLM";

    /// <summary>Phi-3's architecture name: Llama's layers with the query, key and value projections fused in one tensor, and the MLP's gate and up projections in another.</summary>
    public const string Phi3Architecture = "Phi3ForCausalLM";

    /// <summary>Qwen2/Qwen2.5's architecture name: Llama's layers with biases on the query, key and value projections.</summary>
    public const string Qwen2Architecture = "Qwen2ForCausalLM";

    /// <summary>Default <c>rms_norm_eps</c> when the file leaves it out (Hugging Face's LlamaConfig default).</summary>
    public const double DefaultRmsNormEps = 1e-6;

    /// <summary>Default <c>rope_theta</c> when the file leaves it out.</summary>
    public const double DefaultRopeTheta = 10000.0;

    /// <summary>Default <c>max_position_embeddings</c> when the file leaves it out.</summary>
    public const int DefaultMaxPositionEmbeddings = 2048;

    /// <summary><c>hidden_size</c>.</summary>
    public required int HiddenSize { get; init; }

    /// <summary><c>intermediate_size</c> (the MLP width).</summary>
    public required int IntermediateSize { get; init; }

    /// <summary><c>num_hidden_layers</c>.</summary>
    public required int NumHiddenLayers { get; init; }

    /// <summary><c>num_attention_heads</c>.</summary>
    public required int NumAttentionHeads { get; init; }

    /// <summary><c>num_key_value_heads</c> (equal to the query heads without grouped-query attention).</summary>
    public required int NumKeyValueHeads { get; init; }

    /// <summary>Size of one attention head; <c>hidden_size / num_attention_heads</c> unless the file gives <c>head_dim</c>.</summary>
    public required int HeadDim { get; init; }

    /// <summary><c>vocab_size</c>.</summary>
    public required int VocabSize { get; init; }

    /// <summary><c>rms_norm_eps</c>.</summary>
    public double RmsNormEps { get; init; } = DefaultRmsNormEps;

    /// <summary><c>rope_theta</c>.</summary>
    public double RopeTheta { get; init; } = DefaultRopeTheta;

    /// <summary>Linear RoPE scaling factor (positions are divided by it); 1 when the checkpoint has no scaling.</summary>
    public double RopeLinearFactor { get; init; } = 1.0;

    /// <summary>
    /// Mistral's <c>sliding_window</c>: each token attends to at most this many before it. SpecEdge attends to the
    /// whole context, which is the same while sequences stay within the window, so it is the longest sequence a model
    /// with one serves (<see cref="LongestSequence"/>); null when the model has none.
    /// </summary>
    public int? SlidingWindow { get; init; }

    /// <summary>The longest sequence the model serves exactly: its maximum positions, or its sliding window when shorter.</summary>
    public int LongestSequence => SlidingWindow is { } window ? Math.Min(window, MaxPositionEmbeddings) : MaxPositionEmbeddings;

    /// <summary>Whether the checkpoint stores fused projections (Phi-3: <c>qkv_proj</c> and <c>gate_up_proj</c>).</summary>
    public bool FusedProjections => ModelType == "phi3";

    /// <summary>The checkpoint's <c>model_type</c>: <c>llama</c>, <c>mistral</c>, <c>phi3</c> or <c>qwen2</c>.</summary>
    public string ModelType { get; init; } = "llama";

    /// <summary>Whether the query, key and value projections have biases (Qwen2 always; Llama when <c>attention_bias</c>).</summary>
    public bool AttentionBias { get; init; }

    /// <summary>Llama 3's frequency-dependent RoPE scaling (<c>rope_scaling</c> of type <c>llama3</c>), or null.</summary>
    public Llama3RopeScaling? RopeLlama3 { get; init; }

    /// <summary>
    /// The rotary inverse frequency of dimension pair <paramref name="pair"/> (0 … head_dim/2 − 1): θ^(−2i/d), adjusted
    /// by <see cref="RopeLlama3"/> when set (positions are divided by <see cref="RopeLinearFactor"/> separately).
    /// </summary>
    public double InverseFrequency(int pair)
    {
        var frequency = Math.Pow(RopeTheta, -2.0 * pair / HeadDim);
        return RopeLlama3 is { } scaling ? scaling.Adjust(frequency) : frequency;
    }

    /// <summary><c>tie_word_embeddings</c>: the output projection is the embedding.</summary>
    public bool TieWordEmbeddings { get; init; }

    /// <summary><c>bos_token_id</c>, when given.</summary>
    public int? BosTokenId { get; init; }

    /// <summary>End-of-sequence ids; several when the checkpoint lists more than one.</summary>
    public IReadOnlyList<int> EosTokenIds { get; init; } = [];

    /// <summary><c>max_position_embeddings</c>.</summary>
    public int MaxPositionEmbeddings { get; init; } = DefaultMaxPositionEmbeddings;

    /// <summary>The dtype the checkpoint says its weights are stored in (informational).</summary>
    public string? TorchDtype { get; init; }

    /// <summary>
    /// Early-exit layers the checkpoint suggests (<c>"specedge_exits": [2, 4]</c>, written by SpecEdge's training recipe);
    /// used when a target is converted without explicit exits. Empty when absent.
    /// </summary>
    public IReadOnlyList<int> SuggestedExits { get; init; } = [];

    /// <summary>Number of query heads that share one key/value head.</summary>
    public int GroupSize => NumAttentionHeads / NumKeyValueHeads;

    /// <summary>Reads and validates a <c>config.json</c>.</summary>
    /// <exception cref="ModelFormatException">The file is missing, is not JSON, or a field is missing or out of range.</exception>
    /// <exception cref="UnsupportedModelException">The architecture, activation or RoPE scaling is not one SpecEdge implements.</exception>
    public static LlamaConfig Load(string path)
    {
        if (!File.Exists(path))
        {
            throw new ModelFormatException(path, "config.json not found: a Hugging Face checkpoint folder must contain config.json");
        }

        JsonNode? root;
        try
        {
            root = JsonNode.Parse(File.ReadAllText(path));
        }
        catch (JsonException ex)
        {
            throw new ModelFormatException(path, $"config.json is not valid JSON ({ex.Message})", ex);
        }

        if (root is not JsonObject obj)
        {
            throw new ModelFormatException(path, "config.json must hold a JSON object");
        }

        return Parse(obj, path);
    }

    /// <summary>Validates a parsed <c>config.json</c> object; <paramref name="path"/> is used in error messages.</summary>
    public static LlamaConfig Parse(JsonObject obj, string path)
    {
        var modelType = CheckSupported(obj, path);
        var hidden = RequirePositive(obj, path, "hidden_size");
        var heads = RequirePositive(obj, path, "num_attention_heads");
        var kvHeads = ReadInt(obj, path, "num_key_value_heads") ?? heads;
        if (kvHeads <= 0 || heads % kvHeads != 0)
        {
            throw new ModelFormatException(path, $"num_key_value_heads = {kvHeads} must be positive and divide num_attention_heads = {heads}");
        }

        var headDim = ReadInt(obj, path, "head_dim");
        if (headDim is null)
        {
            if (hidden % heads != 0)
            {
                throw new ModelFormatException(path, $"hidden_size = {hidden} is not a multiple of num_attention_heads = {heads} and head_dim is not given");
            }

            headDim = hidden / heads;
        }

        if (headDim <= 0 || headDim % 2 != 0)
        {
            throw new ModelFormatException(path, $"head_dim = {headDim} must be a positive even number (RoPE rotates pairs)");
        }

        var eps = ReadDouble(obj, path, "rms_norm_eps") ?? DefaultRmsNormEps;
        if (!(eps > 0))
        {
            throw new ModelFormatException(path, $"rms_norm_eps = {eps.ToString(CultureInfo.InvariantCulture)} must be positive");
        }

        var theta = ReadDouble(obj, path, "rope_theta") ?? DefaultRopeTheta;
        if (!(theta > 1))
        {
            throw new ModelFormatException(path, $"rope_theta = {theta.ToString(CultureInfo.InvariantCulture)} must be greater than 1");
        }

        var rope = ReadRopeScaling(obj, path);
        var maxPositions = ReadInt(obj, path, "max_position_embeddings") ?? DefaultMaxPositionEmbeddings;
        if (maxPositions <= 0)
        {
            throw new ModelFormatException(path, $"max_position_embeddings = {maxPositions} must be positive");
        }

        return new LlamaConfig
        {
            HiddenSize = hidden,
            IntermediateSize = RequirePositive(obj, path, "intermediate_size"),
            NumHiddenLayers = RequirePositive(obj, path, "num_hidden_layers"),
            NumAttentionHeads = heads,
            NumKeyValueHeads = kvHeads,
            HeadDim = headDim.Value,
            VocabSize = RequirePositive(obj, path, "vocab_size"),
            RmsNormEps = eps,
            RopeTheta = theta,
            ModelType = modelType,
            SlidingWindow = modelType is "mistral" or "phi3" ? ReadSlidingWindow(obj, path) : null,
            AttentionBias = modelType == "qwen2" || ReadBool(obj, path, "attention_bias") == true,
            RopeLinearFactor = rope.Linear,
            RopeLlama3 = rope.Llama3,
            TieWordEmbeddings = ReadBool(obj, path, "tie_word_embeddings") ?? false,
            BosTokenId = ReadInt(obj, path, "bos_token_id"),
            EosTokenIds = ReadIntOrList(obj, path, "eos_token_id"),
            MaxPositionEmbeddings = maxPositions,
            TorchDtype = ReadString(obj, path, "torch_dtype"),
            SuggestedExits = ReadIntOrList(obj, path, "specedge_exits"),
        };
    }

    /// <summary>
    /// Refuses what SpecEdge cannot convert (another architecture, activation, MLP biases, Qwen2's sliding window) and
    /// returns the model type, <c>llama</c> or <c>qwen2</c>.
    /// </summary>
    private static string CheckSupported(JsonObject obj, string path)
    {
        var architectures = obj["architectures"] as JsonArray;
        var modelType = ReadString(obj, path, "model_type");
        var architecture = architectures is { Count: > 0 } ? architectures[0]?.GetValue<string>() : null;
        if (architecture is not null && architecture is not (Architecture or Qwen2Architecture or MistralArchitecture or Phi3Architecture))
        {
            throw new UnsupportedModelException(path, $"architecture '{architecture}' is not supported; SpecEdge converts {Architecture} checkpoints (Llama, Vicuna, TinyLlama, Llama-68M), {MistralArchitecture}, {Phi3Architecture} and {Qwen2Architecture} (Qwen2, Qwen2.5)");
        }

        var type = architecture switch
        {
            Qwen2Architecture => "qwen2",
            MistralArchitecture => "mistral",
            Phi3Architecture => "phi3",
            Architecture => "llama",
            _ => modelType,
        };
        if (type is not ("llama" or "qwen2" or "mistral" or "phi3"))
        {
            throw new UnsupportedModelException(path, $"config.json names no supported architecture and model_type is '{modelType ?? "missing"}' (SpecEdge reads 'llama', 'mistral', 'phi3' and 'qwen2')");
        }

        if (ReadDouble(obj, path, "partial_rotary_factor") is { } partial && partial != 1.0)
        {
            throw new UnsupportedModelException(path, $"partial_rotary_factor = {partial.ToString(CultureInfo.InvariantCulture)} is not supported: SpecEdge rotates the whole head");
        }

        var hiddenAct = ReadString(obj, path, "hidden_act") ?? "silu";
        if (hiddenAct != "silu")
        {
            throw new UnsupportedModelException(path, $"hidden_act '{hiddenAct}' is not supported; Llama and Qwen2 use 'silu'");
        }

        if (ReadBool(obj, path, "mlp_bias") == true)
        {
            throw new UnsupportedModelException(path, "mlp_bias = true is not supported; Llama and Qwen2 MLPs have no bias");
        }

        if (type == "qwen2" && ReadBool(obj, path, "use_sliding_window") == true)
        {
            throw new UnsupportedModelException(path, "use_sliding_window = true is not supported: SpecEdge attends to the whole context");
        }

        return type;
    }

    private static int? ReadSlidingWindow(JsonObject obj, string path)
    {
        var window = ReadInt(obj, path, "sliding_window");
        return window is null or > 0 ? window : throw new ModelFormatException(path, $"sliding_window = {window} must be positive (or null for none)");
    }

    /// <summary>Writes this configuration as a Hugging Face <c>config.json</c> object.</summary>
    public JsonObject ToJson()
    {
        var obj = new JsonObject
        {
            ["architectures"] = new JsonArray(ModelType switch { "qwen2" => Qwen2Architecture, "mistral" => MistralArchitecture, "phi3" => Phi3Architecture, _ => Architecture }),
            ["model_type"] = ModelType,
            ["hidden_act"] = "silu",
            ["hidden_size"] = HiddenSize,
            ["intermediate_size"] = IntermediateSize,
            ["num_hidden_layers"] = NumHiddenLayers,
            ["num_attention_heads"] = NumAttentionHeads,
            ["num_key_value_heads"] = NumKeyValueHeads,
            ["head_dim"] = HeadDim,
            ["vocab_size"] = VocabSize,
            ["rms_norm_eps"] = RmsNormEps,
            ["rope_theta"] = RopeTheta,
            ["rope_scaling"] = RopeLlama3 is { } llama3
                ? new JsonObject { ["rope_type"] = "llama3", ["factor"] = llama3.Factor, ["low_freq_factor"] = llama3.LowFreqFactor, ["high_freq_factor"] = llama3.HighFreqFactor, ["original_max_position_embeddings"] = llama3.OriginalMaxPositions }
                : RopeLinearFactor == 1.0 ? null : new JsonObject { ["rope_type"] = "linear", ["factor"] = RopeLinearFactor },
            ["tie_word_embeddings"] = TieWordEmbeddings,
            ["max_position_embeddings"] = MaxPositionEmbeddings,
            ["attention_bias"] = AttentionBias,
            ["mlp_bias"] = false,
        };
        if (BosTokenId is { } bos)
        {
            obj["bos_token_id"] = bos;
        }

        if (ModelType is "mistral" or "phi3")
        {
            obj["sliding_window"] = SlidingWindow;
        }

        if (EosTokenIds.Count == 1)
        {
            obj["eos_token_id"] = EosTokenIds[0];
        }
        else if (EosTokenIds.Count > 1)
        {
            obj["eos_token_id"] = new JsonArray([.. EosTokenIds.Select(id => (JsonNode?)id)]);
        }

        if (TorchDtype is not null)
        {
            obj["torch_dtype"] = TorchDtype;
        }

        if (SuggestedExits.Count > 0)
        {
            obj["specedge_exits"] = new JsonArray([.. SuggestedExits.Select(layer => (JsonNode?)layer)]);
        }

        return obj;
    }

    private static (double Linear, Llama3RopeScaling? Llama3) ReadRopeScaling(JsonObject obj, string path)
    {
        var node = obj["rope_scaling"];
        if (node is null)
        {
            return (1.0, null);
        }

        if (node is not JsonObject scaling)
        {
            throw new ModelFormatException(path, "rope_scaling must be null or an object");
        }

        var type = ReadString(scaling, path, "rope_type") ?? ReadString(scaling, path, "type");
        switch (type)
        {
            case null or "default":
                return (1.0, null);
            case "linear":
                return (ScalingFactor(scaling, path, type), null);
            case "llama3":
                var factor = ScalingFactor(scaling, path, type);
                var low = ReadDouble(scaling, path, "low_freq_factor") ?? throw new ModelFormatException(path, "rope_scaling of type 'llama3' needs 'low_freq_factor'");
                var high = ReadDouble(scaling, path, "high_freq_factor") ?? throw new ModelFormatException(path, "rope_scaling of type 'llama3' needs 'high_freq_factor'");
                var original = ReadInt(scaling, path, "original_max_position_embeddings") ?? throw new ModelFormatException(path, "rope_scaling of type 'llama3' needs 'original_max_position_embeddings'");
                if (!(low > 0) || !(high > low) || original <= 0)
                {
                    throw new ModelFormatException(path, $"rope_scaling (llama3): low_freq_factor = {low.ToString(CultureInfo.InvariantCulture)} must be positive, high_freq_factor = {high.ToString(CultureInfo.InvariantCulture)} above it, and original_max_position_embeddings = {original} positive");
                }

                return (1.0, new Llama3RopeScaling(factor, low, high, original));
            default:
                throw new UnsupportedModelException(path, $"rope_scaling.rope_type = '{type}' is unsupported; SpecEdge implements none, 'linear' and 'llama3'");
        }
    }

    private static double ScalingFactor(JsonObject scaling, string path, string type)
    {
        var factor = ReadDouble(scaling, path, "factor")
            ?? throw new ModelFormatException(path, $"rope_scaling of type '{type}' needs a 'factor'");
        return factor >= 1.0 ? factor : throw new ModelFormatException(path, $"rope_scaling.factor = {factor.ToString(CultureInfo.InvariantCulture)} must be at least 1");
    }

    private static int RequirePositive(JsonObject obj, string path, string name)
    {
        var value = ReadInt(obj, path, name) ?? throw new ModelFormatException(path, $"required field '{name}' is missing");
        if (value <= 0)
        {
            throw new ModelFormatException(path, $"'{name}' = {value} must be positive");
        }

        return value;
    }

    private static int? ReadInt(JsonObject obj, string path, string name)
    {
        var node = obj[name];
        if (node is null)
        {
            return null;
        }

        if (node is JsonValue value && value.TryGetValue<long>(out var l) && l is >= int.MinValue and <= int.MaxValue)
        {
            return (int)l;
        }

        if (node is JsonValue dv && dv.TryGetValue<double>(out var d) && d == Math.Floor(d) && Math.Abs(d) <= int.MaxValue)
        {
            return (int)d;
        }

        throw new ModelFormatException(path, $"'{name}' must be an integer (found {node.ToJsonString()})");
    }

    private static double? ReadDouble(JsonObject obj, string path, string name)
    {
        var node = obj[name];
        if (node is null)
        {
            return null;
        }

        if (node is JsonValue value && value.TryGetValue<double>(out var d) && double.IsFinite(d))
        {
            return d;
        }

        throw new ModelFormatException(path, $"'{name}' must be a number (found {node.ToJsonString()})");
    }

    private static bool? ReadBool(JsonObject obj, string path, string name)
    {
        var node = obj[name];
        if (node is null)
        {
            return null;
        }

        if (node is JsonValue value && value.TryGetValue<bool>(out var b))
        {
            return b;
        }

        throw new ModelFormatException(path, $"'{name}' must be true or false (found {node.ToJsonString()})");
    }

    private static string? ReadString(JsonObject obj, string path, string name)
    {
        var node = obj[name];
        if (node is null)
        {
            return null;
        }

        if (node is JsonValue value && value.TryGetValue<string>(out var s))
        {
            return s;
        }

        throw new ModelFormatException(path, $"'{name}' must be a string (found {node.ToJsonString()})");
    }

    private static IReadOnlyList<int> ReadIntOrList(JsonObject obj, string path, string name)
    {
        var node = obj[name];
        if (node is null)
        {
            return [];
        }

        if (node is JsonArray array)
        {
            var ids = new List<int>(array.Count);
            foreach (var item in array)
            {
                if (item is JsonValue v && v.TryGetValue<int>(out var id))
                {
                    ids.Add(id);
                }
                else
                {
                    throw new ModelFormatException(path, $"'{name}' must be an integer or a list of integers (found {node.ToJsonString()})");
                }
            }

            return ids;
        }

        return [ReadInt(obj, path, name)!.Value];
    }
}

/// <summary>
/// Llama 3's RoPE scaling: wavelengths shorter than original/high_freq_factor keep their frequency, those longer than
/// original/low_freq_factor are divided by the factor, and those between are blended smoothly.
/// </summary>
/// <param name="Factor">How much longer the context is than the original (<c>factor</c>).</param>
/// <param name="LowFreqFactor"><c>low_freq_factor</c>.</param>
/// <param name="HighFreqFactor"><c>high_freq_factor</c>.</param>
/// <param name="OriginalMaxPositions"><c>original_max_position_embeddings</c>.</param>
public sealed record Llama3RopeScaling(double Factor, double LowFreqFactor, double HighFreqFactor, int OriginalMaxPositions)
{
    /// <summary>The scaled inverse frequency for one of the unscaled <paramref name="frequency"/>.</summary>
    public double Adjust(double frequency)
    {
        var wavelength = 2 * Math.PI / frequency;
        var lowFreqWavelength = OriginalMaxPositions / LowFreqFactor;
        var highFreqWavelength = OriginalMaxPositions / HighFreqFactor;
        if (wavelength < highFreqWavelength)
        {
            return frequency;
        }

        if (wavelength > lowFreqWavelength)
        {
            return frequency / Factor;
        }

        var smooth = ((OriginalMaxPositions / wavelength) - LowFreqFactor) / (HighFreqFactor - LowFreqFactor);
        return ((1 - smooth) * frequency / Factor) + (smooth * frequency);
    }
}
