namespace SpecEdge.Shared.Protocol;

/// <summary>Limits the wire contract fixes for both sides.</summary>
public static class ProtocolLimits
{
    /// <summary>The most conditional rounds an edge may send for one round (<c>Open.candidates</c>).</summary>
    public const int MaxCandidates = 4;

    /// <summary>The most leaves an edge drafts beside each draft of a token tree (the verifier bounds leaves per round, <c>Opened.max_leaves</c>).</summary>
    public const int MaxLeafWidth = 4;
}
