namespace SpecEdge.Shared.Protocol;

/// <summary>What both sides' telemetry agrees on: the session-affinity metadata key and the duration buckets.</summary>
public static class TelemetryConventions
{
    /// <summary>
    /// The metadata key carrying a generation's session-affinity key: every call of one generation (its sessions after a
    /// failover and resume too) carries the same value, so a balancer hashing on it keeps the generation on one replica
    /// while that replica lives. The verifier tags its session span with it.
    /// </summary>
    public const string SessionHeader = "x-specedge-session";

    /// <summary>Histogram bucket bounds for durations, in seconds: 100 µs to 30 s.</summary>
    public static IReadOnlyList<double> DurationBuckets { get; } = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
}
