using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;
using System.Text.Json;

namespace SpecEdge.Shared.Models.Checkpoints;

/// <summary>The name, element type, shape and byte range of one tensor in a safetensors file.</summary>
public sealed record TensorInfo(string Name, TensorDType DType, IReadOnlyList<long> Shape, long DataOffset, long ByteLength)
{
    /// <summary>The number of elements (the product of the shape).</summary>
    public long ElementCount
    {
        get
        {
            long n = 1;
            foreach (var d in Shape)
            {
                n *= d;
            }

            return n;
        }
    }
}

/// <summary>
/// One safetensors file, memory-mapped: the header is parsed and checked when the file opens, and a tensor's bytes
/// are read only when asked for, so a checkpoint is never loaded whole into managed memory.
/// </summary>
public sealed unsafe class SafetensorsFile : IDisposable
{
    private const long MaxHeaderBytes = 100L * 1024 * 1024;

    private readonly MemoryMappedFile? _map;
    private readonly MemoryMappedViewAccessor? _view;
    private readonly byte* _base;
    private readonly long _dataStart;
    private readonly Dictionary<string, TensorInfo> _tensors;
    private bool _disposed;

    private SafetensorsFile(string path, MemoryMappedFile? map, MemoryMappedViewAccessor? view, byte* basePointer, long dataStart, Dictionary<string, TensorInfo> tensors, IReadOnlyDictionary<string, string> metadata)
    {
        Path = path;
        _map = map;
        _view = view;
        _base = basePointer;
        _dataStart = dataStart;
        _tensors = tensors;
        Metadata = metadata;
    }

    /// <summary>The file.</summary>
    public string Path { get; }

    /// <summary>Its tensors by name.</summary>
    public IReadOnlyDictionary<string, TensorInfo> Tensors => _tensors;

