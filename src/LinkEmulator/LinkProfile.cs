using System.Globalization;
using System.Text;

namespace SpecEdge.LinkEmulator;

/// <summary>Periodic stalls: every <see cref="Every"/>, the link passes nothing for <see cref="Duration"/>.</summary>
public sealed record StallSpec(TimeSpan Duration, TimeSpan Every);

/// <summary>How one direction of a link behaves.</summary>
/// <param name="Delay">One-way propagation delay.</param>
/// <param name="Jitter">Width of the uniform variation of the delay: each chunk's delay is Delay ± Jitter/2 (never negative, never reordering bytes).</param>
/// <param name="BitsPerSecond">Bandwidth cap; 0 is unlimited.</param>
public sealed record LinkDirection(TimeSpan Delay, TimeSpan Jitter, double BitsPerSecond)
{
    /// <summary>A direction with no delay, jitter, bandwidth cap or stalls.</summary>
    public static LinkDirection Ideal { get; } = new(TimeSpan.Zero, TimeSpan.Zero, 0);

    /// <summary>True when the direction changes nothing.</summary>
    public bool IsIdeal => Delay == TimeSpan.Zero && Jitter == TimeSpan.Zero && BitsPerSecond == 0;

    /// <summary>Time to put <paramref name="bytes"/> on the wire at the cap.</summary>
    public TimeSpan SerializationTime(int bytes) => BitsPerSecond > 0 ? TimeSpan.FromSeconds(bytes * 8.0 / BitsPerSecond) : TimeSpan.Zero;
}

/// <summary>
/// A network link between an edge (uplink: edge → verifier) and a verifier (downlink), parsed from specs such as
/// <c>rtt=50ms,jitter=5ms,bw=10mbit</c>. Keys: <c>rtt</c> (split evenly over the two directions), <c>delay</c>
/// (one-way, both directions), <c>up-delay</c>/<c>down-delay</c>, <c>jitter</c> (per direction),
/// <c>bw</c>/<c>up-bw</c>/<c>down-bw</c> (bit/s with k, m, g prefixes: <c>10mbit</c>, <c>500kbit</c>), and
/// <c>stall=DURATION/EVERY</c> (e.g. <c>stall=2s/10s</c>). Durations take us, ms or s.
/// </summary>
public sealed record LinkProfile(LinkDirection Uplink, LinkDirection Downlink, StallSpec? Stall = null)
{
    /// <summary>A link that changes nothing in either direction.</summary>
    public static LinkProfile Ideal { get; } = new(LinkDirection.Ideal, LinkDirection.Ideal);

    /// <summary>The round trip both directions' delays add up to.</summary>
    public TimeSpan RoundTrip => Uplink.Delay + Downlink.Delay;

    /// <summary>True when neither direction changes anything.</summary>
    public bool IsIdeal => Uplink.IsIdeal && Downlink.IsIdeal && Stall is null;

    /// <summary>Parses a link spec.</summary>
    /// <exception cref="FormatException">An unknown key or a malformed value, named in the message.</exception>
    public static LinkProfile Parse(string spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        var up = LinkDirection.Ideal;
        var down = LinkDirection.Ideal;
        StallSpec? stall = null;
        if (spec.Trim() is "" or "none" or "ideal")
        {
            return Ideal;
        }

        foreach (var part in spec.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            var pair = part.Split('=', 2, StringSplitOptions.TrimEntries);
            if (pair.Length != 2 || pair[1].Length == 0)
            {
                throw new FormatException($"link spec '{spec}': '{part}' is not key=value");
            }

            var (key, value) = (pair[0].ToLowerInvariant(), pair[1]);
            switch (key)
            {
                case "rtt":
                    var half = ParseDuration(value, key, spec) / 2;
                    up = up with { Delay = half };
                    down = down with { Delay = half };
                    break;
                case "delay":
                    var oneWay = ParseDuration(value, key, spec);
                    up = up with { Delay = oneWay };
                    down = down with { Delay = oneWay };
                    break;
                case "up-delay":
                    up = up with { Delay = ParseDuration(value, key, spec) };
                    break;
                case "down-delay":
                    down = down with { Delay = ParseDuration(value, key, spec) };
                    break;
                case "jitter":
                    var jitter = ParseDuration(value, key, spec);
                    up = up with { Jitter = jitter };
                    down = down with { Jitter = jitter };
                    break;
                case "bw":
                    var bw = ParseBandwidth(value, key, spec);
                    up = up with { BitsPerSecond = bw };
                    down = down with { BitsPerSecond = bw };
                    break;
                case "up-bw":
                    up = up with { BitsPerSecond = ParseBandwidth(value, key, spec) };
                    break;
                case "down-bw":
                    down = down with { BitsPerSecond = ParseBandwidth(value, key, spec) };
                    break;
                case "stall":
                    var times = value.Split('/', 2);
                    if (times.Length != 2)
                    {
                        throw new FormatException($"link spec '{spec}': stall takes DURATION/EVERY, e.g. stall=2s/10s");
                    }

                    stall = new StallSpec(ParseDuration(times[0], key, spec), ParseDuration(times[1], key, spec));
                    if (stall.Every <= stall.Duration)
                    {
                        throw new FormatException($"link spec '{spec}': a stall must be shorter than its period");
                    }

                    break;
                default:
                    throw new FormatException($"link spec '{spec}': unknown key '{key}' (use rtt, delay, up-delay, down-delay, jitter, bw, up-bw, down-bw, stall)");
            }
        }

        return new LinkProfile(up, down, stall);
    }

