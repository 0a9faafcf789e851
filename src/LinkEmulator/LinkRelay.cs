using System.Buffers;
using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Threading.Channels;

namespace SpecEdge.LinkEmulator;

/// <summary>Byte and connection counts of a relay: bytes read from each side, and bytes delivered to the other.</summary>
public sealed record LinkStats(long BytesUp, long BytesDown, long DeliveredUp, long DeliveredDown, int ConnectionsAccepted, int ConnectionsOpen);

/// <summary>
/// A TCP relay that emulates a network link: every chunk read from one side is delivered to the other after the
/// direction's serialization time (bandwidth cap, queued behind earlier chunks), its one-way delay and jitter, and any
/// stall in progress. Bytes are never reordered. The edge connects to <see cref="LocalEndPoint"/>; the relay connects
/// on to the target. The profile can change while connections are open, and tests can stall the link or drop every
/// connection on demand.
/// </summary>
public sealed class LinkRelay : IAsyncDisposable
{
    private const int ChunkSize = 16 * 1024;

    /// <summary>Chunks one direction may hold in flight; a full queue stops reading (TCP back-pressure) rather than grow.</summary>
    private const int QueueCapacity = 1024;

    private readonly Socket _listener;
    private readonly EndPoint _target;
    private readonly TimeProvider _time;
    private readonly CancellationTokenSource _stop = new();
    private readonly ConcurrentDictionary<Connection, byte> _connections = new();
    private readonly long _started;
    private readonly Random _random;
    private readonly Lock _randomLock = new();
    private readonly Task _acceptLoop;
    private long _stallUntilTicks;
    private long _bytesUp;
    private long _bytesDown;
    private long _deliveredUp;
    private long _deliveredDown;
    private int _accepted;

    private LinkRelay(Socket listener, EndPoint target, LinkProfile profile, TimeProvider time, int seed)
    {
        _listener = listener;
        _target = target;
        Profile = profile;
        _time = time;
        _random = new Random(seed);
        _started = time.GetTimestamp();
        _acceptLoop = AcceptAsync();
    }

    /// <summary>The address the edge should connect to.</summary>
    public IPEndPoint LocalEndPoint => (IPEndPoint)_listener.LocalEndPoint!;

    /// <summary><c>http://host:port</c> of <see cref="LocalEndPoint"/>.</summary>
    public Uri HttpAddress => new($"http://{LocalEndPoint}");

    /// <summary>The link's behaviour; applies to chunks read after it changes.</summary>
    public LinkProfile Profile { get; set; }

    /// <summary>Bytes, connections and drops the relay has seen.</summary>
    public LinkStats Stats => new(Interlocked.Read(ref _bytesUp), Interlocked.Read(ref _bytesDown), Interlocked.Read(ref _deliveredUp), Interlocked.Read(ref _deliveredDown), Volatile.Read(ref _accepted), _connections.Count);

