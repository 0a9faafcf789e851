using SpecEdge.EdgeClient.Client;

namespace SpecEdge.EdgeClient.Tests.Client;

/// <summary>Auto mode's decisions on rounds whose times are set by hand.</summary>
public sealed class AutoModePolicyTests
{
    /// <summary>A first round (prefill) and then <paramref name="count"/> drafting rounds of 3 tokens in <paramref name="wallMs"/>, verified in 50 ms each.</summary>
    private static List<RoundRecord> Drafting(int count, double wallMs) =>
        [.. Enumerable.Range(0, count + 1).Select(i => Round(i + 1, drafted: 4, committed: 3, wallMs: i == 0 ? 1000 : wallMs))];

    private static RoundRecord Round(int number, int drafted, int committed, double wallMs) => new()
    {
        Round = number,
        Drafted = drafted,
        Accepted = Math.Max(0, committed - 1),
        Committed = committed,
        DraftMs = 0,
        NetworkAndQueueMs = 0,
        VerifyMs = 50,
        QueueMs = 0,
        StageMs = [],
        EarlyVerdicts = [],
        WallMs = wallMs,
    };

    [Theory]
    [InlineData(2, 400, false)] // too few rounds to judge
    [InlineData(3, 330, true)] // 110 ms a token: over twice the verifier's 50
    [InlineData(3, 270, false)] // 90 ms a token: not twice
    [InlineData(6, 270, true)] // 90 ms a token after six rounds: over 1.5 times
    [InlineData(6, 210, false)] // 70 ms a token: under 1.5 times
    [InlineData(12, 210, true)] // 70 ms a token after twelve rounds: over 1.2 times
    [InlineData(12, 150, false)] // 50 ms a token: as fast as the cloud
    public void ShouldLeaveDrafting_EvidenceGrowsWithRounds(int rounds, double wallMs, bool leave)
    {
        var policy = new AutoModePolicy();

        Assert.Equal(leave, policy.ShouldLeaveDrafting(Drafting(rounds, wallMs), segmentStart: 0, remainingTokens: 48));
    }

    [Theory]
    [InlineData(3, 330, 0, 20, true)] // 60 ms a token saved on each of 20 tokens: far more than one 50 ms switch
    [InlineData(12, 210, 100, 3, false)] // 20 ms a token over 3 tokens (60 ms) against a 50 ms verify plus a 100 ms round trip
    [InlineData(12, 210, 100, 10, true)] // over 10 tokens (200 ms) it pays
    public void ShouldLeaveDrafting_OnlyWhenTheRestPaysForTheSwitch(int rounds, double wallMs, double networkMs, int remaining, bool leave)
    {
        var policy = new AutoModePolicy();
        var slow = Drafting(rounds, wallMs).Select(r => r with { NetworkAndQueueMs = networkMs }).ToList();

        Assert.Equal(leave, policy.ShouldLeaveDrafting(slow, segmentStart: 0, remainingTokens: remaining));
    }

    [Fact]
    public void ShouldLeaveDrafting_OneStall_IsNotTheLink()
    {
        var policy = new AutoModePolicy();

        // Three rounds of 3 tokens in 52 ms over a 2 ms loopback, the last of which waited 1000 ms more on the network:
        // 128 ms a token as measured, over twice the 50 ms verify step, but 17 ms a token without the stall.
        var rounds = Drafting(3, 52).Select(r => r with { NetworkAndQueueMs = 2 }).ToList();
        rounds[3] = rounds[3] with { WallMs = 1052, NetworkAndQueueMs = 1002 };
        Assert.False(policy.ShouldLeaveDrafting(rounds, segmentStart: 0, remainingTokens: 48));

        // The same rounds when the link itself is slow (every round waits the 1000 ms): it leaves.
        var slowLink = rounds.Select(r => r with { WallMs = 1052, NetworkAndQueueMs = 1002 }).ToList();
        Assert.True(policy.ShouldLeaveDrafting(slowLink, segmentStart: 0, remainingTokens: 48));
    }

