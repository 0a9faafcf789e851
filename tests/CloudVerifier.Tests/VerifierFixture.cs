using Grpc.Core;
using Grpc.Net.Client;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.TestHost;
using Microsoft.Extensions.Configuration;
using SpecEdge.CloudVerifier.Hosting;
using SpecEdge.Protocol.V1;
using SpecEdge.Shared.Runtime;
using SpecEdge.Shared.Tokenization;
using SpecEdge.TestUtilities;

namespace SpecEdge.CloudVerifier.Tests;

/// <summary>A verifier hosted in-process on ASP.NET Core's TestServer (real gRPC over HTTP/2 framing), with a test model pair.</summary>
public sealed class VerifierFixture : IAsyncLifetime
{
    public const int MaxDraftTokens = 8;
    public const int MaxPromptTokens = 64;
    public const int MaxSessions = 12;

    private readonly TempDirectory _temp = new("verifier-tests");
    private WebApplication? _app;

    public TestPair Pair { get; private set; } = null!;

    public GrpcChannel Channel { get; private set; } = null!;

    public Verifier.VerifierClient Client => new(Channel);

    public string TokenizerSha256 => Pair.Target.Config.VocabSize > 0 ? SpecEdge.Shared.Models.ModelManifest.Load(Pair.TargetDir).Tokenizer.Sha256! : string.Empty;

    public async Task InitializeAsync()
    {
        Pair = TestModels.WritePair(_temp.Path);
        _app = VerifierHost.Create([], builder =>
        {
            builder.WebHost.UseTestServer();
            builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?>
            {
                ["Logging:LogLevel:Default"] = "Warning",
                ["Verifier:Model"] = Pair.TargetDir,
                ["Verifier:IntraOpThreads"] = "1",
                ["Verifier:DefaultExitThreshold"] = "0",
                ["Verifier:Limits:MaxDraftTokens"] = MaxDraftTokens.ToString(System.Globalization.CultureInfo.InvariantCulture),
                ["Verifier:Limits:MaxPromptTokens"] = MaxPromptTokens.ToString(System.Globalization.CultureInfo.InvariantCulture),
                ["Verifier:Limits:MaxSessions"] = MaxSessions.ToString(System.Globalization.CultureInfo.InvariantCulture),
            });
        });
        VerifierHost.LoadModel(_app);
        await _app.StartAsync().DefaultTimeout();
        Channel = GrpcChannel.ForAddress("http://verifier", new GrpcChannelOptions { HttpHandler = _app.GetTestServer().CreateHandler() });
    }

    public async Task DisposeAsync()
    {
        Channel?.Dispose();
        if (_app is not null)
        {
            await _app.StopAsync().DefaultTimeout();
            await _app.DisposeAsync();
        }

        _temp.Dispose();
    }

    /// <summary>The target's greedy continuation, computed locally without the verifier.</summary>
    public IReadOnlyList<int> LocalGreedy(IReadOnlyList<int> prompt, int count)
    {
        using var model = TestModels.Load(Pair.TargetDir);
        return TargetOnlyDecoding.Greedy(model, [.. prompt.Select(t => new TokenId(t))], count).Select(t => t.Value).ToList();
    }

    public Open GreedyOpen(IEnumerable<int> prompt, int maxNewTokens = 16)
    {
        var open = new Open { MaxNewTokens = maxNewTokens, Sampling = new Sampling(), DraftVocabSize = Pair.Target.Config.VocabSize, DraftTokenizerSha256 = TokenizerSha256 };
        open.PromptIds.AddRange(prompt);
        return open;
    }
}

/// <summary>One raw Decode stream, for sending exactly the messages a test wants; every read is bounded.</summary>
public sealed class RawStream : IAsyncDisposable
{
    private readonly AsyncDuplexStreamingCall<EdgeMessage, VerifierMessage> _call;

    public RawStream(Verifier.VerifierClient client)
    {
        _call = client.Decode();
    }

    /// <summary>
    /// Writes a message. A write that races the verifier ending the call fails (Cancelled: its flush is cut off) while
    /// the call's real status waits in the response stream; the write's failure is let go, and the next read reports
    /// the status, as a client reading its responses sees it.
    /// </summary>
    public async Task SendAsync(EdgeMessage message)
    {
        try
        {
            await _call.RequestStream.WriteAsync(message).DefaultTimeout();
        }
        catch (RpcException)
        {
        }
    }

    public Task SendAsync(Open open) => SendAsync(new EdgeMessage { Open = open });

    public Task SendAsync(Draft draft) => SendAsync(new EdgeMessage { Draft = draft });

    public async Task<VerifierMessage> ReadAsync()
    {
        Assert.True(await _call.ResponseStream.MoveNext(CancellationToken.None).DefaultTimeout(), "the verifier ended the stream");
        return _call.ResponseStream.Current;
    }

    /// <summary>Reads until the final verdict of <paramref name="round"/>, skipping early verdicts.</summary>
    public async Task<FinalVerdict> ReadFinalAsync(uint round)
    {
        while (true)
        {
            var message = await ReadAsync();
            if (message.KindCase == VerifierMessage.KindOneofCase.Early)
            {
                continue;
            }

            Assert.Equal(VerifierMessage.KindOneofCase.Final, message.KindCase);
            Assert.Equal(round, message.Final.Round);
            return message.Final;
        }
    }

    /// <summary>Reads until the stream ends with an error status, and returns it.</summary>
    public async Task<RpcException> ExpectErrorAsync()
    {
        while (true)
        {
            try
            {
                if (!await _call.ResponseStream.MoveNext(CancellationToken.None).DefaultTimeout())
                {
                    Assert.Fail("the stream ended without an error status");
                }
            }
            catch (RpcException ex)
            {
                return ex;
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            await _call.RequestStream.CompleteAsync().DefaultTimeout();
        }
        catch (Exception ex) when (ex is InvalidOperationException or RpcException or OperationCanceledException)
        {
        }

        _call.Dispose();
    }
}
