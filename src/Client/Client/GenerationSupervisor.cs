using System.Threading.Channels;
using Grpc.Core;
using Microsoft.Extensions.Logging;
using Polly;
using SpecEdge.EdgeClient.Decoding;
using SpecEdge.EdgeClient.Drafting;
using SpecEdge.EdgeClient.Logging;
using SpecEdge.EdgeClient.Transport;
using SpecEdge.Shared.Decoding;

namespace SpecEdge.EdgeClient.Client;

/// <summary>
/// The verifiers a client knows, in order, and which one a generation starts on (the last one that worked).
/// </summary>
internal sealed class EndpointRing(IReadOnlyList<VerifierEndpoint> endpoints, int first)
{
    private int _next = first;

    public IReadOnlyList<VerifierEndpoint> All => endpoints;

    public VerifierEndpoint Current => endpoints[Volatile.Read(ref _next) % endpoints.Count];

    /// <summary>The next verifier in the list whose circuit is not open (the same one when it is the only one).</summary>
    public VerifierEndpoint After(VerifierEndpoint failed)
    {
        var start = endpoints.ToList().IndexOf(failed);
        for (var step = 1; step <= endpoints.Count; step++)
        {
            var candidate = (start + step) % endpoints.Count;
            if (endpoints[candidate].Available)
            {
                Volatile.Write(ref _next, candidate);
                return endpoints[candidate];
            }
        }

        return failed;
    }
}

