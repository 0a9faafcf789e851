using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using SpecEdge.CloudVerifier.Hosting;
using SpecEdge.Demo;
using SpecEdge.EdgeClient.Client;
using SpecEdge.Shared.Decoding;
using SpecEdge.Shared.Models;
using SpecEdge.Shared.Models.Conversion;
using SpecEdge.Shared.Models.Onnx;
using SpecEdge.Shared.Runtime;
using SpecEdge.Shared.Tokenization;

namespace SpecEdge.Bench;

/// <summary>
/// <c>quantize</c>: float32 against block-quantized drafts (int8, int4; MatMulNBits), side by side in one run, on the
/// default pair's draft and on a larger synthetic draft: draft ms per token (interleaved blocks), the size of the file
/// the edge loads, top-1 agreement with the float32 draft, and for the default pair the acceptance rate against the
/// target through the real verifier, with the output checked identical whatever the draft.
/// </summary>
internal static class QuantizeCommand
{
    private const int PastLength = 64;

    private static readonly string[] Prompts =
    [
        "The verifier checks every drafted token",
        "Once upon a time, in a small village,",
        "Speculative decoding lets a small model",
    ];

    private static readonly (string Name, WeightQuantization Quantization, int Level)[] Variants =
    [
        ("f32", WeightQuantization.None, 0),
        ("int8", WeightQuantization.Int8, 4),
        ("int4", WeightQuantization.Int4, 4),
        ("int4 (float compute)", WeightQuantization.Int4, 0),
        ("int8 QDQ (DequantizeLinear + MatMul)", WeightQuantization.Int8Qdq, 0),
    ];

