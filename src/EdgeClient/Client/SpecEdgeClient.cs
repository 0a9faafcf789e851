using System.Runtime.CompilerServices;
using Grpc.Core;
using Grpc.Net.Client;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using SpecEdge.EdgeClient.Decoding;
using SpecEdge.EdgeClient.Drafting;
using SpecEdge.LinkEmulator;
using SpecEdge.Protocol.V1;
using SpecEdge.Shared.Models;
using SpecEdge.Shared.Models.Conversion;
using SpecEdge.Shared.Runtime;
using SpecEdge.Shared.Tokenization;

namespace SpecEdge.EdgeClient.Client;

/// <summary>
/// The edge side of SpecEdge for other .NET code: a draft model on this device and a connection to a verifier.
/// <see cref="Generate"/> returns a <see cref="Generation"/>, an <see cref="IAsyncEnumerable{T}"/> of committed tokens.
/// One generation at a time per client (the draft model's cache is the client's).
/// </summary>
/// <example>
/// <code>
/// await using var client = await SpecEdgeClient.ConnectAsync(new EdgeClientOptions { Server = new("http://gpu:50051"), DraftModel = "models/draft" });
/// var generation = client.Generate(new GenerationRequest { PromptText = "Once upon a time", MaxNewTokens = 64 });
/// await foreach (var token in generation) { Console.Write(token.Text); }
/// Console.WriteLine(generation.Report!.LatencyMs.PerToken);
/// </code>
/// </example>
public sealed class SpecEdgeClient : IAsyncDisposable
{
    private readonly EdgeClientOptions _options;
    private readonly GrpcChannel? _channel;
    private readonly LinkRelay? _relay;
    private readonly DraftEngine? _engine;
    private readonly Verifier.VerifierClient? _grpc;
    private int _running;

    private SpecEdgeClient(EdgeClientOptions options, LanguageModel? draft, GrpcChannel? channel, LinkRelay? relay, ModelDescription? verifier)
    {
        _options = options;
        Draft = draft;
        _channel = channel;
        _relay = relay;
        VerifierDescription = verifier;
        _grpc = channel is null ? null : new Verifier.VerifierClient(channel);
        _engine = draft is null ? null : new DraftEngine(draft, options.Profile, options.Time);
        Tokenizer = draft?.Tokenizer;
    }

    /// <summary>The draft model, when one was given.</summary>
    public LanguageModel? Draft { get; }

    /// <summary>What the verifier serves, when connected to one.</summary>
    public ModelDescription? VerifierDescription { get; }

    /// <summary>The tokenizer shared by draft and target (the draft's).</summary>
    public ITextTokenizer? Tokenizer { get; }

    /// <summary>The in-process link emulator in front of the verifier, when a link profile was given.</summary>
    public LinkRelay? Relay => _relay;

    /// <summary>
    /// Loads the draft model (converting a checkpoint on first use), connects to the verifier (through an emulated link
    /// when asked), reads its description and checks that draft and target share a vocabulary and tokenizer.
    /// </summary>
    /// <exception cref="ModelFormatException">The draft model folder is missing or invalid.</exception>
    /// <exception cref="VerifierUnavailableException">The verifier cannot be reached or is not a SpecEdge verifier.</exception>
    /// <exception cref="ModelMismatchException">Draft and target vocabularies or tokenizers differ.</exception>
    public static async Task<SpecEdgeClient> ConnectAsync(EdgeClientOptions options, ILogger? logger = null, CancellationToken cancellationToken = default)
    {
        logger ??= NullLogger.Instance;
        LanguageModel? draft = null;
        LinkRelay? relay = null;
        GrpcChannel? channel = null;
        try
        {
            if (options.DraftModel is { } draftDir)
            {
                var resolved = ModelResolver.Resolve(draftDir, null, options.CacheDirectory, message => logger.LogInformation("{Message}", message));
                draft = LanguageModel.Load(resolved, new RuntimeOptions { IntraOpThreads = options.IntraOpThreads }, logger);
            }

            ModelDescription? description = null;
            if (options.Server is { } server)
            {
                if (server.Scheme is not ("http" or "https") || string.IsNullOrEmpty(server.Host))
                {
                    throw new VerifierUnavailableException($"'{server}' is not a verifier address: use http://host:port or https://host:port");
                }

                var address = server;
                if (options.Link is { IsIdeal: false } link)
                {
                    relay = LinkRelay.Start(server, link, time: options.Time);
                    address = new UriBuilder(server) { Host = relay.LocalEndPoint.Address.ToString(), Port = relay.LocalEndPoint.Port }.Uri;
                }

                channel = CreateChannel(address, server, options);
                try
                {
                    description = await new Verifier.VerifierClient(channel).DescribeAsync(new DescribeRequest(), deadline: DateTime.UtcNow + options.ConnectTimeout, cancellationToken: cancellationToken).ConfigureAwait(false);
                }
                catch (RpcException ex)
                {
                    throw new VerifierUnavailableException($"cannot use the verifier at {server}: {Explain(ex)}", ex);
                }

                if (draft is not null)
                {
                    CheckCompatible(draft.Manifest, description);
                }
            }

            return new SpecEdgeClient(options, draft, channel, relay, description);
        }
        catch
        {
            draft?.Dispose();
            channel?.Dispose();
            if (relay is not null)
            {
                await relay.DisposeAsync().ConfigureAwait(false);
            }

            throw;
        }
    }

