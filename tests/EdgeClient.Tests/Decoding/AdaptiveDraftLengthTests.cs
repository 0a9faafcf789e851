using SpecEdge.EdgeClient.Decoding;

namespace SpecEdge.EdgeClient.Tests.Decoding;

/// <summary>
/// The draft-length controller in simulated worlds whose truth the test sets: how often drafts of each confidence
/// stand, and what a round and a draft cost. It must learn the calibration and the cost of a draft, and its rounds must
/// beat every fixed γ where the draft's confidence says something.
/// </summary>
public sealed class AdaptiveDraftLengthTests
{
    private const int Max = 8;

    [Fact]
    public void Calibration_LearnsHowOftenEachConfidenceStands_AndStaysMonotone()
    {
        // Truth: drafts the draft model is sure of (0.95) stand 90 % of the time; its unsure ones (0.25) stand 60 % of the
        // time (an under-confident draft, as the trained pair's is). The prior alone would say 0.95 and 0.25.
        var world = new World(rowCost: 60, draftCost: 10, seed: 1, (0.95f, 0.9, 0.5), (0.25f, 0.6, 0.5));
        var controller = new AdaptiveDraftLength(Max);
        world.Run(controller, rounds: 600);

        Assert.InRange(controller.Calibrated(0.95f), 0.84, 0.96);
        Assert.InRange(controller.Calibrated(0.25f), 0.5, 0.7);
        for (var bin = 1; bin < AdaptiveDraftLength.Bins; bin++)
        {
            Assert.True(controller.Calibrated(bin / 10f + 0.05f) >= controller.Calibrated((bin - 1) / 10f + 0.05f), $"bin {bin} below bin {bin - 1}");
        }
    }

    [Fact]
    public void Threshold_IsADraftsMarginalTimeOverTheTimePerToken()
    {
        // Every draft stands; rounds of 2 and 6 drafts in turn, 80 ms plus 10 ms a draft: s = 10 ms, and on average
        // 5 tokens in 120 ms, so λ = 10 / (120 / 5) ≈ 0.42 (the discounting weighs the two kinds of round a little apart).
        var controller = new AdaptiveDraftLength(Max);
        float[] sure = [0.99f, 0.99f, 0.99f, 0.99f, 0.99f, 0.99f];
        for (var round = 0; round < 200; round++)
        {
            var drafted = round % 2 == 0 ? 2 : 6;
            controller.Observe(drafted, sure.AsSpan(0, drafted), drafted, 80 + (10.0 * drafted), 10.0 * drafted);
        }

        Assert.InRange(controller.Threshold, 0.40, 0.44);
    }

    [Fact]
    public void HiddenDrafting_EveryRoundDraftsTheMost()
    {
        // Drafting hidden behind verification (pre-drafting): each draft takes 10 ms of compute, yet the round's wall
        // time does not grow with its drafts. Until the drafts per round vary, the controller must take the compute as
        // the cost and stop after weak drafts; once they have, the fitted slope (zero) shows every draft is free.
        var world = new World(rowCost: 60, draftCost: 0, seed: 2, (0.9f, 0.9, 0.7), (0.1f, 0.1, 0.3)) { ComputeMs = 10 };
        var controller = new AdaptiveDraftLength(Max);
        world.Run(controller, rounds: 200);
        var last = world.Run(controller, rounds: 100);

        Assert.All(last.Drafted, d => Assert.Equal(Max, d));
    }

    [Fact]
    public void InformativeConfidence_BeatsEveryFixedGamma()
    {
        // Drafts are confident (0.9, standing 90 %) or not (0.1, standing 10 %), 70 / 30, independently; a round costs
        // 60 ms and a draft 10 ms. A fixed γ drafts on past weak drafts; the controller should stop after one, and go
        // on while the drafts are confident.
        var world = new World(rowCost: 60, draftCost: 10, seed: 3, (0.9f, 0.9, 0.7), (0.1f, 0.1, 0.3));
        var controller = new AdaptiveDraftLength(Max);
        world.Run(controller, rounds: 300);
        var adaptive = world.Run(controller, rounds: 3000);

        var fixedCosts = Enumerable.Range(1, Max).Select(gamma => (Gamma: gamma, Cost: world.RunFixed(gamma, rounds: 3000).MsPerToken)).ToList();
        var best = fixedCosts.MinBy(f => f.Cost);
        Assert.True(
            adaptive.MsPerToken < best.Cost * 0.97,
            $"adaptive {adaptive.MsPerToken:F2} ms/token against the best fixed γ {best.Gamma} at {best.Cost:F2} (all: {string.Join(", ", fixedCosts.Select(f => $"{f.Gamma}: {f.Cost:F2}"))})");
        // It stops right after a weak draft: a weak draft is a round's last far more often than its place alone would make it.
        Assert.True(adaptive.WeakDraftsLast >= 0.9 * adaptive.WeakDrafts, $"{adaptive.WeakDraftsLast} of {adaptive.WeakDrafts} weak drafts ended their round");
    }

