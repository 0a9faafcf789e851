namespace SpecEdge.EdgeClient.Client;

/// <summary>
/// What <see cref="GenerationMode.Auto"/> decides: conditional drafting with adaptive γ (the fastest drafting mode) or
/// the verifier generating alone (cloud streaming), from measured times per token.
/// <list type="bullet">
/// <item>A generation starts in the cloud when the client's earlier generations measured drafting slower than the cloud
/// (the cloud's time per token as measured, else as the verifier's step time, which a cloud step of one token does not
/// exceed): <see cref="StartMargin"/> times slower once <see cref="SettledRounds"/> drafting rounds are pooled,
/// <see cref="CloseCall"/> times before (a short generation's rounds, the first one's, say more about its prompt than
/// about the link). It drafts again when the link has since recovered: every session measures the round trip (a cloud
/// session's first token waits one), and drafting's time per token is re-estimated with its rounds paying the latest
/// round trip (the lower of the last two generations') instead of the one they paid. And it drafts anyway now and then, since how well the draft does on the
/// prompts is seen only by drafting: every <see cref="ProbeEvery"/>th generation while drafting measured within
/// <see cref="CloseCall"/> times the cloud (a tie that prompts may tip), every <see cref="RareProbeEvery"/>th when
/// further behind (a probe then costs more and wins less often).</item>
/// <item>A drafting generation gives way to the cloud mid-way on evidence that grows with the rounds seen: after
/// <see cref="RoundsBeforeJudging"/> rounds when drafting costs twice the cloud's time per token, after twice as many
/// at 1.5 times, after four times as many at <see cref="LeaveMargin"/> times. Early rounds are dearer than later ones
/// (γ is still being learned), and near a tie it gains nothing. And only when it pays: what the cloud would save over
/// the tokens still to come must exceed what the switch costs, a round trip and a prefill step for the new session.</item>
/// <item>What it learns is every generation's rounds pooled, token-weighted, older generations fading by
/// <see cref="Memory"/> each: prompts differ in how well the draft does, so one hard prompt must not outweigh the
/// generations before it. A session's first round (a prefill, and after a switch a round trip more) is left out.</item>
/// <item>How many candidates its drafting pre-drafts per early verdict (<see cref="Candidates"/>): three when two
/// rounds of drafts fit between the first early verdict and the final one (as measured: the verifier's step time less
/// the first early verdict's, against the mean γ times the drafting time per token), else one. A second candidate that
/// is drafted only after the final verdict helps no more than drafting afresh.</item>
/// <item>A stall is not the link: a round whose network-and-queue time is more than <see cref="StallFactor"/> times
/// the segment's median and <see cref="StallSlackMs"/> over it counts only the median (a 550 ms stall on loopback,
/// seen once in a test run, otherwise sent a fast generation to the cloud). Either mode would have waited it out. A
/// link that really turns slow moves the median within a few rounds. Network time, not wall time, is what is judged:
/// in conditional mode a round's wall time is bimodal (a used pre-drafted round arrives a verify step after the one
/// before, a dropped one a round trip), while every round's network time is one round trip.</item>
/// </list>
/// Every mode is exact, so switching never changes the output. One per client.
/// </summary>
internal sealed class AutoModePolicy
{
    /// <summary>How often a generation that would start in the cloud drafts anyway, when drafting measured within <see cref="CloseCall"/> times the cloud.</summary>
    public const int ProbeEvery = 8;

    /// <summary>How often it does when drafting measured further behind (a link that recovers is noticed sooner, by its round trip).</summary>
    public const int RareProbeEvery = 32;

    /// <summary>Drafting within this many times the cloud's time per token is a close call: probed every <see cref="ProbeEvery"/>th generation.</summary>
    public const double CloseCall = 1.2;

    /// <summary>Rounds after the first (which also carries the prefill) before a drafting generation is judged.</summary>
    public const int RoundsBeforeJudging = 3;

    /// <summary>How much slower than the cloud drafting must be for a generation to leave it mid-way.</summary>
    public const double LeaveMargin = 1.2;

    /// <summary>How much slower than the cloud drafting must have been for a generation to start in the cloud.</summary>
    public const double StartMargin = 1.05;

    /// <summary>Pooled drafting rounds after which <see cref="StartMargin"/> decides where a generation starts (before: <see cref="CloseCall"/>).</summary>
    public const double SettledRounds = 24;

    /// <summary>The weight a generation's evidence keeps at each later generation.</summary>
    public const double Memory = 0.8;

    /// <summary>How many times its segment's median network time a round's must be to count as a stall.</summary>
    public const double StallFactor = 3;

