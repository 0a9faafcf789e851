using System.Net;
using System.Net.Sockets;

namespace SpecEdge.TestUtilities;

/// <summary>Where tests find the repository and a port to listen on.</summary>
public static class TestPlaces
{
    /// <summary>The repository root: the first folder above the test binaries holding SpecEdge.sln.</summary>
    public static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "SpecEdge.sln")))
            {
                return dir.FullName;
            }
        }

        throw new DirectoryNotFoundException($"no SpecEdge.sln above {AppContext.BaseDirectory}");
    }

    /// <summary>A loopback port nothing listens on now (for listeners that cannot take port 0).</summary>
    public static int FreePort()
    {
        using var socket = new TcpListener(IPAddress.Loopback, 0);
        socket.Start();
        return ((IPEndPoint)socket.LocalEndpoint).Port;
    }
}
