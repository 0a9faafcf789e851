using Grpc.Core;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Options;
using SpecEdge.CloudVerifier.Hosting;
using SpecEdge.Protocol.V1;
using SpecEdge.Shared.Decoding;
using SpecEdge.Shared.Tokenization;
using SpecEdge.TestUtilities;

namespace SpecEdge.CloudVerifier.Tests.Services;

/// <summary>Early verdicts and conditional rounds: a holding condition is verified at once; anything else is dropped and the session goes on.</summary>
public sealed class ConditionalRoundTests(VerifierFixture fixture) : IClassFixture<VerifierFixture>
{
    private static readonly int[] Prompt = [256, 83, 112, 101, 99];

    [Fact]
    public async Task EarlyVerdict_ThresholdZero_SentBeforeEveryFinal()
    {
        var expected = fixture.LocalGreedy(Prompt, 8);
        await using var stream = await OpenAsync(maxNewTokens: 8, early: true);

        await stream.SendAsync(Round(1, 0, expected.Take(3)));
        var first = await stream.ReadAsync();
        var final = await stream.ReadFinalAsync(1);

        Assert.Equal(VerifierMessage.KindOneofCase.Early, first.KindCase);
        Assert.Equal(1u, first.Early.Round);
        Assert.Equal(1u, first.Early.ExitLayer);
        Assert.InRange(first.Early.Confidence, 0f, 1f);
        Assert.True(first.Early.Accepted <= 3);
        Assert.Equal(3u, final.Accepted);
        Assert.Equal(expected[3], final.NextId);
    }

    [Fact]
    public async Task EarlyVerdict_VerdictAndConfidence_MatchTheReferenceExitHead()
    {
        var (early, drafts, rows) = await EarlyVerdictOnOneWrongDraftAsync(candidates: 0);

        var accepted = 0;
        while (accepted < drafts.Length && ArgMax(rows[accepted]) == drafts[accepted])
        {
            accepted++;
        }

        var leastSure = rows.Take(accepted + 1).Min(ReferenceLlama.MaxProbability);
        Assert.Equal((uint)accepted, early.Accepted);
        Assert.Equal(ArgMax(rows[accepted]), early.NextId);
        Assert.Equal(leastSure, early.Confidence, 1e-4);
    }

    [Fact]
    public async Task EarlyVerdict_ThreeCandidates_AlternativesAreTheReferenceExitHeadsNextOutcomes()
    {
        var (early, drafts, rows) = await EarlyVerdictOnOneWrongDraftAsync(candidates: 3);

        // The reference forward pass's exit rows, ranked by VerdictAlternatives.Rank (whose rules VerdictAlternativesTests
        // checks on rows set by hand): the verifier must send what its exit head, computed independently, implies.
        var scratch = new float[rows[0].Length];
        var tops = rows.Select(r => RowTopTwo.FromLogits(r, scratch)).ToArray();
        var accepted = (int)early.Accepted;
        var verdict = new Verdict(accepted, new TokenId(ArgMax(rows[accepted])));
        var want = VerdictAlternatives.Rank([.. drafts.Select(d => new TokenId(d))], verdict, tops, 2);
        Assert.Equal(rows.Take(accepted + 1).Min(ReferenceLlama.MaxProbability), early.Confidence, 1e-4);
        Assert.Equal(want.Count, early.Alternatives.Count);
        for (var i = 0; i < want.Count; i++)
        {
            Assert.Equal((uint)want[i].Verdict.Accepted, early.Alternatives[i].Accepted);
            Assert.Equal(want[i].Verdict.Next.Value, early.Alternatives[i].NextId);
            Assert.Equal(want[i].Probability, early.Alternatives[i].Probability, 1e-4);
        }
    }

