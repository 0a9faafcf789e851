namespace SpecEdge.TestUtilities;

/// <summary>Rounding of float32 values to narrower types, written independently of the converter's code.</summary>
public static class Precision
{
    public static float[] RoundToHalf(float[] values) => values.Select(v => (float)(Half)v).ToArray();

    /// <summary>bfloat16 keeps the top 16 bits of a float32; round half to even on the dropped 16 bits.</summary>
    public static float[] RoundToBFloat16(float[] values) => values.Select(v =>
    {
        var bits = BitConverter.SingleToUInt32Bits(v);
        var lower = bits & 0xFFFF;
        var upper = bits >> 16;
        if (lower > 0x8000 || (lower == 0x8000 && (upper & 1) == 1))
        {
            upper++;
        }

        return BitConverter.UInt32BitsToSingle(upper << 16);
    }).ToArray();
}
