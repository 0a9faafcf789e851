using Microsoft.Extensions.DependencyInjection;
using System.Collections.Concurrent;
using System.Diagnostics;
using Grpc.Core;
using Microsoft.Extensions.Logging;
using Grpc.Net.Client;
using SpecEdge.CloudVerifier.Hosting;
using SpecEdge.EdgeClient.Client;
using SpecEdge.Protocol.V1;
using SpecEdge.Shared.Runtime;
using SpecEdge.Shared.Tokenization;

namespace SpecEdge.Bench.Reliability;

/// <summary>What a fuzzing run found.</summary>
internal sealed record FuzzReport(int Sequences, double Seconds, IReadOnlyDictionary<string, int> Outcomes, int Undefined, int ValidRefused, int HealthyGenerations, int HealthyIdentical, IReadOnlyList<string> Problems, long SharedSteps = 0);

/// <summary>
/// Protocol fuzzing: generated and mutated Decode message sequences against a verifier on Kestrel. A sequence starts
/// from a valid session (Open, rounds drafted from the target's own greedy output, Close) and is mutated: messages
/// dropped, duplicated, swapped, or fields set to out-of-range, inconsistent or random values. Every sequence must end
/// with a defined status (OK for an unmutated one; InvalidArgument, FailedPrecondition or ResourceExhausted otherwise),
/// never Internal or Unknown, and a healthy session running beside them must keep producing the exact output.
/// </summary>
internal static class ProtocolFuzzer
{
    private static readonly HashSet<StatusCode> Defined = [StatusCode.OK, StatusCode.InvalidArgument, StatusCode.FailedPrecondition, StatusCode.ResourceExhausted];

    public static async Task<FuzzReport> RunAsync(string targetDir, string draftDir, int sequences, int seed, int parallel, TextWriter log, CancellationToken cancellationToken)
    {
        int vocab;
        List<int> greedy;
        int[] prompt = [256, 70, 117, 122, 122];
        using (var model = LanguageModel.Load(targetDir, new RuntimeOptions { IntraOpThreads = 1 }))
        {
            vocab = model.VocabSize;
            greedy = TargetOnlyDecoding.Greedy(model, [.. prompt.Select(t => new TokenId(t))], 24).Select(t => t.Value).ToList();
        }

        var (app, address) = await VerifierHost.StartLoopbackAsync(
            targetDir,
            o =>
            {
                o.IntraOpThreads = 1;
                o.Limits.MaxDraftTokens = 8;
                o.Limits.MaxPromptTokens = 64;
                o.Limits.MaxNewTokens = 256;
                o.Limits.MaxSessions = parallel + 8;
                o.Limits.IdleTimeoutSeconds = 5;
            },
            builder => builder.Logging.AddFilter((_, level) => level >= LogLevel.Error),
            cancellationToken);
        await using var _ = app;
        // The healthy session beside the fuzzer: full generations, checked against the target's greedy output.
        using var stopHealthy = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        int healthy = 0, healthyIdentical = 0;
        var problems = new ConcurrentBag<string>();
        var healthyTask = Task.Run(async () =>
        {
            await using var edge = await SpecEdgeClient.ConnectAsync(new EdgeClientOptions { Server = address, DraftModel = draftDir, IntraOpThreads = 1 });
            while (!stopHealthy.IsCancellationRequested)
            {
                var report = await edge.Generate(new GenerationRequest { PromptIds = [.. prompt.Select(t => new TokenId(t))], MaxNewTokens = greedy.Count, StopAtEos = false, Mode = GenerationMode.Conditional }).RunToEndAsync(CancellationToken.None);
                Interlocked.Increment(ref healthy);
                if (report.TokenIds.SequenceEqual(greedy))
                {
                    Interlocked.Increment(ref healthyIdentical);
                }
                else
                {
                    problems.Add("the healthy session's output differed from the target's");
                }
            }
        }, CancellationToken.None);

        var outcomes = new ConcurrentDictionary<string, int>();
        int undefined = 0, validRefused = 0, done = 0;
        var watch = Stopwatch.StartNew();
        var throttled = 0;
        await Parallel.ForEachAsync(Enumerable.Range(0, parallel), new ParallelOptions { MaxDegreeOfParallelism = parallel, CancellationToken = cancellationToken }, async (worker, token) =>
        {
            // Each worker keeps its own connection and opens a fresh one every 25 sequences: a misbehaving client's
            // resets are limited per HTTP/2 connection by Kestrel (its rapid-reset protection), which is not what is tested.
            GrpcChannel? channel = null;
            var used = 0;
            try
            {
                for (var index = worker; index < sequences; index += parallel)
                {
                    var random = new Random(HashCode.Combine(seed, index));
                    var (messages, mutated) = Generate(random, prompt, greedy, vocab);
                    StatusCode? status = null;
                    for (var attempt = 0; status is null && attempt < 5; attempt++)
                    {
                        if (channel is null || used++ >= 25)
                        {
                            channel?.Dispose();
                            channel = GrpcChannel.ForAddress(address);
                            used = 0;
                        }

                        status = await PlayAsync(new Verifier.VerifierClient(channel), messages, token);
                        if (status is null)
                        {
                            Interlocked.Increment(ref throttled);
                            channel.Dispose();
                            channel = null;
                        }
                    }

                    var final = status ?? StatusCode.Unavailable;
                    outcomes.AddOrUpdate(final.ToString(), 1, (_, n) => n + 1);
                    if (!Defined.Contains(final))
                    {
                        Interlocked.Increment(ref undefined);
                        problems.Add($"sequence {index} ended with {final}");
                    }
                    else if (!mutated && final != StatusCode.OK)
                    {
                        Interlocked.Increment(ref validRefused);
                        problems.Add($"valid sequence {index} was refused with {final}");
                    }

                    if (Interlocked.Increment(ref done) % 10_000 == 0)
                    {
                        log.WriteLine($"[fuzz] {done} sequences, {watch.Elapsed.TotalSeconds:F0} s");
                    }
                }
            }
            finally
            {
                channel?.Dispose();
            }
        });
        log.WriteLine($"[fuzz] {throttled} sequence(s) were replayed on a new connection after Kestrel's rapid-reset protection closed one");
        await stopHealthy.CancelAsync();
        await healthyTask;
        // The healthy session and the fuzzed ones share the verifier's batched steps: how many steps served several.
        var sharedSteps = app.Services.GetRequiredService<SpecEdge.CloudVerifier.Scheduling.BatchScheduler>().Counters.SharedSteps;
        return new FuzzReport(sequences, watch.Elapsed.TotalSeconds, outcomes, undefined, validRefused, healthy, healthyIdentical, [.. problems.Take(20)], sharedSteps);
    }

