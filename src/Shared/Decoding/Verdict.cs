using SpecEdge.Shared.Tokenization;

namespace SpecEdge.Shared.Decoding;

/// <summary>
/// The outcome of checking a round of drafts: the first <see cref="Accepted"/> drafts stand, and <see cref="Next"/>
/// follows them (the correction after a rejection, or the bonus token when every draft stands). In a round with leaves
/// (a token tree), a leaf at depth <see cref="Accepted"/> may stand where the draft there fell: <see cref="Branch"/> is
/// its token, and <see cref="Next"/> follows it.
/// </summary>
/// <remarks>
/// The rules about verdicts live here, for both sides of the wire: the tokens a verdict commits
/// (<see cref="Tokens"/>, before any stop rule cuts them), whether it fits the round it answers (<see cref="Fits(int, int, ReadOnlySpan{DraftLeaf})"/>),
/// what is left of it when the stop rule cuts it (<see cref="Cut"/>), and when two verdicts agree — an early verdict
/// with the final one, a conditional round's condition with the verdict it assumed — which is plain equality of the
/// fields.
/// </remarks>
public readonly record struct Verdict(int Accepted, TokenId Next, TokenId? Branch = null)
{
    /// <summary>The number of tokens the verdict adds: the accepted drafts, the branch's leaf if any, and <see cref="Next"/>.</summary>
    public int Length => Accepted + (Branch is null ? 1 : 2);

    /// <summary>The tokens the verdict adds after the committed prefix: the accepted drafts, the leaf it took, then <see cref="Next"/>.</summary>
    /// <exception cref="ArgumentException">The verdict accepts more drafts than <paramref name="drafts"/> holds, or branches after all of them.</exception>
    public TokenId[] Tokens(ReadOnlySpan<TokenId> drafts)
    {
        if (Accepted < 0 || Accepted > drafts.Length || (Branch is not null && Accepted == drafts.Length))
        {
            throw new ArgumentException($"the verdict accepts {Accepted} drafts{(Branch is null ? string.Empty : " and a leaf after them")} but the round carried {drafts.Length}", nameof(drafts));
        }

        var tokens = new TokenId[Length];
        drafts[..Accepted].CopyTo(tokens);
        if (Branch is { } leaf)
        {
            tokens[Accepted] = leaf;
        }

        tokens[^1] = Next;
        return tokens;
    }

    /// <summary>Whether the verdict can answer a chain of <paramref name="drafts"/> drafts (no leaves) over a vocabulary of <paramref name="vocabSize"/>.</summary>
    public bool Fits(int drafts, int vocabSize) => Fits(drafts, vocabSize, []);

    /// <summary>
    /// Whether the verdict can answer a round of <paramref name="drafts"/> drafts and <paramref name="leaves"/> over a
    /// vocabulary of <paramref name="vocabSize"/>: a branch must be one of the leaves at depth <see cref="Accepted"/>.
    /// </summary>
    public bool Fits(int drafts, int vocabSize, ReadOnlySpan<DraftLeaf> leaves)
    {
        if (Accepted < 0 || Accepted > drafts || (uint)Next.Value >= (uint)vocabSize)
        {
            return false;
        }

        return Branch is not { } branch || DraftLeaf.IndexOf(leaves, Accepted, branch) >= 0;
    }

    /// <summary>
    /// The verdict that commits only the first <paramref name="kept"/> of this verdict's tokens (what is left when the
    /// stop rule ends the generation inside it): its last kept token becomes <see cref="Next"/>.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="kept"/> is not 1 to <see cref="Length"/>.</exception>
    public Verdict Cut(ReadOnlySpan<TokenId> drafts, int kept)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(kept, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(kept, Length);
        return kept == Length ? this : new Verdict(kept - 1, TokenAt(drafts, kept - 1));
    }

    /// <summary>How the verdict reads in messages: its accepted drafts, the leaf it took, and the next token.</summary>
    public string Describe() => Branch is { } branch
        ? $"{Accepted} accepted, leaf {branch.Value} and next {Next.Value}"
        : $"{Accepted} accepted and next {Next.Value}";

    /// <summary>The verdict's <paramref name="index"/>th token (<see cref="Tokens"/> without the array).</summary>
    private TokenId TokenAt(ReadOnlySpan<TokenId> drafts, int index) =>
        index < Accepted ? drafts[index] : index == Accepted && Branch is { } branch ? branch : Next;
}

/// <summary>
/// A leaf of a round's token tree: an alternative to the draft at <see cref="Depth"/> (0-based among the drafts), with
/// the same parent (the committed prefix and the drafts before it). The verifier scores it beside the chain; when the
/// draft at that depth falls and the leaf stands, the round commits the leaf and the target's token after it.
/// </summary>
public readonly record struct DraftLeaf(int Depth, TokenId Token)
{
    /// <summary>The scored row of leaf <paramref name="index"/> in a step [last token, drafts…, leaves…]: after the chain's.</summary>
    public static int Row(int drafts, int index) => drafts + 1 + index;

    /// <summary>The index of the first leaf at <paramref name="depth"/> or deeper (leaves are in order of depth).</summary>
    public static int FirstAt(ReadOnlySpan<DraftLeaf> leaves, int depth)
    {
        var j = 0;
        while (j < leaves.Length && leaves[j].Depth < depth)
        {
            j++;
        }

        return j;
    }

    /// <summary>The index of the first leaf at <paramref name="depth"/> with <paramref name="token"/>, or −1.</summary>
    public static int IndexOf(ReadOnlySpan<DraftLeaf> leaves, int depth, TokenId token)
    {
        for (var j = FirstAt(leaves, depth); j < leaves.Length && leaves[j].Depth == depth; j++)
        {
            if (leaves[j].Token == token)
            {
                return j;
            }
        }

        return -1;
    }
}
