using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using SpecEdge.Shared.Models;
using SpecEdge.Shared.Models.Onnx;
using SpecEdge.Shared.Tokenization;

namespace SpecEdge.Shared.Runtime;

/// <summary>
/// Runs steps of many sequences at once on a <see cref="LanguageModel"/> loaded with the batched graphs
/// (<see cref="AttentionForm.Batched"/>): one ONNX Runtime call per stage for the whole batch. Every sequence owns a
/// <see cref="SequenceSlot"/> in a KV arena (per layer one buffer of [slots, kv heads, max length, head dim]); a batch
/// of k rows reads the arena's first k slots as <c>past_key_values</c>, and after each stage the step's keys and values
/// (graph outputs) of every row's real tokens are written into its slot after its valid prefix.
/// </summary>
/// <remarks>
/// <para>
/// <b>Rows of different lengths.</b> A step scores T tokens per row, T being the longest row's count; shorter rows are
/// padded at their end. The additive attention bias gives each row its own view: its valid prefix (the arena's first W
/// positions are read, W being the longest prefix, and a shorter row's positions past its own length are masked) and
/// this step's tokens causally. Padding only ever follows a row's real tokens, so it never reaches their results, and
/// its keys are never stored. (ONNX Runtime's CPU GroupQueryAttention refuses several tokens with a past at batch
/// size above 1, hence attention from standard operators in this form.)
/// </para>
/// <para>
/// <b>Contiguity.</b> Before a step, the batch's slots are moved to the front of the arena (swapping with whatever sits
/// there, copying only the valid prefixes), so a batch never computes rows that are not in it. When the same sequences
/// take part step after step, nothing moves.
/// </para>
/// <para>
/// <b>One sequence per step.</b> With the model loaded in the shared-buffer form instead, every slot owns a
/// <see cref="DecodeContext"/> (GroupQueryAttention over the sequence's own cache, allocated where the model runs: a
/// CUDA device's memory on the GPU) and a step runs one row. The verifier uses this form with batching off.
/// </para>
/// <para>Not thread-safe: one owner (the verifier's batch scheduler) calls everything, one step at a time.</para>
/// </remarks>
public sealed class BatchRunner : IDisposable
{
    private readonly LanguageModel _model;
    private readonly int _kvHeads;
    private readonly int _headDim;
    private readonly int _hidden;
    private readonly int _vocab;
    private readonly int _layers;
    private readonly int _slotLength;
    private readonly long[] _inputIds;
    private readonly long[] _positionIds;
    private readonly float[] _bias;
    private readonly TensorElementType _element;
    private readonly int _elementSize;

    // Keys, values and hidden states are in the graphs' compute type (float32 or float16), held as pinned bytes.
    private readonly byte[][] _stepKeys;
    private readonly byte[][] _stepValues;
    private readonly byte[][] _hiddenBuffers;
    private readonly float[] _logits;
    private readonly byte[] _swap;
    private readonly OrtIoBinding[] _bindings;
    private readonly RunOptions _runOptions = new();
    private readonly List<OrtValue> _stepTensors = [];
    private readonly List<SequenceSlot?> _occupants = [];
    private readonly List<BatchRow> _rows = [];
    private readonly int[] _positions;
    private readonly bool[] _held;
    private byte[][] _keys = [];
    private byte[][] _values = [];
    private OrtValue?[][] _kvViews = [];
    private OrtValue? _idsValue;
    private OrtValue? _positionsValue;
    private OrtValue? _biasValue;
    private OrtValue[] _hiddenValues = [];
    private OrtValue? _logitsValue;
    private int _boundRows = -1;
    private readonly bool _perSequence;
    private int _stepTokens;
    private int _nextStage = -1;
    private bool _disposed;

