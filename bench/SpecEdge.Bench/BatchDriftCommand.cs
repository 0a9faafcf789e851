using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using SpecEdge.Demo;
using SpecEdge.Shared.Models.Conversion;
using SpecEdge.Shared.Models.Onnx;
using SpecEdge.Shared.Runtime;
using SpecEdge.Shared.Tokenization;

namespace SpecEdge.Bench;

/// <summary>
/// <c>batch-drift</c>: how far ONNX Runtime's logits for a sequence move with the batch it runs in. Each sequence is
/// scored alone through the shared-buffer graphs (what target-only decoding and the edge use), alone through the batched
/// graphs, and as one row of a batch of 16 of mixed lengths; the largest absolute logit differences and the argmax flips
/// are reported, with the cost of a round-sized step in each form.
/// </summary>
internal static class BatchDriftCommand
{
    public static Command Create()
    {
        var sequences = new Option<int>("--sequences") { Description = "Sequences per model.", DefaultValueFactory = _ => 64 };
        var batch = new Option<int>("--batch") { Description = "Rows of the large batch.", DefaultValueFactory = _ => 16 };
        var command = new Command("batch-drift", "Logit differences between batch 1 and a batch of 16 (and between the graph forms), on the trained pair and a synthetic model.") { sequences, batch };
        command.SetAction(parse =>
        {
            var pair = DefaultModels.Resolve();
            var targets = new List<(string Name, string Dir)> { ($"default target ({(pair.Trained ? "trained" : "synthetic")})", pair.Target) };
            targets.Add(("synthetic 25M (seeded random weights)", BenchModels.Converted("25M", BenchModels.Sizes["25M"], [3])));
            Console.WriteLine($"| model | sequences | batched form, batch 1 vs {parse.GetValue(batch)}: max abs logit diff | argmax flips | shared-buffer vs batched form (batch 1): max abs diff | argmax flips | largest logit magnitude | step ms: shared-buffer, 1 row | batched, 1 row | batched, {parse.GetValue(batch)} rows (per row) |");
            Console.WriteLine("|---|---|---|---|---|---|---|---|---|---|");
            foreach (var (name, dir) in targets)
            {
                var converted = ModelResolver.Resolve(dir, new ConversionOptions { Exits = name.StartsWith("default", StringComparison.Ordinal) ? [.. pair.Exits] : [3] });
                Console.WriteLine(Measure(name, converted, parse.GetValue(sequences), parse.GetValue(batch)));
            }

            return 0;
        });
        return command;
    }

    private static string Measure(string name, string dir, int sequences, int batch)
    {
        using var single = LanguageModel.Load(dir, new RuntimeOptions { IntraOpThreads = 1 });
        using var batched = LanguageModel.Load(dir, new RuntimeOptions { IntraOpThreads = 1, Attention = AttentionForm.Batched });
        var vocab = single.VocabSize;
        var random = new Random(2026);
        double batchDiff = 0, formDiff = 0, magnitude = 0;
        int batchFlips = 0, formFlips = 0;
        var singleWatch = new Stopwatch();
        var batchedOneWatch = new Stopwatch();
        var batchedManyWatch = new Stopwatch();
        long manyRows = 0;
        const int RoundTokens = 5;
        using var alone = new BatchRunner(batched, 1, 512, 1, 64);
        using var many = new BatchRunner(batched, batch, 512, batch, batch * 32);
        for (var group = 0; group < sequences; group += batch)
        {
            // A batch of sequences of 10 to 300 tokens; each gets a round of 5 tokens after its prefix.
            var prefixes = Enumerable.Range(0, batch).Select(_ => Enumerable.Range(0, 10 + random.Next(290)).Select(_ => new TokenId(random.Next(vocab))).ToArray()).ToList();
            var rounds = Enumerable.Range(0, batch).Select(_ => Enumerable.Range(0, RoundTokens).Select(_ => new TokenId(random.Next(vocab))).ToArray()).ToList();
            var slots = prefixes.Select(_ => many.Allocate()).ToList();
            for (var i = 0; i < batch; i++)
            {
                Prefill(many, slots[i], prefixes[i]);
            }

            batchedManyWatch.Start();
            many.BeginStep([.. slots.Select((slot, i) => new BatchRow(slot, rounds[i]))]);
            BatchLogits logits = default;
            for (var s = 0; s < batched.Stages.Count; s++)
            {
                logits = many.RunNextStage();
            }

            batchedManyWatch.Stop();
            manyRows += batch;
            var fromBatch = Enumerable.Range(0, batch).Select(i => Copy(logits.Row(i, RoundTokens))).ToList();

            for (var i = 0; i < batch && group + i < sequences; i++)
            {
                var slot = alone.Allocate();
                Prefill(alone, slot, prefixes[i]);
                batchedOneWatch.Start();
                alone.BeginStep([new BatchRow(slot, rounds[i])]);
                BatchLogits one = default;
                for (var s = 0; s < batched.Stages.Count; s++)
                {
                    one = alone.RunNextStage();
                }

                batchedOneWatch.Stop();
                var fromOne = Copy(one.Row(0, RoundTokens));
                alone.Release(slot);

                using var context = single.CreateContext(512);
                context.Prefill(prefixes[i]);
                singleWatch.Start();
                var reference = context.Forward(rounds[i]);
                singleWatch.Stop();
                var fromSingle = Copy(reference);
                for (var t = 0; t < RoundTokens; t++)
                {
                    (batchDiff, batchFlips) = Compare(fromOne[t], fromBatch[i][t], batchDiff, batchFlips);
                    (formDiff, formFlips) = Compare(fromSingle[t], fromOne[t], formDiff, formFlips);
                    magnitude = Math.Max(magnitude, fromSingle[t].Max(Math.Abs));
                }
            }

            foreach (var slot in slots)
            {
                many.Release(slot);
            }
        }

        return string.Create(CultureInfo.InvariantCulture,
            $"| {name} | {sequences} | {batchDiff:G3} | {batchFlips} | {formDiff:G3} | {formFlips} | {magnitude:F1} | {singleWatch.Elapsed.TotalMilliseconds / sequences:F2} | {batchedOneWatch.Elapsed.TotalMilliseconds / sequences:F2} | {batchedManyWatch.Elapsed.TotalMilliseconds / manyRows:F2} |");
    }

    private static void Prefill(BatchRunner runner, SequenceSlot slot, TokenId[] prefix)
    {
        for (var at = 0; at < prefix.Length; at += runner.MaxStepTokens)
        {
            runner.BeginStep([new BatchRow(slot, prefix.AsMemory(at, Math.Min(runner.MaxStepTokens, prefix.Length - at)))]);
            while (runner.NextStage >= 0)
            {
                runner.RunNextStage();
            }
        }
    }

    private static float[][] Copy(LogitsView view) => Enumerable.Range(0, view.Rows).Select(r => view.Row(r).ToArray()).ToArray();

    private static (double Max, int Flips) Compare(float[] a, float[] b, double max, int flips)
    {
        for (var i = 0; i < a.Length; i++)
        {
            max = Math.Max(max, Math.Abs(a[i] - b[i]));
        }

        return (max, flips + (ArgMax(a) == ArgMax(b) ? 0 : 1));
    }

    private static int ArgMax(float[] values)
    {
        var best = 0;
        for (var i = 1; i < values.Length; i++)
        {
            if (values[i] > values[best])
            {
                best = i;
            }
        }

        return best;
    }
}
