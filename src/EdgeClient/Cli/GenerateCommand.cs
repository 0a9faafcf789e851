using System.CommandLine;
using System.Globalization;
using SpecEdge.EdgeClient.Client;
using SpecEdge.LinkEmulator;
using SpecEdge.Shared.Decoding;
using SpecEdge.Shared.Timing;
using SpecEdge.Shared.Tokenization;

namespace SpecEdge.EdgeClient.Cli;

/// <summary><c>generate</c>: one generation against a verifier (or on the edge alone), text streamed as it is committed.</summary>
internal static class GenerateCommand
{
    public const string Program = "specedge-edge";

    public static Command Create()
    {
        var server = new Option<string?>("--server") { Description = "The verifier, e.g. http://127.0.0.1:50051; a comma-separated list fails over in order (not needed for --mode edge)." };
        var draft = new Option<string>("--draft") { Description = "The draft model: a converted SpecEdge folder or a Hugging Face checkpoint folder.", Required = true };
        var prompt = new Option<string?>("--prompt") { Description = "The prompt text." };
        var promptFile = new Option<string?>("--prompt-file") { Description = "A file holding the prompt text." };
        var promptIds = new Option<string?>("--prompt-ids") { Description = "The prompt as token ids, e.g. 1,2,3." };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "New tokens to generate at most.", DefaultValueFactory = _ => GenerationRequest.DefaultMaxNewTokens };
        var gamma = new Option<int>("--draft-tokens") { Description = "Drafts per round (γ); the maximum when --adaptive.", DefaultValueFactory = _ => GenerationRequest.DefaultDraftTokens };
        var adaptive = new Option<bool>("--adaptive") { Description = "Choose γ each round from measured acceptance and timings." };
        var temperature = new Option<float>("--temperature") { Description = "0 is greedy.", DefaultValueFactory = _ => 0f };
        var topK = new Option<int>("--top-k") { Description = "Keep the K most likely tokens (0: all).", DefaultValueFactory = _ => 0 };
        var topP = new Option<float>("--top-p") { Description = "Keep the smallest set reaching probability P (1: all).", DefaultValueFactory = _ => 1f };
        var seed = new Option<ulong>("--seed") { Description = "Random seed for sampling.", DefaultValueFactory = _ => 0UL };
        var mode = new Option<string>("--mode") { Description = $"One of {GenerationModes.AllNames}.", DefaultValueFactory = _ => "speculative" };
        var json = new Option<bool>("--json") { Description = "Print one JSON object with the text and figures at the end (the text streams to stderr)." };
        var link = new Option<string?>("--link") { Description = "Emulate a link to the verifier, e.g. rtt=50ms,jitter=5ms,bw=10mbit." };
        var profile = new Option<string?>("--profile") { Description = "Emulate the edge's drafting speed: a compute profile name or file." };
        var threads = new Option<int>("--threads") { Description = "ONNX Runtime threads for the draft model (0: one per core).", DefaultValueFactory = _ => 0 };
        var ignoreEos = new Option<bool>("--ignore-eos") { Description = "Do not stop at the end-of-sequence token." };
        var thresholds = new Option<string?>("--exit-thresholds") { Description = "Per-exit confidence thresholds to ask the verifier for, e.g. 0.6,0.8." };
        var apiKeyFile = new Option<string?>("--api-key-file") { Description = $"A file holding the API key (default: the {ApiKeyEnvironmentVariable} environment variable; never the command line)." };
        var ca = new Option<string?>("--ca") { Description = "A CA certificate (PEM) to trust for the verifier's TLS certificate." };
        var clientCert = new Option<string?>("--client-cert") { Description = "A client certificate (PEM) for mutual TLS." };
        var clientKey = new Option<string?>("--client-key") { Description = "The client certificate's key (PEM)." };
        var roundTimeout = new Option<double>("--round-timeout") { Description = "Seconds a round may wait for its verdict before the session is re-opened.", DefaultValueFactory = _ => 30 };
        var retries = new Option<int>("--retries") { Description = "Retries (re-opening on the same or the next verifier) before giving up.", DefaultValueFactory = _ => 8 };
        var degradedAfter = new Option<double?>("--degraded-after") { Description = "Opt-in: after this many seconds without a verifier, continue with the draft alone, tokens marked unverified." };

