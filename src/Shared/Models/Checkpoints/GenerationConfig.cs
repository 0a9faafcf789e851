using System.Globalization;
using System.Text.Json.Nodes;

namespace SpecEdge.Shared.Models.Checkpoints;

/// <summary>
/// A checkpoint's <c>generation_config.json</c>, where Hugging Face models keep their generation defaults: more
/// end-of-sequence ids (Llama 3's instruct models end turns with <c>&lt;|eot_id|&gt;</c>, listed only here) and the
/// sampling settings the model was tuned for.
/// </summary>
/// <param name="EosTokenIds">End-of-sequence ids (<c>eos_token_id</c>, one or a list).</param>
/// <param name="DoSample"><c>do_sample</c>: whether the model's authors sample by default.</param>
/// <param name="Temperature"><c>temperature</c>.</param>
/// <param name="TopK"><c>top_k</c>.</param>
/// <param name="TopP"><c>top_p</c>.</param>
public sealed record GenerationConfig(IReadOnlyList<int> EosTokenIds, bool? DoSample, double? Temperature, int? TopK, double? TopP)
{
    /// <summary>The file's name in a checkpoint folder.</summary>
    public const string FileName = "generation_config.json";

    /// <summary>No file: no defaults.</summary>
    public static GenerationConfig None { get; } = new([], null, null, null, null);

    /// <summary>The folder's <c>generation_config.json</c>, or <see cref="None"/> when it has none.</summary>
    /// <exception cref="ModelFormatException">The file is not valid JSON, or a field has the wrong type (the message names it).</exception>
    public static GenerationConfig Load(string directory)
    {
        var path = Path.Combine(directory, FileName);
        if (JsonFiles.LoadObject(path) is not { } obj)
        {
            return None;
        }

        return new GenerationConfig(Ids(obj, path, "eos_token_id"), Value<bool>(obj, path, "do_sample"), Number(obj, path, "temperature"), (int?)Number(obj, path, "top_k"), Number(obj, path, "top_p"));
    }

    private static List<int> Ids(JsonObject obj, string path, string name) => obj[name] switch
    {
        null => [],
        JsonArray list => [.. list.Select(node => node is JsonValue v && v.TryGetValue<int>(out var id) ? id : throw Wrong(path, name))],
        JsonValue single when single.TryGetValue<int>(out var id) => [id],
        _ => throw Wrong(path, name),
    };

    private static T? Value<T>(JsonObject obj, string path, string name)
        where T : struct => obj[name] switch
        {
            null => null,
            JsonValue v when v.TryGetValue<T>(out var value) => value,
            _ => throw Wrong(path, name),
        };

    private static double? Number(JsonObject obj, string path, string name) => obj[name] switch
    {
        null => null,
        JsonValue v when v.TryGetValue<double>(out var value) => value,
        _ => throw Wrong(path, name),
    };

    private static ModelFormatException Wrong(string path, string name) =>
        new(path, string.Create(CultureInfo.InvariantCulture, $"'{name}' has the wrong type"));
}