    public static Command Create()
    {
        var iterations = new Option<int>("--iterations") { Description = "Timed single-token steps per variant.", DefaultValueFactory = _ => 300 };
        var tokens = new Option<int>("--tokens") { Description = "Tokens per acceptance prompt (default pair).", DefaultValueFactory = _ => 48 };
        var synthetic = new Option<string>("--synthetic") { Description = "The larger synthetic draft's size (a bench size: 1M, 25M, 110M), or none.", DefaultValueFactory = _ => "110M" };
        var threads = new Option<int>("--threads") { Description = "ONNX Runtime intra-op threads of the draft.", DefaultValueFactory = _ => 1 };
        var command = new Command("quantize", "Float32 against int8/int4 drafts: draft ms per token, file size, agreement and acceptance, side by side.") { iterations, tokens, synthetic, threads };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var pair = DefaultModels.Resolve();
            var drafts = new List<(string Label, string[] Dirs)>
            {
                ("default pair draft", Variants.Select(v => ModelResolver.Resolve(pair.Draft, new ConversionOptions { Quantization = v.Quantization, QuantizationAccuracyLevel = v.Level })).ToArray()),
            };
            if (parse.GetValue(synthetic) is { } size && size != "none")
            {
                var spec = BenchModels.Sizes[size];
                drafts.Add(($"synthetic {size} draft", Variants.Select(v => BenchModels.Converted(size, spec, options: new ConversionOptions { Quantization = v.Quantization, QuantizationAccuracyLevel = v.Level })).ToArray()));
            }

            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"Single-token draft steps after a {PastLength}-token past, {parse.GetValue(threads)} intra-op thread(s), {parse.GetValue(iterations)} steps per variant in interleaved blocks of 10; top-1 agreement with the float32 draft over its own greedy continuation of {Prompts.Length} prompts."));
            Console.WriteLine();
            Console.WriteLine("| draft | weights | file MB | ms per token (median) | vs f32 | top-1 agreement with f32 | matrix ops after ONNX Runtime's optimisation |");
            Console.WriteLine("|---|---|---|---|---|---|---|");
            foreach (var (label, dirs) in drafts)
            {
                var times = MeasureInterleaved(dirs, parse.GetValue(iterations), parse.GetValue(threads));
                var agreement = Agreement(dirs, parse.GetValue(tokens));
                for (var v = 0; v < Variants.Length; v++)
                {
                    var manifest = ModelManifest.Load(dirs[v]);
                    var bytes = manifest.Files[ModelConverter.DraftGraphFile].Bytes + (manifest.Files.TryGetValue(ModelConverter.ExternalDataFile, out var external) ? external.Bytes : 0);
                    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {label} | {Variants[v].Name} | {bytes / 1e6:F2} | {times[v]:F3} | {times[v] / times[0]:F2}x | {agreement[v]:P1} | {MatrixOps(dirs[v])} |"));
                }
            }

            // Acceptance against the real target, through the verifier, and the output identical whatever the draft.
            Console.WriteLine();
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"Default pair through a loopback verifier, pre-emptive mode, greedy, γ = 4, {Prompts.Length} prompts × {parse.GetValue(tokens)} tokens:"));
            Console.WriteLine();
            Console.WriteLine("| draft weights | acceptance rate | tokens per round | output identical to f32 draft's |");
            Console.WriteLine("|---|---|---|---|");
            var target = ModelResolver.Resolve(pair.Target, new ConversionOptions { Exits = pair.Exits });
            var (app, address) = await VerifierHost.StartLoopbackAsync(target, o =>
            {
                o.IntraOpThreads = 1;
                o.DefaultExitThreshold = 0;
            }, cancellationToken: cancellationToken);
            var failures = 0;
            await using (app)
            {
                List<string>? reference = null;
                for (var v = 0; v < Variants.Length; v++)
                {
                    await using var client = await SpecEdgeClient.ConnectAsync(new EdgeClientOptions { Server = address, DraftModel = drafts[0].Dirs[v], IntraOpThreads = 1 }, cancellationToken: cancellationToken);
                    var run = await AcceptanceRun.RunAsync(client, Prompts, parse.GetValue(tokens), cancellationToken);
                    var outputs = run.Reports.Select(r => string.Join(',', r.TokenIds)).ToList();
                    reference ??= outputs;
                    var identical = reference.SequenceEqual(outputs);
                    failures += identical ? 0 : 1;
                    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {Variants[v].Name} | {run.AcceptanceRate:F3} ({run.Accepted} of {run.Drafted}) | {run.TokensPerRound:F2} | {(identical ? "yes" : "NO")} |"));
                }
            }

            return failures == 0 ? 0 : 1;
        });
        return command;
    }

    /// <summary>Median ms of a single-token step for each folder, the folders' steps interleaved in blocks of 10.</summary>
    private static double[] MeasureInterleaved(string[] dirs, int iterations, int threads)
    {
        var models = dirs.Select(d => LanguageModel.Load(d, new RuntimeOptions { IntraOpThreads = threads, MaxSequenceLength = 256 })).ToArray();
        var contexts = models.Select(m => m.CreateContext()).ToArray();
        try
        {
            var prompt = Enumerable.Range(0, PastLength).Select(i => new TokenId((i * 7) % models[0].VocabSize)).ToArray();
            var step = new[] { new TokenId(13 % models[0].VocabSize) };
            var times = dirs.Select(_ => new List<double>()).ToArray();
            foreach (var context in contexts)
            {
                context.Prefill(prompt);
                for (var i = 0; i < 20; i++)
                {
                    context.Rollback(PastLength);
                    context.Forward(step);
                }
            }

            var stopwatch = new Stopwatch();
            for (var done = 0; done < iterations; done += 10)
            {
                for (var v = 0; v < contexts.Length; v++)
                {
                    for (var j = 0; j < 10; j++)
                    {
                        stopwatch.Restart();
                        contexts[v].Rollback(PastLength);
                        contexts[v].Forward(step);
                        times[v].Add(stopwatch.Elapsed.TotalMilliseconds);
                    }
                }
            }

            return times.Select(t => Stats.Median(t)).ToArray();
        }
        finally
        {
            foreach (var context in contexts)
            {
                context.Dispose();
            }

            foreach (var model in models)
            {
                model.Dispose();
            }
        }
    }

    /// <summary>
    /// The share of positions where each folder's argmax equals the float32 draft's (the first folder), over the
    /// float32 draft's own greedy continuation of each prompt.
    /// </summary>
    private static double[] Agreement(string[] dirs, int tokens)
    {
        var models = dirs.Select(d => LanguageModel.Load(d, new RuntimeOptions { IntraOpThreads = 2, MaxStepTokens = 256 })).ToArray();
        try
        {
            var agreed = new int[dirs.Length];
            var total = 0;
            foreach (var prompt in Prompts)
            {
                var promptIds = models[0].Tokenizer.Encode(prompt, addBos: true);
                var continuation = TargetOnlyDecoding.Greedy(models[0], promptIds, tokens, stopAtEos: false).ToArray();
                var sequence = promptIds.Concat(continuation).ToArray();
                var first = promptIds.Length - 1;
                var argmax = new List<int[]>();
                foreach (var model in models)
                {
                    using var context = model.CreateContext();
                    var logits = context.Forward(sequence);
                    argmax.Add(Enumerable.Range(first, sequence.Length - first - 1).Select(t => TokenSampler.ArgMax(logits.Row(t)).Value).ToArray());
                }

                total += argmax[0].Length;
                for (var v = 0; v < dirs.Length; v++)
                {
                    agreed[v] += argmax[v].Zip(argmax[0]).Count(p => p.First == p.Second);
                }
            }

            return agreed.Select(a => a / (double)total).ToArray();
        }
        finally
        {
            foreach (var model in models)
            {
                model.Dispose();
            }
        }
    }

    /// <summary>The matrix-product kernels ONNX Runtime runs for a draft: op types of its optimised graph, counted.</summary>
    private static string MatrixOps(string dir)
    {
        var optimized = Path.Combine(Path.GetTempPath(), $"specedge-quantize-{Guid.NewGuid():N}.onnx");
        try
        {
            using (var options = new Microsoft.ML.OnnxRuntime.SessionOptions { GraphOptimizationLevel = Microsoft.ML.OnnxRuntime.GraphOptimizationLevel.ORT_ENABLE_ALL, OptimizedModelFilePath = optimized, LogSeverityLevel = Microsoft.ML.OnnxRuntime.OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR })
            using (new Microsoft.ML.OnnxRuntime.InferenceSession(Path.Combine(dir, ModelConverter.DraftGraphFile), options))
            {
            }

            var graph = Shared.Models.Onnx.Proto.ModelProto.Parser.ParseFrom(File.ReadAllBytes(optimized)).Graph;
            return string.Join(", ", graph.Node.Where(n => n.OpType.Contains("MatMul", StringComparison.Ordinal) || n.OpType.Contains("Quantize", StringComparison.Ordinal))
                .GroupBy(n => n.OpType).OrderBy(g => g.Key, StringComparer.Ordinal).Select(g => $"{g.Key} ×{g.Count()}"));
        }
        finally
        {
            File.Delete(optimized);
            foreach (var extra in Directory.EnumerateFiles(Path.GetTempPath(), Path.GetFileName(optimized) + "*"))
            {
                File.Delete(extra);
            }
        }
    }
}