    [Fact]
    public void Learn_CloudSessionsFirstRound_AndStalls_AreLeftOut()
    {
        var policy = new AutoModePolicy();

        // Drafting (slow: 100 ms a token), then the cloud session it switched to: its first round carries a 1000 ms round
        // trip, one later round a 400 ms stall; the rest take 50 ms a token.
        var cloud = Enumerable.Range(0, 20).Select(i => Round(8 + i, 0, 1, 50) with { NetworkAndQueueMs = 1 }).ToList();
        cloud[0] = cloud[0] with { WallMs = 1050, NetworkAndQueueMs = 1000 };
        cloud[10] = cloud[10] with { WallMs = 450, NetworkAndQueueMs = 401 };
        policy.Learn([.. Drafting(6, 300), .. cloud]);

        Assert.Equal(50, policy.CloudMsPerToken!.Value, precision: 6);
    }

    [Fact]
    public void Learn_OneHardPrompt_DoesNotOutweighTheGenerationsBefore()
    {
        var policy = new AutoModePolicy();
        policy.Learn([Round(1, 0, 1, 500), .. Enumerable.Range(2, 20).Select(i => Round(i, 0, 1, 60))]); // the cloud: 60 ms a token
        policy.Learn(Drafting(16, 135)); // drafting at 45 ms a token
        policy.Learn(Drafting(16, 135));
        policy.Learn(Drafting(5, 300)); // then a hard prompt: 100 ms a token over its few rounds before it left

        Assert.False(policy.StartInCloud());
    }

    /// <summary>A cloud generation: its first token waited <paramref name="roundTripMs"/> on the link, the next ones 50 ms each.</summary>
    private static List<RoundRecord> Cloud(double roundTripMs) =>
        [Round(1, 0, 1, 500) with { NetworkAndQueueMs = roundTripMs }, .. Enumerable.Range(2, 20).Select(i => Round(i, 0, 1, 50))];

    [Theory]
    [InlineData(300, AutoModePolicy.RareProbeEvery)] // drafting at 100 ms a token, twice the cloud's 50: probed rarely
    [InlineData(165, AutoModePolicy.ProbeEvery)] // at 55 ms a token, a close call: probed more often
    public void StartInCloud_AfterDraftingMeasuredSlower_ProbesTheCloserCallsMoreOften(double wallMs, int probeEvery)
    {
        var policy = new AutoModePolicy();
        Assert.False(policy.StartInCloud());

        // Drafting measured over a 100 ms round trip (enough rounds to be settled), the cloud at 50 ms a token over the same link.
        policy.Learn(Drafting(30, wallMs).Select(r => r with { NetworkAndQueueMs = 100 }).ToList());
        policy.Learn(Cloud(roundTripMs: 100));
        Assert.Equal(50, policy.CloudMsPerToken);

        var starts = Enumerable.Range(0, AutoModePolicy.RareProbeEvery + 4).Select(_ => policy.StartInCloud()).ToList();

        // Generation n is starts[n - 2]: every one in the cloud except every probeEvery-th, which drafts anyway.
        var drafting = Enumerable.Range(0, starts.Count).Where(i => !starts[i]).Select(i => i + 2).ToList();
        Assert.Equal(Enumerable.Range(2, starts.Count).Where(n => n % probeEvery == 0), drafting);
    }

    [Fact]
    public void StartInCloud_OneGenerationNearATie_IsNotEnough()
    {
        var policy = new AutoModePolicy();
        policy.StartInCloud();

        // One generation's 12 rounds drafting at 55 ms a token against the cloud's 50: within 1.2 times, it drafts again.
        policy.Learn(Drafting(12, 165));
        policy.Learn(Cloud(roundTripMs: 0));
        Assert.False(policy.StartInCloud());

        // More rounds at the same pace settle it: the cloud.
        policy.Learn(Drafting(24, 165));
        Assert.True(policy.StartInCloud());

        // Far behind, one generation is enough.
        var behind = new AutoModePolicy();
        behind.StartInCloud();
        behind.Learn(Drafting(12, 300));
        behind.Learn(Cloud(roundTripMs: 0));
        Assert.True(behind.StartInCloud());
    }

