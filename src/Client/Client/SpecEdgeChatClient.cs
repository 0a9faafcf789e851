using System.Runtime.CompilerServices;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using SpecEdge.Shared.Decoding;
using AiChatMessage = Microsoft.Extensions.AI.ChatMessage;
using ChatMessage = SpecEdge.Shared.Tokenization.ChatMessage;

namespace SpecEdge.EdgeClient.Client;

/// <summary>How <see cref="SpecEdgeChatClient"/> generates.</summary>
public sealed record SpecEdgeChatOptions
{
    /// <summary>The decoding mode (default <see cref="GenerationMode.Auto"/>: drafting while it wins, else cloud streaming).</summary>
    public GenerationMode Mode { get; init; } = GenerationMode.Auto;

    /// <summary>New tokens when <see cref="ChatOptions.MaxOutputTokens"/> is not set.</summary>
    public int DefaultMaxOutputTokens { get; init; } = 256;

    /// <summary>Provisional outcomes pre-drafted per early verdict (<see cref="GenerationRequest.Candidates"/>; null: the mode's choice).</summary>
    public int? Candidates { get; init; }

    /// <summary>Token trees: leaves beside each draft (<see cref="GenerationRequest.Leaves"/>; null: the mode's choice).</summary>
    public int? Leaves { get; init; }
}

/// <summary>
/// SpecEdge behind <see cref="IChatClient"/> (Microsoft.Extensions.AI): conversations rendered with the draft model's
/// chat template, generated with speculative decoding against the verifier, the target's output exactly. Usage counts
/// tokens; <see cref="ChatResponse.AdditionalProperties"/> carries the speculative figures (<c>specedge.acceptance_rate</c>,
/// <c>specedge.tokens_per_round</c>, <c>specedge.early_verdict_hit_rate</c>, <c>specedge.modes</c>). One generation
/// runs at a time; concurrent calls wait their turn. Cancelling a call stops its generation and closes its session.
/// </summary>
public sealed class SpecEdgeChatClient : IChatClient
{
    private readonly SemaphoreSlim _turn = new(1, 1);
    private readonly Func<CancellationToken, Task<SpecEdgeClient>> _connect;
    private readonly SpecEdgeChatOptions _options;
    private readonly bool _ownsClient;
    private SpecEdgeClient? _client;
    private ChatClientMetadata? _metadata;

    /// <summary>Over a connected client (not disposed with this one).</summary>
    public SpecEdgeChatClient(SpecEdgeClient client, SpecEdgeChatOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(client);
        _client = client;
        _connect = _ => Task.FromResult(client);
        _options = options ?? new SpecEdgeChatOptions();
    }

    /// <summary>Connecting on first use with <paramref name="clientOptions"/> (and disposing the connection with this one).</summary>
    public SpecEdgeChatClient(EdgeClientOptions clientOptions, SpecEdgeChatOptions? options = null, ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(clientOptions);
        _connect = cancellationToken => SpecEdgeClient.ConnectAsync(clientOptions, logger, cancellationToken);
        _options = options ?? new SpecEdgeChatOptions();
        _ownsClient = true;
    }

    /// <inheritdoc/>
    public async Task<ChatResponse> GetResponseAsync(IEnumerable<AiChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var (client, generation) = await StartAsync(messages, options, cancellationToken).ConfigureAwait(false);
        try
        {
            var report = await generation.RunToEndAsync(cancellationToken).ConfigureAwait(false);
            return new ChatResponse(new AiChatMessage(ChatRole.Assistant, report.Text))
            {
                ResponseId = $"chatcmpl-{Guid.NewGuid():N}",
                ModelId = client.VerifierDescription?.ModelId,
                CreatedAt = DateTimeOffset.UtcNow,
                FinishReason = FinishReason(report),
                Usage = Usage(report),
                AdditionalProperties = Figures(report),
            };
        }
        finally
        {
            _turn.Release();
        }
    }

