using System.CommandLine;

namespace SpecEdge.EdgeClient.Cli;

/// <summary>The <c>specedge-edge</c> command tree.</summary>
internal static class EdgeCli
{
    public static RootCommand Build() => new("specedge-edge: the SpecEdge edge client. Drafts tokens with a small ONNX model on this device and has a cloud verifier check them.")
    {
        GenerateCommand.Create(),
        CalibrateCommand.Create(),
    };
}
