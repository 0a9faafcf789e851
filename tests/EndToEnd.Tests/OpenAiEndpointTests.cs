using System.ClientModel;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using OpenAI;
using OpenAI.Chat;
using OpenAI.Models;
using SpecEdge.EdgeClient.Client;
using SpecEdge.EdgeClient.Serving;
using SpecEdge.Shared.Decoding;
using SpecEdge.TestUtilities;

namespace SpecEdge.EndToEnd.Tests;

/// <summary>The edge's OpenAI-compatible endpoint, running on Kestrel in front of a real verifier and the test pair.</summary>
public sealed class OpenAiEndpoint : IAsyncLifetime
{
    public const string Key = "sk-test-0123456789";
    private readonly ByteVocabularyVerifier _verifier = new();
    private WebApplication? _app;

    public SpecEdgeClient Client { get; private set; } = null!;

    public Uri BaseUrl { get; private set; } = null!;

    /// <summary>The model the endpoint serves: the verifier's (its folder's name).</summary>
    public string ModelId => Client.VerifierDescription!.ModelId;

    public async Task InitializeAsync()
    {
        await _verifier.InitializeAsync();
        Client = await _verifier.ConnectAsync();
        _app = OpenAiServer.Create(Client, "http://127.0.0.1:0", Key, new SpecEdgeChatOptions { Mode = GenerationMode.Speculative });
        await _app.StartAsync().DefaultTimeout();
        BaseUrl = new Uri(_app.Urls.Single() + "/v1/");
    }

    public async Task DisposeAsync()
    {
        if (_app is not null)
        {
            await _app.StopAsync().DefaultTimeout();
            await _app.DisposeAsync();
        }

        await Client.DisposeAsync();
        await _verifier.DisposeAsync();
    }
}

/// <summary>
/// Called with the official OpenAI .NET library (NuGet <c>OpenAI</c>): whole and streamed chat completions, models,
/// cancellation mid-stream, and refused requests. The legacy <c>/v1/completions</c>, which that library no longer
/// covers, is called over plain HTTP.
/// </summary>
public sealed class OpenAiEndpointTests(OpenAiEndpoint endpoint) : IClassFixture<OpenAiEndpoint>
{
    private static readonly ChatMessage[] Conversation = [new SystemChatMessage("Be brief."), new UserChatMessage("Say hello")];

    private ChatClient Chat(string key = OpenAiEndpoint.Key, string? model = null) =>
        new(model ?? endpoint.ModelId, new ApiKeyCredential(key), new OpenAIClientOptions { Endpoint = endpoint.BaseUrl, NetworkTimeout = TimeSpan.FromSeconds(30) });

    [Fact]
    public async Task ChatCompletion_IsTheTargetsReply_WithUsage()
    {
        ChatCompletion completion = await Chat().CompleteChatAsync(Conversation, new ChatCompletionOptions { MaxOutputTokenCount = 12 });

        var expected = await endpoint.Client.Generate(new GenerationRequest
        {
            Messages = [new("system", "Be brief."), new("user", "Say hello")],
            Mode = GenerationMode.Cloud,
            MaxNewTokens = 12,
            Sampling = SamplingConfig.Greedy,
        }).RunToEndAsync().DefaultTimeout();
        Assert.Equal(expected.Text, completion.Content.Single().Text);
        Assert.Equal(ChatMessageRole.Assistant, completion.Role);
        Assert.Equal(ChatFinishReason.Length, completion.FinishReason);
        Assert.Equal(12, completion.Usage.OutputTokenCount);
        Assert.Equal(expected.PromptTokens, completion.Usage.InputTokenCount);
        Assert.Equal(endpoint.ModelId, completion.Model);
    }

    [Fact]
    public async Task StreamingChatCompletion_SameText_ThenFinish()
    {
        var options = new ChatCompletionOptions { MaxOutputTokenCount = 16 };
        ChatCompletion whole = await Chat().CompleteChatAsync(Conversation, options);

        var text = new StringBuilder();
        ChatFinishReason? finish = null;
        var updates = 0;
        await foreach (var update in Chat().CompleteChatStreamingAsync(Conversation, options))
        {
            updates++;
            foreach (var part in update.ContentUpdate)
            {
                text.Append(part.Text);
            }

            finish ??= update.FinishReason;
        }

        Assert.Equal(whole.Content.Single().Text, text.ToString());
        Assert.Equal(ChatFinishReason.Length, finish);
        Assert.True(updates > 3, $"{updates} updates: the reply did not stream");
    }

