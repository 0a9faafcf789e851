using System.Collections.Concurrent;
using Grpc.Core;
using Microsoft.Extensions.Options;
using SpecEdge.CloudVerifier.Configuration;
using SpecEdge.CloudVerifier.Hosting;
using SpecEdge.CloudVerifier.Logging;
using SpecEdge.CloudVerifier.Security;
using SpecEdge.CloudVerifier.Telemetry;

namespace SpecEdge.CloudVerifier.Sessions;

/// <summary>
/// Admission control: sessions in total and per API key, and the KV-cache memory budget. A slot is taken before a
/// session's cache is allocated and given back when the session ends. On shutdown it refuses new sessions and tells the
/// open ones (through <see cref="Stopping"/>) to send their clients elsewhere.
/// </summary>
public sealed class SessionRegistry : IDisposable
{
    /// <summary>The retry hint sent with a refusal for lack of memory or slots, in milliseconds.</summary>
    public const int RetryPushbackMs = 1000;

    private readonly ConcurrentDictionary<string, int> _perKey = new(StringComparer.Ordinal);
    private readonly CancellationTokenSource _stopping = new();
    private readonly Lock _lock = new();
    private readonly int _maxSessions;
    private readonly ILogger<SessionRegistry> _logger;
    private readonly VerifierMetrics _metrics;
    private int _count;
    private long _kvBytes;

    /// <summary>Sets the session limits and the KV-memory budget from the configuration.</summary>
    public SessionRegistry(TargetModel target, IOptions<VerifierOptions> options, VerifierMetrics metrics, ILogger<SessionRegistry> logger)
    {
        _maxSessions = target.Limits.MaxSessions;
        _logger = logger;
        _metrics = metrics;
        KvBudgetBytes = target.Limits.KvBudgetMegabytes > 0
            ? (long)(target.Limits.KvBudgetMegabytes * 1024 * 1024)
            : GC.GetGCMemoryInfo().TotalAvailableMemoryBytes / 2;
        ShutdownGrace = TimeSpan.FromSeconds(options.Value.ShutdownGraceSeconds);
        metrics.ObserveSessions(() => Count, () => KvBytes, KvBudgetBytes);
    }

    /// <summary>Sessions open now (Decode and Generate).</summary>
    public int Count => Volatile.Read(ref _count);

    /// <summary>KV-cache bytes the open sessions hold.</summary>
    public long KvBytes => Interlocked.Read(ref _kvBytes);

    /// <summary>KV-cache memory all sessions together may hold, in bytes.</summary>
    public long KvBudgetBytes { get; }

    /// <summary>How long rounds in flight may finish after SIGTERM.</summary>
    public TimeSpan ShutdownGrace { get; }

    /// <summary>Cancelled when the verifier begins shutting down.</summary>
    public CancellationToken Stopping => _stopping.Token;

    /// <summary>True once shutdown began: no new sessions, open ones are sent elsewhere.</summary>
    public bool ShuttingDown => _stopping.IsCancellationRequested;

    /// <summary>Takes a session slot for <paramref name="key"/> holding <paramref name="kvBytes"/> of KV cache.</summary>
    /// <exception cref="RpcException">Unavailable while shutting down; ResourceExhausted when a limit or the budget is full.</exception>
    public IDisposable Reserve(ApiKeyIdentity? key, long kvBytes)
    {
        lock (_lock)
        {
            if (ShuttingDown)
            {
                _metrics.AdmissionRefused("draining");
                throw new RpcException(new Status(StatusCode.Unavailable, "the verifier is shutting down; open the session on another verifier"));
            }

            if (_count >= _maxSessions)
            {
                throw Exhausted("sessions", $"the verifier already holds its maximum of {_maxSessions} sessions (Limits:MaxSessions); retry later or use another verifier");
            }

            if (key is not null && _perKey.GetValueOrDefault(key.Name) >= key.MaxSessions)
            {
                throw Exhausted("key_sessions", $"API key '{key.Name}' already holds its maximum of {key.MaxSessions} sessions");
            }

            if (_kvBytes + kvBytes > KvBudgetBytes)
            {
                throw Exhausted("kv_budget", $"the session needs {kvBytes / (1024.0 * 1024.0):F1} MiB of KV cache and the verifier's budget of {KvBudgetBytes / (1024.0 * 1024.0):0.###} MiB holds {_kvBytes / (1024.0 * 1024.0):F1} MiB already (Limits:KvBudgetMegabytes); retry in a moment or use another verifier");
            }

            _count++;
            _kvBytes += kvBytes;
            if (key is not null)
            {
                _perKey[key.Name] = _perKey.GetValueOrDefault(key.Name) + 1;
            }

            return new Slot(this, key?.Name, kvBytes);
        }
    }

    /// <summary>Stops admitting sessions and signals <see cref="Stopping"/>.</summary>
    public void BeginShutdown()
    {
        VerifierLog.ShuttingDown(_logger, Count, (int)ShutdownGrace.TotalSeconds);
        _stopping.Cancel();
    }

    /// <inheritdoc/>
    public void Dispose() => _stopping.Dispose();

    private RpcException Exhausted(string reason, string detail)
    {
        _metrics.AdmissionRefused(reason);
        VerifierLog.Admission(_logger, detail);
        return new RpcException(new Status(StatusCode.ResourceExhausted, detail), new Metadata { { "grpc-retry-pushback-ms", RetryPushbackMs.ToString(System.Globalization.CultureInfo.InvariantCulture) } });
    }

    private void Release(string? key, long kvBytes)
    {
        lock (_lock)
        {
            _count--;
            _kvBytes -= kvBytes;
            if (key is not null)
            {
                _perKey[key] = _perKey[key] - 1;
            }
        }
    }

    private sealed class Slot(SessionRegistry owner, string? key, long kvBytes) : IDisposable
    {
        private SessionRegistry? _owner = owner;

        public void Dispose() => Interlocked.Exchange(ref _owner, null)?.Release(key, kvBytes);
    }
}
