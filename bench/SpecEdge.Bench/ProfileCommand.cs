using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using SpecEdge.Demo;
using SpecEdge.Shared.Models.Conversion;
using SpecEdge.Shared.Runtime;
using SpecEdge.Shared.Timing;
using SpecEdge.Shared.Tokenization;

namespace SpecEdge.Bench;

/// <summary>
/// <c>profile</c>: measures this machine's draft time per token and the target's verification step (fixed and
/// per-token parts, and each stage's share) and writes them as a compute profile file, which <c>--profile FILE</c> then
/// emulates elsewhere. Run it on the edge device for the draft figures and on the server for the verification figures,
/// and combine the two files by hand, or run it on one machine for both.
/// </summary>
internal static class ProfileCommand
{
    private const int Context = 64;

    public static Command Create()
    {
        var target = new Option<string?>("--target") { Description = "Target model (default: the built-in pair's)." };
        var draft = new Option<string?>("--draft") { Description = "Draft model (default: the built-in pair's)." };
        var exits = new Option<string?>("--exits") { Description = "Exit layers when the target is a checkpoint (default: the pair's)." };
        var output = new Option<string>("--out") { Description = "Profile file to write.", Required = true };
        var name = new Option<string>("--name") { Description = "The profile's name.", DefaultValueFactory = _ => "measured-" + Environment.MachineName.ToLowerInvariant() };
        var threads = new Option<int>("--threads") { Description = "ONNX Runtime intra-op threads.", DefaultValueFactory = _ => 0 };
        var iterations = new Option<int>("--iterations") { Description = "Timed runs per measurement.", DefaultValueFactory = _ => 100 };
        var device = new Option<string>("--device") { Description = "Where the target runs: cpu or cuda (the draft always runs on the CPU).", DefaultValueFactory = _ => "cpu" };
        device.AcceptOnlyFromAmong("cpu", "cuda");
        var compute = new Option<string>("--compute") { Description = "The target's compute type when it is converted here: f32 or f16.", DefaultValueFactory = _ => "f32" };
        compute.AcceptOnlyFromAmong("f32", "f16");
        var command = new Command("profile", "Measure this machine's draft and verify times and write a compute profile file.") { target, draft, exits, output, name, threads, iterations, device, compute };
        command.SetAction(parse =>
        {
            var pair = DefaultModels.Resolve();
            var exitList = parse.GetValue(exits) is { } e ? e.Split(',').Select(x => int.Parse(x, CultureInfo.InvariantCulture)).ToList() : [.. pair.Exits];
            var targetDir = ModelResolver.Resolve(parse.GetValue(target) ?? pair.Target, new ConversionOptions { Exits = exitList, ComputeDtype = parse.GetValue(compute) == "f16" ? Shared.Models.Checkpoints.TensorDType.Float16 : Shared.Models.Checkpoints.TensorDType.Float32 });
            var draftDir = ModelResolver.Resolve(parse.GetValue(draft) ?? pair.Draft);
            var options = new RuntimeOptions { IntraOpThreads = parse.GetValue(threads) };
            var n = parse.GetValue(iterations);

            double draftMs;
            using (var model = LanguageModel.Load(draftDir, options))
            using (var context = model.CreateContext())
            {
                context.Prefill(Tokens(Context, model.VocabSize));
                draftMs = Median(n, () => context.Rollback(Context), () => context.Forward([new TokenId(7)]));
            }

            double[] oneToken;
            double[] nineTokens;
            var targetDevice = parse.GetValue(device) == "cuda" ? ExecutionDevice.Cuda : ExecutionDevice.Cpu;
            using (var model = LanguageModel.Load(targetDir, options with { Device = targetDevice }))
            using (var context = model.CreateContext())
            {
                if (model.Device != targetDevice)
                {
                    throw new InvalidOperationException($"--device {parse.GetValue(device)}: the target runs on {model.Device} ({model.FallbackReason})");
                }

                context.Prefill(Tokens(Context, model.VocabSize));
                oneToken = StageMedians(context, Tokens(1, model.VocabSize), n);
                nineTokens = StageMedians(context, Tokens(9, model.VocabSize), n);
            }

            var perToken = Math.Max(0, (nineTokens.Sum() - oneToken.Sum()) / 8);
            var fixedPart = Math.Max(0, oneToken.Sum() - perToken);
            var profile = new ComputeProfile
            {
                Name = parse.GetValue(name)!,
                Description = string.Create(CultureInfo.InvariantCulture, $"measured on {Environment.MachineName} ({Environment.ProcessorCount} cores, {System.Runtime.InteropServices.RuntimeInformation.OSDescription}) with specedge-bench profile: draft {Path.GetFileName(draftDir)}, target {Path.GetFileName(targetDir)}"),
                DraftMsPerToken = Math.Round(draftMs, 3),
                VerifyMsPerStep = Math.Round(fixedPart, 3),
                VerifyMsPerToken = Math.Round(perToken, 3),
                StageFractions = [.. nineTokens.Select(s => Math.Round(s / nineTokens.Sum(), 4))],
            };
            profile.Save(parse.GetValue(output)!);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"draft {profile.DraftMsPerToken} ms/token; verify {profile.VerifyMsPerStep} ms + {profile.VerifyMsPerToken} ms/token; stage shares [{string.Join(", ", profile.StageFractions)}]; wrote {parse.GetValue(output)}"));
            return 0;
        });
        return command;
    }

    private static TokenId[] Tokens(int count, int vocab) => [.. Enumerable.Range(0, count).Select(i => new TokenId((i * 31 + 5) % vocab))];

    private static double Median(int iterations, Action reset, Action run)
    {
        var times = new List<double>(iterations);
        var watch = new Stopwatch();
        for (var i = -10; i < iterations; i++)
        {
            reset();
            watch.Restart();
            run();
            if (i >= 0)
            {
                times.Add(watch.Elapsed.TotalMilliseconds);
            }
        }

        return Stats.Median(times);
    }

    private static double[] StageMedians(DecodeContext context, TokenId[] step, int iterations)
    {
        var stages = context.Model.Stages.Count;
        var times = Enumerable.Range(0, stages).Select(_ => new List<double>(iterations)).ToArray();
        var watch = new Stopwatch();
        for (var i = -10; i < iterations; i++)
        {
            context.Rollback(Context);
            context.BeginStep(step);
            for (var s = 0; s < stages; s++)
            {
                watch.Restart();
                context.RunNextStage();
                if (i >= 0)
                {
                    times[s].Add(watch.Elapsed.TotalMilliseconds);
                }
            }
        }

        return [.. times.Select(Stats.Median)];
    }
}
