using System.Text.Json;
using System.Text.Json.Nodes;
using SpecEdge.Shared.Models;
using SpecEdge.Shared.Tokenization;
using SpecEdge.TestUtilities;

namespace SpecEdge.Shared.Tests.Tokenization;

/// <summary>
/// The families' real chat template strings (TestData/chat-templates, sources in SOURCES.md): each is recognised, and
/// renders exactly what Python jinja2, configured as transformers' apply_chat_template, rendered from the same template
/// (tools/chat-templates/render.py wrote expected.json; it reproduces huggingface.js's own Mixtral expectation).
/// </summary>
public sealed class ChatTemplateTests : IDisposable
{
    private static readonly string Folder = Path.Combine(AppContext.BaseDirectory, "TestData", "chat-templates");
    private readonly TempDirectory _temp = new("chat");

    public static TheoryData<string, ChatFormat> Templates() => new()
    {
        { "llama3", ChatFormat.Llama3 },
        { "llama3-original-2024-04", ChatFormat.Llama3AlwaysPrompt },
        { "llama3.1", ChatFormat.Llama31 },
        { "qwen2.5", ChatFormat.ChatMl },
        { "mistral-v0.2", ChatFormat.MistralSystemInFirstUser },
        { "mistral-v0.2-original", ChatFormat.MistralNoSystem },
        { "mistral-v0.3", ChatFormat.MistralV3 },
        { "phi3", ChatFormat.Phi3 },
        { "phi3-original-2024-04", ChatFormat.Phi3NoSystem },
    };

    [Theory]
    [MemberData(nameof(Templates))]
    public void Render_RealTemplate_MatchesJinja(string name, ChatFormat format)
    {
        var expected = JsonNode.Parse(File.ReadAllText(Path.Combine(Folder, "expected.json")))!;
        var entry = expected["templates"]![name]!;
        var template = ChatTemplate.Recognise(File.ReadAllText(Path.Combine(Folder, name + ".jinja")), entry["bos_token"]!.GetValue<string>(), entry["eos_token"]!.GetValue<string>());

        Assert.NotNull(template);
        Assert.Equal(format, template.Format);
        var cases = 0;
        foreach (var (caseName, result) in entry["cases"]!.AsObject())
        {
            var conversation = expected["conversations"]![caseName]!;
            var messages = conversation["messages"]!.AsArray().Select(m => new ChatMessage(m!["role"]!.GetValue<string>(), m["content"]!.GetValue<string>())).ToList();
            var prompt = conversation["add_generation_prompt"]!.GetValue<bool>();
            if (result!["error"] is not null)
            {
                Assert.Throws<ArgumentException>(() => template.Render(messages, prompt));
            }
            else
            {
                Assert.Equal(result["text"]!.GetValue<string>(), template.Render(messages, prompt));
            }

            cases++;
        }

        Assert.Equal(3, cases);
    }

    [Fact]
    public void Render_Llama31_MatchesTransformersJsOfficialExample()
    {
        using var example = JsonDocument.Parse(File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "TestData", "tokenizers", "llama3", "transformers.js-llama3.1-chat.json")));
        var messages = example.RootElement.GetProperty("messages").EnumerateArray().Select(m => new ChatMessage(m.GetProperty("role").GetString()!, m.GetProperty("content").GetString()!)).ToList();
        var template = ChatTemplate.Recognise(File.ReadAllText(Path.Combine(Folder, "llama3.1.jinja")), "<|begin_of_text|>", "<|eot_id|>")!;

        Assert.Equal(example.RootElement.GetProperty("text").GetString(), template.Render(messages, addGenerationPrompt: false));
    }

    [Fact]
    public void Load_TokenizerConfig_ReadsTemplateAndTokenObjects()
    {
        var dir = _temp.Combine("qwen");
        Directory.CreateDirectory(dir);
        var config = new JsonObject
        {
            ["chat_template"] = File.ReadAllText(Path.Combine(Folder, "qwen2.5.jinja")),
            ["bos_token"] = null,
            ["eos_token"] = new JsonObject { ["content"] = "<|im_end|>", ["special"] = true },
        };
        File.WriteAllText(Path.Combine(dir, ChatTemplate.ConfigFileName), config.ToJsonString());

        var template = ChatTemplate.Load(dir);

        Assert.Equal(ChatFormat.ChatMl, template.Format);
        Assert.Equal("<|im_end|>", template.EosToken);
        Assert.Equal("<|im_end|>", template.EndOfTurn);
        Assert.StartsWith("<|im_start|>system\nYou are Qwen", template.Render([new ChatMessage("user", "Hi")]), StringComparison.Ordinal);
    }

    [Fact]
    public void Load_NoTemplate_GivesTheBuiltInFormat()
    {
        var template = ChatTemplate.Load(_temp.Path);

        Assert.Equal(ChatFormat.Plain, template.Format);
        Assert.Equal("System: Be brief.\n\nUser: Hi\n\nAssistant:", template.Render([new ChatMessage("system", "Be brief."), new ChatMessage("user", "Hi")]));
    }

    [Fact]
    public void Load_UnknownTemplate_NamesTheFileAndTheFamilies()
    {
        var dir = _temp.Combine("unknown");
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, ChatTemplate.ConfigFileName), """{"chat_template": "{% for m in messages %}<<{{ m.content }}>>{% endfor %}"}""");

        var ex = Assert.Throws<UnsupportedModelException>(() => ChatTemplate.Load(dir));

        Assert.Contains("tokenizer_config.json", ex.Message, StringComparison.Ordinal);
        Assert.Contains("Llama 3", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Render_UnknownRole_IsRefusedNamingIt()
    {
        var ex = Assert.Throws<ArgumentException>(() => ChatTemplate.Plain.Render([new ChatMessage("tool", "{}")]));

        Assert.Contains("'tool'", ex.Message, StringComparison.Ordinal);
    }

    public void Dispose() => _temp.Dispose();
}
