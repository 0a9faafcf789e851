using SpecEdge.Protocol.V1;
using SpecEdge.Shared.Decoding;
using SpecEdge.Shared.Tokenization;
using DomainFinish = SpecEdge.Shared.Decoding.FinishReason;
using WireFinish = SpecEdge.Protocol.V1.FinishReason;

namespace SpecEdge.Shared.Protocol;

/// <summary>Conversions between the wire messages and the domain types both sides use.</summary>
public static class WireMapping
{
    /// <summary>The sampling configuration a wire message carries (greedy when absent).</summary>
    public static SamplingConfig ToConfig(this Sampling? sampling) => sampling is null
        ? SamplingConfig.Greedy
        : new SamplingConfig
        {
            Temperature = sampling.Temperature,
            TopK = sampling.TopK,
            TopP = sampling.TopP == 0f ? 1f : sampling.TopP,
            Seed = sampling.Seed,
        };

    /// <summary>The wire form of a sampling configuration.</summary>
    public static Sampling ToWire(this SamplingConfig config) => new()
    {
        Temperature = config.Temperature,
        TopK = config.TopK,
        TopP = config.TopP,
        Seed = config.Seed,
    };

    /// <summary>The wire form of why a generation ended.</summary>
    public static WireFinish ToWire(this DomainFinish reason) => reason switch
    {
        DomainFinish.EndOfSequence => WireFinish.Eos,
        DomainFinish.Length => WireFinish.Length,
        DomainFinish.Context => WireFinish.Context,
        _ => WireFinish.Unspecified,
    };

    /// <summary>The outcome a message names: a final or early verdict, an alternative, or a condition.</summary>
    public static Verdict ToDomain(this IWireVerdict verdict) =>
        new((int)verdict.Accepted, new TokenId(verdict.NextId), verdict.HasBranchId ? new TokenId(verdict.BranchId) : null);

    /// <summary>Sets a message's outcome fields to <paramref name="verdict"/>; returns the message.</summary>
    public static T With<T>(this T wire, Verdict verdict)
        where T : IWireVerdict
    {
        wire.Accepted = (uint)verdict.Accepted;
        wire.NextId = verdict.Next.Value;
        if (verdict.Branch is { } branch)
        {
            wire.BranchId = branch.Value;
        }

        return wire;
    }

    /// <summary>An outcome an exit ranks next, as an early verdict's alternative.</summary>
    public static Alternative ToWire(this RankedVerdict ranked) => new Alternative { Probability = (float)ranked.Probability }.With(ranked.Verdict);

    /// <summary>A condition on <paramref name="round"/> having ended with <paramref name="verdict"/>.</summary>
    public static Condition ToCondition(this Verdict verdict, uint round) => new Condition { Round = round }.With(verdict);

    /// <summary>A leaf of a round's token tree from the wire.</summary>
    public static DraftLeaf ToDomain(this Leaf leaf) => new((int)leaf.Depth, new TokenId(leaf.Id));

    /// <summary>The wire form of a leaf.</summary>
    public static Leaf ToWire(this DraftLeaf leaf) => new() { Depth = (uint)leaf.Depth, Id = leaf.Token.Value };

    /// <summary>
    /// Why a finished generation ended, from the wire; a finished message without a reason (an older or careless
    /// verifier) reads as the length limit.
    /// </summary>
    public static DomainFinish ToDomain(this WireFinish reason) => reason switch
    {
        WireFinish.Eos => DomainFinish.EndOfSequence,
        WireFinish.Context => DomainFinish.Context,
        _ => DomainFinish.Length,
    };

    /// <summary>A draft distribution from the wire.</summary>
    public static SparseDistribution ToDomain(this DraftDistribution distribution) =>
        new([.. distribution.Ids], [.. distribution.Probabilities]);

    /// <summary>The wire form of a draft distribution.</summary>
    public static DraftDistribution ToWire(this SparseDistribution distribution)
    {
        var wire = new DraftDistribution();
        wire.Ids.AddRange(distribution.Ids);
        wire.Probabilities.AddRange(distribution.Probabilities);
        return wire;
    }
}
