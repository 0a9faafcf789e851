using System.CommandLine;
using System.Globalization;
using SpecEdge.Bench.Matrix;
using SpecEdge.Shared.Runtime;

namespace SpecEdge.Bench;

/// <summary>
/// <c>candidates</c>: how often the final verdict is among the first exit's k most likely round outcomes, offline on the
/// default pair (greedy, the draft drafting γ tokens, the target scoring them stage by stage). An outcome is (drafts
/// accepted, next token); its likelihood under the exit is the product of the exit's probabilities of the accepted
/// drafts and of the next token. The first candidate is the exit's own verdict (accept while its argmax is the draft,
/// then its argmax): coverage at k = 1 is the hit rate pre-emptive drafting has; above 1 it is what pre-drafting for
/// that verdict and the k − 1 next most likely outcomes could reach.
/// </summary>
internal static class CandidatesCommand
{
    public static Command Create()
    {
        var tokens = new Option<int>("--tokens") { Description = "New tokens per prompt.", DefaultValueFactory = _ => 96 };
        var gammas = new Option<string>("--gamma") { Description = "Draft lengths.", DefaultValueFactory = _ => "4,8" };
        var command = new Command("candidates", "How often the final verdict is among the first exit's top-k round outcomes (offline, default pair).") { tokens, gammas };
        command.SetAction(parse =>
        {
            using var models = OfflineRounds.LoadDefaultPair();
            var (target, draft, description) = (models.Target, models.Draft, models.Description);
            Console.WriteLine($"models: {description}; {OfflineRounds.Prompts.Count} prompts × {parse.GetValue(tokens)} tokens, greedy; exits after layers {string.Join(", ", target.Manifest.Exits)} (the first is used)");
            Console.WriteLine();
            Console.WriteLine("| γ | rounds | tokens per round | final = the exit's verdict | top 2 | top 3 | top 4 | top 6 | top 8 |");
            Console.WriteLine("|---|---|---|---|---|---|---|---|---|");
            foreach (var gamma in MatrixAxes.ParsePositiveInts(parse.GetValue(gammas)!, "--gamma"))
            {
                var ks = new[] { 1, 2, 3, 4, 6, 8 };
                var covered = new int[ks.Length];
                int rounds = 0, committed = 0;
                foreach (var prompt in OfflineRounds.Prompts)
                {
                    var (r, c) = Run(target, draft, prompt, gamma, parse.GetValue(tokens), ks, covered);
                    rounds += r;
                    committed += c;
                }

                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {gamma} | {rounds} | {committed / (double)rounds:F2} | {string.Join(" | ", covered.Select(c => $"{c / (double)rounds:P1}"))} |"));
            }

            return 0;
        });
        return command;
    }

    private static (int Rounds, int Committed) Run(LanguageModel target, LanguageModel draft, string prompt, int gamma, int count, int[] ks, int[] covered)
    {
        var rounds = 0;
        var committed = OfflineRounds.Replay(target, draft, prompt, gamma, count, round =>
        {
            var drafts = round.Drafts;
            var exit = round.Stages[0];

            // The exit's outcomes, most likely first: accept a drafts (product of their probabilities), then a token n
            // other than draft a+1 (or any token after all γ).
            var outcomes = new List<(double P, int Accepted, int Next)>();
            var prefix = 1.0;
            for (var a = 0; a <= gamma; a++)
            {
                var row = exit[a];
                var order = Enumerable.Range(0, row.Length).Where(n => a == gamma || n != drafts[a].Value).OrderByDescending(n => row[n]).Take(ks[^1]);
                outcomes.AddRange(order.Select(n => (prefix * row[n], a, n)));
                if (a < gamma)
                {
                    prefix *= row[drafts[a].Value];
                }
            }

            // The exit's own verdict (what an early verdict says today: accept while the exit's argmax is the draft, then
            // its argmax) first, then the rest by likelihood.
            var (exitAccepted, exitNext) = OfflineRounds.Verdict(exit, drafts);
            var ranked = outcomes.OrderByDescending(o => o.Accepted == exitAccepted && o.Next == exitNext).ThenByDescending(o => o.P).ToList();
            var rank = ranked.FindIndex(o => o.Accepted == round.Accepted && o.Next == round.Next);
            for (var k = 0; k < ks.Length; k++)
            {
                covered[k] += rank >= 0 && rank < ks[k] ? 1 : 0;
            }

            rounds++;
        });
        return (rounds, committed);
    }
}
