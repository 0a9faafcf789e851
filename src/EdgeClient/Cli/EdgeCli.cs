using System.CommandLine;
using Grpc.Core;
using SpecEdge.EdgeClient.Client;
using SpecEdge.EdgeClient.Transport;
using SpecEdge.Shared.Models;

namespace SpecEdge.EdgeClient.Cli;

/// <summary>The <c>specedge-edge</c> command tree.</summary>
internal static class EdgeCli
{
    public static RootCommand Build() => new("specedge-edge: the SpecEdge edge client. Drafts tokens with a small ONNX model on this device and has a cloud verifier check them.")
    {
        GenerateCommand.Create(),
        CalibrateCommand.Create(),
        ServeCommand.Create(),
    };

    /// <summary>A failure a command expects and reports as one line (bad usage, files, server, or the verifier ending the call).</summary>
    public static bool IsExpected(Exception ex) =>
        ex is UsageException or ArgumentException or VerifierUnavailableException or ModelMismatchException or ModelFormatException or RpcException or ProtocolViolationException;

    /// <summary>Writes the one-line error for an expected failure and returns the exit code: 2 for bad usage, else 1.</summary>
    /// <param name="stderr">Where the error goes.</param>
    /// <param name="ex">The failure (<see cref="IsExpected"/>).</param>
    /// <param name="what">What the verifier ended, for an <see cref="RpcException"/> ("generation", "calibration").</param>
    public static int Report(TextWriter stderr, Exception ex, string what)
    {
        var message = ex is RpcException rpc ? $"the verifier ended the {what}: {SpecEdgeClient.Explain(rpc)}" : ex.Message;
        stderr.WriteLine($"{GenerateCommand.Program}: error: {message}");
        return ex is UsageException ? 2 : 1;
    }
}

/// <summary>A command-line mistake: printed with the flag it concerns, exit code 2.</summary>
internal sealed class UsageException(string message) : Exception(message);
