using SpecEdge.CloudVerifier.Hosting;
using SpecEdge.EdgeClient.Client;
using SpecEdge.Shared.Decoding;
using SpecEdge.Shared.Tokenization;
using SpecEdge.TestUtilities;

namespace SpecEdge.EndToEnd.Tests;

/// <summary>
/// Token trees at the edges of what a verifier allows: near its longest sequence the edge cuts a round's leaves so
/// the step fits (the verifier would refuse a round whose drafts and leaves pass it), and with a leaf limit below γ
/// times the width the edge sends at most that many, shallowest first. The output stays the cloud's.
/// </summary>
public sealed class TreeLimitsTests : IDisposable
{
    private readonly TempDirectory _temp = new("tree-limits");

    public void Dispose() => _temp.Dispose();

    [Theory]
    [InlineData(GenerationMode.Speculative)]
    [InlineData(GenerationMode.Conditional)]
    public async Task Trees_UpToTheLongestSequence_FinishOnTheContextLikeCloud(GenerationMode mode)
    {
        var pair = TestModels.WritePair(_temp.Combine(mode.ToString()), exits: [1, 2]);
        var (app, address) = await VerifierHost.StartLoopbackAsync(pair.TargetDir, o =>
        {
            o.IntraOpThreads = 1;
            o.DefaultExitThreshold = 0;
            o.Limits.MaxSequenceLength = 40;
            o.Limits.MaxLeaves = 6;
        }).DefaultTimeout();
        await using (app)
        {
            await using var client = await SpecEdgeClient.ConnectAsync(new EdgeClientOptions { Server = address, DraftModel = pair.DraftDir, IntraOpThreads = 1 }).DefaultTimeout();
            var prompt = new[] { 256, 84, 104, 101, 32, 114, 111, 98 }.Select(t => new TokenId(t)).ToList();

            var cloud = await Run(client, prompt, GenerationMode.Cloud, leaves: 0);
            var tree = await Run(client, prompt, mode, leaves: 3);

            Assert.Equal("context", cloud.FinishReason);
            Assert.Equal(cloud.TokenIds, tree.TokenIds);
            Assert.Equal("context", tree.FinishReason);
        }
    }

    private static Task<GenerationReport> Run(SpecEdgeClient client, IReadOnlyList<TokenId> prompt, GenerationMode mode, int leaves) =>
        client.Generate(new GenerationRequest { PromptIds = prompt, Mode = mode, Leaves = leaves, MaxNewTokens = 64, DraftTokens = 4, Sampling = SamplingConfig.Greedy, StopAtEos = false }).RunToEndAsync().DefaultTimeout();
}
