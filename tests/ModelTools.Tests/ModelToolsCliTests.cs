using System.CommandLine;
using System.Text.Json.Nodes;
using SpecEdge.Shared.Tokenization;
using SpecEdge.TestUtilities;

namespace SpecEdge.ModelTools.Tests;

/// <summary>The specedge-models CLI end to end: synth, convert (plain and staged), inspect --json.</summary>
public sealed class ModelToolsCliTests : IDisposable
{
    private readonly TempDirectory _temp = new("models-cli");

    [Theory]
    [InlineData("f32", 1)]
    [InlineData("f16", 1)]
    [InlineData("bf16", 1)]
    [InlineData("f32", 3)]
    public void SynthConvertInspect_PlainAndTwoExits_ProduceWorkingModels(string dtype, int shards)
    {
        var checkpoint = _temp.Combine($"ck-{dtype}-{shards}");
        var (code, output, error) = Run("synth", "--out", checkpoint, "--layers", "4", "--hidden", "64", "--heads", "4", "--kv-heads", "2", "--intermediate", "96", "--vocab", "300", "--seed", "7", "--dtype", dtype, "--shards", shards.ToString(System.Globalization.CultureInfo.InvariantCulture));
        Assert.True(code == 0, error);
        Assert.Contains("4 layers", output);
        Assert.True(File.Exists(Path.Combine(checkpoint, TokenizerFiles.TokenizerJson)));

        var plain = _temp.Combine($"plain-{dtype}-{shards}");
        (code, _, error) = Run("convert", "--checkpoint", checkpoint, "--out", plain);
        Assert.True(code == 0, error);
        var staged = _temp.Combine($"staged-{dtype}-{shards}");
        (code, _, error) = Run("convert", "--checkpoint", checkpoint, "--out", staged, "--exits", "1,3");
        Assert.True(code == 0, error);
        Assert.Contains("8/8 layer graphs (100%)", error);

        (code, output, error) = Run("inspect", plain, "--json");
        Assert.True(code == 0, error);
        var report = JsonNode.Parse(output)!;
        Assert.Equal("draft", report["manifest"]!["kind"]!.GetValue<string>());
        var graph = report["graphs"]!.AsArray().Single()!;
        var inputs = graph["inputs"]!.AsArray().Select(i => i!["name"]!.GetValue<string>()).ToList();
        var outputs = graph["outputs"]!.AsArray().Select(o => o!["name"]!.GetValue<string>()).ToList();
        Assert.Equal(["input_ids", "attention_mask", "position_ids", .. Enumerable.Range(0, 4).SelectMany(i => new[] { $"past_key_values.{i}.key", $"past_key_values.{i}.value" })], inputs);
        Assert.Equal(["logits", .. Enumerable.Range(0, 4).SelectMany(i => new[] { $"present.{i}.key", $"present.{i}.value" })], outputs);

        (code, output, error) = Run("inspect", staged, "--json");
        Assert.True(code == 0, error);
        report = JsonNode.Parse(output)!;
        Assert.Equal([1, 3], report["manifest"]!["exits"]!.AsArray().Select(e => e!.GetValue<int>()));
        var graphs = report["graphs"]!.AsArray();
        Assert.Equal(3, graphs.Count);
        Assert.Contains(graphs[1]!["inputs"]!.AsArray(), i => i!["name"]!.GetValue<string>() == "hidden_states");
        Assert.All(graphs, g => Assert.Contains(g!["outputs"]!.AsArray(), o => o!["name"]!.GetValue<string>() == "logits"));

        using var lm = TestModels.Load(staged);
        using var context = lm.CreateContext();
        Assert.Equal(300, context.Forward([new TokenId(1), new TokenId(2)]).VocabSize);
    }

    [Fact]
    public void Synth_Qwen2_WritesBiasesAndTheQwen2Config()
    {
        var checkpoint = _temp.Combine("qwen2");
        Assert.Equal(0, Run("synth", "--out", checkpoint, "--arch", "qwen2", "--tied").Code);

        var (code, output, _) = Run("inspect", checkpoint, "--json");

        Assert.Equal(0, code);
        var report = JsonNode.Parse(output)!;
        Assert.Equal("qwen2", report["config"]!["model_type"]!.GetValue<string>());
        Assert.Contains(report["tensors"]!.AsArray(), t => t!["name"]!.GetValue<string>() == "model.layers.0.self_attn.q_proj.bias");
        Assert.NotEqual(0, Run("synth", "--out", _temp.Combine("gpt2"), "--arch", "gpt2").Code);
    }

