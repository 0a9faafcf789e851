using SpecEdge.Shared.Numerics;

namespace SpecEdge.Shared.Decoding;

/// <summary>What a random number is drawn for; each purpose has its own independent stream.</summary>
public enum RandomPurpose
{
    /// <summary>The edge sampling a draft token.</summary>
    Draft = 1,

    /// <summary>The verifier's accept/reject test of a draft token.</summary>
    Accept = 2,

    /// <summary>Sampling the correction token from the residual distribution after a rejection.</summary>
    Residual = 3,

    /// <summary>Sampling a token from the target's own distribution (the bonus token, or autoregressive decoding).</summary>
    Target = 4,

    /// <summary>The edge sampling a leaf of a token tree (one stream per leaf index).</summary>
    Leaf = 5,

    /// <summary>The verifier's accept/reject test of a leaf (one stream per leaf index).</summary>
    LeafAccept = 6,
}

/// <summary>
/// Counter-based random numbers: the number used at a sequence position for a purpose depends only on the seed, the
/// position and the purpose. So a round's random numbers are known before it runs, and an early exit can use exactly
/// the numbers the final check will use; and a session rebuilt elsewhere draws the same numbers.
/// </summary>
public static class SamplingRandom
{
    /// <summary>A uniform number in [0, 1) for <paramref name="position"/> (the index of the token being decided).</summary>
    public static double Uniform(ulong seed, long position, RandomPurpose purpose) => Unit(Key(seed, position, purpose));

    /// <summary>The <paramref name="index"/>-th of several numbers for one position and purpose (the leaves of a depth).</summary>
    public static double Uniform(ulong seed, long position, RandomPurpose purpose, int index) =>
        Unit(SplitMix64.Mix(Key(seed, position, purpose) ^ (((ulong)index + 1) * 0xA0761D6478BD642FUL)));

    private static ulong Key(ulong seed, long position, RandomPurpose purpose)
    {
        var key = SplitMix64.Mix(seed + 0x9E3779B97F4A7C15UL);
        key = SplitMix64.Mix(key ^ ((ulong)position * 0xD1B54A32D192ED03UL));
        return SplitMix64.Mix(key ^ ((ulong)purpose * 0x8CB92BA72F3D8DD7UL));
    }

    /// <summary>The top 53 bits as a number in [0, 1).</summary>
    private static double Unit(ulong key) => (key >> 11) * (1.0 / (1UL << 53));
}
