using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Time.Testing;
using SpecEdge.TestUtilities;

namespace SpecEdge.LinkEmulator.Tests;

/// <summary>The relay over real sockets; delays run on a fake clock, so "not yet delivered" is checked without sleeping.</summary>
public sealed class LinkRelayTests : IAsyncLifetime
{
    private readonly TcpListener _echo = new(IPAddress.Loopback, 0);
    private readonly CancellationTokenSource _stop = new();
    private Task _echoLoop = Task.CompletedTask;

    public Task InitializeAsync()
    {
        _echo.Start();
        _echoLoop = EchoAsync();
        return Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        await _stop.CancelAsync();
        _echo.Stop();
        await _echoLoop.WaitAsync(TestTimeouts.Default);
    }

    [Fact]
    public async Task Relay_Ideal_PassesBytesIntactAndInOrder()
    {
        await using var relay = LinkRelay.Start(_echo.LocalEndpoint, LinkProfile.Ideal);
        using var client = await ConnectAsync(relay);
        var data = new byte[1 << 20];
        new Random(5).NextBytes(data);

        var send = client.GetStream().WriteAsync(data).AsTask();
        var received = await ReadExactlyAsync(client, data.Length);
        await send.DefaultTimeout();

        Assert.Equal(data, received);
        Assert.Equal(data.Length, relay.Stats.BytesUp);
        Assert.Equal(data.Length, relay.Stats.DeliveredDown);
    }

    [Fact]
    public async Task Relay_Delay_HoldsBytesUntilTheDelayHasPassed()
    {
        var time = new FakeTimeProvider();
        var start = time.GetUtcNow();
        await using var relay = LinkRelay.Start(_echo.LocalEndpoint, LinkProfile.Parse("up-delay=100ms"), time: time);
        using var client = await ConnectAsync(relay);

        await client.GetStream().WriteAsync("ping"u8.ToArray());
        await Eventually(() => relay.Stats.BytesUp == 4);
        time.Advance(TimeSpan.FromMilliseconds(99));

        await Task.Delay(50);
        Assert.Equal(0, relay.Stats.DeliveredUp);
        time.Advance(TimeSpan.FromMilliseconds(1));
        await Eventually(() => relay.Stats.DeliveredUp == 4, () => time.Advance(TimeSpan.FromMilliseconds(1)));
        Assert.InRange(time.GetUtcNow() - start, TimeSpan.FromMilliseconds(100), TimeSpan.FromMilliseconds(110));
        Assert.Equal("ping"u8.ToArray(), await ReadExactlyAsync(client, 4));
    }

    [Fact]
    public async Task Relay_BandwidthCap_TakesSerializationTime()
    {
        var time = new FakeTimeProvider();
        var start = time.GetUtcNow();
        // 80 kbit/s: 1000 bytes take 100 ms on the wire.
        await using var relay = LinkRelay.Start(_echo.LocalEndpoint, LinkProfile.Parse("up-bw=80kbit"), time: time);
        using var client = await ConnectAsync(relay);

        await client.GetStream().WriteAsync(new byte[1000]);
        await Eventually(() => relay.Stats.BytesUp == 1000);
        time.Advance(TimeSpan.FromMilliseconds(99));

        // The socket may hand the relay the 1000 bytes in more than one chunk; an early chunk may go through, the last byte may not.
        await Task.Delay(50);
        Assert.True(relay.Stats.DeliveredUp < 1000, $"all {relay.Stats.DeliveredUp} bytes delivered before their serialization time");

        // A chunk whose timer is armed just as the fake clock moves waits one more step, so the clock is nudged in 1 ms steps.
        time.Advance(TimeSpan.FromMilliseconds(1));
        await Eventually(() => relay.Stats.DeliveredUp == 1000, () => time.Advance(TimeSpan.FromMilliseconds(1)));
        Assert.InRange(time.GetUtcNow() - start, TimeSpan.FromMilliseconds(100), TimeSpan.FromMilliseconds(110));
    }

    [Fact]
    public async Task Relay_Stall_HoldsEveryDirectionUntilItEnds()
    {
        var time = new FakeTimeProvider();
        var start = time.GetUtcNow();
        await using var relay = LinkRelay.Start(_echo.LocalEndpoint, LinkProfile.Ideal, time: time);
        using var client = await ConnectAsync(relay);
        relay.Stall(TimeSpan.FromSeconds(3));

        await client.GetStream().WriteAsync("abc"u8.ToArray());
        await Eventually(() => relay.Stats.BytesUp == 3);
        time.Advance(TimeSpan.FromSeconds(2.9));

        await Task.Delay(50);
        Assert.Equal(0, relay.Stats.DeliveredUp);
        time.Advance(TimeSpan.FromSeconds(0.1));
        await Eventually(() => relay.Stats.DeliveredUp == 3, () => time.Advance(TimeSpan.FromMilliseconds(1)));
        Assert.InRange(time.GetUtcNow() - start, TimeSpan.FromSeconds(3), TimeSpan.FromSeconds(3.01));
        Assert.Equal("abc"u8.ToArray(), await ReadExactlyAsync(client, 3));
    }

    [Fact]
    public async Task DropConnections_ClientSeesTheConnectionBreak()
    {
        await using var relay = LinkRelay.Start(_echo.LocalEndpoint, LinkProfile.Ideal);
        using var client = await ConnectAsync(relay);
        await client.GetStream().WriteAsync("x"u8.ToArray());
        await ReadExactlyAsync(client, 1);

        Assert.Equal(1, relay.DropConnections());

        var buffer = new byte[1];
        var broken = false;
        try
        {
            broken = await client.GetStream().ReadAsync(buffer).AsTask().DefaultTimeout() == 0;
        }
        catch (IOException)
        {
            broken = true;
        }

        Assert.True(broken);
    }

    private static async Task<TcpClient> ConnectAsync(LinkRelay relay)
    {
        var client = new TcpClient { NoDelay = true };
        await client.ConnectAsync(relay.LocalEndPoint).DefaultTimeout();
        return client;
    }

    private static async Task<byte[]> ReadExactlyAsync(TcpClient client, int count)
    {
        var buffer = new byte[count];
        await client.GetStream().ReadExactlyAsync(buffer).AsTask().DefaultTimeout();
        return buffer;
    }

    /// <summary>
    /// Polls until the condition holds. With a step (a nudge of the fake clock), the step runs every 200 polls: the relay
    /// arms a timer a moment after computing its wait, and a timer armed just after the clock moved fires one step late.
    /// </summary>
    private static async Task Eventually(Func<bool> condition, Action? step = null)
    {
        var deadline = DateTime.UtcNow + TestTimeouts.Default;
        var polls = 0;
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, "condition not met in time");
            await Task.Yield();
            await Task.Delay(1);
            if (step is not null && ++polls % 200 == 0)
            {
                step();
            }
        }
    }

    private async Task EchoAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            TcpClient connection;
            try
            {
                connection = await _echo.AcceptTcpClientAsync(_stop.Token);
            }
            catch (Exception ex) when (ex is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                return;
            }

            _ = Task.Run(async () =>
            {
                using (connection)
                {
                    try
                    {
                        await connection.GetStream().CopyToAsync(connection.GetStream(), _stop.Token);
                    }
                    catch (Exception ex) when (ex is OperationCanceledException or IOException or SocketException)
                    {
                    }
                }
            });
        }
    }
}
