using SpecEdge.Shared.Models.Conversion;
using SpecEdge.Shared.Models.Synthetic;

namespace SpecEdge.Bench;

/// <summary>Synthetic models for benchmarks, made once into a cache folder and reused.</summary>
internal static class BenchModels
{
    public static string CacheRoot =>
        Environment.GetEnvironmentVariable(ModelResolver.CacheEnvironmentVariable) is { Length: > 0 } configured
            ? Path.Combine(configured, "bench")
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "specedge", "bench");

    /// <summary>Named sizes of about 1 M, 25 M and 110 M parameters.</summary>
    public static readonly IReadOnlyDictionary<string, SyntheticModelSpec> Sizes = new Dictionary<string, SyntheticModelSpec>
    {
        ["1M"] = new() { Layers = 4, Hidden = 128, Heads = 4, KvHeads = 2, Intermediate = 384, Vocab = 1024, Seed = 101, MaxPositions = 1024 },
        ["25M"] = new() { Layers = 6, Hidden = 512, Heads = 8, KvHeads = 4, Intermediate = 1408, Vocab = 8192, Seed = 102, MaxPositions = 1024 },
        ["110M"] = new() { Layers = 12, Hidden = 768, Heads = 12, KvHeads = 12, Intermediate = 2048, Vocab = 32000, Tied = true, Seed = 103, MaxPositions = 1024 },
    };

    /// <summary>A converted synthetic model of <paramref name="spec"/> (converted with <paramref name="exits"/>), cached.</summary>
    public static string Converted(string name, SyntheticModelSpec spec, IReadOnlyList<int>? exits = null, ConversionOptions? options = null)
    {
        var exitsKey = exits is { Count: > 0 } ? "-exits" + string.Join("_", exits) : string.Empty;
        var quantizedKey = options is { Quantization: not Shared.Models.Onnx.WeightQuantization.None } q ? $"-{q.Quantization}a{q.QuantizationAccuracyLevel}" : string.Empty;
        var root = Path.Combine(CacheRoot, $"{name}-s{spec.Seed}{exitsKey}{quantizedKey}-g{ModelConverter.GraphFormat}");
        var checkpoint = Path.Combine(root, "checkpoint");
        var converted = Path.Combine(root, "converted");
        if (File.Exists(Path.Combine(converted, "specedge.json")))
        {
            return converted;
        }

        if (Directory.Exists(root))
        {
            Directory.Delete(root, recursive: true);
        }

        Console.Error.WriteLine($"making benchmark model {name} ({spec.ParameterCount / 1e6:F1} M parameters) in {root}");
        SyntheticCheckpoint.Write(checkpoint, spec);
        ModelConverter.Convert(checkpoint, converted, (options ?? new ConversionOptions()) with { Exits = exits ?? [] });
        return converted;
    }
}
