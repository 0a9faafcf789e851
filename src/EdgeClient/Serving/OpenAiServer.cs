using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using SpecEdge.EdgeClient.Client;

namespace SpecEdge.EdgeClient.Serving;

/// <summary>
/// An OpenAI-compatible HTTP API in front of a <see cref="SpecEdgeClient"/>: <c>POST /v1/chat/completions</c> and
/// <c>POST /v1/completions</c>, each whole or streamed as server-sent events the way OpenAI sends them, and
/// <c>GET /v1/models</c>. Errors use OpenAI's error object and status codes. An optional bearer key protects it.
/// Generations run one at a time (the draft model is one sequence); requests wait their turn, and a client that
/// disconnects mid-stream cancels its generation.
/// </summary>
public static class OpenAiServer
{
    private static readonly JsonSerializerOptions Compact = new() { WriteIndented = false };

    /// <summary>Builds the app over a connected client; the caller starts it (URLs from <paramref name="urls"/>).</summary>
    /// <param name="client">The connected client (owned by the caller).</param>
    /// <param name="urls">Where to listen, e.g. http://127.0.0.1:8080.</param>
    /// <param name="apiKey">A bearer key every request must carry, or null for none.</param>
    /// <param name="decoding">How chat and completions are decoded: the mode, candidates and leaves (auto, the defaults, when null).</param>
    /// <param name="logging">Log level of the host (warnings by default: no line per request).</param>
    public static WebApplication Create(SpecEdgeClient client, string urls, string? apiKey, SpecEdgeChatOptions? decoding = null, LogLevel logging = LogLevel.Warning)
    {
        decoding ??= new SpecEdgeChatOptions();
        var builder = WebApplication.CreateSlimBuilder();

        // Its own settings only (an appsettings.json beside the binaries belongs to the verifier, which serves gRPC
        // over HTTP/2 alone); OpenAI clients speak HTTP/1.1.
        builder.Configuration.Sources.Clear();
        builder.Configuration.AddInMemoryCollection();
        builder.WebHost.UseUrls(urls);
        var tls = urls.StartsWith("https:", StringComparison.OrdinalIgnoreCase);
        builder.WebHost.ConfigureKestrel(kestrel => kestrel.ConfigureEndpointDefaults(listen => listen.Protocols = tls
            ? Microsoft.AspNetCore.Server.Kestrel.Core.HttpProtocols.Http1AndHttp2
            : Microsoft.AspNetCore.Server.Kestrel.Core.HttpProtocols.Http1));
        builder.Logging.SetMinimumLevel(logging);
        builder.Services.AddSingleton(new SpecEdgeChatClient(client, decoding));
        var app = builder.Build();
        var modelId = client.VerifierDescription?.ModelId ?? "specedge";
        var keyHash = apiKey is null ? null : SHA256.HashData(Encoding.UTF8.GetBytes(apiKey));

        app.Use(async (context, next) =>
        {
            if (keyHash is not null)
            {
                var header = context.Request.Headers.Authorization.ToString();
                var given = header.StartsWith("Bearer ", StringComparison.Ordinal) ? header["Bearer ".Length..].Trim() : string.Empty;
                if (!CryptographicOperations.FixedTimeEquals(SHA256.HashData(Encoding.UTF8.GetBytes(given)), keyHash))
                {
                    await Error(context, StatusCodes.Status401Unauthorized, given.Length == 0 ? "no API key was given: send 'Authorization: Bearer KEY'" : "incorrect API key provided", "invalid_request_error", null, "invalid_api_key");
                    return;
                }
            }

            await next(context);
        });

        app.MapGet("/v1/models", () => Results.Json(new JsonObject
        {
            ["object"] = "list",
            ["data"] = new JsonArray(new JsonObject { ["id"] = modelId, ["object"] = "model", ["created"] = 0, ["owned_by"] = "specedge" }),
        }));
        app.MapGet("/v1/models/{id}", async (HttpContext context, string id) =>
        {
            if (id != modelId)
            {
                await Error(context, StatusCodes.Status404NotFound, $"the model '{id}' does not exist; this server serves '{modelId}'", "invalid_request_error", "model", "model_not_found");
                return;
            }

            await context.Response.WriteAsJsonAsync(new JsonObject { ["id"] = modelId, ["object"] = "model", ["created"] = 0, ["owned_by"] = "specedge" });
        });
        app.MapPost("/v1/chat/completions", (HttpContext context, SpecEdgeChatClient chat) => Handle(context, modelId, body => ChatAsync(context, chat, modelId, body)));
        app.MapPost("/v1/completions", (HttpContext context, SpecEdgeChatClient chat) => Handle(context, modelId, body => CompletionAsync(context, client, chat, modelId, body)));
        app.MapFallback(context => Error(context, StatusCodes.Status404NotFound, $"unknown endpoint {context.Request.Method} {context.Request.Path}", "invalid_request_error", null, "unknown_url"));
        return app;
    }

