using SpecEdge.Shared.Models.Checkpoints;

namespace SpecEdge.Shared.Tests.Models;

/// <summary>The SIMD element conversions give the same bits as the element-by-element ones, tails and special values included.</summary>
public sealed class TensorDTypeTests
{
    public static TheoryData<TensorDType, int> Cases()
    {
        var data = new TheoryData<TensorDType, int>();
        foreach (var dtype in new[] { TensorDType.Float32, TensorDType.Float16, TensorDType.BFloat16 })
        {
            foreach (var length in new[] { 0, 1, 7, 33, 1000, 4099 })
            {
                data.Add(dtype, length);
            }
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void FromFloat32_MatchesScalar(TensorDType dtype, int length)
    {
        var values = Values(length, seed: length);
        var simd = new byte[length * dtype.SizeOf()];
        var scalar = new byte[length * dtype.SizeOf()];

        var simdOverflow = TensorDTypes.FromFloat32(dtype, values, simd);
        var scalarOverflow = TensorDTypes.FromFloat32Scalar(dtype, values, scalar);

        Assert.Equal(scalar, simd);
        Assert.Equal(scalarOverflow, simdOverflow);
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void ToFloat32_MatchesScalar(TensorDType dtype, int length)
    {
        var raw = new byte[length * dtype.SizeOf()];
        new Random(length + 1).NextBytes(raw);
        var simd = new float[length];
        var scalar = new float[length];

        TensorDTypes.ToFloat32(dtype, raw, simd);
        TensorDTypes.ToFloat32Scalar(dtype, raw, scalar);

        Assert.Equal(scalar.Select(BitConverter.SingleToInt32Bits), simd.Select(BitConverter.SingleToInt32Bits));
    }

    [Fact]
    public void FromFloat32_Float16Overflow_NamesTheFirstValue()
    {
        float[] values = [1f, 65504f, 65519f, 70000f, 1e9f];
        var destination = new byte[values.Length * 2];

        Assert.Equal(3, TensorDTypes.FromFloat32(TensorDType.Float16, values, destination));
    }

    /// <summary>Random normals of many scales, with NaN, ±infinity, ±0, subnormals, float16's edge and bfloat16 rounding ties.</summary>
    private static float[] Values(int length, int seed)
    {
        var random = new Random(seed);
        float[] specials = [float.NaN, float.PositiveInfinity, float.NegativeInfinity, 0f, -0f, 1e-40f, -3e-45f, 65504f, 65520f, 1.00390625f, 1.01171875f, BitConverter.Int32BitsToSingle(0x7FC00001)];
        var values = new float[length];
        for (var i = 0; i < length; i++)
        {
            values[i] = i % 5 == 4 ? specials[random.Next(specials.Length)] : (float)((random.NextDouble() - 0.5) * Math.Pow(10, random.Next(-8, 8)));
        }

        return values;
    }
}
