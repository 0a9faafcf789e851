using System.Text;
using Grpc.Net.Client.Balancer;
using Microsoft.Extensions.Logging;
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
internal sealed class SessionHashPicker(IReadOnlyList<Subchannel> ready) : SubchannelPicker
{
    private int _next;

    public override PickResult Pick(PickContext context)
    {
        if (context.Request?.Headers.TryGetValues(EdgeTelemetry.SessionHeader, out var values) == true && values.FirstOrDefault() is { Length: > 0 } session)
        {
            return PickResult.ForSubchannel(ready[Choose(session, ready.Select(s => s.CurrentAddress?.ToString() ?? string.Empty).ToList())]);
        }

        return PickResult.ForSubchannel(ready[(int)((uint)Interlocked.Increment(ref _next) % (uint)ready.Count)]);
    }

    /// <summary>The index of the address that ranks highest for <paramref name="session"/> (rendezvous hashing).</summary>
    internal static int Choose(string session, IReadOnlyList<string> addresses)
    {
        var best = 0;
        var bestScore = 0UL;
        for (var i = 0; i < addresses.Count; i++)
        {
            var score = Fnv1a($"{session}|{addresses[i]}");
            if (i == 0 || score > bestScore)
            {
                (best, bestScore) = (i, score);
            }
        }

        return best;
    }

    /// <summary>64-bit FNV-1a of the text's UTF-8 bytes, then SplitMix64's finalizer to spread the bits: the same ranking in every process.</summary>
    private static ulong Fnv1a(string text)
    {
        var hash = 14695981039346656037UL;
        foreach (var b in Encoding.UTF8.GetBytes(text))
        {
            hash = (hash ^ b) * 1099511628211UL;
        }

        hash = (hash ^ (hash >> 30)) * 0xBF58476D1CE4E5B9UL;
        hash = (hash ^ (hash >> 27)) * 0x94D049BB133111EBUL;
        return hash ^ (hash >> 31);
    }
}
