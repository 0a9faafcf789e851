using System.CommandLine;
using System.Globalization;
using SpecEdge.Bench.Matrix;
using SpecEdge.Demo;
using SpecEdge.Shared.Models.Checkpoints;
using SpecEdge.Shared.Models.Conversion;
using SpecEdge.Shared.Timing;

namespace SpecEdge.Bench;

/// <summary>
/// <c>exit-layers</c>: how often an early exit after each layer of the default target agrees with the final head,
/// offline (greedy rounds of γ drafts replayed as <see cref="OfflineRounds"/> does), for two kinds of exit head: the
/// logit lens (the hidden state through the final norm and the LM head, untrained, at every layer) and the trained
/// adapters the pair ships (at its exit layers). Agreement per row is the exit's arg-max equal to the final head's; per
/// round, the exit's verdict equal to the final verdict (what a pre-drafted round needs to be used). With the step's
/// time split evenly over the layers, the analytical model turns each exit into conditional mode's time per token under
/// the given profile, as if it were the only exit and every agreeing round were a hit: where the first exit should go,
/// from its time against its agreement.
/// </summary>
internal static class ExitLayersCommand
{
    public static Command Create()
    {
        var tokens = new Option<int>("--tokens") { Description = "New tokens per prompt.", DefaultValueFactory = _ => 96 };
        var gammaOption = new Option<int>("--gamma") { Description = "Drafts per round (γ).", DefaultValueFactory = _ => 4 };
        var profileOption = new Option<string>("--profile") { Description = "Compute profile for the modelled time per token (its draft time and verify step).", DefaultValueFactory = _ => ComputeProfiles.PaperNanoA100.Name };
        var rtts = new Option<string>("--rtt") { Description = "Round trips (ms) to model.", DefaultValueFactory = _ => "20,50" };
        var command = new Command("exit-layers", "Agreement of an early exit with the final head against its layer (logit lens and trained adapters), offline on the default pair, and conditional mode's modelled time per token with it.") { tokens, gammaOption, profileOption, rtts };
        command.SetAction(parse =>
        {
            var pair = DefaultModels.Resolve();
            if (!pair.Trained)
            {
                Console.Error.WriteLine("exit-layers: needs the trained default pair (models/); the synthetic stand-in's agreement means nothing");
                return 2;
            }

            var gamma = parse.GetValue(gammaOption);
            if (gamma < 1 || parse.GetValue(tokens) < 1)
            {
                Console.Error.WriteLine(gamma < 1 ? $"--gamma: {gamma} is not a positive integer" : $"--tokens: {parse.GetValue(tokens)} is not a positive integer");
                return 2;
            }

            ComputeProfile profile;
            try
            {
                profile = ComputeProfiles.Resolve(parse.GetValue(profileOption)!);
            }
            catch (FormatException e)
            {
                Console.Error.WriteLine($"--profile: {e.Message}");
                return 2;
            }

            IReadOnlyList<double> roundTrips;
            try
            {
                roundTrips = MatrixAxes.ParseDoubles(parse.GetValue(rtts)!, "--rtt");
            }
            catch (FormatException e)
            {
                Console.Error.WriteLine(e.Message);
                return 2;
            }

            var layers = LlamaConfig.Load(Path.Combine(pair.Target, LlamaCheckpoint.ConfigFileName)).NumHiddenLayers;
            int[] every = [.. Enumerable.Range(1, layers - 1)];

            // The logit lens: the checkpoint without its adapters file, cut after every layer. The copy's path is the
            // same each run, so its conversion is cached once (the conversion cache keys on the folder).
            var lensCheckpoint = Path.Combine(Path.GetTempPath(), "specedge-exit-lens", "target");
            if (Directory.Exists(lensCheckpoint))
            {
                Directory.Delete(lensCheckpoint, recursive: true);
            }

            Directory.CreateDirectory(lensCheckpoint);
            try
            {
                foreach (var file in Directory.EnumerateFiles(pair.Target).Where(f => Path.GetFileName(f) != ModelConverter.ExitAdaptersFile))
                {
                    File.Copy(file, Path.Combine(lensCheckpoint, Path.GetFileName(file)));
                }

                var lens = Measure(ModelResolver.Resolve(lensCheckpoint, new ConversionOptions { Exits = every }), pair, gamma, parse.GetValue(tokens));
                var trained = Measure(ModelResolver.Resolve(pair.Target, new ConversionOptions { Exits = pair.Exits }), pair, gamma, parse.GetValue(tokens));

                Console.WriteLine($"models: {pair.Description}; target {layers} layers; {OfflineRounds.Prompts.Count} prompts × {parse.GetValue(tokens)} tokens, greedy, γ = {gamma}; {lens.Rounds} rounds, {lens.TokensPerRound:F2} tokens per round");
                Console.WriteLine($"modelled with '{profile.Name}': t_d = {profile.DraftMsPerToken} ms, V = {profile.StepMs(gamma + 1)} ms a step, an exit after layer l at V·l/{layers}; one exit, every round it agrees on a hit (an upper bound on its hit rate)");
                Console.WriteLine();
                Console.WriteLine($"| exit after layer | head | rows agreeing | rounds agreeing | exit at | {string.Join(" | ", roundTrips.Select(r => string.Create(CultureInfo.InvariantCulture, $"conditional vs cloud, {r} ms")))} |");
                Console.WriteLine($"|---|---|---|---|---|{string.Concat(roundTrips.Select(_ => "---|"))}");
                foreach (var layer in every)
                {
                    Print(layer, "logit lens", lens, every, layers, gamma, profile, roundTrips, parse.GetValue(tokens));
                    if (pair.Exits.Contains(layer))
                    {
                        Print(layer, "trained adapter", trained, [.. pair.Exits], layers, gamma, profile, roundTrips, parse.GetValue(tokens));
                    }
                }
            }
            finally
            {
                Directory.Delete(lensCheckpoint, recursive: true);
            }

            return 0;
        });
        return command;
    }

