using Grpc.Core;
using SpecEdge.Protocol.V1;

using SpecEdge.TestUtilities;

namespace SpecEdge.CloudVerifier.Tests.Services;

/// <summary>
/// Every bad message gets a defined status and a message saying what was wrong; that stream ends cleanly and a
/// healthy session running beside it completes with the exact output.
/// </summary>
public sealed class DecodeBadInputTests(VerifierFixture fixture) : IClassFixture<VerifierFixture>
{
    private static readonly int[] HealthyPrompt = [256, 72, 101, 108, 108, 111];

    [Fact]
    public Task Decode_DraftBeforeOpen_FailedPrecondition() => RefusedWhileHealthyGoesOn(
        bad => bad.SendAsync(new Draft { Round = 1, BaseLength = 3, Ids = { 1 } }),
        StatusCode.FailedPrecondition,
        "a Decode stream starts with Open");

    [Fact]
    public Task Decode_SecondOpen_FailedPrecondition() => RefusedWhileHealthyGoesOn(
        async bad =>
        {
            await bad.SendAsync(fixture.GreedyOpen([1, 2, 3]));
            await bad.ReadAsync();
            await bad.SendAsync(fixture.GreedyOpen([1, 2, 3]));
        },
        StatusCode.FailedPrecondition,
        "a second Open on the same stream");

    [Fact]
    public Task Decode_PromptIdOutOfRange_InvalidArgument() => RefusedWhileHealthyGoesOn(
        bad => bad.SendAsync(fixture.GreedyOpen([1, 258, 3])),
        StatusCode.InvalidArgument,
        "Open.prompt_ids[1] = 258 is outside the vocabulary of 258");

    [Fact]
    public Task Decode_EmptyPrompt_InvalidArgument() => RefusedWhileHealthyGoesOn(
        bad => bad.SendAsync(fixture.GreedyOpen([])),
        StatusCode.InvalidArgument,
        "prompt_ids is empty");

    [Fact]
    public Task Decode_PromptOverLimit_InvalidArgument() => RefusedWhileHealthyGoesOn(
        bad => bad.SendAsync(fixture.GreedyOpen(Enumerable.Repeat(65, VerifierFixture.MaxPromptTokens + 1))),
        StatusCode.InvalidArgument,
        $"over the verifier's limit of {VerifierFixture.MaxPromptTokens}");

    [Theory]
    [InlineData(-1f, 0, 1f, "temperature -1 is out of range")]
    [InlineData(1f, -2, 1f, "top_k -2 is out of range")]
    [InlineData(1f, 0, 1.5f, "top_p 1.5 is out of range")]
    public Task Decode_SamplingOutOfRange_InvalidArgument(float temperature, int topK, float topP, string message) => RefusedWhileHealthyGoesOn(
        bad =>
        {
            var open = fixture.GreedyOpen([1, 2, 3]);
            open.Sampling = new Sampling { Temperature = temperature, TopK = topK, TopP = topP };
            return bad.SendAsync(open);
        },
        StatusCode.InvalidArgument,
        message);

    [Fact]
    public Task Decode_MaxNewTokensZero_InvalidArgument() => RefusedWhileHealthyGoesOn(
        bad => bad.SendAsync(fixture.GreedyOpen([1, 2, 3], maxNewTokens: 0)),
        StatusCode.InvalidArgument,
        "max_new_tokens = 0 is out of range");

    [Fact]
    public Task Decode_DraftVocabularyDiffers_FailedPrecondition() => RefusedWhileHealthyGoesOn(
        bad =>
        {
            var open = fixture.GreedyOpen([1, 2, 3]);
            open.DraftVocabSize = 32000;
            return bad.SendAsync(open);
        },
        StatusCode.FailedPrecondition,
        "the draft's vocabulary of 32000 tokens differs from the target's 258");

    [Fact]
    public Task Decode_DraftTokenizerDiffers_FailedPrecondition() => RefusedWhileHealthyGoesOn(
        bad =>
        {
            var open = fixture.GreedyOpen([1, 2, 3]);
            open.DraftTokenizerSha256 = new string('a', 64);
            return bad.SendAsync(open);
        },
        StatusCode.FailedPrecondition,
        "the draft's tokenizer (sha256 aaaaaaaaaaaa…) differs from the target's");