    /// <summary>A one-line reason for an RPC failure, naming the usual causes.</summary>
    public static string Explain(RpcException ex) => ex.StatusCode switch
    {
        StatusCode.Unavailable when Find<System.Net.Sockets.SocketException>(ex.Status.DebugException) is { } socket => $"unreachable ({socket.Message.ToLowerInvariant()})",
        StatusCode.Unavailable when Find<HttpRequestException>(ex.Status.DebugException) is { } http => $"unreachable ({http.Message})",
        StatusCode.Unavailable => $"unavailable ({ex.Status.Detail})",
        StatusCode.DeadlineExceeded => "no answer before the connect timeout",
        StatusCode.Unimplemented => "it does not serve the SpecEdge Verifier service (wrong address?)",
        StatusCode.Internal when ex.Status.Detail.Contains("HTTP", StringComparison.OrdinalIgnoreCase) => $"not a gRPC endpoint ({ex.Status.Detail})",
        _ => $"{ex.StatusCode}: {ex.Status.Detail}",
    };

    private static T? Find<T>(Exception? exception)
        where T : Exception
    {
        for (var e = exception; e is not null; e = e.InnerException)
        {
            if (e is T match)
            {
                return match;
            }
        }

        return null;
    }

    /// <summary>Starts a generation; enumerate the result to run it.</summary>
    /// <exception cref="ArgumentException">The request is invalid for this client (no prompt, no draft model for a drafting mode, no verifier for a verifying mode, bad values).</exception>
    public Generation Generate(GenerationRequest request)
    {
        if (request.MaxNewTokens < 1)
        {
            throw new ArgumentException($"max new tokens must be at least 1 (got {request.MaxNewTokens})", nameof(request));
        }

        if (request.DraftTokens < 1)
        {
            throw new ArgumentException($"draft tokens (γ) must be at least 1 (got {request.DraftTokens})", nameof(request));
        }

        if (request.Sampling.Validate() is { } problem)
        {
            throw new ArgumentException(problem, nameof(request));
        }

        if (request.Mode.UsesDraft() && _engine is null)
        {
            throw new ArgumentException($"mode {request.Mode.Name()} drafts: give a draft model", nameof(request));
        }

        if (request.Mode.UsesVerifier() && _grpc is null)
        {
            throw new ArgumentException($"mode {request.Mode.Name()} needs a verifier: give a server address", nameof(request));
        }

        var prompt = request.PromptIds ?? (request.PromptText is { } text
            ? Tokenizer?.Encode(text, addBos: true) ?? throw new ArgumentException("a text prompt needs the draft model's tokenizer: give a draft model or prompt ids", nameof(request))
            : throw new ArgumentException("give a prompt (text or token ids)", nameof(request)));
        if (prompt.Count == 0)
        {
            throw new ArgumentException("the prompt is empty", nameof(request));
        }

        var vocab = Draft?.VocabSize ?? VerifierDescription?.VocabSize ?? int.MaxValue;
        foreach (var id in prompt)
        {
            if ((uint)id.Value >= (uint)vocab)
            {
                throw new ArgumentException($"prompt token id {id.Value} is outside the vocabulary of {vocab}", nameof(request));
            }
        }

        return new Generation(request, (generation, cancellationToken) => RunAsync(generation, prompt, cancellationToken));
    }

