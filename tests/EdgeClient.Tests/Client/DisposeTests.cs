using SpecEdge.EdgeClient.Client;
using SpecEdge.Shared.Timing;
using SpecEdge.Shared.Tokenization;
using SpecEdge.TestUtilities;

namespace SpecEdge.EdgeClient.Tests.Client;

/// <summary>A client disposed from another thread while it generates ends that generation cleanly.</summary>
public sealed class DisposeTests : IDisposable
{
    private readonly TempDirectory _temp = new("edge-dispose");

    public void Dispose() => _temp.Dispose();

    /// <summary>
    /// Disposal waits for the draft run in progress and later runs refuse with <see cref="ObjectDisposedException"/>:
    /// freeing the native context under a run would take the whole process down instead.
    /// </summary>
    [Fact]
    public async Task Dispose_WhileGenerating_GenerationEndsWithObjectDisposed()
    {
        var pair = TestModels.WritePair(_temp.Path);
        for (var i = 0; i < 10; i++)
        {
            // 5 ms a token: 200 tokens outlast the dispose below by far, so it lands mid-generation.
            var client = await SpecEdgeClient.ConnectAsync(new EdgeClientOptions
            {
                DraftModel = pair.DraftDir,
                IntraOpThreads = 1,
                Profile = new ComputeProfile { Name = "5 ms a token", DraftMsPerToken = 5 },
            }).DefaultTimeout();
            var generation = client.Generate(new GenerationRequest { PromptIds = [new TokenId(256)], Mode = GenerationMode.Edge, MaxNewTokens = 200, StopAtEos = false });
            var produced = 0;
            var underway = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var consumer = Task.Run(async () =>
            {
                await foreach (var _ in generation)
                {
                    if (Interlocked.Increment(ref produced) == 5 + i)
                    {
                        underway.SetResult();
                    }
                }
            });
            await underway.Task.DefaultTimeout();

            var atDispose = Volatile.Read(ref produced);
            await client.DisposeAsync();
            var ended = await Record.ExceptionAsync(() => consumer.DefaultTimeout());

            Assert.True(ended is ObjectDisposedException, $"iteration {i}: {atDispose} tokens at dispose, {Volatile.Read(ref produced)} in all, ended with {ended?.ToString() ?? "no error"}");
            Assert.InRange(Volatile.Read(ref produced), 5 + i, 199);
        }
    }
}
