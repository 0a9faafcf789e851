using System.CommandLine;
using SpecEdge.EdgeClient.Client;
using SpecEdge.EdgeClient.Serving;

namespace SpecEdge.EdgeClient.Cli;

/// <summary><c>serve</c>: an OpenAI-compatible HTTP API on the edge, generating through the verifier.</summary>
internal static class ServeCommand
{
    public static Command Create()
    {
        var o = new GenerateCommand.GenerateOptions();
        var listen = new Option<string>("--listen") { Description = "Where the API listens (loopback by default; give a host address to serve other machines).", DefaultValueFactory = _ => "http://127.0.0.1:8080" };
        var keyFile = new Option<string?>("--serve-key-file") { Description = "A file holding the bearer key every API request must carry (default: none, any caller on the listen address)." };
        var mode = new Option<string>("--mode") { Description = $"How requests are decoded: one of {GenerationModes.AllNames} (edge excepted).", DefaultValueFactory = _ => "auto" };
        var command = new Command("serve", "Serve an OpenAI-compatible API (/v1/chat/completions, /v1/completions, /v1/models) that generates through the verifier.")
        {
            listen, keyFile, mode,
        };
        foreach (var option in new Option[] { o.Server, o.Balance, o.Otlp, o.Draft, o.ApiKeyFile, o.Ca, o.ClientCert, o.ClientKey, o.RoundTimeout, o.Retries, o.DegradedAfter, o.Threads, o.Link, o.Profile, o.Candidates, o.Leaves })
        {
            command.Options.Add(option);
        }

        command.SetAction(async (parse, cancellationToken) =>
        {
            var stderr = parse.InvocationConfiguration.Error;
            try
            {
                var generationMode = GenerationModes.Parse(parse.GetValue(mode)!) is { } m && m != GenerationMode.Edge
                    ? m
                    : throw new UsageException($"--mode: '{parse.GetValue(mode)}' is not a mode that uses the verifier (use {GenerationModes.AllNames}, not edge)");
                if (!Uri.TryCreate(parse.GetValue(listen), UriKind.Absolute, out var url) || url.Scheme is not ("http" or "https"))
                {
                    throw new UsageException($"--listen: '{parse.GetValue(listen)}' is not a URL such as http://127.0.0.1:8080");
                }

                var key = parse.GetValue(keyFile) is { } path ? GenerateCommand.ReadKeyFile(path, "--serve-key-file") : null;
                var decoding = new SpecEdgeChatOptions { Mode = generationMode, Candidates = GenerateCommand.CandidatesOf(parse, o), Leaves = GenerateCommand.LeavesOf(parse, o) };

                using var export = EdgeTelemetryExport.Start(parse.GetValue(o.Otlp));
                await using var client = await SpecEdgeClient.ConnectAsync(GenerateCommand.ClientOptions(parse, o, generationMode), cancellationToken: cancellationToken);
                await using var app = OpenAiServer.Create(client, url.ToString().TrimEnd('/'), key, decoding);
                await app.StartAsync(cancellationToken);
                stderr.WriteLine($"{GenerateCommand.Program}: serving the OpenAI API for '{client.VerifierDescription?.ModelId}' on {url.ToString().TrimEnd('/')}/v1 ({generationMode.Name()} decoding{(key is null ? ", no key" : ", bearer key required")}); Ctrl+C stops");
                try
                {
                    await Task.Delay(Timeout.Infinite, cancellationToken);
                }
                catch (OperationCanceledException)
                {
                }

                await app.StopAsync(CancellationToken.None);
                return 0;
            }
            catch (Exception ex) when (EdgeCli.IsExpected(ex) || ex is IOException)
            {
                return EdgeCli.Report(stderr, ex, "serve");
            }
        });
        return command;
    }
}
