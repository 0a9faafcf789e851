using System.CommandLine;
using System.Globalization;
using SpecEdge.EdgeClient.Client;
using SpecEdge.LinkEmulator;
using SpecEdge.Shared.Decoding;
using SpecEdge.Shared.Models;
using SpecEdge.Shared.Timing;

namespace SpecEdge.Demo;

/// <summary>
/// <c>specedge-demo</c>: starts a verifier in this process on a loopback port with the default model pair, runs the same
/// prompts in every mode through an emulated link, streams the text, and prints a table side by side.
/// </summary>
internal static class DemoCommand
{
    public const string DefaultLink = "rtt=40ms,jitter=4ms,bw=20mbit";

    private static readonly string[] DefaultPrompts =
    [
        "The edge drafts and the cloud verifies",
        "Once upon a time",
        "Speculative decoding works because",
    ];

    public static RootCommand Create()
    {
        var target = new Option<string?>("--target") { Description = "Target model folder (default: the built-in pair)." };
        var draft = new Option<string?>("--draft") { Description = "Draft model folder (default: the built-in pair)." };
        var exits = new Option<string?>("--exits") { Description = "Exit layers of the target, e.g. 2,4 (default: the pair's)." };
        var modes = new Option<string>("--modes") { Description = "Modes to run, in order.", DefaultValueFactory = _ => "cloud,edge,speculative,preemptive,conditional,proactive,adaptive,conditional+tree" };
        var prompts = new Option<int>("--prompts") { Description = "How many of the built-in prompts to run (1-3).", DefaultValueFactory = _ => 3 };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "New tokens per prompt.", DefaultValueFactory = _ => 32 };
        var gamma = new Option<int>("--draft-tokens") { Description = "Drafts per round (γ).", DefaultValueFactory = _ => 4 };
        var link = new Option<string>("--link") { Description = "The emulated edge-cloud link ('none' for direct loopback).", DefaultValueFactory = _ => DefaultLink };
        var profile = new Option<string>("--profile") { Description = "Compute profile for both sides: 'real' (this machine), ratio-10x, paper-robot, or a profile file.", DefaultValueFactory = _ => ComputeProfiles.TenToOne.Name };
        var threshold = new Option<float?>("--exit-threshold") { Description = "Confidence an exit needs to send its early verdict (default: the pair's models/calibration.json; else 0 for the synthetic pair, 0.5 otherwise)." };
        var temperature = new Option<float>("--temperature") { Description = "0 is greedy (outputs can then be compared token by token).", DefaultValueFactory = _ => 0f };
        var seed = new Option<ulong>("--seed") { Description = "Sampling seed.", DefaultValueFactory = _ => 1UL };
        var quiet = new Option<bool>("--quiet") { Description = "Print only the table." };
        var command = new RootCommand("specedge-demo: the edge client and an in-process verifier on the default models, every mode side by side.")
        {
            target, draft, exits, modes, prompts, maxNew, gamma, link, profile, threshold, temperature, seed, quiet,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var output = parse.InvocationConfiguration.Output;
            var error = parse.InvocationConfiguration.Error;
            try
            {
                var plan = new DemoPlan
                {
                    Modes = ParseModes(parse.GetValue(modes)!),
                    Prompts = DefaultPrompts.Take(Math.Clamp(parse.GetValue(prompts), 1, DefaultPrompts.Length)).ToList(),
                    MaxNewTokens = parse.GetValue(maxNew),
                    DraftTokens = parse.GetValue(gamma),
                    Link = parse.GetValue(link) is "none" or null ? null : LinkProfile.Parse(parse.GetValue(link)!),
                    Profile = ComputeProfiles.Resolve(parse.GetValue(profile)!),
                    Sampling = new SamplingConfig { Temperature = parse.GetValue(temperature), Seed = parse.GetValue(seed) },
                    Quiet = parse.GetValue(quiet),
                };
                var pair = parse.GetValue(target) is { } t && parse.GetValue(draft) is { } d
                    ? new ModelPair(t, d, ParseExits(parse.GetValue(exits)), "given on the command line", Trained: true)
                    : DefaultModels.Resolve();
                if (parse.GetValue(exits) is { } exitText)
                {
                    pair = pair with { Exits = ParseExits(exitText) };
                }

                // Exit code 3: the demo ran, and a greedy speculative output differed from cloud decoding.
                return await new DemoRunner(output, error).RunAsync(pair, plan, parse.GetValue(threshold), cancellationToken) ? 0 : 3;
            }
            catch (Exception ex) when (ex is FormatException or ArgumentException or ModelFormatException or VerifierUnavailableException or ModelMismatchException)
            {
                error.WriteLine($"specedge-demo: error: {ex.Message}");
                return 1;
            }
        });
        return command;
    }

    private static List<DemoMode> ParseModes(string text)
    {
        var list = new List<DemoMode>();
        foreach (var entry in text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            // MODE+tree: token trees, as many leaves beside each draft as auto drafts.
            var tree = entry.EndsWith("+tree", StringComparison.Ordinal) && entry != "+tree";
            var name = tree ? entry[..^"+tree".Length] : entry;
            if (tree && GenerationModes.Parse(name) is { } treeMode && treeMode.UsesDraft() && treeMode.UsesVerifier())
            {
                list.Add(new DemoMode(entry, treeMode, Adaptive: false, Leaves: SpecEdgeClient.AutoLeaves));
            }
            else if (tree)
            {
                throw new FormatException($"--modes: '{entry}': +tree goes after a mode that drafts against the verifier");
            }
            else if (name == "adaptive")
            {
                list.Add(new DemoMode("speculative+adaptive", GenerationMode.Speculative, Adaptive: true));
            }
            else if (GenerationModes.Parse(name) is { } mode)
            {
                list.Add(new DemoMode(mode.Name(), mode, Adaptive: false));
            }
            else
            {
                throw new FormatException($"--modes: unknown mode '{name}' (use {GenerationModes.AllNames}, adaptive, or MODE+tree)");
            }
        }

        return list;
    }

    private static List<int> ParseExits(string? text) =>
        text is null ? [] : text.Split(',', StringSplitOptions.TrimEntries).Select(s => int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) ? v : throw new FormatException($"--exits: '{s}' is not a layer number")).ToList();
}

internal sealed record DemoMode(string Label, GenerationMode Mode, bool Adaptive, int? Leaves = null);

internal sealed record DemoPlan
{
    public required IReadOnlyList<DemoMode> Modes { get; init; }

    public required IReadOnlyList<string> Prompts { get; init; }

    public required int MaxNewTokens { get; init; }

    public required int DraftTokens { get; init; }

    public required LinkProfile? Link { get; init; }

    public required ComputeProfile Profile { get; init; }

    public required SamplingConfig Sampling { get; init; }

    public bool Quiet { get; init; }
}
