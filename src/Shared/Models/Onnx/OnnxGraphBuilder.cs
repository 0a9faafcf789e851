using Google.Protobuf;
using SpecEdge.Shared.Models.Checkpoints;
using SpecEdge.Shared.Models.Onnx.Proto;

namespace SpecEdge.Shared.Models.Onnx;

/// <summary>Builds one ONNX graph: nodes, typed inputs and outputs, and initializers placed by an <see cref="InitializerStore"/>.</summary>
internal sealed class OnnxGraphBuilder
{
    public const string MicrosoftDomain = "com.microsoft";
    public const int DefaultOpset = 17;
    public const int MicrosoftOpset = 1;
    public const long IrVersion = 8;

    private readonly GraphProto _graph;
    private readonly InitializerStore _store;
    private readonly HashSet<string> _initializers = new(StringComparer.Ordinal);
    private int _nodeCounter;

    public OnnxGraphBuilder(string name, InitializerStore store)
    {
        _graph = new GraphProto { Name = name };
        _store = store;
    }

    public void AddInput(string name, TensorProto.Types.DataType type, params object[] dims) =>
        _graph.Input.Add(ValueInfo(name, type, dims));

    public void AddOutput(string name, TensorProto.Types.DataType type, params object[] dims) =>
        _graph.Output.Add(ValueInfo(name, type, dims));

    /// <summary>
    /// Adds a weight; <paramref name="data"/> is only called when the store has not placed the tensor yet (a tensor
    /// shared by several graphs of one model is read and written once). When the weight is stored in another type than
    /// the graph computes in, a Cast to <paramref name="compute"/> follows, which ONNX Runtime folds when the session loads.
    /// </summary>
    /// <returns>The name to use as an input of type <paramref name="compute"/>.</returns>
    public string AddWeight(string name, long[] dims, Func<float[]> data, TensorDType storage, TensorDType compute = TensorDType.Float32)
    {
        var computeName = storage == compute ? name : $"{name}_{compute.CliName()}";
        if (!_initializers.Add(name))
        {
            return computeName;
        }

        var tensor = _store.TryGetPlaced(name, out var placed) ? placed.Clone() : _store.Place(name, dims, data(), storage);
        _graph.Initializer.Add(tensor);
        if (storage != compute)
        {
            Node("Cast", [name], [computeName], attributes: [Int("to", (long)ElementType(compute))]);
        }

        return computeName;
    }

    /// <summary>The ONNX element type of a float type.</summary>
    public static TensorProto.Types.DataType ElementType(TensorDType dtype) => dtype switch
    {
        TensorDType.Float32 => TensorProto.Types.DataType.Float,
        TensorDType.Float16 => TensorProto.Types.DataType.Float16,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "ONNX graphs compute in float32 or float16"),
    };

    /// <summary>
    /// Adds an initializer of <paramref name="type"/> from its little-endian bytes (a quantized weight's blocks, scales
    /// and zero points); <paramref name="data"/> is only called when the store has not placed the tensor yet.
    /// </summary>
    public string AddRawWeight(string name, long[] dims, TensorProto.Types.DataType type, Func<byte[]> data)
    {
        if (_initializers.Add(name))
        {
            _graph.Initializer.Add(_store.TryGetPlaced(name, out var placed) ? placed.Clone() : _store.PlaceBytes(name, dims, type, data()));
        }

        return name;
    }

    public string AddInt64Constant(string name, long[] dims, params long[] values)
    {
        if (_initializers.Add(name))
        {
            var tensor = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Int64 };
            tensor.Dims.AddRange(dims);
            tensor.Int64Data.AddRange(values);
            _graph.Initializer.Add(tensor);
        }

        return name;
    }

    /// <summary>Adds a node; output names are generated from the op type when <paramref name="outputs"/> is null.</summary>
    public string[] Node(string opType, string[] inputs, string[]? outputs = null, string domain = "", AttributeProto[]? attributes = null, int outputCount = 1)
    {
        var id = _nodeCounter++;
        outputs ??= Enumerable.Range(0, outputCount).Select(i => $"/{opType}_{id}/out{i}").ToArray();
        var node = new NodeProto { OpType = opType, Name = $"/{opType}_{id}", Domain = domain };
        node.Input.AddRange(inputs);
        node.Output.AddRange(outputs);
        if (attributes is not null)
        {
            node.Attribute.AddRange(attributes);
        }

        _graph.Node.Add(node);
        return outputs;
    }

    public ModelProto Build(string producerVersion, IReadOnlyDictionary<string, string> metadata)
    {
        var model = new ModelProto
        {
            IrVersion = IrVersion,
            ProducerName = "specedge",
            ProducerVersion = producerVersion,
            Graph = _graph,
        };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = string.Empty, Version = DefaultOpset });
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = MicrosoftDomain, Version = MicrosoftOpset });
        foreach (var (key, value) in metadata)
        {
            model.MetadataProps.Add(new StringStringEntryProto { Key = key, Value = value });
        }

        return model;
    }

    public static AttributeProto Int(string name, long value) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = value };

    public static AttributeProto Float(string name, float value) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Float, F = value };

    public static AttributeProto Ints(string name, params long[] values)
    {
        var attribute = new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints };
        attribute.Ints.AddRange(values);
        return attribute;
    }

    private static ValueInfoProto ValueInfo(string name, TensorProto.Types.DataType type, object[] dims)
    {
        var shape = new TensorShapeProto();
        foreach (var dim in dims)
        {
            shape.Dim.Add(dim switch
            {
                string param => new TensorShapeProto.Types.Dimension { DimParam = param },
                int value => new TensorShapeProto.Types.Dimension { DimValue = value },
                long value => new TensorShapeProto.Types.Dimension { DimValue = value },
                _ => throw new ArgumentException($"dimension {dim} must be a string or an integer", nameof(dims)),
            });
        }

        return new ValueInfoProto
        {
            Name = name,
            Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)type, Shape = shape } },
        };
    }
}

