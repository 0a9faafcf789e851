using System.Net;
using SpecEdge.LinkEmulator;

if (args.Length == 0 || args.Contains("--help") || args.Contains("-h"))
{
    Console.WriteLine("""
        specedge-link: a TCP relay that emulates a network link between an edge client and a verifier.

        Usage: specedge-link --target HOST:PORT [--listen HOST:PORT] [--link SPEC]

          --target HOST:PORT   where to forward (the verifier)
          --listen HOST:PORT   where to accept connections (default 127.0.0.1:50061)
          --link SPEC          e.g. rtt=50ms,jitter=5ms,bw=10mbit; keys: rtt, delay, up-delay, down-delay, jitter,
                               bw, up-bw, down-bw, stall=DURATION/EVERY (default: ideal)
        """);
    return args.Length == 0 ? 2 : 0;
}

string? Value(string name)
{
    var i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
}

foreach (var arg in args.Where(a => a.StartsWith("--", StringComparison.Ordinal)))
{
    if (arg is not ("--target" or "--listen" or "--link"))
    {
        Console.Error.WriteLine($"specedge-link: error: unknown option {arg} (see --help)");
        return 2;
    }
}

try
{
    var target = ParseEndPoint(Value("--target") ?? throw new FormatException("--target HOST:PORT is required"), "--target");
    var listen = ParseEndPoint(Value("--listen") ?? "127.0.0.1:50061", "--listen");
    var profile = LinkProfile.Parse(Value("--link") ?? "ideal");
    await using var relay = LinkRelay.Start(target, profile, listen as IPEndPoint ?? throw new FormatException("--listen must be an IP address and port"));
    Console.WriteLine($"specedge-link: {relay.LocalEndPoint} -> {target} with {profile}; Ctrl+C to stop");
    var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
    Console.CancelKeyPress += (_, e) =>
    {
        e.Cancel = true;
        done.TrySetResult();
    };
    await done.Task;
    return 0;
}
catch (FormatException ex)
{
    Console.Error.WriteLine($"specedge-link: error: {ex.Message}");
    return 2;
}
catch (System.Net.Sockets.SocketException ex)
{
    Console.Error.WriteLine($"specedge-link: error: {ex.Message}");
    return 1;
}

static EndPoint ParseEndPoint(string text, string option)
{
    if (IPEndPoint.TryParse(text, out var ip) && ip.Port != 0)
    {
        return ip;
    }

    var colon = text.LastIndexOf(':');
    if (colon > 0 && int.TryParse(text[(colon + 1)..], out var port) && port is > 0 and < 65536)
    {
        return new DnsEndPoint(text[..colon], port);
    }

    throw new FormatException($"{option}: '{text}' is not HOST:PORT");
}
