namespace SpecEdge.CloudVerifier.Logging;

internal static partial class VerifierLog
{
    [LoggerMessage(EventId = 2001, Level = LogLevel.Information, Message = "{Message}")]
    public static partial void Converting(ILogger logger, string message);

    [LoggerMessage(EventId = 2002, Level = LogLevel.Information, Message = "Session {SessionId} opened ({Client}): prompt {PromptTokens} tokens, {Committed} committed, {Sampling}, early verdicts {Early}")]
    public static partial void SessionOpened(ILogger logger, string sessionId, string client, int promptTokens, int committed, string sampling, bool early);

    [LoggerMessage(EventId = 2003, Level = LogLevel.Information, Message = "Session {SessionId} ended after {Rounds} rounds, {Generated} tokens generated ({Reason})")]
    public static partial void SessionEnded(ILogger logger, string sessionId, uint rounds, int generated, string reason);

    [LoggerMessage(EventId = 2004, Level = LogLevel.Warning, Message = "Session {SessionId} refused a message: {Status} {Detail}")]
    public static partial void MessageRefused(ILogger logger, string sessionId, Grpc.Core.StatusCode status, string detail);

    [LoggerMessage(EventId = 2005, Level = LogLevel.Information, Message = "Verifier serving {Model} ({Layers} layers, exits [{Exits}], vocabulary {Vocab}) on {Device}; compute: {Profile}")]
    public static partial void Serving(ILogger logger, string model, int layers, string exits, int vocab, string device, string profile);

    [LoggerMessage(EventId = 2006, Level = LogLevel.Warning, Message = "Session {SessionId} closed after {Seconds} s without a message")]
    public static partial void SessionIdle(ILogger logger, string sessionId, int seconds);

    [LoggerMessage(EventId = 2007, Level = LogLevel.Warning, Message = "Refused a call from {Peer}: {Reason}")]
    public static partial void AuthFailed(ILogger logger, string reason, string peer);

    [LoggerMessage(EventId = 2008, Level = LogLevel.Warning, Message = "API key '{Key}' is over its rate limit of {Limit} calls per minute")]
    public static partial void RateLimited(ILogger logger, string key, int limit);

    [LoggerMessage(EventId = 2009, Level = LogLevel.Warning, Message = "Serving plaintext HTTP/2 on {Address}, which is not loopback (AllowPlaintext is set): traffic and API keys travel unencrypted")]
    public static partial void PlaintextOffLoopback(ILogger logger, string address);

    [LoggerMessage(EventId = 2010, Level = LogLevel.Information, Message = "Shutting down: refusing new sessions, letting {Sessions} session(s) finish their rounds (grace {Seconds} s)")]
    public static partial void ShuttingDown(ILogger logger, int sessions, int seconds);

    [LoggerMessage(EventId = 2011, Level = LogLevel.Warning, Message = "Refused a session: {Reason}")]
    public static partial void Admission(ILogger logger, string reason);

    [LoggerMessage(EventId = 2012, Level = LogLevel.Warning, Message = "Model runs still in flight after {Seconds} s at shutdown: the model is freed anyway")]
    public static partial void RunsInFlight(ILogger logger, int seconds);

    [LoggerMessage(EventId = 2030, Level = LogLevel.Error, Message = "A batched model step failed; its sessions get Internal: {Reason}")]
    public static partial void StepFailed(ILogger logger, string reason);

    [LoggerMessage(EventId = 2013, Level = LogLevel.Information, Message = "Draining: readiness is NOT_SERVING; open sessions move in {Seconds} s (Verifier:DrainDelaySeconds)")]
    public static partial void DrainDelay(ILogger logger, int seconds);

    [LoggerMessage(EventId = 2040, Level = LogLevel.Information, Message = "Ready: model loaded and warmed up in {Milliseconds} ms; readiness is SERVING")]
    public static partial void Ready(ILogger logger, long milliseconds);

    [LoggerMessage(EventId = 2041, Level = LogLevel.Information, Message = "Metrics: Prometheus scrape endpoint at {Url}metrics")]
    public static partial void MetricsEndpoint(ILogger logger, string url);

    [LoggerMessage(EventId = 2042, Level = LogLevel.Critical, Message = "The model failed to load; stopping: {Reason}")]
    public static partial void LoadFailed(ILogger logger, string reason);
}