    /// <param name="model">The model; its sessions are shared with any other user.</param>
    /// <param name="maxSlots">The most sequences the arena holds (it grows to this on demand).</param>
    /// <param name="maxSequenceLength">The longest sequence a slot holds.</param>
    /// <param name="maxRows">The most rows one step runs.</param>
    /// <param name="maxBatchTokens">The most tokens (rows × tokens per row, padding included) one step runs.</param>
    public BatchRunner(LanguageModel model, int maxSlots, int maxSequenceLength, int maxRows, int maxBatchTokens)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxSlots, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxRows, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxSequenceLength, 2);
        _model = model;
        _perSequence = model.Options.Attention == AttentionForm.SharedBuffer;
        if (_perSequence)
        {
            maxRows = 1;
        }

        var config = model.Config;
        _kvHeads = config.NumKeyValueHeads;
        _headDim = config.HeadDim;
        _hidden = config.HiddenSize;
        _vocab = model.VocabSize;
        _layers = config.NumHiddenLayers;
        MaxSlots = maxSlots;
        MaxSequenceLength = Math.Min(maxSequenceLength, model.MaxSequenceLength);
        MaxStepTokens = Math.Min(model.Options.MaxStepTokens, MaxSequenceLength);
        MaxRows = maxRows;
        MaxBatchTokens = Math.Max(maxBatchTokens, MaxStepTokens);
        _slotLength = MaxSequenceLength;
        var tokens = _perSequence ? 1 : Math.Min(MaxBatchTokens, maxRows * MaxStepTokens);
        _inputIds = new long[tokens];
        _positionIds = new long[tokens];
        _bias = new float[_perSequence ? 0 : (long)tokens * (_slotLength + MaxStepTokens)];
        _element = model.ComputeElementType;
        _elementSize = model.ComputeElementSize;
        _stepKeys = new byte[_layers][];
        _stepValues = new byte[_layers][];
        for (var layer = 0; layer < _layers; layer++)
        {
            _stepKeys[layer] = Pinned((long)tokens * _kvHeads * _headDim);
            _stepValues[layer] = Pinned((long)tokens * _kvHeads * _headDim);
        }

        _hiddenBuffers = [Pinned((long)tokens * _hidden), Pinned((long)tokens * _hidden)];
        _logits = new float[_perSequence ? 0 : (long)tokens * _vocab];
        _swap = new byte[_perSequence ? 0 : (long)_slotLength * _headDim * _elementSize];
        _positions = new int[maxRows];
        _held = new bool[maxRows];
        _bindings = new OrtIoBinding[model.Stages.Count];
        try
        {
            for (var s = 0; s < _bindings.Length && !_perSequence; s++)
            {
                _bindings[s] = model.Session(s).CreateIoBinding();
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>The model, loaded with the batched graphs.</summary>
    public LanguageModel Model => _model;

    /// <summary>The most sequences the arena holds.</summary>
    public int MaxSlots { get; }

    /// <summary>Slots allocated in the arena now (it grows on demand up to <see cref="MaxSlots"/>).</summary>
    public int Capacity => _occupants.Count;

    /// <summary>Sequences holding a slot.</summary>
    public int Occupied { get; private set; }

    /// <summary>The longest sequence a slot holds.</summary>
    public int MaxSequenceLength { get; }

    /// <summary>The most tokens one row of a step scores.</summary>
    public int MaxStepTokens { get; }

    /// <summary>The most rows one step runs.</summary>
    public int MaxRows { get; }

    /// <summary>The most tokens one step runs (rows × tokens per row, padding included).</summary>
    public int MaxBatchTokens { get; }

    /// <summary>Bytes of KV cache one slot holds (keys and values of every layer, in the compute type).</summary>
    public long BytesPerSlot => _model.KvBytesPerContext(_slotLength);

    /// <summary>Whether each step runs one sequence on its own cache (the shared-buffer form) instead of a batch.</summary>
    public bool OneSequencePerStep => _perSequence;

    /// <summary>The stage the pending step runs next, or -1 when no step is pending.</summary>
    public int NextStage => _nextStage;

    /// <summary>Rows in the pending or last step.</summary>
    public int Rows => _rows.Count;

    /// <summary>Tokens each row of the pending or last step scores (the longest row's count).</summary>
    public int StepTokens => _stepTokens;

    /// <summary>Slot moves the arranging of batches has made (a measure of how often batch membership changed).</summary>
    public long SlotMoves { get; private set; }

    /// <summary>A slot for a new, empty sequence.</summary>
    /// <exception cref="InvalidOperationException">All <see cref="MaxSlots"/> slots are taken.</exception>
    public SequenceSlot Allocate()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        EnsureNoStep();
        var index = _occupants.IndexOf(null);
        if (index < 0)
        {
            if (_occupants.Count >= MaxSlots)
            {
                throw new InvalidOperationException($"all {MaxSlots} KV slots are taken");
            }

            Grow(Math.Min(MaxSlots, Math.Max(_occupants.Count * 2, 4)));
            index = _occupants.IndexOf(null);
        }

        var slot = new SequenceSlot(this, MaxSequenceLength) { Index = index, Context = _perSequence ? _model.CreateContext(MaxSequenceLength) : null };
        _occupants[index] = slot;
        Occupied++;
        return slot;
    }

    /// <summary>Gives a slot back; its sequence is gone. Releasing twice does nothing.</summary>
    public void Release(SequenceSlot slot)
    {
        if (slot.Owner != this || slot.Released)
        {
            return;
        }

        EnsureNoStep();
        slot.Released = true;
        slot.Context?.Dispose();
        _occupants[slot.Index] = null;
        Occupied--;
    }

    /// <summary>
    /// Starts a step over <paramref name="rows"/> (one per sequence, 1 to <see cref="MaxStepTokens"/> tokens each);
    /// <see cref="RunNextStage"/> then runs it one stage at a time. After the last stage every row's sequence holds its
    /// tokens. A step left unfinished (an exception, or <see cref="Abandon"/>) changes no sequence's length.
    /// </summary>
    /// <exception cref="ArgumentException">No rows, too many, a slot twice, a released slot, or a row with no or too many tokens.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A token id is outside the vocabulary.</exception>
    /// <exception cref="SequenceTooLongException">A row would take its sequence past its maximum length.</exception>
    public void BeginStep(IReadOnlyList<BatchRow> rows)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var t = Validate(rows);
        _rows.Clear();
        _rows.AddRange(rows);
        _stepTokens = t;
        if (_perSequence)
        {
            // The context may hold a longer prefix than the slot after a rollback: drop it, then score the row.
            var context = rows[0].Slot.Context!;
            context.Rollback(rows[0].Slot.Length);
            context.BeginStep(rows[0].Tokens.Span);
            _nextStage = 0;
            return;
        }

        Arrange();
        var width = FillInputs(t);
        BindStep(t, width);
        _nextStage = 0;
    }

    /// <summary>Checks a step's rows; returns the tokens per row (the longest row's count).</summary>
    private int Validate(IReadOnlyList<BatchRow> rows)
    {
        if (rows.Count == 0 || rows.Count > MaxRows)
        {
            throw new ArgumentException($"a step runs 1 to {MaxRows} rows, not {rows.Count}", nameof(rows));
        }

        var t = 0;
        for (var r = 0; r < rows.Count; r++)
        {
            var row = rows[r];
            if (row.Slot.Owner != this || row.Slot.Released)
            {
                throw new ArgumentException($"row {r}: the slot is not held in this runner", nameof(rows));
            }

            for (var q = 0; q < r; q++)
            {
                if (ReferenceEquals(rows[q].Slot, row.Slot))
                {
                    throw new ArgumentException($"rows {q} and {r} are the same sequence", nameof(rows));
                }
            }

            var count = row.Tokens.Length;
            if (count < 1 || count > MaxStepTokens)
            {
                throw new ArgumentException($"row {r}: a row scores 1 to {MaxStepTokens} tokens, not {count}", nameof(rows));
            }

            if (row.Slot.Length + count > row.Slot.MaxLength)
            {
                throw new SequenceTooLongException(row.Slot.Length, count, row.Slot.MaxLength);
            }

            if (!row.Parents.IsEmpty)
            {
                if (_perSequence)
                {
                    throw new ArgumentException($"row {r}: token trees need the batched graphs (the shared-buffer form's attention has no arbitrary mask)", nameof(rows));
                }

                var parents = row.Parents.Span;
                if (parents.Length != count)
                {
                    throw new ArgumentException($"row {r}: {parents.Length} parents for {count} tokens", nameof(rows));
                }

                for (var i = 0; i < count; i++)
                {
                    if (parents[i] < -1 || parents[i] >= i)
                    {
                        throw new ArgumentException($"row {r}: token {i}'s parent {parents[i]} is not −1 or an earlier token", nameof(rows));
                    }
                }
            }

            var span = row.Tokens.Span;
            for (var i = 0; i < count; i++)
            {
                if ((uint)span[i].Value >= (uint)_vocab)
                {
                    throw new ArgumentOutOfRangeException(nameof(rows), span[i].Value, $"row {r}: token id {span[i].Value} at step position {i} is outside the vocabulary of {_vocab}");
                }
            }

            t = Math.Max(t, count);
        }

        return rows.Count * t > MaxBatchTokens
            ? throw new ArgumentException($"{rows.Count} rows of {t} tokens pass the step's budget of {MaxBatchTokens} tokens", nameof(rows))
            : t;
    }

    /// <summary>Token ids, positions and the attention bias of every row at its arena position; returns the bias width.</summary>
    private int FillInputs(int t)
    {
        var maxPosition = _model.Config.MaxPositionEmbeddings - 1;
        var past = 0;
        foreach (var row in _rows)
        {
            past = Math.Max(past, row.Slot.Length);
        }

        var width = past + t;
        for (var r = 0; r < _rows.Count; r++)
        {
            var row = _rows[r];
            var span = row.Tokens.Span;
            var parents = row.Parents.Span;
            var baseLength = row.Slot.Length;
            for (var i = 0; i < t; i++)
            {
                var at = (_positions[r] * t) + i;
                _inputIds[at] = i < span.Length ? span[i].Value : span[^1].Value;
                var bias = _bias.AsSpan(at * width, width);
                bias[..baseLength].Clear();
                bias[baseLength..past].Fill(float.NegativeInfinity);
                if (parents.IsEmpty || i >= span.Length)
                {
                    // Query i of row r sees the row's own prefix and this step's tokens up to itself.
                    _positionIds[at] = Math.Min(baseLength + i, maxPosition);
                    bias.Slice(past, i + 1).Clear();
                    bias[(past + i + 1)..].Fill(float.NegativeInfinity);
                    continue;
                }

                // A tree's token sees the prefix, itself and its ancestors, at the position of its depth.
                bias[past..].Fill(float.NegativeInfinity);
                var depth = -1;
                for (var node = i; node >= 0; node = parents[node])
                {
                    bias[past + node] = 0f;
                    depth++;
                }

                _positionIds[at] = Math.Min(baseLength + depth, maxPosition);
            }
        }

        return width;
    }

    /// <summary>The step's tensors over the runner's buffers, bound to every stage.</summary>
    private void BindStep(int t, int width)
    {
        DisposeStepTensors();
        var rows = _rows.Count;
        _idsValue = Tensor(_inputIds, rows * t, [rows, t]);
        _positionsValue = Tensor(_positionIds, rows * t, [rows, t]);
        _biasValue = Tensor(_bias, rows * t * width, [rows, 1, t, width]);
        _hiddenValues = [Elements(_hiddenBuffers[0], [rows, t, _hidden]), Elements(_hiddenBuffers[1], [rows, t, _hidden])];
        _logitsValue = Tensor(_logits, rows * t * _vocab, [rows, t, _vocab]);
        for (var s = 0; s < _bindings.Length; s++)
        {
            var stage = _model.Stages[s];
            for (var layer = stage.FirstLayer; layer < stage.EndLayer; layer++)
            {
                _bindings[s].BindOutput(GraphNames.StepKey(layer), Elements(_stepKeys[layer], [rows, _kvHeads, t, _headDim]));
                _bindings[s].BindOutput(GraphNames.StepValue(layer), Elements(_stepValues[layer], [rows, _kvHeads, t, _headDim]));
            }
        }

        if (_boundRows != rows)
        {
            BindCache(rows);
        }
    }

    /// <summary>
    /// Runs the next stage of the pending step; returns its head's logits for every row (valid until the next stage or
    /// step).
    /// </summary>
    public BatchLogits RunNextStage()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_nextStage < 0)
        {
            throw new InvalidOperationException("no step is pending: call BeginStep first");
        }

        var s = _nextStage;
        var stage = _model.Stages[s];
        if (_perSequence)
        {
            var context = _rows[0].Slot.Context!;
            try
            {
                context.RunNextStage();
            }
            catch
            {
                _nextStage = -1;
                throw;
            }

            _nextStage++;
            if (_nextStage == _model.Stages.Count)
            {
                _rows[0].Slot.Length += _rows[0].Tokens.Length;
                _nextStage = -1;
            }

            return new BatchLogits(context.LogitsBuffer(s), _positions, 1, _stepTokens, _vocab);
        }

        var binding = _bindings[s];
        binding.BindInput(stage.TakesTokenIds ? GraphNames.InputIds : GraphNames.HiddenStates, stage.TakesTokenIds ? _idsValue! : _hiddenValues[(s - 1) & 1]);
        binding.BindInput(GraphNames.PositionIds, _positionsValue!);
        binding.BindInput(GraphNames.AttentionBias, _biasValue!);
        if (s < _model.Stages.Count - 1)
        {
            binding.BindOutput(GraphNames.LastHiddenState, _hiddenValues[s & 1]);
        }

        binding.BindOutput(GraphNames.Logits, _logitsValue!);
        try
        {
            _model.Session(s).RunWithBinding(_runOptions, binding);
        }
        catch
        {
            _nextStage = -1;
            throw;
        }

        Store(stage);
        _nextStage++;
        if (_nextStage == _model.Stages.Count)
        {
            foreach (var row in _rows)
            {
                row.Slot.Length += row.Tokens.Length;
            }

            _nextStage = -1;
        }

        return new BatchLogits(_logits, _positions, _rows.Count, _stepTokens, _vocab);
    }

    /// <summary>Drops the pending step (no sequence changes).</summary>
    public void Abandon()
    {
        if (_perSequence && _nextStage >= 0 && _rows.Count == 1)
        {
            _rows[0].Slot.Context?.Rollback(_rows[0].Slot.Length);
        }

        _nextStage = -1;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        foreach (var binding in _bindings)
        {
            binding?.Dispose();
        }

        foreach (var slot in _occupants)
        {
            slot?.Context?.Dispose();
        }

        DisposeStepTensors();
        DisposeKvViews();
        _runOptions.Dispose();
    }

    private void EnsureNoStep()
    {
        if (_nextStage >= 0)
        {
            throw new InvalidOperationException("a step is in progress: slots change only between steps");
        }
    }

    private void Grow(int capacity)
    {
        if (_perSequence)
        {
            while (_occupants.Count < capacity)
            {
                _occupants.Add(null);
            }

            return;
        }

        var perSlot = (long)_kvHeads * _slotLength * _headDim;
        var keys = new byte[_layers][];
        var values = new byte[_layers][];
        for (var layer = 0; layer < _layers; layer++)
        {
            // Pinned (ONNX Runtime reads them in place) and zeroed: the attention reads positions past a short row's
            // length (masked, so they must hold finite numbers).
            keys[layer] = Pinned(perSlot * capacity);
            values[layer] = Pinned(perSlot * capacity);
            if (_keys.Length > 0)
            {
                _keys[layer].CopyTo(keys[layer], 0);
                _values[layer].CopyTo(values[layer], 0);
            }
        }

        DisposeKvViews();
        _keys = keys;
        _values = values;
        _kvViews = new OrtValue?[_layers * 2][];
        for (var i = 0; i < _kvViews.Length; i++)
        {
            _kvViews[i] = new OrtValue?[capacity + 1];
        }

        while (_occupants.Count < capacity)
        {
            _occupants.Add(null);
        }

        _boundRows = -1;
    }

    // Moves the batch's rows into slots 0..k-1 with as few moves as possible: a row already there stays, and each
    // other row takes a free position (swapping with a sequence that is not in the batch). Row r then sits at
    // position _positions[r].
    private void Arrange()
    {
        var k = _rows.Count;
        Array.Clear(_held, 0, k);
        foreach (var row in _rows)
        {
            if (row.Slot.Index < k)
            {
                _held[row.Slot.Index] = true;
            }
        }

        var free = 0;
        for (var r = 0; r < k; r++)
        {
            var slot = _rows[r].Slot;
            if (slot.Index >= k)
            {
                while (_held[free])
                {
                    free++;
                }

                var other = _occupants[free];
                var from = slot.Index;
                Swap(free, other?.Length ?? 0, from, slot.Length);
                _occupants[free] = slot;
                _occupants[from] = other;
                slot.Index = free;
                if (other is not null)
                {
                    other.Index = from;
                }

                _held[free] = true;
                SlotMoves++;
            }

            _positions[r] = slot.Index;
        }
    }

    // Swaps the valid prefixes of two slots (lengths a and b) in every layer's keys and values.
    private void Swap(int slotA, int lengthA, int slotB, int lengthB)
    {
        var block = (long)_slotLength * _headDim;
        foreach (var arrays in (byte[][][])[_keys, _values])
        {
            foreach (var buffer in arrays)
            {
                for (var h = 0; h < _kvHeads; h++)
                {
                    var a = Span(buffer, ((slotA * (long)_kvHeads) + h) * block, block);
                    var b = Span(buffer, ((slotB * (long)_kvHeads) + h) * block, block);
                    var temp = _swap.AsSpan(0, lengthA * _headDim * _elementSize);
                    a[..temp.Length].CopyTo(temp);
                    b[..(lengthB * _headDim * _elementSize)].CopyTo(a);
                    temp.CopyTo(b);
                }
            }
        }
    }

    private void BindCache(int rows)
    {
        for (var s = 0; s < _bindings.Length; s++)
        {
            var stage = _model.Stages[s];
            for (var layer = stage.FirstLayer; layer < stage.EndLayer; layer++)
            {
                _bindings[s].BindInput(GraphNames.PastKey(layer), KvView(layer, 0, rows));
                _bindings[s].BindInput(GraphNames.PastValue(layer), KvView(layer, 1, rows));
            }
        }

        _boundRows = rows;
    }

    // Writes the stage's new keys and values of every row's real tokens into its slot, after its valid prefix. Only the
    // stage's own layers change, and only past the valid prefixes, so a step abandoned later leaves nothing to undo.
    private void Store(StageManifest stage)
    {
        var t = _stepTokens;
        for (var layer = stage.FirstLayer; layer < stage.EndLayer; layer++)
        {
            for (var kind = 0; kind < 2; kind++)
            {
                var step = kind == 0 ? _stepKeys[layer] : _stepValues[layer];
                var arena = kind == 0 ? _keys[layer] : _values[layer];
                for (var r = 0; r < _rows.Count; r++)
                {
                    var row = _rows[r];
                    var at = _positions[r];
                    var count = (long)row.Tokens.Length * _headDim;
                    for (var h = 0; h < _kvHeads; h++)
                    {
                        var from = Span(step, ((at * _kvHeads) + h) * (long)t * _headDim, count);
                        var to = ((((long)at * _kvHeads) + h) * _slotLength) + row.Slot.Length;
                        from.CopyTo(Span(arena, to * _headDim, count));
                    }
                }
            }
        }
    }

    /// <summary>
    /// Copies the cached keys and values of token <paramref name="from"/> of <paramref name="slot"/>'s sequence to
    /// position <paramref name="to"/> (a tree's kept leaf taking the place of the draft it replaced), in every layer.
    /// </summary>
    internal void MoveToken(SequenceSlot slot, int from, int to)
    {
        if (_perSequence)
        {
            throw new InvalidOperationException("token trees need the batched graphs");
        }

        var elements = (long)_headDim;
        for (var layer = 0; layer < _layers; layer++)
        {
            for (var kind = 0; kind < 2; kind++)
            {
                var arena = kind == 0 ? _keys[layer] : _values[layer];
                for (var h = 0; h < _kvHeads; h++)
                {
                    var head = (((long)slot.Index * _kvHeads) + h) * _slotLength;
                    Span(arena, (head + from) * _headDim, elements).CopyTo(Span(arena, (head + to) * _headDim, elements));
                }
            }
        }
    }

    private OrtValue KvView(int layer, int kind, int rows)
    {
        var views = _kvViews[(layer * 2) + kind];
        if (views[rows] is not { } view)
        {
            view = View(kind == 0 ? _keys[layer] : _values[layer], [rows, _kvHeads, _slotLength, _headDim]);
            views[rows] = view;
        }

        return view;
    }

    /// <summary>A zeroed, pinned buffer of <paramref name="elements"/> elements of the compute type.</summary>
    private byte[] Pinned(long elements) => GC.AllocateArray<byte>(checked((int)(elements * _elementSize)), pinned: true);

    /// <summary>Elements [start, start + count) of a compute-type buffer, as bytes.</summary>
    private Span<byte> Span(byte[] buffer, long start, long count) => buffer.AsSpan(checked((int)(start * _elementSize)), checked((int)(count * _elementSize)));

    /// <summary>A tensor of the compute type over the front of a pinned buffer (not owned by the step).</summary>
    private unsafe OrtValue View(byte[] buffer, long[] shape)
    {
        var elements = 1L;
        foreach (var dim in shape)
        {
            elements *= dim;
        }

        fixed (byte* data = buffer)
        {
            // The buffer is pinned for its lifetime, so the address stays valid after this block.
            return OrtValue.CreateTensorValueWithData(OrtMemoryInfo.DefaultInstance, _element, shape, (nint)data, elements * _elementSize);
        }
    }

    /// <summary>A step tensor of the compute type over a pinned buffer.</summary>
    private OrtValue Elements(byte[] buffer, long[] shape)
    {
        var value = View(buffer, shape);
        _stepTensors.Add(value);
        return value;
    }

    private OrtValue Tensor<T>(T[] buffer, int length, long[] shape)
        where T : unmanaged
    {
        var value = OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, buffer.AsMemory(0, length), shape);
        _stepTensors.Add(value);
        return value;
    }

    private void DisposeStepTensors()
    {
        foreach (var value in _stepTensors)
        {
            value.Dispose();
        }

        _stepTensors.Clear();
    }

    private void DisposeKvViews()
    {
        foreach (var views in _kvViews)
        {
            foreach (var view in views)
            {
                view?.Dispose();
            }
        }

        _kvViews = [];
    }
}

