using System.Text.Json;
using SpecEdge.Shared.Models.Checkpoints;
using SpecEdge.Shared.Numerics;
using SpecEdge.Shared.Tokenization;

namespace SpecEdge.Shared.Models.Synthetic;

/// <summary>What a seeded random Llama checkpoint looks like.</summary>
public sealed record SyntheticModelSpec
{
    /// <summary>Decoder layers.</summary>
    public int Layers { get; init; } = 2;

    /// <summary>Hidden size.</summary>
    public int Hidden { get; init; } = 64;

    /// <summary>Query heads.</summary>
    public int Heads { get; init; } = 4;

    /// <summary>Key/value heads.</summary>
    public int KvHeads { get; init; } = 2;

    /// <summary>Head size; <c>Hidden / Heads</c> when null.</summary>
    public int? HeadDim { get; init; }

    /// <summary>MLP width.</summary>
    public int Intermediate { get; init; } = 128;

    /// <summary>Vocabulary size.</summary>
    public int Vocab { get; init; } = 258;

    /// <summary>The seed every tensor's random stream derives from.</summary>
    public ulong Seed { get; init; } = 1;

    /// <summary>Tie the output projection to the embedding.</summary>
    public bool Tied { get; init; }

    /// <summary>RoPE base.</summary>
    public double RopeTheta { get; init; } = LlamaConfig.DefaultRopeTheta;

    /// <summary>Linear RoPE scaling factor (1: none).</summary>
    public double RopeLinearFactor { get; init; } = 1.0;

    /// <summary><c>llama</c> (default), <c>mistral</c> (with <see cref="SlidingWindow"/>), <c>phi3</c> (fused projections) or <c>qwen2</c> (biases on the query, key and value projections).</summary>
    public string Arch { get; init; } = "llama";

    /// <summary>Mistral's sliding window, or null.</summary>
    public int? SlidingWindow { get; init; }

    /// <summary>Llama 3's RoPE scaling, or null.</summary>
    public Llama3RopeScaling? RopeLlama3 { get; init; }

    /// <summary>Maximum positions.</summary>
    public int MaxPositions { get; init; } = 512;

    /// <summary>Scale of the LM head weights; larger values give sharper next-token distributions.</summary>
    public double HeadScale { get; init; } = 2.0;

    /// <summary>
    /// Scale of each layer's output projections (attention o_proj, MLP down_proj). Below 1, each layer nudges the
    /// residual stream rather than rewriting it, so a model cut after fewer layers (an exit, or a draft drawn with the
    /// same seed and fewer layers) predicts much like the whole model, as trained models do.
    /// </summary>
    public double LayerOutputScale { get; init; } = 1.0;

    /// <summary>Parameters the checkpoint holds.</summary>
    public long ParameterCount
    {
        get
        {
            var hd = HeadDim ?? Hidden / Heads;
            long perLayer = 2L * Hidden
                + ((long)Hidden * Heads * hd * 2)
                + ((long)Hidden * KvHeads * hd * 2)
                + (3L * Hidden * Intermediate);
            return (Layers * perLayer) + Hidden + ((long)Vocab * Hidden * (Tied ? 1 : 2));
        }
    }

    /// <summary>The spec as a Hugging Face configuration.</summary>
    public LlamaConfig ToConfig() => new()
    {
        HiddenSize = Hidden,
        IntermediateSize = Intermediate,
        NumHiddenLayers = Layers,
        NumAttentionHeads = Heads,
        NumKeyValueHeads = KvHeads,
        HeadDim = HeadDim ?? Hidden / Heads,
        VocabSize = Vocab,
        RopeTheta = RopeTheta,
        RopeLinearFactor = RopeLinearFactor,
        RopeLlama3 = RopeLlama3,
        ModelType = Arch,
        SlidingWindow = Arch is "mistral" or "phi3" ? SlidingWindow : null,
        AttentionBias = Arch == "qwen2",
        TieWordEmbeddings = Tied,
        MaxPositionEmbeddings = MaxPositions,
        BosTokenId = Vocab >= ByteTokenizer.MinVocabWithSpecials ? ByteTokenizer.BosId : null,
        EosTokenIds = Vocab >= ByteTokenizer.MinVocabWithSpecials ? [ByteTokenizer.EosId] : [],
        TorchDtype = "float32",
    };
}