    /// <summary>Parses a duration such as <c>25ms</c>, <c>1.5s</c> or <c>300us</c>.</summary>
    public static TimeSpan ParseDuration(string text, string key, string spec)
    {
        var (number, unit) = Split(text);
        if (!double.TryParse(number, NumberStyles.Float, CultureInfo.InvariantCulture, out var value) || value < 0 || !double.IsFinite(value))
        {
            throw new FormatException($"link spec '{spec}': {key}={text} is not a non-negative duration such as 25ms");
        }

        return unit switch
        {
            "us" => TimeSpan.FromMicroseconds(value),
            "ms" or "" => TimeSpan.FromMilliseconds(value),
            "s" => TimeSpan.FromSeconds(value),
            _ => throw new FormatException($"link spec '{spec}': {key}={text} has an unknown unit '{unit}' (use us, ms or s)"),
        };
    }

    private static double ParseBandwidth(string text, string key, string spec)
    {
        var (number, unit) = Split(text);
        if (!double.TryParse(number, NumberStyles.Float, CultureInfo.InvariantCulture, out var value) || value <= 0 || !double.IsFinite(value))
        {
            throw new FormatException($"link spec '{spec}': {key}={text} is not a positive bandwidth such as 10mbit");
        }

        return unit switch
        {
            "bit" or "bps" or "" => value,
            "kbit" or "kbps" => value * 1e3,
            "mbit" or "mbps" => value * 1e6,
            "gbit" or "gbps" => value * 1e9,
            _ => throw new FormatException($"link spec '{spec}': {key}={text} has an unknown unit '{unit}' (use kbit, mbit or gbit)"),
        };
    }

    private static (string Number, string Unit) Split(string text)
    {
        var i = 0;
        while (i < text.Length && (char.IsDigit(text[i]) || text[i] == '.'))
        {
            i++;
        }

        return (text[..i], text[i..].Trim().ToLowerInvariant());
    }

    /// <summary>The profile in the link-spec syntax it parses from.</summary>
    public override string ToString()
    {
        if (IsIdeal)
        {
            return "ideal";
        }

        var text = new StringBuilder();
        text.Append(CultureInfo.InvariantCulture, $"rtt={RoundTrip.TotalMilliseconds:0.###}ms");
        if (Uplink.Jitter > TimeSpan.Zero)
        {
            text.Append(CultureInfo.InvariantCulture, $",jitter={Uplink.Jitter.TotalMilliseconds:0.###}ms");
        }

        if (Uplink.BitsPerSecond > 0 || Downlink.BitsPerSecond > 0)
        {
            text.Append(Uplink.BitsPerSecond == Downlink.BitsPerSecond
                ? $",bw={Bandwidth(Uplink.BitsPerSecond)}"
                : $",up-bw={Bandwidth(Uplink.BitsPerSecond)},down-bw={Bandwidth(Downlink.BitsPerSecond)}");
        }

        if (Stall is not null)
        {
            text.Append(CultureInfo.InvariantCulture, $",stall={Stall.Duration.TotalMilliseconds:0}ms/{Stall.Every.TotalMilliseconds:0}ms");
        }

        return text.ToString();
    }

    private static string Bandwidth(double bps) => bps switch
    {
        0 => "unlimited",
        >= 1e9 => string.Create(CultureInfo.InvariantCulture, $"{bps / 1e9:0.###}gbit"),
        >= 1e6 => string.Create(CultureInfo.InvariantCulture, $"{bps / 1e6:0.###}mbit"),
        >= 1e3 => string.Create(CultureInfo.InvariantCulture, $"{bps / 1e3:0.###}kbit"),
        _ => string.Create(CultureInfo.InvariantCulture, $"{bps:0}bit"),
    };
}
