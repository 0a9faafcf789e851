using SpecEdge.Shared.Models.Checkpoints;
using SpecEdge.Shared.Runtime;
using SpecEdge.Shared.Models.Conversion;
using SpecEdge.Shared.Models.Synthetic;
using SpecEdge.Shared.Tokenization;
using SpecEdge.TestUtilities;

namespace SpecEdge.Shared.Tests.Runtime;

/// <summary>ONNX logits against the independent plain-C# reference forward pass, within 1e-4 (fp32).</summary>
public sealed class LanguageModelParityTests : IDisposable
{
    private const float Tolerance = 1e-4f;
    private readonly TempDirectory _temp = new("parity");

    public static TheoryData<string, SyntheticModelSpec> Architectures() => new()
    {
        { "mha-untied", TestModels.Small() with { Heads = 4, KvHeads = 4 } },
        { "gqa-untied", TestModels.Small() },
        { "gqa-tied", TestModels.Small(seed: 2) with { Tied = true } },
        { "head-dim-differs", TestModels.Small(seed: 3) with { Hidden = 48, Heads = 4, KvHeads = 2, HeadDim = 16 } },
        { "theta-500000", TestModels.Small(seed: 4) with { RopeTheta = 500000 } },
        { "odd-sizes", new SyntheticModelSpec { Layers = 3, Hidden = 40, Heads = 5, KvHeads = 1, Intermediate = 50, Vocab = 301, Seed = 5, MaxPositions = 100 } },
        { "rope-linear", TestModels.Small(seed: 6) with { RopeLinearFactor = 4.0 } },
    };

    [Theory]
    [MemberData(nameof(Architectures))]
    public void Forward_FullSequence_MatchesReference(string name, SyntheticModelSpec spec)
    {
        var (model, converted) = TestModels.WriteAndConvert(_temp.Combine(name), spec);
        var tokens = Tokens(spec.Vocab, 23, seed: 11);
        var expected = model.Reference().Forward(tokens).Logits;

        using var lm = TestModels.Load(converted);
        using var context = lm.CreateContext();
        var logits = context.Forward(ToTokenIds(tokens));

        for (var t = 0; t < tokens.Length; t++)
        {
            AssertClose(expected[t], logits.Row(t), $"{name} position {t}");
        }
    }

    [Theory]
    [MemberData(nameof(Architectures))]
    public void Forward_OneTokenAtATime_MatchesReference(string name, SyntheticModelSpec spec)
    {
        var (model, converted) = TestModels.WriteAndConvert(_temp.Combine(name), spec);
        var tokens = Tokens(spec.Vocab, 17, seed: 12);
        var expected = model.Reference().Forward(tokens).Logits;

        using var lm = TestModels.Load(converted);
        using var context = lm.CreateContext();
        for (var t = 0; t < tokens.Length; t++)
        {
            var logits = context.Forward([new TokenId(tokens[t])]);
            AssertClose(expected[t], logits.Row(0), $"{name} incremental position {t}");
        }

        Assert.Equal(tokens.Length, context.Length);
    }

    [Fact]
    public void Forward_MultiTokenStepsAfterRollback_MatchReference()
    {
        var spec = TestModels.Small(seed: 21);
        var (model, converted) = TestModels.WriteAndConvert(_temp.Combine("rollback"), spec);
        var reference = model.Reference();
        var prefix = Tokens(spec.Vocab, 10, seed: 1);
        var wrong = Tokens(spec.Vocab, 5, seed: 2);
        var right = Tokens(spec.Vocab, 6, seed: 3);

        using var lm = TestModels.Load(converted);
        using var context = lm.CreateContext();
        context.Prefill(ToTokenIds(prefix));
        context.Forward(ToTokenIds(wrong));
        Assert.Equal(15, context.Length);

        // Keep two of the wrong tokens, then score a new multi-token step on top.
        context.Rollback(12);
        var logits = context.Forward(ToTokenIds(right));

        var sequence = prefix.Concat(wrong.Take(2)).Concat(right).ToArray();
        var expected = reference.Forward(sequence).Logits;
        for (var i = 0; i < right.Length; i++)
        {
            AssertClose(expected[12 + i], logits.Row(i), $"after rollback, step position {i}");
        }

        Assert.Equal(18, context.Length);
    }

