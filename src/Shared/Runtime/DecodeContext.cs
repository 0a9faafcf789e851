using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using SpecEdge.Shared.Models.Onnx;
using SpecEdge.Shared.Tokenization;

namespace SpecEdge.Shared.Runtime;

/// <summary>
/// One sequence being decoded by a <see cref="LanguageModel"/>: its KV cache (one buffer per layer, bound as both past
/// and present so ONNX Runtime appends in place), and the pre-allocated input, hidden-state and logits buffers of its
/// steps. A step scores up to <see cref="RuntimeOptions.MaxStepTokens"/> tokens in one run per stage, stage by stage;
/// <see cref="Rollback"/> to any shorter length is free because the cache of a longer prefix stays valid for a shorter one.
/// Not thread-safe: one owner at a time.
/// </summary>
public sealed class DecodeContext : IDisposable
{
    private readonly LanguageModel _model;
    private readonly int _maxStep;
    private readonly int _hidden;
    private readonly long[] _inputIds;
    private readonly long[] _positionIds;
    private readonly long[] _attentionMask;
    private readonly float[][] _hiddenBuffers;
    private readonly Float16[][] _halfHiddenBuffers;
    private readonly bool _half;
    private readonly float[][] _logits;
    private readonly OrtValue[] _keys;
    private readonly OrtValue[] _values;
    private readonly OrtIoBinding[] _bindings;
    private readonly RunOptions _runOptions = new();
    private readonly Dictionary<int, OrtValue>[] _stepValues;
    private readonly Dictionary<int, OrtValue> _maskValues = [];
    private int _pendingCount;
    private int _nextStage;
    private bool _disposed;

