using Grpc.Core;
using Polly;
using Polly.Retry;

namespace SpecEdge.EdgeClient.Transport;

/// <summary>A round got no final verdict within its deadline.</summary>
public sealed class RoundTimeoutException(string message) : TimeoutException(message);

/// <summary>A stream to a verifier was torn down mid-generation (a reset connection, a killed process).</summary>
public sealed class StreamBrokenException(string message, Exception inner) : IOException(message, inner);

/// <summary>
/// The verifier broke the protocol: a message out of place, or a verdict that does not fit the round it answers. A bug
/// on the other side, not an outage, so it is never retried (another attempt would meet the same bug).
/// </summary>
public sealed class ProtocolViolationException(string message) : Exception($"the verifier broke the protocol: {message}");

/// <summary>
/// The verifier is shutting down and said so (a <c>Draining</c> message): the session ends here and resumes on another
/// verifier with the tokens committed so far.
/// </summary>
public sealed class VerifierDrainingException(uint committedLength)
    : Exception($"the verifier is shutting down: resume the generation on another verifier (committed length {committedLength})")
{
    /// <summary>The committed length the verifier reported when it began draining.</summary>
    public uint CommittedLength { get; } = committedLength;
}

/// <summary>Which failures the edge retries, and the retry pipeline built once per client.</summary>
internal static class Resilience
{
    /// <summary>
    /// Failures worth retrying on the same or another verifier: the verifier is unreachable, shutting down (a status or
    /// <see cref="VerifierDrainingException"/>), busy
    /// (ResourceExhausted), too slow (a round deadline), or the stream broke. Bad input (InvalidArgument,
    /// FailedPrecondition), authentication, a verifier that breaks the protocol (<see cref="ProtocolViolationException"/>)
    /// and cancellation by the caller are not.
    /// </summary>
    public static bool IsTransient(Exception exception) => exception switch
    {
        RpcException rpc => rpc.StatusCode is StatusCode.Unavailable or StatusCode.DeadlineExceeded or StatusCode.ResourceExhausted
            or StatusCode.Internal or StatusCode.Aborted or StatusCode.Cancelled or StatusCode.Unknown,
        RoundTimeoutException or VerifierDrainingException or IOException or HttpRequestException or Polly.CircuitBreaker.BrokenCircuitException => true,
        _ => false,
    };

    /// <summary>
    /// Retries of whole generation segments (a segment runs until the generation ends or the stream breaks; the next one
    /// re-opens a session with the committed tokens), with exponential backoff and jitter.
    /// </summary>
    public static ResiliencePipeline BuildRetry(int maxRetries, TimeSpan baseDelay, TimeProvider time, Func<OnRetryArguments<object>, ValueTask> onRetry) =>
        new ResiliencePipelineBuilder { TimeProvider = time }.AddRetry(new RetryStrategyOptions
        {
            ShouldHandle = new PredicateBuilder().Handle<Exception>(IsTransient),
            MaxRetryAttempts = maxRetries,
            BackoffType = DelayBackoffType.Exponential,
            UseJitter = true,
            Delay = baseDelay,
            MaxDelay = TimeSpan.FromSeconds(5),
            OnRetry = onRetry,
        }).Build();
}
