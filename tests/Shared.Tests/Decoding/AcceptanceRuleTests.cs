using SpecEdge.Shared.Decoding;
using SpecEdge.Shared.Tokenization;

namespace SpecEdge.Shared.Tests.Decoding;

public sealed class AcceptanceRuleTests
{
    private const int Vocab = 5;

    /// <summary>
    /// Chi-square critical value for 4 degrees of freedom at significance 1e-4: a correct rule fails with probability
    /// 1 in 10 000, a wrong one (below) exceeds it by orders of magnitude at 100 000 draws.
    /// </summary>
    private const double ChiSquareCritical4Dof = 23.51;

    private const int Draws = 100_000;

    [Fact]
    public void Verify_GreedyAllMatch_AcceptsAllAndAddsBonus()
    {
        var rule = new AcceptanceRule(Vocab);
        float[][] rows = [OneHot(2), OneHot(4), OneHot(1)];

        var verdict = rule.Verify([new TokenId(2), new TokenId(4)], null, i => rows[i], SamplingConfig.Greedy, 10);

        Assert.Equal(new Verdict(2, new TokenId(1)), verdict);
    }

    [Fact]
    public void Verify_GreedyMismatch_StopsAtFirstAndCorrects()
    {
        var rule = new AcceptanceRule(Vocab);
        float[][] rows = [OneHot(2), OneHot(3), OneHot(1)];

        var verdict = rule.Verify([new TokenId(2), new TokenId(4)], null, i => rows[i], SamplingConfig.Greedy, 10);

        Assert.Equal(new Verdict(1, new TokenId(3)), verdict);
    }

    [Fact]
    public void Verify_SamplingDraftEqualsTarget_AlwaysAccepts()
    {
        var rule = new AcceptanceRule(Vocab);
        var logits = Logits(0.1, 0.2, 0.3, 0.25, 0.15);
        var q = Dense(0.1, 0.2, 0.3, 0.25, 0.15);
        for (ulong seed = 0; seed < 200; seed++)
        {
            var config = new SamplingConfig { Temperature = 1f, Seed = seed };
            var draft = TokenSampler.Sample(q, SamplingRandom.Uniform(seed, 0, RandomPurpose.Draft));

            var verdict = rule.Verify([draft], [SparseDistribution.FromDense(q)], _ => logits, config, 0);

            Assert.Equal(1, verdict.Accepted);
        }
    }

    [Fact]
    public void Verify_SamplingDraftWhereTargetHasNoMass_AlwaysRejectsAndNeverPicksIt()
    {
        var rule = new AcceptanceRule(Vocab);
        // Target mass only on tokens 0 and 1 (top-k 2); the draft puts 0.9 on token 4.
        var logits = Logits(0.5, 0.4, 0.05, 0.03, 0.02);
        var config = new SamplingConfig { Temperature = 1f, TopK = 2 };
        var q = new SparseDistribution([4, 0], [0.9f, 0.1f]);
        for (ulong seed = 0; seed < 500; seed++)
        {
            var verdict = rule.Verify([new TokenId(4)], [q], _ => logits, config with { Seed = seed }, 3);

            Assert.Equal(0, verdict.Accepted);
            Assert.True(verdict.Next.Value is 0 or 1, $"seed {seed}: correction {verdict.Next} is outside the target's support");
        }
    }

    public static TheoryData<string, double[], double[]> AdversarialPairs() => new()
    {
        { "draft-overconfident-on-rare", [0.4, 0.3, 0.2, 0.08, 0.02], [0.02, 0.03, 0.05, 0.1, 0.8] },
        { "draft-uniform", [0.7, 0.1, 0.1, 0.05, 0.05], [0.2, 0.2, 0.2, 0.2, 0.2] },
        { "draft-misses-support", [0.25, 0.25, 0.25, 0.125, 0.125], [0.5, 0.5, 0, 0, 0] },
        { "draft-close", [0.3, 0.3, 0.2, 0.1, 0.1], [0.31, 0.29, 0.2, 0.12, 0.08] },
    };

    [Theory]
    [MemberData(nameof(AdversarialPairs))]
    public void Verify_SamplingFirstToken_FollowsTargetDistribution(string name, double[] p, double[] q)
    {
        var counts = DrawFirstTokens(new AcceptanceRule(Vocab), p, q);

        var chi2 = ChiSquare(counts, p);
        Assert.True(chi2 < ChiSquareCritical4Dof, $"{name}: chi-square {chi2:F1} ≥ {ChiSquareCritical4Dof}; counts {string.Join(",", counts)}");
    }

