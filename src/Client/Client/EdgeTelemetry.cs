using System.Diagnostics;
using System.Diagnostics.Metrics;
using Grpc.Core;
using SpecEdge.Shared.Protocol;

namespace SpecEdge.EdgeClient.Client;

/// <summary>
/// The edge's instruments (meter <see cref="MeterName"/>) and spans (activity source <see cref="ActivitySourceName"/>):
/// a span per generation, with a child per round; the generation's trace context and its session-affinity key travel
/// to the verifier in every call's metadata. Nothing is exported unless the host adds an exporter (the CLI does, for
/// OTLP); with no listener these cost a branch.
/// </summary>
public static class EdgeTelemetry
{
    /// <summary>The meter of the edge's instruments.</summary>
    public const string MeterName = "SpecEdge.Edge";

    /// <summary>The activity source of the edge's spans.</summary>
    public const string ActivitySourceName = "SpecEdge.Edge";

    /// <summary>The metadata key carrying a generation's session-affinity key (<see cref="TelemetryConventions.SessionHeader"/>).</summary>
    public const string SessionHeader = TelemetryConventions.SessionHeader;

    private static readonly Meter Meter = new(MeterName);

    private static readonly AsyncLocal<string?> CurrentSession = new();

    private static readonly Counter<long> Generations = Meter.CreateCounter<long>("specedge.edge.generations", "{generation}", "Generations finished, by mode and finish reason.");

    private static readonly Counter<long> Tokens = Meter.CreateCounter<long>("specedge.edge.tokens", "{token}", "New tokens committed, by mode.");

    private static readonly Histogram<double> TimePerToken = Meter.CreateHistogram("specedge.edge.generation.time_per_token", "s", "A generation's wall time over its new tokens (ms per token, in seconds), by mode.", advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = TelemetryConventions.DurationBuckets });

    private static readonly Histogram<double> GenerationDuration = Meter.CreateHistogram("specedge.edge.generation.duration", "s", "A generation's wall time, by mode.", advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = TelemetryConventions.DurationBuckets });

    private static readonly Counter<long> Rounds = Meter.CreateCounter<long>("specedge.edge.rounds", "{round}", "Rounds sent for verification.");

    private static readonly Histogram<double> RoundPhase = Meter.CreateHistogram("specedge.edge.round.phase.duration", "s", "A round's time by phase: draft (on the critical path), network (link and queue), verify (the verifier's compute).", advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = TelemetryConventions.DurationBuckets });

    private static readonly Counter<long> Retries = Meter.CreateCounter<long>("specedge.edge.retries", "{retry}", "Sessions retried after a failure without progress.");

    private static readonly Counter<long> Resumes = Meter.CreateCounter<long>("specedge.edge.resumes", "{session}", "Sessions resumed from the committed tokens after a break with progress.");

    private static readonly Counter<long> Failovers = Meter.CreateCounter<long>("specedge.edge.failovers", "{failover}", "Moves to another verifier address.");

    private static readonly Counter<long> DegradedTokens = Meter.CreateCounter<long>("specedge.edge.degraded.tokens", "{token}", "Tokens committed by the draft alone, unverified (degraded policy).");

    /// <summary>The edge's activity source.</summary>
    public static ActivitySource Source { get; } = new(ActivitySourceName);

    /// <summary>Starts a generation: its span (when anything listens) and its session-affinity key for the calls it makes.</summary>
    internal static Activity? StartGeneration(GenerationMode mode, int promptTokens)
    {
        CurrentSession.Value = Guid.NewGuid().ToString("N");
        var activity = Source.StartActivity("specedge.edge.generation");
        activity?.SetTag("specedge.mode", mode.Name());
        activity?.SetTag("specedge.prompt.tokens", promptTokens);
        activity?.SetTag("specedge.session.key", CurrentSession.Value);
        return activity;
    }

    /// <summary>Adds the generation's affinity key and trace context to a call's metadata.</summary>
    internal static Metadata AddCallMetadata(Metadata metadata)
    {
        if (CurrentSession.Value is { } session && metadata.Get(SessionHeader) is null)
        {
            metadata.Add(SessionHeader, session);
        }

        if (Activity.Current is { IdFormat: ActivityIdFormat.W3C } current && metadata.Get("traceparent") is null)
        {
            metadata.Add("traceparent", current.Id!);
            if (!string.IsNullOrEmpty(current.TraceStateString))
            {
                metadata.Add("tracestate", current.TraceStateString);
            }
        }

        return metadata;
    }

    /// <summary>A round ended: its phases, and its span (from its start to its final verdict) under the generation's.</summary>
    internal static void RoundEnded(RoundRecord round, DateTimeOffset endedAt)
    {
        Rounds.Add(1);
        RoundPhase.Record(round.DraftMs / 1000, new KeyValuePair<string, object?>("specedge.phase", "draft"));
        RoundPhase.Record(round.NetworkAndQueueMs / 1000, new KeyValuePair<string, object?>("specedge.phase", "network"));
        RoundPhase.Record(round.VerifyMs / 1000, new KeyValuePair<string, object?>("specedge.phase", "verify"));
        if (Source.HasListeners() && Activity.Current is { } generation)
        {
            using var span = Source.StartActivity("specedge.edge.round", ActivityKind.Internal, generation.Context, startTime: endedAt - TimeSpan.FromMilliseconds(round.WallMs));
            if (span is not null)
            {
                span.SetTag("specedge.round", round.Round);
                span.SetTag("specedge.round.drafted", round.Drafted);
                span.SetTag("specedge.round.accepted", round.Accepted);
                span.SetTag("specedge.round.draft_ms", round.DraftMs);
                span.SetTag("specedge.round.network_ms", round.NetworkAndQueueMs);
                span.SetTag("specedge.round.verify_ms", round.VerifyMs);
                span.SetEndTime(endedAt.UtcDateTime);
            }
        }
    }

    /// <summary>A generation ended with <paramref name="report"/>.</summary>
    internal static void GenerationEnded(GenerationReport report, Activity? activity)
    {
        var mode = new KeyValuePair<string, object?>("specedge.mode", report.Mode);
        Generations.Add(1, mode, new("specedge.finish_reason", report.FinishReason));
        Tokens.Add(report.NewTokens, mode);
        GenerationDuration.Record(report.LatencyMs.Total / 1000, mode);
        if (report.NewTokens > 0)
        {
            TimePerToken.Record(report.LatencyMs.PerToken / 1000, mode);
        }

        if (report.UnverifiedTokens > 0)
        {
            DegradedTokens.Add(report.UnverifiedTokens);
        }

        if (activity is not null)
        {
            activity.SetTag("specedge.tokens", report.NewTokens);
            activity.SetTag("specedge.rounds", report.Rounds);
            activity.SetTag("specedge.acceptance", report.AcceptanceRate);
            activity.SetTag("specedge.finish_reason", report.FinishReason);
            activity.SetTag("specedge.sessions", report.Resilience.Sessions);
        }
    }

    /// <summary>A session failed without progress and is retried.</summary>
    internal static void Retried() => Retries.Add(1);

    /// <summary>A session broke after progress and resumes.</summary>
    internal static void Resumed() => Resumes.Add(1);

    /// <summary>The generation moved to another verifier address.</summary>
    internal static void FailedOver() => Failovers.Add(1);
}
