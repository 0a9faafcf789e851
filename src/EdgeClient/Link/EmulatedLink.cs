using System.Collections.Concurrent;
using System.Net.Sockets;
using SpecEdge.EdgeClient.Client;
using SpecEdge.LinkEmulator;

namespace SpecEdge.EdgeClient.Link;

/// <summary>
/// The link emulator on an edge's verifier connections, through <see cref="EdgeClientOptions.ConnectionHook"/>: each
/// verifier address gets its own relay with the profile's delay, jitter and bandwidth, and the channel's handler
/// connects to the relay instead of the verifier (TLS still names the verifier). The client library knows nothing of
/// it; <c>--link</c>, the demo, the benchmarks and the tests plug it in.
/// </summary>
public sealed class EmulatedLink
{
    private readonly ConcurrentQueue<LinkRelay> _relays = new();
    private readonly TimeProvider _time;

    /// <summary>A link with <paramref name="profile"/>; relays start when the client connects.</summary>
    public EmulatedLink(LinkProfile profile, TimeProvider? time = null)
    {
        Profile = profile;
        _time = time ?? TimeProvider.System;
    }

    /// <summary>The emulated link.</summary>
    public LinkProfile Profile { get; }

    /// <summary>The relay in front of the primary verifier, once connected.</summary>
    public LinkRelay? Relay => _relays.TryPeek(out var first) ? first : null;

    /// <summary><paramref name="options"/> with <paramref name="link"/> on its verifier connections (unchanged for none or an ideal link).</summary>
    public static EdgeClientOptions Apply(EdgeClientOptions options, LinkProfile? link) =>
        link is null || link.IsIdeal ? options : new EmulatedLink(link, options.Time).ApplyTo(options);

    /// <summary><paramref name="options"/> with this link on its verifier connections.</summary>
    public EdgeClientOptions ApplyTo(EdgeClientOptions options) => options with { ConnectionHook = Hook, ConnectionLabel = Profile.ToString() };

    private IAsyncDisposable Hook(Uri server, SocketsHttpHandler handler)
    {
        var relay = LinkRelay.Start(server, Profile, time: _time);
        _relays.Enqueue(relay);
        handler.ConnectCallback = async (_, cancellationToken) =>
        {
            var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            try
            {
                await socket.ConnectAsync(relay.LocalEndPoint, cancellationToken).ConfigureAwait(false);
                return new NetworkStream(socket, ownsSocket: true);
            }
            catch
            {
                socket.Dispose();
                throw;
            }
        };
        return relay;
    }
}
