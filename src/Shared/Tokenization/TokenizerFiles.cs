using System.Security.Cryptography;
using SpecEdge.Shared.Models;

namespace SpecEdge.Shared.Tokenization;

/// <summary>Finds and loads the tokenizer of a model folder.</summary>
public static class TokenizerFiles
{
    /// <summary>A Hugging Face tokenizer.json.</summary>
    public const string TokenizerJson = "tokenizer.json";
    /// <summary>A SentencePiece model file.</summary>
    public const string SentencePieceModel = "tokenizer.model";

    /// <summary>The tokenizer file of a folder (tokenizer.json first, then tokenizer.model), or null for the plain byte tokenizer.</summary>
    public static string? Find(string directory)
    {
        var json = Path.Combine(directory, TokenizerJson);
        if (File.Exists(json))
        {
            return json;
        }

        var model = Path.Combine(directory, SentencePieceModel);
        return File.Exists(model) ? model : null;
    }

    /// <summary>
    /// Loads the tokenizer of a model folder: <c>tokenizer.json</c> (BPE), else <c>tokenizer.model</c> (SentencePiece), else
    /// the plain byte tokenizer when the vocabulary holds every byte, else ids only (<see cref="IdTokenizer"/>).
    /// </summary>
    /// <exception cref="ModelFormatException">An unreadable tokenizer file.</exception>
    /// <remarks>
    /// The end-of-sequence ids are <paramref name="eosIds"/> (config.json's) together with those of the folder's
    /// <c>generation_config.json</c>, where chat models list the ids that end a turn.
    /// </remarks>
    public static ITextTokenizer Load(string directory, int modelVocabSize, int? bosId, IReadOnlyList<int> eosIds)
    {
        eosIds = [.. eosIds.Union(Models.Checkpoints.GenerationConfig.Load(directory).EosTokenIds)];
        var file = Find(directory);
        ITextTokenizer tokenizer = file switch
        {
            null when modelVocabSize >= 256 => new ByteTokenizer(modelVocabSize),
            null => new IdTokenizer(modelVocabSize, eosIds.Select(id => new TokenId(id)).ToList()),
            _ when file.EndsWith(".json", StringComparison.Ordinal) => HfBpeTokenizer.Load(file, bosId, eosIds),
            _ => SentencePieceModelTokenizer.Load(file, eosIds),
        };

        if (tokenizer.VocabSize > modelVocabSize)
        {
            throw new ModelFormatException(file ?? directory, $"the tokenizer knows {tokenizer.VocabSize} ids but the model's vocabulary has only {modelVocabSize}");
        }

        return tokenizer;
    }

    /// <summary>SHA-256 (hex) of a file's content.</summary>
    public static string HashFile(string path)
    {
        using var stream = File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(stream));
    }
}
