using SpecEdge.EdgeClient.Client;
using SpecEdge.Shared.Timing;
using SpecEdge.TestUtilities;

namespace SpecEdge.EdgeClient.Tests.Client;

/// <summary>The library checks its options itself (not only the CLI): a bad value is refused before anything loads, naming the option.</summary>
public sealed class EdgeClientOptionsTests
{
    private static readonly Uri Verifier = new("http://127.0.0.1:1");

    public static TheoryData<EdgeClientOptions, string> Invalid() => new()
    {
        { new EdgeClientOptions { Server = Verifier, RoundTimeout = TimeSpan.Zero }, "RoundTimeout must be positive" },
        { new EdgeClientOptions { Server = Verifier, MaxRetries = -1 }, "MaxRetries must be 0 or more" },
        { new EdgeClientOptions { Server = Verifier, RetryDelay = TimeSpan.FromSeconds(-1) }, "RetryDelay must not be negative" },
        { new EdgeClientOptions { Server = Verifier, BreakDuration = TimeSpan.Zero }, "BreakDuration must be positive" },
        { new EdgeClientOptions { Server = Verifier, DegradedAfter = TimeSpan.Zero }, "DegradedAfter must be positive" },
        { new EdgeClientOptions { Server = Verifier, ProbeInterval = TimeSpan.Zero }, "ProbeInterval must be positive" },
        { new EdgeClientOptions { Server = Verifier, ConnectTimeout = TimeSpan.FromSeconds(-2) }, "ConnectTimeout must be positive" },
        { new EdgeClientOptions { Server = Verifier, IntraOpThreads = -1 }, "IntraOpThreads" },
        { new EdgeClientOptions { Server = Verifier, ClientCertificatePath = "client.pem" }, "ClientCertificatePath and ClientKeyPath go together" },
        { new EdgeClientOptions { Server = Verifier, Profile = new ComputeProfile { Name = "bad", DraftMsPerToken = -1 } }, "Profile: compute profile 'bad'" },
        { new EdgeClientOptions { Server = new Uri("ftp://127.0.0.1:2121") }, "Server: 'ftp://127.0.0.1:2121/' is not a verifier address" },
        { new EdgeClientOptions { Server = Verifier, FallbackServers = [new Uri("ftp://h:1")] }, "FallbackServers: 'ftp://h:1/' is not a verifier address" },
        { new EdgeClientOptions(), "give a Server, a DraftModel, or both" },
    };

    [Theory]
    [MemberData(nameof(Invalid))]
    public async Task ConnectAsync_InvalidOption_ArgumentExceptionNamingIt(EdgeClientOptions options, string message)
    {
        var error = await Assert.ThrowsAsync<ArgumentException>(() => SpecEdgeClient.ConnectAsync(options)).DefaultTimeout();

        Assert.Contains(message, error.Message);
    }

    [Fact]
    public void Validate_Defaults_WithAServer_Valid() => Assert.Null(new EdgeClientOptions { Server = Verifier }.Validate());
}
