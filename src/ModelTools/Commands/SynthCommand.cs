using System.CommandLine;
using SpecEdge.Shared.Models.Checkpoints;
using SpecEdge.Shared.Models.Synthetic;

namespace SpecEdge.ModelTools.Commands;

/// <summary><c>synth</c>: writes a seeded random Llama checkpoint as a Hugging Face folder.</summary>
internal static class SynthCommand
{
    public static Command Create()
    {
        var output = new Option<string>("--out") { Description = "Folder to write the checkpoint into (created; must be empty).", Required = true };
        var layers = new Option<int>("--layers") { Description = "Decoder layers.", DefaultValueFactory = _ => 2 };
        var hidden = new Option<int>("--hidden") { Description = "Hidden size.", DefaultValueFactory = _ => 64 };
        var heads = new Option<int>("--heads") { Description = "Attention heads.", DefaultValueFactory = _ => 4 };
        var kvHeads = new Option<int>("--kv-heads") { Description = "Key/value heads (GQA when fewer than --heads).", DefaultValueFactory = _ => 2 };
        var headDim = new Option<int?>("--head-dim") { Description = "Head size (default hidden / heads; a multiple of 8)." };
        var intermediate = new Option<int>("--intermediate") { Description = "MLP intermediate size.", DefaultValueFactory = _ => 128 };
        var vocab = new Option<int>("--vocab") { Description = "Vocabulary size (≥ 258 writes a byte-level tokenizer.json with <s> and </s>).", DefaultValueFactory = _ => 258 };
        var seed = new Option<ulong>("--seed") { Description = "Random seed.", DefaultValueFactory = _ => 1UL };
        var tied = new Option<bool>("--tied") { Description = "Tie the LM head to the embedding." };
        var dtype = new Option<string>("--dtype") { Description = "Weight dtype in the safetensors files: f32, f16 or bf16.", DefaultValueFactory = _ => "f32" };
        var shards = new Option<int>("--shards") { Description = "Split the weights into this many safetensors shards with an index.", DefaultValueFactory = _ => 1 };
        var ropeTheta = new Option<double>("--rope-theta") { Description = "RoPE base.", DefaultValueFactory = _ => LlamaConfig.DefaultRopeTheta };
        var maxPositions = new Option<int>("--max-positions") { Description = "max_position_embeddings.", DefaultValueFactory = _ => 512 };
        var arch = new Option<string>("--arch") { Description = "The model family: llama, mistral (with --sliding-window), phi3 (fused projections) or qwen2 (biases on the query, key and value projections).", DefaultValueFactory = _ => "llama" };
        var slidingWindow = new Option<int?>("--sliding-window") { Description = "Mistral's sliding window (with --arch mistral)." };
        var layerScale = new Option<double>("--layer-scale") { Description = "Scale of each layer's output projections; below 1 a model cut after fewer layers (an exit, a same-seed draft with fewer layers) predicts much like the whole.", DefaultValueFactory = _ => 1.0 };
        foreach (var option in new[] { layers, hidden, heads, kvHeads, intermediate, shards, maxPositions })
        {
            CliErrors.AtLeast(option, 1);
        }

        CliErrors.AtLeast(vocab, 2);
        dtype.AcceptOnlyFromAmong("f32", "f16", "bf16");
        arch.AcceptOnlyFromAmong("llama", "mistral", "phi3", "qwen2");

        var command = new Command("synth", "Write a seeded random Llama, Mistral, Phi-3 or Qwen2 checkpoint (config.json, safetensors, tokenizer.json) as a Hugging Face folder.")
        {
            output, layers, hidden, heads, kvHeads, headDim, intermediate, vocab, seed, tied, dtype, shards, ropeTheta, maxPositions, layerScale, arch, slidingWindow,
        };
        command.SetAction(parse => CliErrors.Run(parse, stdout =>
        {
            var dir = parse.GetValue(output)!;
            if (Directory.Exists(dir) && Directory.EnumerateFileSystemEntries(dir).Any())
            {
                throw new ArgumentException($"--out: folder '{dir}' is not empty");
            }

            if (parse.GetValue(heads) % parse.GetValue(kvHeads) != 0)
            {
                throw new ArgumentException($"--kv-heads ({parse.GetValue(kvHeads)}) must divide --heads ({parse.GetValue(heads)})");
            }

            var spec = new SyntheticModelSpec
            {
                Layers = parse.GetValue(layers),
                Hidden = parse.GetValue(hidden),
                Heads = parse.GetValue(heads),
                KvHeads = parse.GetValue(kvHeads),
                HeadDim = parse.GetValue(headDim),
                Intermediate = parse.GetValue(intermediate),
                Vocab = parse.GetValue(vocab),
                Seed = parse.GetValue(seed),
                Tied = parse.GetValue(tied),
                RopeTheta = parse.GetValue(ropeTheta),
                MaxPositions = parse.GetValue(maxPositions),
                LayerOutputScale = parse.GetValue(layerScale),
                Arch = parse.GetValue(arch)!,
                SlidingWindow = parse.GetValue(slidingWindow),
            };
            if (spec.HeadDim is null && spec.Hidden % spec.Heads != 0)
            {
                throw new ArgumentException($"--hidden ({spec.Hidden}) is not a multiple of --heads ({spec.Heads}); give --head-dim");
            }

            var weightsDtype = TensorDTypes.ParseCli(parse.GetValue(dtype)!)!.Value;
            SyntheticCheckpoint.Write(dir, spec, weightsDtype, parse.GetValue(shards));
            stdout.WriteLine($"wrote {dir}: {spec.Arch}, {spec.Layers} layers, hidden {spec.Hidden}, {spec.Heads} heads / {spec.KvHeads} kv heads, vocabulary {spec.Vocab}, {spec.ParameterCount:N0} parameters, {weightsDtype.CliName()}, {parse.GetValue(shards)} shard(s)");
            return 0;
        }));
        return command;
    }
}