/// <summary>
/// Seeded random Llama checkpoints in the Hugging Face format, for tests, benchmarks and the demo before trained
/// weights exist. Every tensor is drawn from its own named stream, so a tensor's values depend only on the seed,
/// its name and its shape.
/// </summary>
public static class SyntheticCheckpoint
{
    /// <summary>Draws the weights of <paramref name="spec"/> in float32, in Hugging Face tensor names.</summary>
    public static IReadOnlyList<HostTensor> Generate(SyntheticModelSpec spec)
    {
        var c = spec.ToConfig();
        if (c.NumAttentionHeads % c.NumKeyValueHeads != 0)
        {
            throw new ArgumentException($"heads ({c.NumAttentionHeads}) must be a multiple of kv-heads ({c.NumKeyValueHeads})", nameof(spec));
        }

        var h = c.HiddenSize;
        var qDim = c.NumAttentionHeads * c.HeadDim;
        var kvDim = c.NumKeyValueHeads * c.HeadDim;
        var tensors = new List<HostTensor>
        {
            Normal(spec.Seed, LlamaTensorNames.Embedding, [c.VocabSize, h], 1.0),
        };
        for (var i = 0; i < c.NumHiddenLayers; i++)
        {
            tensors.Add(Norm(spec.Seed, LlamaTensorNames.InputNorm(i), h));
            var qProj = Normal(spec.Seed, LlamaTensorNames.QProj(i), [qDim, h], 1.0 / Math.Sqrt(h));
            var kProj = Normal(spec.Seed, LlamaTensorNames.KProj(i), [kvDim, h], 1.0 / Math.Sqrt(h));
            var vProj = Normal(spec.Seed, LlamaTensorNames.VProj(i), [kvDim, h], 1.0 / Math.Sqrt(h));
            tensors.AddRange(c.FusedProjections ? [Fuse(LlamaTensorNames.QkvProj(i), qProj, kProj, vProj)] : [qProj, kProj, vProj]);
            if (c.AttentionBias)
            {
                tensors.Add(Normal(spec.Seed, LlamaTensorNames.Bias(LlamaTensorNames.QProj(i)), [qDim], 0.5));
                tensors.Add(Normal(spec.Seed, LlamaTensorNames.Bias(LlamaTensorNames.KProj(i)), [kvDim], 0.5));
                tensors.Add(Normal(spec.Seed, LlamaTensorNames.Bias(LlamaTensorNames.VProj(i)), [kvDim], 0.5));
            }
            tensors.Add(Normal(spec.Seed, LlamaTensorNames.OProj(i), [h, qDim], spec.LayerOutputScale / Math.Sqrt(qDim)));
            tensors.Add(Norm(spec.Seed, LlamaTensorNames.PostAttentionNorm(i), h));
            var gate = Normal(spec.Seed, LlamaTensorNames.GateProj(i), [c.IntermediateSize, h], 1.0 / Math.Sqrt(h));
            var up = Normal(spec.Seed, LlamaTensorNames.UpProj(i), [c.IntermediateSize, h], 1.0 / Math.Sqrt(h));
            tensors.AddRange(c.FusedProjections ? [Fuse(LlamaTensorNames.GateUpProj(i), gate, up)] : [gate, up]);
            tensors.Add(Normal(spec.Seed, LlamaTensorNames.DownProj(i), [h, c.IntermediateSize], spec.LayerOutputScale / Math.Sqrt(c.IntermediateSize)));
        }

        tensors.Add(Norm(spec.Seed, LlamaTensorNames.FinalNorm, h));
        if (!c.TieWordEmbeddings)
        {
            tensors.Add(Normal(spec.Seed, LlamaTensorNames.LmHead, [c.VocabSize, h], spec.HeadScale / Math.Sqrt(h)));
        }

        return tensors;
    }

    /// <summary>
    /// Writes a seeded random checkpoint folder: <c>config.json</c>, safetensors weights in <paramref name="dtype"/>
    /// (sharded when <paramref name="shards"/> &gt; 1) and, when the vocabulary holds all 256 bytes, a byte-level
    /// <c>tokenizer.json</c>.
    /// </summary>
    public static LlamaConfig Write(string directory, SyntheticModelSpec spec, TensorDType dtype = TensorDType.Float32, int shards = 1)
    {
        var config = spec.ToConfig() with { TorchDtype = dtype switch { TensorDType.Float16 => "float16", TensorDType.BFloat16 => "bfloat16", _ => "float32" } };
        Directory.CreateDirectory(directory);
        SafetensorsWriter.WriteCheckpoint(directory, Generate(spec), dtype, shards);
        File.WriteAllText(Path.Combine(directory, LlamaCheckpoint.ConfigFileName), config.ToJson().ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        if (spec.Vocab >= 256)
        {
            HfBpeTokenizer.WriteByteVocabulary(Path.Combine(directory, TokenizerFiles.TokenizerJson), spec.Vocab);
        }

        return config;
    }

    // Phi-3's fused tensors: the parts' rows one after another.
    private static HostTensor Fuse(string name, params HostTensor[] parts) =>
        new(name, [parts.Sum(p => p.Shape[0]), parts[0].Shape[1]], [.. parts.SelectMany(p => p.Data)]);

    private static HostTensor Normal(ulong seed, string name, long[] shape, double std)
    {
        var rng = SplitMix64.ForName(seed, name);
        var data = new float[shape.Aggregate(1L, (a, b) => a * b)];
        for (var i = 0; i < data.Length; i++)
        {
            data[i] = (float)(rng.NextGaussian() * std);
        }

        return new HostTensor(name, shape, data);
    }

    private static HostTensor Norm(ulong seed, string name, int size)
    {
        var rng = SplitMix64.ForName(seed, name);
        var data = new float[size];
        for (var i = 0; i < size; i++)
        {
            data[i] = (float)(1.0 + (0.1 * rng.NextGaussian()));
        }

        return new HostTensor(name, [size], data);
    }
}
