namespace SpecEdge.Shared.Models.Onnx;

/// <summary>Weight-only quantization of a model's projections.</summary>
public enum WeightQuantization
{
    /// <summary>Projections keep the storage type (float32 or float16).</summary>
    None,

    /// <summary>8-bit blocks (ONNX Runtime's MatMulNBits with bits = 8).</summary>
    Int8,

    /// <summary>4-bit blocks (ONNX Runtime's MatMulNBits with bits = 4).</summary>
    Int4,

    /// <summary>
    /// The standard QDQ form: 8-bit weights per output channel, a DequantizeLinear before a float32 MatMul (kept to
    /// measure against MatMulNBits).
    /// </summary>
    Int8Qdq,
}

/// <summary>Names and bit widths of <see cref="WeightQuantization"/> values.</summary>
public static class WeightQuantizations
{
    /// <summary>The bits per weight; 0 for <see cref="WeightQuantization.None"/>.</summary>
    public static int Bits(this WeightQuantization quantization) => quantization switch
    {
        WeightQuantization.Int8 or WeightQuantization.Int8Qdq => 8,
        WeightQuantization.Int4 => 4,
        _ => 0,
    };

    /// <summary>The command-line and manifest name: none, int8, int4 or int8-qdq.</summary>
    public static string CliName(this WeightQuantization quantization) => quantization == WeightQuantization.Int8Qdq ? "int8-qdq" : quantization.ToString().ToLowerInvariant();

    /// <summary>Parses a command-line name (none, int8, int4, int8-qdq); null when unknown.</summary>
    public static WeightQuantization? ParseCli(string? name) => name switch
    {
        "none" => WeightQuantization.None,
        "int8" => WeightQuantization.Int8,
        "int4" => WeightQuantization.Int4,
        "int8-qdq" => WeightQuantization.Int8Qdq,
        _ => null,
    };
}

/// <summary>
/// A [rows, columns] weight (Hugging Face's [out, in] layout) quantized in blocks along its columns, as ONNX Runtime's
/// MatMulNBits reads it: <see cref="Packed"/> is [rows, blocks, block bytes] with two 4-bit values a byte (the lower
/// column in the low nibble) or one 8-bit value; <see cref="Scales"/> is [rows × blocks]; <see cref="ZeroPoints"/> is
/// [rows, ⌈blocks × bits / 8⌉] packed the same way. A weight is (q − zero point) × scale.
/// </summary>
internal sealed record QuantizedMatrix(byte[] Packed, float[] Scales, byte[] ZeroPoints);

/// <summary>Asymmetric min/max block quantization (every block's range includes zero, so zero stays exact).</summary>
internal static class BlockQuantizer
{
    /// <summary>The block size: 32 columns, the size ONNX Runtime's quantization tool and its kernels favour.</summary>
    public const int DefaultBlockSize = 32;

    /// <summary>
    /// The layout of one row of <paramref name="columns"/>: its blocks (the last one padded with the zero point when the
    /// columns do not fill it), the bytes of one block, and the row's zero-point bytes.
    /// </summary>
    public static (int Blocks, int BlockBytes, int ZeroPointBytes) Layout(int columns, int bits, int blockSize = DefaultBlockSize)
    {
        var blocks = (columns + blockSize - 1) / blockSize;
        return (blocks, blockSize * bits / 8, ((blocks * bits) + 7) / 8);
    }

    public static QuantizedMatrix Quantize(ReadOnlySpan<float> weight, int rows, int columns, int bits, int blockSize = DefaultBlockSize)
    {
        if (bits is not (4 or 8))
        {
            throw new ArgumentOutOfRangeException(nameof(bits), bits, "MatMulNBits weights are 4 or 8 bits");
        }

        if (weight.Length != (long)rows * columns)
        {
            throw new ArgumentException($"weight holds {weight.Length} values, not {rows} × {columns}", nameof(weight));
        }

        var levels = (1 << bits) - 1;
        var (blocks, blockBytes, zeroBytes) = Layout(columns, bits, blockSize);
        var packed = new byte[(long)rows * blocks * blockBytes];
        var scales = new float[(long)rows * blocks];
        var zeroPoints = new byte[(long)rows * zeroBytes];
        var codes = new byte[blockSize];

        for (var r = 0; r < rows; r++)
        {
            var row = weight.Slice(r * columns, columns);
            for (var b = 0; b < blocks; b++)
            {
                var start = b * blockSize;
                var block = row.Slice(start, Math.Min(blockSize, columns - start));
                float min = 0, max = 0;
                foreach (var w in block)
                {
                    min = Math.Min(min, w);
                    max = Math.Max(max, w);
                }

                var scale = (max - min) / levels;
                var zeroPoint = scale == 0 ? 0 : (int)Math.Clamp(MathF.Round(-min / scale), 0, levels);
                for (var i = 0; i < blockSize; i++)
                {
                    codes[i] = i < block.Length && scale != 0
                        ? (byte)Math.Clamp((int)MathF.Round(block[i] / scale) + zeroPoint, 0, levels)
                        : (byte)zeroPoint;
                }

                scales[((long)r * blocks) + b] = scale == 0 ? 1f : scale;
                var blob = packed.AsSpan((int)((((long)r * blocks) + b) * blockBytes), blockBytes);
                Pack(codes, bits, blob);
                var zeroRow = zeroPoints.AsSpan(r * zeroBytes, zeroBytes);
                if (bits == 8)
                {
                    zeroRow[b] = (byte)zeroPoint;
                }
                else
                {
                    zeroRow[b / 2] |= (byte)(zeroPoint << (4 * (b % 2)));
                }
            }
        }

        return new QuantizedMatrix(packed, scales, zeroPoints);
    }

    private static void Pack(ReadOnlySpan<byte> codes, int bits, Span<byte> destination)
    {
        if (bits == 8)
        {
            codes.CopyTo(destination);
            return;
        }

        for (var i = 0; i < destination.Length; i++)
        {
            destination[i] = (byte)(codes[2 * i] | (codes[(2 * i) + 1] << 4));
        }
    }
}
