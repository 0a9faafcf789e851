using System.CommandLine;
using System.Globalization;
using System.Text;
using SpecEdge.CloudVerifier.Hosting;
using SpecEdge.Demo;
using SpecEdge.EdgeClient.Cli;
using SpecEdge.EdgeClient.Client;
using SpecEdge.Shared.Calibration;
using SpecEdge.Shared.Models.Conversion;
using SpecEdge.Shared.Runtime;
using SpecEdge.Shared.Tokenization;

namespace SpecEdge.Bench;

/// <summary>
/// <c>quality</c>: the default pair's figures for models/README.md, measured through SpecEdge's own path (ONNX graphs,
/// C# tokenizer, the verifier): held-out bits per byte of the target and of each exit, greedy continuations of five
/// prompts, draft-vs-target acceptance at γ = 4, and each exit's agreement with the final verdict at the threshold the
/// calibration picks.
/// </summary>
internal static class QualityCommand
{
    private static readonly string[] Prompts =
    [
        "In the beginning",
        "And the LORD said unto Moses,",
        "Blessed are the",
        "The king of Israel",
        "And it came to pass",
    ];

    private static readonly string[] AcceptancePrompts =
    [
        "And God said",
        "Then said Jesus unto them,",
        "Now the word of the LORD",
        "And the children of Israel",
        "For thus saith the LORD",
        "Hear, O Israel:",
        "And he went out",
        "Behold, I will",
    ];

