using SpecEdge.Shared.Tokenization;

namespace SpecEdge.Shared.Decoding;

/// <summary>
/// Turns logits into the probability distribution a <see cref="SamplingConfig"/> defines, and draws from it. Holds
/// scratch buffers sized to the vocabulary, so one instance per decoding loop allocates nothing per token.
/// Not thread-safe.
/// </summary>
public sealed class TokenSampler
{
    private readonly float[] _keys;
    private readonly int[] _ids;
    private readonly float[] _heap;

    /// <summary>A sampler over a vocabulary of <paramref name="vocabSize"/> tokens.</summary>
    public TokenSampler(int vocabSize)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(vocabSize, 1);
        VocabSize = vocabSize;
        _keys = new float[vocabSize];
        _ids = new int[vocabSize];
        _heap = new float[vocabSize];
    }

    /// <summary>The vocabulary size its buffers hold.</summary>
    public int VocabSize { get; }

    /// <summary>
    /// The indices of the <paramref name="top"/>.Length largest entries of <paramref name="logits"/>, largest first, in
    /// one pass (ties: the lower id first, as <see cref="ArgMax"/>): top[0] is the arg-max.
    /// </summary>
    public static void Top(ReadOnlySpan<float> logits, Span<int> top)
    {
        var k = Math.Min(top.Length, logits.Length);
        var count = 0;
        for (var n = 0; n < logits.Length; n++)
        {
            var value = logits[n];
            int p;
            if (count < k)
            {
                p = count++;
            }
            else if (value > logits[top[k - 1]])
            {
                p = k - 1;
            }
            else
            {
                continue;
            }

            while (p > 0 && value > logits[top[p - 1]])
            {
                top[p] = top[p - 1];
                p--;
            }

            top[p] = n;
        }
    }

    /// <summary>The id of the largest logit; the lowest id wins a tie.</summary>
    public static TokenId ArgMax(ReadOnlySpan<float> logits)
    {
        var best = 0;
        var bestValue = logits[0];
        for (var i = 1; i < logits.Length; i++)
        {
            if (logits[i] > bestValue)
            {
                bestValue = logits[i];
                best = i;
            }
        }

        return new TokenId(best);
    }

    /// <summary>
    /// Writes the distribution <paramref name="config"/> defines over <paramref name="logits"/> into
    /// <paramref name="probabilities"/> (zero outside the kept set, summing to 1). Greedy gives a one-hot distribution.
    /// </summary>
    public void Distribution(ReadOnlySpan<float> logits, SamplingConfig config, Span<float> probabilities)
    {
        if (logits.Length != VocabSize || probabilities.Length != VocabSize)
        {
            throw new ArgumentException($"logits ({logits.Length}) and probabilities ({probabilities.Length}) must both hold the vocabulary of {VocabSize}");
        }

        if (config.IsGreedy)
        {
            probabilities.Clear();
            probabilities[ArgMax(logits).Value] = 1f;
            return;
        }

        var k = config.TopK > 0 && config.TopK < VocabSize ? config.TopK : VocabSize;
        var threshold = k < VocabSize ? KthLargest(logits, k) : float.NegativeInfinity;
        var tieSlots = k;
        if (k < VocabSize)
        {
            foreach (var value in logits)
            {
                if (value > threshold)
                {
                    tieSlots--;
                }
            }
        }

        var max = float.NegativeInfinity;
        foreach (var value in logits)
        {
            max = Math.Max(max, value);
        }

        var invTemperature = 1.0 / config.Temperature;
        double sum = 0;
        for (var i = 0; i < logits.Length; i++)
        {
            var keep = logits[i] > threshold || (logits[i] == threshold && tieSlots-- > 0);
            var p = keep ? Math.Exp((logits[i] - max) * invTemperature) : 0.0;
            probabilities[i] = (float)p;
            sum += p;
        }

        Normalize(probabilities, sum);
        if (config.TopP < 1f)
        {
            ApplyTopP(probabilities, config.TopP);
        }
    }

    /// <summary>The total of <paramref name="probabilities"/> (an unnormalised distribution's mass), summed in double in id order.</summary>
    public static double Mass(ReadOnlySpan<float> probabilities)
    {
        double total = 0;
        foreach (var p in probabilities)
        {
            total += p;
        }

        return total;
    }

    /// <summary>
    /// Draws a token from <paramref name="probabilities"/> by inverse CDF in id order with the uniform number
    /// <paramref name="u"/> in [0, 1).
    /// </summary>
    public static TokenId Sample(ReadOnlySpan<float> probabilities, double u)
    {
        var target = u * Mass(probabilities);
        double acc = 0;
        var lastNonZero = -1;
        for (var i = 0; i < probabilities.Length; i++)
        {
            if (probabilities[i] <= 0f)
            {
                continue;
            }

            acc += probabilities[i];
            lastNonZero = i;
            if (acc > target)
            {
                return new TokenId(i);
            }
        }

        if (lastNonZero < 0)
        {
            throw new ArgumentException("the distribution has no probability mass", nameof(probabilities));
        }

        return new TokenId(lastNonZero);
    }

    private static void Normalize(Span<float> probabilities, double sum)
    {
        var inv = 1.0 / sum;
        for (var i = 0; i < probabilities.Length; i++)
        {
            probabilities[i] = (float)(probabilities[i] * inv);
        }
    }

    // Nucleus cut: keep the most likely tokens until their mass reaches topP (at least one), then renormalise.
    private void ApplyTopP(Span<float> probabilities, float topP)
    {
        var n = 0;
        for (var i = 0; i < probabilities.Length; i++)
        {
            if (probabilities[i] > 0f)
            {
                _keys[n] = -probabilities[i];
                _ids[n] = i;
                n++;
            }
        }

        Array.Sort(_keys, _ids, 0, n);
        double acc = 0;
        var keep = 0;
        while (keep < n)
        {
            acc += -_keys[keep];
            keep++;
            if (acc >= topP)
            {
                break;
            }
        }

        for (var j = keep; j < n; j++)
        {
            probabilities[_ids[j]] = 0f;
        }

        Normalize(probabilities, acc);
    }

    // The k-th largest value, with a min-heap of size k: O(V log k) rather than a full sort.
    private float KthLargest(ReadOnlySpan<float> values, int k)
    {
        var heap = _heap.AsSpan(0, k);
        var size = 0;
        foreach (var value in values)
        {
            if (size < k)
            {
                heap[size] = value;
                SiftUp(heap, size++);
            }
            else if (value > heap[0])
            {
                heap[0] = value;
                SiftDown(heap, size);
            }
        }

        return heap[0];
    }

    private static void SiftUp(Span<float> heap, int i)
    {
        while (i > 0)
        {
            var parent = (i - 1) / 2;
            if (heap[parent] <= heap[i])
            {
                return;
            }

            (heap[parent], heap[i]) = (heap[i], heap[parent]);
            i = parent;
        }
    }

    private static void SiftDown(Span<float> heap, int size)
    {
        var i = 0;
        while (true)
        {
            var left = (2 * i) + 1;
            if (left >= size)
            {
                return;
            }

            var smallest = left + 1 < size && heap[left + 1] < heap[left] ? left + 1 : left;
            if (heap[i] <= heap[smallest])
            {
                return;
            }

            (heap[i], heap[smallest]) = (heap[smallest], heap[i]);
            i = smallest;
        }
    }
}