    /// <summary>
    /// Llama 3's RoPE scaling, set so the head's eight frequency pairs fall in all three regimes (kept, blended, divided
    /// by the factor: wavelengths from 6 to 20 000 against thresholds of 16 and 64), over positions past the original
    /// context.
    /// </summary>
    [Fact]
    public void Forward_Llama3RopeScaling_MatchesReference()
    {
        var spec = TestModels.Small(seed: 23) with { HeadDim = 16, MaxPositions = 256, RopeLlama3 = new Llama3RopeScaling(8, 1, 4, 64) };
        var (model, converted) = TestModels.WriteAndConvert(_temp.Combine("llama3-rope"), spec);
        var tokens = Tokens(spec.Vocab, 90, seed: 6);
        var expected = model.Reference().Forward(tokens).Logits;

        using var lm = TestModels.Load(converted, maxStepTokens: 128);
        Assert.Equal(new Llama3RopeScaling(8, 1, 4, 64), lm.Config.RopeLlama3);
        using var context = lm.CreateContext();
        var logits = context.Forward(ToTokenIds(tokens));

        for (var t = 0; t < tokens.Length; t++)
        {
            AssertClose(expected[t], logits.Row(t), $"llama3 rope, position {t}");
        }
    }

    /// <summary>Qwen2: biases on the query, key and value projections, tied embeddings, θ = 1e6; both graph forms.</summary>
    [Fact]
    public void Forward_Qwen2Biases_BothGraphFormsMatchReference()
    {
        var spec = TestModels.Small(seed: 24) with { Arch = "qwen2", Tied = true, RopeTheta = 1_000_000 };
        var (model, converted) = TestModels.WriteAndConvert(_temp.Combine("qwen2"), spec);
        var tokens = Tokens(spec.Vocab, 20, seed: 7);
        var expected = model.Reference().Forward(tokens).Logits;

        using (var lm = TestModels.Load(converted))
        {
            Assert.True(lm.Config.AttentionBias);
            Assert.Equal("qwen2", lm.Config.ModelType);
        }

        AssertBothFormsMatch(converted, tokens, expected, maxSequenceLength: 64, "qwen2");
    }

    /// <summary>
    /// Mistral: within its sliding window, attention over the whole context is exact, so the model serves sequences up
    /// to the window and refuses longer ones, naming the limit.
    /// </summary>
    [Fact]
    public void Forward_MistralWithinSlidingWindow_MatchesReferenceAndLongerIsRefused()
    {
        var spec = TestModels.Small(seed: 25) with { Arch = "mistral", SlidingWindow = 16, MaxPositions = 64 };
        var (model, converted) = TestModels.WriteAndConvert(_temp.Combine("mistral"), spec);
        var tokens = Tokens(spec.Vocab, 16, seed: 8);
        var expected = model.Reference().Forward(tokens).Logits;

        using var lm = TestModels.Load(converted);
        Assert.Equal(16, lm.MaxSequenceLength);
        using var context = lm.CreateContext();
        var logits = context.Forward(ToTokenIds(tokens));
        for (var t = 0; t < tokens.Length; t++)
        {
            AssertClose(expected[t], logits.Row(t), $"mistral position {t}");
        }

        var error = Assert.Throws<SequenceTooLongException>(() => context.Forward(ToTokenIds([1])));
        Assert.Equal(16, error.MaxLength);
    }

    /// <summary>Phi-3: fused qkv_proj and gate_up_proj in the checkpoint, split at conversion; both graph forms.</summary>
    [Fact]
    public void Forward_Phi3FusedProjections_BothGraphFormsMatchReference()
    {
        var spec = TestModels.Small(seed: 26) with { Arch = "phi3", SlidingWindow = 48, MaxPositions = 64 };
        var (model, converted) = TestModels.WriteAndConvert(_temp.Combine("phi3"), spec);
        Assert.Contains("model.layers.0.self_attn.qkv_proj.weight", model.Weights.Keys);
        Assert.DoesNotContain("model.layers.0.self_attn.q_proj.weight", model.Weights.Keys);
        var tokens = Tokens(spec.Vocab, 20, seed: 9);
        var expected = model.Reference().Forward(tokens).Logits;

        using (var lm = TestModels.Load(converted))
        {
            Assert.Equal(48, lm.MaxSequenceLength);
        }

        AssertBothFormsMatch(converted, tokens, expected, maxSequenceLength: 48, "phi3");
    }

    /// <summary>A model's logits through the shared-buffer form (a decode context) and the batched form (a one-row batch) against the reference's.</summary>
    private static void AssertBothFormsMatch(string converted, int[] tokens, float[][] expected, int maxSequenceLength, string name)
    {
        using (var lm = TestModels.Load(converted))
        {
            using var context = lm.CreateContext();
            var logits = context.Forward(ToTokenIds(tokens));
            for (var t = 0; t < tokens.Length; t++)
            {
                AssertClose(expected[t], logits.Row(t), $"{name} shared-buffer form, position {t}");
            }
        }

        using var batched = TestModels.Load(converted, attention: SpecEdge.Shared.Models.Onnx.AttentionForm.Batched);
        using var runner = new BatchRunner(batched, maxSlots: 1, maxSequenceLength: maxSequenceLength, maxRows: 1, maxBatchTokens: 64);
        var slot = runner.Allocate();
        runner.BeginStep([new BatchRow(slot, ToTokenIds(tokens))]);
        var rows = runner.RunNextStage().Row(0, tokens.Length);
        for (var t = 0; t < tokens.Length; t++)
        {
            AssertClose(expected[t], rows.Row(t), $"{name} batched form, position {t}");
        }
    }