    /// <summary>How far over its segment's median network time a round's must also be to count as a stall.</summary>
    public const double StallSlackMs = 50;

    private readonly Lock _lock = new();
    private double _draftWall;
    private double _draftTokens;
    private double _draftVerify;
    private double _draftRounds;
    private double _draftNetwork;
    private double? _linkMs;
    private double? _previousLinkMs;
    private double _cloudWall;
    private double _cloudTokens;
    private double _draftedTokens;
    private double _draftComputeMs;
    private double _draftComputeTokens;
    private double _leadMs;
    private double _leadRounds;
    private int _generations;

    private double? DraftingMsPerToken => _draftTokens >= 3 ? _draftWall / _draftTokens : null;

    private double? VerifyMsPerStep => _draftRounds > 0 ? _draftVerify / _draftRounds : null;

    private double? MeasuredCloudMsPerToken => _cloudTokens >= 3 ? _cloudWall / _cloudTokens : null;

    /// <summary>The cloud's time per token: measured, else the verifier's step time seen from drafting rounds; null when neither is known.</summary>
    public double? CloudMsPerToken
    {
        get
        {
            lock (_lock)
            {
                return MeasuredCloudMsPerToken ?? VerifyMsPerStep;
            }
        }
    }

    /// <summary>Candidates to pre-draft per early verdict in a drafting session: 3 when two rounds of drafts fit in the measured early-verdict lead, else 1 (also before anything is measured).</summary>
    public int Candidates()
    {
        lock (_lock)
        {
            if (_draftComputeTokens < 8 || _leadRounds < 3 || _draftRounds <= 0)
            {
                return 1;
            }

            // One candidate's drafting: the mean γ at the measured drafting time per token.
            var candidateMs = _draftComputeMs / _draftComputeTokens * (_draftedTokens / _draftRounds);
            return _leadMs / _leadRounds >= 2 * candidateMs ? 3 : 1;
        }
    }

    /// <summary>Whether a new generation starts in the cloud.</summary>
    public bool StartInCloud()
    {
        lock (_lock)
        {
            _generations++;
            var margin = _draftRounds >= SettledRounds ? StartMargin : CloseCall;
            if ((MeasuredCloudMsPerToken ?? VerifyMsPerStep) is not { } cloud || DraftingMsPerToken is not { } drafting || cloud * margin >= drafting)
            {
                return false;
            }

            // Drafting as measured, its rounds paying today's round trip instead of the one they paid. The lower of the
            // last two generations' round trips: a cloud session's figure is one token's wait, and one stalled token must
            // not hide a link that recovered until the next probe.
            var latest = _previousLinkMs is { } previous && _linkMs is { } last ? Math.Min(previous, last) : _linkMs;
            var relinked = latest is { } link && _draftRounds > 0
                ? drafting + ((link - (_draftNetwork / _draftRounds)) * _draftRounds / _draftTokens)
                : drafting;
            return cloud * margin < relinked && _generations % (relinked < cloud * CloseCall ? ProbeEvery : RareProbeEvery) != 0;
        }
    }

    /// <summary>
    /// Whether drafting should give way to the cloud, judged on this segment's rounds after its first, with
    /// <paramref name="remainingTokens"/> still to generate.
    /// </summary>
    public bool ShouldLeaveDrafting(IReadOnlyList<RoundRecord> rounds, int segmentStart, int remainingTokens)
    {
        var judged = rounds.Count - segmentStart - 1;
        if (judged < RoundsBeforeJudging)
        {
            return false;
        }

        var medianNetwork = MedianNetworkMs(rounds, segmentStart + 1, rounds.Count);
        double wall = 0, committed = 0, verify = 0, link = 0;
        for (var i = segmentStart + 1; i < rounds.Count; i++)
        {
            var stall = StallMs(rounds[i], medianNetwork);
            wall += rounds[i].WallMs - stall;
            committed += rounds[i].Committed;
            verify += rounds[i].VerifyMs;
            link += rounds[i].NetworkAndQueueMs - stall;
        }

        if (committed == 0)
        {
            return false;
        }

        var cloud = CloudMsPerToken ?? verify / judged;
        var drafting = wall / committed;
        var margin = judged >= 4 * RoundsBeforeJudging ? LeaveMargin : judged >= 2 * RoundsBeforeJudging ? 1.5 : 2.0;
        // A cloud session's first token costs a round trip and a prefill step more than the next ones.
        var switchCost = (link + verify) / judged;
        return drafting > cloud * margin && (drafting - cloud) * remainingTokens > switchCost;
    }

