using SpecEdge.Shared.Models.Onnx;
using SpecEdge.Shared.Models.Checkpoints;
using SpecEdge.Shared.Models.Conversion;
using SpecEdge.Shared.Models.Synthetic;
using SpecEdge.Shared.Runtime;

namespace SpecEdge.TestUtilities;

/// <summary>A seeded synthetic checkpoint written to disk, with the weights the reference forward pass should use.</summary>
public sealed class SyntheticModel
{
    public required SyntheticModelSpec Spec { get; init; }

    public required string CheckpointDir { get; init; }

    public required LlamaConfig Config { get; init; }

    /// <summary>The weights as stored in the checkpoint (rounded to its dtype), in Hugging Face layout.</summary>
    public required IReadOnlyDictionary<string, float[]> Weights { get; init; }

    public ReferenceLlama Reference() => new(Config, Weights);
}

/// <summary>Makes synthetic checkpoints and converted models for tests.</summary>
public static class TestModels
{
    /// <summary>A small GQA model: 2 layers, hidden 64, 4 heads over 2 KV heads, vocabulary 258 (bytes + BOS/EOS).</summary>
    public static SyntheticModelSpec Small(ulong seed = 1) => new()
    {
        Layers = 2,
        Hidden = 64,
        Heads = 4,
        KvHeads = 2,
        Intermediate = 96,
        Vocab = 258,
        Seed = seed,
        MaxPositions = 256,
    };

    public static SyntheticModel WriteCheckpoint(string directory, SyntheticModelSpec spec, TensorDType dtype = TensorDType.Float32, int shards = 1)
    {
        var config = SyntheticCheckpoint.Write(directory, spec, dtype, shards);
        var weights = SyntheticCheckpoint.Generate(spec).ToDictionary(
            t => t.Name,
            t => dtype switch
            {
                TensorDType.Float16 => Precision.RoundToHalf(t.Data),
                TensorDType.BFloat16 => Precision.RoundToBFloat16(t.Data),
                _ => t.Data,
            });
        return new SyntheticModel { Spec = spec, CheckpointDir = directory, Config = config, Weights = weights };
    }

    /// <summary>Writes a checkpoint into <paramref name="root"/>/checkpoint and converts it into <paramref name="root"/>/converted.</summary>
    public static (SyntheticModel Model, string ConvertedDir) WriteAndConvert(string root, SyntheticModelSpec spec, ConversionOptions? options = null, TensorDType checkpointDtype = TensorDType.Float32, int shards = 1)
    {
        var model = WriteCheckpoint(Path.Combine(root, "checkpoint"), spec, checkpointDtype, shards);
        var converted = Path.Combine(root, "converted");
        ModelConverter.Convert(model.CheckpointDir, converted, options ?? new ConversionOptions());
        return (model, converted);
    }

    /// <summary>
    /// A target (3 layers, exit after layer 1) and a draft drawn with the same seed and one layer, so that the draft
    /// agrees with the target about half the time: both accept and reject paths run.
    /// </summary>
    public static SyntheticModelSpec PairTarget(ulong seed = 7, int vocab = 258) => new()
    {
        Layers = 3,
        Hidden = 64,
        Heads = 4,
        KvHeads = 2,
        Intermediate = 128,
        Vocab = vocab,
        Seed = seed,
        MaxPositions = 256,
        LayerOutputScale = 0.2,
    };

    /// <summary>Writes and converts a target/draft pair under <paramref name="root"/>: the target staged at exit layer 1.</summary>
    public static TestPair WritePair(string root, SyntheticModelSpec? target = null, IReadOnlyList<int>? exits = null, SyntheticModelSpec? draft = null)
    {
        var targetSpec = target ?? PairTarget();
        var (targetModel, targetDir) = WriteAndConvert(Path.Combine(root, "target"), targetSpec, new ConversionOptions { Exits = exits ?? [1] });
        var (draftModel, draftDir) = WriteAndConvert(Path.Combine(root, "draft"), draft ?? targetSpec with { Layers = 1 });
        return new TestPair(targetModel, targetDir, draftModel, draftDir);
    }

    /// <summary>
    /// The device parity tests run on: the CPU, or CUDA when <c>SPECEDGE_TEST_DEVICE=cuda</c> (bench/gpu/check.sh sets it
    /// on a GPU machine; a model that then does not run on CUDA fails the test instead of falling back).
    /// </summary>
    public static ExecutionDevice Device { get; } = Environment.GetEnvironmentVariable("SPECEDGE_TEST_DEVICE") == "cuda" ? ExecutionDevice.Cuda : ExecutionDevice.Cpu;

    /// <summary>Loads a converted model on <see cref="Device"/> with two intra-op threads (this machine's core count).</summary>
    public static LanguageModel Load(string convertedDir, int maxStepTokens = RuntimeOptions.DefaultMaxStepTokens, AttentionForm attention = AttentionForm.SharedBuffer)
    {
        var model = LanguageModel.Load(convertedDir, new RuntimeOptions { IntraOpThreads = 2, MaxStepTokens = maxStepTokens, Attention = attention, Device = Device });
        if (model.Device != Device)
        {
            var reason = model.FallbackReason;
            model.Dispose();
            throw new InvalidOperationException($"SPECEDGE_TEST_DEVICE asks for {Device}, but the model runs on the CPU: {reason}");
        }

        return model;
    }
}

/// <summary>A converted target/draft pair for protocol and end-to-end tests.</summary>
public sealed record TestPair(SyntheticModel Target, string TargetDir, SyntheticModel Draft, string DraftDir);

/// <summary>Bounded waits for tests: every await gets a deadline.</summary>
public static class TestTimeouts
{
    public static readonly TimeSpan Default = TimeSpan.FromSeconds(30);

    public static Task DefaultTimeout(this Task task) => task.WaitAsync(Default);

    public static Task<T> DefaultTimeout<T>(this Task<T> task) => task.WaitAsync(Default);

    public static Task<T> DefaultTimeout<T>(this ValueTask<T> task) => task.AsTask().WaitAsync(Default);
}