    /// <summary>
    /// Plays a sequence: sends each message, then reads to the end; the call's final status, or null when the HTTP/2
    /// connection itself was closed under it (the caller replays the sequence on a new connection).
    /// </summary>
    private static async Task<StatusCode?> PlayAsync(Verifier.VerifierClient client, IReadOnlyList<EdgeMessage> messages, CancellationToken cancellationToken)
    {
        using var call = client.Decode(deadline: DateTime.UtcNow.AddSeconds(20), cancellationToken: cancellationToken);
        var answers = System.Threading.Channels.Channel.CreateUnbounded<VerifierMessage>();
        var reader = Task.Run(async () =>
        {
            try
            {
                while (await call.ResponseStream.MoveNext(cancellationToken))
                {
                    answers.Writer.TryWrite(call.ResponseStream.Current);
                }

                answers.Writer.TryComplete();
            }
            catch (Exception ex)
            {
                answers.Writer.TryComplete(ex);
            }
        }, CancellationToken.None);

        try
        {
            // Like a well-behaved edge, wait for each Open's and each round's answer before the next message (a finished
            // generation answers nothing more); the mutations decide what the messages are.
            var finished = false;
            foreach (var message in messages)
            {
                await call.RequestStream.WriteAsync(message, cancellationToken);
                if (finished || message.KindCase is not (EdgeMessage.KindOneofCase.Open or EdgeMessage.KindOneofCase.Draft))
                {
                    continue;
                }

                while (await answers.Reader.WaitToReadAsync(cancellationToken))
                {
                    var answer = await answers.Reader.ReadAsync(cancellationToken);
                    finished |= answer.Final is { Finished: true };
                    if (answer.KindCase is VerifierMessage.KindOneofCase.Opened or VerifierMessage.KindOneofCase.Final or VerifierMessage.KindOneofCase.Dropped)
                    {
                        break;
                    }
                }
            }

            await call.RequestStream.CompleteAsync();
        }
        catch (Exception ex) when (ex is InvalidOperationException or IOException or HttpRequestException or RpcException or System.Threading.Channels.ChannelClosedException)
        {
            // The verifier ended the call while messages were still going out: its status says why.
        }

        await reader;
        try
        {
            await answers.Reader.Completion;
            return StatusCode.OK;
        }
        catch (RpcException ex) when (IsConnectionClosed(ex))
        {
            return null;
        }
        catch (RpcException ex)
        {
            return ex.StatusCode;
        }
    }

    private static bool IsConnectionClosed(RpcException ex)
    {
        for (Exception? e = ex.Status.DebugException; e is not null; e = e.InnerException)
        {
            if (e is HttpProtocolException or HttpRequestException)
            {
                return true;
            }
        }

        return ex.StatusCode == StatusCode.Unavailable;
    }

