namespace SpecEdge.Shared.Timing;

/// <summary>Waits out the rest of a compute floor.</summary>
public static class ComputeFloor
{
    /// <summary>
    /// Waits until <paramref name="floor"/> has passed since <paramref name="startTimestamp"/> (a
    /// <see cref="TimeProvider.GetTimestamp"/> value); returns the time waited.
    /// </summary>
    public static async ValueTask<TimeSpan> WaitAsync(TimeProvider time, long startTimestamp, TimeSpan floor, CancellationToken cancellationToken)
    {
        if (floor <= TimeSpan.Zero)
        {
            return TimeSpan.Zero;
        }

        var remaining = floor - time.GetElapsedTime(startTimestamp);
        if (remaining <= TimeSpan.Zero)
        {
            return TimeSpan.Zero;
        }

        await Task.Delay(remaining, time, cancellationToken).ConfigureAwait(false);
        return remaining;
    }

    /// <summary>
    /// Blocking form of <see cref="WaitAsync"/>, for code that already runs on its own thread. On the system clock it
    /// waits on a kernel timeout rather than a timer task: a timer's completion runs on the thread pool, and a busy pool
    /// (many edges drafting in one process) stretched a 15 ms floor to tens of milliseconds.
    /// </summary>
    public static TimeSpan Wait(TimeProvider time, long startTimestamp, TimeSpan floor, CancellationToken cancellationToken)
    {
        if (floor <= TimeSpan.Zero)
        {
            return TimeSpan.Zero;
        }

        var remaining = floor - time.GetElapsedTime(startTimestamp);
        if (remaining <= TimeSpan.Zero)
        {
            return TimeSpan.Zero;
        }

        if (ReferenceEquals(time, TimeProvider.System))
        {
            Never.Wait(remaining, cancellationToken);
            cancellationToken.ThrowIfCancellationRequested();
        }
        else
        {
            Task.Delay(remaining, time, cancellationToken).GetAwaiter().GetResult();
        }

        return remaining;
    }

    private static readonly ManualResetEventSlim Never = new(initialState: false, spinCount: 0);
}
