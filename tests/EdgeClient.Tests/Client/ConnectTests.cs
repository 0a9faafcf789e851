using System.Net;
using System.Net.Sockets;
using SpecEdge.EdgeClient.Client;
using SpecEdge.TestUtilities;

namespace SpecEdge.EdgeClient.Tests.Client;

/// <summary>Connecting to something that is not a working verifier ends in a clear error, never a bare cancellation.</summary>
public sealed class ConnectTests
{
    [Fact]
    public async Task Connect_PeerAcceptsButNeverAnswers_UnavailableNamingTheTimeout()
    {
        // A real socket that accepts the connection and then stays silent: no HTTP/2 settings, no response.
        using var silent = new TcpListener(IPAddress.Loopback, 0);
        silent.Start();
        var port = ((IPEndPoint)silent.LocalEndpoint).Port;
        var accepting = silent.AcceptTcpClientAsync();

        var ex = await Assert.ThrowsAsync<VerifierUnavailableException>(() => SpecEdgeClient.ConnectAsync(new EdgeClientOptions
        {
            Server = new Uri($"http://127.0.0.1:{port}"),
            ConnectTimeout = TimeSpan.FromMilliseconds(300),
        }).DefaultTimeout());

        Assert.StartsWith($"cannot use the verifier at http://127.0.0.1:{port}/: ", ex.Message);
        Assert.Contains("0.3 s", ex.Message);
        using var accepted = await accepting.DefaultTimeout();
    }
}
