using System.Text;

namespace SpecEdge.Shared.Tokenization;

/// <summary>
/// Turns a stream of tokens into text without ever emitting half a character: bytes of a multi-byte UTF-8 sequence
/// split across tokens are held back until the sequence is complete.
/// </summary>
public sealed class Utf8StreamDecoder
{
    private readonly ITextTokenizer _tokenizer;
    private readonly Decoder _decoder = new UTF8Encoding(false, false).GetDecoder();
    private readonly List<byte> _bytes = new(16);
    private char[] _chars = new char[64];

    /// <summary>A decoder of <paramref name="tokenizer"/>'s tokens into text.</summary>
    public Utf8StreamDecoder(ITextTokenizer tokenizer)
    {
        _tokenizer = tokenizer;
    }

    /// <summary>
    /// Adds one token and returns the complete characters it finishes (possibly none). An id the model can produce but
    /// the tokenizer has no text for (a padded vocabulary) comes out as U+FFFD.
    /// </summary>
    public string Push(TokenId token)
    {
        if ((uint)token.Value >= (uint)_tokenizer.VocabSize)
        {
            return Decode([], flush: true) + "\uFFFD";
        }

        _bytes.Clear();
        _tokenizer.AppendBytes(token, _bytes);
        return Decode(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_bytes), flush: false);
    }

    /// <summary>Ends the stream: bytes of an unfinished character come out as U+FFFD.</summary>
    public string Flush() => Decode([], flush: true);

    private string Decode(ReadOnlySpan<byte> bytes, bool flush)
    {
        var needed = _decoder.GetCharCount(bytes, flush);
        if (needed > _chars.Length)
        {
            _chars = new char[Math.Max(needed, _chars.Length * 2)];
        }

        var count = _decoder.GetChars(bytes, _chars, flush);
        return count == 0 ? string.Empty : new string(_chars, 0, count);
    }
}