/// <summary>
/// Places initializer data either inside the graph (<c>raw_data</c>) or in one external data file shared by every
/// graph of a model, so tensors used by several stages (the LM head) are stored once.
/// </summary>
internal sealed class InitializerStore : IDisposable
{
    /// <summary>External data offsets are aligned to the page size so ONNX Runtime can memory-map them.</summary>
    private const int Alignment = 4096;

    private readonly FileStream? _external;
    private readonly Dictionary<string, TensorProto> _placed = new(StringComparer.Ordinal);
    private readonly byte[] _buffer = new byte[1 << 20];

    public InitializerStore(string? externalPath)
    {
        if (externalPath is not null)
        {
            ExternalFileName = Path.GetFileName(externalPath);
            _external = new FileStream(externalPath, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);
        }
    }

    /// <summary>The external data file name relative to the graphs, or null when data is inline.</summary>
    public string? ExternalFileName { get; }

    public long BytesWritten { get; private set; }

    public bool TryGetPlaced(string name, out TensorProto tensor) => _placed.TryGetValue(name, out tensor!);

    public TensorProto Place(string name, long[] dims, ReadOnlySpan<float> data, TensorDType storage)
    {
        if (storage == TensorDType.BFloat16)
        {
            throw new ArgumentException("ONNX weights are written as float32 or float16", nameof(storage));
        }

        var tensor = new TensorProto
        {
            Name = name,
            DataType = (int)(storage == TensorDType.Float32 ? TensorProto.Types.DataType.Float : TensorProto.Types.DataType.Float16),
        };
        tensor.Dims.AddRange(dims);
        var byteLength = (long)data.Length * storage.SizeOf();

        if (_external is null)
        {
            var raw = new byte[byteLength];
            Convert(name, data, storage, raw);
            tensor.RawData = UnsafeByteOperations.UnsafeWrap(raw);
        }
        else
        {
            var offset = AlignExternal();
            var perChunk = _buffer.Length / storage.SizeOf();
            for (var start = 0; start < data.Length; start += perChunk)
            {
                var count = Math.Min(perChunk, data.Length - start);
                Convert(name, data.Slice(start, count), storage, _buffer);
                _external.Write(_buffer, 0, count * storage.SizeOf());
            }

            MarkExternal(tensor, offset, byteLength);
            _placed[name] = tensor;
        }

        BytesWritten += byteLength;
        return tensor;
    }

    /// <summary>Places an initializer of <paramref name="type"/> given as its little-endian bytes.</summary>
    public TensorProto PlaceBytes(string name, long[] dims, TensorProto.Types.DataType type, byte[] data)
    {
        var tensor = new TensorProto { Name = name, DataType = (int)type };
        tensor.Dims.AddRange(dims);
        if (_external is null)
        {
            tensor.RawData = UnsafeByteOperations.UnsafeWrap(data);
        }
        else
        {
            var offset = AlignExternal();
            _external.Write(data);
            MarkExternal(tensor, offset, data.LongLength);
            _placed[name] = tensor;
        }

        BytesWritten += data.LongLength;
        return tensor;
    }

    public void Dispose() => _external?.Dispose();

    private long AlignExternal()
    {
        var padding = (Alignment - (_external!.Position % Alignment)) % Alignment;
        _external.Write(new byte[padding]);
        return _external.Position;
    }

    private void MarkExternal(TensorProto tensor, long offset, long byteLength)
    {
        tensor.DataLocation = TensorProto.Types.DataLocation.External;
        tensor.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = ExternalFileName });
        tensor.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = offset.ToString(System.Globalization.CultureInfo.InvariantCulture) });
        tensor.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = byteLength.ToString(System.Globalization.CultureInfo.InvariantCulture) });
    }

    private static void Convert(string name, ReadOnlySpan<float> data, TensorDType storage, Span<byte> destination)
    {
        var overflow = TensorDTypes.FromFloat32(storage, data, destination);
        if (overflow >= 0)
        {
            throw new ArgumentException($"weight '{name}' element {overflow} = {data[overflow]} overflows {storage.CliName()}; convert with --dtype f32");
        }
    }
}