    /// <summary>The pairs where the classic wrong rule's bias is large enough to see (not "draft-close", where q ≈ p).</summary>
    public static TheoryData<string, double[], double[]> DistinctPairs()
    {
        var pairs = new TheoryData<string, double[], double[]>();
        foreach (var row in AdversarialPairs())
        {
            if ((string)row[0] != "draft-close")
            {
                pairs.Add((string)row[0], (double[])row[1], (double[])row[2]);
            }
        }

        return pairs;
    }

    /// <summary>
    /// The classic mistake — after a rejection, resample from p rather than from norm(max(0, p − q)) — swapped into the
    /// production rule through its test seam, fails the same test.
    /// </summary>
    [Theory]
    [MemberData(nameof(DistinctPairs))]
    public void WrongRule_ResidualFromTargetInsteadOfDifference_FailsTheSameTest(string name, double[] p, double[] q)
    {
        var counts = DrawFirstTokens(new AcceptanceRule(Vocab, RejectionCorrection.TargetDistribution), p, q);

        Assert.True(ChiSquare(counts, p) >= ChiSquareCritical4Dof, $"{name}: the wrong rule passed the goodness-of-fit test; counts {string.Join(",", counts)}");
    }

    private static long[] DrawFirstTokens(AcceptanceRule rule, double[] p, double[] q)
    {
        var logits = Logits(p);
        var qDense = Dense(q);
        var sparse = SparseDistribution.FromDense(qDense);
        var counts = new long[Vocab];
        for (var seed = 0UL; seed < Draws; seed++)
        {
            var config = new SamplingConfig { Temperature = 1f, Seed = seed };
            var draft = TokenSampler.Sample(qDense, SamplingRandom.Uniform(seed, 0, RandomPurpose.Draft));
            var verdict = rule.Verify([draft], [sparse], _ => logits, config, 0);
            counts[(verdict.Accepted == 1 ? draft : verdict.Next).Value]++;
        }

        return counts;
    }

    [Fact]
    public void Verify_GreedyTree_LeafWhereTheDraftFell_IsTakenAndItsRowGivesTheNext()
    {
        var rule = new AcceptanceRule(Vocab);
        // Step rows: 0 and 1 for the chain [2, 4], 2 after both, then leaf 0 (token 1 at depth 0) and leaf 1 (token 3 at depth 1).
        float[][] rows = [OneHot(2), OneHot(3), OneHot(0), OneHot(4), OneHot(0)];
        DraftLeaf[] leaves = [new(0, new TokenId(1)), new(1, new TokenId(3))];

        var verdict = rule.Verify([new TokenId(2), new TokenId(4)], leaves, null, i => rows[i], SamplingConfig.Greedy, 10);

        // Draft 0 stands, draft 1 falls (the target wants 3), leaf 1 is 3: taken, and its own row (4) gives the next token.
        Assert.Equal(new Verdict(1, new TokenId(0), new TokenId(3)), verdict);
        Assert.Equal([new TokenId(2), new TokenId(3), new TokenId(0)], verdict.Tokens([new TokenId(2), new TokenId(4)]));
    }

    [Fact]
    public void Verify_GreedyTree_NoLeafIsTheTargetsToken_CorrectsAsAChain()
    {
        var rule = new AcceptanceRule(Vocab);
        float[][] rows = [OneHot(1), OneHot(0), OneHot(0), OneHot(4)];
        DraftLeaf[] leaves = [new(0, new TokenId(3)), new(1, new TokenId(0))];

        // Draft 0 (2) falls to 1; the leaf at depth 0 is 3; the leaf at depth 1 is never reached.
        var verdict = rule.Verify([new TokenId(2), new TokenId(4)], leaves, null, i => rows[i], SamplingConfig.Greedy, 10);

        Assert.Equal(new Verdict(0, new TokenId(1)), verdict);
    }

    /// <summary>
    /// SpecInfer's multi-step speculative sampling: a draft and one to three leaves at the same depth, all drawn
    /// independently from q; the first committed token (the draft if it stands, else the leaf that stands, else the last
    /// residual's draw) follows the target's p for every adversarial pair.
    /// </summary>
    [Theory]
    [MemberData(nameof(AdversarialPairs))]
    public void Verify_SamplingTree_FirstToken_FollowsTargetDistribution(string name, double[] p, double[] q)
    {
        foreach (var leaves in new[] { 1, 3 })
        {
            var counts = DrawFirstTokensOfTree(new AcceptanceRule(Vocab), p, q, leaves);

            var chi2 = ChiSquare(counts, p);
            Assert.True(chi2 < ChiSquareCritical4Dof, $"{name}, {leaves} leaves: chi-square {chi2:F1} ≥ {ChiSquareCritical4Dof}; counts {string.Join(",", counts)}");
        }
    }

