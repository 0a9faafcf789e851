namespace SpecEdge.Shared.Protocol;

/// <summary>Limits the wire contract fixes for both sides.</summary>
public static class ProtocolLimits
{
    /// <summary>The most conditional rounds an edge may send for one round (<c>Open.candidates</c>).</summary>
    public const int MaxCandidates = 4;
}
