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
}