/// <summary>
/// Runs one verified generation through failures: segments (a session each, from the tokens committed so far) under a
/// retry pipeline and each verifier's circuit breaker, failing over along the <see cref="EndpointRing"/>, and with the
/// degraded policy, handing over to the draft alone while no verifier answers. Committed tokens go to the output.
/// </summary>
internal sealed class GenerationSupervisor(
    EdgeClientOptions options,
    EndpointRing ring,
    DraftEngine? engine,
    GenerationRequest request,
    GenerationTracker tracker,
    int verifierMaxLength,
    ChannelWriter<CommittedToken> output,
    Func<VerifierEndpoint, CancellationToken, IAsyncEnumerable<CommittedToken>> segment,
    ILogger logger)
{
    private VerifierEndpoint _endpoint = ring.Current;

    public async Task RunAsync(CancellationToken cancellationToken)
    {
        try
        {
            var retry = Resilience.BuildRetry(options.MaxRetries, options.RetryDelay, options.Time, args =>
            {
                tracker.Retries++;
                EdgeTelemetry.Retried();
                MoveTo(ring.After(_endpoint));
                EdgeLog.Retry(logger, args.AttemptNumber + 1, _endpoint.Address, args.Outcome.Exception?.Message.Split('\n')[0]);
                return ValueTask.CompletedTask;
            });
            while (tracker.FinishReason == FinishReason.None)
            {
                await RunUntilDoneOrDegradedAsync(retry, cancellationToken).ConfigureAwait(false);
            }

            output.TryComplete();
        }
        catch (Exception ex)
        {
            output.TryComplete(ex);
        }
    }

    private async Task RunUntilDoneOrDegradedAsync(ResiliencePipeline retry, CancellationToken cancellationToken)
    {
        // The degraded policy's watchdog: restarted on every committed token, it fires after a stretch with no verified
        // progress and hands the generation to the draft alone.
        using var watchdog = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        if (options.DegradedAfter is { } degradedAfter)
        {
            watchdog.CancelAfter(degradedAfter);
        }

        try
        {
            await retry.ExecuteAsync(async token =>
            {
                var current = _endpoint;
                await current.Breaker.ExecuteAsync(inner => new ValueTask(SegmentAsync(current, watchdog, inner)), token).ConfigureAwait(false);
            }, watchdog.Token).ConfigureAwait(false);
        }
        catch (Exception ex) when (options.DegradedAfter is not null && !cancellationToken.IsCancellationRequested
            && (watchdog.IsCancellationRequested || Resilience.IsTransient(ex)))
        {
            EdgeLog.Degraded(logger, options.DegradedAfter.Value.TotalSeconds, ex.Message.Split('\n')[0]);
            _endpoint = await DegradeAsync(cancellationToken).ConfigureAwait(false) ?? _endpoint;
        }
        catch (Exception ex) when (!cancellationToken.IsCancellationRequested && Resilience.IsTransient(ex))
        {
            throw new VerifierUnavailableException($"no verifier could finish the generation after {tracker.Retries} retries across {string.Join(", ", ring.All.Select(e => e.Address))}; {tracker.Generated} tokens were committed; last error: {(ex is RpcException rpc ? SpecEdgeClient.Explain(rpc) : ex.Message.Split('\n')[0])}", ex);
        }
    }

    private void MoveTo(VerifierEndpoint next)
    {
        if (!ReferenceEquals(next, _endpoint))
        {
            EdgeTelemetry.FailedOver();
        }

        _endpoint = next;
    }

    /// <summary>One session on <paramref name="current"/>; a break after progress resumes at once with a fresh retry budget.</summary>
    private async Task SegmentAsync(VerifierEndpoint current, CancellationTokenSource watchdog, CancellationToken cancellationToken)
    {
        tracker.Sessions++;
        tracker.CurrentVerifier = current.Address.ToString();
        tracker.Phase = GenerationPhase.Idle;
        if (!tracker.Verifiers.Contains(current.Address.ToString()))
        {
            tracker.Verifiers.Add(current.Address.ToString());
        }

        var before = tracker.Generated;
        try
        {
            await StreamAsync(current, watchdog, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (tracker.Generated > before && Resilience.IsTransient(ex))
        {
            // The verifier made progress before the stream broke: only failures without progress count against the
            // retry budget. A verifier that is shutting down is left for the next one in the list.
            tracker.Retries++;
            EdgeTelemetry.Resumed();
            if (ex is VerifierDrainingException or RpcException { StatusCode: StatusCode.Unavailable })
            {
                MoveTo(ring.After(current));
            }

            EdgeLog.ResumingAfterProgress(logger, current.Address, ex.Message.Split('\n')[0], _endpoint.Address);
        }
    }

    private async Task StreamAsync(VerifierEndpoint current, CancellationTokenSource watchdog, CancellationToken cancellationToken)
    {
        try
        {
            await foreach (var committed in segment(current, cancellationToken).ConfigureAwait(false))
            {
                await output.WriteAsync(committed, CancellationToken.None).ConfigureAwait(false);
                if (options.DegradedAfter is { } again)
                {
                    watchdog.CancelAfter(again);
                }
            }
        }
        catch (ChannelClosedException ex) when (ex.InnerException is { } cause)
        {
            // The stream's reader failed: its error is the segment's error.
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(cause);
        }
        catch (OperationCanceledException ex) when (!cancellationToken.IsCancellationRequested)
        {
            // Not cancelled by anyone: the call was torn down under us (a reset connection).
            throw new StreamBrokenException($"the stream to {current.Address} broke", ex);
        }
    }

    /// <summary>
    /// The degraded policy: the draft generates alone (the edge mode's loop), every token marked unverified, until a
    /// verifier answers again (checked every <see cref="EdgeClientOptions.ProbeInterval"/>) or the generation ends.
    /// Returns the verifier that answered.
    /// </summary>
    private async Task<VerifierEndpoint?> DegradeAsync(CancellationToken cancellationToken)
    {
        var draft = engine ?? throw new InvalidOperationException("the degraded policy needs a draft model");
        var lastProbe = options.Time.GetTimestamp();
        await foreach (var token in new EdgeRunner(draft, request, tracker, verifierMaxLength, verified: false).RunAsync(cancellationToken).ConfigureAwait(false))
        {
            await output.WriteAsync(token, cancellationToken).ConfigureAwait(false);
            if (options.Time.GetElapsedTime(lastProbe) >= options.ProbeInterval)
            {
                lastProbe = options.Time.GetTimestamp();
                if (await ProbeAsync(cancellationToken).ConfigureAwait(false) is { } endpoint)
                {
                    return endpoint;
                }
            }
        }

        return null;
    }

    private async Task<VerifierEndpoint?> ProbeAsync(CancellationToken cancellationToken)
    {
        foreach (var endpoint in ring.All)
        {
            try
            {
                await endpoint.DescribeAsync(TimeSpan.FromSeconds(1), cancellationToken).ConfigureAwait(false);
                EdgeLog.VerifierBack(logger, endpoint.Address);
                return endpoint;
            }
            catch (RpcException)
            {
                // Still unreachable, or no answer within the probe's deadline: not back yet.
            }
        }

        return null;
    }
}
