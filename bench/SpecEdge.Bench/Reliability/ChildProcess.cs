using System.Collections.Concurrent;
using System.Diagnostics;

namespace SpecEdge.Bench.Reliability;

/// <summary>A process the proofs start (a verifier, nginx, Prometheus), with the last lines it printed kept for errors.</summary>
internal static class ChildProcess
{
    private const int KeptLines = 20;

    /// <summary>Starts <paramref name="file"/> with <paramref name="args"/>; its output and error lines go into <paramref name="tail"/>.</summary>
    public static Process Start(string file, IEnumerable<string> args, ConcurrentQueue<string> tail)
    {
        var info = new ProcessStartInfo(file) { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var arg in args)
        {
            info.ArgumentList.Add(arg);
        }

        var process = Process.Start(info) ?? throw new InvalidOperationException($"could not start {file}");
        process.OutputDataReceived += (_, e) => Keep(tail, e.Data);
        process.ErrorDataReceived += (_, e) => Keep(tail, e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return process;
    }

    private static void Keep(ConcurrentQueue<string> lines, string? line)
    {
        if (line is null)
        {
            return;
        }

        lines.Enqueue(line);
        while (lines.Count > KeptLines)
        {
            lines.TryDequeue(out _);
        }
    }
}
