using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Grpc.Core;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using SpecEdge.EdgeClient.Decoding;
using SpecEdge.EdgeClient.Logging;
using SpecEdge.EdgeClient.Drafting;
using SpecEdge.EdgeClient.Transport;
using SpecEdge.Protocol.V1;
using SpecEdge.Shared.Models;
using SpecEdge.Shared.Protocol;
using SpecEdge.Shared.Models.Conversion;
using SpecEdge.Shared.Runtime;
using SpecEdge.Shared.Tokenization;

namespace SpecEdge.EdgeClient.Client;

/// <summary>
/// The edge side of SpecEdge for other .NET code: a draft model on this device and connections to one or more
/// verifiers. <see cref="Generate"/> returns a <see cref="Generation"/>, an <see cref="IAsyncEnumerable{T}"/> of
/// committed tokens. The edge owns the committed text: when a stream breaks, a verifier shuts down or a round times
/// out, the generation re-opens a session (on the same or the next verifier, with backoff, past open circuit breakers)
/// with the tokens committed so far and goes on, so nothing is lost or repeated. One generation at a time per client.
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
    private readonly IReadOnlyList<VerifierEndpoint> _endpoints;
    private readonly EndpointRing _ring;
    private readonly DraftEngine? _engine;
    private readonly ILogger _logger;
    private int _running;
    private ChatTemplate? _chatTemplate;
    private readonly Dictionary<(GenerationMode Mode, int Max, int Leaves), AdaptiveDraftLength> _adaptive = [];
    private readonly AutoModePolicy _auto = new();

    /// <summary>The largest γ auto mode's adaptive drafting may choose (the verifier's limit may be lower).</summary>
    public const int AutoMaxDraftTokens = 8;

    /// <summary>
    /// Leaves beside each draft in auto mode's drafting sessions when the request leaves it to the mode (token trees:
    /// in docs/benchmarks.md's runs auto with three leaves a draft was as fast as or faster than auto with chains in
    /// every cell; a verifier that takes no leaves gets chains).
    /// </summary>
    public const int AutoLeaves = 3;

    private SpecEdgeClient(EdgeClientOptions options, LanguageModel? draft, IReadOnlyList<VerifierEndpoint> endpoints, int first, ModelDescription? verifier, ILogger logger)
    {
        _options = options;
        Draft = draft;
        _endpoints = endpoints;
        _ring = new EndpointRing(endpoints, first);
        VerifierDescription = verifier;
        _engine = draft is null ? null : new DraftEngine(draft, options.Profile, options.Time);
        Tokenizer = draft?.Tokenizer;
        _logger = logger;
    }

    /// <summary>The draft model, when one was given.</summary>
    public LanguageModel? Draft { get; }

    /// <summary>What the verifier serves, when connected to one.</summary>
    public ModelDescription? VerifierDescription { get; }

    /// <summary>The tokenizer shared by draft and target (the draft's).</summary>
    public ITextTokenizer? Tokenizer { get; }

    /// <summary>
    /// The chat format conversations are rendered with: the draft model's chat template, or the built-in plain format
    /// when its folder has none.
    /// </summary>
    /// <exception cref="InvalidOperationException">No draft model was given.</exception>
    /// <exception cref="Shared.Models.UnsupportedModelException">The draft's template is of no family SpecEdge recognises.</exception>
    public ChatTemplate ChatTemplate => _chatTemplate ??= ChatTemplate.Load(Draft?.Directory ?? throw new InvalidOperationException("a chat template comes from the draft model's folder: give a draft model"));

    /// <summary>
    /// Loads the draft model (converting a checkpoint on first use), connects to the first verifier that answers
    /// (through an emulated link when asked), reads its description and checks that draft and target share a
    /// vocabulary and tokenizer.
    /// </summary>
    /// <exception cref="ModelFormatException">The draft model folder is missing or invalid.</exception>
    /// <exception cref="VerifierUnavailableException">No verifier can be reached, or one is not a SpecEdge verifier.</exception>
    /// <exception cref="ModelMismatchException">Draft and target vocabularies or tokenizers differ.</exception>
    /// <exception cref="ArgumentException">The options are invalid (<see cref="EdgeClientOptions.Validate"/> names the option).</exception>
    public static async Task<SpecEdgeClient> ConnectAsync(EdgeClientOptions options, ILogger? logger = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.Validate() is { } problem)
        {
            throw new ArgumentException(problem, nameof(options));
        }

        logger ??= NullLogger.Instance;
        LanguageModel? draft = null;
        var endpoints = new List<VerifierEndpoint>();
        try
        {
            if (options.DraftModel is { } draftDir)
            {
                var resolved = ModelResolver.Resolve(draftDir, null, options.CacheDirectory, message => EdgeLog.Converting(logger, message));
                draft = LanguageModel.Load(resolved, new RuntimeOptions { IntraOpThreads = options.IntraOpThreads }, logger);
            }

            foreach (var server in options.Servers)
            {
                endpoints.Add(VerifierEndpoint.Create(server, options));
            }

            ModelDescription? description = null;
            var first = 0;
            var problems = new List<string>();
            for (var i = 0; i < endpoints.Count && description is null; i++)
            {
                try
                {
                    description = await endpoints[i].DescribeAsync(options.ConnectTimeout, cancellationToken).ConfigureAwait(false);
                    first = i;
                }
                catch (RpcException ex) when (ex.StatusCode is not StatusCode.Unauthenticated)
                {
                    problems.Add($"cannot use the verifier at {endpoints[i].Address}: {Explain(ex)}");
                }
                catch (RpcException ex)
                {
                    throw new VerifierUnavailableException($"the verifier at {endpoints[i].Address} refused the API key: {ex.Status.Detail}", ex);
                }
            }

            if (endpoints.Count > 0 && description is null)
            {
                throw new VerifierUnavailableException(string.Join("; ", problems));
            }

            if (draft is not null && description is not null)
            {
                CheckCompatible(draft.Manifest, description);
            }

            return new SpecEdgeClient(options, draft, endpoints, first, description, logger);
        }
        catch
        {
            draft?.Dispose();
            foreach (var endpoint in endpoints)
            {
                await endpoint.DisposeAsync().ConfigureAwait(false);
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
        StatusCode.DeadlineExceeded => $"no answer before the deadline ({ex.Status.Detail})",
        StatusCode.Unimplemented => "it does not serve the SpecEdge Verifier service (wrong address?)",
        StatusCode.Internal when ex.Status.Detail.Contains("HTTP", StringComparison.OrdinalIgnoreCase) => $"not a gRPC endpoint ({ex.Status.Detail})",
        _ => $"{ex.StatusCode}: {ex.Status.Detail}",
    };

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

        if (request.Candidates is < 1 or > ProtocolLimits.MaxCandidates)
        {
            throw new ArgumentException($"candidates must be 1 to {ProtocolLimits.MaxCandidates} (got {request.Candidates})", nameof(request));
        }

        if (request.Leaves is < 0 or > ProtocolLimits.MaxLeafWidth)
        {
            throw new ArgumentException($"leaves must be 0 to {ProtocolLimits.MaxLeafWidth} per draft (got {request.Leaves})", nameof(request));
        }

        if (request.Sampling.Validate() is { } problem)
        {
            throw new ArgumentException(problem, nameof(request));
        }

        if (request.Mode.UsesDraft() && _engine is null)
        {
            throw new ArgumentException($"mode {request.Mode.Name()} drafts: give a draft model", nameof(request));
        }

        if (request.Mode.UsesVerifier() && _endpoints.Count == 0)
        {
            throw new ArgumentException($"mode {request.Mode.Name()} needs a verifier: give a server address", nameof(request));
        }

        if (request.StopSequences.Count > GenerationRequest.MaxStopSequences || request.StopSequences.Any(string.IsNullOrEmpty))
        {
            throw new ArgumentException($"stop sequences: at most {GenerationRequest.MaxStopSequences}, none empty (got {request.StopSequences.Count})", nameof(request));
        }

        var stops = request.StopSequences;
        IReadOnlyList<TokenId> prompt;
        if (request.PromptIds is { } ids)
        {
            prompt = ids;
        }
        else if (request.PromptText is { } text)
        {
            prompt = Tokenizer?.Encode(text, addBos: true) ?? throw new ArgumentException("a text prompt needs the draft model's tokenizer: give a draft model or prompt ids", nameof(request));
        }
        else if (request.Messages is { } messages)
        {
            if (Tokenizer is null)
            {
                throw new ArgumentException("a conversation needs the draft model's tokenizer and chat template: give a draft model", nameof(request));
            }

            if (messages.Count == 0)
            {
                throw new ArgumentException("the conversation has no messages", nameof(request));
            }

            // A rendered template writes its own beginning-of-sequence token. An end of turn written as text (the
            // built-in format) ends the generation as a stop sequence; the families' special end-of-turn tokens are
            // end-of-sequence ids already (their generation_config.json lists them).
            var template = ChatTemplate;
            prompt = Tokenizer.Encode(template.Render(messages, addGenerationPrompt: true), addBos: !template.WritesBos);
            if (template.Format == ChatFormat.Plain && template.EndOfTurn is { } endOfTurn && !stops.Contains(endOfTurn))
            {
                stops = [.. stops, endOfTurn];
            }
        }
        else
        {
            throw new ArgumentException("give a prompt (text, token ids or messages)", nameof(request));
        }

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

        return new Generation(request, (generation, cancellationToken) => RunAsync(generation, prompt, stops, cancellationToken));
    }

    /// <summary>Closes the connections and frees the draft model.</summary>
    public async ValueTask DisposeAsync()
    {
        _engine?.Dispose();
        Draft?.Dispose();
        foreach (var endpoint in _endpoints)
        {
            await endpoint.DisposeAsync().ConfigureAwait(false);
        }
    }

    private async IAsyncEnumerable<CommittedToken> RunAsync(Generation generation, IReadOnlyList<TokenId> prompt, IReadOnlyList<string> stops, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var filter = stops.Count > 0 ? new StopSequenceFilter(stops) : null;
        var request = generation.Request;
        GenerationTracker? tracker = null;
        var enumerator = RunUnfilteredAsync(request, prompt, t => tracker = generation.Tracker = t, cancellationToken).GetAsyncEnumerator(cancellationToken);
        using var failed = new ActivityOnFailure(() => tracker?.Activity);
        await using (enumerator.ConfigureAwait(false))
        {
            while (await enumerator.MoveNextAsync().ConfigureAwait(false))
            {
                if (filter is null)
                {
                    yield return enumerator.Current;
                    continue;
                }

                foreach (var token in filter.Push(enumerator.Current))
                {
                    yield return token;
                }

                if (filter.Stopped)
                {
                    // Leaving the enumeration closes the session; the tokens past the stop are committed but not delivered.
                    break;
                }
            }
        }

        if (filter is not null && !filter.Stopped)
        {
            foreach (var token in filter.Flush())
            {
                yield return token;
            }
        }

        generation.Report = tracker!.Build(request.Mode, ComputeLabel(request.Mode), request.Mode.UsesVerifier() ? _options.ConnectionLabel ?? "none" : "none");
        if (request.Mode == GenerationMode.Auto)
        {
            _auto.Learn(tracker.Rounds);
        }

        if (filter is { Stopped: true })
        {
            generation.Report = generation.Report with { Text = filter.Released.ToString(), FinishReason = "stop" };
        }

        EdgeTelemetry.GenerationEnded(generation.Report, tracker.Activity);
        tracker.Activity?.Dispose();
    }

    private async IAsyncEnumerable<CommittedToken> RunUnfilteredAsync(GenerationRequest request, IReadOnlyList<TokenId> prompt, Action<GenerationTracker> started, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        if (Interlocked.Exchange(ref _running, 1) == 1)
        {
            throw new InvalidOperationException("this client is already running a generation; run them one after another or use another client");
        }

        try
        {
            var tokenizer = Tokenizer ?? new ByteTokenizer(Math.Max(256, VerifierDescription!.VocabSize));
            var tracker = new GenerationTracker(tokenizer, prompt, _options.Time) { Activity = EdgeTelemetry.StartGeneration(request.Mode, prompt.Count) };
            tracker.InCloud = request.Mode == GenerationMode.Auto && _auto.StartInCloud();
            started(tracker);
            if (request.Mode == GenerationMode.Edge)
            {
                await foreach (var token in new EdgeRunner(_engine!, request, tracker).RunAsync(cancellationToken).ConfigureAwait(false))
                {
                    yield return token;
                }
            }
            else
            {
                // A producer runs the generation through retries and failovers; committed tokens flow to the caller.
                var committed = Channel.CreateUnbounded<CommittedToken>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
                using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                var supervisor = new GenerationSupervisor(_options, _ring, _engine, request, tracker, (int)Math.Min(VerifierDescription?.Limits.MaxSequenceLength ?? uint.MaxValue, int.MaxValue), committed.Writer, (endpoint, token) => Segment(request, tracker, endpoint, token), _logger);
                var producer = Task.Run(() => supervisor.RunAsync(stop.Token), CancellationToken.None);
                try
                {
                    await foreach (var token in committed.Reader.ReadAllAsync(cancellationToken).ConfigureAwait(false))
                    {
                        yield return token;
                    }
                }
                finally
                {
                    await stop.CancelAsync().ConfigureAwait(false);
                    await producer.ConfigureAwait(false);
                }
            }
        }
        finally
        {
            Volatile.Write(ref _running, 0);
        }
    }

    /// <summary>One session: runs the generation from the tokens committed so far until it ends or the stream breaks.</summary>
    private IAsyncEnumerable<CommittedToken> Segment(GenerationRequest request, GenerationTracker tracker, VerifierEndpoint endpoint, CancellationToken cancellationToken)
    {
        if (request.Mode != GenerationMode.Auto)
        {
            return PlainSegment(request, tracker, endpoint, cancellationToken);
        }

        // Auto: conditional drafting with adaptive γ until it loses to the verifier alone, then cloud streaming for the
        // rest of the generation (a new session from the committed tokens).
        if (tracker.InCloud)
        {
            tracker.ModesUsed.Add(GenerationMode.Cloud.Name());
            return new CloudRunner(endpoint.Client, request with { Mode = GenerationMode.Cloud }, tracker, _options.RoundTimeout).RunAsync(cancellationToken);
        }

        var drafting = request with
        {
            Mode = GenerationMode.Conditional,
            AdaptiveDraftTokens = true,
            DraftTokens = Math.Max(request.DraftTokens, AutoMaxDraftTokens),
            Candidates = request.Candidates ?? _auto.Candidates(),
            Leaves = request.Leaves ?? AutoLeaves,
        };
        var segmentStart = tracker.Rounds.Count;
        tracker.ModesUsed.Add(GenerationMode.Conditional.Name());
        return new SpeculativeRunner(token => new GrpcDecodeStream(endpoint.Client, token), _engine!, drafting, tracker, VerifierDescription!, _options.Time, _options.RoundTimeout, AdaptiveFor(drafting), () =>
        {
            tracker.InCloud = _auto.ShouldLeaveDrafting(tracker.Rounds, segmentStart, request.MaxNewTokens - tracker.Generated);
            return tracker.InCloud;
        }).RunAsync(cancellationToken);
    }

    private IAsyncEnumerable<CommittedToken> PlainSegment(GenerationRequest request, GenerationTracker tracker, VerifierEndpoint endpoint, CancellationToken cancellationToken) =>
        request.Mode == GenerationMode.Cloud
            ? new CloudRunner(endpoint.Client, request, tracker, _options.RoundTimeout).RunAsync(cancellationToken)
            : new SpeculativeRunner(token => new GrpcDecodeStream(endpoint.Client, token), _engine!, request, tracker, VerifierDescription!, _options.Time, _options.RoundTimeout, AdaptiveFor(request)).RunAsync(cancellationToken);

    /// <summary>The γ controller of a mode, largest γ and leaves: one per client, so what one generation learned serves the next.</summary>
    private AdaptiveDraftLength? AdaptiveFor(GenerationRequest request)
    {
        if (!request.AdaptiveDraftTokens)
        {
            return null;
        }

        var max = Math.Min(request.DraftTokens, (int)(VerifierDescription?.Limits.MaxDraftTokens ?? (uint)request.DraftTokens));
        lock (_adaptive)
        {
            // Leaves change what a round is worth (a rejection may still commit a leaf): chains and trees learn apart.
            var leaves = request.Leaves ?? 0;
            if (!_adaptive.TryGetValue((request.Mode, max, leaves), out var controller))
            {
                controller = new AdaptiveDraftLength(max);
                _adaptive[(request.Mode, max, leaves)] = controller;
            }

            return controller;
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
}

/// <summary>Ends a generation's span as failed when the generation ends without a report (an error or a cancellation).</summary>
internal sealed class ActivityOnFailure(Func<System.Diagnostics.Activity?> activity) : IDisposable
{
    public void Dispose()
    {
        if (activity() is { IsStopped: false } open)
        {
            open.SetStatus(System.Diagnostics.ActivityStatusCode.Error, "the generation ended without a result");
            open.Dispose();
        }
    }
}
