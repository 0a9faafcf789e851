using System.Buffers.Binary;
using System.Text;
using SpecEdge.Shared.Models;
using SpecEdge.Shared.Models.Checkpoints;
using SpecEdge.Shared.Models.Conversion;
using SpecEdge.Shared.Runtime;
using SpecEdge.Shared.Tokenization;
using SpecEdge.TestUtilities;

namespace SpecEdge.Shared.Tests.Models;

/// <summary>Every bad file or value gets a clear exception that names the file, tensor or value.</summary>
public sealed class BadInputTests : IDisposable
{
    private readonly TempDirectory _temp = new("bad-input");

    [Fact]
    public void Open_MissingConfig_NamesConfigJson()
    {
        var dir = _temp.Combine("empty");
        Directory.CreateDirectory(dir);

        var ex = Assert.Throws<ModelFormatException>(() => LlamaCheckpoint.Open(dir));

        Assert.Contains("config.json", ex.Message);
    }

    [Fact]
    public void Load_ConfigNotJson_SaysNotValidJson()
    {
        var path = _temp.Combine("config.json");
        File.WriteAllText(path, "{ \"hidden_size\": 64,");

        var ex = Assert.Throws<ModelFormatException>(() => LlamaConfig.Load(path));

        Assert.Contains("not valid JSON", ex.Message);
        Assert.Equal(path, ex.FilePath);
    }

    [Theory]
    [InlineData("hidden_size", null, "required field 'hidden_size' is missing")]
    [InlineData("hidden_size", "-3", "'hidden_size' = -3 must be positive")]
    [InlineData("num_key_value_heads", "3", "num_key_value_heads = 3 must be positive and divide num_attention_heads = 4")]
    [InlineData("vocab_size", "\"many\"", "'vocab_size' must be an integer")]
    [InlineData("rms_norm_eps", "0", "rms_norm_eps = 0 must be positive")]
    [InlineData("specedge_exits", "[2, \"four\"]", "'specedge_exits' must be an integer or a list of integers")]
    [InlineData("rope_scaling", "{\"rope_type\": \"llama3\", \"factor\": 8, \"high_freq_factor\": 4, \"original_max_position_embeddings\": 8192}", "rope_scaling of type 'llama3' needs 'low_freq_factor'")]
    [InlineData("rope_scaling", "{\"rope_type\": \"llama3\", \"factor\": 8, \"low_freq_factor\": 4, \"high_freq_factor\": 1, \"original_max_position_embeddings\": 8192}", "high_freq_factor = 1 above it")]
    public void Load_BadField_NamesTheField(string field, string? value, string message)
    {
        var path = WriteConfig(field, value);

        var ex = Assert.Throws<ModelFormatException>(() => LlamaConfig.Load(path));

        Assert.Contains(message, ex.Message);
    }

    [Theory]
    [InlineData("architectures", "[\"GemmaForCausalLM\"]", "architecture 'GemmaForCausalLM' is not supported")]
    [InlineData("partial_rotary_factor", "0.5", "partial_rotary_factor = 0.5 is not supported")]
    [InlineData("rope_scaling", "{\"type\": \"longrope\", \"long_factor\": [1.0], \"short_factor\": [1.0]}", "rope_scaling.rope_type = 'longrope' is unsupported")]
    [InlineData("rope_scaling", "{\"rope_type\": \"yarn\", \"factor\": 4}", "rope_scaling.rope_type = 'yarn' is unsupported")]
    [InlineData("rope_scaling", "{\"type\": \"dynamic\", \"factor\": 2}", "rope_scaling.rope_type = 'dynamic' is unsupported")]
    [InlineData("hidden_act", "\"gelu\"", "hidden_act 'gelu' is not supported")]
    [InlineData("mlp_bias", "true", "mlp_bias = true is not supported")]
    public void Load_UnsupportedFeature_SaysUnsupported(string field, string value, string message)
    {
        var path = WriteConfig(field, value);

        var ex = Assert.Throws<UnsupportedModelException>(() => LlamaConfig.Load(path));

        Assert.Contains(message, ex.Message);
    }

    [Fact]
    public void Load_LinearRopeScaling_ReadsFactor()
    {
        var path = WriteConfig("rope_scaling", "{\"rope_type\": \"linear\", \"factor\": 2.5}");

        Assert.Equal(2.5, LlamaConfig.Load(path).RopeLinearFactor);
    }

