using System.Runtime.CompilerServices;
using System.Text;

namespace SpecEdge.Shared.Numerics;

/// <summary>
/// SplitMix64: a tiny, fast, well-mixed 64-bit generator with a fixed published algorithm, so seeded streams are the
/// same on every platform and .NET version (unlike <see cref="Random"/>, whose algorithm is an implementation detail).
/// </summary>
public struct SplitMix64
{
    private ulong _state;

    /// <summary>A generator started at <paramref name="seed"/>.</summary>
    public SplitMix64(ulong seed)
    {
        _state = seed;
    }

    /// <summary>A generator keyed by a seed and a name, so that named streams are independent of each other.</summary>
    public static SplitMix64 ForName(ulong seed, string name)
    {
        var h = Mix(seed ^ 0x9E3779B97F4A7C15UL);
        foreach (var b in Encoding.UTF8.GetBytes(name))
        {
            h = Mix(h ^ b);
        }

        return new SplitMix64(h);
    }

    /// <summary>The SplitMix64 finaliser: a bijective 64-bit mixing function.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>The next 64 random bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ulong NextUInt64()
    {
        _state += 0x9E3779B97F4A7C15UL;
        return Mix(_state);
    }

    /// <summary>A uniform double in [0, 1) with 53 random bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));

    /// <summary>A standard normal draw (Box–Muller).</summary>
    public double NextGaussian()
    {
        var u1 = 1.0 - NextDouble();
        var u2 = NextDouble();
        return Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2.0 * Math.PI * u2);
    }
}
