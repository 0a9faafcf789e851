using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using SpecEdge.EdgeClient.Client;
using SpecEdge.Shared.Decoding;
using SpecEdge.TestUtilities;
using AiChatMessage = Microsoft.Extensions.AI.ChatMessage;

namespace SpecEdge.EndToEnd.Tests;

/// <summary>SpecEdge through Microsoft.Extensions.AI's <see cref="IChatClient"/>, against a real verifier.</summary>
public sealed class ChatClientTests(ByteVocabularyVerifier verifier) : IClassFixture<ByteVocabularyVerifier>
{
    private static readonly AiChatMessage[] Conversation = [new(ChatRole.System, "Be brief."), new(ChatRole.User, "Say hello")];

    [Theory]
    [InlineData(1)]
    [InlineData(3)] // multi-candidate pre-drafting in auto's conditional rounds
    public async Task GetResponse_IsTheTargetsReplyToTheRenderedConversation_WithUsageAndFigures(int candidates)
    {
        await using var client = await verifier.ConnectAsync();
        using var chat = new SpecEdgeChatClient(client, new SpecEdgeChatOptions { Candidates = candidates });

        var response = await chat.GetResponseAsync(Conversation, new ChatOptions { MaxOutputTokens = 20 }).DefaultTimeout();

        // The same conversation through the client in cloud mode: the target's own reply.
        var cloud = await client.Generate(new GenerationRequest
        {
            Messages = [new("system", "Be brief."), new("user", "Say hello")],
            Mode = GenerationMode.Cloud,
            MaxNewTokens = 20,
            Sampling = SamplingConfig.Greedy,
        }).RunToEndAsync().DefaultTimeout();
        Assert.Equal(cloud.Text, response.Text);
        Assert.Equal(ChatRole.Assistant, response.Messages.Single().Role);
        Assert.Equal(cloud.NewTokens, response.Usage!.OutputTokenCount);
        Assert.Equal(cloud.PromptTokens, response.Usage.InputTokenCount);
        Assert.Equal(response.Usage.InputTokenCount + response.Usage.OutputTokenCount, response.Usage.TotalTokenCount);
        Assert.True(response.AdditionalProperties!.ContainsKey("specedge.acceptance_rate"));
        Assert.Contains("conditional", (string)response.AdditionalProperties["specedge.modes"]!, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Streaming_DeliversTheSameTextThenFinishAndUsage()
    {
        await using var client = await verifier.ConnectAsync();
        using var chat = new SpecEdgeChatClient(client, new SpecEdgeChatOptions { Mode = GenerationMode.Speculative });
        var options = new ChatOptions { MaxOutputTokens = 16 };
        var whole = await chat.GetResponseAsync(Conversation, options).DefaultTimeout();

        var updates = new List<ChatResponseUpdate>();
        await foreach (var update in chat.GetStreamingResponseAsync(Conversation, options))
        {
            updates.Add(update);
        }

        Assert.Equal(whole.Text, string.Concat(updates.Select(u => u.Text)));
        Assert.True(updates.Count > 2);
        Assert.Equal(ChatFinishReason.Length, updates[^1].FinishReason);
        Assert.Equal(16, updates[^1].Contents.OfType<UsageContent>().Single().Details.OutputTokenCount);
        Assert.Single(updates.Select(u => u.ResponseId).Distinct());
    }

    [Fact]
    public async Task Options_MapToTheGeneration()
    {
        await using var client = await verifier.ConnectAsync();

        // A fixed γ: with auto mode's adaptive γ the rounds, and so the random draws, change as it learns.
        using var chat = new SpecEdgeChatClient(client, new SpecEdgeChatOptions { Mode = GenerationMode.Speculative });

        var sampled = new ChatOptions { MaxOutputTokens = 12, Temperature = 0.8f, TopP = 0.9f, TopK = 20, Seed = 42 };
        var first = await chat.GetResponseAsync(Conversation, sampled).DefaultTimeout();
        var again = await chat.GetResponseAsync(Conversation, sampled).DefaultTimeout();
        Assert.Equal(first.Text, again.Text); // same seed, same draw
        Assert.Equal(12, first.Usage!.OutputTokenCount);
        Assert.Equal(ChatFinishReason.Length, first.FinishReason);

        var greedy = await chat.GetResponseAsync(Conversation, new ChatOptions { MaxOutputTokens = 24 }).DefaultTimeout();
        var stop = greedy.Text.Substring(4, 2);
        var stopped = await chat.GetResponseAsync(Conversation, new ChatOptions { MaxOutputTokens = 24, StopSequences = [stop] }).DefaultTimeout();
        Assert.Equal(greedy.Text[..greedy.Text.IndexOf(stop, StringComparison.Ordinal)], stopped.Text);
        Assert.Equal(ChatFinishReason.Stop, stopped.FinishReason);

        await Assert.ThrowsAsync<ArgumentException>(() => chat.GetResponseAsync(Conversation, new ChatOptions { Temperature = -1 }));
        await Assert.ThrowsAsync<ArgumentException>(() => chat.GetResponseAsync([new AiChatMessage(ChatRole.Tool, "{}")]));
    }

    [Fact]
    public async Task Cancellation_StopsTheGeneration_AndTheNextCallRuns()
    {
        await using var client = await verifier.ConnectAsync();
        using var chat = new SpecEdgeChatClient(client, new SpecEdgeChatOptions { Mode = GenerationMode.Speculative });
        using var cancel = new CancellationTokenSource();

        var received = 0;
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var update in chat.GetStreamingResponseAsync(Conversation, new ChatOptions { MaxOutputTokens = 200 }, cancel.Token))
            {
                received++;
                await cancel.CancelAsync();
            }
        });

        Assert.Equal(1, received);
        var next = await chat.GetResponseAsync(Conversation, new ChatOptions { MaxOutputTokens = 8 }).DefaultTimeout();
        Assert.Equal(8, next.Usage!.OutputTokenCount);
    }

    [Fact]
    public async Task AddSpecEdgeChatClient_RegistersAnIChatClientThatConnectsOnFirstUse()
    {
        var services = new ServiceCollection();
        services.AddSpecEdgeChatClient(new EdgeClientOptions { Server = verifier.Address, DraftModel = verifier.Pair.DraftDir, IntraOpThreads = 1 });
        await using var provider = services.BuildServiceProvider();
        var chat = provider.GetRequiredService<IChatClient>();

        var response = await chat.GetResponseAsync(Conversation, new ChatOptions { MaxOutputTokens = 6 }).DefaultTimeout();

        Assert.Equal(6, response.Usage!.OutputTokenCount);
        Assert.Equal("specedge", chat.GetService<ChatClientMetadata>()!.ProviderName);
    }
}