    /// <summary>Llama 3.1's own rope_scaling block and list of end-of-sequence ids, as its config.json writes them.</summary>
    [Fact]
    public void Load_Llama3RopeScalingAndEosList_ReadAndWrittenBack()
    {
        var path = WriteConfig("rope_scaling", "{\"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192, \"rope_type\": \"llama3\"}");
        var json = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        json["eos_token_id"] = new System.Text.Json.Nodes.JsonArray(128001, 128008, 128009);
        json["vocab_size"] = 128256;
        File.WriteAllText(path, json.ToJsonString());

        var config = LlamaConfig.Load(path);

        Assert.Equal(new Llama3RopeScaling(8, 1, 4, 8192), config.RopeLlama3);
        Assert.Equal([128001, 128008, 128009], config.EosTokenIds);
        Assert.Equal(config.RopeLlama3, LlamaConfig.Parse(System.Text.Json.Nodes.JsonNode.Parse(config.ToJson().ToJsonString())!.AsObject(), path).RopeLlama3);
    }

    /// <summary>Mistral-7B-v0.1's config.json (a 4 096-token sliding window) and v0.3's (none).</summary>
    [Theory]
    [InlineData("4096", 4096)]
    [InlineData("null", 32768)]
    public void Load_MistralConfig_SlidingWindowBoundsTheLongestSequence(string window, int longest)
    {
        var path = _temp.Combine($"mistral-{window}.json");
        File.WriteAllText(path, $$"""
            {
              "architectures": ["MistralForCausalLM"],
              "bos_token_id": 1,
              "eos_token_id": 2,
              "hidden_act": "silu",
              "hidden_size": 4096,
              "initializer_range": 0.02,
              "intermediate_size": 14336,
              "max_position_embeddings": 32768,
              "model_type": "mistral",
              "num_attention_heads": 32,
              "num_hidden_layers": 32,
              "num_key_value_heads": 8,
              "rms_norm_eps": 1e-05,
              "rope_theta": 10000.0,
              "sliding_window": {{window}},
              "tie_word_embeddings": false,
              "torch_dtype": "bfloat16",
              "transformers_version": "4.34.0.dev0",
              "use_cache": true,
              "vocab_size": 32000
            }
            """);

        var config = LlamaConfig.Load(path);

        Assert.Equal("mistral", config.ModelType);
        Assert.False(config.AttentionBias);
        Assert.Equal(longest, config.LongestSequence);
    }

    /// <summary>Phi-3-mini-4k-instruct's config.json (fused projections, a 2 047-token sliding window).</summary>
    [Fact]
    public void Load_Phi3MiniConfig_FusedProjectionsAndSlidingWindow()
    {
        var path = _temp.Combine("phi3-config.json");
        File.WriteAllText(path, """
            {
              "architectures": ["Phi3ForCausalLM"],
              "attention_dropout": 0.0,
              "bos_token_id": 1,
              "embd_pdrop": 0.0,
              "eos_token_id": 32000,
              "hidden_act": "silu",
              "hidden_size": 3072,
              "initializer_range": 0.02,
              "intermediate_size": 8192,
              "max_position_embeddings": 4096,
              "model_type": "phi3",
              "num_attention_heads": 32,
              "num_hidden_layers": 32,
              "num_key_value_heads": 32,
              "original_max_position_embeddings": 4096,
              "pad_token_id": 32000,
              "resid_pdrop": 0.0,
              "rms_norm_eps": 1e-05,
              "rope_scaling": null,
              "rope_theta": 10000.0,
              "sliding_window": 2047,
              "tie_word_embeddings": false,
              "torch_dtype": "bfloat16",
              "transformers_version": "4.40.2",
              "use_cache": true,
              "vocab_size": 32064
            }
            """);

        var config = LlamaConfig.Load(path);

        Assert.Equal("phi3", config.ModelType);
        Assert.True(config.FusedProjections);
        Assert.Equal(2047, config.LongestSequence);
        Assert.Equal(96, config.HeadDim);
    }