    /// <summary>A valid session (Open, rounds of the target's own greedy tokens, Close), then, usually, mutations.</summary>
    private static (List<EdgeMessage> Messages, bool Mutated) Generate(Random random, int[] prompt, List<int> greedy, int vocab)
    {
        var sampling = random.Next(4) == 0;
        var open = new Open { MaxNewTokens = 16, Sampling = sampling ? new Sampling { Temperature = 1f, TopP = 1f, Seed = (ulong)random.Next() } : new Sampling(), EarlyVerdicts = random.Next(2) == 0 };
        open.PromptIds.AddRange(prompt);
        var messages = new List<EdgeMessage> { new() { Open = open } };
        if (!sampling)
        {
            // Greedy: drafts taken from the target's own output always stand, so the rounds are predictable.
            var committed = 0;
            uint round = 1;
            while (committed < 12)
            {
                var gamma = random.Next(1, 5);
                var draft = new Draft { Round = round++, BaseLength = (uint)(prompt.Length + committed) };
                draft.Ids.AddRange(greedy.Skip(committed).Take(gamma));
                if (random.Next(3) == 0)
                {
                    // A token tree: leaves beside the (always standing) drafts, so the output does not change.
                    for (var depth = 0; depth < draft.Ids.Count; depth++)
                    {
                        draft.Leaves.Add(new Leaf { Depth = (uint)depth, Id = random.Next(vocab) });
                    }
                }

                messages.Add(new EdgeMessage { Draft = draft });
                committed += draft.Ids.Count + 1;
            }
        }

        if (random.Next(4) != 0)
        {
            messages.Add(new EdgeMessage { Close = new Close() });
        }

        if (random.Next(10) == 0)
        {
            return (messages, false);
        }

        var mutations = random.Next(1, 4);
        for (var m = 0; m < mutations; m++)
        {
            Mutate(random, messages, vocab);
        }

        return (messages, true);
    }

    private static void Mutate(Random random, List<EdgeMessage> messages, int vocab)
    {
        if (messages.Count == 0)
        {
            messages.Add(new EdgeMessage());
            return;
        }

        var i = random.Next(messages.Count);
        var message = messages[i];
        switch (random.Next(16))
        {
            case 0:
                messages.RemoveAt(i);
                break;
            case 1:
                messages.Insert(i, message.Clone());
                break;
            case 2 when messages.Count > 1:
                var j = random.Next(messages.Count);
                (messages[i], messages[j]) = (messages[j], messages[i]);
                break;
            case 3:
                messages.Insert(i, new EdgeMessage());
                break;
            case 4 when message.Open is { } open:
                open.PromptIds.Add(random.Next(2) == 0 ? vocab + random.Next(1000) : -random.Next(1, 100));
                break;
            case 5 when message.Open is { } open:
                open.MaxNewTokens = random.Next(-5, 100_000);
                break;
            case 6 when message.Open is { } open:
                open.Sampling = new Sampling { Temperature = (float)(random.NextDouble() * 300 - 100), TopK = random.Next(-5, 50), TopP = (float)(random.NextDouble() * 3 - 1) };
                break;
            case 7 when message.Open is { } open:
                open.DraftVocabSize = random.Next(1, 100_000);
                open.ExitThresholds.Add((float)(random.NextDouble() * 4 - 2));
                break;
            case 8 when message.Open is { } open:
                open.PromptIds.Clear();
                if (random.Next(2) == 0)
                {
                    open.PromptIds.AddRange(Enumerable.Repeat(1, random.Next(60, 200)));
                }

                break;
            case 9 when message.Draft is { } draft:
                draft.Round = (uint)random.Next(0, 6);
                break;
            case 10 when message.Draft is { } draft:
                draft.BaseLength = (uint)random.Next(0, 40);
                break;
            case 11 when message.Draft is { } draft:
                draft.Ids.Add(random.Next(2) == 0 ? vocab + random.Next(10) : random.Next(vocab));
                if (random.Next(3) == 0)
                {
                    draft.Ids.AddRange(Enumerable.Range(0, random.Next(8, 40)).Select(_ => random.Next(vocab)));
                }

                break;
            case 12 when message.Draft is { } draft:
                draft.Distributions.Add(new DraftDistribution { Ids = { random.Next(-3, vocab + 3), random.Next(vocab) }, Probabilities = { (float)random.NextDouble(), (float)(random.NextDouble() * 2 - 0.5) } });
                break;
            case 13 when message.Draft is { } draft:
                draft.Condition = new Condition { Round = (uint)random.Next(0, 6), Accepted = (uint)random.Next(0, 10), NextId = random.Next(-2, vocab + 2) };
                break;
            case 14 when message.Draft is { } draft:
                draft.Leaves.Add(new Leaf { Depth = (uint)random.Next(0, 12), Id = random.Next(-3, vocab + 3) });
                if (random.Next(3) == 0)
                {
                    draft.Leaves.AddRange(Enumerable.Range(0, random.Next(20, 60)).Select(_ => new Leaf { Depth = 0, Id = random.Next(vocab) }));
                }

                break;
            case 15 when message.Draft is { } draft:
                draft.Condition = new Condition { Round = (uint)random.Next(0, 6), Accepted = (uint)random.Next(0, 10), NextId = random.Next(vocab), BranchId = random.Next(-2, vocab + 2) };
                break;
            default:
                messages.Insert(random.Next(messages.Count + 1), new EdgeMessage { Open = messages.FirstOrDefault(m => m.Open is not null)?.Open?.Clone() ?? new Open() });
                break;
        }
    }
}
