using System.CommandLine;
using System.Globalization;
using SpecEdge.Bench.Matrix;

namespace SpecEdge.Bench;

/// <summary>
/// <c>trees</c>: what a small token tree gains in tokens per round over the chain, offline on the default pair (greedy).
/// The tree is the draft's chain of γ tokens plus, at each depth where the draft is unsure (its probability of its own
/// draft under <c>--below</c>), the draft's next most likely tokens as leaves beside the draft (same parent). A leaf
/// costs no drafting (its logits are the draft's row already computed) and one more scored token for the verifier.
/// When the final head rejects the draft at depth a and its token there is one of the leaves, the round commits that
/// leaf and the target's token after it: one token more than the chain's correction.
/// </summary>
internal static class TreesCommand
{
    public static Command Create()
    {
        var tokens = new Option<int>("--tokens") { Description = "New tokens per prompt.", DefaultValueFactory = _ => 96 };
        var gammas = new Option<string>("--gamma") { Description = "Draft lengths.", DefaultValueFactory = _ => "4,8" };
        var leafWidths = new Option<string>("--leaves") { Description = "Leaves per unsure depth.", DefaultValueFactory = _ => "1,2,3,4" };
        var below = new Option<string>("--below") { Description = "Confidence thresholds: a depth gets leaves when the draft's probability of its draft is under it (1 = every depth).", DefaultValueFactory = _ => "0.5,0.8,1" };
        var command = new Command("trees", "Tokens per round of a token tree (the chain plus leaves where the draft is unsure) against the chain (offline, default pair).") { tokens, gammas, leafWidths, below };
        command.SetAction(parse =>
        {
            using var models = OfflineRounds.LoadDefaultPair();
            var (target, draft, description) = (models.Target, models.Draft, models.Description);
            var thresholds = MatrixAxes.ParseDoubles(parse.GetValue(below)!, "--below");
            var widths = MatrixAxes.ParsePositiveInts(parse.GetValue(leafWidths)!, "--leaves");
            Console.WriteLine($"models: {description}; {OfflineRounds.Prompts.Count} prompts × {parse.GetValue(tokens)} tokens, greedy");
            Console.WriteLine();
            Console.WriteLine("| γ | rounds | chain: tokens per round | leaves per unsure depth | unsure below | scored tokens per round | tree: tokens per round | gain |");
            Console.WriteLine("|---|---|---|---|---|---|---|---|");
            var tried = new int[10];
            var stood = new int[10];
            foreach (var gamma in MatrixAxes.ParsePositiveInts(parse.GetValue(gammas)!, "--gamma"))
            {
                var rounds = new List<OfflineRound>();
                foreach (var prompt in OfflineRounds.Prompts)
                {
                    OfflineRounds.Replay(target, draft, prompt, gamma, parse.GetValue(tokens), rounds.Add);
                }

                var chain = rounds.Average(r => r.Accepted + 1.0);
                Calibrate(rounds, tried, stood);
                foreach (var width in widths)
                {
                    foreach (var threshold in thresholds)
                    {
                        double scored = 0, committed = 0;
                        foreach (var round in rounds)
                        {
                            var leaves = Leaves(round, width, threshold);
                            scored += gamma + 1 + leaves.Sum(l => l.Length);
                            committed += round.Accepted + 1 + (round.Accepted < gamma && leaves[round.Accepted].Contains(round.Next) ? 1 : 0);
                        }

                        var tree = committed / rounds.Count;
                        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {gamma} | {rounds.Count} | {chain:F2} | {width} | {threshold:F2} | {scored / rounds.Count:F2} | {tree:F2} | {tree / chain - 1:+0.0%;-0.0%} |"));
                    }
                }
            }

            // How often a draft stands against the draft's own confidence in it (every draft the final head reached).
            Console.WriteLine();
            Console.WriteLine("The draft's confidence against how often its drafts stood (every γ above, drafts the final head reached):");
            Console.WriteLine();
            Console.WriteLine("| confidence | drafts | stood |");
            Console.WriteLine("|---|---|---|");
            for (var b = 0; b < tried.Length; b++)
            {
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {b / 10.0:F1}–{(b + 1) / 10.0:F1} | {tried[b]} | {(tried[b] == 0 ? "-" : (stood[b] / (double)tried[b]).ToString("P0", CultureInfo.InvariantCulture))} |"));
            }

            return 0;
        });
        return command;
    }

    /// <summary>Counts, per confidence tenth, the drafts the final head reached and those that stood.</summary>
    private static void Calibrate(List<OfflineRound> rounds, int[] tried, int[] stood)
    {
        foreach (var round in rounds)
        {
            for (var i = 0; i <= round.Accepted && i < round.Drafts.Length; i++)
            {
                var bin = Math.Min(tried.Length - 1, (int)(round.DraftRows[i][round.Drafts[i].Value] * tried.Length));
                tried[bin]++;
                stood[bin] += i < round.Accepted ? 1 : 0;
            }
        }
    }

    /// <summary>The leaves at each depth: the draft's next <paramref name="width"/> most likely tokens after its draft, where it was unsure.</summary>
    private static int[][] Leaves(OfflineRound round, int width, double below)
    {
        var leaves = new int[round.Drafts.Length][];
        for (var depth = 0; depth < leaves.Length; depth++)
        {
            var row = round.DraftRows[depth];
            var own = round.Drafts[depth].Value;
            leaves[depth] = row[own] < below
                ? [.. Enumerable.Range(0, row.Length).Where(n => n != own).OrderByDescending(n => row[n]).Take(width)]
                : [];
        }

        return leaves;
    }
}
