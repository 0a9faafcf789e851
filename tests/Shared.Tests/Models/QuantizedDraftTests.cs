using SpecEdge.Shared.Models.Conversion;
using SpecEdge.Shared.Models.Onnx;
using SpecEdge.Shared.Models.Onnx.Proto;
using SpecEdge.Shared.Models.Synthetic;
using SpecEdge.Shared.Tests.Runtime;
using SpecEdge.TestUtilities;

namespace SpecEdge.Shared.Tests.Models;

/// <summary>
/// Block-quantized drafts (MatMulNBits): the blocks are read back from the ONNX file and dequantized here, by ONNX
/// Runtime's documented layout, and the reference forward pass on those weights must match the graph's logits.
/// </summary>
public sealed class QuantizedDraftTests : IDisposable
{
    private readonly TempDirectory _temp = new("quantized");

    /// <summary>Columns of 80 and 96 make three blocks of 32 (the last one partial for 80): odd zero-point packing and padding.</summary>
    private static SyntheticModelSpec Spec(ulong seed) => new()
    {
        Layers = 2,
        Hidden = 80,
        Heads = 5,
        KvHeads = 1,
        HeadDim = 16,
        Intermediate = 96,
        Vocab = 258,
        Seed = seed,
        MaxPositions = 128,
    };

    [Theory]
    [InlineData(WeightQuantization.Int4)]
    [InlineData(WeightQuantization.Int8)]
    public void QuantizedGraph_AtFloatAccuracy_MatchesReferenceOnItsDequantizedWeights(WeightQuantization quantization)
    {
        var spec = Spec(seed: 31);
        var (model, converted) = TestModels.WriteAndConvert(_temp.Combine(quantization.ToString()), spec, new ConversionOptions { Quantization = quantization, QuantizationAccuracyLevel = 0 });
        var dequantized = DequantizedWeights(Path.Combine(converted, ModelConverter.DraftGraphFile), model.Weights, quantization.Bits(), out _);
        var tokens = LanguageModelParityTests.Tokens(spec.Vocab, 21, seed: 5);
        var expected = new ReferenceLlama(model.Config, dequantized).Forward(tokens).Logits;

        using var lm = TestModels.Load(converted);
        using var context = lm.CreateContext();
        var logits = context.Forward(LanguageModelParityTests.ToTokenIds(tokens));
        for (var t = 0; t < tokens.Length; t++)
        {
            LanguageModelParityTests.AssertClose(expected[t], logits.Row(t), $"{quantization} position {t}");
        }
    }

    [Theory]
    [InlineData(WeightQuantization.Int4, 0.5)]
    [InlineData(WeightQuantization.Int8, 0.5)]
    public void QuantizedWeights_StayWithinHalfAStepOfTheOriginal(WeightQuantization quantization, double steps)
    {
        var spec = Spec(seed: 32);
        var (model, converted) = TestModels.WriteAndConvert(_temp.Combine(quantization.ToString()), spec, new ConversionOptions { Quantization = quantization });
        var graph = Path.Combine(converted, ModelConverter.DraftGraphFile);
        var dequantized = DequantizedWeights(graph, model.Weights, quantization.Bits(), out var shapes);
        var levels = (1 << quantization.Bits()) - 1;
        var compared = 0;
        foreach (var (name, original) in model.Weights)
        {
            if (!name.EndsWith("proj.weight", StringComparison.Ordinal))
            {
                continue;
            }

            // Block ranges are at most the row's full range, so each error is at most half a step of that range.
            var (rows, columns) = shapes[name];
            for (var row = 0; row < rows; row++)
            {
                var slice = original.AsSpan(row * columns, columns);
                var step = (Math.Max(0, slice.ToArray().Max()) - Math.Min(0, slice.ToArray().Min())) / levels;
                for (var col = 0; col < columns; col++)
                {
                    var error = Math.Abs(dequantized[name][(row * columns) + col] - slice[col]);
                    Assert.True(error <= (steps * step) + 1e-6, $"{name}[{row},{col}]: error {error} exceeds {steps} of a step {step}");
                }
            }

            Assert.NotEqual(original, dequantized[name]);
            compared++;
        }

        Assert.Equal(spec.Layers * 7, compared);
        Assert.True(new FileInfo(graph).Length < new FileInfo(Path.Combine(model.CheckpointDir, "model.safetensors")).Length);
    }

