using System.Globalization;
using System.Text;

namespace SpecEdge.Shared.Tokenization;

/// <summary>
/// For models with no tokenizer and a vocabulary too small for bytes (test models): ids print as <c>⟨id⟩</c>, and
/// prompts must be given as ids.
/// </summary>
public sealed class IdTokenizer(int vocabSize, IReadOnlyList<TokenId> eos) : ITextTokenizer
{
    /// <inheritdoc/>
    public string Kind => "ids";

    /// <inheritdoc/>
    public int VocabSize { get; } = vocabSize;

    /// <inheritdoc/>
    public TokenId? Bos => null;

    /// <inheritdoc/>
    public IReadOnlyList<TokenId> Eos { get; } = eos;

    /// <inheritdoc/>
    public TokenId[] Encode(string text, bool addBos) =>
        throw new NotSupportedException("this model has no tokenizer: give the prompt as token ids");

    /// <inheritdoc/>
    public void AppendBytes(TokenId token, List<byte> destination)
    {
        if ((uint)token.Value >= (uint)VocabSize)
        {
            throw new ArgumentOutOfRangeException(nameof(token), token.Value, $"token id is outside the vocabulary of {VocabSize}");
        }

        destination.AddRange(Encoding.UTF8.GetBytes(string.Create(CultureInfo.InvariantCulture, $"⟨{token.Value}⟩")));
    }
}
