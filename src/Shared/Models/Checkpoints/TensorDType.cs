using System.Buffers.Binary;
using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

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

    /// <summary>
    /// Converts little-endian raw elements of <paramref name="source"/> to float32, with SIMD: float16 through
    /// TensorPrimitives (F16C where the CPU has it), bfloat16 by widening and shifting whole vectors.
    /// </summary>
    public static void ToFloat32(TensorDType source, ReadOnlySpan<byte> raw, Span<float> destination)
    {
        if (!BitConverter.IsLittleEndian)
        {
            ToFloat32Scalar(source, raw, destination);
            return;
        }

        var count = destination.Length;
        switch (source)
        {
            case TensorDType.Float32:
                MemoryMarshal.Cast<byte, float>(raw[..(count * 4)]).CopyTo(destination);
                break;
            case TensorDType.Float16:
                TensorPrimitives.ConvertToSingle(MemoryMarshal.Cast<byte, Half>(raw[..(count * 2)]), destination);
                break;
            case TensorDType.BFloat16:
            {
                var bits = MemoryMarshal.Cast<byte, ushort>(raw[..(count * 2)]);
                var output = MemoryMarshal.Cast<float, uint>(destination);
                var i = 0;
                for (; i <= count - Vector<ushort>.Count; i += Vector<ushort>.Count)
                {
                    Vector.Widen(new Vector<ushort>(bits[i..]), out var low, out var high);
                    Vector.ShiftLeft(low, 16).CopyTo(output[i..]);
                    Vector.ShiftLeft(high, 16).CopyTo(output[(i + Vector<uint>.Count)..]);
                }

                for (; i < count; i++)
                {
                    output[i] = (uint)bits[i] << 16;
                }

                break;
            }

            default:
                throw new ArgumentOutOfRangeException(nameof(source));
        }
    }

    /// <summary>
    /// Writes float32 values as little-endian elements of <paramref name="target"/>, rounding to nearest even, with SIMD
    /// as <see cref="ToFloat32"/>.
    /// </summary>
    /// <returns>The index of the first value that does not fit the target type (overflows to infinity), or -1.</returns>
    public static int FromFloat32(TensorDType target, ReadOnlySpan<float> values, Span<byte> destination)
    {
        if (!BitConverter.IsLittleEndian)
        {
            return FromFloat32Scalar(target, values, destination);
        }

        var count = values.Length;
        switch (target)
        {
            case TensorDType.Float32:
                values.CopyTo(MemoryMarshal.Cast<byte, float>(destination[..(count * 4)]));
                return -1;
            case TensorDType.Float16:
                TensorPrimitives.ConvertToHalf(values, MemoryMarshal.Cast<byte, Half>(destination[..(count * 2)]));

                // Values of magnitude 65520 and above round to infinity: look for the first only when there is one.
                if (count > 0 && TensorPrimitives.MaxMagnitude(values) is var max && float.IsFinite(max) && Math.Abs(max) < 65520f)
                {
                    return -1;
                }

                for (var i = 0; i < count; i++)
                {
                    if (float.IsFinite(values[i]) && Half.IsInfinity((Half)values[i]))
                    {
                        return i;
                    }
                }

                return -1;
            case TensorDType.BFloat16:
            {
                var input = MemoryMarshal.Cast<float, uint>(values);
                var output = MemoryMarshal.Cast<byte, ushort>(destination[..(count * 2)]);
                var one = Vector<uint>.One;
                var roundingBase = new Vector<uint>(0x7FFFu);
                var quietBit = new Vector<uint>(0x40u);
                var i = 0;
                for (; i <= count - (2 * Vector<uint>.Count); i += 2 * Vector<uint>.Count)
                {
                    var low = RoundToBFloat16(new Vector<uint>(input[i..]), new Vector<float>(values[i..]), one, roundingBase, quietBit);
                    var high = RoundToBFloat16(new Vector<uint>(input[(i + Vector<uint>.Count)..]), new Vector<float>(values[(i + Vector<uint>.Count)..]), one, roundingBase, quietBit);
                    Vector.Narrow(low, high).CopyTo(output[i..]);
                }

                for (; i < count; i++)
                {
                    output[i] = SingleToBFloat16(values[i]);
                }

                return -1;
            }

            default:
                throw new ArgumentOutOfRangeException(nameof(target));
        }
    }

    /// <summary>The element-by-element conversion (the reference the SIMD paths are tested against, and big-endian hosts' path).</summary>
    public static void ToFloat32Scalar(TensorDType source, ReadOnlySpan<byte> raw, Span<float> destination)
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

    /// <summary>The element-by-element form of <see cref="FromFloat32"/>.</summary>
    public static int FromFloat32Scalar(TensorDType target, ReadOnlySpan<float> values, Span<byte> destination)
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

    /// <summary>bfloat16 bits (in the low half of each lane) of a vector of float32s: round to nearest even, NaN stays a quiet NaN.</summary>
    private static Vector<uint> RoundToBFloat16(Vector<uint> bits, Vector<float> values, Vector<uint> one, Vector<uint> roundingBase, Vector<uint> quietBit)
    {
        var rounded = Vector.ShiftRightLogical(bits + roundingBase + (Vector.ShiftRightLogical(bits, 16) & one), 16);
        var nan = Vector.AsVectorUInt32(Vector.OnesComplement(Vector.Equals(values, values)));
        return Vector.ConditionalSelect(nan, Vector.ShiftRightLogical(bits, 16) | quietBit, rounded);
    }

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