    public static Command Create()
    {
        var heldOut = new Option<string?>("--held-out") { Description = "Held-out text (default: heldout.txt beside the default pair)." };
        var tokens = new Option<int>("--tokens") { Description = "Tokens per greedy continuation and per acceptance prompt.", DefaultValueFactory = _ => 64 };
        var precision = new Option<double>("--precision") { Description = "Precision the exit thresholds must reach when the pair ships no calibration file.", DefaultValueFactory = _ => 0.8 };
        var command = new Command("quality", "Held-out bits per byte, greedy continuations, acceptance at γ = 4 and calibrated exit agreement of the default pair.") { heldOut, tokens, precision };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var pair = DefaultModels.Resolve();
            var target = ModelResolver.Resolve(pair.Target, new ConversionOptions { Exits = pair.Exits });
            var draft = ModelResolver.Resolve(pair.Draft);
            var text = new StringBuilder();
            text.AppendLine(CultureInfo.InvariantCulture, $"Models: {pair.Description}.");
            text.AppendLine();

            var heldOutPath = parse.GetValue(heldOut) ?? Path.Combine(Path.GetDirectoryName(pair.Target)!, "heldout.txt");
            if (File.Exists(heldOutPath))
            {
                text.AppendLine("| model | held-out bits per byte |");
                text.AppendLine("|---|---|");
                var targetBpb = BitsPerByte(target, File.ReadAllText(heldOutPath));
                for (var s = 0; s < targetBpb.Length; s++)
                {
                    var label = s < targetBpb.Length - 1 ? $"target, exit after layer {pair.Exits[s]}" : "target (final head)";
                    text.AppendLine(CultureInfo.InvariantCulture, $"| {label} | {targetBpb[s]:F3} |");
                }

                text.AppendLine(CultureInfo.InvariantCulture, $"| draft | {BitsPerByte(draft, File.ReadAllText(heldOutPath))[^1]:F3} |");
                text.AppendLine();
            }

            text.AppendLine("Greedy continuations of the target:");
            text.AppendLine();
            using (var model = LanguageModel.Load(target, new RuntimeOptions { IntraOpThreads = 2 }))
            {
                foreach (var prompt in Prompts)
                {
                    text.AppendLine(CultureInfo.InvariantCulture, $"- **{prompt}**{Greedy(model, prompt, parse.GetValue(tokens)).Replace("\n", " / ", StringComparison.Ordinal)}");
                }
            }

            text.AppendLine();
            var (app, address) = await VerifierHost.StartLoopbackAsync(target, o =>
            {
                o.IntraOpThreads = 1;
                o.DefaultExitThreshold = 0;
            }, cancellationToken: cancellationToken);
            await using (app)
            {
                await using var client = await SpecEdgeClient.ConnectAsync(new EdgeClientOptions { Server = address, DraftModel = draft, IntraOpThreads = 1 }, cancellationToken: cancellationToken);
                var run = await AcceptanceRun.RunAsync(client, AcceptancePrompts, parse.GetValue(tokens), cancellationToken);
                var records = run.Reports.SelectMany(r => r.PerRound).SelectMany(r => r.EarlyVerdicts).ToList();
                text.AppendLine(CultureInfo.InvariantCulture, $"Draft against target, greedy, γ = 4, {AcceptancePrompts.Length} prompts × {parse.GetValue(tokens)} tokens: acceptance rate **{run.AcceptanceRate:F3}** ({run.Accepted} of {run.Drafted} drafts), {run.TokensPerRound:F2} tokens per round.");
                text.AppendLine();
                var calibration = CalibrateCommand.Build("target", parse.GetValue(precision), run.Rounds, run.Drafted, pair.Exits, records);
                var shipped = pair.Calibration is null ? null : CalibrationReport.LoadThresholds(pair.Calibration);
                text.AppendLine("| exit | provisional verdicts | agreement with the final verdict (threshold 0) | calibrated threshold | agreement at the threshold | rounds with an early verdict at the threshold |");
                text.AppendLine("|---|---|---|---|---|---|");
                for (var e = 0; e < calibration.Exits.Count; e++)
                {
                    var exit = calibration.Exits[e];
                    var all = exit.Bins[0];
                    double threshold, agreement, coverage;
                    if (shipped is not null)
                    {
                        // Out of sample: the thresholds shipped in the pair's calibration file, chosen on other prompts.
                        threshold = shipped[e];
                        var sent = CalibrateCommand.Bin(records.Where(r => r.ExitLayer == exit.Layer), threshold);
                        agreement = sent.Precision;
                        coverage = all.Verdicts == 0 ? 0 : sent.Verdicts / (double)all.Verdicts;
                    }
                    else
                    {
                        (threshold, agreement, coverage) = (exit.Threshold, exit.PrecisionAtThreshold, exit.CoverageAtThreshold);
                    }

                    text.AppendLine(CultureInfo.InvariantCulture, $"| after layer {exit.Layer} | {all.Verdicts} | {all.Precision:P1} | {threshold:0.00} | {(double.IsNaN(agreement) ? "-" : agreement.ToString("P1", CultureInfo.InvariantCulture))} | {coverage:P0} |");
                }

                text.AppendLine();
                text.AppendLine(shipped is not null
                    ? $"Thresholds: the pair's shipped calibration ({Path.GetFileName(pair.Calibration)}, chosen on its own prompt set), applied to these prompts."
                    : $"Thresholds: calibrated on these prompts for precision {parse.GetValue(precision):P0} (the pair ships no calibration file).");
            }

            Console.WriteLine(text.ToString());
            return 0;
        });
        return command;
    }

    /// <summary>Bits per byte of each head (exits, then final) over the text, in windows of 256 tokens.</summary>
    private static double[] BitsPerByte(string modelDir, string heldOut)
    {
        using var model = LanguageModel.Load(modelDir, new RuntimeOptions { IntraOpThreads = 2 });
        using var context = model.CreateContext(512);
        var tokens = model.Tokenizer.Encode(heldOut, addBos: false);
        var heads = model.Stages.Count;
        var nats = new double[heads];
        long bytes = 0;
        var tokenBytes = new List<byte>();
        const int Window = 256;
        for (var start = 0; start + 1 < tokens.Length; start += Window)
        {
            var window = tokens.AsSpan(start, Math.Min(Window + 1, tokens.Length - start));
            context.Reset();
            for (var chunk = 0; chunk < window.Length - 1; chunk += context.MaxStepTokens)
            {
                var count = Math.Min(context.MaxStepTokens, window.Length - 1 - chunk);
                context.BeginStep(window.Slice(chunk, count));
                for (var s = 0; s < heads; s++)
                {
                    var logits = context.RunNextStage();
                    for (var i = 0; i < count; i++)
                    {
                        nats[s] += NegativeLogLikelihood(logits.Row(i), window[chunk + i + 1]);
                    }
                }

                for (var i = 0; i < count; i++)
                {
                    tokenBytes.Clear();
                    model.Tokenizer.AppendBytes(window[chunk + i + 1], tokenBytes);
                    bytes += tokenBytes.Count;
                }
            }
        }

        return [.. nats.Select(n => n / Math.Log(2) / bytes)];
    }

    private static double NegativeLogLikelihood(ReadOnlySpan<float> logits, TokenId next)
    {
        var max = double.NegativeInfinity;
        foreach (var l in logits)
        {
            max = Math.Max(max, l);
        }

        double sum = 0;
        foreach (var l in logits)
        {
            sum += Math.Exp(l - max);
        }

        return -(logits[next.Value] - max - Math.Log(sum));
    }

    private static string Greedy(LanguageModel model, string prompt, int count)
    {
        var decoder = new Utf8StreamDecoder(model.Tokenizer);
        var text = new StringBuilder();
        foreach (var next in TargetOnlyDecoding.Greedy(model, model.Tokenizer.Encode(prompt, addBos: true), count, stopAtEos: true))
        {
            text.Append(decoder.Push(next));
        }

        return text.Append(decoder.Flush()).ToString();
    }
}
