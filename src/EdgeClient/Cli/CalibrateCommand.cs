using System.CommandLine;
using System.Globalization;
using SpecEdge.EdgeClient.Client;
using SpecEdge.Shared.Calibration;
using SpecEdge.Shared.Decoding;

namespace SpecEdge.EdgeClient.Cli;

/// <summary>
/// <c>calibrate</c>: runs a prompt set through the verifier with every provisional verdict sent (thresholds 0) and
/// prints, per exit, how often the provisional verdict matched the final one at each confidence level, and the lowest
/// threshold that reaches the requested precision. <c>--out</c> writes a report the verifier loads with
/// <c>--calibration</c>.
/// </summary>
internal static class CalibrateCommand
{
    /// <summary>The confidence levels reported.</summary>
    public static readonly double[] Levels = [0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99];

    private static readonly string[] DefaultPrompts =
    [
        "And God said",
        "In the beginning",
        "The LORD is my shepherd",
        "Blessed are the",
        "And it came to pass, when",
        "Now the serpent was more subtil than",
        "For God so loved the world",
        "Then said Jesus unto them",
    ];

    public static Command Create()
    {
        var server = new Option<string>("--server") { Description = "The verifier.", Required = true };
        var draft = new Option<string>("--draft") { Description = "The draft model.", Required = true };
        var prompts = new Option<string?>("--prompts") { Description = "A file with one prompt per line (default: a built-in set)." };
        var precision = new Option<double>("--precision") { Description = "The precision a threshold must reach.", DefaultValueFactory = _ => 0.8 };
        var gamma = new Option<int>("--draft-tokens") { Description = "Drafts per round (γ).", DefaultValueFactory = _ => 4 };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "New tokens per prompt.", DefaultValueFactory = _ => 64 };
        var output = new Option<string?>("--out") { Description = "Write the calibration report (JSON) for the verifier's --calibration." };
        var json = new Option<bool>("--json") { Description = "Print the report as JSON instead of tables." };
        var command = new Command("calibrate", "Measure how often each exit's provisional verdict matches the final one at each confidence level, and choose thresholds.")
        {
            server, draft, prompts, precision, gamma, maxNew, output, json,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var stdout = parse.InvocationConfiguration.Output;
            var stderr = parse.InvocationConfiguration.Error;
            try
            {
                var target = parse.GetValue(precision);
                if (!(target > 0 && target <= 1))
                {
                    throw new ArgumentException($"--precision {target.ToString(CultureInfo.InvariantCulture)} must lie in (0, 1]");
                }

                var promptList = parse.GetValue(prompts) is { } file
                    ? File.Exists(file) ? File.ReadAllLines(file).Where(l => l.Trim().Length > 0).ToList() : throw new ArgumentException($"--prompts: '{Path.GetFullPath(file)}' not found")
                    : [.. DefaultPrompts];
                if (!Uri.TryCreate(parse.GetValue(server), UriKind.Absolute, out var serverUri))
                {
                    throw new ArgumentException($"--server: '{parse.GetValue(server)}' is not a verifier URL");
                }

                await using var client = await SpecEdgeClient.ConnectAsync(new EdgeClientOptions { Server = serverUri, DraftModel = parse.GetValue(draft) }, cancellationToken: cancellationToken);
                var exits = client.VerifierDescription!.Exits.Select(e => (int)e.Layer).ToList();
                if (exits.Count == 0)
                {
                    throw new ArgumentException($"the verifier's target ({client.VerifierDescription.ModelId}) has no exits to calibrate");
                }

                var (records, rounds, drafted) = await CollectAsync(client, promptList, exits.Count, parse.GetValue(gamma), parse.GetValue(maxNew), stderr, cancellationToken);
                stderr.WriteLine();
                var calibration = Build(client.VerifierDescription.ModelId, target, rounds, drafted, exits, records);
                if (parse.GetValue(output) is { } path)
                {
                    calibration.Save(path);
                }

                if (parse.GetValue(json))
                {
                    stdout.WriteLine(System.Text.Json.JsonSerializer.Serialize(calibration, new System.Text.Json.JsonSerializerOptions { WriteIndented = true, PropertyNamingPolicy = System.Text.Json.JsonNamingPolicy.SnakeCaseLower, NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals }));
                }
                else
                {
                    Print(stdout, calibration);
                }

                return 0;
            }
            catch (Exception ex) when (EdgeCli.IsExpected(ex))
            {
                return EdgeCli.Report(stderr, ex, "calibration");
            }
        });
        return command;
    }

    /// <summary>Every exit's early verdicts over the prompts (every verdict sent: thresholds 0), with the rounds and drafts they came from.</summary>
    private static async Task<(List<EarlyVerdictRecord> Records, int Rounds, int Drafted)> CollectAsync(SpecEdgeClient client, List<string> prompts, int exits, int gamma, int maxNew, TextWriter progress, CancellationToken cancellationToken)
    {
        var records = new List<EarlyVerdictRecord>();
        var rounds = 0;
        var drafted = 0;
        foreach (var prompt in prompts)
        {
            var report = await client.Generate(new GenerationRequest
            {
                PromptText = prompt,
                Mode = GenerationMode.Preemptive,
                DraftTokens = gamma,
                MaxNewTokens = maxNew,
                Sampling = SamplingConfig.Greedy,
                ExitThresholds = [.. Enumerable.Repeat(0f, exits)],
                StopAtEos = false,
                ClientLabel = "specedge-edge calibrate",
            }).RunToEndAsync(cancellationToken);
            records.AddRange(report.PerRound.SelectMany(r => r.EarlyVerdicts));
            rounds += report.Rounds;
            drafted += report.DraftTokens;
            progress.Write('.');
        }

        return (records, rounds, drafted);
    }

    /// <summary>The verdicts at or above a confidence level (those a verifier with that threshold would send), and how many matched.</summary>
    public static CalibrationBin Bin(IEnumerable<EarlyVerdictRecord> verdicts, double level)
    {
        int sent = 0, matched = 0;
        foreach (var verdict in verdicts.Where(v => v.Confidence >= level))
        {
            sent++;
            matched += verdict.Matched ? 1 : 0;
        }

        return new CalibrationBin(level, sent, matched);
    }

    /// <summary>Bins the early verdicts by confidence and picks, per exit, the lowest level reaching the precision.</summary>
    public static CalibrationReport Build(string model, double precision, int rounds, int drafted, IReadOnlyList<int> exits, IReadOnlyList<EarlyVerdictRecord> records)
    {
        var perExit = new List<ExitCalibration>();
        foreach (var layer in exits)
        {
            var verdicts = records.Where(r => r.ExitLayer == layer).ToList();
            var bins = Levels.Select(level => Bin(verdicts, level)).ToList();
            var minimum = Math.Max(10, verdicts.Count / 100);
            var chosen = bins.FirstOrDefault(b => b.Verdicts >= minimum && b.Precision >= precision);
            perExit.Add(new ExitCalibration
            {
                Layer = layer,
                Bins = bins,
                Threshold = chosen?.Confidence ?? 1.0,
                PrecisionAtThreshold = chosen?.Precision ?? double.NaN,
                CoverageAtThreshold = chosen is null || verdicts.Count == 0 ? 0 : chosen.Verdicts / (double)verdicts.Count,
            });
        }

        return new CalibrationReport { Model = model, TargetPrecision = precision, Rounds = rounds, DraftTokens = drafted, Exits = perExit };
    }

    private static void Print(TextWriter output, CalibrationReport report)
    {
        output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"calibration of {report.Model}: {report.Rounds} rounds, {report.DraftTokens} drafts, target precision {report.TargetPrecision:P0}"));
        foreach (var exit in report.Exits)
        {
            output.WriteLine();
            output.WriteLine($"exit after layer {exit.Layer}");
            output.WriteLine("| confidence ≥ | verdicts | matched final | precision |");
            output.WriteLine("|---|---|---|---|");
            foreach (var bin in exit.Bins)
            {
                output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {bin.Confidence:0.00} | {bin.Verdicts} | {bin.Matches} | {(bin.Verdicts == 0 ? "-" : bin.Precision.ToString("P1", CultureInfo.InvariantCulture))} |"));
            }

            output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"threshold {exit.Threshold:0.00}: precision {(double.IsNaN(exit.PrecisionAtThreshold) ? "-" : exit.PrecisionAtThreshold.ToString("P1", CultureInfo.InvariantCulture))}, early verdict sent in {exit.CoverageAtThreshold:P0} of rounds"));
        }
    }
}
