namespace SpecEdge.Shared.Models;

/// <summary>A model file is missing, truncated or does not hold what its format promises.</summary>
/// <remarks>The message always names the file and, where it applies, the tensor or field that is wrong.</remarks>
public class ModelFormatException : Exception
{
    /// <summary><paramref name="filePath"/> is not what it should be: <paramref name="message"/> (the message names the full path).</summary>
    public ModelFormatException(string filePath, string message, Exception? inner = null)
        : base($"{FullPath(filePath)}: {message}", inner)
    {
        FilePath = filePath;
    }

    /// <summary>The file that was being read.</summary>
    public string FilePath { get; }

    private static string FullPath(string path)
    {
        try
        {
            return Path.GetFullPath(path);
        }
        catch (Exception ex) when (ex is ArgumentException or NotSupportedException or PathTooLongException)
        {
            return path;
        }
    }
}

/// <summary>The checkpoint is well formed but asks for something SpecEdge does not implement (an architecture, a RoPE scaling type…).</summary>
public sealed class UnsupportedModelException : ModelFormatException
{
    /// <summary>The checkpoint at <paramref name="filePath"/> is not one SpecEdge converts, for <paramref name="message"/>.</summary>
    public UnsupportedModelException(string filePath, string message)
        : base(filePath, message)
    {
    }
}

/// <summary>A converted model file does not match the content hash its manifest recorded: it was truncated or edited after conversion.</summary>
public sealed class ModelIntegrityException : ModelFormatException
{
    /// <summary><paramref name="filePath"/> hashes to <paramref name="actualHash"/>, not the expected <paramref name="expectedHash"/>.</summary>
    public ModelIntegrityException(string filePath, string expectedHash, string actualHash)
        : this(filePath, expectedHash, actualHash, "the file was truncated or edited after conversion, convert the model again")
    {
    }

    /// <param name="filePath">The file whose content differs.</param>
    /// <param name="expectedHash">The SHA-256 the manifest records.</param>
    /// <param name="actualHash">What the file hashes to (or a note on its size).</param>
    /// <param name="remedy">What the user should do about it.</param>
    public ModelIntegrityException(string filePath, string expectedHash, string actualHash, string remedy)
        : base(filePath, $"content hash mismatch: the manifest records sha256 {expectedHash} but the file hashes to {actualHash}; {remedy}")
    {
        ExpectedHash = expectedHash;
        ActualHash = actualHash;
    }

    /// <summary>The hash the manifest lists.</summary>
    public string ExpectedHash { get; }

    /// <summary>The hash of the file as found.</summary>
    public string ActualHash { get; }
}
