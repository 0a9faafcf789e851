using System.Collections.Concurrent;
using SpecEdge.CloudVerifier.Hosting;

namespace SpecEdge.CloudVerifier.Sessions;

/// <summary>The open sessions, and the session limit: a slot is taken before a session's cache is allocated.</summary>
public sealed class SessionRegistry
{
    private readonly ConcurrentDictionary<string, byte> _open = new();
    private readonly int _maxSessions;
    private int _count;

    public SessionRegistry(TargetModel target)
    {
        _maxSessions = target.Limits.MaxSessions;
    }

    /// <summary>Sessions open now.</summary>
    public int Count => Volatile.Read(ref _count);

    /// <summary>Takes a session slot, or refuses with ResourceExhausted when the verifier is full.</summary>
    public IDisposable Reserve()
    {
        if (Interlocked.Increment(ref _count) > _maxSessions)
        {
            Interlocked.Decrement(ref _count);
            throw Refusal.ResourceExhausted($"the verifier already holds its maximum of {_maxSessions} sessions (Limits:MaxSessions); retry later or use another verifier");
        }

        return new Slot(this);
    }

    internal void Track(string sessionId) => _open.TryAdd(sessionId, 0);

    internal void Forget(string sessionId) => _open.TryRemove(sessionId, out _);

    private sealed class Slot(SessionRegistry owner) : IDisposable
    {
        private SessionRegistry? _owner = owner;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _owner, null) is { } registry)
            {
                Interlocked.Decrement(ref registry._count);
            }
        }
    }
}
