namespace SpecEdge.EdgeClient.Client;

/// <summary>
/// A generation: enumerate it to run it and receive committed tokens as they are committed; <see cref="Report"/> holds
/// the figures once the enumeration has finished. A generation runs once.
/// </summary>
public sealed class Generation : IAsyncEnumerable<CommittedToken>
{
    private readonly Func<Generation, CancellationToken, IAsyncEnumerable<CommittedToken>> _run;
    private int _started;

    internal Generation(GenerationRequest request, Func<Generation, CancellationToken, IAsyncEnumerable<CommittedToken>> run)
    {
        Request = request;
        _run = run;
    }

    /// <summary>What was asked for.</summary>
    public GenerationRequest Request { get; }

    /// <summary>The result, set when the enumeration completes.</summary>
    public GenerationReport? Report { get; internal set; }

    /// <summary>The generation's live state once it started (fault injectors aim at its phase), else null.</summary>
    internal GenerationTracker? Tracker { get; set; }

    /// <summary>Runs the generation, yielding each token as it is committed (once: a generation runs one time).</summary>
    public IAsyncEnumerator<CommittedToken> GetAsyncEnumerator(CancellationToken cancellationToken = default)
    {
        if (Interlocked.Exchange(ref _started, 1) == 1)
        {
            throw new InvalidOperationException("a generation runs once; call Generate again for another");
        }

        return _run(this, cancellationToken).GetAsyncEnumerator(cancellationToken);
    }

    /// <summary>Runs the generation to its end and returns its report.</summary>
    public async Task<GenerationReport> RunToEndAsync(CancellationToken cancellationToken = default)
    {
        var enumerator = GetAsyncEnumerator(cancellationToken);
        await using (enumerator.ConfigureAwait(false))
        {
            while (await enumerator.MoveNextAsync().ConfigureAwait(false))
            {
            }
        }

        return Report!;
    }
}