    /// <summary>The free-form <c>__metadata__</c> entries of the header.</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>Opens and validates a safetensors file.</summary>
    /// <exception cref="ModelFormatException">Missing file, header length past the end, bad JSON, unknown dtype, shape/size mismatch or offsets out of range.</exception>
    public static SafetensorsFile Open(string path)
    {
        if (!File.Exists(path))
        {
            throw new ModelFormatException(path, "safetensors file not found");
        }

        var fileLength = new FileInfo(path).Length;
        if (fileLength < 8)
        {
            throw new ModelFormatException(path, $"file is {fileLength} bytes, shorter than the 8-byte safetensors header length (truncated?)");
        }

        MemoryMappedFile? map = null;
        MemoryMappedViewAccessor? view = null;
        byte* basePointer = null;
        try
        {
            map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
            view = map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref basePointer);
            basePointer += view.PointerOffset;

            var headerLength = BinaryPrimitives.ReadUInt64LittleEndian(new ReadOnlySpan<byte>(basePointer, 8));
            if (headerLength > MaxHeaderBytes || 8 + (long)headerLength > fileLength)
            {
                throw new ModelFormatException(path, $"header length {headerLength} points past the end of the {fileLength}-byte file (truncated or not a safetensors file)");
            }

            var headerBytes = new ReadOnlySpan<byte>(basePointer + 8, (int)headerLength);
            var dataStart = 8 + (long)headerLength;
            var (tensors, metadata) = ParseHeader(path, headerBytes, fileLength - dataStart);
            return new SafetensorsFile(path, map, view, basePointer, dataStart, tensors, metadata);
        }
        catch
        {
            if (basePointer != null)
            {
                view!.SafeMemoryMappedViewHandle.ReleasePointer();
            }

            view?.Dispose();
            map?.Dispose();
            throw;
        }
    }

    /// <summary>Raw little-endian bytes of a tensor's elements [<paramref name="firstElement"/>, + <paramref name="count"/>), valid until this file is disposed.</summary>
    public ReadOnlySpan<byte> GetBytes(TensorInfo tensor, long firstElement, int count)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var size = tensor.DType.SizeOf();
        if (firstElement < 0 || count < 0 || firstElement + count > tensor.ElementCount)
        {
            throw new ArgumentOutOfRangeException(nameof(firstElement), $"elements [{firstElement}, {firstElement + count}) are outside tensor '{tensor.Name}' of {tensor.ElementCount} elements");
        }

        return new ReadOnlySpan<byte>(_base + _dataStart + tensor.DataOffset + (firstElement * size), checked(count * size));
    }

    /// <summary>Reads elements [<paramref name="firstElement"/>, + destination length) of a tensor, converted to float32.</summary>
    public void ReadFloat32(TensorInfo tensor, long firstElement, Span<float> destination) =>
        TensorDTypes.ToFloat32(tensor.DType, GetBytes(tensor, firstElement, destination.Length), destination);

    /// <summary>Reads a whole tensor converted to float32; large tensors are read in chunks, never as one span over 2 GB.</summary>
    public float[] ReadFloat32(TensorInfo tensor)
    {
        var result = new float[tensor.ElementCount];
        const int Chunk = 1 << 24;
        for (long offset = 0; offset < result.LongLength; offset += Chunk)
        {
            var count = (int)Math.Min(Chunk, result.LongLength - offset);
            ReadFloat32(tensor, offset, result.AsSpan((int)offset, count));
        }

        return result;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _view?.SafeMemoryMappedViewHandle.ReleasePointer();
        _view?.Dispose();
        _map?.Dispose();
    }

    private static (Dictionary<string, TensorInfo> Tensors, Dictionary<string, string> Metadata) ParseHeader(string path, ReadOnlySpan<byte> header, long dataLength)
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(header.ToArray());
        }
        catch (JsonException ex)
        {
            throw new ModelFormatException(path, $"safetensors header is not valid JSON ({ex.Message})", ex);
        }

        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
            {
                throw new ModelFormatException(path, "safetensors header must be a JSON object");
            }

            var tensors = new Dictionary<string, TensorInfo>(StringComparer.Ordinal);
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var property in doc.RootElement.EnumerateObject())
            {
                if (property.Name == "__metadata__")
                {
                    if (property.Value.ValueKind == JsonValueKind.Object)
                    {
                        foreach (var entry in property.Value.EnumerateObject())
                        {
                            metadata[entry.Name] = entry.Value.ValueKind == JsonValueKind.String ? entry.Value.GetString()! : entry.Value.GetRawText();
                        }
                    }

                    continue;
                }

                tensors[property.Name] = ParseTensor(path, property.Name, property.Value, dataLength);
            }

            return (tensors, metadata);
        }
    }

    private static TensorInfo ParseTensor(string path, string name, JsonElement entry, long dataLength)
    {
        if (entry.ValueKind != JsonValueKind.Object
            || !entry.TryGetProperty("dtype", out var dtypeElement) || dtypeElement.ValueKind != JsonValueKind.String
            || !entry.TryGetProperty("shape", out var shapeElement) || shapeElement.ValueKind != JsonValueKind.Array
            || !entry.TryGetProperty("data_offsets", out var offsetsElement) || offsetsElement.ValueKind != JsonValueKind.Array || offsetsElement.GetArrayLength() != 2)
        {
            throw new ModelFormatException(path, $"tensor '{name}': header entry needs dtype, shape and data_offsets [begin, end]");
        }

        var dtypeName = dtypeElement.GetString()!;
        if (!TensorDTypes.TryParseSafetensors(dtypeName, out var dtype))
        {
            throw new ModelFormatException(path, $"tensor '{name}': dtype {dtypeName} is not supported (F32, F16 and BF16 are)");
        }

        var shape = new List<long>();
        long elements = 1;
        foreach (var dim in shapeElement.EnumerateArray())
        {
            if (!dim.TryGetInt64(out var d) || d < 0)
            {
                throw new ModelFormatException(path, $"tensor '{name}': shape {shapeElement.GetRawText()} holds a value that is not a non-negative integer");
            }

            shape.Add(d);
            elements = checked(elements * d);
        }

        if (!offsetsElement[0].TryGetInt64(out var begin) || !offsetsElement[1].TryGetInt64(out var end) || begin < 0 || end < begin)
        {
            throw new ModelFormatException(path, $"tensor '{name}': data_offsets {offsetsElement.GetRawText()} are not an ordered pair of non-negative integers");
        }

        if (end > dataLength)
        {
            throw new ModelFormatException(path, $"tensor '{name}': data_offsets [{begin}, {end}] reach past the {dataLength} data bytes of the file (truncated?)");
        }

        var expected = elements * dtype.SizeOf();
        if (end - begin != expected)
        {
            throw new ModelFormatException(path, $"tensor '{name}': dtype {dtypeName} and shape {shapeElement.GetRawText()} need {expected} bytes but data_offsets span {end - begin}");
        }

        return new TensorInfo(name, dtype, shape, begin, end - begin);
    }
}