    private static void Print(int layer, string head, Agreement agreement, int[] exits, int layers, int gamma, ComputeProfile profile, IReadOnlyList<double> roundTrips, int tokens)
    {
        var stage = Array.IndexOf(exits, layer);
        var verify = profile.StepMs(gamma + 1);
        var rounds = agreement.RoundsAgreeing[stage] / (double)agreement.Rounds;
        var modelled = roundTrips.Select(rtt =>
        {
            var inputs = new ModelInputs(gamma, agreement.TokensPerRound, profile.DraftMsPerToken, rtt, verify, verify * layer / layers, rounds);
            var cloud = AnalyticalModel.MsPerToken("cloud", inputs with { VerifyMs = profile.StepMs(1) }, tokens);
            return string.Create(CultureInfo.InvariantCulture, $"{(AnalyticalModel.MsPerToken("conditional", inputs, tokens) / cloud) - 1:+0.0%;-0.0%}");
        });
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {layer} | {head} | {agreement.RowsAgreeing[stage] / (double)agreement.Rows:P1} | {rounds:P1} | {layer}/{layers} of the step | {string.Join(" | ", modelled)} |"));
    }

    private static Agreement Measure(string convertedTarget, ModelPair pair, int gamma, int count)
    {
        using var models = OfflineRounds.Load(convertedTarget, ModelResolver.Resolve(pair.Draft), pair.Description);
        var (target, draft) = (models.Target, models.Draft);
        var exits = target.Stages.Count - 1;
        var agreement = new Agreement(new int[exits], new int[exits]);
        foreach (var prompt in OfflineRounds.Prompts)
        {
            agreement.Committed += OfflineRounds.Replay(target, draft, prompt, gamma, count, round =>
            {
                var final = round.Stages[^1];
                for (var e = 0; e < exits; e++)
                {
                    var exit = round.Stages[e];
                    for (var r = 0; r < final.Length; r++)
                    {
                        agreement.RowsAgreeing[e] += OfflineRounds.ArgMax(exit[r]) == OfflineRounds.ArgMax(final[r]) ? 1 : 0;
                    }

                    agreement.RoundsAgreeing[e] += OfflineRounds.Verdict(exit, round.Drafts) == (round.Accepted, round.Next) ? 1 : 0;
                }

                agreement.Rows += final.Length;
                agreement.Rounds++;
            });
        }

        return agreement;
    }

    /// <summary>Counts over the replayed rounds, per exit (in stage order).</summary>
    private sealed class Agreement(int[] rowsAgreeing, int[] roundsAgreeing)
    {
        public int[] RowsAgreeing { get; } = rowsAgreeing;

        public int[] RoundsAgreeing { get; } = roundsAgreeing;

        public int Rows { get; set; }

        public int Rounds { get; set; }

        public int Committed { get; set; }

        public double TokensPerRound => Committed / (double)Rounds;
    }
}
