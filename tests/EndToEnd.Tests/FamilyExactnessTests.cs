using SpecEdge.CloudVerifier.Hosting;
using SpecEdge.EdgeClient.Client;
using SpecEdge.Shared.Decoding;
using SpecEdge.Shared.Models.Checkpoints;
using SpecEdge.Shared.Models.Conversion;
using SpecEdge.Shared.Tokenization;
using SpecEdge.TestUtilities;

namespace SpecEdge.EndToEnd.Tests;

/// <summary>
/// Every supported model family, and a target converted with float16 compute, decode through a real verifier: the
/// speculative modes' greedy output is the cloud output, token for token, with chains and with token trees (on the
/// unbatched verifiers, which take no leaves, the edge falls back to chains).
/// </summary>
public sealed class FamilyExactnessTests : IDisposable
{
    private readonly TempDirectory _temp = new("families");

    /// <summary>The families, and float16 compute; "-unbatched": batching off, so sessions run the shared-buffer graphs.</summary>
    public static TheoryData<string> Families() => ["llama3-rope", "qwen2", "mistral", "phi3", "f16-compute", "f16-compute-unbatched", "llama-unbatched"];

    [Theory]
    [MemberData(nameof(Families))]
    public async Task Family_SpeculativeOutput_IdenticalToCloud(string family)
    {
        var target = TestModels.PairTarget(seed: 17) with { HeadDim = 16 };
        var options = new ConversionOptions { Exits = [1] };
        (target, options) = family switch
        {
            "llama3-rope" => (target with { RopeLlama3 = new Llama3RopeScaling(8, 1, 4, 64) }, options),
            "qwen2" => (target with { Arch = "qwen2", Tied = true, RopeTheta = 1_000_000 }, options),
            "mistral" => (target with { Arch = "mistral", SlidingWindow = 128 }, options),
            "phi3" => (target with { Arch = "phi3", SlidingWindow = 128 }, options),
            "llama-unbatched" => (target, options),
            _ => (target, options with { ComputeDtype = TensorDType.Float16 }),
        };
        var (_, targetDir) = TestModels.WriteAndConvert(_temp.Combine(family, "target"), target, options);
        var (_, draftDir) = TestModels.WriteAndConvert(_temp.Combine(family, "draft"), target with { Layers = 1 });
        var (app, address) = await VerifierHost.StartLoopbackAsync(targetDir, o =>
        {
            o.IntraOpThreads = 1;
            o.DefaultExitThreshold = 0;
            o.Batching.Enabled = !family.EndsWith("-unbatched", StringComparison.Ordinal);
        }).DefaultTimeout();
        await using (app)
        {
            await using var client = await SpecEdgeClient.ConnectAsync(new EdgeClientOptions { Server = address, DraftModel = draftDir, IntraOpThreads = 1 }).DefaultTimeout();
            var random = new Random(family.Length);
            var accepted = 0;
            for (var p = 0; p < 3; p++)
            {
                var prompt = Enumerable.Range(0, 3 + (4 * p)).Select(_ => new TokenId(random.Next(target.Vocab))).ToList();
                var cloud = await Run(client, prompt, GenerationMode.Cloud);
                foreach (var (mode, leaves) in new[] { (GenerationMode.Speculative, 0), (GenerationMode.Conditional, 0), (GenerationMode.Speculative, 2) })
                {
                    var report = await Run(client, prompt, mode, leaves);
                    Assert.Equal(cloud.TokenIds, report.TokenIds);
                    accepted += report.AcceptedTokens;
                }
            }

            Assert.True(accepted > 0, "the draft never agreed with the target: the comparison proves little");
        }
    }

    private static Task<GenerationReport> Run(SpecEdgeClient client, IReadOnlyList<TokenId> prompt, GenerationMode mode, int leaves = 0) =>
        client.Generate(new GenerationRequest { PromptIds = prompt, Mode = mode, Leaves = leaves, MaxNewTokens = 16, DraftTokens = 3, Sampling = SamplingConfig.Greedy, StopAtEos = false }).RunToEndAsync().DefaultTimeout();

    public void Dispose() => _temp.Dispose();
}