    [Fact]
    public void Learn_ADraftingSessionsLastRoundWithoutDrafts_IsNotACloudSession()
    {
        var policy = new AutoModePolicy();
        policy.StartInCloud();
        policy.Learn(Cloud(roundTripMs: 200)); // the cloud at 50 ms a token over a 200 ms round trip

        // Drafting over the same link at 100 ms a token; its last round (one token left) drafts nothing and happened
        // to wait 5 ms. Read as a cloud session, that round would say the link recovered (35 ms a token at 5 ms).
        List<RoundRecord> drafting = [.. Drafting(30, 300).Select(r => r with { NetworkAndQueueMs = 200 }), Round(32, 0, 1, 55) with { NetworkAndQueueMs = 5 }];
        policy.Learn(drafting);

        Assert.True(policy.StartInCloud());
    }

    [Fact]
    public void StartInCloud_OneStalledFirstToken_DoesNotHideARecoveredLink()
    {
        var policy = new AutoModePolicy();
        policy.StartInCloud();
        policy.Learn(Drafting(30, 300).Select(r => r with { NetworkAndQueueMs = 200 }).ToList());
        policy.Learn(Cloud(roundTripMs: 200));
        Assert.True(policy.StartInCloud());

        // The link recovers (5 ms), then one cloud generation's first token stalls (900 ms): the lower of the two counts.
        policy.Learn(Cloud(roundTripMs: 5));
        policy.Learn(Cloud(roundTripMs: 900));

        Assert.False(policy.StartInCloud());
    }

    [Theory]
    [InlineData(200, true)] // the same slow link: drafting still 100 ms a token
    [InlineData(5, false)] // the link recovered: its rounds would take 105 ms, 35 ms a token against the cloud's 50
    public void StartInCloud_DraftsAgainWhenTheLinkRecovers(double laterRoundTripMs, bool inCloud)
    {
        var policy = new AutoModePolicy();
        policy.StartInCloud();

        // Drafting over a 200 ms round trip: 300 ms rounds of 3 tokens, 100 ms a token; the cloud 50 ms a token.
        policy.Learn(Drafting(6, 300).Select(r => r with { NetworkAndQueueMs = 200 }).ToList());
        policy.Learn(Cloud(roundTripMs: 200));
        Assert.True(policy.StartInCloud());

        // A later cloud generation measures the link again.
        policy.Learn(Cloud(laterRoundTripMs));

        Assert.Equal(inCloud, policy.StartInCloud());
    }

    /// <summary>
    /// Rounds of 4 drafts verified in 60 ms, each with an early verdict 15 ms in (a 45 ms lead): at 1.5 ms a token two
    /// rounds of drafts (12 ms) fit in the lead, three candidates; at 7 ms a token (56 ms for two) they do not, one.
    /// </summary>
    [Theory]
    [InlineData(1.5, 3)]
    [InlineData(7.0, 1)]
    public void Candidates_FromTheDraftingTimeAndTheEarlyVerdictLead(double draftMsPerToken, int candidates)
    {
        var policy = new AutoModePolicy();
        Assert.Equal(1, policy.Candidates());

        policy.Learn([.. Drafting(8, 150).Select(r => r with
        {
            VerifyMs = 60,
            DraftComputeMs = 4 * draftMsPerToken,
            EarlyVerdicts = [new EarlyVerdictRecord(2, 0.9, 2, 7, Matched: true, ElapsedMs: 15)],
        })]);

        Assert.Equal(candidates, policy.Candidates());
    }

    [Fact]
    public void StartInCloud_DraftingFaster_StaysDrafting()
    {
        var policy = new AutoModePolicy();
        policy.Learn(Drafting(6, 90)); // 30 ms a token against the verifier's 50

        Assert.All(Enumerable.Range(0, 10), _ => Assert.False(policy.StartInCloud()));
    }
}
