using System.Text;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using SpecEdge.Shared.Models.Checkpoints;

namespace SpecEdge.Shared.Models;

/// <summary>What a converted model holds: one stage (a draft) or several cut at exit layers (a target).</summary>
public enum ModelKind
{
    /// <summary>A single decoder graph in the common I/O convention.</summary>
    Draft,

    /// <summary>The decoder cut into stages at the exit layers, each exit with its own head.</summary>
    Staged,
}

/// <summary>How a draft's projections are quantized.</summary>
/// <param name="Type">int8 or int4.</param>
/// <param name="BlockSize">Columns per quantization block.</param>
/// <param name="AccuracyLevel">MatMulNBits' accuracy_level.</param>
public sealed record QuantizationManifest(string Type, int BlockSize, int AccuracyLevel);

/// <summary>One ONNX graph of a converted model: a run of consecutive decoder layers.</summary>
public sealed record StageManifest
{
    /// <summary>The ONNX file, relative to the model folder.</summary>
    public required string File { get; init; }

    /// <summary>
    /// The same stage with batched attention (<see cref="Onnx.AttentionForm.Batched"/>), which the verifier runs; null in
    /// a folder converted before batching existed.
    /// </summary>
    public string? BatchedFile { get; init; }

    /// <summary>The first decoder layer of the stage.</summary>
    public required int FirstLayer { get; init; }

    /// <summary>One past the last decoder layer of the stage.</summary>
    public required int EndLayer { get; init; }

    /// <summary>True when the stage ends at an early exit (its logits come from an exit head, not the final head).</summary>
    public bool IsExit { get; init; }

    /// <summary>True for the first stage, which takes <c>input_ids</c>; later stages take <c>hidden_states</c>.</summary>
    [JsonIgnore]
    public bool TakesTokenIds => FirstLayer == 0;
}

/// <summary>Size and SHA-256 of a file of a converted model.</summary>
public sealed record FileHash(long Bytes, string Sha256);

/// <summary>The tokenizer a model was converted with.</summary>
public sealed record TokenizerManifest(string Kind, string? File, string? Sha256);

/// <summary>
/// The manifest (<c>specedge.json</c>) of a converted model folder: the architecture, the stages and exits, the
/// tokenizer, and a content hash of every file. Both sides read it when a session opens, and loading checks every
/// hash, so a truncated or edited file fails with a <see cref="ModelIntegrityException"/> rather than garbage text.
/// </summary>
public sealed record ModelManifest
{
    /// <summary>The manifest's file name in a converted folder.</summary>
    public const string FileName = "specedge.json";
    /// <summary>The format name every manifest carries.</summary>
    public const string FormatName = "specedge-model";
    /// <summary>The manifest format this version writes and reads.</summary>
    public const int CurrentFormatVersion = 1;

    /// <summary>The key/value cache layout the graphs expect: one buffer per layer, bound as both past and present.</summary>
    public const string SharedBufferKvLayout = "shared-buffer";

