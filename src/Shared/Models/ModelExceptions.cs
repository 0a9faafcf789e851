namespace SpecEdge.Shared.Models;

/// <summary>A model file is missing, truncated or does not hold what its format promises.</summary>
/// <remarks>The message always names the file and, where it applies, the tensor or field that is wrong.</remarks>
public class ModelFormatException : Exception
{
    public ModelFormatException(string filePath, string message, Exception? inner = null)
        : base($"{filePath}: {message}", inner)
    {
        FilePath = filePath;
    }

    /// <summary>The file that was being read.</summary>
    public string FilePath { get; }
}

/// <summary>The checkpoint is well formed but asks for something SpecEdge does not implement (an architecture, a RoPE scaling type…).</summary>
public sealed class UnsupportedModelException : ModelFormatException
{
    public UnsupportedModelException(string filePath, string message)
        : base(filePath, message)
    {
    }
}

/// <summary>A converted model file does not match the content hash its manifest recorded: it was truncated or edited after conversion.</summary>
public sealed class ModelIntegrityException : ModelFormatException
{
    public ModelIntegrityException(string filePath, string expectedHash, string actualHash)
        : base(filePath, $"content hash mismatch: the manifest records sha256 {expectedHash} but the file hashes to {actualHash}; the file was truncated or edited after conversion, convert the model again")
    {
        ExpectedHash = expectedHash;
        ActualHash = actualHash;
    }

    public string ExpectedHash { get; }

    public string ActualHash { get; }
}
