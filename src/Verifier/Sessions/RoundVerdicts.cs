using SpecEdge.Shared.Decoding;

namespace SpecEdge.CloudVerifier.Sessions;

/// <summary>What a session says about a round; the service maps it to a wire message.</summary>
internal abstract record RoundVerdict(uint Round);

/// <summary>An exit's provisional verdict: the drafts it expects to stand and the token it expects next, and the outcomes it ranks next (multi-candidate pre-drafting).</summary>
internal sealed record EarlyRoundVerdict(uint Round, int ExitLayer, Verdict Verdict, double Confidence, TimeSpan Elapsed, IReadOnlyList<RankedVerdict> Alternatives) : RoundVerdict(Round);

/// <summary>The verdict that commits tokens, and whether the generation ended with them.</summary>
internal sealed record FinalRoundVerdict(uint Round, Verdict Verdict, FinishReason Finish, int CommittedLength, RoundTimings Timings) : RoundVerdict(Round);

/// <summary>A conditional round that was not verified: its condition did not hold, or it could not apply at all.</summary>
internal sealed record DroppedRound(uint Round, string Reason, bool Invalid) : RoundVerdict(Round);

/// <summary>Where a round's time went on the verifier.</summary>
internal sealed record RoundTimings(TimeSpan Queued, IReadOnlyList<TimeSpan> Stages, TimeSpan Total, TimeSpan Emulated, DateTimeOffset Received, DateTimeOffset Decided);