    [Fact]
    public void Prefill_LongerThanOneStep_MatchesReference()
    {
        var spec = TestModels.Small(seed: 22);
        var (model, converted) = TestModels.WriteAndConvert(_temp.Combine("chunked"), spec);
        var tokens = Tokens(spec.Vocab, 30, seed: 4);

        using var lm = TestModels.Load(converted, maxStepTokens: 8);
        using var context = lm.CreateContext();
        var last = context.Prefill(ToTokenIds(tokens)).ToArray();

        AssertClose(model.Reference().Forward(tokens).Logits[^1], last, "last position of a chunked prefill");
    }

    [Theory]
    [InlineData(TensorDType.Float32, TensorDType.Float32, 1)]
    [InlineData(TensorDType.Float16, TensorDType.Float32, 1)]
    [InlineData(TensorDType.BFloat16, TensorDType.Float32, 1)]
    [InlineData(TensorDType.Float32, TensorDType.Float32, 3)]
    [InlineData(TensorDType.BFloat16, TensorDType.Float32, 4)]
    public void Forward_CheckpointDtypesAndShards_MatchReference(TensorDType checkpointDtype, TensorDType storage, int shards)
    {
        var spec = TestModels.Small(seed: 31);
        var (model, converted) = TestModels.WriteAndConvert(
            _temp.Combine($"{checkpointDtype}-{shards}"), spec, new ConversionOptions { WeightsDtype = storage }, checkpointDtype, shards);
        var tokens = Tokens(spec.Vocab, 12, seed: 5);
        var expected = model.Reference().Forward(tokens).Logits;

        using var lm = TestModels.Load(converted);
        using var context = lm.CreateContext();
        var logits = context.Forward(ToTokenIds(tokens));

        for (var t = 0; t < tokens.Length; t++)
        {
            AssertClose(expected[t], logits.Row(t), $"{checkpointDtype} x{shards} position {t}");
        }
    }

    [Fact]
    public void Forward_Float16WeightStorage_MatchesReferenceOnRoundedWeights()
    {
        var spec = TestModels.Small(seed: 32);
        var (model, converted) = TestModels.WriteAndConvert(_temp.Combine("f16-storage"), spec, new ConversionOptions { WeightsDtype = TensorDType.Float16 });
        var rounded = model.Weights.ToDictionary(kv => kv.Key, kv => Precision.RoundToHalf(kv.Value));
        var tokens = Tokens(spec.Vocab, 12, seed: 6);
        var expected = new ReferenceLlama(model.Config, rounded).Forward(tokens).Logits;

        using var lm = TestModels.Load(converted);
        using var context = lm.CreateContext();
        var logits = context.Forward(ToTokenIds(tokens));

        for (var t = 0; t < tokens.Length; t++)
        {
            AssertClose(expected[t], logits.Row(t), $"f16 storage position {t}");
        }
    }

    [Fact]
    public void Forward_ExternalData_MatchesReference()
    {
        var spec = TestModels.Small(seed: 33) with { Layers = 4 };
        var (model, converted) = TestModels.WriteAndConvert(_temp.Combine("external"), spec, new ConversionOptions { Exits = [2], ExternalData = ExternalDataPolicy.Always });
        Assert.True(File.Exists(Path.Combine(converted, ModelConverter.ExternalDataFile)));
        var tokens = Tokens(spec.Vocab, 9, seed: 7);
        var expected = model.Reference().Forward(tokens).Logits;

        using var lm = TestModels.Load(converted);
        using var context = lm.CreateContext();
        var logits = context.Forward(ToTokenIds(tokens));

        for (var t = 0; t < tokens.Length; t++)
        {
            AssertClose(expected[t], logits.Row(t), $"external data position {t}");
        }
    }

    internal static int[] Tokens(int vocab, int count, int seed)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => random.Next(vocab)).ToArray();
    }

    internal static TokenId[] ToTokenIds(int[] tokens) => tokens.Select(t => new TokenId(t)).ToArray();

    internal static void AssertClose(float[] expected, ReadOnlySpan<float> actual, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        var worst = 0f;
        var at = -1;
        for (var i = 0; i < expected.Length; i++)
        {
            var diff = Math.Abs(expected[i] - actual[i]);
            if (!(diff <= worst))
            {
                worst = diff;
                at = i;
            }
        }

        Assert.True(worst <= Tolerance, $"{what}: logit {at} differs by {worst} (expected {expected[Math.Max(at, 0)]}, got {actual[Math.Max(at, 0)]})");
    }

    public void Dispose() => _temp.Dispose();
}
