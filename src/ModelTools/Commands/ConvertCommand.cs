using System.CommandLine;
using SpecEdge.Shared.Models.Checkpoints;
using SpecEdge.Shared.Models.Conversion;
using SpecEdge.Shared.Models.Onnx;

namespace SpecEdge.ModelTools.Commands;

/// <summary><c>convert</c>: a Hugging Face checkpoint folder to a SpecEdge model folder (ONNX graphs + manifest).</summary>
internal static class ConvertCommand
{
    public static Command Create()
    {
        var checkpoint = new Option<string>("--checkpoint") { Description = "Hugging Face checkpoint folder (config.json, *.safetensors, tokenizer).", Required = true };
        var output = new Option<string>("--out") { Description = "Folder to write the converted model into (created; must be empty).", Required = true };
        var exits = new Option<string?>("--exits") { Description = "Exit layers, e.g. 2,4: converts the staged early-exit target form. Without it: one draft-style graph." };
        var dtype = new Option<string>("--dtype") { Description = "Weight storage in the ONNX files: f32 or f16 (compute is float32).", DefaultValueFactory = _ => "f32" };
        var adapters = new Option<string?>("--exit-adapters") { Description = "Safetensors file of trained exit heads (exits.{L}.norm.weight, exits.{L}.proj.weight, exits.{L}.lm_head.weight)." };
        var external = new Option<string>("--external-data") { Description = "Weights in an external file: auto (when over 2 GB), always or never.", DefaultValueFactory = _ => "auto" };
        var compute = new Option<string>("--compute") { Description = "The type the graphs compute in: f32, or f16 for a GPU verifier (weights, activations and KV cache in float16; norms and softmax accumulate in float32).", DefaultValueFactory = _ => "f32" };
        compute.AcceptOnlyFromAmong("f32", "f16");
        var quantize = new Option<string>("--quantize") { Description = "Draft only: block-quantize the projections and LM head to int4 or int8 (ONNX Runtime MatMulNBits), or none.", DefaultValueFactory = _ => "none" };
        var accuracy = new Option<int>("--quantize-accuracy") { Description = "MatMulNBits accuracy_level: 4 (int8 activations, fastest on CPU) or 0 (float32 compute).", DefaultValueFactory = _ => 4 };
        dtype.AcceptOnlyFromAmong("f32", "f16");
        quantize.AcceptOnlyFromAmong("none", "int8", "int4");
        accuracy.AcceptOnlyFromAmong("0", "1", "2", "3", "4");
        external.AcceptOnlyFromAmong("auto", "always", "never");

        var command = new Command("convert", "Convert a Hugging Face Llama checkpoint into ONNX: a draft graph, or with --exits the staged target with exit heads.")
        {
            checkpoint, output, exits, dtype, adapters, external, compute, quantize, accuracy,
        };
        command.SetAction(parse => CliErrors.Run(parse, stdout =>
        {
            var exitList = CliErrors.ParseIntList(parse.GetValue(exits), "--exits", out var error) ?? throw new ArgumentException(error);
            var quantization = WeightQuantizations.ParseCli(parse.GetValue(quantize))!.Value;
            if (quantization != WeightQuantization.None && parse.GetValue(compute) == "f16")
            {
                throw new ArgumentException("--quantize and --compute f16 do not go together: quantized drafts compute in float32");
            }

            if (quantization != WeightQuantization.None && exitList.Count > 0)
            {
                throw new ArgumentException("--quantize applies to drafts; a target converted with --exits keeps its weights (its output is the one reproduced)");
            }

            var lastPercent = -1;
            var options = new ConversionOptions
            {
                Exits = exitList,
                WeightsDtype = TensorDTypes.ParseCli(parse.GetValue(dtype)!)!.Value,
                ExitAdaptersPath = parse.GetValue(adapters),
                ExternalData = Enum.Parse<ExternalDataPolicy>(parse.GetValue(external)!, ignoreCase: true),
                Quantization = quantization,
                ComputeDtype = TensorDTypes.ParseCli(parse.GetValue(compute)!)!.Value,
                QuantizationAccuracyLevel = parse.GetValue(accuracy),
                Progress = (done, total) =>
                {
                    var percent = done * 100 / total;
                    if (percent != lastPercent)
                    {
                        lastPercent = percent;
                        parse.InvocationConfiguration.Error.Write($"\rconverting: {done}/{total} layer graphs ({percent}%)");
                        if (done == total)
                        {
                            parse.InvocationConfiguration.Error.WriteLine();
                        }
                    }
                },
            };
            var manifest = ModelConverter.Convert(parse.GetValue(checkpoint)!, parse.GetValue(output)!, options);
            var files = manifest.Files.Values.Sum(f => f.Bytes);
            stdout.WriteLine($"converted {parse.GetValue(checkpoint)} -> {parse.GetValue(output)}: {manifest.Kind.ToString().ToLowerInvariant()}, {manifest.Stages.Count} stage(s), exits [{string.Join(",", manifest.Exits)}], weights {manifest.WeightsDtype}, compute {manifest.ComputeDtype}{(manifest.Quantization is { } q ? $", projections {q.Type} (blocks of {q.BlockSize})" : string.Empty)}, {files / 1e6:F1} MB");
            return 0;
        }));
        return command;
    }
}