    /// <summary>
    /// A tree round whose leaves are the tokens the chain round's alternatives named: the exit's verdict and the ranking
    /// are unchanged (the leaves do not disturb the chain's rows), and every alternative whose token is a leaf at its
    /// depth now takes the leaf (branch_id), its next token the reference exit head's arg-max after the leaf.
    /// </summary>
    [Fact]
    public async Task EarlyVerdict_TreeRound_AnAlternativeOnALeafTakesIt()
    {
        var (chain, drafts, _) = await EarlyVerdictOnOneWrongDraftAsync(candidates: 3);
        var leaves = chain.Alternatives.Where(a => a.Accepted < drafts.Length).OrderBy(a => a.Accepted)
            .Select(a => new Leaf { Depth = a.Accepted, Id = a.NextId }).ToList();
        Assert.NotEmpty(leaves);

        await using var stream = await OpenAsync(maxNewTokens: 8, early: true, candidates: 3);
        var round = Round(1, 0, drafts);
        round.Leaves.AddRange(leaves);
        await stream.SendAsync(round);
        var tree = (await stream.ReadAsync()).Early;
        await stream.ReadFinalAsync(1);

        Assert.Equal(chain.Accepted, tree.Accepted);
        Assert.Equal(chain.NextId, tree.NextId);
        Assert.False(tree.HasBranchId);
        Assert.Equal(chain.Alternatives.Count, tree.Alternatives.Count);
        var reference = fixture.Pair.Target.Reference();
        for (var i = 0; i < tree.Alternatives.Count; i++)
        {
            var (was, now) = (chain.Alternatives[i], tree.Alternatives[i]);
            Assert.Equal(was.Accepted, now.Accepted);
            Assert.Equal(was.Probability, now.Probability, 1e-6);
            if (leaves.Any(l => l.Depth == was.Accepted && l.Id == was.NextId))
            {
                Assert.True(now.HasBranchId, $"alternative {i} names leaf {was.NextId} at depth {was.Accepted} but does not take it");
                Assert.Equal(was.NextId, now.BranchId);
                var path = reference.Forward([.. Prompt, .. drafts.Take((int)was.Accepted), was.NextId]).HiddenAfterLayer[1];
                Assert.Equal(ArgMax(reference.Head(path[^1], null, null, null)), now.NextId);
            }
            else
            {
                Assert.False(now.HasBranchId);
                Assert.Equal(was.NextId, now.NextId);
            }
        }

        Assert.Contains(tree.Alternatives, a => a.HasBranchId);
    }

    [Fact]
    public async Task EarlyVerdict_OneCandidate_NoAlternatives()
    {
        var expected = fixture.LocalGreedy(Prompt, 8);
        await using var stream = await OpenAsync(maxNewTokens: 8, early: true, candidates: 1);

        await stream.SendAsync(Round(1, 0, [expected[0], (expected[1] + 1) % 258]));
        var early = (await stream.ReadAsync()).Early;
        await stream.ReadFinalAsync(1);

        Assert.Empty(early.Alternatives);
    }

    [Fact]
    public async Task ConditionalRound_ThreeCandidates_TheOneThatHoldsIsVerified_TheOthersDropped()
    {
        var expected = fixture.LocalGreedy(Prompt, 12);
        await using var stream = await OpenAsync(maxNewTokens: 12, candidates: 3);
        var wrong = (expected[3] + 1) % 258;

        // Round 1, then three candidates for round 2 before its final verdict: two on outcomes that do not happen
        // (round 1 keeps two drafts; round 1 keeps three and continues with a wrong token), one on the real outcome.
        await stream.SendAsync(Round(1, 0, expected.Take(3)));
        await stream.SendAsync(Round(2, 3, [expected[3], expected[4]], new Condition { Round = 1, Accepted = 2, NextId = expected[2] + 1 }));
        await stream.SendAsync(Round(2, 4, expected.Skip(4).Take(3), new Condition { Round = 1, Accepted = 3, NextId = expected[3] }));
        await stream.SendAsync(Round(2, 4, expected.Skip(4).Take(3), new Condition { Round = 1, Accepted = 3, NextId = wrong }));
        var first = await stream.ReadFinalAsync(1);
        var droppedBefore = await stream.ReadAsync();
        var second = await stream.ReadFinalAsync(2);
        var droppedAfter = await stream.ReadAsync();

        Assert.Equal(3u, first.Accepted);
        Assert.False(droppedBefore.Dropped.Invalid);
        Assert.Equal(3u, second.Accepted);
        Assert.Equal(expected[7], second.NextId);
        Assert.True(droppedAfter.Dropped.Invalid);
        Assert.Contains("round 2 arrived after the session moved on", droppedAfter.Dropped.Reason);
        await AssertNextRoundWorksAsync(stream, 3, second.CommittedLength, expected);
    }