    [Fact]
    public async Task Models_ListsTheServedModel()
    {
        var models = new OpenAIModelClient(new ApiKeyCredential(OpenAiEndpoint.Key), new OpenAIClientOptions { Endpoint = endpoint.BaseUrl });

        OpenAIModelCollection list = await models.GetModelsAsync();

        Assert.Equal(endpoint.ModelId, list.Single().Id);
        Assert.Equal("specedge", list.Single().OwnedBy);
    }

    [Fact]
    public async Task CancelledMidStream_TheNextRequestRuns()
    {
        using var cancel = new CancellationTokenSource();
        var received = 0;
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var update in Chat().CompleteChatStreamingAsync(Conversation, new ChatCompletionOptions { MaxOutputTokenCount = 400 }, cancel.Token))
            {
                if (update.ContentUpdate.Count > 0 && update.ContentUpdate[0].Text.Length > 0 && ++received == 2)
                {
                    await cancel.CancelAsync();
                }
            }
        });

        // The server's generation was cancelled and its turn released: the next request is served at once.
        ChatCompletion next = await Chat().CompleteChatAsync(Conversation, new ChatCompletionOptions { MaxOutputTokenCount = 4 }).WaitAsync(TimeSpan.FromSeconds(20));
        Assert.Equal(4, next.Usage.OutputTokenCount);
    }

    [Fact]
    public async Task BadRequests_AreOpenAiErrors()
    {
        var temperature = await Assert.ThrowsAsync<ClientResultException>(() => Chat().CompleteChatAsync(Conversation, new ChatCompletionOptions { Temperature = 3 }));
        Assert.Equal(400, temperature.Status);
        Assert.Contains("temperature", temperature.Message, StringComparison.Ordinal);

        var key = await Assert.ThrowsAsync<ClientResultException>(() => Chat(key: "sk-wrong").CompleteChatAsync(Conversation));
        Assert.Equal(401, key.Status);

        var model = await Assert.ThrowsAsync<ClientResultException>(() => Chat(model: "gpt-4o").CompleteChatAsync(Conversation));
        Assert.Equal(404, model.Status);
        Assert.Contains("'gpt-4o' does not exist", model.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Completions_WholeAndStreamed_OverPlainHttp()
    {
        using var http = new HttpClient { BaseAddress = endpoint.BaseUrl };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", OpenAiEndpoint.Key);

        using var whole = await http.PostAsync("completions", Json($$"""{"model":"{{endpoint.ModelId}}","prompt":"The quick","max_tokens":10}"""));
        Assert.Equal(HttpStatusCode.OK, whole.StatusCode);
        var body = JsonNode.Parse(await whole.Content.ReadAsStringAsync())!;
        Assert.Equal("text_completion", body["object"]!.GetValue<string>());
        Assert.Equal(10, body["usage"]!["completion_tokens"]!.GetValue<int>());
        var text = body["choices"]![0]!["text"]!.GetValue<string>();

        using var streamed = await http.PostAsync("completions", Json($$"""{"model":"{{endpoint.ModelId}}","prompt":"The quick","max_tokens":10,"stream":true}"""));
        Assert.Equal("text/event-stream", streamed.Content.Headers.ContentType!.MediaType);
        var events = (await streamed.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("data: [DONE]", events[^1]);
        var chunks = events[..^1].Select(e => JsonNode.Parse(e["data: ".Length..])!).ToList();
        Assert.Equal(text, string.Concat(chunks.Select(c => c["choices"]![0]!["text"]!.GetValue<string>())));
        Assert.Equal("length", chunks[^1]["choices"]![0]!["finish_reason"]!.GetValue<string>());

        using var bad = await http.PostAsync("completions", Json($$"""{"model":"{{endpoint.ModelId}}","prompt":"x","n":2}"""));
        Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
        Assert.Equal("n", JsonNode.Parse(await bad.Content.ReadAsStringAsync())!["error"]!["param"]!.GetValue<string>());
    }

    private static StringContent Json(string json) => new(json, Encoding.UTF8, "application/json");
}
