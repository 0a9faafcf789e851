using SpecEdge.LinkEmulator;
using SpecEdge.Shared.Timing;

namespace SpecEdge.EdgeClient.Client;

/// <summary>How an edge client connects and drafts.</summary>
public sealed record EdgeClientOptions
{
    /// <summary>The verifier's address (<c>http://host:port</c>, or <c>https://</c>); null for edge-only decoding.</summary>
    public Uri? Server { get; init; }

    /// <summary>The draft model: a converted SpecEdge folder or a Hugging Face checkpoint folder (converted on first use).</summary>
    public string? DraftModel { get; init; }

    /// <summary>ONNX Runtime intra-op threads for the draft model; 0 lets ONNX Runtime choose.</summary>
    public int IntraOpThreads { get; init; }

    /// <summary>Emulated drafting speed (a compute profile's draft floor); real compute by default.</summary>
    public ComputeProfile Profile { get; init; } = ComputeProfile.Real;

    /// <summary>Route the connection through an in-process link emulator with this profile; null connects directly.</summary>
    public LinkProfile? Link { get; init; }

    /// <summary>Where converted checkpoints are cached; the default cache when null.</summary>
    public string? CacheDirectory { get; init; }

    /// <summary>Deadline for connecting and describing the verifier.</summary>
    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(10);

    public TimeProvider Time { get; init; } = TimeProvider.System;
}

/// <summary>The verifier cannot be reached, or refused the connection: the message says which and where.</summary>
public sealed class VerifierUnavailableException : Exception
{
    public VerifierUnavailableException(string message, Exception? inner = null)
        : base(message, inner)
    {
    }
}

/// <summary>The draft and the verifier's target cannot work together (vocabulary or tokenizer differ).</summary>
public sealed class ModelMismatchException : Exception
{
    public ModelMismatchException(string message)
        : base(message)
    {
    }
}
