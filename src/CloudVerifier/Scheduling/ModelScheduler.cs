using Microsoft.Extensions.Options;
using SpecEdge.CloudVerifier.Configuration;
using SpecEdge.CloudVerifier.Hosting;
using SpecEdge.CloudVerifier.Logging;

namespace SpecEdge.CloudVerifier.Scheduling;

/// <summary>
/// Gives sessions turns on the model: at most <see cref="VerifierOptions.MaxConcurrentRuns"/> runs at once. Waiting
/// is bounded by the session limit (each session waits for at most one run), so no queue grows without bound, and
/// the wait is measured and reported to the edge as queue time.
/// </summary>
/// <remarks>
/// Every model run holds a slot, so disposal takes them all back first: the runs in flight finish before the model
/// they run on is freed (ONNX Runtime crashes on a session disposed under a run). The scheduler takes the
/// <see cref="TargetModel"/> in its constructor for that reason alone: the container then creates it after the model
/// and disposes it before.
/// </remarks>
public sealed class ModelScheduler : IDisposable
{
    /// <summary>How long disposal waits for the runs in flight (one stage run each; a cancelled call ends its wait).</summary>
    private static readonly TimeSpan DrainTimeout = TimeSpan.FromSeconds(30);

    private readonly SemaphoreSlim _slots;
    private readonly int _capacity;
    private readonly TimeProvider _time;
    private readonly ILogger<ModelScheduler> _logger;
    private int _waiting;

    public ModelScheduler(TargetModel model, IOptions<VerifierOptions> options, TimeProvider time, ILogger<ModelScheduler> logger)
    {
        _capacity = options.Value.MaxConcurrentRuns;
        _slots = new SemaphoreSlim(_capacity, _capacity);
        _time = time;
        _logger = logger;
    }

    /// <summary>Runs waiting for a slot right now.</summary>
    public int Waiting => Volatile.Read(ref _waiting);

    /// <summary>Waits for a slot; dispose the lease to give it back.</summary>
    public async ValueTask<Lease> AcquireAsync(CancellationToken cancellationToken)
    {
        var start = _time.GetTimestamp();
        Interlocked.Increment(ref _waiting);
        try
        {
            await _slots.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            Interlocked.Decrement(ref _waiting);
        }

        return new Lease(this, _time.GetElapsedTime(start));
    }

    /// <summary>Waits for the runs in flight (at most <see cref="DrainTimeout"/>), then lets no new run start.</summary>
    public void Dispose()
    {
        var start = _time.GetTimestamp();
        for (var taken = 0; taken < _capacity; taken++)
        {
            var left = DrainTimeout - _time.GetElapsedTime(start);
            if (left <= TimeSpan.Zero || !_slots.Wait(left))
            {
                VerifierLog.RunsInFlight(_logger, (int)DrainTimeout.TotalSeconds);
                break;
            }
        }

        _slots.Dispose();
    }

    /// <summary>A held slot, with how long it took to get.</summary>
    public sealed class Lease : IDisposable
    {
        private ModelScheduler? _owner;

        internal Lease(ModelScheduler owner, TimeSpan waited)
        {
            _owner = owner;
            Waited = waited;
        }

        public TimeSpan Waited { get; }

        public void Dispose()
        {
            try
            {
                Interlocked.Exchange(ref _owner, null)?._slots.Release();
            }
            catch (ObjectDisposedException)
            {
                // The verifier is shutting down and the scheduler went first: there is nobody left to give the slot to.
            }
        }
    }
}