    /// <summary>The KV layout of the batched graphs: the past read from a slot arena, this step's keys and values as outputs.</summary>
    public const string BatchedKvLayout = "batched-step";

    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower) },
    };

    /// <summary>The format name (<see cref="FormatName"/>).</summary>
    public string Format { get; init; } = FormatName;

    /// <summary>The manifest format version.</summary>
    public int FormatVersion { get; init; } = CurrentFormatVersion;

    /// <summary>A draft (one graph) or a staged target (one graph per exit, then the last).</summary>
    public required ModelKind Kind { get; init; }

    /// <summary>The architecture the graphs implement.</summary>
    public string Architecture { get; init; } = LlamaConfig.Architecture;

    /// <summary>The checkpoint's <c>config.json</c>, normalised.</summary>
    public required JsonObject Config { get; init; }

    /// <summary>The vocabulary size.</summary>
    public required int VocabSize { get; init; }

    /// <summary>Decoder layers.</summary>
    public required int NumLayers { get; init; }

    /// <summary>Key/value heads per layer.</summary>
    public required int NumKeyValueHeads { get; init; }

    /// <summary>The attention head dimension.</summary>
    public required int HeadDim { get; init; }

    /// <summary>The hidden size.</summary>
    public required int HiddenSize { get; init; }

    /// <summary>The longest sequence the model was built for (<c>max_position_embeddings</c>).</summary>
    public required int MaxPositions { get; init; }

    /// <summary>How weights are stored in the ONNX files (<c>f32</c> or <c>f16</c>).</summary>
    public required string WeightsDtype { get; init; }

    /// <summary>
    /// The type the graphs compute in (<c>f32</c>, or <c>f16</c>: float16 activations, KV cache and hidden state between
    /// stages; float32 logits).
    /// </summary>
    public string ComputeDtype { get; init; } = "f32";

    /// <summary>The block quantization of the projections and LM head (MatMulNBits), or null when they are not quantized.</summary>
    public QuantizationManifest? Quantization { get; init; }

    /// <summary>How the shared-buffer graphs hold the KV cache.</summary>
    public string KvLayout { get; init; } = SharedBufferKvLayout;

    /// <summary>The stage graphs, in order.</summary>
    public required IReadOnlyList<StageManifest> Stages { get; init; }

    /// <summary>The exit layers: stage boundaries whose head gives provisional logits.</summary>
    public IReadOnlyList<int> Exits { get; init; } = [];

    /// <summary>The exit-adapter file the exit heads were built from, when one was given.</summary>
    public string? ExitAdapters { get; init; }

    /// <summary>The tokenizer the model was converted with.</summary>
    public required TokenizerManifest Tokenizer { get; init; }

    /// <summary>Every file of the folder the model needs, with its size and SHA-256.</summary>
    public required IReadOnlyDictionary<string, FileHash> Files { get; init; }

    /// <summary>A hash over the weights and graphs (the ONNX and external data files); equal hashes mean the same model.</summary>
    public required string WeightsSha256 { get; init; }

    /// <summary>Where the model was converted from.</summary>
    public string? Source { get; init; }

    /// <summary>The converter that wrote the folder.</summary>
    public string? Converter { get; init; }

    /// <summary>The parsed architecture configuration.</summary>
    [JsonIgnore]
    public LlamaConfig LlamaConfig => Checkpoints.LlamaConfig.Parse(Config, FileName);

    /// <summary>Whether <paramref name="directory"/> holds a manifest.</summary>
    public static bool Exists(string directory) => System.IO.File.Exists(Path.Combine(directory, FileName));

    /// <summary>Reads a manifest (without checking file hashes; <see cref="VerifyFiles"/> does that).</summary>
    public static ModelManifest Load(string directory)
    {
        var path = Path.Combine(directory, FileName);
        if (!System.IO.File.Exists(path))
        {
            throw new ModelFormatException(path, "not a converted model folder: specedge.json is missing (convert the checkpoint with 'specedge-models convert')");
        }

        ModelManifest? manifest;
        try
        {
            manifest = JsonSerializer.Deserialize<ModelManifest>(System.IO.File.ReadAllText(path), JsonOptions);
        }
        catch (JsonException ex)
        {
            throw new ModelFormatException(path, $"manifest is not valid ({ex.Message})", ex);
        }

        if (manifest is null || manifest.Format != FormatName)
        {
            throw new ModelFormatException(path, $"manifest format is '{manifest?.Format}', expected '{FormatName}'");
        }

        if (manifest.FormatVersion != CurrentFormatVersion)
        {
            throw new ModelFormatException(path, $"manifest format version {manifest.FormatVersion} is not supported (this build reads version {CurrentFormatVersion}); convert the model again");
        }

        if (manifest.Stages.Count == 0 || manifest.Stages[0].FirstLayer != 0 || manifest.Stages[^1].EndLayer != manifest.NumLayers)
        {
            throw new ModelFormatException(path, "manifest stages must cover layers 0 to num_layers in order");
        }

        for (var i = 1; i < manifest.Stages.Count; i++)
        {
            if (manifest.Stages[i].FirstLayer != manifest.Stages[i - 1].EndLayer)
            {
                throw new ModelFormatException(path, $"manifest stage {i} starts at layer {manifest.Stages[i].FirstLayer}, not where stage {i - 1} ends");
            }
        }

        return manifest;
    }

    /// <summary>Writes the manifest into <paramref name="directory"/>.</summary>
    public void Save(string directory) =>
        System.IO.File.WriteAllText(Path.Combine(directory, FileName), JsonSerializer.Serialize(this, JsonOptions));

    /// <summary>The manifest as indented JSON.</summary>
    public string ToJson() => JsonSerializer.Serialize(this, JsonOptions);

    /// <summary>
    /// Checks the size and SHA-256 of every file the manifest lists. Hashing a large model takes minutes, so a full check
    /// leaves a stamp (<see cref="VerifiedStampFileName"/>: each file's size and modification time); while every file
    /// still has the stamped size and time, later loads check just that. Any change of size or time (an edit, a
    /// truncation, a copy) hashes everything again. Where the folder is read-only no stamp is written and every load
    /// hashes.
    /// </summary>
    /// <exception cref="ModelFormatException">A file is missing.</exception>
    /// <param name="directory">The converted model folder.</param>
    /// <param name="trustStamp">Accept a matching stamp (false: hash everything, as <c>specedge-models inspect</c> does).</param>
    /// <exception cref="ModelIntegrityException">A file's size or content differs from the manifest.</exception>
    public void VerifyFiles(string directory, bool trustStamp = true)
    {
        var stamp = Stamp(directory);
        var stampPath = Path.Combine(directory, VerifiedStampFileName);
        if (trustStamp && stamp is not null && System.IO.File.Exists(stampPath) && System.IO.File.ReadAllText(stampPath) == stamp)
        {
            return;
        }

        foreach (var (name, expected) in Files)
        {
            var path = Path.Combine(directory, name);
            if (!System.IO.File.Exists(path))
            {
                throw new ModelFormatException(path, "file listed in the manifest is missing");
            }

            var length = new FileInfo(path).Length;
            var actual = length == expected.Bytes ? HashFile(path) : $"(a {length}-byte file; the manifest records {expected.Bytes} bytes)";
            if (actual != expected.Sha256)
            {
                throw new ModelIntegrityException(path, expected.Sha256, actual);
            }
        }

        // The sizes and times read before hashing: a file changed while it was hashed no longer matches them.
        WriteStamp(directory, stamp);
    }

    /// <summary>
    /// Records that every file matches the manifest as it stands now (the converter, which has just hashed what it
    /// wrote, and a full check call this); later loads compare sizes and modification times with it.
    /// </summary>
    internal void WriteStamp(string directory, string? stamp = null)
    {
        try
        {
            System.IO.File.WriteAllText(Path.Combine(directory, VerifiedStampFileName), stamp ?? Stamp(directory));
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // A read-only model folder: every load hashes, which is slower but as safe.
        }
    }

    /// <summary>The stamp a full check leaves beside the manifest.</summary>
    public const string VerifiedStampFileName = ".specedge-verified";

    // Every listed file's name, size and modification time (and the manifest's), or null when one is missing.
    private string? Stamp(string directory)
    {
        var lines = new StringBuilder();
        foreach (var name in Files.Keys.Append(FileName))
        {
            var info = new FileInfo(Path.Combine(directory, name));
            if (!info.Exists)
            {
                return null;
            }

            lines.Append(name).Append('\t').Append(info.Length).Append('\t').Append(info.LastWriteTimeUtc.Ticks).Append('\n');
        }

        return lines.ToString();
    }

    /// <summary>The SHA-256 of a file, as lower-case hex.</summary>
    public static string HashFile(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        return Convert.ToHexStringLower(SHA256.HashData(stream));
    }
}
