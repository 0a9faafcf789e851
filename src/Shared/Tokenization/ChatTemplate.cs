using System.Text;
using System.Text.Json.Nodes;
using SpecEdge.Shared.Models;

namespace SpecEdge.Shared.Tokenization;

/// <summary>One message of a conversation.</summary>
/// <param name="Role">system, user or assistant.</param>
/// <param name="Content">The message text.</param>
public sealed record ChatMessage(string Role, string Content)
{
    /// <summary>The system role.</summary>
    public const string System = "system";
    /// <summary>The user role.</summary>
    public const string User = "user";
    /// <summary>The assistant role.</summary>
    public const string Assistant = "assistant";
}

/// <summary>The prompt formats SpecEdge recognises in a model's Jinja chat template, and its own built-in one.</summary>
public enum ChatFormat
{
    /// <summary>
    /// SpecEdge's built-in format for models without a chat template: "System: …", "User: …", "Assistant: …" lines
    /// separated by blank lines, then "Assistant:" for the reply.
    /// </summary>
    Plain,

    /// <summary>Llama 3 instruct: header-delimited turns ending in &lt;|eot_id|&gt;, each message trimmed.</summary>
    Llama3,

    /// <summary>Llama 3's first release: as <see cref="Llama3"/>, but the assistant header is always appended.</summary>
    Llama3AlwaysPrompt,

    /// <summary>Llama 3.1/3.2/3.3 instruct: as <see cref="Llama3"/>, with a system turn that always carries the knowledge and today dates.</summary>
    Llama31,

    /// <summary>ChatML (Qwen2/2.5): &lt;|im_start|&gt;role … &lt;|im_end|&gt;, with the template's default system message when there is none.</summary>
    ChatMl,

    /// <summary>Mistral instruct "v1 with a system prompt" (v0.2): " [INST] …  [/INST]", the system message folded into the first user turn.</summary>
    MistralSystemInFirstUser,

    /// <summary>Mistral/Mixtral instruct's original format: "[INST] … [/INST]", no system role.</summary>
    MistralNoSystem,

    /// <summary>Mistral-7B-Instruct-v0.3's template with tools: " [INST] … [/INST]", replies followed by " &lt;/s&gt;"; system messages are dropped.</summary>
    MistralV3,

    /// <summary>Phi-3 instruct: &lt;|system|&gt;, &lt;|user|&gt;, &lt;|assistant|&gt; turns ending in &lt;|end|&gt;.</summary>
    Phi3,

    /// <summary>Phi-3's first release: the BOS, then user turns each followed by the assistant tag; system messages are dropped.</summary>
    Phi3NoSystem,
}

/// <summary>
/// A model's chat prompt format. SpecEdge does not run Jinja: it recognises the chat template of the families it
/// supports (Llama 3/3.1, Qwen2/2.5 ChatML, Mistral, Phi-3) by the markers their real templates contain, and renders
/// the same text they render for conversations of plain system/user/assistant messages (tool calls are not rendered).
/// A model without a template gets the built-in <see cref="ChatFormat.Plain"/> format.
/// </summary>
public sealed class ChatTemplate
{
    /// <summary>The file that holds <c>chat_template</c>, <c>bos_token</c> and <c>eos_token</c>.</summary>
    public const string ConfigFileName = "tokenizer_config.json";

    /// <summary>The date Llama 3.1's template writes when none is given (its own default).</summary>
    public const string Llama31DefaultDate = "26 Jul 2024";

    private const string QwenDefaultSystem = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";

    private ChatTemplate(ChatFormat format, string bosToken, string eosToken, string? defaultSystem, string source)
    {
        Format = format;
        BosToken = bosToken;
        EosToken = eosToken;
        DefaultSystem = defaultSystem;
        Source = source;
    }

    /// <summary>SpecEdge's built-in format.</summary>
    public static ChatTemplate Plain { get; } = new(ChatFormat.Plain, string.Empty, string.Empty, null, "built-in");

    /// <summary>The recognised format.</summary>
    public ChatFormat Format { get; }

    /// <summary>The text of the beginning-of-sequence token the template writes (empty when none).</summary>
    public string BosToken { get; }

    /// <summary>The text of the end-of-sequence token the template writes.</summary>
    public string EosToken { get; }

    /// <summary>The system message the template adds when the conversation has none (Qwen2.5's), or null.</summary>
    public string? DefaultSystem { get; }

    /// <summary>Where the template came from: a file path, or "built-in".</summary>
    public string Source { get; }

    /// <summary>
    /// Whether the rendered text begins with the beginning-of-sequence token itself, so the prompt is encoded without
    /// adding another.
    /// </summary>
    public bool WritesBos => BosToken.Length > 0 && Format is not (ChatFormat.ChatMl or ChatFormat.Phi3 or ChatFormat.Plain);

    /// <summary>The marker that ends an assistant turn (generation stops there), or null when the end-of-sequence token does.</summary>
    public string? EndOfTurn => Format switch
    {
        ChatFormat.Llama3 or ChatFormat.Llama3AlwaysPrompt or ChatFormat.Llama31 => "<|eot_id|>",
        ChatFormat.ChatMl => "<|im_end|>",
        ChatFormat.Phi3 or ChatFormat.Phi3NoSystem => "<|end|>",
        ChatFormat.Plain => "\nUser:",
        _ => null,
    };

