using System.Text;

namespace SpecEdge.Shared.Tokenization;

/// <summary>
/// The plain byte-level tokenizer of small models: token <c>b</c> is byte <c>b</c> (0–255), then
/// <see cref="BosId"/> and <see cref="EosId"/> when the vocabulary has room for them.
/// </summary>
public sealed class ByteTokenizer : ITextTokenizer
{
    public const int BosId = 256;
    public const int EosId = 257;

    /// <summary>The smallest vocabulary that holds every byte and both special tokens.</summary>
    public const int MinVocabWithSpecials = 258;

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

    public string Kind => "bytes";

    public int VocabSize { get; }

    public TokenId? Bos { get; }

    public IReadOnlyList<TokenId> Eos { get; }

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
