using System.Buffers.Binary;
using System.Runtime.CompilerServices;

namespace SpecEdge.Shared.Models.Checkpoints;

/// <summary>Floating-point element types SpecEdge reads from checkpoints and writes to ONNX.</summary>
public enum TensorDType
{
    /// <summary>IEEE single precision.</summary>
    Float32,
    /// <summary>IEEE half precision.</summary>
    Float16,
    /// <summary>bfloat16 (the top 16 bits of a float32).</summary>
    BFloat16,
}

/// <summary>Names, sizes and element conversions of <see cref="TensorDType"/>.</summary>
public static class TensorDTypes
{
    /// <summary>Bytes per element.</summary>
    public static int SizeOf(this TensorDType dtype) => dtype == TensorDType.Float32 ? 4 : 2;

    /// <summary>The safetensors header name (<c>F32</c>, <c>F16</c>, <c>BF16</c>).</summary>
    public static string SafetensorsName(this TensorDType dtype) => dtype switch
    {
        TensorDType.Float32 => "F32",
        TensorDType.Float16 => "F16",
        TensorDType.BFloat16 => "BF16",
        _ => throw new ArgumentOutOfRangeException(nameof(dtype)),
    };

    /// <summary>The short CLI name (<c>f32</c>, <c>f16</c>, <c>bf16</c>).</summary>
    public static string CliName(this TensorDType dtype) => dtype switch
    {
        TensorDType.Float32 => "f32",
        TensorDType.Float16 => "f16",
        TensorDType.BFloat16 => "bf16",
        _ => throw new ArgumentOutOfRangeException(nameof(dtype)),
    };

    /// <summary>The type a safetensors header names (<c>F32</c>, <c>F16</c>, <c>BF16</c>), if SpecEdge reads it.</summary>
    public static bool TryParseSafetensors(string name, out TensorDType dtype)
    {
        switch (name)
        {
            case "F32": dtype = TensorDType.Float32; return true;
            case "F16": dtype = TensorDType.Float16; return true;
            case "BF16": dtype = TensorDType.BFloat16; return true;
            default: dtype = default; return false;
        }
    }

    /// <summary>Parses a CLI dtype name; <c>null</c> when unknown.</summary>
    public static TensorDType? ParseCli(string name) => name.ToLowerInvariant() switch
    {
        "f32" or "float32" or "fp32" => TensorDType.Float32,
        "f16" or "float16" or "fp16" => TensorDType.Float16,
        "bf16" or "bfloat16" => TensorDType.BFloat16,
        _ => null,
    };

    /// <summary>Converts little-endian raw elements of <paramref name="source"/> to float32.</summary>
    public static void ToFloat32(TensorDType source, ReadOnlySpan<byte> raw, Span<float> destination)
    {
        switch (source)
        {
            case TensorDType.Float32:
                for (var i = 0; i < destination.Length; i++)
                {
                    destination[i] = BinaryPrimitives.ReadSingleLittleEndian(raw.Slice(i * 4, 4));
                }

                break;
            case TensorDType.Float16:
                for (var i = 0; i < destination.Length; i++)
                {
                    destination[i] = (float)BinaryPrimitives.ReadHalfLittleEndian(raw.Slice(i * 2, 2));
                }

                break;
            case TensorDType.BFloat16:
                for (var i = 0; i < destination.Length; i++)
                {
                    destination[i] = BFloat16ToSingle(BinaryPrimitives.ReadUInt16LittleEndian(raw.Slice(i * 2, 2)));
                }

                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(source));
        }
    }

    /// <summary>Writes float32 values as little-endian elements of <paramref name="target"/>, rounding to nearest even.</summary>
    /// <returns>The index of the first value that does not fit the target type (overflows to infinity), or -1.</returns>
    public static int FromFloat32(TensorDType target, ReadOnlySpan<float> values, Span<byte> destination)
    {
        var overflow = -1;
        switch (target)
        {
            case TensorDType.Float32:
                for (var i = 0; i < values.Length; i++)
                {
                    BinaryPrimitives.WriteSingleLittleEndian(destination.Slice(i * 4, 4), values[i]);
                }

                break;
            case TensorDType.Float16:
                for (var i = 0; i < values.Length; i++)
                {
                    var h = (Half)values[i];
                    if (overflow < 0 && Half.IsInfinity(h) && float.IsFinite(values[i]))
                    {
                        overflow = i;
                    }

                    BinaryPrimitives.WriteHalfLittleEndian(destination.Slice(i * 2, 2), h);
                }

                break;
            case TensorDType.BFloat16:
                for (var i = 0; i < values.Length; i++)
                {
                    BinaryPrimitives.WriteUInt16LittleEndian(destination.Slice(i * 2, 2), SingleToBFloat16(values[i]));
                }

                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(target));
        }

        return overflow;
    }

    /// <summary>The float32 a bfloat16 bit pattern stands for.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float BFloat16ToSingle(ushort bits) => BitConverter.Int32BitsToSingle(bits << 16);

    /// <summary>float32 to bfloat16 with round-to-nearest-even; NaN stays NaN.</summary>
    public static ushort SingleToBFloat16(float value)
    {
        var bits = (uint)BitConverter.SingleToInt32Bits(value);
        if (float.IsNaN(value))
        {
            return (ushort)((bits >> 16) | 0x40);
        }

        var rounding = 0x7FFFu + ((bits >> 16) & 1);
        return (ushort)((bits + rounding) >> 16);
    }
}
