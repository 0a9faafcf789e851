namespace SpecEdge.Protocol.V1;

/// <summary>
/// The fields every wire message that names a round's outcome carries (<c>accepted</c>, <c>next_id</c>, the optional
/// <c>branch_id</c>): final and early verdicts, alternatives and conditions. One mapping serves them all
/// (<see cref="Shared.Protocol.WireMapping"/>).
/// </summary>
public interface IWireVerdict
{
    /// <summary>Drafts that stand.</summary>
    uint Accepted { get; set; }

    /// <summary>The token after them (after the leaf, when one was taken).</summary>
    int NextId { get; set; }

    /// <summary>Whether a leaf was taken.</summary>
    bool HasBranchId { get; }

    /// <summary>The leaf's token.</summary>
    int BranchId { get; set; }
}

/// <summary>A final verdict names a round's outcome.</summary>
public sealed partial class FinalVerdict : IWireVerdict
{
}

/// <summary>An early verdict names a round's provisional outcome.</summary>
public sealed partial class EarlyVerdict : IWireVerdict
{
}

/// <summary>An alternative names an outcome an exit ranks next.</summary>
public sealed partial class Alternative : IWireVerdict
{
}

/// <summary>A condition names the outcome a conditional round assumes.</summary>
public sealed partial class Condition : IWireVerdict
{
}