    /// <summary>Starts a relay listening on <paramref name="listen"/> (loopback, ephemeral port by default) and forwarding to <paramref name="target"/>.</summary>
    public static LinkRelay Start(EndPoint target, LinkProfile profile, IPEndPoint? listen = null, TimeProvider? time = null, int seed = 1)
    {
        var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            listener.Bind(listen ?? new IPEndPoint(IPAddress.Loopback, 0));
            listener.Listen(128);
            return new LinkRelay(listener, target, profile, time ?? TimeProvider.System, seed);
        }
        catch
        {
            listener.Dispose();
            throw;
        }
    }

    /// <summary>A relay in front of an HTTP address (<c>http://host:port</c>).</summary>
    public static LinkRelay Start(Uri target, LinkProfile profile, IPEndPoint? listen = null, TimeProvider? time = null, int seed = 1) =>
        Start(new DnsEndPoint(target.Host, target.Port), profile, listen, time, seed);

    /// <summary>Stops delivery in both directions for <paramref name="duration"/> from now (bytes wait, nothing is lost).</summary>
    public void Stall(TimeSpan duration)
    {
        var until = (_time.GetElapsedTime(_started) + duration).Ticks;
        long current;
        do
        {
            current = Interlocked.Read(ref _stallUntilTicks);
        }
        while (until > current && Interlocked.CompareExchange(ref _stallUntilTicks, until, current) != current);
    }

    /// <summary>Resets every open connection (both sides see the connection break).</summary>
    /// <returns>How many connections were dropped.</returns>
    public int DropConnections()
    {
        var dropped = 0;
        foreach (var connection in _connections.Keys)
        {
            connection.Abort();
            dropped++;
        }

        return dropped;
    }

    /// <summary>Stops listening and closes every relayed connection.</summary>
    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        _listener.Dispose();
        DropConnections();
        try
        {
            await _acceptLoop.ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is OperationCanceledException or SocketException or ObjectDisposedException)
        {
        }

        _stop.Dispose();
    }

    private async Task AcceptAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await _listener.AcceptAsync(_stop.Token).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                return;
            }

            Interlocked.Increment(ref _accepted);
            _ = RunConnectionAsync(client);
        }
    }

    private async Task RunConnectionAsync(Socket client)
    {
        client.NoDelay = true;
        var upstream = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        var connection = new Connection(client, upstream);
        _connections[connection] = 0;
        try
        {
            await upstream.ConnectAsync(_target, _stop.Token).ConfigureAwait(false);
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
            var up = PumpAsync(client, upstream, uplink: true, connection, linked.Token);
            var down = PumpAsync(upstream, client, uplink: false, connection, linked.Token);
            await Task.WhenAll(up, down).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is OperationCanceledException or SocketException or ObjectDisposedException or IOException)
        {
        }
        finally
        {
            _connections.TryRemove(connection, out _);
            connection.Abort();
        }
    }

    private async Task PumpAsync(Socket source, Socket destination, bool uplink, Connection connection, CancellationToken cancellationToken)
    {
        var queue = Channel.CreateBounded<(byte[] Buffer, int Count, TimeSpan Release)>(new BoundedChannelOptions(QueueCapacity) { SingleReader = true, SingleWriter = true });
        var writer = DeliverAsync(queue.Reader, destination, uplink, connection, cancellationToken);
        var lastWireEnd = TimeSpan.Zero;
        var lastRelease = TimeSpan.Zero;
        try
        {
            while (true)
            {
                var buffer = ArrayPool<byte>.Shared.Rent(ChunkSize);
                int count;
                try
                {
                    count = await source.ReceiveAsync(buffer.AsMemory(0, ChunkSize), SocketFlags.None, cancellationToken).ConfigureAwait(false);
                }
                catch
                {
                    ArrayPool<byte>.Shared.Return(buffer);
                    throw;
                }

                if (count == 0)
                {
                    ArrayPool<byte>.Shared.Return(buffer);
                    break;
                }

                Interlocked.Add(ref uplink ? ref _bytesUp : ref _bytesDown, count);
                var profile = Profile;
                var direction = uplink ? profile.Uplink : profile.Downlink;
                var now = _time.GetElapsedTime(_started);
                var wireStart = now > lastWireEnd ? now : lastWireEnd;
                lastWireEnd = wireStart + direction.SerializationTime(count);
                var release = lastWireEnd + direction.Delay + Jitter(direction.Jitter);
                if (release < lastRelease)
                {
                    release = lastRelease;
                }

                release = AfterStalls(release, profile.Stall);
                lastRelease = release;
                await queue.Writer.WriteAsync((buffer, count, release), cancellationToken).ConfigureAwait(false);
            }

            queue.Writer.TryComplete();
            await writer.ConfigureAwait(false);
            destination.Shutdown(SocketShutdown.Send);
        }
        catch (Exception ex)
        {
            queue.Writer.TryComplete(ex);
            connection.Abort();
            throw;
        }
    }

    private async Task DeliverAsync(ChannelReader<(byte[] Buffer, int Count, TimeSpan Release)> queue, Socket destination, bool uplink, Connection connection, CancellationToken cancellationToken)
    {
        try
        {
            await foreach (var (buffer, count, release) in queue.ReadAllAsync(cancellationToken).ConfigureAwait(false))
            {
                try
                {
                    // A stall that began after the chunk was queued holds it back too.
                    var due = AfterManualStall(release);
                    var wait = due - _time.GetElapsedTime(_started);
                    if (wait > TimeSpan.Zero)
                    {
                        await Task.Delay(wait, _time, cancellationToken).ConfigureAwait(false);
                    }

                    await destination.SendAsync(buffer.AsMemory(0, count), SocketFlags.None, cancellationToken).ConfigureAwait(false);
                    Interlocked.Add(ref uplink ? ref _deliveredUp : ref _deliveredDown, count);
                }
                finally
                {
                    ArrayPool<byte>.Shared.Return(buffer);
                }
            }
        }
        catch
        {
            connection.Abort();
            throw;
        }
    }

    private TimeSpan Jitter(TimeSpan width)
    {
        if (width <= TimeSpan.Zero)
        {
            return TimeSpan.Zero;
        }

        double u;
        lock (_randomLock)
        {
            u = _random.NextDouble();
        }

        return TimeSpan.FromTicks((long)((u - 0.5) * width.Ticks));
    }

    private TimeSpan AfterStalls(TimeSpan release, StallSpec? stall)
    {
        if (stall is not null)
        {
            var intoPeriod = TimeSpan.FromTicks(release.Ticks % stall.Every.Ticks);
            if (intoPeriod < stall.Duration)
            {
                release += stall.Duration - intoPeriod;
            }
        }

        return AfterManualStall(release);
    }

    private TimeSpan AfterManualStall(TimeSpan release)
    {
        var until = TimeSpan.FromTicks(Interlocked.Read(ref _stallUntilTicks));
        return release < until ? until : release;
    }

    private sealed class Connection(Socket client, Socket upstream)
    {
        private int _aborted;

        public void Abort()
        {
            if (Interlocked.Exchange(ref _aborted, 1) == 1)
            {
                return;
            }

            foreach (var socket in new[] { client, upstream })
            {
                try
                {
                    socket.LingerState = new LingerOption(true, 0);
                    socket.Close();
                }
                catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
                {
                }
            }
        }
    }
}