    /// <summary>Learns from a finished generation's rounds (each after its session's first): drafting and cloud time per token, and the verifier's step time.</summary>
    public void Learn(IReadOnlyList<RoundRecord> rounds)
    {
        double draftWall = 0, draftTokens = 0, draftVerify = 0, draftRounds = 0, cloudWall = 0, cloudTokens = 0;
        double drafted = 0, computeMs = 0, computeTokens = 0, leadMs = 0, leadRounds = 0, draftNetwork = 0;
        double medianNetwork = 0;
        double? link = null;
        for (var i = 0; i < rounds.Count; i++)
        {
            // Auto switches only from drafting to the cloud, so a round without drafts after one with them opens the cloud session.
            if (i == 0 || (rounds[i].Drafted == 0 && rounds[i - 1].Drafted > 0))
            {
                var end = i + 1;
                while (end < rounds.Count && (rounds[end].Drafted > 0) == (rounds[i].Drafted > 0))
                {
                    end++;
                }

                medianNetwork = MedianNetworkMs(rounds, i + 1, end);

                // The session's round trip: a drafting session's median round; a cloud session's first token waited one.
                // A lone round is neither (a drafting session's last round drafts nothing when one token is left).
                if (end > i + 1)
                {
                    link = rounds[i].Drafted > 0 ? medianNetwork : rounds[i].NetworkAndQueueMs;
                }

                continue;
            }

            var stall = StallMs(rounds[i], medianNetwork);
            if (rounds[i].Drafted > 0)
            {
                draftWall += rounds[i].WallMs - stall;
                draftTokens += rounds[i].Committed;
                draftVerify += rounds[i].VerifyMs;
                draftRounds++;
                draftNetwork += rounds[i].NetworkAndQueueMs - stall;
                drafted += rounds[i].Drafted;
                if (rounds[i].DraftComputeMs > 0)
                {
                    computeMs += rounds[i].DraftComputeMs;
                    computeTokens += rounds[i].Drafted;
                }

                if (rounds[i].EarlyVerdicts.Count > 0)
                {
                    leadMs += Math.Max(0, rounds[i].VerifyMs - rounds[i].EarlyVerdicts[0].ElapsedMs);
                    leadRounds++;
                }
            }
            else
            {
                cloudWall += rounds[i].WallMs - stall;
                cloudTokens += rounds[i].Committed;
            }
        }

        lock (_lock)
        {
            if (draftTokens >= 3)
            {
                (_draftWall, _draftTokens, _draftVerify, _draftRounds) = ((Memory * _draftWall) + draftWall, (Memory * _draftTokens) + draftTokens, (Memory * _draftVerify) + draftVerify, (Memory * _draftRounds) + draftRounds);
                _draftNetwork = (Memory * _draftNetwork) + draftNetwork;
                _draftedTokens = (Memory * _draftedTokens) + drafted;
                (_draftComputeMs, _draftComputeTokens) = ((Memory * _draftComputeMs) + computeMs, (Memory * _draftComputeTokens) + computeTokens);
                (_leadMs, _leadRounds) = ((Memory * _leadMs) + leadMs, (Memory * _leadRounds) + leadRounds);
            }

            if (cloudTokens >= 3)
            {
                (_cloudWall, _cloudTokens) = ((Memory * _cloudWall) + cloudWall, (Memory * _cloudTokens) + cloudTokens);
            }

            if (link is { } measured)
            {
                (_previousLinkMs, _linkMs) = (_linkMs, measured);
            }
        }
    }

    /// <summary>The median network-and-queue time of rounds [<paramref name="from"/>, <paramref name="to"/>); 0 when there are none.</summary>
    private static double MedianNetworkMs(IReadOnlyList<RoundRecord> rounds, int from, int to)
    {
        if (to <= from)
        {
            return 0;
        }

        var network = new double[to - from];
        for (var i = from; i < to; i++)
        {
            network[i - from] = rounds[i].NetworkAndQueueMs;
        }

        Array.Sort(network);
        var mid = network.Length / 2;
        return network.Length % 2 == 1 ? network[mid] : (network[mid - 1] + network[mid]) / 2;
    }

    /// <summary>The part of a round's time that was a stall (see the class remarks): its network time over the median, when far over.</summary>
    private static double StallMs(RoundRecord round, double medianNetworkMs) =>
        round.NetworkAndQueueMs > StallFactor * medianNetworkMs && round.NetworkAndQueueMs > medianNetworkMs + StallSlackMs
            ? round.NetworkAndQueueMs - medianNetworkMs
            : 0;
}
