using Microsoft.Extensions.Logging;

namespace SpecEdge.EdgeClient.Logging;

/// <summary>The edge client's log messages (source-generated; stable event ids).</summary>
internal static partial class EdgeLog
{
    [LoggerMessage(EventId = 3001, Level = LogLevel.Information, Message = "{Message}")]
    public static partial void Converting(ILogger logger, string message);

    [LoggerMessage(EventId = 3010, Level = LogLevel.Warning, Message = "Generation retry {Attempt} on {Server}: {Reason}")]
    public static partial void Retry(ILogger logger, int attempt, Uri server, string? reason);

    [LoggerMessage(EventId = 3011, Level = LogLevel.Warning, Message = "Stream to {Server} broke after progress ({Reason}); resuming on {Next}")]
    public static partial void ResumingAfterProgress(ILogger logger, Uri server, string reason, Uri next);

    [LoggerMessage(EventId = 3020, Level = LogLevel.Warning, Message = "No verifier for {Seconds} s ({Reason}): continuing with the draft alone, tokens marked unverified")]
    public static partial void Degraded(ILogger logger, double seconds, string reason);

    [LoggerMessage(EventId = 3021, Level = LogLevel.Information, Message = "Verifier {Server} is back: returning to verified decoding")]
    public static partial void VerifierBack(ILogger logger, Uri server);
}
