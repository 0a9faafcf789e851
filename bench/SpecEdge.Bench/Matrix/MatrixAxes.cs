using System.Globalization;
using SpecEdge.EdgeClient.Client;
using SpecEdge.LinkEmulator;

namespace SpecEdge.Bench.Matrix;

/// <summary>One emulated link of the matrix.</summary>
/// <param name="RoundTripMs">Round trip (split evenly over the two directions).</param>
/// <param name="BitsPerSecond">Bandwidth cap per direction; 0 is unlimited.</param>
/// <param name="JitterFraction">Jitter as a fraction of the round trip.</param>
internal sealed record LinkCell(double RoundTripMs, double BitsPerSecond, double JitterFraction)
{
    public string Label => string.Create(CultureInfo.InvariantCulture, $"rtt={RoundTripMs}ms bw={(BitsPerSecond == 0 ? "unlimited" : $"{BitsPerSecond / 1e6:0.###}mbit")} jitter={JitterFraction * 100:0}%");

    public LinkProfile ToProfile()
    {
        var parts = new List<string> { string.Create(CultureInfo.InvariantCulture, $"rtt={RoundTripMs}ms") };
        if (JitterFraction > 0)
        {
            parts.Add(string.Create(CultureInfo.InvariantCulture, $"jitter={RoundTripMs * JitterFraction / 2}ms"));
        }

        if (BitsPerSecond > 0)
        {
            parts.Add(string.Create(CultureInfo.InvariantCulture, $"bw={BitsPerSecond}bit"));
        }

        return LinkProfile.Parse(string.Join(",", parts));
    }
}

/// <summary>A decoding configuration of the matrix: a mode, and γ (0 for modes that do not draft; -1 for adaptive).</summary>
internal sealed record ModeCell(string Mode, int Gamma)
{
    public const int Adaptive = -1;

    public string Label => Mode is "cloud" or "edge" ? Mode : $"{Mode} γ={GammaLabel}";

    /// <summary>γ as the reports write it: "-" for modes that do not draft, "adaptive", or the number.</summary>
    public string GammaLabel => Mode is "cloud" or "edge" ? "-" : Gamma == Adaptive ? "adaptive" : Gamma.ToString(CultureInfo.InvariantCulture);

    public GenerationMode GenerationMode => GenerationModes.Parse(Mode == "adaptive" ? "speculative" : Mode)!.Value;
}

/// <summary>The axes of a matrix run.</summary>
internal sealed record MatrixAxes
{
    public required IReadOnlyList<string> Modes { get; init; }

    public required IReadOnlyList<double> RoundTripsMs { get; init; }

    public required IReadOnlyList<double> Bandwidths { get; init; }

    public required IReadOnlyList<double> JitterFractions { get; init; }

    /// <summary>γ values; <see cref="ModeCell.Adaptive"/> for adaptive.</summary>
    public required IReadOnlyList<int> Gammas { get; init; }

    public static MatrixAxes Full => new()
    {
        Modes = ["cloud", "edge", "speculative", "preemptive", "conditional", "proactive"],
        RoundTripsMs = [0, 10, 25, 50, 100, 200],
        Bandwidths = [0, 10e6, 1e6],
        JitterFractions = [0, 0.1],
        Gammas = [2, 4, 8, ModeCell.Adaptive],
    };

    public static MatrixAxes Quick => new()
    {
        Modes = ["cloud", "edge", "speculative", "preemptive", "conditional", "proactive"],
        RoundTripsMs = [0, 25, 100],
        Bandwidths = [0, 1e6],
        JitterFractions = [0],
        Gammas = [4, ModeCell.Adaptive],
    };

    public IEnumerable<LinkCell> Links() =>
        from rtt in RoundTripsMs
        from bw in Bandwidths
        from jitter in JitterFractions
        where !(rtt == 0 && jitter > 0)
        select new LinkCell(rtt, bw, jitter);

    /// <summary>Modes with every γ; cloud and edge once; adaptive only for speculative (it is a switch on every drafting mode, shown on the plain one).</summary>
    public IEnumerable<ModeCell> ModeCells()
    {
        foreach (var mode in Modes)
        {
            if (mode is "cloud" or "edge")
            {
                yield return new ModeCell(mode, 0);
                continue;
            }

            foreach (var gamma in Gammas)
            {
                yield return new ModeCell(mode, gamma);
            }
        }
    }

    public static IReadOnlyList<string> ParseModes(string text)
    {
        var modes = text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).ToList();
        foreach (var mode in modes)
        {
            if (GenerationModes.Parse(mode) is null)
            {
                throw new FormatException($"--modes: unknown mode '{mode}' (use {GenerationModes.AllNames})");
            }
        }

        return modes;
    }

    public static IReadOnlyList<double> ParseDoubles(string text, string option) =>
        [.. text.Split(',', StringSplitOptions.TrimEntries).Select(part => double.TryParse(part, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) && v >= 0 ? v : throw new FormatException($"{option}: '{part}' is not a non-negative number"))];

    public static IReadOnlyList<int> ParsePositiveInts(string text, string option) =>
        [.. text.Split(',', StringSplitOptions.TrimEntries).Select(part => int.TryParse(part, NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) && v >= 1 ? v : throw new FormatException($"{option}: '{part}' is not a positive integer"))];

    public static IReadOnlyList<double> ParseBandwidths(string text) =>
        [.. text.Split(',', StringSplitOptions.TrimEntries).Select(part => part is "unlimited" or "0" ? 0 : LinkProfile.Parse($"bw={part}").Uplink.BitsPerSecond)];

    public static IReadOnlyList<int> ParseGammas(string text) =>
        [.. text.Split(',', StringSplitOptions.TrimEntries).Select(part => part == "adaptive" ? ModeCell.Adaptive : int.TryParse(part, NumberStyles.Integer, CultureInfo.InvariantCulture, out var g) && g >= 1 ? g : throw new FormatException($"--gamma: '{part}' is not a positive integer or 'adaptive'"))];
}
