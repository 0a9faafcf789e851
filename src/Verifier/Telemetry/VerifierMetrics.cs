using System.Diagnostics;
using System.Diagnostics.Metrics;
using Grpc.Core;
using SpecEdge.Shared.Protocol;

namespace SpecEdge.CloudVerifier.Telemetry;

/// <summary>
/// The verifier's instruments (meter <see cref="MeterName"/>), named by OpenTelemetry's conventions: dotted lower-case
/// names under <c>specedge.verifier.</c>, seconds for durations, <c>{unit}</c> annotations for counts. The Prometheus
/// exporter turns <c>specedge.verifier.rounds</c> into <c>specedge_verifier_rounds_total</c> and a duration in seconds
/// into <c>…_seconds_bucket</c>; the README lists them all.
/// </summary>
public sealed class VerifierMetrics
{
    /// <summary>The meter every verifier instrument belongs to.</summary>
    public const string MeterName = "SpecEdge.Verifier";

    /// <summary>The activity source of the verifier's spans: one per session, one per round.</summary>
    public const string ActivitySourceName = "SpecEdge.Verifier";

    /// <summary>Small integers as tag values, boxed once (positions, stages and exit layers are tags on every round).</summary>
    private static readonly object[] BoxedInts = [.. Enumerable.Range(0, 257).Select(i => (object)i)];

    private static readonly object BoxedTrue = true;

    private static readonly object BoxedFalse = false;

    private readonly Meter _meter;
    private readonly Counter<long> _rounds;
    private readonly Counter<long> _roundsDropped;
    private readonly Counter<long> _drafted;
    private readonly Counter<long> _accepted;
    private readonly Counter<long> _positions;
    private readonly Counter<long> _earlySent;
    private readonly Counter<long> _earlyScored;
    private readonly Histogram<double> _stageDuration;
    private readonly Histogram<double> _roundDuration;
    private readonly Histogram<double> _queueDuration;
    private readonly Counter<long> _generatedTokens;
    private readonly Counter<long> _refusals;
    private readonly Counter<long> _admissionRefusals;
    private readonly Counter<long> _handedOff;
    private readonly Counter<long> _sessions;