    /// <summary>Reads the JSON body, runs the handler, and turns failures into OpenAI error objects.</summary>
    private static async Task Handle(HttpContext context, string modelId, Func<JsonObject, Task> handler)
    {
        JsonObject body;
        try
        {
            body = await JsonNode.ParseAsync(context.Request.Body, cancellationToken: context.RequestAborted) as JsonObject
                ?? throw new BadRequestException("the body must be a JSON object", null);
        }
        catch (JsonException ex)
        {
            await Error(context, StatusCodes.Status400BadRequest, $"the body is not valid JSON ({ex.Message})", "invalid_request_error", null, null);
            return;
        }
        catch (BadRequestException ex)
        {
            await Error(context, StatusCodes.Status400BadRequest, ex.Message, "invalid_request_error", ex.Param, null);
            return;
        }

        try
        {
            if (body["model"] is JsonValue model && model.TryGetValue<string>(out var name) && name != modelId && name != "specedge")
            {
                await Error(context, StatusCodes.Status404NotFound, $"the model '{name}' does not exist; this server serves '{modelId}'", "invalid_request_error", "model", "model_not_found");
                return;
            }

            await handler(body);
        }
        catch (BadRequestException ex)
        {
            await Error(context, StatusCodes.Status400BadRequest, ex.Message, "invalid_request_error", ex.Param, null);
        }
        catch (ArgumentException ex) when (!context.Response.HasStarted)
        {
            await Error(context, StatusCodes.Status400BadRequest, ex.Message, "invalid_request_error", null, null);
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            // The client went away: its generation was cancelled and its session closed.
        }
        catch (Exception ex) when (IsVerifierFailure(ex) && !context.Response.HasStarted)
        {
            await Error(context, StatusCodes.Status503ServiceUnavailable, ex.Message, "server_error", null, "verifier_unavailable");
        }
    }

    private static bool IsVerifierFailure(Exception ex) => ex is VerifierUnavailableException or Grpc.Core.RpcException or Transport.ProtocolViolationException or ModelMismatchException;

    private static async Task ChatAsync(HttpContext context, SpecEdgeChatClient chat, string modelId, JsonObject body)
    {
        var messages = body["messages"] as JsonArray ?? throw new BadRequestException("'messages' is required: an array of {role, content}", "messages");
        var conversation = new List<ChatMessage>();
        for (var i = 0; i < messages.Count; i++)
        {
            var message = messages[i] as JsonObject ?? throw new BadRequestException($"messages[{i}] is not an object", "messages");
            var role = String(message, "role") ?? throw new BadRequestException($"messages[{i}].role is required", "messages");
            var chatRole = role switch
            {
                "system" or "developer" => ChatRole.System,
                "user" => ChatRole.User,
                "assistant" => ChatRole.Assistant,
                _ => throw new BadRequestException($"messages[{i}].role '{role}' is not supported: system, developer, user or assistant", "messages"),
            };
            conversation.Add(new ChatMessage(chatRole, Content(message["content"], i)));
        }

        if (conversation.Count == 0)
        {
            throw new BadRequestException("'messages' is empty", "messages");
        }

        var options = Options(body, body["max_completion_tokens"] is null ? "max_tokens" : "max_completion_tokens", defaultMaxTokens: null);
        var id = $"chatcmpl-{Guid.NewGuid():N}";
        var created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        if (!Bool(body, "stream"))
        {
            var response = await chat.GetResponseAsync(conversation, options, context.RequestAborted);
            await context.Response.WriteAsJsonAsync(new JsonObject
            {
                ["id"] = id,
                ["object"] = "chat.completion",
                ["created"] = created,
                ["model"] = modelId,
                ["choices"] = new JsonArray(new JsonObject
                {
                    ["index"] = 0,
                    ["message"] = new JsonObject { ["role"] = "assistant", ["content"] = response.Text },
                    ["logprobs"] = null,
                    ["finish_reason"] = Finish(response.FinishReason),
                }),
                ["usage"] = Usage(response.Usage),
                ["specedge"] = Figures(response.AdditionalProperties),
            });
            return;
        }

        var includeUsage = body["stream_options"] is JsonObject streamOptions && Bool(streamOptions, "include_usage");
        await StartEvents(context);
        JsonObject Chunk(JsonObject delta, string? finish) => new()
        {
            ["id"] = id,
            ["object"] = "chat.completion.chunk",
            ["created"] = created,
            ["model"] = modelId,
            ["choices"] = new JsonArray(new JsonObject { ["index"] = 0, ["delta"] = delta, ["logprobs"] = null, ["finish_reason"] = finish }),
        };

        await Event(context, Chunk(new JsonObject { ["role"] = "assistant", ["content"] = string.Empty }, null));
        await foreach (var update in chat.GetStreamingResponseAsync(conversation, options, context.RequestAborted))
        {
            if (update.Text.Length > 0)
            {
                await Event(context, Chunk(new JsonObject { ["content"] = update.Text }, null));
            }

            if (update.FinishReason is { } finish)
            {
                await Event(context, Chunk([], Finish(finish)));
                if (includeUsage)
                {
                    var usage = update.Contents.OfType<UsageContent>().Single().Details;
                    await Event(context, new JsonObject { ["id"] = id, ["object"] = "chat.completion.chunk", ["created"] = created, ["model"] = modelId, ["choices"] = new JsonArray(), ["usage"] = Usage(usage) });
                }
            }
        }

        await Done(context);
    }

