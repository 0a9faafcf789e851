using System.Globalization;
using System.Text;
using SpecEdge.Shared.Decoding;
using SpecEdge.Shared.Tokenization;

namespace SpecEdge.EdgeClient.Client;

/// <summary>Where a generation's conversation with its verifier stands (what a fault injected now would interrupt).</summary>
internal enum GenerationPhase
{
    /// <summary>Not talking to a verifier: connecting, drafting between rounds, or done.</summary>
    Idle,

    /// <summary>Open (or a Generate call) sent, its answer not yet back: the verifier is prefilling.</summary>
    Prefill,

    /// <summary>A round sent, no verdict on it yet.</summary>
    MidRound,

    /// <summary>An early verdict on the round arrived, its final verdict not yet.</summary>
    BetweenEarlyAndFinal,

    /// <summary>A conditional round sent ahead of its predecessor's final verdict, which has not arrived.</summary>
    ConditionalInFlight,

    /// <summary>Cloud decoding: tokens streaming.</summary>
    Streaming,
}

/// <summary>The committed sequence of one generation, its text, and the figures its report is made of.</summary>
internal sealed class GenerationTracker
{
    private int _phase;

    private readonly Utf8StreamDecoder _decoder;
    private readonly StringBuilder _text = new();
    private readonly TimeProvider _time;
    private readonly long _start;
    private readonly List<RoundRecord> _rounds = [];
    private readonly Dictionary<int, ExitRecord> _exits = [];
    private long _lastVerdict;
    private double? _firstTokenMs;
    private double? _lastTokenMs;

    public GenerationTracker(ITextTokenizer tokenizer, IReadOnlyList<TokenId> prompt, TimeProvider time)
    {
        _decoder = new Utf8StreamDecoder(tokenizer);
        Tokens = [.. prompt];
        PromptLength = prompt.Count;
        _time = time;
        _start = time.GetTimestamp();
        _lastVerdict = _start;
    }

    /// <summary>Prompt and committed tokens.</summary>
    public List<TokenId> Tokens { get; }

    public int PromptLength { get; }

    public int Generated => Tokens.Count - PromptLength;

    public FinishReason FinishReason { get; set; }

    public int DraftTokens { get; private set; }

    public int AcceptedTokens { get; private set; }

    public int EarlyVerdicts { get; set; }

    public int Hits { get; set; }

    /// <summary>Of <see cref="Hits"/>, pre-drafted rounds drafted on an alternative outcome (multi-candidate pre-drafting).</summary>
    public int AlternateHits { get; set; }

    public int Misses { get; set; }

    public int Wasted { get; set; }

    public int StartedWithoutWaiting { get; set; }

    public int Dropped { get; set; }

    /// <summary>Rounds sent ahead as conditional rounds.</summary>
    public int SentAhead { get; set; }

    public IReadOnlyList<RoundRecord> Rounds => _rounds;

    /// <summary>Milliseconds since the generation started.</summary>
    public double ElapsedMs => _time.GetElapsedTime(_start).TotalMilliseconds;

    /// <summary>Indices (0 = first new token) of tokens committed without verification (degraded policy).</summary>
    public List<int> Unverified { get; } = [];

    /// <summary>Auto mode: the generation has given drafting up for cloud streaming.</summary>
    public bool InCloud { get; set; }

    /// <summary>The mode of each session, in order (auto mode: conditional, then perhaps cloud).</summary>
    public List<string> ModesUsed { get; } = [];

    /// <summary>Sessions opened for this generation (more than one after a failover or resume).</summary>
    public int Sessions { get; set; }

    /// <summary>Retries after broken streams, refusals or timeouts.</summary>
    public int Retries { get; set; }

    /// <summary>The verifiers the generation used, in order of first use.</summary>
    public List<string> Verifiers { get; } = [];