    [Fact]
    public async Task ConditionalRound_ConditionHolds_VerifiedWithoutAnotherRequest()
    {
        var expected = fixture.LocalGreedy(Prompt, 10);
        await using var stream = await OpenAsync(maxNewTokens: 10);

        await stream.SendAsync(Round(1, 0, expected.Take(3)));
        // Drafted on the (correct) assumption that round 1 accepts all 3 and continues with expected[3].
        await stream.SendAsync(Round(2, 4, expected.Skip(4).Take(3), new Condition { Round = 1, Accepted = 3, NextId = expected[3] }));
        var first = await stream.ReadFinalAsync(1);
        var second = await stream.ReadFinalAsync(2);

        Assert.Equal(3u, first.Accepted);
        Assert.Equal(3u, second.Accepted);
        Assert.Equal(expected[7], second.NextId);
        Assert.Equal((uint)(Prompt.Length + 8), second.CommittedLength);
    }

    [Fact]
    public async Task ConditionalRound_ConditionFails_DroppedAndResentRoundWorks()
    {
        var expected = fixture.LocalGreedy(Prompt, 10);
        await using var stream = await OpenAsync(maxNewTokens: 10);
        var wrong = (expected[3] + 1) % 258;

        await stream.SendAsync(Round(1, 0, expected.Take(3)));
        await stream.SendAsync(Round(2, 4, expected.Skip(4).Take(3), new Condition { Round = 1, Accepted = 3, NextId = wrong }));
        var first = await stream.ReadFinalAsync(1);
        var dropped = await stream.ReadAsync();

        Assert.Equal(VerifierMessage.KindOneofCase.Dropped, dropped.KindCase);
        Assert.False(dropped.Dropped.Invalid);
        Assert.Contains($"not 3 accepted and next {wrong}", dropped.Dropped.Reason);
        await AssertNextRoundWorksAsync(stream, 2, first.CommittedLength, expected);
    }

    [Theory]
    [InlineData(7u, 3u, false, "the condition names round 7, but the last verified round is 1")]
    [InlineData(1u, 9u, false, "assumes 9 accepted drafts, but round 1 carried only 3: an impossible prefix")]
    [InlineData(1u, 3u, true, "next_id 4000 is outside the vocabulary of 258: an impossible prefix")]
    public async Task ConditionalRound_InvalidCondition_DroppedAsInvalidAndSessionGoesOn(uint conditionRound, uint accepted, bool badNext, string message)
    {
        var expected = fixture.LocalGreedy(Prompt, 10);
        await using var stream = await OpenAsync(maxNewTokens: 10);

        await stream.SendAsync(Round(1, 0, expected.Take(3)));
        var first = await stream.ReadFinalAsync(1);
        await stream.SendAsync(Round(2, 4, expected.Skip(4).Take(2), new Condition { Round = conditionRound, Accepted = accepted, NextId = badNext ? 4000 : expected[3] }));
        var dropped = await stream.ReadAsync();

        Assert.Equal(VerifierMessage.KindOneofCase.Dropped, dropped.KindCase);
        Assert.True(dropped.Dropped.Invalid);
        Assert.Contains(message, dropped.Dropped.Reason);
        await AssertNextRoundWorksAsync(stream, 2, first.CommittedLength, expected);
    }

    [Fact]
    public async Task ConditionalRound_SentAfterSessionMovedOn_DroppedAsInvalidAndSessionGoesOn()
    {
        var expected = fixture.LocalGreedy(Prompt, 12);
        await using var stream = await OpenAsync(maxNewTokens: 12);
        await stream.SendAsync(Round(1, 0, expected.Take(3)));
        await stream.ReadFinalAsync(1);
        await stream.SendAsync(Round(2, 4, expected.Skip(4).Take(3)));
        var second = await stream.ReadFinalAsync(2);

        // A stale pre-drafted round 2, conditioned on round 1, arriving after round 2 was verified.
        await stream.SendAsync(Round(2, 4, expected.Skip(4).Take(3), new Condition { Round = 1, Accepted = 3, NextId = expected[3] }));
        var dropped = await stream.ReadAsync();

        Assert.True(dropped.Dropped.Invalid);
        Assert.Contains("round 2 arrived after the session moved on: it expects round 3", dropped.Dropped.Reason);
        await AssertNextRoundWorksAsync(stream, 3, second.CommittedLength, expected);
    }

