using SpecEdge.Protocol.V1;
using SpecEdge.Shared.Decoding;
using SpecEdge.Shared.Protocol;
using SpecEdge.Shared.Tokenization;
using DomainFinish = SpecEdge.Shared.Decoding.FinishReason;
using WireFinish = SpecEdge.Protocol.V1.FinishReason;

namespace SpecEdge.Shared.Tests.Decoding;

/// <summary>The verdict rules both sides use: what a verdict commits, whether it fits its round, and when verdicts agree.</summary>
public sealed class VerdictTests
{
    private static readonly TokenId[] Drafts = [new(10), new(11), new(12)];

    [Theory]
    [InlineData(0, new[] { 7 })]
    [InlineData(2, new[] { 10, 11, 7 })]
    [InlineData(3, new[] { 10, 11, 12, 7 })]
    public void Tokens_AcceptedDraftsThenNext(int accepted, int[] expected)
    {
        Assert.Equal(expected, new Verdict(accepted, new TokenId(7)).Tokens(Drafts).Select(t => t.Value));
    }

    [Fact]
    public void Tokens_MoreAcceptedThanDrafts_Throws() =>
        Assert.Throws<ArgumentException>(() => new Verdict(4, new TokenId(7)).Tokens(Drafts));

    [Theory]
    [InlineData(3, 99, true)]
    [InlineData(4, 5, false)]
    [InlineData(1, 100, false)]
    [InlineData(-1, 5, false)]
    public void Fits_AcceptedWithinDraftsAndNextWithinVocabulary(int accepted, int next, bool fits) =>
        Assert.Equal(fits, new Verdict(accepted, new TokenId(next)).Fits(Drafts.Length, vocabSize: 100));

    [Fact]
    public void Tokens_Branch_AcceptedDraftsThenTheLeafThenNext() =>
        Assert.Equal([10, 42, 7], new Verdict(1, new TokenId(7), new TokenId(42)).Tokens(Drafts).Select(t => t.Value));

    [Fact]
    public void Tokens_BranchAfterEveryDraft_Throws() =>
        Assert.Throws<ArgumentException>(() => new Verdict(3, new TokenId(7), new TokenId(42)).Tokens(Drafts));

    [Theory]
    [InlineData(1, 42, true)]
    [InlineData(1, 43, false)]
    [InlineData(0, 42, false)]
    [InlineData(2, 50, true)]
    public void Fits_Branch_OnlyALeafSentAtThatDepth(int accepted, int branch, bool fits)
    {
        DraftLeaf[] leaves = [new(1, new TokenId(42)), new(2, new TokenId(50)), new(2, new TokenId(51))];

        Assert.Equal(fits, new Verdict(accepted, new TokenId(7), new TokenId(branch)).Fits(Drafts.Length, vocabSize: 100, leaves));
        Assert.False(new Verdict(accepted, new TokenId(7), new TokenId(branch)).Fits(Drafts.Length, vocabSize: 100));
    }

    [Theory]
    [InlineData(3, 1, 7, 42)]
    [InlineData(2, 1, 42, -1)]
    [InlineData(1, 0, 10, -1)]
    public void Cut_BranchVerdict_KeepsItsFirstTokens(int kept, int accepted, int next, int branch)
    {
        var verdict = new Verdict(1, new TokenId(7), new TokenId(42));

        var cut = verdict.Cut(Drafts, kept);

        Assert.Equal(new Verdict(accepted, new TokenId(next), branch < 0 ? null : new TokenId(branch)), cut);
        Assert.Equal(verdict.Tokens(Drafts)[..kept], cut.Tokens(Drafts));
    }

    [Fact]
    public void WireForms_Branch_RoundTripsThroughEveryMessage()
    {
        var verdict = new Verdict(1, new TokenId(9), new TokenId(42));
        var condition = verdict.ToCondition(4);
        var final = new FinalVerdict { Round = 4, Accepted = 1, NextId = 9, BranchId = 42 };

        Assert.Equal(verdict, condition.ToDomain());
        Assert.Equal(verdict, final.ToDomain());
        Assert.Equal(verdict, new EarlyVerdict { Round = 4, Accepted = 1, NextId = 9, BranchId = 42 }.ToDomain());
        Assert.NotEqual(verdict, new FinalVerdict { Round = 4, Accepted = 1, NextId = 9 }.ToDomain());
        Assert.False(new Verdict(1, new TokenId(9)).ToCondition(4).HasBranchId);
    }

    [Fact]
    public void WireForms_SameAcceptedAndNext_AgreeWhateverTheMessage()
    {
        var final = new FinalVerdict { Round = 4, Accepted = 2, NextId = 9, CommittedLength = 30 };
        var early = new EarlyVerdict { Round = 4, Accepted = 2, NextId = 9, Confidence = 0.7f };
        var condition = new Verdict(2, new TokenId(9)).ToCondition(4);

        Assert.Equal(final.ToDomain(), early.ToDomain());
        Assert.Equal(final.ToDomain(), condition.ToDomain());
        Assert.Equal(4u, condition.Round);
        Assert.NotEqual(final.ToDomain(), new EarlyVerdict { Round = 4, Accepted = 2, NextId = 8 }.ToDomain());
        Assert.NotEqual(final.ToDomain(), new Condition { Round = 4, Accepted = 1, NextId = 9 }.ToDomain());
    }

    [Theory]
    [InlineData(WireFinish.Eos, DomainFinish.EndOfSequence)]
    [InlineData(WireFinish.Length, DomainFinish.Length)]
    [InlineData(WireFinish.Context, DomainFinish.Context)]
    public void FinishReason_RoundTripsThroughTheWire(WireFinish wire, DomainFinish domain)
    {
        Assert.Equal(domain, wire.ToDomain());
        Assert.Equal(wire, domain.ToWire());
    }
}
