using SpecEdge.EdgeClient.Client;

namespace SpecEdge.EndToEnd.Tests;

/// <summary>What a report says of token trees.</summary>
internal static class TreeRounds
{
    /// <summary>Drafting rounds that took a leaf: they committed two tokens past their accepted drafts (the leaf and the one after it).</summary>
    public static int LeavesTaken(GenerationReport report) => report.PerRound.Count(r => r.Drafted > 0 && r.Committed == r.Accepted + 2);
}
