using System.Collections.Concurrent;
using System.Diagnostics;
using SpecEdge.CloudVerifier.Hosting;
using SpecEdge.EdgeClient.Client;
using SpecEdge.Shared.Tokenization;

namespace SpecEdge.Bench.Reliability;

/// <summary>What a load run measured.</summary>
internal sealed record LoadReport(int Clients, double Seconds, int Generations, int Failed, long Tokens, double TokensPerSecond, double RoundP50Ms, double RoundP99Ms, IReadOnlyList<string> Errors);

/// <summary>Many edge clients at once against one verifier for a bounded time: every generation must finish.</summary>
internal static class LoadTest
{
    public static async Task<LoadReport> RunAsync(string targetDir, string draftDir, int clients, TimeSpan duration, int tokens, TextWriter log, CancellationToken cancellationToken)
    {
        var (app, address) = await VerifierHost.StartLoopbackAsync(targetDir, o =>
        {
            o.IntraOpThreads = 1;
            o.DefaultExitThreshold = 0;
            o.Limits.MaxSessions = clients + 8;
        }, cancellationToken: cancellationToken);
        await using var _ = app;
        var edges = new List<SpecEdgeClient>();
        for (var i = 0; i < clients; i++)
        {
            edges.Add(await SpecEdgeClient.ConnectAsync(new EdgeClientOptions { Server = address, DraftModel = draftDir, IntraOpThreads = 1, RoundTimeout = TimeSpan.FromSeconds(60) }, cancellationToken: cancellationToken));
        }

        var rounds = new ConcurrentBag<double>();
        var errors = new ConcurrentBag<string>();
        long tokenCount = 0;
        int generations = 0, failed = 0;
        var watch = Stopwatch.StartNew();
        var modes = new[] { GenerationMode.Speculative, GenerationMode.Preemptive, GenerationMode.Conditional, GenerationMode.Cloud };
        await Task.WhenAll(edges.Select((edge, index) => Task.Run(async () =>
        {
            var iteration = 0;
            while (watch.Elapsed < duration && !cancellationToken.IsCancellationRequested)
            {
                var mode = modes[(index + iteration++) % modes.Length];
                try
                {
                    var report = await edge.Generate(new GenerationRequest
                    {
                        PromptIds = [new TokenId(256), new TokenId(65 + (index % 26)), new TokenId(32)],
                        Mode = mode,
                        MaxNewTokens = tokens,
                        StopAtEos = false,
                        ClientLabel = $"load client {index}",
                    }).RunToEndAsync(cancellationToken);
                    Interlocked.Add(ref tokenCount, report.NewTokens);
                    foreach (var round in report.PerRound)
                    {
                        rounds.Add(round.WallMs);
                    }
                }
                catch (Exception ex) when (ex is not OperationCanceledException)
                {
                    Interlocked.Increment(ref failed);
                    errors.Add($"client {index} {mode}: {ex.Message.Split('\n')[0]}");
                }

                Interlocked.Increment(ref generations);
            }
        }, cancellationToken)));
        var seconds = watch.Elapsed.TotalSeconds;
        foreach (var edge in edges)
        {
            await edge.DisposeAsync();
        }

        var sorted = rounds.ToList();
        log.WriteLine($"[load] {clients} clients, {generations} generations in {seconds:F1} s");
        return new LoadReport(clients, seconds, generations, failed, tokenCount, tokenCount / seconds, Stats.Median(sorted), Stats.Percentile(sorted, 0.99), [.. errors]);
    }
}