    public async ValueTask DisposeAsync()
    {
        _engine?.Dispose();
        Draft?.Dispose();
        _channel?.Dispose();
        if (_relay is not null)
        {
            await _relay.DisposeAsync().ConfigureAwait(false);
        }
    }

    private async IAsyncEnumerable<CommittedToken> RunAsync(Generation generation, IReadOnlyList<TokenId> prompt, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        if (Interlocked.Exchange(ref _running, 1) == 1)
        {
            throw new InvalidOperationException("this client is already running a generation; run them one after another or use another client");
        }

        try
        {
            var request = generation.Request;
            var tokenizer = Tokenizer ?? new ByteTokenizer(Math.Max(256, VerifierDescription!.VocabSize));
            var tracker = new GenerationTracker(tokenizer, prompt, _options.Time);
            var tokens = request.Mode switch
            {
                GenerationMode.Cloud => new CloudRunner(_grpc!, request, tracker).RunAsync(cancellationToken),
                GenerationMode.Edge => new EdgeRunner(_engine!, request, tracker).RunAsync(cancellationToken),
                _ => new SpeculativeRunner(_grpc!, _engine!, request, tracker, VerifierDescription!, _options.Time).RunAsync(cancellationToken),
            };
            await foreach (var token in tokens.ConfigureAwait(false))
            {
                yield return token;
            }

            generation.Report = tracker.Build(request.Mode, ComputeLabel(request.Mode), request.Mode.UsesVerifier() ? _options.Link?.ToString() ?? "none" : "none");
        }
        finally
        {
            Volatile.Write(ref _running, 0);
        }
    }

    private string ComputeLabel(GenerationMode mode)
    {
        var edge = mode.UsesDraft() ? $"edge {_options.Profile.Label}" : null;
        var verifier = mode.UsesVerifier() && VerifierDescription is { } d
            ? $"verifier {(string.IsNullOrEmpty(d.ComputeProfile) ? "real compute" : d.ComputeProfile)} on {d.Device}"
            : null;
        return string.Join("; ", new[] { edge, verifier }.Where(s => s is not null));
    }

    private static GrpcChannel CreateChannel(Uri address, Uri server, EdgeClientOptions options)
    {
        var handler = new SocketsHttpHandler
        {
            ConnectTimeout = options.ConnectTimeout,
            EnableMultipleHttp2Connections = true,
            PooledConnectionIdleTimeout = Timeout.InfiniteTimeSpan,
            KeepAlivePingDelay = TimeSpan.FromSeconds(60),
            KeepAlivePingTimeout = TimeSpan.FromSeconds(30),
        };
        if (address != server)
        {
            // Through the link emulator: TLS still names the real server.
            handler.SslOptions.TargetHost = server.Host;
        }

        return GrpcChannel.ForAddress(address, new GrpcChannelOptions
        {
            HttpHandler = handler,
            ThrowOperationCanceledOnCancellation = true,
            MaxReceiveMessageSize = 16 * 1024 * 1024,
        });
    }

    private static void CheckCompatible(ModelManifest draft, ModelDescription target)
    {
        if (draft.VocabSize != target.VocabSize)
        {
            throw new ModelMismatchException($"the draft's vocabulary of {draft.VocabSize} tokens differs from the verifier's target ({target.ModelId}, {target.VocabSize} tokens): draft and target must share one vocabulary");
        }

        if (draft.Tokenizer.Sha256 is { } mine && target.TokenizerSha256.Length > 0 && mine != target.TokenizerSha256)
        {
            throw new ModelMismatchException($"the draft's tokenizer (sha256 {mine[..12]}…) differs from the target's ({target.TokenizerSha256[..Math.Min(12, target.TokenizerSha256.Length)]}…): draft and target must share one tokenizer");
        }
    }
}