    /// <summary>
    /// generation_config.json's end-of-sequence ids join config.json's (Llama 3 instruct lists &lt;|eot_id|&gt; only
    /// there), and its sampling defaults are read; a field of the wrong type is named.
    /// </summary>
    [Fact]
    public void GenerationConfig_EosIdsJoinTheModelsAndDefaultsAreRead()
    {
        var model = TestModels.WriteCheckpoint(_temp.Combine("gen-config"), TestModels.Small() with { Vocab = 320 });
        File.WriteAllText(Path.Combine(model.CheckpointDir, GenerationConfig.FileName), """
            { "bos_token_id": 256, "do_sample": true, "eos_token_id": [257, 300], "temperature": 0.6, "top_p": 0.9 }
            """);

        var defaults = GenerationConfig.Load(model.CheckpointDir);
        Assert.Equal([257, 300], defaults.EosTokenIds);
        Assert.Equal((true, 0.6, 0.9), (defaults.DoSample!.Value, defaults.Temperature!.Value, defaults.TopP!.Value));
        var converted = _temp.Combine("gen-config-converted");
        ModelConverter.Convert(model.CheckpointDir, converted, new ConversionOptions());
        using var lm = TestModels.Load(converted);
        Assert.True(lm.Tokenizer.IsEos(new TokenId(300)));
        Assert.True(lm.Tokenizer.IsEos(new TokenId(257)));
        Assert.False(lm.Tokenizer.IsEos(new TokenId(299)));

        File.WriteAllText(Path.Combine(model.CheckpointDir, GenerationConfig.FileName), """{ "temperature": "warm" }""");
        var error = Assert.Throws<ModelFormatException>(() => GenerationConfig.Load(model.CheckpointDir));
        Assert.Contains("'temperature' has the wrong type", error.Message);
    }

    /// <summary>Qwen2.5-0.5B's config.json as transformers writes it.</summary>
    [Fact]
    public void Load_Qwen25Config_ReadsBiasesTiedEmbeddingsAndTheta()
    {
        var path = _temp.Combine("qwen2.5-config.json");
        File.WriteAllText(path, """
            {
              "architectures": ["Qwen2ForCausalLM"],
              "attention_dropout": 0.0,
              "bos_token_id": 151643,
              "eos_token_id": 151643,
              "hidden_act": "silu",
              "hidden_size": 896,
              "initializer_range": 0.02,
              "intermediate_size": 4864,
              "max_position_embeddings": 32768,
              "max_window_layers": 24,
              "model_type": "qwen2",
              "num_attention_heads": 14,
              "num_hidden_layers": 24,
              "num_key_value_heads": 2,
              "rms_norm_eps": 1e-06,
              "rope_theta": 1000000.0,
              "sliding_window": 32768,
              "tie_word_embeddings": true,
              "torch_dtype": "bfloat16",
              "transformers_version": "4.40.1",
              "use_cache": true,
              "use_sliding_window": false,
              "vocab_size": 151936
            }
            """);

        var config = LlamaConfig.Load(path);

        Assert.Equal("qwen2", config.ModelType);
        Assert.True(config.AttentionBias);
        Assert.True(config.TieWordEmbeddings);
        Assert.Equal(1_000_000, config.RopeTheta);
        Assert.Equal(64, config.HeadDim);
        Assert.Equal(LlamaConfig.Qwen2Architecture, config.ToJson()["architectures"]![0]!.GetValue<string>());
    }

    [Fact]
    public void Load_SpecEdgeExits_AreSuggestedAndWrittenBack()
    {
        var path = WriteConfig("specedge_exits", "[1, 3]");

        var config = LlamaConfig.Load(path);

        Assert.Equal([1, 3], config.SuggestedExits);
        Assert.Equal("[1,3]", config.ToJson()["specedge_exits"]!.ToJsonString());
        Assert.Empty(LlamaConfig.Load(WriteConfig("specedge_exits", null)).SuggestedExits);
    }

    [Fact]
    public void Open_TruncatedSafetensors_SaysDataOffsetsPastEnd()
    {
        var model = TestModels.WriteCheckpoint(_temp.Combine("truncated"), TestModels.Small());
        var file = Path.Combine(model.CheckpointDir, LlamaCheckpoint.SingleFileName);
        var length = new FileInfo(file).Length;
        using (var stream = new FileStream(file, FileMode.Open))
        {
            stream.SetLength(length - 100);
        }

        var ex = Assert.Throws<ModelFormatException>(() => LlamaCheckpoint.Open(model.CheckpointDir));

        Assert.Contains("reach past the", ex.Message);
        Assert.Equal(file, ex.FilePath);
    }

    [Fact]
    public void Open_HeaderLengthPastEnd_SaysSo()
    {
        var path = _temp.Combine("bad-header.safetensors");
        var bytes = new byte[64];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, 1_000_000);
        File.WriteAllBytes(path, bytes);

        var ex = Assert.Throws<ModelFormatException>(() => SafetensorsFile.Open(path));