    /// <summary>The leaves tried against p itself instead of the residual (the wrong rule's seam) fail the same test.</summary>
    [Theory]
    [MemberData(nameof(DistinctPairs))]
    public void WrongRule_TreeWithoutTheResidual_FailsTheSameTest(string name, double[] p, double[] q)
    {
        var counts = DrawFirstTokensOfTree(new AcceptanceRule(Vocab, RejectionCorrection.TargetDistribution), p, q, leaves: 1);

        Assert.True(ChiSquare(counts, p) >= ChiSquareCritical4Dof, $"{name}: the wrong rule passed the goodness-of-fit test; counts {string.Join(",", counts)}");
    }

    [Fact]
    public void Verify_SamplingTree_LeafWithZeroDraftProbability_IsRefused()
    {
        var rule = new AcceptanceRule(Vocab);
        var q = new SparseDistribution([3], [1f]);
        var logits = Logits(0.9, 0.025, 0.025, 0.025, 0.025);
        var config = new SamplingConfig { Temperature = 1f };

        // A seed whose accept test fails the draft (it stands only when u < p(3) / q(3) = 0.025), so the leaf is tried;
        // the leaf 1 has no mass under q.
        var seed = Enumerable.Range(0, 100).Select(s => (ulong)s).First(s => SamplingRandom.Uniform(s, 0, RandomPurpose.Accept) >= 0.025);

        var refused = Assert.Throws<ArgumentException>(() => rule.Verify([new TokenId(3)], [new DraftLeaf(0, new TokenId(1))], [q], _ => logits, config with { Seed = seed }, 0));

        Assert.Equal("leaves", refused.ParamName);
    }

    private static long[] DrawFirstTokensOfTree(AcceptanceRule rule, double[] p, double[] q, int leaves)
    {
        // One draft and its leaves at depth 0: rows 0 (the draft's), 1 (after the draft), then one per leaf.
        var logits = Logits(p);
        var qDense = Dense(q);
        var sparse = SparseDistribution.FromDense(qDense);
        var counts = new long[Vocab];
        var tree = new DraftLeaf[leaves];
        for (var seed = 0UL; seed < Draws; seed++)
        {
            var config = new SamplingConfig { Temperature = 1f, Seed = seed };
            var draft = TokenSampler.Sample(qDense, SamplingRandom.Uniform(seed, 0, RandomPurpose.Draft));
            for (var k = 0; k < leaves; k++)
            {
                tree[k] = new DraftLeaf(0, TokenSampler.Sample(qDense, SamplingRandom.Uniform(seed, 0, RandomPurpose.Leaf, k)));
            }

            var verdict = rule.Verify([draft], tree, [sparse], _ => logits, config, 0);
            counts[(verdict.Accepted == 1 ? draft : verdict.Branch ?? verdict.Next).Value]++;
        }

        return counts;
    }

    [Fact]
    public void Verify_SamplingTwoDraftsAllAccepted_BonusFollowsLastRow()
    {
        var rule = new AcceptanceRule(Vocab);
        var same = Logits(0.2, 0.2, 0.2, 0.2, 0.2);
        var bonusRow = Logits(0.05, 0.05, 0.05, 0.05, 0.8);
        var q = SparseDistribution.FromDense(Dense(0.2, 0.2, 0.2, 0.2, 0.2));
        var counts = new long[Vocab];
        for (var seed = 0UL; seed < 20_000; seed++)
        {
            var verdict = rule.Verify([new TokenId(1), new TokenId(2)], [q, q], i => i < 2 ? same : bonusRow, new SamplingConfig { Temperature = 1f, Seed = seed }, 0);
            Assert.Equal(2, verdict.Accepted);
            counts[verdict.Next.Value]++;
        }

        Assert.InRange(counts[4] / 20_000.0, 0.78, 0.82);
    }

    [Fact]
    public void Verify_DraftWithZeroDraftProbability_IsRefused()
    {
        var rule = new AcceptanceRule(Vocab);
        var q = new SparseDistribution([1], [1f]);

        Assert.Throws<ArgumentException>(() => rule.Verify([new TokenId(3)], [q], _ => Logits(0.2, 0.2, 0.2, 0.2, 0.2), new SamplingConfig { Temperature = 1f }, 0));
    }

    private static double ChiSquare(long[] counts, double[] p)
    {
        var total = counts.Sum();
        double chi2 = 0;
        for (var i = 0; i < counts.Length; i++)
        {
            var expected = total * p[i];
            chi2 += (counts[i] - expected) * (counts[i] - expected) / expected;
        }

        return chi2;
    }

    private static float[] OneHot(int id)
    {
        var row = new float[Vocab];
        row[id] = 10f;
        return row;
    }

    private static float[] Logits(params double[] p) => p.Select(v => (float)Math.Log(v)).ToArray();

    private static float[] Dense(params double[] p) => p.Select(v => (float)v).ToArray();
}