    /// <summary>Commits tokens and returns them with the text they complete.</summary>
    public List<CommittedToken> Commit(ReadOnlySpan<TokenId> tokens, bool verified = true)
    {
        var committed = new List<CommittedToken>(tokens.Length);
        foreach (var token in tokens)
        {
            Tokens.Add(token);
            var text = _decoder.Push(token);
            _text.Append(text);
            if (!verified)
            {
                Unverified.Add(Generated - 1);
            }

            committed.Add(new CommittedToken(token, Generated - 1, text, verified));
        }

        if (tokens.Length > 0)
        {
            _lastTokenMs = ElapsedMs;
            _firstTokenMs ??= _lastTokenMs;
        }

        return committed;
    }

    /// <summary>Wall time since the previous round's verdict, and starts the next round's clock.</summary>
    public double LapMs()
    {
        var now = _time.GetTimestamp();
        var lap = _time.GetElapsedTime(_lastVerdict, now).TotalMilliseconds;
        _lastVerdict = now;
        return lap;
    }

    /// <summary>Where the generation's conversation with its verifier stands; read by fault injectors aiming at it.</summary>
    public GenerationPhase Phase
    {
        get => (GenerationPhase)Volatile.Read(ref _phase);
        set => Volatile.Write(ref _phase, (int)value);
    }

    /// <summary>The verifier address of the session now open.</summary>
    public string? CurrentVerifier { get; set; }

    /// <summary>The generation's span, when anything listens.</summary>
    public System.Diagnostics.Activity? Activity { get; set; }

    public void AddRound(RoundRecord record)
    {
        _rounds.Add(record);
        EdgeTelemetry.RoundEnded(record, _time.GetUtcNow());
        DraftTokens += record.Drafted;
        AcceptedTokens += record.Accepted;
    }

    public ExitRecord Exit(int layer)
    {
        if (!_exits.TryGetValue(layer, out var record))
        {
            record = new ExitRecord { Layer = layer };
            _exits[layer] = record;
        }

        return record;
    }

    public GenerationReport Build(GenerationMode mode, string compute, string link)
    {
        _text.Append(_decoder.Flush());
        // The generation's latency ends with its last token; closing the stream afterwards is nobody's wait.
        var total = _lastTokenMs ?? ElapsedMs;
        return new GenerationReport
        {
            Mode = mode.Name(),
            ModesUsed = ModesUsed.Count > 0 ? [.. ModesUsed.Distinct()] : [mode.Name()],
            Text = _text.ToString(),
            PromptTokens = PromptLength,
            TokenIds = Tokens.Skip(PromptLength).Select(t => t.Value).ToList(),
            FinishReason = FinishReason switch
            {
                FinishReason.EndOfSequence => "eos",
                FinishReason.Length => "length",
                FinishReason.Context => "context",
                _ => "stopped",
            },
            Rounds = _rounds.Count,
            DraftTokens = DraftTokens,
            AcceptedTokens = AcceptedTokens,
            LatencyMs = new LatencySummary(Round3(total), Round3(_firstTokenMs ?? total), Round3(Generated == 0 ? 0 : total / Generated)),
            TimeBreakdownMs = new TimeBreakdown(
                Round3(_rounds.Sum(r => r.DraftMs)),
                Round3(_rounds.Sum(r => r.NetworkAndQueueMs)),
                Round3(_rounds.Sum(r => r.VerifyMs)),
                Round3(_rounds.Sum(r => r.QueueMs))),
            EarlyExits = new EarlyExitSummary
            {
                EarlyVerdicts = EarlyVerdicts,
                Hits = Hits,
                AlternateHits = AlternateHits,
                Misses = Misses,
                PerExit = [.. _exits.Values.OrderBy(e => e.Layer)],
                PreDraftedTokensWasted = Wasted,
                RoundsStartedWithoutWaiting = StartedWithoutWaiting,
                ConditionalRoundsSent = SentAhead,
                ConditionalRoundsDropped = Dropped,
            },
            PerRound = _rounds,
            Compute = compute,
            Link = link,
            UnverifiedTokenIndices = Unverified,
            Resilience = new ResilienceSummary(Sessions, Retries, Verifiers),
        };
    }

    public static double Round3(double value) => Math.Round(value, 3);

    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"{Generated} tokens in {_rounds.Count} rounds");
}