/// <summary>One sequence's place in a <see cref="BatchRunner"/>'s KV arena.</summary>
public sealed class SequenceSlot
{
    internal SequenceSlot(BatchRunner owner, int maxLength)
    {
        Owner = owner;
        MaxLength = maxLength;
    }

    /// <summary>Tokens held in the cache (committed by completed steps).</summary>
    public int Length { get; internal set; }

    /// <summary>The longest sequence the slot holds.</summary>
    public int MaxLength { get; }

    internal BatchRunner Owner { get; }

    internal int Index { get; set; }

    internal bool Released { get; set; }

    /// <summary>The sequence's own decoding context when the runner runs one sequence per step (shared-buffer form).</summary>
    internal DecodeContext? Context { get; set; }

    /// <summary>Shortens the sequence to <paramref name="length"/> tokens (free: the cache of a longer prefix stays valid).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="length"/> is negative or past the current length.</exception>
    public void Rollback(int length)
    {
        if (length < 0 || length > Length)
        {
            throw new ArgumentOutOfRangeException(nameof(length), length, $"cannot roll back to {length} tokens: the sequence holds {Length}");
        }

        Length = length;
    }

    /// <summary>
    /// Moves token <paramref name="from"/>'s cached keys and values to position <paramref name="to"/> (both under
    /// <see cref="Length"/>): a token tree's kept leaf takes the place of the draft it replaced. Only between steps, on
    /// the thread that runs them (a stage observer of the step that scored the leaf qualifies).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A position is outside the sequence.</exception>
    public void MoveToken(int from, int to)
    {
        if ((uint)from >= (uint)Length || (uint)to >= (uint)Length)
        {
            throw new ArgumentOutOfRangeException(nameof(from), $"cannot move token {from} to {to}: the sequence holds {Length}");
        }

        if (from != to)
        {
            Owner.MoveToken(this, from, to);
        }
    }
}

