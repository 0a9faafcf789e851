using SpecEdge.Shared.Tokenization;

namespace SpecEdge.Shared.Decoding;

/// <summary>Why a generation ended.</summary>
public enum FinishReason
{
    /// <summary>Not finished.</summary>
    None,

    /// <summary>The end-of-sequence token was generated.</summary>
    EndOfSequence,

    /// <summary>The requested number of new tokens was reached.</summary>
    Length,

    /// <summary>The sequence reached the model's maximum length.</summary>
    Context,
}

/// <summary>
/// When a generation stops: after an end-of-sequence token (when asked), after <see cref="MaxNewTokens"/> new tokens,
/// or when the sequence fills <see cref="MaxSequenceLength"/>. The same rule cuts a round's new tokens on the verifier,
/// the edge and the cloud baseline, so every mode stops at the same token.
/// </summary>
public sealed record StopRule(int PromptLength, int MaxNewTokens, int MaxSequenceLength, bool StopAtEos, IReadOnlyList<TokenId> Eos)
{
    /// <summary>
    /// How many of <paramref name="newTokens"/> (appended to a sequence of <paramref name="committedLength"/> tokens) are
    /// kept, and whether the generation ends with them.
    /// </summary>
    public (int Kept, FinishReason Reason) Apply(int committedLength, ReadOnlySpan<TokenId> newTokens)
    {
        for (var i = 0; i < newTokens.Length; i++)
        {
            var length = committedLength + i + 1;
            if (StopAtEos && IsEos(newTokens[i]))
            {
                return (i + 1, FinishReason.EndOfSequence);
            }

            if (length - PromptLength >= MaxNewTokens)
            {
                return (i + 1, FinishReason.Length);
            }

            if (length >= MaxSequenceLength)
            {
                return (i + 1, FinishReason.Context);
            }
        }

        return (newTokens.Length, FinishReason.None);
    }

    /// <summary>
    /// The most drafts worth sending after <paramref name="committedLength"/> tokens: a round commits at most
    /// drafts + 1 tokens, so drafting past the remaining budget is wasted work.
    /// </summary>
    public int MaxUsefulDrafts(int committedLength) =>
        Math.Max(0, Math.Min(MaxNewTokens - (committedLength - PromptLength), MaxSequenceLength - committedLength) - 1);

    private bool IsEos(TokenId token)
    {
        foreach (var eos in Eos)
        {
            if (eos == token)
            {
                return true;
            }
        }

        return false;
    }
}
