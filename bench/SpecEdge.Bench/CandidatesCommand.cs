using System.CommandLine;
using System.Globalization;
using SpecEdge.Demo;
using SpecEdge.Shared.Decoding;
using SpecEdge.Shared.Models.Conversion;
using SpecEdge.Shared.Runtime;
using SpecEdge.Shared.Tokenization;

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
    private static readonly string[] Prompts =
    [
        "The edge drafts and the cloud verifies",
        "Once upon a time",
        "Speculative decoding works because",
        "A robot arm must react quickly when",
        "And the LORD spake unto Moses, saying,",
        "In the beginning God created",
    ];

    public static Command Create()
    {
        var tokens = new Option<int>("--tokens") { Description = "New tokens per prompt.", DefaultValueFactory = _ => 96 };
        var gammas = new Option<string>("--gamma") { Description = "Draft lengths.", DefaultValueFactory = _ => "4,8" };
        var command = new Command("candidates", "How often the final verdict is among the first exit's top-k round outcomes (offline, default pair).") { tokens, gammas };
        command.SetAction(parse =>
        {
            var pair = DefaultModels.Resolve();
            using var target = LanguageModel.Load(ModelResolver.Resolve(pair.Target, new ConversionOptions { Exits = pair.Exits }), new RuntimeOptions { IntraOpThreads = 2 });
            using var draft = LanguageModel.Load(ModelResolver.Resolve(pair.Draft), new RuntimeOptions { IntraOpThreads = 2 });
            Console.WriteLine($"models: {pair.Description}; {Prompts.Length} prompts × {parse.GetValue(tokens)} tokens, greedy; exits after layers {string.Join(", ", pair.Exits)} (the first is used)");
            Console.WriteLine();
            Console.WriteLine("| γ | rounds | tokens per round | final = the exit's verdict | top 2 | top 3 | top 4 | top 6 | top 8 |");
            Console.WriteLine("|---|---|---|---|---|---|---|---|---|");
            foreach (var gamma in parse.GetValue(gammas)!.Split(',').Select(g => int.Parse(g, CultureInfo.InvariantCulture)))
            {
                var ks = new[] { 1, 2, 3, 4, 6, 8 };
                var covered = new int[ks.Length];
                int rounds = 0, committed = 0;
                foreach (var prompt in Prompts)
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
        var ids = target.Tokenizer.Encode(prompt, addBos: true);
        using var t = target.CreateContext();
        using var d = draft.CreateContext();
        t.Prefill(ids.AsSpan(0, ids.Length - 1));
        d.Prefill(ids.AsSpan(0, ids.Length - 1));
        var last = ids[^1];
        int rounds = 0, committed = 0;
        while (committed < count)
        {
            // Draft γ tokens greedily after `last`.
            var baseLength = d.Length;
            var drafts = new TokenId[gamma];
            var input = last;
            for (var i = 0; i < gamma; i++)
            {
                drafts[i] = TokenSampler.ArgMax(d.Forward([input]).Row(0));
                input = drafts[i];
            }

            // The target scores [last, d1..dγ]: exit rows and final rows.
            var step = new TokenId[gamma + 1];
            step[0] = last;
            drafts.CopyTo(step, 1);
            var targetBase = t.Length;
            t.BeginStep(step);
            var exit = Softmaxes(t.RunNextStage(), gamma + 1);
            float[][] final = [];
            while (t.NextStage >= 0)
            {
                var logits = t.RunNextStage();
                if (t.NextStage < 0)
                {
                    final = Softmaxes(logits, gamma + 1);
                }
            }

            var accepted = 0;
            while (accepted < gamma && TokenSampler.ArgMax(final[accepted]).Value == drafts[accepted].Value)
            {
                accepted++;
            }

            var next = TokenSampler.ArgMax(final[accepted]).Value;

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
            var exitAccepted = 0;
            while (exitAccepted < gamma && TokenSampler.ArgMax(exit[exitAccepted]).Value == drafts[exitAccepted].Value)
            {
                exitAccepted++;
            }

            var exitNext = TokenSampler.ArgMax(exit[exitAccepted]).Value;
            var ranked = outcomes.OrderByDescending(o => o.Accepted == exitAccepted && o.Next == exitNext).ThenByDescending(o => o.P).ToList();
            var rank = ranked.FindIndex(o => o.Accepted == accepted && o.Next == next);
            for (var k = 0; k < ks.Length; k++)
            {
                covered[k] += rank >= 0 && rank < ks[k] ? 1 : 0;
            }

            rounds++;
            committed += accepted + 1;

            // Keep [last, d1..da]; the next round starts from the new token.
            t.Rollback(targetBase + 1 + accepted);
            d.Rollback(Math.Min(baseLength + 1 + accepted, d.Length));
            if (d.Length < baseLength + 1 + accepted)
            {
                d.Forward([drafts[gamma - 1]]);
            }

            last = new TokenId(next);
        }

        return (rounds, committed);
    }

    private static float[][] Softmaxes(LogitsView logits, int rows)
    {
        var result = new float[rows][];
        for (var r = 0; r < rows; r++)
        {
            var row = logits.Row(r);
            var max = float.NegativeInfinity;
            foreach (var v in row)
            {
                max = Math.Max(max, v);
            }

            var p = new float[row.Length];
            var sum = 0.0;
            for (var i = 0; i < row.Length; i++)
            {
                p[i] = MathF.Exp(row[i] - max);
                sum += p[i];
            }

            for (var i = 0; i < p.Length; i++)
            {
                p[i] = (float)(p[i] / sum);
            }

            result[r] = p;
        }

        return result;
    }
}
