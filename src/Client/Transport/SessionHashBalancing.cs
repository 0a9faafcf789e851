using System.Text;
using Grpc.Net.Client.Balancer;
using Microsoft.Extensions.Logging;
using SpecEdge.Shared.Numerics;
using SpecEdge.EdgeClient.Client;

namespace SpecEdge.EdgeClient.Transport;

/// <summary>
/// Client-side balancing over a fleet without a balancer in front: Grpc.Net.Client resolves the verifier's name (DNS:
/// every address the name has), keeps a subchannel per address, and this picker sends each call to the ready verifier
/// chosen by rendezvous hashing of the call's session key (<see cref="EdgeTelemetry.SessionHeader"/>). Every call of
/// one generation goes to one verifier while it is ready; when it is not, only the generations it held move, each to
/// the next verifier in its own ranking. Calls without a session key (Describe) go round the ready ones.
/// </summary>
internal sealed class SessionHashLoadBalancerFactory : LoadBalancerFactory
{
    /// <summary>The policy name in a service config.</summary>
    public const string PolicyName = "specedge_session_hash";

    public override string Name => PolicyName;

    public override LoadBalancer Create(LoadBalancerOptions options) => new SessionHashLoadBalancer(options.Controller, options.LoggerFactory);

    private sealed class SessionHashLoadBalancer(IChannelControlHelper controller, ILoggerFactory loggerFactory) : SubchannelsLoadBalancer(controller, loggerFactory)
    {
        protected override SubchannelPicker CreatePicker(IReadOnlyList<Subchannel> readySubchannels) => new SessionHashPicker(readySubchannels);
    }
}

/// <summary>Picks the ready verifier with the highest hash of (session key, address).</summary>
internal sealed class SessionHashPicker : SubchannelPicker
{
    private readonly IReadOnlyList<Subchannel> _ready;
    private readonly byte[][] _addresses;
    private int _next;

    public SessionHashPicker(IReadOnlyList<Subchannel> ready)
    {
        _ready = ready;
        _addresses = [.. ready.Select(s => Encoding.UTF8.GetBytes(s.CurrentAddress?.ToString() ?? string.Empty))];
    }

    public override PickResult Pick(PickContext context)
    {
        if (context.Request?.Headers.TryGetValues(EdgeTelemetry.SessionHeader, out var values) == true && values.FirstOrDefault() is { Length: > 0 } session)
        {
            return PickResult.ForSubchannel(_ready[Choose(session, _addresses)]);
        }

        return PickResult.ForSubchannel(_ready[(int)((uint)Interlocked.Increment(ref _next) % (uint)_ready.Count)]);
    }

    /// <summary>The index of the address that ranks highest for <paramref name="session"/> (rendezvous hashing).</summary>
    private static int Choose(string session, byte[][] addresses)
    {
        // 64-bit FNV-1a over "session|address" (the session's part once), then SplitMix64's finaliser to spread the
        // bits: the same ranking in every process.
        var prefix = Fnv1a(14695981039346656037UL, Encoding.UTF8.GetBytes(session + "|"));
        var best = 0;
        var bestScore = 0UL;
        for (var i = 0; i < addresses.Length; i++)
        {
            var score = SplitMix64.Mix(Fnv1a(prefix, addresses[i]));
            if (i == 0 || score > bestScore)
            {
                (best, bestScore) = (i, score);
            }
        }

        return best;
    }

    private static ulong Fnv1a(ulong hash, ReadOnlySpan<byte> bytes)
    {
        foreach (var b in bytes)
        {
            hash = (hash ^ b) * 1099511628211UL;
        }

        return hash;
    }
}