    [Fact]
    public Task Decode_DraftIdOutOfRange_InvalidArgument() => RefusedWhileHealthyGoesOn(
        async bad =>
        {
            await bad.SendAsync(fixture.GreedyOpen([1, 2, 3]));
            await bad.ReadAsync();
            await bad.SendAsync(new Draft { Round = 1, BaseLength = 3, Ids = { 5, 9999 } });
        },
        StatusCode.InvalidArgument,
        "round 1: Draft.ids[1] = 9999 is outside the vocabulary of 258");

    [Fact]
    public Task Decode_DraftLongerThanLimit_InvalidArgument() => RefusedWhileHealthyGoesOn(
        async bad =>
        {
            await bad.SendAsync(fixture.GreedyOpen([1, 2, 3]));
            await bad.ReadAsync();
            var draft = new Draft { Round = 1, BaseLength = 3 };
            draft.Ids.AddRange(Enumerable.Repeat(7, VerifierFixture.MaxDraftTokens + 1));
            await bad.SendAsync(draft);
        },
        StatusCode.InvalidArgument,
        $"{VerifierFixture.MaxDraftTokens + 1} drafts are over the verifier's limit of {VerifierFixture.MaxDraftTokens} per round");

    [Fact]
    public Task Decode_RoundOutOfOrder_FailedPrecondition() => RefusedWhileHealthyGoesOn(
        async bad =>
        {
            await bad.SendAsync(fixture.GreedyOpen([1, 2, 3]));
            await bad.ReadAsync();
            await bad.SendAsync(new Draft { Round = 2, BaseLength = 3, Ids = { 5 } });
        },
        StatusCode.FailedPrecondition,
        "round 2 is out of order: the session expects round 1");

    [Fact]
    public Task Decode_BaseLengthMismatch_FailedPrecondition() => RefusedWhileHealthyGoesOn(
        async bad =>
        {
            await bad.SendAsync(fixture.GreedyOpen([1, 2, 3]));
            await bad.ReadAsync();
            await bad.SendAsync(new Draft { Round = 1, BaseLength = 4, Ids = { 5 } });
        },
        StatusCode.FailedPrecondition,
        "base_length 4 does not match the session's committed length 3");

    [Fact]
    public Task Decode_SamplingWithoutDistributions_InvalidArgument() => RefusedWhileHealthyGoesOn(
        async bad =>
        {
            var open = fixture.GreedyOpen([1, 2, 3]);
            open.Sampling = new Sampling { Temperature = 1f, TopP = 1f };
            await bad.SendAsync(open);
            await bad.ReadAsync();
            await bad.SendAsync(new Draft { Round = 1, BaseLength = 3, Ids = { 5, 6 } });
        },
        StatusCode.InvalidArgument,
        "sampling needs one distribution per draft, got 0 for 2 drafts");

    [Fact]
    public Task Decode_DraftOutsideItsOwnDistribution_InvalidArgument() => RefusedWhileHealthyGoesOn(
        async bad =>
        {
            var open = fixture.GreedyOpen([1, 2, 3]);
            open.Sampling = new Sampling { Temperature = 1f, TopP = 1f };
            await bad.SendAsync(open);
            await bad.ReadAsync();
            await bad.SendAsync(new Draft { Round = 1, BaseLength = 3, Ids = { 5 }, Distributions = { new DraftDistribution { Ids = { 6, 7 }, Probabilities = { 0.5f, 0.5f } } } });
        },
        StatusCode.InvalidArgument,
        "draft 0 (token 5) has probability 0 in its own distribution");

    [Theory]
    [InlineData(new[] { 2 }, "leaf 0 has depth 2; leaves need a depth under the round's 2 drafts, in order of depth")]
    [InlineData(new[] { 1, 0 }, "leaf 1 has depth 0; leaves need a depth under the round's 2 drafts, in order of depth")]
    public Task Decode_LeafOutsideTheTree_InvalidArgument(int[] depths, string message) => RefusedWhileHealthyGoesOn(
        async bad =>
        {
            await bad.SendAsync(fixture.GreedyOpen([1, 2, 3]));
            await bad.ReadAsync();
            var draft = new Draft { Round = 1, BaseLength = 3, Ids = { 5, 6 } };
            draft.Leaves.AddRange(depths.Select(d => new Leaf { Depth = (uint)d, Id = 7 }));
            await bad.SendAsync(draft);
        },
        StatusCode.InvalidArgument,
        message);

