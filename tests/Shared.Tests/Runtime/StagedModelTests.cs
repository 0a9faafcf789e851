using SpecEdge.Shared.Models;
using SpecEdge.Shared.Models.Checkpoints;
using SpecEdge.Shared.Models.Conversion;
using SpecEdge.Shared.Numerics;
using SpecEdge.TestUtilities;
using static SpecEdge.Shared.Tests.Runtime.LanguageModelParityTests;

namespace SpecEdge.Shared.Tests.Runtime;

/// <summary>The staged target form: every stage's exit logits against the reference head on the reference hidden state.</summary>
public sealed class StagedModelTests : IDisposable
{
    private readonly TempDirectory _temp = new("staged");

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void RunNextStage_EachExit_MatchesReferenceHeadOnHiddenState(bool tied)
    {
        var spec = TestModels.Small(seed: 41) with { Layers = 5, Tied = tied };
        var (model, converted) = TestModels.WriteAndConvert(_temp.Combine($"tied-{tied}"), spec, new ConversionOptions { Exits = [1, 3] });
        var reference = model.Reference();
        var tokens = Tokens(spec.Vocab, 9, seed: 8);
        var expected = reference.Forward(tokens);

        using var lm = TestModels.Load(converted);
        Assert.Equal(ModelKind.Staged, lm.Manifest.Kind);
        Assert.Equal(3, lm.Stages.Count);
        using var context = lm.CreateContext();
        context.BeginStep(ToTokenIds(tokens));

        int[] layers = [1, 3, 5];
        for (var s = 0; s < 3; s++)
        {
            Assert.Equal(s, context.NextStage);
            var logits = context.RunNextStage();
            for (var t = 0; t < tokens.Length; t++)
            {
                var want = s == 2 ? expected.Logits[t] : reference.Head(expected.HiddenAfterLayer[layers[s]][t], null, null, null);
                AssertClose(want, logits.Row(t), $"stage {s} position {t}");
            }
        }

        Assert.Equal(-1, context.NextStage);
        Assert.Equal(tokens.Length, context.Length);
    }

    [Fact]
    public void RunNextStage_AfterRollbackAcrossStages_MatchesReference()
    {
        var spec = TestModels.Small(seed: 42) with { Layers = 4 };
        var (model, converted) = TestModels.WriteAndConvert(_temp.Combine("rollback"), spec, new ConversionOptions { Exits = [2] });
        var reference = model.Reference();
        var first = Tokens(spec.Vocab, 8, seed: 9);
        var second = Tokens(spec.Vocab, 4, seed: 10);

        using var lm = TestModels.Load(converted);
        using var context = lm.CreateContext();
        context.Forward(ToTokenIds(first));

        // Start a step, run only the exit stage, then abandon it: the next step must not see its cache writes.
        context.BeginStep(ToTokenIds(Tokens(spec.Vocab, 3, seed: 11)));
        context.RunNextStage();
        context.Rollback(5);
        context.BeginStep(ToTokenIds(second));
        var exitLogits = context.RunNextStage().Row(3).ToArray();
        var finalLogits = context.RunNextStage().Row(3).ToArray();

        var sequence = first.Take(5).Concat(second).ToArray();
        var expected = reference.Forward(sequence);
        AssertClose(reference.Head(expected.HiddenAfterLayer[2][^1], null, null, null), exitLogits, "exit after rollback");
        AssertClose(expected.Logits[^1], finalLogits, "final after rollback");
        Assert.Equal(9, context.Length);
    }

    [Fact]
    public void Convert_WithExitAdapters_ExitUsesAdapterWeights()
    {
        var spec = TestModels.Small(seed: 43) with { Layers = 3 };
        var model = TestModels.WriteCheckpoint(_temp.Combine("checkpoint"), spec);
        var c = model.Config;
        var norm = Random(1, c.HiddenSize, 1.0, 0.2);
        var projection = Random(2, c.HiddenSize * c.HiddenSize, 0.0, 0.1);
        var head = Random(3, c.VocabSize * c.HiddenSize, 0.0, 0.3);
        var adapters = _temp.Combine("adapters.safetensors");
        SafetensorsWriter.WriteFile(adapters, [
            new HostTensor("exits.1.norm.weight", [c.HiddenSize], norm),
            new HostTensor("exits.1.proj.weight", [c.HiddenSize, c.HiddenSize], projection),
            new HostTensor("exits.1.lm_head.weight", [c.VocabSize, c.HiddenSize], head),
        ], TensorDType.Float32);
        var converted = _temp.Combine("converted");
        ModelConverter.Convert(model.CheckpointDir, converted, new ConversionOptions { Exits = [1], ExitAdaptersPath = adapters });
        var reference = model.Reference();
        var tokens = Tokens(spec.Vocab, 6, seed: 12);
        var expected = reference.Forward(tokens);

        using var lm = TestModels.Load(converted);
        using var context = lm.CreateContext();
        context.BeginStep(ToTokenIds(tokens));
        var exit = context.RunNextStage();

        for (var t = 0; t < tokens.Length; t++)
        {
            AssertClose(reference.Head(expected.HiddenAfterLayer[1][t], norm, projection, head), exit.Row(t), $"adapter exit position {t}");
        }

        Assert.Equal("exit_adapters.safetensors", lm.Manifest.ExitAdapters);
    }

    private static float[] Random(ulong seed, int count, double mean, double std)
    {
        var rng = new SplitMix64(seed);
        return Enumerable.Range(0, count).Select(_ => (float)(mean + (std * rng.NextGaussian()))).ToArray();
    }

    public void Dispose() => _temp.Dispose();
}
