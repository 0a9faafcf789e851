using System.CommandLine;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML.OnnxRuntime;
using SpecEdge.Shared.Models;
using SpecEdge.Shared.Models.Checkpoints;

namespace SpecEdge.ModelTools.Commands;

/// <summary><c>inspect</c>: the manifest of a converted model and each graph's inputs and outputs (or a checkpoint's config and tensors).</summary>
internal static class InspectCommand
{
    public static Command Create()
    {
        var dir = new Argument<string>("DIR") { Description = "A converted model folder (or a Hugging Face checkpoint folder)." };
        var json = new Option<bool>("--json") { Description = "Print one JSON object." };
        var command = new Command("inspect", "Show a converted model's manifest and its graphs' inputs and outputs; checks every file's content hash.") { dir, json };
        command.SetAction(parse => CliErrors.Run(parse, stdout =>
        {
            var path = parse.GetValue(dir)!;
            if (!Directory.Exists(path))
            {
                throw new ModelFormatException(path, "model folder not found");
            }

            var report = ModelManifest.Exists(path) ? InspectConverted(path) : InspectCheckpoint(path);
            if (parse.GetValue(json))
            {
                stdout.WriteLine(report.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            }
            else
            {
                WriteText(stdout, report);
            }

            return 0;
        }));
        return command;
    }

    private static JsonObject InspectConverted(string path)
    {
        var manifest = ModelManifest.Load(path);
        manifest.VerifyFiles(path, trustStamp: false);
        var graphs = new JsonArray();
        foreach (var stage in manifest.Stages)
        {
            using var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_DISABLE_ALL };
            using var session = new InferenceSession(Path.Combine(path, stage.File), options);
            graphs.Add(new JsonObject
            {
                ["file"] = stage.File,
                ["layers"] = new JsonArray(stage.FirstLayer, stage.EndLayer),
                ["exit"] = stage.IsExit,
                ["inputs"] = Describe(session.InputMetadata),
                ["outputs"] = Describe(session.OutputMetadata),
            });
        }

        return new JsonObject
        {
            ["path"] = Path.GetFullPath(path),
            ["integrity"] = "ok: every file matches its manifest hash",
            ["manifest"] = JsonNode.Parse(manifest.ToJson()),
            ["graphs"] = graphs,
        };
    }

    private static JsonObject InspectCheckpoint(string path)
    {
        using var checkpoint = LlamaCheckpoint.Open(path);
        var tensors = new JsonArray();
        foreach (var name in checkpoint.TensorNames.Order(StringComparer.Ordinal))
        {
            var (file, info) = checkpoint.Get(name);
            tensors.Add(new JsonObject
            {
                ["name"] = name,
                ["dtype"] = info.DType.SafetensorsName(),
                ["shape"] = new JsonArray([.. info.Shape.Select(d => (JsonNode?)d)]),
                ["file"] = Path.GetFileName(file.Path),
            });
        }

        return new JsonObject
        {
            ["path"] = Path.GetFullPath(path),
            ["checkpoint"] = true,
            ["config"] = checkpoint.Config.ToJson(),
            ["tensors"] = tensors,
        };
    }

    private static JsonArray Describe(IReadOnlyDictionary<string, NodeMetadata> metadata)
    {
        var array = new JsonArray();
        foreach (var (name, node) in metadata)
        {
            var dims = new JsonArray();
            for (var i = 0; i < node.Dimensions.Length; i++)
            {
                dims.Add(node.Dimensions[i] >= 0 ? JsonValue.Create(node.Dimensions[i]) : JsonValue.Create(node.SymbolicDimensions[i]));
            }

            array.Add(new JsonObject { ["name"] = name, ["type"] = node.ElementDataType.ToString().ToLowerInvariant(), ["shape"] = dims });
        }

        return array;
    }

    private static void WriteText(TextWriter output, JsonObject report)
    {
        output.WriteLine(report["path"]!.GetValue<string>());
        if (report["checkpoint"] is not null)
        {
            output.WriteLine("Hugging Face checkpoint (not converted)");
            output.WriteLine(report["config"]!.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            foreach (var tensor in report["tensors"]!.AsArray())
            {
                output.WriteLine($"  {tensor!["name"]} {tensor["dtype"]} [{string.Join(", ", tensor["shape"]!.AsArray())}] ({tensor["file"]})");
            }

            return;
        }

        var m = report["manifest"]!;
        output.WriteLine($"kind {m["kind"]}, {m["num_layers"]} layers, hidden {m["hidden_size"]}, vocabulary {m["vocab_size"]}, weights {m["weights_dtype"]}, compute {m["compute_dtype"] ?? "f32"}{(m["quantization"] is { } q ? $", projections {q["type"]} (blocks of {q["block_size"]})" : string.Empty)}, exits [{string.Join(",", m["exits"]!.AsArray())}]");
        output.WriteLine($"tokenizer {m["tokenizer"]!["kind"]} ({m["tokenizer"]!["file"] ?? "built-in"}), weights sha256 {m["weights_sha256"]}");
        output.WriteLine(report["integrity"]!.GetValue<string>());
        foreach (var graph in report["graphs"]!.AsArray())
        {
            output.WriteLine($"{graph!["file"]}: layers {graph["layers"]![0]}..{graph["layers"]![1]}{(graph["exit"]!.GetValue<bool>() ? " (exit)" : string.Empty)}");
            foreach (var kind in new[] { "inputs", "outputs" })
            {
                foreach (var io in graph[kind]!.AsArray())
                {
                    output.WriteLine($"  {(kind == "inputs" ? "in " : "out")} {io!["name"]}: {io["type"]} [{string.Join(", ", io["shape"]!.AsArray())}]");
                }
            }
        }
    }
}