    [Fact]
    public Task Decode_LeafIdOutOfRange_InvalidArgument() => RefusedWhileHealthyGoesOn(
        async bad =>
        {
            await bad.SendAsync(fixture.GreedyOpen([1, 2, 3]));
            await bad.ReadAsync();
            await bad.SendAsync(new Draft { Round = 1, BaseLength = 3, Ids = { 5, 6 }, Leaves = { new Leaf { Depth = 1, Id = 258 } } });
        },
        StatusCode.InvalidArgument,
        "round 1: leaf 0's id 258 is outside the vocabulary of 258");

    [Fact]
    public Task Decode_MoreLeavesThanTheLimit_InvalidArgument() => RefusedWhileHealthyGoesOn(
        async bad =>
        {
            await bad.SendAsync(fixture.GreedyOpen([1, 2, 3]));
            var opened = await bad.ReadAsync();
            var draft = new Draft { Round = 1, BaseLength = 3, Ids = { 5 } };
            draft.Leaves.AddRange(Enumerable.Range(0, (int)opened.Opened.MaxLeaves + 1).Select(i => new Leaf { Depth = 0, Id = 10 + i }));
            await bad.SendAsync(draft);
        },
        StatusCode.InvalidArgument,
        "33 leaves are over the verifier's limit of 32 per round");

    [Fact]
    public Task Decode_SampledLeafOutsideItsDepthsDistribution_InvalidArgument() => RefusedWhileHealthyGoesOn(
        async bad =>
        {
            var open = fixture.GreedyOpen([1, 2, 3]);
            open.Sampling = new Sampling { Temperature = 1f, TopP = 1f };
            await bad.SendAsync(open);
            await bad.ReadAsync();
            await bad.SendAsync(new Draft
            {
                Round = 1,
                BaseLength = 3,
                Ids = { 5 },
                Distributions = { new DraftDistribution { Ids = { 5, 7 }, Probabilities = { 0.5f, 0.5f } } },
                Leaves = { new Leaf { Depth = 0, Id = 8 } },
            });
        },
        StatusCode.InvalidArgument,
        "leaf 0 (token 8) has probability 0 in the distribution of its depth 0");

    /// <summary>
    /// Token trees on the wire: every round's second draft is wrong and a leaf beside it carries the target's token
    /// (with a wrong leaf before it). The verdict takes that leaf (branch_id), and every later round, which reads the
    /// cache the leaf left, still gives the target's own output.
    /// </summary>
    [Fact]
    public async Task Decode_LeafCarryingTheTargetsToken_IsTakenAndTheOutputStaysExact()
    {
        var expected = fixture.LocalGreedy(HealthyPrompt, 12);
        await using var stream = new RawStream(fixture.Client);
        await stream.SendAsync(fixture.GreedyOpen(HealthyPrompt, maxNewTokens: 12));
        var opened = await stream.ReadAsync();
        Assert.Equal(32u, opened.Opened.MaxLeaves);
        var committed = new List<int>();
        var taken = 0;
        for (uint round = 1; ; round++)
        {
            var drafts = expected.Skip(committed.Count).Take(3).ToList();
            var draft = new Draft { Round = round, BaseLength = (uint)(HealthyPrompt.Length + committed.Count) };
            if (drafts.Count > 1)
            {
                var right = drafts[1];
                drafts[1] = (right + 1) % 258;
                draft.Leaves.Add(new Leaf { Depth = 1, Id = (right + 2) % 258 });
                draft.Leaves.Add(new Leaf { Depth = 1, Id = right });
            }

            draft.Ids.AddRange(drafts);
            await stream.SendAsync(draft);
            var verdict = await stream.ReadFinalAsync(round);
            committed.AddRange(drafts.Take((int)verdict.Accepted));
            if (verdict.HasBranchId)
            {
                Assert.Equal(1u, verdict.Accepted);
                committed.Add(verdict.BranchId);
                taken++;
            }

            committed.Add(verdict.NextId);
            if (verdict.Finished)
            {
                break;
            }
        }

        Assert.Equal(expected, committed);
        Assert.True(taken >= 2, $"only {taken} leaves taken");
    }