    [Theory]
    [InlineData("threshold", "Open.exit_thresholds value 1.5 is outside [0, 1]")]
    [InlineData("candidates", "Open.candidates = 5 is out of range: use 0 to 4")]
    public async Task Open_ValueOutOfRange_InvalidArgument(string field, string message)
    {
        await using var stream = new RawStream(fixture.Client);
        var open = fixture.GreedyOpen(Prompt);
        if (field == "threshold")
        {
            open.ExitThresholds.Add(1.5f);
        }
        else
        {
            open.Candidates = 5;
        }

        await stream.SendAsync(open);

        var error = await stream.ExpectErrorAsync();

        Assert.Equal(StatusCode.InvalidArgument, error.StatusCode);
        Assert.Contains(message, error.Status.Detail);
    }

    [Theory]
    [InlineData("Verifier:DefaultExitThreshold", "1.5", "DefaultExitThreshold must lie in [0, 1]")]
    [InlineData("Verifier:ExitThresholds:0", "-0.2", "exit threshold -0.2 is outside [0, 1]")]
    [InlineData("Verifier:Batching:MaxRows", "0", "Verifier:Batching:MaxRows: The field MaxRows must be between 1 and 4096")]
    [InlineData("Verifier:Batching:TokenBudget", "-5", "Verifier:Batching:TokenBudget")]
    [InlineData("Verifier:Limits:MaxSessions", "0", "Verifier:Limits:MaxSessions")]
    public void Startup_SettingOutOfRange_FailsWithClearError(string key, string value, string message)
    {
        var app = VerifierHost.Create([], builder => builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Verifier:Model"] = fixture.Pair.TargetDir,
            [key] = value,
        }));

        var ex = Assert.Throws<OptionsValidationException>(() => VerifierHost.LoadModel(app));

        Assert.Contains(message, ex.Message);
    }

    /// <summary>
    /// Round 1 with two right drafts and a wrong one (so the exit has something to reject): the exit's early verdict,
    /// the drafts, and the reference exit head's logits (final norm and LM head on the hidden state after layer 1) at
    /// each of the round's rows.
    /// </summary>
    private async Task<(EarlyVerdict Early, int[] Drafts, float[][] Rows)> EarlyVerdictOnOneWrongDraftAsync(uint candidates)
    {
        var expected = fixture.LocalGreedy(Prompt, 8);
        int[] drafts = [expected[0], expected[1], (expected[2] + 1) % 258];
        await using var stream = await OpenAsync(maxNewTokens: 8, early: true, candidates: candidates);

        await stream.SendAsync(Round(1, 0, drafts));
        var early = (await stream.ReadAsync()).Early;
        await stream.ReadFinalAsync(1);

        var reference = fixture.Pair.Target.Reference();
        var hidden = reference.Forward([.. Prompt, .. drafts]).HiddenAfterLayer[1];
        return (early, drafts, [.. Enumerable.Range(Prompt.Length - 1, drafts.Length + 1).Select(p => reference.Head(hidden[p], null, null, null))]);
    }

    private static int ArgMax(float[] logits) => Array.IndexOf(logits, logits.Max());

    private async Task<RawStream> OpenAsync(int maxNewTokens, bool early = false, uint candidates = 0)
    {
        var stream = new RawStream(fixture.Client);
        var open = fixture.GreedyOpen(Prompt, maxNewTokens);
        open.EarlyVerdicts = early;
        open.Candidates = candidates;
        await stream.SendAsync(open);
        Assert.Equal(VerifierMessage.KindOneofCase.Opened, (await stream.ReadAsync()).KindCase);
        return stream;
    }

    private static Draft Round(uint round, int generated, IEnumerable<int> ids, Condition? condition = null)
    {
        var draft = new Draft { Round = round, BaseLength = (uint)(Prompt.Length + generated), Condition = condition };
        draft.Ids.AddRange(ids);
        return draft;
    }

    private static async Task AssertNextRoundWorksAsync(RawStream stream, uint round, uint committedLength, IReadOnlyList<int> expected)
    {
        var generated = (int)committedLength - Prompt.Length;
        await stream.SendAsync(Round(round, generated, expected.Skip(generated).Take(2)));
        var verdict = await stream.ReadFinalAsync(round);
        Assert.Equal(2u, verdict.Accepted);
        Assert.Equal(expected[generated + 2], verdict.NextId);
    }
}
