using System.CommandLine;
using SpecEdge.ModelTools.Commands;

namespace SpecEdge.ModelTools;

/// <summary>The <c>specedge-models</c> command tree.</summary>
internal static class ModelToolsCli
{
    public static RootCommand Build() => new("specedge-models: make seeded synthetic Llama checkpoints, convert Hugging Face checkpoints to SpecEdge ONNX models, and inspect them.")
    {
        SynthCommand.Create(),
        ConvertCommand.Create(),
        InspectCommand.Create(),
    };
}