    [Fact]
    public Task Decode_EmptyMessage_InvalidArgument() => RefusedWhileHealthyGoesOn(
        async bad =>
        {
            await bad.SendAsync(fixture.GreedyOpen([1, 2, 3]));
            await bad.ReadAsync();
            await bad.SendAsync(new EdgeMessage());
        },
        StatusCode.InvalidArgument,
        "an empty EdgeMessage");

    [Fact]
    public async Task Decode_MoreSessionsThanTheLimit_ResourceExhaustedThenRecovers()
    {
        var open = new List<RawStream>();
        try
        {
            for (var i = 0; i < VerifierFixture.MaxSessions; i++)
            {
                var stream = new RawStream(fixture.Client);
                open.Add(stream);
                await stream.SendAsync(fixture.GreedyOpen([1, 2, 3]));
                await stream.ReadAsync();
            }

            await using var extra = new RawStream(fixture.Client);
            await extra.SendAsync(fixture.GreedyOpen([1, 2, 3]));
            var error = await extra.ExpectErrorAsync();

            Assert.Equal(StatusCode.ResourceExhausted, error.StatusCode);
            Assert.Contains($"maximum of {VerifierFixture.MaxSessions} sessions", error.Status.Detail);
        }
        finally
        {
            foreach (var stream in open)
            {
                await stream.DisposeAsync();
            }
        }

        // Closed sessions give their slots back.
        await RunHealthyAsync(await OpenHealthyAsync());
    }

    [Fact]
    public async Task Describe_ReportsModelExitsAndLimits()
    {
        var description = await fixture.Client.DescribeAsync(new DescribeRequest()).ResponseAsync.DefaultTimeout();

        Assert.Equal(258, description.VocabSize);
        Assert.Equal(fixture.TokenizerSha256, description.TokenizerSha256);
        Assert.Equal([1u], description.Exits.Select(e => e.Layer));
        Assert.Equal((uint)VerifierFixture.MaxDraftTokens, description.Limits.MaxDraftTokens);
        Assert.Equal(32u, description.Limits.MaxLeaves);
        Assert.Equal("cpu", description.Device);
        Assert.Equal(64, description.WeightsSha256.Length);
    }

    private async Task RefusedWhileHealthyGoesOn(Func<RawStream, Task> misbehave, StatusCode code, string message)
    {
        var healthy = await OpenHealthyAsync();
        await using (var bad = new RawStream(fixture.Client))
        {
            await misbehave(bad);
            var error = await bad.ExpectErrorAsync();
            Assert.Equal(code, error.StatusCode);
            Assert.Contains(message, error.Status.Detail);
        }

        await RunHealthyAsync(healthy);
    }

    private async Task<(RawStream Stream, IReadOnlyList<int> Expected)> OpenHealthyAsync()
    {
        var expected = fixture.LocalGreedy(HealthyPrompt, 12);
        var stream = new RawStream(fixture.Client);
        await stream.SendAsync(fixture.GreedyOpen(HealthyPrompt, maxNewTokens: 12));
        var opened = await stream.ReadAsync();
        Assert.Equal(VerifierMessage.KindOneofCase.Opened, opened.KindCase);
        return (stream, expected);
    }

    /// <summary>Rounds of 3 drafts taken from the expected output, every other round with a wrong second draft.</summary>
    private static async Task RunHealthyAsync((RawStream Stream, IReadOnlyList<int> Expected) healthy)
    {
        var (stream, expected) = healthy;
        await using (stream)
        {
            var committed = new List<int>();
            for (uint round = 1; ; round++)
            {
                var drafts = expected.Skip(committed.Count).Take(3).ToList();
                if (round % 2 == 1 && drafts.Count > 1)
                {
                    drafts[1] = (drafts[1] + 1) % 258;
                }

                var draft = new Draft { Round = round, BaseLength = (uint)(HealthyPrompt.Length + committed.Count) };
                draft.Ids.AddRange(drafts);
                await stream.SendAsync(draft);
                var verdict = await stream.ReadFinalAsync(round);
                committed.AddRange(drafts.Take((int)verdict.Accepted));
                committed.Add(verdict.NextId);
                if (verdict.Finished)
                {
                    break;
                }
            }

            Assert.Equal(expected, committed);
        }
    }
}