    /// <inheritdoc/>
    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<AiChatMessage> messages, ChatOptions? options = null, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var (client, generation) = await StartAsync(messages, options, cancellationToken).ConfigureAwait(false);
        try
        {
            var id = $"chatcmpl-{Guid.NewGuid():N}";
            var created = DateTimeOffset.UtcNow;
            var streamed = 0;
            await foreach (var token in generation.WithCancellation(cancellationToken).ConfigureAwait(false))
            {
                if (token.Text.Length > 0)
                {
                    streamed += token.Text.Length;
                    yield return new ChatResponseUpdate(ChatRole.Assistant, token.Text) { ResponseId = id, ModelId = client.VerifierDescription?.ModelId, CreatedAt = created };
                }
            }

            // The end of the text: bytes of a character the last token left unfinished (as U+FFFD), then the usage.
            var report = generation.Report!;
            List<AIContent> last = report.Text.Length > streamed ? [new TextContent(report.Text[streamed..])] : [];
            last.Add(new UsageContent(Usage(report)));
            yield return new ChatResponseUpdate(ChatRole.Assistant, last)
            {
                ResponseId = id,
                ModelId = client.VerifierDescription?.ModelId,
                CreatedAt = created,
                FinishReason = FinishReason(report),
                AdditionalProperties = Figures(report),
            };
        }
        finally
        {
            _turn.Release();
        }
    }

    /// <inheritdoc/>
    public object? GetService(Type serviceType, object? serviceKey = null)
    {
        ArgumentNullException.ThrowIfNull(serviceType);
        if (serviceKey is not null)
        {
            return null;
        }

        if (serviceType == typeof(ChatClientMetadata))
        {
            return _metadata ??= new ChatClientMetadata("specedge", null, _client?.VerifierDescription?.ModelId);
        }

        return serviceType.IsInstanceOfType(this) ? this : serviceType == typeof(SpecEdgeClient) ? _client : null;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        if (_ownsClient && _client is not null)
        {
            _client.DisposeAsync().AsTask().GetAwaiter().GetResult();
        }

        _turn.Dispose();
    }

    /// <summary>Runs <paramref name="work"/> in this client's turn (another caller of the same <see cref="SpecEdgeClient"/>, such as a raw-prompt completion).</summary>
    internal async Task RunExclusiveAsync(Func<Task> work, CancellationToken cancellationToken)
    {
        await _turn.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            await work().ConfigureAwait(false);
        }
        finally
        {
            _turn.Release();
        }
    }

    /// <summary>
    /// A generation as this client decodes (mode, candidates, leaves) with the call's options (new tokens, sampling,
    /// stop sequences); the caller adds the prompt or the conversation.
    /// </summary>
    internal GenerationRequest Request(ChatOptions? options) => new()
    {
        Mode = _options.Mode,
        Candidates = _options.Candidates,
        Leaves = _options.Leaves,
        MaxNewTokens = options?.MaxOutputTokens ?? _options.DefaultMaxOutputTokens,
        Sampling = Sampling(options),
        StopSequences = options?.StopSequences is { Count: > 0 } stops ? [.. stops] : [],
    };

    /// <summary>Maps the call to a generation and takes this client's turn (released by the caller).</summary>
    private async Task<(SpecEdgeClient Client, Generation Generation)> StartAsync(IEnumerable<AiChatMessage> messages, ChatOptions? options, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var conversation = new List<ChatMessage>();
        foreach (var message in messages)
        {
            var role = message.Role == ChatRole.System ? ChatMessage.System
                : message.Role == ChatRole.User ? ChatMessage.User
                : message.Role == ChatRole.Assistant ? ChatMessage.Assistant
                : throw new ArgumentException($"role '{message.Role}' is not supported: messages are system, user or assistant", nameof(messages));
            conversation.Add(new ChatMessage(role, message.Text));
        }

        var request = Request(options) with { Messages = conversation };

        await _turn.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            _client ??= await _connect(cancellationToken).ConfigureAwait(false);
            return (_client, _client.Generate(request));
        }
        catch
        {
            _turn.Release();
            throw;
        }
    }

    /// <summary>The sampling settings of <paramref name="options"/> (greedy when none are set).</summary>
    /// <exception cref="ArgumentException">A value out of range (the message names it).</exception>
    internal static SamplingConfig Sampling(ChatOptions? options)
    {
        var sampling = new SamplingConfig
        {
            Temperature = options?.Temperature ?? 0f,
            TopK = options?.TopK ?? 0,
            TopP = options?.TopP ?? 1f,
            Seed = options?.Seed is { } seed ? unchecked((ulong)seed) : 0,
        };
        return sampling.Validate() is { } problem ? throw new ArgumentException(problem, nameof(options)) : sampling;
    }

    /// <summary>A generation's finish as Microsoft.Extensions.AI says it: length for the token or context limit, else stop.</summary>
    internal static ChatFinishReason FinishReason(GenerationReport report) =>
        report.FinishReason is "length" or "context" ? ChatFinishReason.Length : ChatFinishReason.Stop;

    /// <summary>A generation's token counts.</summary>
    internal static UsageDetails Usage(GenerationReport report) => new()
    {
        InputTokenCount = report.PromptTokens,
        OutputTokenCount = report.NewTokens,
        TotalTokenCount = report.PromptTokens + report.NewTokens,
    };

    private static AdditionalPropertiesDictionary Figures(GenerationReport report) => new()
    {
        ["specedge.acceptance_rate"] = report.AcceptanceRate,
        ["specedge.tokens_per_round"] = report.MeanAcceptedLength,
        ["specedge.early_verdict_hit_rate"] = report.EarlyExits.HitRate,
        ["specedge.modes"] = string.Join(",", report.ModesUsed),
        ["specedge.ms_per_token"] = report.LatencyMs.PerToken,
    };
}

/// <summary>Registration of <see cref="SpecEdgeChatClient"/> as the application's <see cref="IChatClient"/>.</summary>
public static class SpecEdgeChatClientServiceCollectionExtensions
{
    /// <summary>
    /// Registers SpecEdge as the <see cref="IChatClient"/> (a singleton connecting on first use); the returned builder
    /// adds middleware such as logging or OpenTelemetry.
    /// </summary>
    public static ChatClientBuilder AddSpecEdgeChatClient(this IServiceCollection services, EdgeClientOptions clientOptions, SpecEdgeChatOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(clientOptions);
        return services.AddSpecEdgeChatClient(_ => clientOptions, options);
    }

    /// <summary>As above, with the client options made from the application's services (its configuration, say).</summary>
    public static ChatClientBuilder AddSpecEdgeChatClient(this IServiceCollection services, Func<IServiceProvider, EdgeClientOptions> clientOptions, SpecEdgeChatOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(clientOptions);
        return services.AddChatClient(provider =>
            new SpecEdgeChatClient(clientOptions(provider), options, provider.GetService<ILoggerFactory>()?.CreateLogger<SpecEdgeChatClient>()));
    }
}
