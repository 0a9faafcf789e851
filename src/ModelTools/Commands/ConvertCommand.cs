using System.CommandLine;
using SpecEdge.Shared.Models.Checkpoints;
using SpecEdge.Shared.Models.Conversion;

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
        dtype.AcceptOnlyFromAmong("f32", "f16");
        external.AcceptOnlyFromAmong("auto", "always", "never");

        var command = new Command("convert", "Convert a Hugging Face Llama checkpoint into ONNX: a draft graph, or with --exits the staged target with exit heads.")
        {
            checkpoint, output, exits, dtype, adapters, external,
        };
        command.SetAction(parse => CliErrors.Run(parse, stdout =>
        {
            var exitList = CliErrors.ParseIntList(parse.GetValue(exits), "--exits", out var error) ?? throw new ArgumentException(error);
            var lastPercent = -1;
            var options = new ConversionOptions
            {
                Exits = exitList,
                WeightsDtype = TensorDTypes.ParseCli(parse.GetValue(dtype)!)!.Value,
                ExitAdaptersPath = parse.GetValue(adapters),
                ExternalData = Enum.Parse<ExternalDataPolicy>(parse.GetValue(external)!, ignoreCase: true),
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
            stdout.WriteLine($"converted {parse.GetValue(checkpoint)} -> {parse.GetValue(output)}: {manifest.Kind.ToString().ToLowerInvariant()}, {manifest.Stages.Count} stage(s), exits [{string.Join(",", manifest.Exits)}], weights {manifest.WeightsDtype}, {files / 1e6:F1} MB");
            return 0;
        }));
        return command;
    }
}