    [Fact]
    public void Inspect_Checkpoint_ListsConfigAndTensors()
    {
        var checkpoint = _temp.Combine("ck");
        Assert.Equal(0, Run("synth", "--out", checkpoint).Code);

        var (code, output, _) = Run("inspect", checkpoint, "--json");

        Assert.Equal(0, code);
        var report = JsonNode.Parse(output)!;
        Assert.Equal(64, report["config"]!["hidden_size"]!.GetValue<int>());
        Assert.Contains(report["tensors"]!.AsArray(), t => t!["name"]!.GetValue<string>() == "model.embed_tokens.weight");
    }

    [Theory]
    [InlineData(new[] { "synth", "--out", "{0}/a", "--layers", "0" }, "--layers must be at least 1")]
    [InlineData(new[] { "synth", "--out", "{0}/a", "--dtype", "f8" }, "f8")]
    [InlineData(new[] { "synth", "--out", "{0}/a", "--heads", "4", "--kv-heads", "3" }, "--kv-heads (3) must divide --heads (4)")]
    [InlineData(new[] { "convert", "--checkpoint", "{0}/missing", "--out", "{0}/b" }, "checkpoint folder not found")]
    [InlineData(new[] { "convert", "--checkpoint", "{0}/ck", "--out", "{0}/b", "--exits", "1,x" }, "--exits: 'x' is not an integer")]
    [InlineData(new[] { "convert", "--checkpoint", "{0}/ck", "--out", "{0}/b", "--exits", "2" }, "exit layer 2 is out of range")]
    [InlineData(new[] { "inspect", "{0}/nothing" }, "model folder")]
    [InlineData(new[] { "convert", "--checkpoint", "{0}/ck", "--out", "{0}/b", "--exits", "1", "--quantize", "int4" }, "--quantize applies to drafts")]
    [InlineData(new[] { "convert", "--checkpoint", "{0}/ck", "--out", "{0}/b", "--quantize", "int4", "--compute", "f16" }, "--quantize and --compute f16")]
    [InlineData(new[] { "convert", "--checkpoint", "{0}/ck", "--out", "{0}/b", "--quantize", "int3" }, "int3")]
    [InlineData(new[] { "convert", "--checkpoint", "{0}/ck", "--out", "{0}/b", "--compute", "bf16" }, "bf16")]
    public void BadArguments_OneClearError_NonZeroExit(string[] template, string message)
    {
        Run("synth", "--out", _temp.Combine("ck"));
        var args = template.Select(a => string.Format(System.Globalization.CultureInfo.InvariantCulture, a, _temp.Path)).ToArray();

        var (code, output, error) = Run(args);

        Assert.NotEqual(0, code);
        Assert.Contains(message, output + error);
    }

    [Fact]
    public void Convert_HalfComputeAndQuantizedDraft_InspectNamesThem()
    {
        var checkpoint = _temp.Combine("ck");
        Assert.Equal(0, Run("synth", "--out", checkpoint).Code);

        var (code, output, error) = Run("convert", "--checkpoint", checkpoint, "--out", _temp.Combine("half"), "--exits", "1", "--compute", "f16");
        Assert.True(code == 0, error);
        Assert.Contains("compute f16", output);
        (code, output, error) = Run("convert", "--checkpoint", checkpoint, "--out", _temp.Combine("q4"), "--quantize", "int4");
        Assert.True(code == 0, error);
        Assert.Contains("projections int4 (blocks of 32)", output);

        (code, output, _) = Run("inspect", _temp.Combine("half"), "--json");
        Assert.Equal(0, code);
        Assert.Equal("f16", JsonNode.Parse(output)!["manifest"]!["compute_dtype"]!.GetValue<string>());
        (code, output, _) = Run("inspect", _temp.Combine("q4"), "--json");
        Assert.Equal(0, code);
        Assert.Equal("int4", JsonNode.Parse(output)!["manifest"]!["quantization"]!["type"]!.GetValue<string>());
    }

    [Fact]
    public void Inspect_EditedModel_ReportsContentHashMismatch()
    {
        var checkpoint = _temp.Combine("ck");
        var converted = _temp.Combine("conv");
        Run("synth", "--out", checkpoint);
        Run("convert", "--checkpoint", checkpoint, "--out", converted);
        File.AppendAllText(Path.Combine(converted, "config.json"), " ");

        var (code, _, error) = Run("inspect", converted);

        Assert.Equal(1, code);
        Assert.Contains("content hash mismatch", error);
    }

    private static (int Code, string Output, string Error) Run(params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        var code = ModelToolsCli.Build().Parse(args).Invoke(new InvocationConfiguration { Output = output, Error = error });
        return (code, output.ToString(), error.ToString());
    }

    public void Dispose() => _temp.Dispose();
}
