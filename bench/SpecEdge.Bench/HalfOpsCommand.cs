using System.CommandLine;
using Microsoft.ML.OnnxRuntime;
using SpecEdge.Shared.Models;
using SpecEdge.Shared.Models.Checkpoints;
using SpecEdge.Shared.Models.Conversion;
using SpecEdge.Shared.Models.Onnx.Proto;
using SpecEdge.Shared.Models.Synthetic;
using DataType = SpecEdge.Shared.Models.Onnx.Proto.TensorProto.Types.DataType;

namespace SpecEdge.Bench;

/// <summary>
/// <c>half-ops</c>: which operators of a float16-compute graph ONNX Runtime's CPU kernels run in float16, and which it
/// runs in float32 behind Cast nodes it inserts (a CPU without a float16 kernel for an op). Reads the graphs ONNX Runtime
/// writes after its optimisations, for both graph forms.
/// </summary>
internal static class HalfOpsCommand
{
    public static Command Create()
    {
        var command = new Command("half-ops", "Which ops of a --compute f16 graph ONNX Runtime's CPU runs in float16, and which in float32 behind inserted casts.");
        command.SetAction(_ =>
        {
            var root = Path.Combine(Path.GetTempPath(), $"specedge-half-ops-{Guid.NewGuid():N}");
            try
            {
                var spec = new SyntheticModelSpec { Layers = 2, Hidden = 64, Heads = 4, KvHeads = 2, Intermediate = 128, Vocab = 258, Seed = 1, MaxPositions = 128 };
                SyntheticCheckpoint.Write(Path.Combine(root, "checkpoint"), spec);
                var converted = Path.Combine(root, "converted");
                ModelConverter.Convert(Path.Combine(root, "checkpoint"), converted, new ConversionOptions { Exits = [1], ComputeDtype = TensorDType.Float16 });
                var manifest = ModelManifest.Load(converted);
                Console.WriteLine($"ONNX Runtime {OrtEnv.Instance().GetVersionString()}, CPU execution provider, a 2-layer synthetic model converted with --compute f16 (exit after layer 1).");
                Console.WriteLine();
                Console.WriteLine("| graph form | op | nodes | run in float16 | run in float32 |");
                Console.WriteLine("|---|---|---|---|---|");
                foreach (var (form, file) in new[] { ("shared-buffer", manifest.Stages[0].File), ("batched", manifest.Stages[0].BatchedFile!) })
                {
                    var optimized = Path.Combine(root, $"{form}.optimized.onnx");
                    using (var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL, OptimizedModelFilePath = optimized })
                    using (new InferenceSession(Path.Combine(converted, file), options))
                    {
                    }

                    Report(form, ModelProto.Parser.ParseFrom(File.ReadAllBytes(optimized)).Graph);
                }
            }
            finally
            {
                Directory.Delete(root, recursive: true);
            }

            return 0;
        });
        return command;
    }

    private static void Report(string form, GraphProto graph)
    {
        // Element types of every value, propagated in the graph's (topological) node order: inputs and initializers are
        // typed; a Cast gives its "to"; any other op computes in, and outputs, the type of its first float input.
        var types = new Dictionary<string, DataType>(StringComparer.Ordinal);
        foreach (var input in graph.Input)
        {
            types[input.Name] = (DataType)input.Type.TensorType.ElemType;
        }

        foreach (var initializer in graph.Initializer)
        {
            types[initializer.Name] = (DataType)initializer.DataType;
        }

        var counts = new SortedDictionary<string, (int Half, int Single)>(StringComparer.Ordinal);
        foreach (var node in graph.Node)
        {
            if (node.OpType == "Cast")
            {
                types[node.Output[0]] = (DataType)node.Attribute.Single(a => a.Name == "to").I;
                continue;
            }

            if (node.OpType == "Shape")
            {
                types[node.Output[0]] = DataType.Int64;
                continue;
            }

            var first = node.Input.Where(i => types.TryGetValue(i, out var t) && t is DataType.Float or DataType.Float16).Select(i => types[i]).Cast<DataType?>().FirstOrDefault();
            foreach (var output in node.Output)
            {
                types[output] = first ?? DataType.Int64;
            }

            if (first is { } type)
            {
                var (half, single) = counts.GetValueOrDefault(node.OpType);
                counts[node.OpType] = type == DataType.Float16 ? (half + 1, single) : (half, single + 1);
            }
        }

        var inserted = graph.Node.Count(n => n.OpType == "Cast" && n.Name.Contains("InsertedPrecisionFreeCast", StringComparison.Ordinal));
        foreach (var (op, (half, single)) in counts)
        {
            Console.WriteLine($"| {form} | {op} | {half + single} | {half} | {single} |");
        }

        Console.WriteLine($"| {form} | (casts ONNX Runtime inserted) | {inserted} | | |");
    }
}