    internal DecodeContext(LanguageModel model, int maxSequenceLength)
    {
        _model = model;
        MaxLength = maxSequenceLength;
        _maxStep = Math.Min(model.Options.MaxStepTokens, maxSequenceLength);
        var config = model.Config;
        _hidden = config.HiddenSize;
        _inputIds = new long[_maxStep];
        _positionIds = new long[_maxStep];
        _attentionMask = new long[maxSequenceLength];
        Array.Fill(_attentionMask, 1L);

        var stageCount = model.Stages.Count;
        _half = model.ComputeElementType == TensorElementType.Float16;
        _hiddenBuffers = new float[_half ? 0 : Math.Max(stageCount - 1, 0)][];
        _halfHiddenBuffers = new Float16[_half ? Math.Max(stageCount - 1, 0) : 0][];
        for (var i = 0; i < _hiddenBuffers.Length; i++)
        {
            _hiddenBuffers[i] = new float[_maxStep * _hidden];
        }

        for (var i = 0; i < _halfHiddenBuffers.Length; i++)
        {
            _halfHiddenBuffers[i] = new Float16[_maxStep * _hidden];
        }

        _logits = new float[stageCount][];
        for (var s = 0; s < stageCount; s++)
        {
            _logits[s] = new float[_maxStep * model.VocabSize];
        }

        _stepValues = new Dictionary<int, OrtValue>[stageCount];
        _keys = new OrtValue[config.NumHiddenLayers];
        _values = new OrtValue[config.NumHiddenLayers];
        _bindings = new OrtIoBinding[stageCount];
        try
        {
            // The cache lives where the model runs: in device memory on CUDA (bound in place, never copied to the
            // host between steps), in host memory on the CPU.
            long[] kvShape = [1, config.NumKeyValueHeads, maxSequenceLength, config.HeadDim];
            var allocator = model.CacheAllocator;
            for (var layer = 0; layer < config.NumHiddenLayers; layer++)
            {
                _keys[layer] = OrtValue.CreateAllocatedTensorValue(allocator, model.ComputeElementType, kvShape);
                _values[layer] = OrtValue.CreateAllocatedTensorValue(allocator, model.ComputeElementType, kvShape);
            }

            for (var s = 0; s < stageCount; s++)
            {
                _stepValues[s] = [];
                var stage = model.Stages[s];
                var binding = model.Session(s).CreateIoBinding();
                _bindings[s] = binding;
                for (var layer = stage.FirstLayer; layer < stage.EndLayer; layer++)
                {
                    binding.BindInput(GraphNames.PastKey(layer), _keys[layer]);
                    binding.BindInput(GraphNames.PastValue(layer), _values[layer]);
                    binding.BindOutput(GraphNames.PresentKey(layer), _keys[layer]);
                    binding.BindOutput(GraphNames.PresentValue(layer), _values[layer]);
                }
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>Tokens held in the KV cache (committed by completed steps).</summary>
    public int Length { get; private set; }

    /// <summary>The longest sequence this context holds.</summary>
    public int MaxLength { get; }

    /// <summary>The most tokens one step scores.</summary>
    public int MaxStepTokens => _maxStep;

    /// <summary>The model the context runs.</summary>
    public LanguageModel Model => _model;

    /// <summary>The stage the pending step runs next, or -1 when no step is pending.</summary>
    public int NextStage => _pendingCount == 0 ? -1 : _nextStage;

    /// <summary>
    /// Scores <paramref name="tokens"/> after the current sequence through every stage and appends them to it.
    /// </summary>
    /// <returns>The final head's logits for each of the tokens, valid until the next step.</returns>
    public LogitsView Forward(ReadOnlySpan<TokenId> tokens)
    {
        BeginStep(tokens);
        LogitsView logits = default;
        while (_pendingCount > 0)
        {
            logits = RunNextStage();
        }

        return logits;
    }

    /// <summary>
    /// Appends a prompt of any length (in chunks of <see cref="MaxStepTokens"/>) and returns the logits of its last
    /// position.
    /// </summary>
    public ReadOnlySpan<float> Prefill(ReadOnlySpan<TokenId> tokens)
    {
        if (tokens.IsEmpty)
        {
            throw new ArgumentException("a prefill needs at least one token", nameof(tokens));
        }

        CheckCapacity(tokens.Length);
        LogitsView last = default;
        for (var start = 0; start < tokens.Length; start += _maxStep)
        {
            last = Forward(tokens.Slice(start, Math.Min(_maxStep, tokens.Length - start)));
        }

        return last.Last;
    }

    /// <summary>
    /// Starts a step over <paramref name="tokens"/>; <see cref="RunNextStage"/> then runs it one stage at a time, so the
    /// logits of an exit are in hand as soon as its stage ends. A step left unfinished is discarded by the next
    /// <see cref="BeginStep"/> or <see cref="Rollback"/>.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A token id is outside the vocabulary.</exception>
    /// <exception cref="ArgumentException">No tokens, or more than <see cref="MaxStepTokens"/>.</exception>
    /// <exception cref="SequenceTooLongException">The sequence would pass <see cref="MaxLength"/>.</exception>
    public void BeginStep(ReadOnlySpan<TokenId> tokens)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (tokens.IsEmpty || tokens.Length > _maxStep)
        {
            throw new ArgumentException($"a step scores 1 to {_maxStep} tokens, not {tokens.Length}", nameof(tokens));
        }

        CheckCapacity(tokens.Length);
        var vocab = _model.VocabSize;
        for (var i = 0; i < tokens.Length; i++)
        {
            if ((uint)tokens[i].Value >= (uint)vocab)
            {
                throw new ArgumentOutOfRangeException(nameof(tokens), tokens[i].Value, $"token id {tokens[i].Value} at step position {i} is outside the vocabulary of {vocab}");
            }

            _inputIds[i] = tokens[i].Value;
            _positionIds[i] = Length + i;
        }

        _pendingCount = tokens.Length;
        _nextStage = 0;
    }

    /// <summary>Runs the next stage of the pending step and returns its head's logits (an exit head, or the final head for the last stage).</summary>
    public LogitsView RunNextStage()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_pendingCount == 0)
        {
            throw new InvalidOperationException("no step is pending: call BeginStep first");
        }

        var s = _nextStage;
        var count = _pendingCount;
        var stage = _model.Stages[s];
        var binding = _bindings[s];
        var values = _stepValues[s];
        var total = Length + count;

        if (stage.TakesTokenIds)
        {
            binding.BindInput(GraphNames.InputIds, View(values, 0, _inputIds, count, 1));
        }
        else
        {
            binding.BindInput(GraphNames.HiddenStates, _half ? View(values, 1, _halfHiddenBuffers[s - 1], count, _hidden) : View(values, 1, _hiddenBuffers[s - 1], count, _hidden));
        }

        binding.BindInput(GraphNames.PositionIds, View(values, 2, _positionIds, count, 1));
        binding.BindInput(GraphNames.AttentionMask, MaskValue(total));
        if (s < _model.Stages.Count - 1)
        {
            binding.BindOutput(GraphNames.LastHiddenState, _half ? View(values, 3, _halfHiddenBuffers[s], count, _hidden) : View(values, 3, _hiddenBuffers[s], count, _hidden));
        }

        binding.BindOutput(GraphNames.Logits, View(values, 4, _logits[s], count, _model.VocabSize));

        _model.Session(s).RunWithBinding(_runOptions, binding);

        _nextStage++;
        if (_nextStage == _model.Stages.Count)
        {
            Length = total;
            _pendingCount = 0;
        }

        return new LogitsView(_logits[s], count, _model.VocabSize);
    }

