using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace SpecEdge.Shared.Models.Checkpoints;

/// <summary>A named float32 tensor held in memory, to be written to a checkpoint.</summary>
public sealed record HostTensor(string Name, long[] Shape, float[] Data);

/// <summary>Writes Hugging Face safetensors checkpoints, single-file or sharded with an index.</summary>
public static class SafetensorsWriter
{
    /// <summary>Writes one safetensors file holding <paramref name="tensors"/> converted to <paramref name="dtype"/>.</summary>
    public static void WriteFile(string path, IReadOnlyList<HostTensor> tensors, TensorDType dtype, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var header = new JsonObject();
        var meta = new JsonObject { ["format"] = "pt" };
        if (metadata is not null)
        {
            foreach (var (key, value) in metadata)
            {
                meta[key] = value;
            }
        }

        header["__metadata__"] = meta;
        long offset = 0;
        foreach (var tensor in tensors)
        {
            var bytes = tensor.Data.LongLength * dtype.SizeOf();
            header[tensor.Name] = new JsonObject
            {
                ["dtype"] = dtype.SafetensorsName(),
                ["shape"] = new JsonArray([.. tensor.Shape.Select(d => (JsonNode?)d)]),
                ["data_offsets"] = new JsonArray(offset, offset + bytes),
            };
            offset += bytes;
        }

        var headerBytes = Encoding.UTF8.GetBytes(header.ToJsonString(new JsonSerializerOptions { WriteIndented = false }));
        var padded = (headerBytes.Length + 7) / 8 * 8;
        using var stream = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);
        Span<byte> lengthBytes = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(lengthBytes, (ulong)padded);
        stream.Write(lengthBytes);
        stream.Write(headerBytes);
        for (var i = headerBytes.Length; i < padded; i++)
        {
            stream.WriteByte((byte)' ');
        }

        var buffer = new byte[1 << 20];
        foreach (var tensor in tensors)
        {
            var perChunk = buffer.Length / dtype.SizeOf();
            for (var start = 0; start < tensor.Data.Length; start += perChunk)
            {
                var count = Math.Min(perChunk, tensor.Data.Length - start);
                var overflow = TensorDTypes.FromFloat32(dtype, tensor.Data.AsSpan(start, count), buffer);
                if (overflow >= 0)
                {
                    throw new ArgumentException($"tensor '{tensor.Name}' element {start + overflow} = {tensor.Data[start + overflow]} does not fit {dtype.SafetensorsName()}", nameof(tensors));
                }

                stream.Write(buffer, 0, count * dtype.SizeOf());
            }
        }
    }

    /// <summary>
    /// Writes a checkpoint's weights into <paramref name="directory"/>: <c>model.safetensors</c> when
    /// <paramref name="shards"/> is 1, else <c>model-0000i-of-0000n.safetensors</c> files balanced by size plus
    /// <c>model.safetensors.index.json</c>.
    /// </summary>
    public static IReadOnlyList<string> WriteCheckpoint(string directory, IReadOnlyList<HostTensor> tensors, TensorDType dtype, int shards = 1)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(shards, 1);
        if (shards > tensors.Count)
        {
            throw new ArgumentOutOfRangeException(nameof(shards), $"cannot split {tensors.Count} tensors into {shards} shards");
        }

        System.IO.Directory.CreateDirectory(directory);
        if (shards == 1)
        {
            var single = Path.Combine(directory, LlamaCheckpoint.SingleFileName);
            WriteFile(single, tensors, dtype);
            return [single];
        }

        long total = tensors.Sum(t => t.Data.LongLength) * dtype.SizeOf();
        var target = (total + shards - 1) / shards;
        var groups = new List<List<HostTensor>> { new() };
        long current = 0;
        for (var t = 0; t < tensors.Count; t++)
        {
            var size = tensors[t].Data.LongLength * dtype.SizeOf();
            var remainingTensors = tensors.Count - t;
            var remainingGroups = shards - groups.Count;
            if (groups[^1].Count > 0 && remainingGroups > 0 && (current + size > target || remainingTensors <= remainingGroups))
            {
                groups.Add([]);
                current = 0;
            }

            groups[^1].Add(tensors[t]);
            current += size;
        }

        var weightMap = new JsonObject();
        var paths = new List<string>();
        for (var i = 0; i < groups.Count; i++)
        {
            var name = $"model-{i + 1:D5}-of-{groups.Count:D5}.safetensors";
            var path = Path.Combine(directory, name);
            WriteFile(path, groups[i], dtype);
            paths.Add(path);
            foreach (var tensor in groups[i])
            {
                weightMap[tensor.Name] = name;
            }
        }

        var index = new JsonObject
        {
            ["metadata"] = new JsonObject { ["total_size"] = total },
            ["weight_map"] = weightMap,
        };
        File.WriteAllText(Path.Combine(directory, LlamaCheckpoint.IndexFileName), index.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        return paths;
    }
}
