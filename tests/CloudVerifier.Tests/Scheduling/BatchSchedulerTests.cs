using Grpc.Net.Client;
using Microsoft.Extensions.DependencyInjection;
using SpecEdge.CloudVerifier.Hosting;
using SpecEdge.CloudVerifier.Scheduling;
using SpecEdge.CloudVerifier.Sessions;
using SpecEdge.Protocol.V1;
using SpecEdge.Shared.Runtime;
using SpecEdge.Shared.Tokenization;
using SpecEdge.TestUtilities;

namespace SpecEdge.CloudVerifier.Tests.Scheduling;

/// <summary>The batch scheduler over real Kestrel: sessions that leave mid-batch, and a long prompt among short rounds.</summary>
public sealed class BatchSchedulerTests : IDisposable
{
    private readonly TempDirectory _temp = new("batch-scheduler");

    public void Dispose() => _temp.Dispose();

    [Fact]
    public async Task Generate_ClientsDisconnectMidBatch_SlotsFreedAndOthersExact()
    {
        var pair = TestModels.WritePair(_temp.Path);
        var (app, address) = await VerifierHost.StartLoopbackAsync(pair.TargetDir, o => o.IntraOpThreads = 1).DefaultTimeout();
        await using var _ = app;
        var scheduler = app.Services.GetRequiredService<BatchScheduler>();
        var registry = app.Services.GetRequiredService<SessionRegistry>();
        using var channel = GrpcChannel.ForAddress(address);
        var client = new Verifier.VerifierClient(channel);
        int[] prompt = [256, 72, 105];
        List<int> expected;
        using (var model = TestModels.Load(pair.TargetDir))
        {
            expected = [.. TargetOnlyDecoding.Greedy(model, [.. prompt.Select(t => new TokenId(t))], 40, stopAtEos: false).Select(t => t.Value)];
        }

        // Six calls leave after a few tokens (their streams are cancelled while their rows sit in batches); two stay.
        var leaving = Enumerable.Range(0, 6).Select(async i =>
        {
            using var cancel = new CancellationTokenSource();
            using var call = client.Generate(new GenerateRequest { PromptIds = { prompt }, MaxNewTokens = 200, Sampling = new Sampling() }, cancellationToken: cancel.Token);
            for (var read = 0; read < 2 + i; read++)
            {
                Assert.True(await call.ResponseStream.MoveNext(CancellationToken.None).DefaultTimeout());
            }

            await cancel.CancelAsync();
        }).ToList();
        var staying = Enumerable.Range(0, 2).Select(async _ =>
        {
            using var call = client.Generate(new GenerateRequest { PromptIds = { prompt }, MaxNewTokens = 40, Sampling = new Sampling() });
            var ids = new List<int>();
            while (await call.ResponseStream.MoveNext(CancellationToken.None).DefaultTimeout())
            {
                ids.Add(call.ResponseStream.Current.TokenId);
            }

            return ids;
        }).ToList();

        await Task.WhenAll(leaving).DefaultTimeout();
        foreach (var ids in await Task.WhenAll(staying).DefaultTimeout())
        {
            Assert.Equal(expected, ids);
        }

        // Every slot comes back once the calls are gone: none is kept by a session that left mid-batch.
        for (var wait = 0; wait < 200 && (scheduler.OpenSlots > 0 || registry.Count > 0); wait++)
        {
            await Task.Delay(25);
        }

        Assert.Equal(0, scheduler.OpenSlots);
        Assert.Equal(0, registry.Count);
        Assert.True(scheduler.Counters.SharedSteps > 0, "the calls never shared a step");
    }
}