        var command = new Command("generate", "Generate text: speculative decoding against a verifier, or the cloud or edge baselines.")
        {
            server, draft, prompt, promptFile, promptIds, maxNew, gamma, adaptive, temperature, topK, topP, seed, mode, json, link, profile, threads, ignoreEos, thresholds,
            apiKeyFile, ca, clientCert, clientKey, roundTimeout, retries, degradedAfter,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var stdout = parse.InvocationConfiguration.Output;
            var stderr = parse.InvocationConfiguration.Error;
            try
            {
                var generationMode = GenerationModes.Parse(parse.GetValue(mode)!) ?? throw new UsageException($"--mode: unknown mode '{parse.GetValue(mode)}' (use {GenerationModes.AllNames})");
                var servers = ParseServers(parse.GetValue(server), generationMode);
                var options = new EdgeClientOptions
                {
                    Server = servers.FirstOrDefault(),
                    FallbackServers = [.. servers.Skip(1)],
                    ApiKey = ReadApiKey(parse.GetValue(apiKeyFile)),
                    TrustedCaPath = ExistingFile(parse.GetValue(ca), "--ca"),
                    ClientCertificatePath = ExistingFile(parse.GetValue(clientCert), "--client-cert"),
                    ClientKeyPath = ExistingFile(parse.GetValue(clientKey), "--client-key"),
                    RoundTimeout = TimeSpan.FromSeconds(parse.GetValue(roundTimeout) > 0 ? parse.GetValue(roundTimeout) : throw new UsageException("--round-timeout must be positive")),
                    MaxRetries = parse.GetValue(retries) >= 0 ? parse.GetValue(retries) : throw new UsageException("--retries must be 0 or more"),
                    DegradedAfter = parse.GetValue(degradedAfter) is { } d ? TimeSpan.FromSeconds(d > 0 ? d : throw new UsageException("--degraded-after must be positive")) : null,
                    DraftModel = parse.GetValue(draft),
                    IntraOpThreads = parse.GetValue(threads),
                    Link = parse.GetValue(link) is { } linkSpec ? ParseWith("--link", () => LinkProfile.Parse(linkSpec)) : null,
                    Profile = parse.GetValue(profile) is { } profileName ? ParseWith("--profile", () => ComputeProfiles.Resolve(profileName)) : ComputeProfile.Real,
                };
                var request = new GenerationRequest
                {
                    Mode = generationMode,
                    MaxNewTokens = parse.GetValue(maxNew),
                    DraftTokens = parse.GetValue(gamma),
                    AdaptiveDraftTokens = parse.GetValue(adaptive),
                    Sampling = new SamplingConfig { Temperature = parse.GetValue(temperature), TopK = parse.GetValue(topK), TopP = parse.GetValue(topP), Seed = parse.GetValue(seed) },
                    StopAtEos = !parse.GetValue(ignoreEos),
                    ExitThresholds = parse.GetValue(thresholds) is { } t ? ParseFloats(t, "--exit-thresholds") : null,
                };
                request = WithPrompt(request, parse.GetValue(prompt), parse.GetValue(promptFile), parse.GetValue(promptIds));
                if (request.Sampling.Validate() is { } samplingProblem)
                {
                    throw new UsageException($"--temperature/--top-k/--top-p: {samplingProblem}");
                }

                await using var client = await SpecEdgeClient.ConnectAsync(options, cancellationToken: cancellationToken);
                var generation = client.Generate(request);
                var textOut = parse.GetValue(json) ? stderr : stdout;
                await foreach (var token in generation.WithCancellation(cancellationToken))
                {
                    textOut.Write(token.Text);
                    textOut.Flush();
                }

                textOut.WriteLine();
                var report = generation.Report!;
                if (report.UnverifiedTokens > 0)
                {
                    stderr.WriteLine($"{Program}: warning: {report.UnverifiedTokens} token(s) were generated by the draft alone while no verifier answered (degraded policy): they are not the target's");
                }

                if (parse.GetValue(json))
                {
                    stdout.WriteLine(report.ToJson());
                }
                else
                {
                    stderr.WriteLine(string.Create(CultureInfo.InvariantCulture, $"[{report.Mode}: {report.NewTokens} tokens in {report.LatencyMs.Total:F0} ms, {report.LatencyMs.PerToken:F1} ms/token, {report.Rounds} rounds, acceptance {report.AcceptanceRate:P0}, {report.FinishReason}]"));
                }

                return 0;
            }
            catch (Exception ex) when (EdgeCli.IsExpected(ex))
            {
                return EdgeCli.Report(stderr, ex, "generation");
            }
        });
        return command;
    }

    /// <summary>The environment variable the API key is read from when no key file is given.</summary>
    public const string ApiKeyEnvironmentVariable = "SPECEDGE_API_KEY";

    private static List<Uri> ParseServers(string? text, GenerationMode mode)
    {
        if (text is null)
        {
            return mode.UsesVerifier() ? throw new UsageException($"--server is required for --mode {mode.Name()}") : [];
        }

        var servers = new List<Uri>();
        foreach (var part in text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            if (!Uri.TryCreate(part, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https"))
            {
                throw new UsageException($"--server: '{part}' is not a verifier URL such as http://127.0.0.1:50051");
            }

            servers.Add(uri);
        }

        return servers;
    }

    private static string? ReadApiKey(string? file)
    {
        if (file is not null)
        {
            return File.Exists(file)
                ? File.ReadAllText(file).Trim() is { Length: > 0 } key ? key : throw new UsageException($"--api-key-file: '{file}' is empty")
                : throw new UsageException($"--api-key-file: '{file}' not found");
        }

        return Environment.GetEnvironmentVariable(ApiKeyEnvironmentVariable) is { Length: > 0 } fromEnvironment ? fromEnvironment.Trim() : null;
    }

    private static string? ExistingFile(string? path, string option) =>
        path is null || File.Exists(path) ? path : throw new UsageException($"{option}: '{path}' not found");

    private static GenerationRequest WithPrompt(GenerationRequest request, string? text, string? file, string? ids)
    {
        var given = new[] { text, file, ids }.Count(v => v is not null);
        if (given != 1)
        {
            throw new UsageException("give exactly one of --prompt, --prompt-file and --prompt-ids");
        }

        if (file is not null)
        {
            return File.Exists(file)
                ? request with { PromptText = File.ReadAllText(file) }
                : throw new UsageException($"--prompt-file: '{file}' not found");
        }

        if (ids is not null)
        {
            var list = new List<TokenId>();
            foreach (var part in ids.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
            {
                list.Add(int.TryParse(part, NumberStyles.Integer, CultureInfo.InvariantCulture, out var id) && id >= 0
                    ? new TokenId(id)
                    : throw new UsageException($"--prompt-ids: '{part}' is not a token id"));
            }

            return request with { PromptIds = list };
        }

        return request with { PromptText = text };
    }

    private static float[] ParseFloats(string text, string option) =>
        text.Split(',', StringSplitOptions.TrimEntries).Select(part =>
            float.TryParse(part, NumberStyles.Float, CultureInfo.InvariantCulture, out var value) ? value : throw new UsageException($"{option}: '{part}' is not a number")).ToArray();

    private static T ParseWith<T>(string option, Func<T> parse)
    {
        try
        {
            return parse();
        }
        catch (FormatException ex)
        {
            throw new UsageException($"{option}: {ex.Message}");
        }
    }
}
