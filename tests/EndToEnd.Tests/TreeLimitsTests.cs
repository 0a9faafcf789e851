using SpecEdge.EdgeClient.Client;
using SpecEdge.Shared.Decoding;
using SpecEdge.Shared.Tokenization;
using SpecEdge.TestUtilities;

namespace SpecEdge.EndToEnd.Tests;

/// <summary>The byte-vocabulary pair behind a verifier whose sequences stop at 40 tokens and whose rounds take at most 6 leaves.</summary>
public sealed class ShortSequenceVerifier : KestrelVerifier
{
    protected override TestPair CreatePair(string root) => TestModels.WritePair(root, exits: [1, 2]);

    protected override void Configure(SpecEdge.CloudVerifier.Configuration.VerifierOptions options)
    {
        options.Limits.MaxSequenceLength = 40;
        options.Limits.MaxLeaves = 6;
    }
}

/// <summary>
/// Token trees at the edges of what a verifier allows: near its longest sequence the edge cuts a round's leaves so
/// the step fits (the verifier would refuse a round whose drafts and leaves pass it), and with a leaf limit below γ
/// times the width the edge sends at most that many, shallowest first. The output stays the cloud's.
/// </summary>
public sealed class TreeLimitsTests(ShortSequenceVerifier verifier) : IClassFixture<ShortSequenceVerifier>
{
    [Theory]
    [InlineData(GenerationMode.Speculative)]
    [InlineData(GenerationMode.Conditional)]
    public async Task Trees_UpToTheLongestSequence_FinishOnTheContextLikeCloud(GenerationMode mode)
    {
        await using var client = await verifier.ConnectAsync();
        var prompt = new[] { 256, 84, 104, 101, 32, 114, 111, 98 }.Select(t => new TokenId(t)).ToList();

        var cloud = await Run(client, prompt, GenerationMode.Cloud, leaves: 0);
        var tree = await Run(client, prompt, mode, leaves: 3);

        Assert.Equal("context", cloud.FinishReason);
        Assert.Equal(cloud.TokenIds, tree.TokenIds);
        Assert.Equal("context", tree.FinishReason);
        Assert.True(TreeRounds.LeavesTaken(tree) > 0, "no round took a leaf: the rounds may have fallen back to chains");
    }

    private static Task<GenerationReport> Run(SpecEdgeClient client, IReadOnlyList<TokenId> prompt, GenerationMode mode, int leaves) =>
        client.Generate(new GenerationRequest { PromptIds = prompt, Mode = mode, Leaves = leaves, MaxNewTokens = 64, DraftTokens = 4, Sampling = SamplingConfig.Greedy, StopAtEos = false }).RunToEndAsync().DefaultTimeout();
}
