using Microsoft.Extensions.Options;
using SpecEdge.CloudVerifier.Configuration;

namespace SpecEdge.CloudVerifier.Scheduling;

/// <summary>
/// Gives sessions turns on the model: at most <see cref="VerifierOptions.MaxConcurrentRuns"/> runs at once. Waiting
/// is bounded by the session limit (each session waits for at most one run), so no queue grows without bound, and
/// the wait is measured and reported to the edge as queue time.
/// </summary>
public sealed class ModelScheduler : IDisposable
{
    private readonly SemaphoreSlim _slots;
    private readonly TimeProvider _time;
    private int _waiting;

    public ModelScheduler(IOptions<VerifierOptions> options, TimeProvider time)
    {
        _slots = new SemaphoreSlim(options.Value.MaxConcurrentRuns, options.Value.MaxConcurrentRuns);
        _time = time;
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

    public void Dispose() => _slots.Dispose();

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
