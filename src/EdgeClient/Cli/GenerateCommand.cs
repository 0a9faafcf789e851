using System.CommandLine;
using System.Globalization;
using SpecEdge.EdgeClient.Client;
using SpecEdge.LinkEmulator;
using SpecEdge.Shared.Decoding;
using SpecEdge.Shared.Protocol;
using SpecEdge.Shared.Timing;
using SpecEdge.Shared.Tokenization;

namespace SpecEdge.EdgeClient.Cli;

/// <summary><c>generate</c>: one generation against a verifier (or on the edge alone), text streamed as it is committed.</summary>
internal static class GenerateCommand
{
    public const string Program = "specedge-edge";

    public static Command Create()
    {
        var o = new GenerateOptions();
        var command = new Command("generate", "Generate text: speculative decoding against a verifier, or the cloud or edge baselines.");
        foreach (var option in o.All)
        {
            command.Options.Add(option);
        }

        command.SetAction((parse, cancellationToken) => RunAsync(parse, o, cancellationToken));
        return command;
    }

    private static async Task<int> RunAsync(ParseResult parse, GenerateOptions o, CancellationToken cancellationToken)
    {
        var stdout = parse.InvocationConfiguration.Output;
        var stderr = parse.InvocationConfiguration.Error;
        try
        {
            var generationMode = GenerationModes.Parse(parse.GetValue(o.Mode)!) ?? throw new UsageException($"--mode: unknown mode '{parse.GetValue(o.Mode)}' (use {GenerationModes.AllNames})");
            var options = ClientOptions(parse, o, generationMode);
            var request = new GenerationRequest
            {
                Mode = generationMode,
                MaxNewTokens = parse.GetValue(o.MaxNew),
                DraftTokens = parse.GetValue(o.Gamma),
                AdaptiveDraftTokens = parse.GetValue(o.Adaptive),
                Candidates = parse.GetValue(o.Candidates) is var k and >= 1 and <= ProtocolLimits.MaxCandidates
                    ? k
                    : throw new UsageException($"--candidates: use 1 to {ProtocolLimits.MaxCandidates} (got {parse.GetValue(o.Candidates)})"),
                Sampling = new SamplingConfig { Temperature = parse.GetValue(o.Temperature), TopK = parse.GetValue(o.TopK), TopP = parse.GetValue(o.TopP), Seed = parse.GetValue(o.Seed) },
                StopAtEos = !parse.GetValue(o.IgnoreEos),
                ExitThresholds = parse.GetValue(o.Thresholds) is { } t ? ParseFloats(t, "--exit-thresholds") : null,
            };
            request = WithPrompt(request, parse.GetValue(o.Prompt), parse.GetValue(o.PromptFile), parse.GetValue(o.PromptIds), parse.GetValue(o.Chat), parse.GetValue(o.System));
            var stops = parse.GetValue(o.Stop) ?? [];
            if (stops.Length > GenerationRequest.MaxStopSequences || stops.Any(string.IsNullOrEmpty))
            {
                throw new UsageException($"--stop: at most {GenerationRequest.MaxStopSequences} stop sequences, none empty (got {stops.Length})");
            }

            request = request with { StopSequences = stops };
            if (parse.GetResult(o.Temperature) is null && parse.GetResult(o.TopK) is null && parse.GetResult(o.TopP) is null
                && options.DraftModel is { } draftFolder && Directory.Exists(draftFolder)
                && Shared.Models.Checkpoints.GenerationConfig.Load(draftFolder) is { DoSample: true } defaults)
            {
                // The model's own sampling defaults (generation_config.json) when no sampling option was given.
                request = request with
                {
                    Sampling = request.Sampling with
                    {
                        Temperature = (float)(defaults.Temperature ?? 1.0),
                        TopK = defaults.TopK ?? 0,
                        TopP = (float)(defaults.TopP ?? 1.0),
                    },
                };
                stderr.WriteLine(string.Create(CultureInfo.InvariantCulture, $"sampling with the model's defaults (generation_config.json): temperature {request.Sampling.Temperature}, top-k {request.Sampling.TopK}, top-p {request.Sampling.TopP}; --temperature 0 decodes greedily"));
            }
            if (request.Sampling.Validate() is { } samplingProblem)
            {
                throw new UsageException($"--temperature/--top-k/--top-p: {samplingProblem}");
            }

            // Declared before the client, so it is disposed after it: disposal exports what the generation recorded.
            using var export = EdgeTelemetryExport.Start(parse.GetValue(o.Otlp));
            await using var client = await SpecEdgeClient.ConnectAsync(options, cancellationToken: cancellationToken);
            var generation = client.Generate(request);
            var textOut = parse.GetValue(o.Json) ? stderr : stdout;
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

            if (parse.GetValue(o.Json))
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
    }

    /// <summary>The generate command's options, in the order help lists them.</summary>
    internal sealed class GenerateOptions
    {
        public Option<string?> Server { get; } = new("--server") { Description = "The verifier, e.g. http://127.0.0.1:50051; a comma-separated list fails over in order (not needed for --mode edge)." };

        public Option<string> Balance { get; } = new("--balance") { Description = "failover (default: --server's list, in order) or session-hash (every address --server's host name resolves to; each generation to one of them by its session key).", DefaultValueFactory = _ => "failover" };

        public Option<string> Draft { get; } = new("--draft") { Description = "The draft model: a converted SpecEdge folder or a Hugging Face checkpoint folder.", Required = true };

        public Option<string?> Prompt { get; } = new("--prompt") { Description = "The prompt text." };

        public Option<string?> PromptFile { get; } = new("--prompt-file") { Description = "A file holding the prompt text." };

        public Option<string?> PromptIds { get; } = new("--prompt-ids") { Description = "The prompt as token ids, e.g. 1,2,3." };

        public Option<int> MaxNew { get; } = new("--max-new-tokens") { Description = "New tokens to generate at most.", DefaultValueFactory = _ => GenerationRequest.DefaultMaxNewTokens };

        public Option<int> Gamma { get; } = new("--draft-tokens") { Description = "Drafts per round (γ); the maximum when --adaptive.", DefaultValueFactory = _ => GenerationRequest.DefaultDraftTokens };

        public Option<bool> Adaptive { get; } = new("--adaptive") { Description = "Choose γ each round from measured acceptance and timings." };

        public Option<int> Candidates { get; } = new("--candidates") { Description = "Pre-emptive and conditional modes, greedy: on an early verdict, pre-draft the next round for this many outcomes (the exit's verdict and the alternatives it ranks next); conditional mode sends each ahead.", DefaultValueFactory = _ => 1 };

        public Option<float> Temperature { get; } = new("--temperature") { Description = "0 is greedy.", DefaultValueFactory = _ => 0f };

        public Option<int> TopK { get; } = new("--top-k") { Description = "Keep the K most likely tokens (0: all).", DefaultValueFactory = _ => 0 };

        public Option<float> TopP { get; } = new("--top-p") { Description = "Keep the smallest set reaching probability P (1: all).", DefaultValueFactory = _ => 1f };

        public Option<ulong> Seed { get; } = new("--seed") { Description = "Random seed for sampling.", DefaultValueFactory = _ => 0UL };

        public Option<string> Mode { get; } = new("--mode") { Description = $"One of {GenerationModes.AllNames}.", DefaultValueFactory = _ => "speculative" };

        public Option<bool> Json { get; } = new("--json") { Description = "Print one JSON object with the text and figures at the end (the text streams to stderr)." };

        public Option<string?> Link { get; } = new("--link") { Description = "Emulate a link to the verifier, e.g. rtt=50ms,jitter=5ms,bw=10mbit." };

        public Option<string?> Profile { get; } = new("--profile") { Description = "Emulate the edge's drafting speed: a compute profile name or file." };

        public Option<int> Threads { get; } = new("--threads") { Description = "ONNX Runtime threads for the draft model (0: one per core).", DefaultValueFactory = _ => 0 };

        public Option<bool> IgnoreEos { get; } = new("--ignore-eos") { Description = "Do not stop at the end-of-sequence token." };

        public Option<string?> Thresholds { get; } = new("--exit-thresholds") { Description = "Per-exit confidence thresholds to ask the verifier for, e.g. 0.6,0.8." };

        public Option<string?> ApiKeyFile { get; } = new("--api-key-file") { Description = $"A file holding the API key (default: the {ApiKeyEnvironmentVariable} environment variable; never the command line)." };

        public Option<string?> Ca { get; } = new("--ca") { Description = "A CA certificate (PEM) to trust for the verifier's TLS certificate." };

        public Option<string?> ClientCert { get; } = new("--client-cert") { Description = "A client certificate (PEM) for mutual TLS." };

        public Option<string?> ClientKey { get; } = new("--client-key") { Description = "The client certificate's key (PEM)." };

        public Option<double> RoundTimeout { get; } = new("--round-timeout") { Description = "Seconds a round may wait for its verdict before the session is re-opened.", DefaultValueFactory = _ => 30 };

        public Option<int> Retries { get; } = new("--retries") { Description = "Retries (re-opening on the same or the next verifier) before giving up.", DefaultValueFactory = _ => 8 };

        public Option<double?> DegradedAfter { get; } = new("--degraded-after") { Description = "Opt-in: after this many seconds without a verifier, continue with the draft alone, tokens marked unverified." };

        public Option<string?> Chat { get; } = new("--chat") { Description = "A user message, rendered with the draft model's chat template (instead of --prompt)." };

        public Option<string?> System { get; } = new("--system") { Description = "A system message before the --chat message." };

        public Option<string[]> Stop { get; } = new("--stop") { Description = "Stop before this text (repeat for up to 4).", AllowMultipleArgumentsPerToken = false };

        public Option<string?> Otlp { get; } = new("--otlp") { Description = "Export the edge's metrics and traces over OTLP to this endpoint, e.g. http://collector:4317 (also on with OTEL_EXPORTER_OTLP_ENDPOINT)." };

        public IEnumerable<Option> All => [Server, Balance, Otlp, Draft, Prompt, PromptFile, PromptIds, Chat, System, Stop, MaxNew, Gamma, Adaptive, Candidates, Temperature, TopK, TopP, Seed, Mode, Json, Link, Profile, Threads, IgnoreEos, Thresholds, ApiKeyFile, Ca, ClientCert, ClientKey, RoundTimeout, Retries, DegradedAfter];
    }

    /// <summary>The client options the connection flags give (shared by generate and serve).</summary>
    internal static EdgeClientOptions ClientOptions(ParseResult parse, GenerateOptions o, GenerationMode generationMode)
    {
        var servers = ParseServers(parse.GetValue(o.Server), generationMode);
        var link = parse.GetValue(o.Link) is { } linkSpec ? ParseWith("--link", () => LinkProfile.Parse(linkSpec)) : null;
        var options = new EdgeClientOptions
        {
            Server = servers.FirstOrDefault(),
            FallbackServers = [.. servers.Skip(1)],
            Balancing = parse.GetValue(o.Balance) switch
            {
                "failover" => VerifierBalancing.Failover,
                "session-hash" when servers.Count == 1 => VerifierBalancing.SessionHash,
                "session-hash" => throw new UsageException("--balance session-hash takes one --server whose host name resolves to the verifiers, not a list"),
                var other => throw new UsageException($"--balance: '{other}' is not a balancing policy: use failover or session-hash"),
            },
            ApiKey = ReadApiKey(parse.GetValue(o.ApiKeyFile)),
            TrustedCaPath = ExistingFile(parse.GetValue(o.Ca), "--ca"),
            ClientCertificatePath = ExistingFile(parse.GetValue(o.ClientCert), "--client-cert"),
            ClientKeyPath = ExistingFile(parse.GetValue(o.ClientKey), "--client-key"),
            RoundTimeout = TimeSpan.FromSeconds(parse.GetValue(o.RoundTimeout) > 0 ? parse.GetValue(o.RoundTimeout) : throw new UsageException("--round-timeout must be positive")),
            MaxRetries = parse.GetValue(o.Retries) >= 0 ? parse.GetValue(o.Retries) : throw new UsageException("--retries must be 0 or more"),
            DegradedAfter = parse.GetValue(o.DegradedAfter) is { } d ? TimeSpan.FromSeconds(d > 0 ? d : throw new UsageException("--degraded-after must be positive")) : null,
            DraftModel = parse.GetValue(o.Draft),
            IntraOpThreads = parse.GetValue(o.Threads),
            Profile = parse.GetValue(o.Profile) is { } profileName ? ParseWith("--profile", () => ComputeProfiles.Resolve(profileName)) : ComputeProfile.Real,
        };
        return link is not null && options.Balancing == VerifierBalancing.SessionHash
            ? throw new UsageException("--link emulates the link to one verifier address and cannot sit under --balance session-hash")
            : Link.EmulatedLink.Apply(options, link);
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

    private static string? ReadApiKey(string? file) =>
        file is not null ? ReadKeyFile(file, "--api-key-file")
            : Environment.GetEnvironmentVariable(ApiKeyEnvironmentVariable) is { Length: > 0 } fromEnvironment ? fromEnvironment.Trim() : null;

    /// <summary>A key from the file <paramref name="flag"/> names: trimmed, and refused naming the flag when missing or empty.</summary>
    internal static string ReadKeyFile(string file, string flag) =>
        File.Exists(file)
            ? File.ReadAllText(file).Trim() is { Length: > 0 } key ? key : throw new UsageException($"{flag}: '{Path.GetFullPath(file)}' is empty")
            : throw new UsageException($"{flag}: '{Path.GetFullPath(file)}' not found");

    private static string? ExistingFile(string? path, string option) =>
        path is null || File.Exists(path) ? path : throw new UsageException($"{option}: '{Path.GetFullPath(path)}' not found");

    private static GenerationRequest WithPrompt(GenerationRequest request, string? text, string? file, string? ids, string? chat, string? system)
    {
        var given = new[] { text, file, ids, chat }.Count(v => v is not null);
        if (given != 1)
        {
            throw new UsageException("give exactly one of --prompt, --prompt-file, --prompt-ids and --chat");
        }

        if (system is not null && chat is null)
        {
            throw new UsageException("--system goes with --chat");
        }

        if (chat is not null)
        {
            List<ChatMessage> messages = system is null ? [] : [new ChatMessage(ChatMessage.System, system)];
            messages.Add(new ChatMessage(ChatMessage.User, chat));
            return request with { Messages = messages };
        }

        if (file is not null)
        {
            return File.Exists(file)
                ? request with { PromptText = File.ReadAllText(file) }
                : throw new UsageException($"--prompt-file: '{Path.GetFullPath(file)}' not found");
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
