using System.Text.Json;
using System.Text.Json.Nodes;

namespace SpecEdge.Shared.Models;

/// <summary>The optional JSON side files of a model folder (generation_config.json, tokenizer_config.json).</summary>
internal static class JsonFiles
{
    /// <summary>The file's JSON object, or null when there is no such file.</summary>
    /// <exception cref="ModelFormatException">The file is not valid JSON or not an object.</exception>
    public static JsonObject? LoadObject(string path)
    {
        if (!File.Exists(path))
        {
            return null;
        }

        try
        {
            return JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new ModelFormatException(path, "not a JSON object");
        }
        catch (JsonException ex)
        {
            throw new ModelFormatException(path, $"not valid JSON ({ex.Message})", ex);
        }
    }
}