    /// <summary>Creates the instruments on a meter from the host's meter factory.</summary>
    public VerifierMetrics(IMeterFactory meterFactory)
    {
        _meter = meterFactory.Create(MeterName);
        _sessions = _meter.CreateCounter<long>("specedge.verifier.sessions", "{session}", "Sessions opened (Decode and Generate), by kind.");
        _rounds = _meter.CreateCounter<long>("specedge.verifier.rounds", "{round}", "Rounds verified, by kind (plain or conditional).");
        _roundsDropped = _meter.CreateCounter<long>("specedge.verifier.rounds.dropped", "{round}", "Conditional rounds dropped unverified because their condition failed.");
        _drafted = _meter.CreateCounter<long>("specedge.verifier.draft.tokens", "{token}", "Drafted tokens verified.");
        _accepted = _meter.CreateCounter<long>("specedge.verifier.draft.accepted", "{token}", "Drafted tokens the final verdict accepted.");
        _positions = _meter.CreateCounter<long>("specedge.verifier.draft.position.verdicts", "{token}", "Drafted tokens by position in their round (1 = first) and outcome (accepted or not): acceptance by draft position.");
        _earlySent = _meter.CreateCounter<long>("specedge.verifier.early_verdicts", "{verdict}", "Early verdicts sent, by exit layer.");
        _earlyScored = _meter.CreateCounter<long>("specedge.verifier.early_verdicts.scored", "{verdict}", "Early verdicts whose round reached its final verdict, by exit layer and outcome (hit: the final verdict was the same; miss).");
        _stageDuration = _meter.CreateHistogram("specedge.verifier.stage.duration", "s", "Compute time of each stage of a round (stage 0 ends at the first exit).", advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = TelemetryConventions.DurationBuckets });
        _roundDuration = _meter.CreateHistogram("specedge.verifier.round.duration", "s", "A round's time on the verifier, from arrival to its final verdict (queue, stages and emulated floors).", advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = TelemetryConventions.DurationBuckets });
        _queueDuration = _meter.CreateHistogram("specedge.verifier.queue.duration", "s", "Time a round waited for a model step.", advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = TelemetryConventions.DurationBuckets });
        _generatedTokens = _meter.CreateCounter<long>("specedge.verifier.generate.tokens", "{token}", "Tokens streamed by cloud autoregressive decoding (Generate).");
        _refusals = _meter.CreateCounter<long>("specedge.verifier.refusals", "{call}", "Calls to the Verifier service that ended with an error status, by method and status code.");
        _admissionRefusals = _meter.CreateCounter<long>("specedge.verifier.admission.refusals", "{session}", "Sessions refused at admission, by reason (sessions, key_sessions, kv_budget, draining, loading).");
        _handedOff = _meter.CreateCounter<long>("specedge.verifier.sessions.handed_off", "{session}", "Sessions a shutting-down verifier sent to another verifier (Draining).");
    }

    /// <summary>Registers the observed instruments of the session registry: sessions open and KV-cache bytes in use.</summary>
    public void ObserveSessions(Func<int> active, Func<long> kvBytes, long kvBudgetBytes)
    {
        _meter.CreateObservableUpDownCounter("specedge.verifier.sessions.active", active, "{session}", "Sessions open now.");
        _meter.CreateObservableUpDownCounter("specedge.verifier.kv_cache.usage", kvBytes, "By", "KV-cache bytes the open sessions hold.");
        _meter.CreateObservableUpDownCounter("specedge.verifier.kv_cache.limit", () => kvBudgetBytes, "By", "KV-cache bytes all sessions together may hold.");
    }

    /// <summary>Registers the scheduler's observed instruments: queue depth, steps, rows, tokens and busy time.</summary>
    public void ObserveScheduler(Func<int> queued, Func<Scheduling.BatchCounters> counters)
    {
        _meter.CreateObservableUpDownCounter("specedge.verifier.queue.depth", queued, "{request}", "Rounds, prefill chunks and Generate steps waiting for a model step: the autoscaling signal.");
        _meter.CreateObservableCounter("specedge.verifier.batch.steps", () => counters().Steps, "{step}", "Model steps run (one ONNX Runtime call per stage each).");
        _meter.CreateObservableCounter("specedge.verifier.batch.rows", () => counters().Rows, "{row}", "Rows over all steps (one row is one session's part of a step); rows / steps is the mean batch size.");
        _meter.CreateObservableCounter("specedge.verifier.batch.tokens", () => counters().Tokens, "{token}", "Tokens over all steps, padding excluded.");
        _meter.CreateObservableCounter("specedge.verifier.busy.time", () => counters().Busy.TotalSeconds, "s", "Time the model spent running steps; its rate is the model's utilisation.");
    }

    /// <summary>A session opened.</summary>
    public void SessionOpened(string kind) => _sessions.Add(1, new KeyValuePair<string, object?>("specedge.session.kind", kind));

    /// <summary>A round was verified: its drafts, the verdict's acceptance and its timings.</summary>
    /// <param name="drafted">Drafts in the round.</param>
    /// <param name="accepted">Drafts the final verdict accepted.</param>
    /// <param name="conditional">The round was sent ahead of its predecessor's verdict.</param>
    /// <param name="stages">Compute time per stage.</param>
    /// <param name="total">The round's time on the verifier.</param>
    /// <param name="queued">Time it waited for a step.</param>
    public void RoundVerified(int drafted, int accepted, bool conditional, IReadOnlyList<TimeSpan> stages, TimeSpan total, TimeSpan queued)
    {
        _rounds.Add(1, new KeyValuePair<string, object?>("specedge.round.kind", conditional ? "conditional" : "plain"));
        _drafted.Add(drafted);
        _accepted.Add(accepted);
        if (_positions.Enabled)
        {
            for (var position = 1; position <= drafted; position++)
            {
                _positions.Add(1, new("specedge.draft.position", Boxed(position)), new("specedge.draft.accepted", position <= accepted ? BoxedTrue : BoxedFalse));
            }
        }

        if (_stageDuration.Enabled)
        {
            for (var stage = 0; stage < stages.Count; stage++)
            {
                _stageDuration.Record(stages[stage].TotalSeconds, new KeyValuePair<string, object?>("specedge.stage", Boxed(stage)));
            }
        }

        _roundDuration.Record(total.TotalSeconds);
        _queueDuration.Record(queued.TotalSeconds);
    }

    /// <summary>An early verdict's round reached its final verdict: a hit when the final verdict was the same.</summary>
    public void EarlyVerdictScored(int exitLayer, bool hit) =>
        _earlyScored.Add(1, new("specedge.exit.layer", Boxed(exitLayer)), new("specedge.early_verdict.outcome", hit ? "hit" : "miss"));

    /// <summary>An early verdict was sent.</summary>
    public void EarlyVerdictSent(int exitLayer) => _earlySent.Add(1, new KeyValuePair<string, object?>("specedge.exit.layer", Boxed(exitLayer)));

    /// <summary>A conditional round was dropped without verification.</summary>
    public void RoundDropped() => _roundsDropped.Add(1);

    /// <summary>Cloud decoding streamed a token.</summary>
    public void TokenGenerated() => _generatedTokens.Add(1);

    /// <summary>A call to the Verifier service ended with an error status.</summary>
    public void CallRefused(string method, StatusCode code) =>
        _refusals.Add(1, new("rpc.method", method), new("rpc.grpc.status_code", (int)code));

    /// <summary>A session was refused at admission.</summary>
    public void AdmissionRefused(string reason) => _admissionRefusals.Add(1, new KeyValuePair<string, object?>("specedge.refusal.reason", reason));

    /// <summary>A shutting-down verifier sent a session elsewhere.</summary>
    public void SessionHandedOff() => _handedOff.Add(1);

    private static object Boxed(int value) => (uint)value < (uint)BoxedInts.Length ? BoxedInts[value] : value;
}

/// <summary>The verifier's spans: a session per Decode or Generate call, a round within it.</summary>
public static class VerifierTracing
{
    /// <summary>The verifier's activity source.</summary>
    public static readonly ActivitySource Source = new(VerifierMetrics.ActivitySourceName);

    /// <summary>
    /// Starts a session span as a child of the edge's span named in the request's <c>traceparent</c> (the generation);
    /// without one, under the current activity. ASP.NET Core's own request activity, when it makes one, is a sibling
    /// under the same parent, so the trace holds whether or not anything records ASP.NET Core's spans.
    /// </summary>
    public static Activity? StartSession(string name, ServerCallContext context)
    {
        if (!Source.HasListeners())
        {
            return null;
        }

        var activity = context.RequestHeaders.GetValue("traceparent") is { } traceParent
            && ActivityContext.TryParse(traceParent, context.RequestHeaders.GetValue("tracestate"), isRemote: true, out var parent)
            ? Source.StartActivity(name, ActivityKind.Server, parent)
            : Source.StartActivity(name, ActivityKind.Server);
        activity?.SetTag("specedge.session.key", context.RequestHeaders.GetValue(SessionHeader));
        return activity;
    }

    /// <summary>The metadata key of the edge's session-affinity key.</summary>
    public const string SessionHeader = TelemetryConventions.SessionHeader;
}