    private static async Task CompletionAsync(HttpContext context, SpecEdgeClient client, SpecEdgeChatClient chat, string modelId, JsonObject body)
    {
        var prompt = body["prompt"] switch
        {
            JsonValue value when value.TryGetValue<string>(out var text) => text,
            JsonArray { Count: 1 } single when single[0] is JsonValue v && v.TryGetValue<string>(out var text) => text,
            null => throw new BadRequestException("'prompt' is required", "prompt"),
            _ => throw new BadRequestException("'prompt' must be a string (one prompt per request)", "prompt"),
        };
        if (prompt.Length == 0)
        {
            throw new BadRequestException("'prompt' is empty", "prompt");
        }

        var options = Options(body, "max_tokens", defaultMaxTokens: 16);
        var request = chat.Request(options) with { PromptText = prompt };
        var id = $"cmpl-{Guid.NewGuid():N}";
        var created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        var stream = Bool(body, "stream");
        await chat.RunExclusiveAsync(async () =>
        {
            var generation = client.Generate(request);
            if (!stream)
            {
                var report = await generation.RunToEndAsync(context.RequestAborted);
                await context.Response.WriteAsJsonAsync(new JsonObject
                {
                    ["id"] = id,
                    ["object"] = "text_completion",
                    ["created"] = created,
                    ["model"] = modelId,
                    ["choices"] = new JsonArray(new JsonObject { ["text"] = report.Text, ["index"] = 0, ["logprobs"] = null, ["finish_reason"] = Finish(SpecEdgeChatClient.FinishReason(report)) }),
                    ["usage"] = Usage(SpecEdgeChatClient.Usage(report)),
                });
                return;
            }

            await StartEvents(context);
            JsonObject Chunk(string text, string? finish) => new()
            {
                ["id"] = id,
                ["object"] = "text_completion",
                ["created"] = created,
                ["model"] = modelId,
                ["choices"] = new JsonArray(new JsonObject { ["text"] = text, ["index"] = 0, ["logprobs"] = null, ["finish_reason"] = finish }),
            };
            var streamed = 0;
            await foreach (var token in generation.WithCancellation(context.RequestAborted))
            {
                if (token.Text.Length > 0)
                {
                    streamed += token.Text.Length;
                    await Event(context, Chunk(token.Text, null));
                }
            }

            var done = generation.Report!;
            await Event(context, Chunk(done.Text.Length > streamed ? done.Text[streamed..] : string.Empty, Finish(SpecEdgeChatClient.FinishReason(done))));
            await Done(context);
        }, context.RequestAborted);
    }