    /// <summary>
    /// Recognises a Jinja chat template string; null when it is none of the supported families'.
    /// </summary>
    public static ChatTemplate? Recognise(string template, string bosToken, string eosToken, string source = "chat_template")
    {
        ArgumentNullException.ThrowIfNull(template);
        ChatFormat? format = null;
        string? defaultSystem = null;
        if (template.Contains("<|start_header_id|>", StringComparison.Ordinal))
        {
            format = template.Contains("Cutting Knowledge Date", StringComparison.Ordinal) ? ChatFormat.Llama31
                : template.Contains("add_generation_prompt", StringComparison.Ordinal) ? ChatFormat.Llama3
                : ChatFormat.Llama3AlwaysPrompt;
        }
        else if (template.Contains("<|im_start|>", StringComparison.Ordinal))
        {
            format = ChatFormat.ChatMl;
            defaultSystem = template.Contains(QwenDefaultSystem, StringComparison.Ordinal) ? QwenDefaultSystem : null;
        }
        else if (template.Contains("[INST]", StringComparison.Ordinal))
        {
            format = template.Contains("system_message", StringComparison.Ordinal) ? ChatFormat.MistralSystemInFirstUser
                : template.Contains("[AVAILABLE_TOOLS]", StringComparison.Ordinal) ? ChatFormat.MistralV3
                : ChatFormat.MistralNoSystem;
        }
        else if (template.Contains("<|user|>", StringComparison.Ordinal))
        {
            format = template.Contains("<|system|>", StringComparison.Ordinal) ? ChatFormat.Phi3 : ChatFormat.Phi3NoSystem;
        }

        return format is { } f ? new ChatTemplate(f, bosToken, eosToken, defaultSystem, source) : null;
    }

    /// <summary>
    /// The chat format of a model folder: its <c>tokenizer_config.json</c>'s <c>chat_template</c> when recognised, the
    /// built-in <see cref="Plain"/> format when the folder has no template.
    /// </summary>
    /// <exception cref="ModelFormatException">The file is not valid JSON or a field has the wrong type.</exception>
    /// <exception cref="UnsupportedModelException">The folder's template belongs to no supported family.</exception>
    public static ChatTemplate Load(string directory)
    {
        var path = Path.Combine(directory, ConfigFileName);
        if (JsonFiles.LoadObject(path) is not { } config)
        {
            return Plain;
        }

        var template = config["chat_template"] switch
        {
            null => null,
            JsonValue value when value.TryGetValue<string>(out var text) => text,

            // Newer files list named templates; "default" is the one apply_chat_template uses.
            JsonArray named => named.OfType<JsonObject>().FirstOrDefault(t => t["name"]?.GetValue<string>() == "default")?["template"]?.GetValue<string>()
                ?? throw new ModelFormatException(path, "'chat_template' lists no template named 'default'"),
            _ => throw new ModelFormatException(path, "'chat_template' has the wrong type"),
        };
        if (template is null)
        {
            return Plain;
        }

        return Recognise(template, TokenText(config, "bos_token", path), TokenText(config, "eos_token", path), path)
            ?? throw new UnsupportedModelException(path, "its chat_template is none SpecEdge recognises (Llama 3/3.1, ChatML as in Qwen2, Mistral [INST], Phi-3); render the prompt yourself and send it as text");
    }

