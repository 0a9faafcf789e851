using SpecEdge.Shared.Tokenization;

namespace SpecEdge.Shared.Decoding;

/// <summary>
/// A probability distribution over a few token ids (every other id has probability 0): how the draft's distribution
/// for one drafted token travels to the verifier. The verifier uses exactly these numbers, which is what keeps
/// speculative sampling exact across the wire.
/// </summary>
public sealed class SparseDistribution
{
    /// <summary>A distribution over <paramref name="ids"/> with their <paramref name="probabilities"/>.</summary>
    public SparseDistribution(int[] ids, float[] probabilities)
    {
        if (ids.Length != probabilities.Length)
        {
            throw new ArgumentException($"{ids.Length} ids but {probabilities.Length} probabilities");
        }

        Ids = ids;
        Probabilities = probabilities;
    }

    /// <summary>The token ids with non-zero probability.</summary>
    public int[] Ids { get; }

    /// <summary>Their probabilities, in the same order.</summary>
    public float[] Probabilities { get; }

    /// <summary>How many tokens have non-zero probability.</summary>
    public int Count => Ids.Length;

    /// <summary>The non-zero entries of a dense distribution, most likely first, at most <paramref name="maxEntries"/> (renormalised when cut).</summary>
    public static SparseDistribution FromDense(ReadOnlySpan<float> dense, int maxEntries = int.MaxValue)
    {
        var entries = new List<(int Id, float P)>();
        for (var i = 0; i < dense.Length; i++)
        {
            if (dense[i] > 0f)
            {
                entries.Add((i, dense[i]));
            }
        }

        entries.Sort((a, b) => b.P.CompareTo(a.P) is var c && c != 0 ? c : a.Id.CompareTo(b.Id));
        if (entries.Count > maxEntries)
        {
            entries.RemoveRange(maxEntries, entries.Count - maxEntries);
        }

        double sum = 0;
        foreach (var e in entries)
        {
            sum += e.P;
        }

        return new SparseDistribution(
            entries.Select(e => e.Id).ToArray(),
            entries.Select(e => (float)(e.P / sum)).ToArray());
    }

    /// <summary>The probability of <paramref name="token"/> (0 when it is not listed).</summary>
    public float ProbabilityOf(TokenId token)
    {
        for (var i = 0; i < Ids.Length; i++)
        {
            if (Ids[i] == token.Value)
            {
                return Probabilities[i];
            }
        }

        return 0f;
    }

    /// <summary>Why the distribution is not a valid one over <paramref name="vocabSize"/> ids, or null.</summary>
    public string? Validate(int vocabSize)
    {
        if (Count == 0)
        {
            return "the distribution is empty";
        }

        double sum = 0;
        var seen = new HashSet<int>();
        for (var i = 0; i < Count; i++)
        {
            if ((uint)Ids[i] >= (uint)vocabSize)
            {
                return $"token id {Ids[i]} is outside the vocabulary of {vocabSize}";
            }

            if (!seen.Add(Ids[i]))
            {
                return $"token id {Ids[i]} appears twice";
            }

            if (!(Probabilities[i] > 0f && Probabilities[i] <= 1f))
            {
                return $"probability {Probabilities[i]} of token {Ids[i]} is not in (0, 1]";
            }

            sum += Probabilities[i];
        }

        return Math.Abs(sum - 1.0) > 1e-3 ? $"probabilities sum to {sum:F4}, not 1" : null;
    }
}