        Assert.Contains("header length 1000000 points past the end", ex.Message);
    }

    [Theory]
    [InlineData("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,12]}}", "dtype F32 and shape [2,2] need 16 bytes but data_offsets span 12")]
    [InlineData("{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", "reach past the 16 data bytes")]
    [InlineData("{\"w\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[0,16]}}", "dtype I64 is not supported")]
    [InlineData("{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[12,4]}}", "are not an ordered pair")]
    [InlineData("{\"w\":{\"dtype\":\"F32\",\"shape\":[4]}}", "needs dtype, shape and data_offsets")]
    [InlineData("[1,2,3]", "header must be a JSON object")]
    public void Open_BadTensorEntry_NamesTensorAndProblem(string header, string message)
    {
        var path = WriteSafetensors(header, dataBytes: 16);

        var ex = Assert.Throws<ModelFormatException>(() => SafetensorsFile.Open(path));

        Assert.Contains(message, ex.Message);
    }

    [Fact]
    public void Open_TensorShapeDisagreesWithConfig_NamesTensor()
    {
        var model = TestModels.WriteCheckpoint(_temp.Combine("shape"), TestModels.Small());
        var configPath = Path.Combine(model.CheckpointDir, "config.json");
        File.WriteAllText(configPath, File.ReadAllText(configPath).Replace("\"intermediate_size\": 96", "\"intermediate_size\": 100"));

        var ex = Assert.Throws<ModelFormatException>(() => LlamaCheckpoint.Open(model.CheckpointDir));

        Assert.Contains("tensor 'model.layers.0.mlp.gate_proj.weight' has shape [96, 64] but config.json implies [100, 64]", ex.Message);
    }

    [Fact]
    public void Open_ShardIndexNamesMissingShard_NamesShard()
    {
        var model = TestModels.WriteCheckpoint(_temp.Combine("shards"), TestModels.Small(), shards: 2);
        File.Delete(Path.Combine(model.CheckpointDir, "model-00002-of-00002.safetensors"));

        var ex = Assert.Throws<ModelFormatException>(() => LlamaCheckpoint.Open(model.CheckpointDir));

        Assert.Contains("model-00002-of-00002.safetensors", ex.Message);
    }

    [Theory]
    [InlineData(new[] { 0 }, "exit layer 0 is out of range")]
    [InlineData(new[] { 2 }, "exit layer 2 is out of range")]
    [InlineData(new[] { 1, 1 }, "strictly increasing")]
    public void Convert_BadExits_SaysWhy(int[] exits, string message)
    {
        var model = TestModels.WriteCheckpoint(_temp.Combine("exits"), TestModels.Small());

        var ex = Assert.Throws<ArgumentException>(() => ModelConverter.Convert(model.CheckpointDir, _temp.Combine("out"), new ConversionOptions { Exits = exits }));

        Assert.Contains(message, ex.Message);
        Assert.False(Directory.Exists(_temp.Combine("out")));
    }

    [Fact]
    public void Convert_OutputFolderNotEmpty_Refuses()
    {
        var model = TestModels.WriteCheckpoint(_temp.Combine("nonempty"), TestModels.Small());
        var output = _temp.Combine("occupied");
        Directory.CreateDirectory(output);
        File.WriteAllText(Path.Combine(output, "keep.txt"), "mine");

        var ex = Assert.Throws<ArgumentException>(() => ModelConverter.Convert(model.CheckpointDir, output, new ConversionOptions()));

        Assert.Contains("is not empty", ex.Message);
        Assert.Equal("mine", File.ReadAllText(Path.Combine(output, "keep.txt")));
    }

    [Theory]
    [InlineData("model.onnx")]
    [InlineData("tokenizer.json")]
    public void Load_ConvertedFileEdited_FailsWithContentHashError(string file)
    {
        var (_, converted) = TestModels.WriteAndConvert(_temp.Combine("edited"), TestModels.Small());
        var path = Path.Combine(converted, file);
        var bytes = File.ReadAllBytes(path);
        bytes[bytes.Length / 2] ^= 0x5A;
        File.WriteAllBytes(path, bytes);

        var ex = Assert.Throws<ModelIntegrityException>(() => TestModels.Load(converted));

        Assert.Contains("content hash mismatch", ex.Message);
        Assert.Equal(path, ex.FilePath);
    }

    /// <summary>
    /// A verified load leaves a stamp, and later loads trust it while every file keeps its size and modification time;
    /// an edit (which changes the time) is hashed and caught. An edit that restores the time passes a load (the stamp's
    /// documented limit) but not a full check, which inspect runs.
    /// </summary>
    [Fact]
    public void Load_AfterAVerifiedLoad_StampSkipsHashingUntilAFileChanges()
    {
        var (_, converted) = TestModels.WriteAndConvert(_temp.Combine("stamp"), TestModels.Small());
        TestModels.Load(converted).Dispose();
        Assert.True(File.Exists(Path.Combine(converted, ModelManifest.VerifiedStampFileName)));

        // config.json is listed and hashed but not read on load (the manifest carries the configuration): a same-size
        // edit keeps the model loadable.
        var path = Path.Combine(converted, "config.json");
        var written = File.GetLastWriteTimeUtc(path);
        File.WriteAllText(path, File.ReadAllText(path).Replace("\"silu\"", "\"SILU\"", StringComparison.Ordinal));
        File.SetLastWriteTimeUtc(path, written);
        TestModels.Load(converted).Dispose();
        Assert.Throws<ModelIntegrityException>(() => ModelManifest.Load(converted).VerifyFiles(converted, trustStamp: false));

        File.SetLastWriteTimeUtc(path, written.AddSeconds(5));
        var ex = Assert.Throws<ModelIntegrityException>(() => TestModels.Load(converted));
        Assert.Equal(path, ex.FilePath);
    }

    [Fact]
    public void Load_ConvertedFileTruncated_FailsWithContentHashError()
    {
        var (_, converted) = TestModels.WriteAndConvert(_temp.Combine("cut"), TestModels.Small(), new ConversionOptions { ExternalData = ExternalDataPolicy.Always });
        var path = Path.Combine(converted, ModelConverter.ExternalDataFile);
        using (var stream = new FileStream(path, FileMode.Open))
        {
            stream.SetLength(stream.Length / 2);
        }

        var ex = Assert.Throws<ModelIntegrityException>(() => TestModels.Load(converted));

        Assert.Contains("weights.bin", ex.Message);
    }

    [Fact]
    public void Forward_TokenOutOfRange_NamesIdAndVocabulary()
    {
        var (_, converted) = TestModels.WriteAndConvert(_temp.Combine("range"), TestModels.Small());
        using var lm = TestModels.Load(converted);
        using var context = lm.CreateContext();

        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => context.Forward([new TokenId(5), new TokenId(258)]));

        Assert.Contains("token id 258 at step position 1 is outside the vocabulary of 258", ex.Message);
        Assert.Equal(0, context.Length);
        context.Forward([new TokenId(5)]);
        Assert.Equal(1, context.Length);
    }

    [Fact]
    public void Rollback_PastCurrentLength_Refuses()
    {
        var (_, converted) = TestModels.WriteAndConvert(_temp.Combine("rollback"), TestModels.Small());
        using var lm = TestModels.Load(converted);
        using var context = lm.CreateContext();
        context.Forward([new TokenId(1), new TokenId(2)]);

        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => context.Rollback(3));

        Assert.Contains("cannot roll back to 3 tokens: the sequence holds 2", ex.Message);
    }

    [Fact]
    public void Forward_PastMaximumLength_Refuses()
    {
        var (_, converted) = TestModels.WriteAndConvert(_temp.Combine("long"), TestModels.Small());
        using var lm = TestModels.Load(converted);
        using var context = lm.CreateContext(maxSequenceLength: 8);
        context.Forward(Enumerable.Range(0, 6).Select(i => new TokenId(i)).ToArray());

        var ex = Assert.Throws<SequenceTooLongException>(() => context.Forward([new TokenId(1), new TokenId(2), new TokenId(3)]));

        Assert.Contains("holds 6 tokens and cannot take 3 more: its maximum length is 8", ex.Message);
        Assert.Equal(6, context.Length);
    }

    private string WriteConfig(string field, string? value)
    {
        var fields = new Dictionary<string, string>
        {
            ["architectures"] = "[\"LlamaForCausalLM\"]",
            ["hidden_size"] = "64",
            ["intermediate_size"] = "96",
            ["num_hidden_layers"] = "2",
            ["num_attention_heads"] = "4",
            ["num_key_value_heads"] = "2",
            ["vocab_size"] = "258",
        };
        if (value is null)
        {
            fields.Remove(field);
        }
        else
        {
            fields[field] = value;
        }

        var path = _temp.Combine($"config-{Guid.NewGuid():N}.json");
        File.WriteAllText(path, "{" + string.Join(",", fields.Select(kv => $"\"{kv.Key}\": {kv.Value}")) + "}");
        return path;
    }

    private string WriteSafetensors(string header, int dataBytes)
    {
        var path = _temp.Combine($"{Guid.NewGuid():N}.safetensors");
        var headerBytes = Encoding.UTF8.GetBytes(header);
        var bytes = new byte[8 + headerBytes.Length + dataBytes];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)headerBytes.Length);
        headerBytes.CopyTo(bytes, 8);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    public void Dispose() => _temp.Dispose();
}
