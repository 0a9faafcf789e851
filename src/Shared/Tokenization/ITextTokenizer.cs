namespace SpecEdge.Shared.Tokenization;

/// <summary>Turns text into token ids and token ids back into the bytes they stand for.</summary>
public interface ITextTokenizer
{
    /// <summary>A short name of the tokenizer kind (<c>byte-level-bpe</c>, <c>sentencepiece-bpe</c>, <c>sentencepiece</c>, <c>bytes</c>).</summary>
    string Kind { get; }

    /// <summary>One past the largest id the tokenizer can produce or decode.</summary>
    int VocabSize { get; }

    /// <summary>The beginning-of-sequence token, if the tokenizer has one.</summary>
    TokenId? Bos { get; }

    /// <summary>The end-of-sequence tokens (generation stops on any of them).</summary>
    IReadOnlyList<TokenId> Eos { get; }

    /// <summary>Encodes text, with the beginning-of-sequence token in front when <paramref name="addBos"/> and the tokenizer has one.</summary>
    TokenId[] Encode(string text, bool addBos);

    /// <summary>
    /// Appends the UTF-8 bytes <paramref name="token"/> stands for. A byte-level token may hold part of a character;
    /// special tokens (beginning/end of sequence) append nothing.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The id is outside the vocabulary.</exception>
    void AppendBytes(TokenId token, List<byte> destination);
}

/// <summary>Helpers over <see cref="ITextTokenizer"/>.</summary>
public static class TextTokenizerExtensions
{
    /// <summary>Decodes whole text; bytes that do not form valid UTF-8 become U+FFFD.</summary>
    public static string Decode(this ITextTokenizer tokenizer, ReadOnlySpan<TokenId> tokens)
    {
        var bytes = new List<byte>(tokens.Length * 4);
        foreach (var token in tokens)
        {
            tokenizer.AppendBytes(token, bytes);
        }

        return System.Text.Encoding.UTF8.GetString(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(bytes));
    }

    /// <summary>Whether <paramref name="token"/> is one of the tokenizer's end-of-sequence ids.</summary>
    public static bool IsEos(this ITextTokenizer tokenizer, TokenId token)
    {
        foreach (var eos in tokenizer.Eos)
        {
            if (eos == token)
            {
                return true;
            }
        }

        return false;
    }
}
