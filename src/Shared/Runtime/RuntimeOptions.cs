namespace SpecEdge.Shared.Runtime;

/// <summary>Where ONNX Runtime runs a model.</summary>
public enum ExecutionDevice
{
    /// <summary>The CPU execution provider (always available).</summary>
    Cpu,

    /// <summary>The CUDA execution provider; falls back to the CPU, loudly, when CUDA cannot load.</summary>
    Cuda,
}

/// <summary>How a model is loaded and run.</summary>
public sealed record RuntimeOptions
{
    /// <summary>Default for <see cref="MaxStepTokens"/>: the most tokens one run scores (a draft round plus its bonus token fits easily).</summary>
    public const int DefaultMaxStepTokens = 32;

    /// <summary>Where to run (default the CPU).</summary>
    public ExecutionDevice Device { get; init; } = ExecutionDevice.Cpu;

    /// <summary>The CUDA device index.</summary>
    public int DeviceId { get; init; }

    /// <summary>Threads ONNX Runtime uses inside one operator; 0 lets it choose (one per physical core). Edge devices often want fewer.</summary>
    public int IntraOpThreads { get; init; }

    /// <summary>The longest sequence a context holds; the model's maximum when null.</summary>
    public int? MaxSequenceLength { get; init; }

    /// <summary>The most tokens one step scores; longer prompts are prefilled in chunks of this size.</summary>
    public int MaxStepTokens { get; init; } = DefaultMaxStepTokens;

    /// <summary>
    /// Which graphs to load: the shared-buffer form (default; <see cref="DecodeContext"/>, one sequence per run) or the
    /// batched form (<see cref="BatchRunner"/>, many sequences per run).
    /// </summary>
    public Models.Onnx.AttentionForm Attention { get; init; } = Models.Onnx.AttentionForm.SharedBuffer;

    /// <summary>Check every file's SHA-256 against the manifest when loading (on by default: a corrupt file fails loudly).</summary>
    public bool VerifyHashes { get; init; } = true;
}

/// <summary>A step would take a sequence past the length its context was built for.</summary>
public sealed class SequenceTooLongException : InvalidOperationException
{
    /// <summary>A sequence of <paramref name="length"/> tokens cannot take <paramref name="adding"/> more within <paramref name="maxLength"/>.</summary>
    public SequenceTooLongException(int length, int adding, int maxLength)
        : base($"the sequence holds {length} tokens and cannot take {adding} more: its maximum length is {maxLength}")
    {
        MaxLength = maxLength;
    }

    /// <summary>The longest sequence allowed.</summary>
    public int MaxLength { get; }
}
