using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using SpecEdge.Shared.Models.Onnx;
using SpecEdge.Shared.Runtime;
using SpecEdge.Shared.Tokenization;

namespace SpecEdge.Bench;

/// <summary>
/// <c>decode</c>: ms per call of a single-token decode step and of a 5-token verify step through SpecEdge's
/// <see cref="DecodeContext"/>, beside bare <see cref="InferenceSession.Run(RunOptions, IReadOnlyCollection{string}, IReadOnlyCollection{OrtValue}, IReadOnlyCollection{string}, IReadOnlyCollection{OrtValue})"/>
/// of the same graph with the same inputs (pre-allocated outputs, KV bound in place), interleaved in blocks so both
/// see the same machine noise.
/// </summary>
internal static class DecodeBenchmark
{
    private const int PastLength = 64;

    public static Command Create()
    {
        var sizes = new Option<string>("--sizes") { Description = "Model sizes to run (1M, 25M, 110M).", DefaultValueFactory = _ => "1M,25M,110M" };
        var iterations = new Option<int>("--iterations") { Description = "Timed calls per variant and step kind.", DefaultValueFactory = _ => 200 };
        var threads = new Option<int>("--threads") { Description = "ONNX Runtime intra-op threads.", DefaultValueFactory = _ => 2 };
        var command = new Command("decode", "Decode-step overhead of the runtime wrapper over bare ONNX Runtime, for ~1M/25M/110M-parameter synthetic models.") { sizes, iterations, threads };
        command.SetAction(parse =>
        {
            var results = new List<string>();
            Console.WriteLine("| model | params | step | wrapper ms (median) | bare ORT ms (median) | wrapper / bare |");
            Console.WriteLine("|---|---|---|---|---|---|");
            foreach (var name in parse.GetValue(sizes)!.Split(',', StringSplitOptions.TrimEntries))
            {
                var spec = BenchModels.Sizes[name];
                var dir = BenchModels.Converted(name, spec);
                foreach (var tokens in new[] { 1, 5 })
                {
                    var (wrapper, bare) = Measure(dir, tokens, parse.GetValue(iterations), parse.GetValue(threads));
                    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {name} | {spec.ParameterCount / 1e6:F1} M | {(tokens == 1 ? "decode 1 token" : "verify 5 tokens")} | {wrapper:F3} | {bare:F3} | {wrapper / bare:F3} |"));
                }
            }

            return 0;
        });
        return command;
    }

    private static (double Wrapper, double Bare) Measure(string dir, int stepTokens, int iterations, int threads)
    {
        using var model = LanguageModel.Load(dir, new RuntimeOptions { IntraOpThreads = threads, MaxSequenceLength = 256 });
        using var context = model.CreateContext();
        var prompt = Enumerable.Range(0, PastLength).Select(i => new TokenId((i * 7) % model.VocabSize)).ToArray();
        context.Prefill(prompt);
        var step = Enumerable.Range(0, stepTokens).Select(i => new TokenId((i * 13) % model.VocabSize)).ToArray();

        using var bare = new BareRunner(dir, model, threads, step);
        var wrapperTimes = new List<double>();
        var bareTimes = new List<double>();
        const int Block = 10;
        for (var i = 0; i < 20; i++)
        {
            context.Rollback(PastLength);
            context.Forward(step);
            bare.Run();
        }

        var stopwatch = new Stopwatch();
        for (var done = 0; done < iterations; done += Block)
        {
            for (var j = 0; j < Block; j++)
            {
                stopwatch.Restart();
                context.Rollback(PastLength);
                context.Forward(step);
                wrapperTimes.Add(stopwatch.Elapsed.TotalMilliseconds);
            }

            for (var j = 0; j < Block; j++)
            {
                stopwatch.Restart();
                bare.Run();
                bareTimes.Add(stopwatch.Elapsed.TotalMilliseconds);
            }
        }

        return (Stats.Median(wrapperTimes), Stats.Median(bareTimes));
    }

    /// <summary>The same graph through the plain OrtValue Run API: fixed inputs, outputs pre-allocated, KV bound in place.</summary>
    private sealed class BareRunner : IDisposable
    {
        private readonly InferenceSession _session;
        private readonly RunOptions _runOptions = new();
        private readonly List<OrtValue> _owned = [];
        private readonly string[] _inputNames;
        private readonly OrtValue[] _inputs;
        private readonly string[] _outputNames;
        private readonly OrtValue[] _outputs;

        public BareRunner(string dir, LanguageModel model, int threads, TokenId[] step)
        {
            using var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL, IntraOpNumThreads = threads, InterOpNumThreads = 1 };
            _session = new InferenceSession(Path.Combine(dir, model.Stages[0].File), options);
            var c = model.Config;
            var n = step.Length;
            var inputNames = new List<string> { GraphNames.InputIds, GraphNames.AttentionMask, GraphNames.PositionIds };
            var inputs = new List<OrtValue>
            {
                Own(OrtValue.CreateTensorValueFromMemory(step.Select(t => (long)t.Value).ToArray(), [1, n])),
                Own(OrtValue.CreateTensorValueFromMemory(Enumerable.Repeat(1L, PastLength + n).ToArray(), [1, PastLength + n])),
                Own(OrtValue.CreateTensorValueFromMemory(Enumerable.Range(PastLength, n).Select(p => (long)p).ToArray(), [1, n])),
            };
            var outputNames = new List<string> { GraphNames.Logits };
            var outputs = new List<OrtValue> { Own(OrtValue.CreateTensorValueFromMemory(new float[n * model.VocabSize], [1, n, model.VocabSize])) };
            for (var layer = 0; layer < c.NumHiddenLayers; layer++)
            {
                var key = Own(OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, TensorElementType.Float, [1, c.NumKeyValueHeads, 256, c.HeadDim]));
                var value = Own(OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, TensorElementType.Float, [1, c.NumKeyValueHeads, 256, c.HeadDim]));
                inputNames.Add(GraphNames.PastKey(layer));
                inputs.Add(key);
                inputNames.Add(GraphNames.PastValue(layer));
                inputs.Add(value);
                outputNames.Add(GraphNames.PresentKey(layer));
                outputs.Add(key);
                outputNames.Add(GraphNames.PresentValue(layer));
                outputs.Add(value);
            }

            _inputNames = [.. inputNames];
            _inputs = [.. inputs];
            _outputNames = [.. outputNames];
            _outputs = [.. outputs];
        }

        public void Run() => _session.Run(_runOptions, _inputNames, _inputs, _outputNames, _outputs);

        public void Dispose()
        {
            foreach (var value in _owned)
            {
                value.Dispose();
            }

            _runOptions.Dispose();
            _session.Dispose();
        }

        private OrtValue Own(OrtValue value)
        {
            _owned.Add(value);
            return value;
        }
    }
}
