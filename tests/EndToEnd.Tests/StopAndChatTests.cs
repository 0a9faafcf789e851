using SpecEdge.EdgeClient.Client;
using SpecEdge.Shared.Decoding;
using SpecEdge.Shared.Tokenization;
using SpecEdge.TestUtilities;

namespace SpecEdge.EndToEnd.Tests;

/// <summary>
/// Stop sequences and conversations through a real verifier: the delivered text ends just before the first stop
/// sequence (never showing part of it), the session closes cleanly, and a conversation is the rendered template's prompt.
/// </summary>
public sealed class StopAndChatTests(ByteVocabularyVerifier verifier) : IClassFixture<ByteVocabularyVerifier>
{
    private const string Prompt = "The quick brown fox";

    public static TheoryData<GenerationMode> Modes() => [GenerationMode.Cloud, GenerationMode.Speculative, GenerationMode.Conditional, GenerationMode.Edge];

    [Theory]
    [MemberData(nameof(Modes))]
    public async Task StopSequence_FromTheMiddleOfTheOutput_EndsTheTextJustBeforeIt(GenerationMode mode)
    {
        await using var client = await verifier.ConnectAsync();
        var full = await Run(client, mode, []);
        Assert.True(full.Text.Length >= 12, $"the output is too short to cut: '{full.Text}'");

        // A stop sequence of three characters taken from the middle; the text must end before its first occurrence.
        var stop = full.Text.Substring(8, 3);
        var expected = full.Text[..full.Text.IndexOf(stop, StringComparison.Ordinal)];
        var generation = client.Generate(Request(mode, [stop, "never appears \u0001"]));
        var streamed = new System.Text.StringBuilder();
        await foreach (var token in generation.WithCancellation(CancellationToken.None))
        {
            streamed.Append(token.Text);
        }

        Assert.Equal(expected, streamed.ToString());
        Assert.Equal(expected, generation.Report!.Text);
        Assert.Equal("stop", generation.Report.FinishReason);

        // The session was closed: the same client runs the next generation to its full length.
        var again = await Run(client, mode, ["never appears \u0001"]);
        Assert.Equal(full.Text, again.Text);
        Assert.Equal(full.FinishReason, again.FinishReason);
    }

    [Fact]
    public async Task StopSequences_AreValidated()
    {
        await using var client = await verifier.ConnectAsync();

        Assert.Throws<ArgumentException>(() => client.Generate(Request(GenerationMode.Speculative, [string.Empty])));
        Assert.Throws<ArgumentException>(() => client.Generate(Request(GenerationMode.Speculative, ["a", "b", "c", "d", "e"])));
    }

    [Fact]
    public async Task Conversation_IsTheRenderedTemplatesPrompt()
    {
        await using var client = await verifier.ConnectAsync();
        List<ChatMessage> messages = [new(ChatMessage.System, "Be brief."), new(ChatMessage.User, "Say hello")];

        // The draft's folder has no chat template: the built-in plain format, whose "\nUser:" ends the reply.
        Assert.Equal(ChatFormat.Plain, client.ChatTemplate.Format);
        var chat = await client.Generate(new GenerationRequest { Messages = messages, MaxNewTokens = 24, Sampling = SamplingConfig.Greedy, StopAtEos = false }).RunToEndAsync().DefaultTimeout();
        var rendered = await client.Generate(new GenerationRequest
        {
            PromptText = ChatTemplate.Plain.Render(messages),
            MaxNewTokens = 24,
            Sampling = SamplingConfig.Greedy,
            StopAtEos = false,
            StopSequences = ["\nUser:"],
        }).RunToEndAsync().DefaultTimeout();

        Assert.Equal(rendered.Text, chat.Text);
        Assert.Equal(rendered.TokenIds, chat.TokenIds);
    }

    private static GenerationRequest Request(GenerationMode mode, IReadOnlyList<string> stops) => new()
    {
        PromptText = Prompt,
        Mode = mode,
        MaxNewTokens = 40,
        Sampling = SamplingConfig.Greedy,
        StopAtEos = false,
        StopSequences = stops,
    };

    private static Task<GenerationReport> Run(SpecEdgeClient client, GenerationMode mode, IReadOnlyList<string> stops) =>
        client.Generate(Request(mode, stops)).RunToEndAsync().DefaultTimeout();
}
