using System.Globalization;

namespace SpecEdge.Shared.Decoding;

/// <summary>
/// How the next token is chosen. <see cref="Temperature"/> 0 is greedy (the arg-max); otherwise logits are divided by
/// the temperature, cut to the <see cref="TopK"/> largest (0 = no cut), then to the smallest set whose probability
/// reaches <see cref="TopP"/> (1 = no cut), and sampled with random numbers derived from <see cref="Seed"/>.
/// </summary>
public sealed record SamplingConfig
{
    /// <summary>The largest temperature accepted.</summary>
    public const float MaxTemperature = 100f;

    /// <summary>Greedy decoding.</summary>
    public static SamplingConfig Greedy { get; } = new();

    /// <summary>Softmax temperature; 0 is greedy.</summary>
    public float Temperature { get; init; }

    /// <summary>Keep the K most likely tokens (0: all).</summary>
    public int TopK { get; init; }

    /// <summary>Keep the smallest set of most likely tokens whose probability reaches P (1: all).</summary>
    public float TopP { get; init; } = 1f;

    /// <summary>The random seed; with it, a token's random numbers depend only on its position.</summary>
    public ulong Seed { get; init; }

    /// <summary>True when the temperature is 0: the arg-max is taken.</summary>
    public bool IsGreedy => Temperature == 0f;

    /// <summary>Why the values are invalid, or null when they are valid.</summary>
    public string? Validate()
    {
        if (!(Temperature >= 0f && Temperature <= MaxTemperature))
        {
            return $"temperature {Temperature.ToString(CultureInfo.InvariantCulture)} is out of range: use 0 (greedy) to {MaxTemperature.ToString(CultureInfo.InvariantCulture)}";
        }

        if (TopK < 0)
        {
            return $"top_k {TopK} is out of range: use 0 (no cut) or a positive count";
        }

        if (!(TopP > 0f && TopP <= 1f))
        {
            return $"top_p {TopP.ToString(CultureInfo.InvariantCulture)} is out of range: use a value in (0, 1]";
        }

        return null;
    }

    /// <summary>Throws <see cref="ArgumentException"/> when <see cref="Validate"/> finds a problem.</summary>
    public SamplingConfig EnsureValid() => Validate() is { } problem ? throw new ArgumentException(problem) : this;

    /// <inheritdoc/>
    public override string ToString() => IsGreedy
        ? "greedy"
        : string.Create(CultureInfo.InvariantCulture, $"temperature={Temperature} top_k={TopK} top_p={TopP} seed={Seed}");
}
