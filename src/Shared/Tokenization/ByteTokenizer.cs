using System.Text;

namespace SpecEdge.Shared.Tokenization;

/// <summary>
/// The plain byte-level tokenizer of small models: token <c>b</c> is byte <c>b</c> (0–255), then
/// <see cref="BosId"/> and <see cref="EosId"/> when the vocabulary has room for them.
/// </summary>
public sealed class ByteTokenizer : ITextTokenizer
{
    /// <summary>The beginning-of-sequence id (256).</summary>
    public const int BosId = 256;
    /// <summary>The end-of-sequence id (257).</summary>
    public const int EosId = 257;

    /// <summary>The smallest vocabulary that holds every byte and both special tokens.</summary>
    public const int MinVocabWithSpecials = 258;

    /// <summary>A byte tokenizer for a vocabulary of <paramref name="vocabSize"/> ids (at least 258).</summary>
    public ByteTokenizer(int vocabSize)
    {
        if (vocabSize < 256)
        {
            throw new ArgumentOutOfRangeException(nameof(vocabSize), vocabSize, "a byte tokenizer needs a vocabulary of at least 256 tokens");
        }

        VocabSize = vocabSize;
        Bos = vocabSize >= MinVocabWithSpecials ? new TokenId(BosId) : null;
        Eos = vocabSize >= MinVocabWithSpecials ? [new TokenId(EosId)] : [];
    }

    /// <inheritdoc/>
    public string Kind => "bytes";

    /// <inheritdoc/>
    public int VocabSize { get; }

    /// <inheritdoc/>
    public TokenId? Bos { get; }

    /// <inheritdoc/>
    public IReadOnlyList<TokenId> Eos { get; }

    /// <inheritdoc/>
    public TokenId[] Encode(string text, bool addBos)
    {
        var bytes = Encoding.UTF8.GetBytes(text);
        var offset = addBos && Bos is not null ? 1 : 0;
        var ids = new TokenId[bytes.Length + offset];
        if (offset == 1)
        {
            ids[0] = Bos!.Value;
        }

        for (var i = 0; i < bytes.Length; i++)
        {
            ids[i + offset] = new TokenId(bytes[i]);
        }

        return ids;
    }

    /// <inheritdoc/>
    public void AppendBytes(TokenId token, List<byte> destination)
    {
        if ((uint)token.Value >= (uint)VocabSize)
        {
            throw new ArgumentOutOfRangeException(nameof(token), token.Value, $"token id is outside the byte vocabulary of {VocabSize}");
        }

        if (token.Value < 256)
        {
            destination.Add((byte)token.Value);
        }
    }
}
