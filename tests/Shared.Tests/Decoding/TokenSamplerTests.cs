using SpecEdge.Shared.Decoding;
using SpecEdge.Shared.Tokenization;

namespace SpecEdge.Shared.Tests.Decoding;

public sealed class TokenSamplerTests
{
    [Fact]
    public void ArgMax_Tie_LowestIdWins()
    {
        Assert.Equal(new TokenId(1), TokenSampler.ArgMax([0f, 3f, 3f, -1f]));
    }

    [Fact]
    public void Distribution_Greedy_IsOneHotAtArgMax()
    {
        var sampler = new TokenSampler(4);
        var p = new float[4];

        sampler.Distribution([0.1f, 2f, 1f, 0f], SamplingConfig.Greedy, p);

        Assert.Equal([0f, 1f, 0f, 0f], p);
    }

    [Fact]
    public void Distribution_Temperature_IsSoftmaxOfScaledLogits()
    {
        var sampler = new TokenSampler(3);
        var p = new float[3];
        float[] logits = [1f, 2f, 4f];

        sampler.Distribution(logits, new SamplingConfig { Temperature = 2f }, p);

        var e = logits.Select(l => Math.Exp(l / 2.0)).ToArray();
        for (var i = 0; i < 3; i++)
        {
            Assert.Equal(e[i] / e.Sum(), p[i], 1e-6);
        }
    }

    [Fact]
    public void Distribution_TopK_KeepsOnlyTheKLargest()
    {
        var sampler = new TokenSampler(6);
        var p = new float[6];

        sampler.Distribution([5f, 1f, 4f, 0f, 3f, 2f], new SamplingConfig { Temperature = 1f, TopK = 3 }, p);

        Assert.True(p[0] > 0 && p[2] > 0 && p[4] > 0);
        Assert.Equal(0f, p[1]);
        Assert.Equal(0f, p[3]);
        Assert.Equal(0f, p[5]);
        Assert.Equal(1.0, p.Sum(), 1e-6);
    }

    [Fact]
    public void Distribution_TopKWithTiesAtTheCut_KeepsExactlyKLowestIdsFirst()
    {
        var sampler = new TokenSampler(5);
        var p = new float[5];

        sampler.Distribution([1f, 2f, 2f, 2f, 0f], new SamplingConfig { Temperature = 1f, TopK = 2 }, p);

        Assert.Equal(2, p.Count(v => v > 0));
        Assert.True(p[1] > 0 && p[2] > 0);
    }

    [Fact]
    public void Distribution_TopP_KeepsSmallestNucleusReachingP()
    {
        var sampler = new TokenSampler(4);
        var p = new float[4];
        // Probabilities proportional to 0.5, 0.3, 0.15, 0.05.
        float[] logits = [MathF.Log(0.5f), MathF.Log(0.3f), MathF.Log(0.15f), MathF.Log(0.05f)];

        sampler.Distribution(logits, new SamplingConfig { Temperature = 1f, TopP = 0.75f }, p);

        Assert.Equal(0.5 / 0.8, p[0], 1e-5);
        Assert.Equal(0.3 / 0.8, p[1], 1e-5);
        Assert.Equal(0f, p[2]);
        Assert.Equal(0f, p[3]);
    }

    [Fact]
    public void Sample_InverseCdf_PicksTheBucketHoldingU()
    {
        float[] p = [0.2f, 0f, 0.5f, 0.3f];

        Assert.Equal(new TokenId(0), TokenSampler.Sample(p, 0.1));
        Assert.Equal(new TokenId(2), TokenSampler.Sample(p, 0.2));
        Assert.Equal(new TokenId(2), TokenSampler.Sample(p, 0.69));
        Assert.Equal(new TokenId(3), TokenSampler.Sample(p, 0.71));
        Assert.Equal(new TokenId(3), TokenSampler.Sample(p, 0.9999999));
    }

    [Theory]
    [InlineData(-0.1f, 0, 1f, "temperature")]
    [InlineData(101f, 0, 1f, "temperature")]
    [InlineData(float.NaN, 0, 1f, "temperature")]
    [InlineData(1f, -1, 1f, "top_k")]
    [InlineData(1f, 0, 0f, "top_p")]
    [InlineData(1f, 0, 1.5f, "top_p")]
    public void Validate_OutOfRange_NamesTheValue(float temperature, int topK, float topP, string name)
    {
        var problem = new SamplingConfig { Temperature = temperature, TopK = topK, TopP = topP }.Validate();

        Assert.NotNull(problem);
        Assert.StartsWith(name, problem);
    }

    [Fact]
    public void Uniform_SameInputs_SameNumberAndPurposesIndependent()
    {
        var a = SamplingRandom.Uniform(7, 100, RandomPurpose.Accept);

        Assert.Equal(a, SamplingRandom.Uniform(7, 100, RandomPurpose.Accept));
        Assert.NotEqual(a, SamplingRandom.Uniform(7, 100, RandomPurpose.Residual));
        Assert.NotEqual(a, SamplingRandom.Uniform(7, 101, RandomPurpose.Accept));
        Assert.NotEqual(a, SamplingRandom.Uniform(8, 100, RandomPurpose.Accept));
    }
}
