using System.Numerics.Tensors;
using SpecEdge.Shared.Tokenization;

namespace SpecEdge.Shared.Decoding;

/// <summary>A row's two most likely tokens under an exit's distribution, with their probabilities.</summary>
/// <param name="First">The arg-max.</param>
/// <param name="FirstProbability">Its probability.</param>
/// <param name="Second">The runner-up.</param>
/// <param name="SecondProbability">Its probability.</param>
public readonly record struct RowTopTwo(TokenId First, float FirstProbability, TokenId Second, float SecondProbability)
{
    /// <summary>
    /// The two most likely tokens of a logits row under its softmax at temperature 1, without writing the distribution:
    /// vectorised max and exp-sum, one scalar pass for the runner-up (ties: the lower id first).
    /// </summary>
    /// <param name="logits">The row.</param>
    /// <param name="scratch">Room for the row's length (overwritten).</param>
    public static RowTopTwo FromLogits(ReadOnlySpan<float> logits, Span<float> scratch)
    {
        if (logits.Length < 2 || scratch.Length < logits.Length)
        {
            throw new ArgumentException($"a row needs at least two entries and scratch room for them (row {logits.Length}, scratch {scratch.Length})", nameof(logits));
        }

        var first = TensorPrimitives.IndexOfMax(logits);
        var max = logits[first];
        var second = first == 0 ? 1 : 0;
        for (var i = 0; i < logits.Length; i++)
        {
            if (i != first && logits[i] > logits[second])
            {
                second = i;
            }
        }

        var sum = ExpSum(logits, max, scratch);
        return new RowTopTwo(new TokenId(first), 1f / sum, new TokenId(second), MathF.Exp(logits[second] - max) / sum);
    }

    /// <summary>
    /// The softmax probability (temperature 1) of <paramref name="argMax"/>, the row's largest entry: 1 / Σ exp(l − max),
    /// vectorised, without writing the distribution. A draft's confidence in its greedy token, or an exit's in a row.
    /// </summary>
    /// <param name="logits">The row.</param>
    /// <param name="argMax">The index of its largest entry.</param>
    /// <param name="scratch">Room for the row's length (overwritten).</param>
    public static float ArgMaxProbability(ReadOnlySpan<float> logits, int argMax, Span<float> scratch) =>
        1f / ExpSum(logits, logits[argMax], scratch);

    private static float ExpSum(ReadOnlySpan<float> logits, float max, Span<float> scratch)
    {
        var exp = scratch[..logits.Length];
        TensorPrimitives.Subtract(logits, max, exp);
        TensorPrimitives.Exp(exp, exp);
        return TensorPrimitives.Sum(exp);
    }
}

/// <summary>An outcome of a round and an exit's estimate of its probability.</summary>
public readonly record struct RankedVerdict(Verdict Verdict, double Probability);

/// <summary>
/// The outcomes of a greedy round most likely after an exit's own verdict, for multi-candidate pre-drafting: the final
/// verdict differs from an exit's where one of the rows the exit's verdict rests on goes another way. Under the exit's
/// distribution, the outcome "row r picks its runner-up" has probability Π_{i&lt;r} p₁(i) · p₂(r) (the rows before it
/// as the exit says, then the runner-up); rows after a rejection do not matter. When the runner-up at the exit's
/// next-token row is the draft there (the exit rejected a draft the final head may keep), the round goes on past it,
/// the later rows as the exit reads them. The exit's own verdict has Π_{i≤a} p₁(i). In a round with leaves (a token
/// tree), an outcome whose token where a draft fell is a leaf there takes the leaf: the chain outcome could never be
/// the final verdict.
/// </summary>
public static class VerdictAlternatives
{
    /// <summary>
    /// Up to <paramref name="count"/> outcomes other than <paramref name="verdict"/>, most likely first.
    /// </summary>
    /// <param name="drafts">The round's drafts (γ).</param>
    /// <param name="verdict">The exit's greedy verdict on them.</param>
    /// <param name="rows">The exit's top two per row, rows 0..γ (row i follows draft i-1; row 0 follows the committed prefix).</param>
    /// <param name="count">How many alternatives to return at most.</param>
    /// <param name="leaves">The round's leaves, in order of depth (none for a chain).</param>
    /// <param name="nextAfterLeaf">The exit's arg-max at leaf j's own row: the token after a leaf an outcome takes (needed with leaves).</param>
    /// <exception cref="ArgumentException">The rows do not match the drafts, or the verdict is not the rows' greedy one.</exception>
    public static List<RankedVerdict> Rank(ReadOnlySpan<TokenId> drafts, Verdict verdict, ReadOnlySpan<RowTopTwo> rows, int count, ReadOnlySpan<DraftLeaf> leaves = default, Func<int, TokenId>? nextAfterLeaf = null)
    {
        if (!leaves.IsEmpty && nextAfterLeaf is null)
        {
            throw new ArgumentException("ranking a tree round needs the exit's token after each leaf", nameof(nextAfterLeaf));
        }

        if (rows.Length != drafts.Length + 1)
        {
            throw new ArgumentException($"{rows.Length} rows for {drafts.Length} drafts: a round of γ drafts has γ + 1 rows", nameof(rows));
        }

        if (verdict.Accepted > drafts.Length || rows[verdict.Accepted].First != verdict.Next)
        {
            throw new ArgumentException($"the verdict ({verdict.Accepted} accepted, next {verdict.Next}) is not the rows' greedy one", nameof(verdict));
        }

        var ranked = new List<RankedVerdict>(verdict.Accepted + 1);
        double before = 1;
        for (var r = 0; r <= verdict.Accepted; r++)
        {
            var row = rows[r];
            var probability = before * row.SecondProbability;
            if (r < drafts.Length && row.Second == drafts[r])
            {
                // The final head keeps the draft the exit rejected: the round goes on, the later rows as the exit reads them.
                var j = r + 1;
                while (j < drafts.Length && rows[j].First == drafts[j])
                {
                    j++;
                }

                ranked.Add(new RankedVerdict(Outcome(drafts.Length, j, rows[j].First, leaves, nextAfterLeaf), probability));
            }
            else
            {
                ranked.Add(new RankedVerdict(Outcome(drafts.Length, r, row.Second, leaves, nextAfterLeaf), probability));
            }

            before *= row.FirstProbability;
        }

        ranked.Sort(static (a, b) => b.Probability.CompareTo(a.Probability));
        var distinct = new List<RankedVerdict>(Math.Min(count, ranked.Count));
        foreach (var candidate in ranked)
        {
            if (distinct.Count == count)
            {
                break;
            }

            if (candidate.Verdict != verdict && !distinct.Exists(d => d.Verdict == candidate.Verdict))
            {
                distinct.Add(candidate);
            }
        }

        return distinct;
    }

    /// <summary>The outcome "<paramref name="accepted"/> drafts, then <paramref name="next"/>", taking the leaf when <paramref name="next"/> is one at that depth.</summary>
    private static Verdict Outcome(int drafts, int accepted, TokenId next, ReadOnlySpan<DraftLeaf> leaves, Func<int, TokenId>? nextAfterLeaf)
    {
        var leaf = accepted < drafts ? DraftLeaf.IndexOf(leaves, accepted, next) : -1;
        return leaf < 0 ? new Verdict(accepted, next) : new Verdict(accepted, nextAfterLeaf!(leaf), next);
    }
}
