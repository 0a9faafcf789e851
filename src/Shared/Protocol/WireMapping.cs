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

    /// <summary>The verdict a final verdict message carries.</summary>
    public static Verdict ToDomain(this FinalVerdict verdict) => new((int)verdict.Accepted, new TokenId(verdict.NextId), verdict.HasBranchId ? new TokenId(verdict.BranchId) : null);

    /// <summary>The provisional verdict an early verdict message carries.</summary>
    public static Verdict ToDomain(this EarlyVerdict verdict) => new((int)verdict.Accepted, new TokenId(verdict.NextId), verdict.HasBranchId ? new TokenId(verdict.BranchId) : null);

    /// <summary>The outcome an early verdict ranks after its own.</summary>
    public static Verdict ToDomain(this Alternative alternative) => new((int)alternative.Accepted, new TokenId(alternative.NextId), alternative.HasBranchId ? new TokenId(alternative.BranchId) : null);

    /// <summary>An outcome an exit ranks next, as an early verdict's alternative.</summary>
    public static Alternative ToWire(this RankedVerdict ranked)
    {
        var alternative = new Alternative { Accepted = (uint)ranked.Verdict.Accepted, NextId = ranked.Verdict.Next.Value, Probability = (float)ranked.Probability };
        if (ranked.Verdict.Branch is { } branch)
        {
            alternative.BranchId = branch.Value;
        }

        return alternative;
    }

    /// <summary>The verdict a conditional round assumes its predecessor got.</summary>
    public static Verdict ToDomain(this Condition condition) => new((int)condition.Accepted, new TokenId(condition.NextId), condition.HasBranchId ? new TokenId(condition.BranchId) : null);

    /// <summary>A condition on <paramref name="round"/> having ended with <paramref name="verdict"/>.</summary>
    public static Condition ToCondition(this Verdict verdict, uint round)
    {
        var condition = new Condition { Round = round, Accepted = (uint)verdict.Accepted, NextId = verdict.Next.Value };
        if (verdict.Branch is { } branch)
        {
            condition.BranchId = branch.Value;
        }

        return condition;
    }

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