    /// <summary>Renders a conversation as the model's template does.</summary>
    /// <param name="messages">The conversation: an optional system message first, then user and assistant turns.</param>
    /// <param name="addGenerationPrompt">Whether to end with the opening of the assistant's reply.</param>
    /// <exception cref="ArgumentException">A role other than system/user/assistant, or an order the format refuses (the message says which).</exception>
    public string Render(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt = true)
    {
        ArgumentNullException.ThrowIfNull(messages);
        foreach (var message in messages)
        {
            if (message.Role is not (ChatMessage.System or ChatMessage.User or ChatMessage.Assistant))
            {
                throw new ArgumentException($"role '{message.Role}' is not supported: messages are system, user or assistant", nameof(messages));
            }
        }

        var text = new StringBuilder();
        switch (Format)
        {
            case ChatFormat.Llama3 or ChatFormat.Llama3AlwaysPrompt:
                text.Append(BosToken);
                foreach (var m in messages)
                {
                    LlamaTurn(text, m.Role, m.Content.Trim());
                }

                if (addGenerationPrompt || Format == ChatFormat.Llama3AlwaysPrompt)
                {
                    text.Append("<|start_header_id|>assistant<|end_header_id|>\n\n");
                }

                break;
            case ChatFormat.Llama31:
            {
                var (system, rest) = SplitSystem(messages);
                text.Append(BosToken).Append("<|start_header_id|>system<|end_header_id|>\n\n")
                    .Append("Cutting Knowledge Date: December 2023\n").Append("Today Date: ").Append(Llama31DefaultDate).Append("\n\n")
                    .Append(system?.Trim()).Append("<|eot_id|>");
                foreach (var m in rest)
                {
                    LlamaTurn(text, m.Role, m.Content.Trim());
                }

                if (addGenerationPrompt)
                {
                    text.Append("<|start_header_id|>assistant<|end_header_id|>\n\n");
                }

                break;
            }

            case ChatFormat.ChatMl:
                if (messages.Count == 0 || messages[0].Role != ChatMessage.System)
                {
                    if (DefaultSystem is not null)
                    {
                        text.Append("<|im_start|>system\n").Append(DefaultSystem).Append("<|im_end|>\n");
                    }
                }

                foreach (var m in messages)
                {
                    text.Append("<|im_start|>").Append(m.Role).Append('\n').Append(m.Content).Append("<|im_end|>\n");
                }

                if (addGenerationPrompt)
                {
                    text.Append("<|im_start|>assistant\n");
                }

                break;
            case ChatFormat.MistralSystemInFirstUser:
            {
                var (system, rest) = SplitSystem(messages);
                CheckAlternating(rest, "after the optional system message, ");
                text.Append(BosToken);
                for (var i = 0; i < rest.Count; i++)
                {
                    if (rest[i].Role == ChatMessage.User)
                    {
                        text.Append(" [INST] ");
                        if (i == 0 && system is not null)
                        {
                            text.Append(system).Append("\n\n");
                        }

                        text.Append(rest[i].Content).Append(" [/INST]");
                    }
                    else
                    {
                        text.Append(' ').Append(rest[i].Content).Append(EosToken);
                    }
                }

                break;
            }

            case ChatFormat.MistralNoSystem:
                if (messages.Any(m => m.Role == ChatMessage.System))
                {
                    throw new ArgumentException("this model's chat template has no system role: conversation roles must alternate user/assistant", nameof(messages));
                }

                CheckAlternating(messages, string.Empty);
                text.Append(BosToken);
                foreach (var m in messages)
                {
                    text.Append(m.Role == ChatMessage.User ? $"[INST] {m.Content} [/INST]" : m.Content + EosToken);
                }

                break;
            case ChatFormat.MistralV3:
                text.Append(BosToken);
                foreach (var m in messages)
                {
                    if (m.Role == ChatMessage.User)
                    {
                        text.Append(" [INST] ").Append(m.Content).Append(" [/INST]");
                    }
                    else if (m.Role == ChatMessage.Assistant)
                    {
                        text.Append(' ').Append(m.Content).Append(' ').Append(EosToken);
                    }
                }

                break;
            case ChatFormat.Phi3:
                foreach (var m in messages)
                {
                    text.Append("<|").Append(m.Role).Append("|>\n").Append(m.Content).Append("<|end|>\n");
                }

                text.Append(addGenerationPrompt ? "<|assistant|>\n" : EosToken);
                break;
            case ChatFormat.Phi3NoSystem:
                text.Append(BosToken);
                foreach (var m in messages)
                {
                    if (m.Role == ChatMessage.User)
                    {
                        text.Append("<|user|>\n").Append(m.Content).Append("<|end|>\n<|assistant|>\n");
                    }
                    else if (m.Role == ChatMessage.Assistant)
                    {
                        text.Append(m.Content).Append("<|end|>\n");
                    }
                }

                break;
            default:
                for (var i = 0; i < messages.Count; i++)
                {
                    var role = messages[i].Role;
                    text.Append(char.ToUpperInvariant(role[0])).Append(role.AsSpan(1)).Append(": ").Append(messages[i].Content).Append("\n\n");
                }

                if (addGenerationPrompt)
                {
                    text.Append("Assistant:");
                }

                break;
        }

        return text.ToString();
    }

    private static void LlamaTurn(StringBuilder text, string role, string content) =>
        text.Append("<|start_header_id|>").Append(role).Append("<|end_header_id|>\n\n").Append(content).Append("<|eot_id|>");

    private static (string? System, IReadOnlyList<ChatMessage> Others) SplitSystem(IReadOnlyList<ChatMessage> messages) =>
        messages.Count > 0 && messages[0].Role == ChatMessage.System ? (messages[0].Content, messages.Skip(1).ToList()) : (null, messages);

    private static void CheckAlternating(IReadOnlyList<ChatMessage> messages, string context)
    {
        for (var i = 0; i < messages.Count; i++)
        {
            var expected = i % 2 == 0 ? ChatMessage.User : ChatMessage.Assistant;
            if (messages[i].Role != expected)
            {
                throw new ArgumentException($"this model's chat template needs {context}roles alternating user/assistant/user/…: message {i} is '{messages[i].Role}'", nameof(messages));
            }
        }
    }

    private static string TokenText(JsonObject config, string name, string path) => config[name] switch
    {
        null => string.Empty,
        JsonValue value when value.TryGetValue<string>(out var text) => text,

        // An AddedToken object: {"content": "<s>", ...}.
        JsonObject token when token["content"] is JsonValue content && content.TryGetValue<string>(out var text) => text,
        _ => throw new ModelFormatException(path, $"'{name}' has the wrong type"),
    };
}
