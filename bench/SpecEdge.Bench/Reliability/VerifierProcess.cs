using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Grpc.Net.Client;
using SpecEdge.Protocol.V1;

namespace SpecEdge.Bench.Reliability;

/// <summary>
/// A verifier running as its own process (<c>dotnet specedge-cloud.dll</c>) on a fixed loopback port, so faults can be
/// real: <see cref="Kill"/> is SIGKILL, and <see cref="StartAsync"/> brings it back on the same port.
/// </summary>
internal sealed class VerifierProcess : IAsyncDisposable
{
    private readonly string _targetDir;
    private readonly IReadOnlyList<string> _extraArgs;
    private Process? _process;

    public VerifierProcess(string targetDir, int port, IReadOnlyList<string>? extraArgs = null)
    {
        _targetDir = targetDir;
        Port = port;
        _extraArgs = extraArgs ?? [];
    }

    public int Port { get; }

    public Uri Address => new($"http://127.0.0.1:{Port}");

    public bool Running => _process is { HasExited: false };

    /// <summary>Started and answering (false while starting up, and after a kill).</summary>
    public bool Ready { get; private set; }

    public int Starts { get; private set; }

    public static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    /// <summary>Starts the process and waits until it answers Describe.</summary>
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        var dll = Path.Combine(AppContext.BaseDirectory, "specedge-cloud.dll");
        var output = new System.Collections.Concurrent.ConcurrentQueue<string>();
        _process = ChildProcess.Start("dotnet", new[] { dll, "--model", _targetDir, "--urls", Address.ToString(), "--threads", "1", "--Verifier:DefaultExitThreshold=0", "--Logging:LogLevel:Default=Warning" }.Concat(_extraArgs), output);
        Starts++;
        using var channel = GrpcChannel.ForAddress(Address);
        var client = new Verifier.VerifierClient(channel);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (true)
        {
            try
            {
                await client.DescribeAsync(new DescribeRequest(), deadline: DateTime.UtcNow + TimeSpan.FromSeconds(2), cancellationToken: cancellationToken);
                Ready = true;
                return;
            }
            catch (Grpc.Core.RpcException) when (DateTime.UtcNow < deadline && !_process.HasExited)
            {
                await Task.Delay(100, cancellationToken);
            }
            catch (Grpc.Core.RpcException ex)
            {
                throw new InvalidOperationException($"the verifier process on port {Port} did not come up ({(_process.HasExited ? $"exited with {_process.ExitCode}" : "no answer")}): {string.Join(" | ", output)}", ex);
            }
        }
    }


    /// <summary>SIGKILL: no shutdown, no goodbye; open streams just break.</summary>
    public void Kill()
    {
        Ready = false;
        if (_process is { HasExited: false } process)
        {
            process.Kill(entireProcessTree: true);
            process.WaitForExit(10_000);
        }
    }

    /// <summary>SIGTERM: the verifier drains (readiness NOT_SERVING, sessions told to move) and exits.</summary>
    public void Terminate()
    {
        Ready = false;
        if (_process is { HasExited: false } process)
        {
            using var kill = Process.Start("kill", ["-TERM", process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
            kill.WaitForExit();
        }
    }

    /// <summary>Waits for the process to exit on its own (after <see cref="Terminate"/>).</summary>
    public Task WaitForExitAsync(CancellationToken cancellationToken) => _process?.WaitForExitAsync(cancellationToken) ?? Task.CompletedTask;

    public ValueTask DisposeAsync()
    {
        Kill();
        _process?.Dispose();
        return ValueTask.CompletedTask;
    }
}