    /// <summary>The logits the given stage produced in the current or last step.</summary>
    public LogitsView StageLogits(int stage, int rows) => new(_logits[stage], rows, _model.VocabSize);

    /// <summary>The buffer a stage writes its logits into ([step tokens, vocabulary], row-major).</summary>
    internal float[] LogitsBuffer(int stage) => _logits[stage];

    /// <summary>Shortens the sequence to <paramref name="length"/> tokens (and discards any unfinished step).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="length"/> is negative or past the current length.</exception>
    public void Rollback(int length)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (length < 0 || length > Length)
        {
            throw new ArgumentOutOfRangeException(nameof(length), length, $"cannot roll back to {length} tokens: the sequence holds {Length}");
        }

        Length = length;
        _pendingCount = 0;
    }

    /// <summary>Empties the sequence.</summary>
    public void Reset() => Rollback(0);

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

        foreach (var value in _keys.Concat(_values))
        {
            value?.Dispose();
        }

        foreach (var values in _stepValues)
        {
            if (values is null)
            {
                continue;
            }

            foreach (var value in values.Values)
            {
                value.Dispose();
            }
        }

        foreach (var value in _maskValues.Values)
        {
            value.Dispose();
        }

        _runOptions.Dispose();
    }

    private void CheckCapacity(int adding)
    {
        if (Length + adding > MaxLength)
        {
            throw new SequenceTooLongException(Length, adding, MaxLength);
        }
    }

    // Tensor views over the context's pinned buffers, one per (kind, token count), made once and reused: no
    // allocation in the decode loop once every step size has been seen. Width 1 gives [1, count], else [1, count, width].
    private static OrtValue View<T>(Dictionary<int, OrtValue> cache, int kind, T[] buffer, int count, int width)
        where T : unmanaged
    {
        var key = (kind << 16) | count;
        if (!cache.TryGetValue(key, out var value))
        {
            long[] shape = width == 1 ? [1, count] : [1, count, width];
            value = OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, buffer.AsMemory(0, count * width), shape);
            cache[key] = value;
        }

        return value;
    }

    private OrtValue MaskValue(int total)
    {
        if (!_maskValues.TryGetValue(total, out var value))
        {
            value = OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, _attentionMask.AsMemory(0, total), [1, total]);
            _maskValues[total] = value;
        }

        return value;
    }
}
