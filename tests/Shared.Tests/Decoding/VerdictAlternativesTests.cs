using SpecEdge.Shared.Decoding;
using SpecEdge.Shared.Tokenization;
using SpecEdge.TestUtilities;

namespace SpecEdge.Shared.Tests.Decoding;

/// <summary>The outcomes an exit ranks after its own verdict (multi-candidate pre-drafting), on rows set by hand.</summary>
public sealed class VerdictAlternativesTests
{
    private static readonly TokenId[] Drafts = [new(5), new(6)];

    // Row 0 keeps draft 5 (0.6; runner-up 9 at 0.3); row 1 rejects draft 6 for 7 (0.5), with 6 the runner-up (0.4);
    // row 2 (after both drafts) would pick 8 (0.9). The exit's verdict: one draft stands, then 7.
    private static readonly RowTopTwo[] Rows =
    [
        new(new TokenId(5), 0.6f, new TokenId(9), 0.3f),
        new(new TokenId(7), 0.5f, new TokenId(6), 0.4f),
        new(new TokenId(8), 0.9f, new TokenId(2), 0.05f),
    ];

    private static readonly Verdict ExitVerdict = new(1, new TokenId(7));

    [Fact]
    public void Rank_EachRowsRunnerUp_MostLikelyFirst()
    {
        var ranked = VerdictAlternatives.Rank(Drafts, ExitVerdict, Rows, count: 3);

        // Row 0 takes 9 instead of keeping draft 5: 0.3. Row 1 keeps draft 6 after all (its runner-up): both drafts
        // stand and row 2's 8 follows, 0.6 · 0.4 = 0.24. The rows the verdict does not rest on add nothing.
        Assert.Equal([new Verdict(0, new TokenId(9)), new Verdict(2, new TokenId(8))], ranked.Select(r => r.Verdict));
        Assert.Equal(0.3, ranked[0].Probability, 1e-6);
        Assert.Equal(0.24, ranked[1].Probability, 1e-6);
    }

    [Fact]
    public void Rank_Count_CutsTheList()
    {
        var ranked = VerdictAlternatives.Rank(Drafts, ExitVerdict, Rows, count: 1);

        Assert.Equal([new Verdict(0, new TokenId(9))], ranked.Select(r => r.Verdict));
    }

    [Fact]
    public void Rank_RowsThatDoNotFitTheDrafts_Throw()
    {
        Assert.Throws<ArgumentException>(() => VerdictAlternatives.Rank(Drafts, ExitVerdict, Rows.AsSpan(0, 2), count: 2));
        Assert.Throws<ArgumentException>(() => VerdictAlternatives.Rank(Drafts, new Verdict(1, new TokenId(8)), Rows, count: 2));
    }

    /// <summary>From logits, against a plain double-precision softmax and a sort written here: the same two ids and probabilities.</summary>
    [Theory]
    [InlineData(new[] { 1.5f, -2f, 3.25f, 3f, 0f }, 2, 3)]
    [InlineData(new[] { 7f, 7f, -1f }, 0, 1)] // a tie: the lower id first
    [InlineData(new[] { -30f, 12f, 11.5f, -4f, 0.5f, 12f }, 1, 5)]
    public void RowTopTwo_FromLogits_IsTheSoftmaxsTopTwo(float[] logits, int first, int second)
    {
        var probabilities = ReferenceLlama.Softmax(logits);

        var top = RowTopTwo.FromLogits(logits, new float[logits.Length]);

        Assert.Equal(new TokenId(first), top.First);
        Assert.Equal(new TokenId(second), top.Second);
        Assert.Equal(probabilities[first], top.FirstProbability, 1e-6);
        Assert.Equal(probabilities[second], top.SecondProbability, 1e-6);
    }
}