    /// <summary>
    /// Token trees: where a draft falls, a leaf beside it stands half the time (a token more for the round). The
    /// controller learns that rate from the rounds, and since a draft is then worth more than its chance of standing, it
    /// drafts longer rounds than a chain's controller in the same world, and stays ahead of every fixed γ with leaves.
    /// </summary>
    [Fact]
    public void Leaves_TheirRateIsLearned_AndRoundsGrowLonger()
    {
        var trees = new World(rowCost: 60, draftCost: 10, seed: 4, (0.9f, 0.9, 0.5), (0.3f, 0.4, 0.5)) { LeafRate = 0.5 };
        var chains = new World(rowCost: 60, draftCost: 10, seed: 4, (0.9f, 0.9, 0.5), (0.3f, 0.4, 0.5));
        var withLeaves = new AdaptiveDraftLength(Max);
        var withoutLeaves = new AdaptiveDraftLength(Max);
        trees.Run(withLeaves, rounds: 300);
        chains.Run(withoutLeaves, rounds: 300);
        var tree = trees.Run(withLeaves, rounds: 3000);
        var chain = chains.Run(withoutLeaves, rounds: 3000);

        Assert.InRange(withLeaves.LeafRate, 0.42, 0.55);
        Assert.Equal(0, withoutLeaves.LeafRate);
        Assert.True(tree.Drafted.Average() > chain.Drafted.Average() + 0.3, $"drafts per round with leaves {tree.Drafted.Average():F2}, without {chain.Drafted.Average():F2}");
        var best = Enumerable.Range(1, Max).Select(gamma => trees.RunFixed(gamma, rounds: 3000).MsPerToken).Min();
        Assert.True(tree.MsPerToken < best, $"adaptive with leaves {tree.MsPerToken:F2} ms/token against the best fixed γ's {best:F2}");
    }

    /// <summary>Rounds in a world of draft confidences (each with its true chance of standing and its share of drafts) and costs.</summary>
    private sealed class World(double rowCost, double draftCost, int seed, params (float Confidence, double Stands, double Share)[] kinds)
    {
        private readonly Random _random = new(seed);

        /// <summary>Drafting compute per draft, as the runner reports it (by default what a draft adds to the round).</summary>
        public double? ComputeMs { get; init; }

        /// <summary>With leaves: the chance one stands where a draft fell (null: chains).</summary>
        public double? LeafRate { get; init; }

        public Outcome Run(AdaptiveDraftLength controller, int rounds) => Rounds(rounds, confidences => controller.Continue(confidences), controller);

        public Outcome RunFixed(int gamma, int rounds) => Rounds(rounds, confidences => confidences.Length < gamma, null);

        private Outcome Rounds(int rounds, Func<float[], bool> more, AdaptiveDraftLength? controller)
        {
            var outcome = new Outcome();
            for (var round = 0; round < rounds; round++)
            {
                var confidences = new List<float>();
                var stands = new List<double>();
                do
                {
                    var kind = Pick();
                    confidences.Add(kind.Confidence);
                    stands.Add(kind.Stands);
                }
                while (confidences.Count < Max && more([.. confidences]));

                var accepted = 0;
                while (accepted < stands.Count && _random.NextDouble() < stands[accepted])
                {
                    accepted++;
                }

                bool? leaf = LeafRate is { } rate && accepted < stands.Count ? _random.NextDouble() < rate : null;
                var wall = rowCost + (draftCost * confidences.Count);
                controller?.Observe(confidences.Count, confidences.ToArray(), accepted, wall, (ComputeMs ?? draftCost) * confidences.Count, leaf);
                outcome.Add(confidences, accepted + (leaf == true ? 1 : 0), wall, kinds.Min(k => k.Confidence));
            }

            return outcome;
        }

        private (float Confidence, double Stands, double Share) Pick()
        {
            var u = _random.NextDouble();
            foreach (var kind in kinds)
            {
                if ((u -= kind.Share) < 0)
                {
                    return kind;
                }
            }

            return kinds[^1];
        }
    }

    private sealed class Outcome
    {
        private double _ms;
        private int _tokens;

        public List<int> Drafted { get; } = [];

        public int WeakDrafts { get; private set; }

        public int WeakDraftsLast { get; private set; }

        public double MsPerToken => _ms / _tokens;

        public void Add(List<float> confidences, int accepted, double wall, float weak)
        {
            _ms += wall;
            _tokens += accepted + 1;
            Drafted.Add(confidences.Count);
            for (var i = 0; i < confidences.Count; i++)
            {
                if (confidences[i] == weak)
                {
                    WeakDrafts++;
                    WeakDraftsLast += i == confidences.Count - 1 ? 1 : 0;
                }
            }
        }
    }
}