    /// <summary>OpenAI's sampling fields, checked against OpenAI's ranges.</summary>
    private static ChatOptions Options(JsonObject body, string maxTokensField, int? defaultMaxTokens)
    {
        if (body["n"] is JsonValue n && (!n.TryGetValue<int>(out var count) || count != 1))
        {
            throw new BadRequestException("'n' must be 1: one choice per request", "n");
        }

        var temperature = Number(body, "temperature");
        if (temperature is < 0 or > 2)
        {
            throw new BadRequestException(string.Create(CultureInfo.InvariantCulture, $"'temperature' must lie in [0, 2], not {temperature}"), "temperature");
        }

        var topP = Number(body, "top_p");
        if (topP is <= 0 or > 1)
        {
            throw new BadRequestException(string.Create(CultureInfo.InvariantCulture, $"'top_p' must lie in (0, 1], not {topP}"), "top_p");
        }

        var maxTokens = Integer(body, maxTokensField) ?? defaultMaxTokens;
        if (maxTokens is < 1)
        {
            throw new BadRequestException($"'{maxTokensField}' must be at least 1, not {maxTokens}", maxTokensField);
        }

        var stops = body["stop"] switch
        {
            null => null,
            JsonValue one when one.TryGetValue<string>(out var text) => [text],
            JsonArray many when many.Count <= GenerationRequest.MaxStopSequences && many.All(s => s is JsonValue v && v.TryGetValue<string>(out var t) && t.Length > 0) => many.Select(s => s!.GetValue<string>()).ToList(),
            _ => throw new BadRequestException($"'stop' must be a string or up to {GenerationRequest.MaxStopSequences} non-empty strings", "stop"),
        };
        return new ChatOptions
        {
            Temperature = (float?)temperature,
            TopP = (float?)topP,
            TopK = Integer(body, "top_k"),
            Seed = Integer(body, "seed"),
            MaxOutputTokens = maxTokens,
            StopSequences = stops,
        };
    }

    private static string Content(JsonNode? content, int index) => content switch
    {
        JsonValue value when value.TryGetValue<string>(out var text) => text,

        // Content parts: text parts joined; anything else is refused.
        JsonArray parts => string.Concat(parts.Select(p => p is JsonObject part && String(part, "type") == "text" && String(part, "text") is { } text
            ? text
            : throw new BadRequestException($"messages[{index}].content: only text parts are supported", "messages"))),
        null => string.Empty,
        _ => throw new BadRequestException($"messages[{index}].content must be a string or an array of text parts", "messages"),
    };

    private static string? String(JsonObject obj, string name) => obj[name] is JsonValue v && v.TryGetValue<string>(out var s) ? s : null;

    private static bool Bool(JsonObject obj, string name) => obj[name] switch
    {
        null => false,
        JsonValue v when v.TryGetValue<bool>(out var b) => b,
        _ => throw new BadRequestException($"'{name}' must be true or false", name),
    };

    private static double? Number(JsonObject obj, string name) => obj[name] switch
    {
        null => null,
        JsonValue v when v.TryGetValue<double>(out var d) => d,
        _ => throw new BadRequestException($"'{name}' must be a number", name),
    };

    private static int? Integer(JsonObject obj, string name) => obj[name] switch
    {
        null => null,
        JsonValue v when v.TryGetValue<int>(out var i) => i,
        _ => throw new BadRequestException($"'{name}' must be an integer", name),
    };

    private static string Finish(ChatFinishReason? reason) => reason == ChatFinishReason.Length ? "length" : "stop";

    private static JsonObject Usage(UsageDetails? usage) => new()
    {
        ["prompt_tokens"] = usage?.InputTokenCount ?? 0,
        ["completion_tokens"] = usage?.OutputTokenCount ?? 0,
        ["total_tokens"] = usage?.TotalTokenCount ?? 0,
    };

    private static JsonObject Figures(AdditionalPropertiesDictionary? figures)
    {
        var result = new JsonObject();
        foreach (var (key, value) in figures ?? [])
        {
            result[key.Replace("specedge.", string.Empty, StringComparison.Ordinal)] = JsonValue.Create(value);
        }

        return result;
    }

    private static async Task StartEvents(HttpContext context)
    {
        context.Response.ContentType = "text/event-stream";
        context.Response.Headers.CacheControl = "no-cache";
        await context.Response.Body.FlushAsync(context.RequestAborted);
    }

    private static async Task Event(HttpContext context, JsonObject data)
    {
        await context.Response.WriteAsync($"data: {data.ToJsonString(Compact)}\n\n", context.RequestAborted);
        await context.Response.Body.FlushAsync(context.RequestAborted);
    }

    private static async Task Done(HttpContext context)
    {
        await context.Response.WriteAsync("data: [DONE]\n\n", context.RequestAborted);
        await context.Response.Body.FlushAsync(context.RequestAborted);
    }

    private static Task Error(HttpContext context, int status, string message, string type, string? param, string? code)
    {
        context.Response.StatusCode = status;
        return context.Response.WriteAsJsonAsync(new JsonObject
        {
            ["error"] = new JsonObject { ["message"] = message, ["type"] = type, ["param"] = param, ["code"] = code },
        });
    }

    private sealed class BadRequestException(string message, string? param) : Exception(message)
    {
        public string? Param { get; } = param;
    }
}
