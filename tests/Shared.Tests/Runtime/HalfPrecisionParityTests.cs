using SpecEdge.Shared.Models.Checkpoints;
using SpecEdge.Shared.Models.Conversion;
using SpecEdge.Shared.Models.Onnx;
using SpecEdge.Shared.Runtime;
using SpecEdge.Shared.Tokenization;
using SpecEdge.TestUtilities;
using Xunit.Abstractions;

namespace SpecEdge.Shared.Tests.Runtime;

/// <summary>
/// Graphs converted with float16 compute (convert --compute f16), run on ONNX Runtime's CPU kernels, against the
/// float64 reference forward pass on the same float16-rounded weights, in both graph forms and at every exit.
/// </summary>
public sealed class HalfPrecisionParityTests(ITestOutputHelper output) : IDisposable
{
    private readonly TempDirectory _temp = new("f16");

    [Fact]
    public void HalfCompute_SharedBufferForm_StaysWithinTheHalfPrecisionBound()
    {
        var spec = TestModels.Small(seed: 41) with { Layers = 3 };
        var (model, converted) = TestModels.WriteAndConvert(_temp.Combine("shared"), spec, new ConversionOptions { Exits = [1], ComputeDtype = TensorDType.Float16 });
        var weights = model.Weights.ToDictionary(w => w.Key, w => Precision.RoundToHalf(w.Value));
        var reference = new ReferenceLlama(model.Config, weights);
        var tokens = LanguageModelParityTests.Tokens(spec.Vocab, 19, seed: 8);
        var expected = reference.Forward(tokens);

        using var lm = TestModels.Load(converted);
        Assert.Equal(Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Float16, lm.ComputeElementType);
        using var context = lm.CreateContext();
        var worst = 0.0;
        for (var t = 0; t < tokens.Length; t++)
        {
            context.BeginStep([new TokenId(tokens[t])]);
            var exit = context.RunNextStage();
            worst = Math.Max(worst, RelativeError(reference.Head(expected.HiddenAfterLayer[1][t], null, null, null), exit.Row(0)));
            var final = context.RunNextStage();
            worst = Math.Max(worst, RelativeError(expected.Logits[t], final.Row(0)));
        }

        output.WriteLine($"largest error: {worst:E2} of the logits' range");
        Assert.True(worst < Bound, $"largest error {worst:E2} of the logits' range passes the float16 bound {Bound:E1}");
    }

    [Fact]
    public void HalfCompute_BatchedForm_RowsOfDifferentLengths_StayWithinTheHalfPrecisionBound()
    {
        var spec = TestModels.Small(seed: 42) with { Layers = 3 };
        var (model, converted) = TestModels.WriteAndConvert(_temp.Combine("batched"), spec, new ConversionOptions { Exits = [2], ComputeDtype = TensorDType.Float16 });
        var reference = new ReferenceLlama(model.Config, model.Weights.ToDictionary(w => w.Key, w => Precision.RoundToHalf(w.Value)));
        using var lm = TestModels.Load(converted, attention: AttentionForm.Batched);
        using var runner = new BatchRunner(lm, maxSlots: 4, maxSequenceLength: 64, maxRows: 4, maxBatchTokens: 128);
        Assert.Equal(2L * 3 * spec.KvHeads * (spec.Hidden / spec.Heads) * 64 * sizeof(ushort), runner.BytesPerSlot);

        // Three sequences, steps of 1 to 7 tokens each (rows padded), slots moving as membership changes.
        var random = new Random(3);
        var sequences = Enumerable.Range(0, 3).Select(_ => new List<int>()).ToList();
        var slots = sequences.Select(_ => runner.Allocate()).ToList();
        var worst = 0.0;
        for (var step = 0; step < 4; step++)
        {
            var members = step == 2 ? new[] { 2, 0 } : [0, 1, 2];
            var added = members.Select(i => LanguageModelParityTests.Tokens(spec.Vocab, 1 + random.Next(7), seed: (step * 10) + i)).ToList();
            runner.BeginStep([.. members.Select((i, r) => new BatchRow(slots[i], LanguageModelParityTests.ToTokenIds(added[r])))]);
            var expected = members.Select((i, r) => reference.Forward([.. sequences[i], .. added[r]])).ToList();
            var exit = runner.RunNextStage();
            for (var r = 0; r < members.Length; r++)
            {
                var rows = exit.Row(r, added[r].Length);
                for (var t = 0; t < added[r].Length; t++)
                {
                    var at = sequences[members[r]].Count + t;
                    worst = Math.Max(worst, RelativeError(reference.Head(expected[r].HiddenAfterLayer[2][at], null, null, null), rows.Row(t)));
                }
            }

            var final = runner.RunNextStage();
            for (var r = 0; r < members.Length; r++)
            {
                var before = sequences[members[r]].Count;
                sequences[members[r]].AddRange(added[r]);
                var rows = final.Row(r, added[r].Length);
                for (var t = 0; t < added[r].Length; t++)
                {
                    worst = Math.Max(worst, RelativeError(expected[r].Logits[before + t], rows.Row(t)));
                }
            }
        }

        output.WriteLine($"largest error: {worst:E2} of the logits' range");
        Assert.True(worst < Bound, $"largest error {worst:E2} of the logits' range passes the float16 bound {Bound:E1}");
    }

    /// <summary>
    /// The bound: 0.5 % of each position's logit range. Float16 keeps 11 significant bits (unit roundoff 2^-11 ≈ 4.9e-4);
    /// every op rounds its result (about ten per layer, three layers and a head here), and rounding errors of
    /// independent ops add roughly as a random walk, about 4.9e-4 × √40 ≈ 3e-3 of the range; 0.5 % leaves room for the
    /// worst position and for the head's matrix product over the whole hidden size (measured here: about 7e-4). Float32's
    /// bound is 1e-4 absolute.
    /// </summary>
    private const double Bound = 0.005;

    private static double RelativeError(float[] expected, ReadOnlySpan<float> actual)
    {
        var range = expected.Max() - expected.Min();
        var worst = 0.0;
        for (var i = 0; i < expected.Length; i++)
        {
            worst = Math.Max(worst, Math.Abs(actual[i] - expected[i]) / range);
        }

        return worst;
    }

    public void Dispose() => _temp.Dispose();
}
