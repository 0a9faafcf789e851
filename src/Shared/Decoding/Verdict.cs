using SpecEdge.Shared.Tokenization;

namespace SpecEdge.Shared.Decoding;

/// <summary>
/// The outcome of checking a round of drafts: the first <see cref="Accepted"/> drafts stand, and <see cref="Next"/>
/// follows them (the correction after a rejection, or the bonus token when every draft stands).
/// </summary>
/// <remarks>
/// The rules about verdicts live here, for both sides of the wire: the tokens a verdict commits
/// (<see cref="Tokens"/>, before any stop rule cuts them), whether it fits the round it answers (<see cref="Fits"/>),
/// and when two verdicts agree — an early verdict with the final one, a conditional round's condition with the
/// verdict it assumed — which is plain equality of the two fields.
/// </remarks>
public readonly record struct Verdict(int Accepted, TokenId Next)
{
    /// <summary>The tokens the verdict adds after the committed prefix: the accepted drafts, then <see cref="Next"/>.</summary>
    /// <exception cref="ArgumentException">The verdict accepts more drafts than <paramref name="drafts"/> holds.</exception>
    public TokenId[] Tokens(ReadOnlySpan<TokenId> drafts)
    {
        if (Accepted < 0 || Accepted > drafts.Length)
        {
            throw new ArgumentException($"the verdict accepts {Accepted} drafts but the round carried {drafts.Length}", nameof(drafts));
        }

        var tokens = new TokenId[Accepted + 1];
        drafts[..Accepted].CopyTo(tokens);
        tokens[^1] = Next;
        return tokens;
    }

    /// <summary>Whether the verdict can answer a round of <paramref name="drafts"/> drafts over a vocabulary of <paramref name="vocabSize"/>.</summary>
    public bool Fits(int drafts, int vocabSize) => Accepted >= 0 && Accepted <= drafts && (uint)Next.Value < (uint)vocabSize;
}
