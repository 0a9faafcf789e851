using Microsoft.AspNetCore.Builder;
using SpecEdge.CloudVerifier.Configuration;
using SpecEdge.CloudVerifier.Hosting;
using SpecEdge.EdgeClient.Client;
using SpecEdge.EdgeClient.Link;
using SpecEdge.LinkEmulator;
using SpecEdge.TestUtilities;

namespace SpecEdge.EndToEnd.Tests;

/// <summary>A verifier on real Kestrel bound to 127.0.0.1:0 (plaintext HTTP/2 over a socket), serving a test pair.</summary>
public abstract class KestrelVerifier : IAsyncLifetime
{
    private readonly TempDirectory _temp = new("e2e");
    private WebApplication? _app;

    public TestPair Pair { get; private set; } = null!;

    public Uri Address { get; private set; } = null!;

    /// <summary>The running host (for its services, such as the batch scheduler's counters).</summary>
    public WebApplication App => _app ?? throw new InvalidOperationException("the verifier has not started");

    protected abstract TestPair CreatePair(string root);

    protected virtual void Configure(VerifierOptions options)
    {
    }

    public async Task InitializeAsync()
    {
        Pair = CreatePair(_temp.Path);
        (_app, Address) = await VerifierHost.StartLoopbackAsync(Pair.TargetDir, o =>
        {
            o.IntraOpThreads = 1;
            o.DefaultExitThreshold = 0;
            o.Limits.MaxDraftTokens = 8;
            Configure(o);
        }).DefaultTimeout();
    }

    public async Task DisposeAsync()
    {
        if (_app is not null)
        {
            await _app.StopAsync().DefaultTimeout();
            await _app.DisposeAsync();
        }

        _temp.Dispose();
    }

    public Task<SpecEdgeClient> ConnectAsync(LinkProfile? link = null) =>
        SpecEdgeClient.ConnectAsync(EmulatedLink.Apply(new EdgeClientOptions { Server = Address, DraftModel = Pair.DraftDir, IntraOpThreads = 1 }, link)).DefaultTimeout();
}

/// <summary>The byte-vocabulary pair, target cut at two exits that often disagree (layers 1 and 2 of 3).</summary>
public sealed class ByteVocabularyVerifier : KestrelVerifier
{
    protected override TestPair CreatePair(string root) => TestModels.WritePair(root, exits: [1, 2]);
}