/// <summary>One row of a batched step: a sequence and the tokens to score after it.</summary>
/// <param name="Slot">The sequence.</param>
/// <param name="Tokens">The tokens to score after it.</param>
/// <param name="Parents">
/// Empty for a chain (each token follows the one before). Otherwise a token tree: for each token the index (in
/// <paramref name="Tokens"/>) of the token it follows, or −1 for one that follows the sequence itself; a parent comes
/// before its children. Each token then attends to the sequence and its own ancestors, at the position its depth gives,
/// and its keys and values are stored in step order (the caller moves the ones it keeps, <see cref="SequenceSlot.MoveToken"/>).
/// </param>
public readonly record struct BatchRow(SequenceSlot Slot, ReadOnlyMemory<TokenId> Tokens, ReadOnlyMemory<int> Parents = default);

/// <summary>A batched stage's logits: per row (in the order the step was given), one row of logits per scored token (padding excluded).</summary>
public readonly struct BatchLogits
{
    private readonly float[] _buffer;
    private readonly int[] _positions;
    private readonly int _stepTokens;
    private readonly int _vocab;

    internal BatchLogits(float[] buffer, int[] positions, int rows, int stepTokens, int vocab)
    {
        _buffer = buffer;
        _positions = positions;
        Rows = rows;
        _stepTokens = stepTokens;
        _vocab = vocab;
    }

    /// <summary>Rows in the step.</summary>
    public int Rows { get; }

    /// <summary>The logits of row <paramref name="row"/>'s first <paramref name="tokens"/> scored positions.</summary>
    public LogitsView Row(int row, int tokens)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(row);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(row, Rows);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(tokens, _stepTokens);
        return new LogitsView(_buffer, _positions[row] * _stepTokens * _vocab, tokens, _vocab);
    }
}