    [Theory]
    [InlineData(WeightQuantization.Int4)]
    [InlineData(WeightQuantization.Int8Qdq)]
    public void WithInt8Activations_StaysCloseToTheReference(WeightQuantization quantization)
    {
        // accuracy_level 4 also quantizes the activations to int8 per block of 32 (a relative error of up to 1/254 of a
        // block's largest magnitude per element), and ONNX Runtime's CPU runs the QDQ form's DequantizeLinear + MatMul as
        // an integer product with activations quantized on the fly; so the bound is looser than float32's 1e-4: 2 % of
        // the logits' range.
        var spec = Spec(seed: 33);
        var (model, converted) = TestModels.WriteAndConvert(_temp.Combine("level4"), spec, new ConversionOptions { Quantization = quantization, QuantizationAccuracyLevel = 4 });
        var dequantized = DequantizedWeights(Path.Combine(converted, ModelConverter.DraftGraphFile), model.Weights, bits: quantization.Bits(), out _);
        var tokens = LanguageModelParityTests.Tokens(spec.Vocab, 16, seed: 6);
        var expected = new ReferenceLlama(model.Config, dequantized).Forward(tokens).Logits;

        using var lm = TestModels.Load(converted);
        using var context = lm.CreateContext();
        var logits = context.Forward(LanguageModelParityTests.ToTokenIds(tokens));
        var worst = 0.0;
        for (var t = 0; t < tokens.Length; t++)
        {
            var range = expected[t].Max() - expected[t].Min();
            var row = logits.Row(t);
            for (var i = 0; i < row.Length; i++)
            {
                worst = Math.Max(worst, Math.Abs(row[i] - expected[t][i]) / range);
            }
        }

        Assert.True(worst < 0.02, $"largest logit error {worst:P2} of the range");
        Assert.True(worst > 1e-6, "accuracy level 4 should differ from float32 compute at all");
    }

    /// <summary>
    /// The model's weights with every MatMulNBits weight replaced by its dequantization from the graph's own
    /// initializers: element k of row n is (q − zero point) × scale of block k / block_size, per ONNX Runtime's
    /// contrib operator documentation (4-bit values two a byte, low nibble first).
    /// </summary>
    private static Dictionary<string, float[]> DequantizedWeights(string graphPath, IReadOnlyDictionary<string, float[]> original, int bits, out Dictionary<string, (int Rows, int Columns)> shapes)
    {
        shapes = [];
        var model = ModelProto.Parser.ParseFrom(File.ReadAllBytes(graphPath));
        var initializers = model.Graph.Initializer.ToDictionary(t => t.Name, t => t.RawData.ToByteArray());
        var result = new Dictionary<string, float[]>(original);
        foreach (var node in model.Graph.Node.Where(n => n.OpType == "DequantizeLinear"))
        {
            // The QDQ form: y = (x − zero point) × scale per output column (axis 1 of the [in, out] weight).
            var codes = model.Graph.Initializer.Single(t => t.Name == node.Input[0]);
            var (k, n) = ((int)codes.Dims[0], (int)codes.Dims[1]);
            var data = initializers[node.Input[0]];
            var scales = initializers[node.Input[1]];
            var zeros = initializers[node.Input[2]];
            var weight = new float[(long)n * k];
            for (var o = 0; o < n; o++)
            {
                for (var i = 0; i < k; i++)
                {
                    weight[((long)o * k) + i] = (data[((long)i * n) + o] - zeros[o]) * BitConverter.ToSingle(scales, o * 4);
                }
            }

            var tensor = node.Input[0][..node.Input[0].LastIndexOf(".qdq8", StringComparison.Ordinal)];
            Assert.Equal(original[tensor].Length, weight.Length);
            result[tensor] = weight;
            shapes[tensor] = (n, k);
        }

        if (model.Graph.Node.Any(n => n.OpType == "DequantizeLinear"))
        {
            return result;
        }

        var nodes = model.Graph.Node.Where(n => n.OpType == "MatMulNBits").ToList();
        Assert.NotEmpty(nodes);
        foreach (var node in nodes)
        {
            long Attr(string name) => node.Attribute.Single(a => a.Name == name).I;
            var (k, n, blockSize) = ((int)Attr("K"), (int)Attr("N"), (int)Attr("block_size"));
            Assert.Equal(bits, (int)Attr("bits"));
            var packed = initializers[node.Input[1]];
            var scales = initializers[node.Input[2]];
            var zeros = initializers[node.Input[3]];
            var blocks = (k + blockSize - 1) / blockSize;
            var blockBytes = blockSize * bits / 8;
            var zeroBytesPerRow = ((blocks * bits) + 7) / 8;
            var weight = new float[(long)n * k];
            for (var row = 0; row < n; row++)
            {
                for (var col = 0; col < k; col++)
                {
                    var block = col / blockSize;
                    var within = col % blockSize;
                    var blob = (((long)row * blocks) + block) * blockBytes;
                    int q, zero;
                    if (bits == 8)
                    {
                        q = packed[blob + within];
                        zero = zeros[(row * zeroBytesPerRow) + block];
                    }
                    else
                    {
                        q = (packed[blob + (within / 2)] >> (4 * (within % 2))) & 0xF;
                        zero = (zeros[(row * zeroBytesPerRow) + (block / 2)] >> (4 * (block % 2))) & 0xF;
                    }

                    var scale = BitConverter.ToSingle(scales, ((row * blocks) + block) * 4);
                    weight[((long)row * k) + col] = (q - zero) * scale;
                }
            }

            // Initializers are named after the checkpoint tensor: "<name>.q4" (the tied head: "lm_head.weight.tied.q4").
            var tensor = node.Input[1][..node.Input[1].LastIndexOf(".q", StringComparison.Ordinal)];
            Assert.True(original.ContainsKey(tensor), $"MatMulNBits weight {node.Input[1]} names no checkpoint tensor");
            Assert.Equal(original[tensor].Length, weight.Length);
            result[tensor] = weight;
            shapes[tensor] = (n, k);
        }

        return result;
    }

    public void Dispose() => _temp.Dispose();
}
