using SpecEdge.Shared.Models.Checkpoints;
using SpecEdge.Shared.Models.Onnx.Proto;
using DataType = SpecEdge.Shared.Models.Onnx.Proto.TensorProto.Types.DataType;

namespace SpecEdge.Shared.Models.Onnx;

/// <summary>Names of the graph inputs and outputs, in the common decoder I/O convention.</summary>
public static class GraphNames
{
    /// <summary>The first stage's token ids [batch, tokens].</summary>
    public const string InputIds = "input_ids";
    /// <summary>A later stage's input: the previous stage's hidden states.</summary>
    public const string HiddenStates = "hidden_states";

    /// <summary>The hidden states a stage hands to the next one.</summary>
    public const string LastHiddenState = "last_hidden_state";
    /// <summary>The shared-buffer form's attention mask [batch, total length] (ones over the valid prefix and the step).</summary>
    public const string AttentionMask = "attention_mask";
    /// <summary>The tokens' positions [batch, tokens].</summary>
    public const string PositionIds = "position_ids";
    /// <summary>The stage head's logits [batch, tokens, vocabulary].</summary>
    public const string Logits = "logits";

    /// <summary>Layer <paramref name="layer"/>'s cached keys.</summary>
    public static string PastKey(int layer) => $"past_key_values.{layer}.key";

    /// <summary>Layer <paramref name="layer"/>'s cached values.</summary>
    public static string PastValue(int layer) => $"past_key_values.{layer}.value";

    /// <summary>Layer <paramref name="layer"/>'s keys after the step (the same buffer as the past in the shared-buffer form).</summary>
    public static string PresentKey(int layer) => $"present.{layer}.key";

    /// <summary>Layer <paramref name="layer"/>'s values after the step.</summary>
    public static string PresentValue(int layer) => $"present.{layer}.value";

    /// <summary>A batched graph's additive attention bias [batch, 1, step tokens, past + step tokens] (0 or -inf).</summary>
    public const string AttentionBias = "attention_bias";

    /// <summary>A batched graph's keys of this step's tokens [batch, kv heads, step tokens, head dim] (the caller stores them).</summary>
    public static string StepKey(int layer) => $"step.{layer}.key";

    /// <summary>A batched graph's values of this step's tokens.</summary>
    public static string StepValue(int layer) => $"step.{layer}.value";
}

/// <summary>How a stage graph attends to its KV cache.</summary>
public enum AttentionForm
{
    /// <summary>
    /// GroupQueryAttention over one shared past/present buffer per layer, written in place (one sequence per run: the
    /// CPU kernel takes several tokens with a past only at batch size 1).
    /// </summary>
    SharedBuffer,

    /// <summary>
    /// Attention from standard operators over a batch of sequences of different lengths: the past is read (the first
    /// <c>attention_bias</c> width − step tokens positions of each slot), each row's own positions chosen by the additive
    /// bias, and this step's keys and values are outputs the caller stores.
    /// </summary>
    Batched,
}

/// <summary>Where the weights of an exit head come from.</summary>
/// <param name="Layer">The exit layer (the head reads the hidden state after this many layers).</param>
/// <param name="Norm">The head's RMSNorm weight; the final norm when null.</param>
/// <param name="Projection">An optional residual projection [hidden, hidden] applied before the norm (h + h·Pᵀ).</param>
/// <param name="LmHead">The head's vocabulary projection [vocab, hidden]; the model's LM head when null.</param>
internal sealed record ExitHeadWeights(int Layer, string? Norm, string? Projection, string? LmHead);

/// <summary>
/// Writes a Llama decoder as ONNX graphs built from ONNX Runtime's fused CPU/CUDA operators
/// (SimplifiedLayerNormalization, SkipSimplifiedLayerNormalization, RotaryEmbedding, GroupQueryAttention):
/// one graph per stage, each taking token ids (first stage) or hidden states and the KV cache of its own layers.
/// </summary>
internal sealed class LlamaGraphWriter
{
    private readonly LlamaConfig _config;
    private readonly Func<string, float[]> _read;
    private readonly TensorDType _storage;
    private readonly TensorDType _compute;
    private readonly DataType _element;
    private readonly InitializerStore _store;
    private readonly Action<int>? _onLayerWritten;
    private readonly WeightQuantization _quantization;
    private readonly int _accuracyLevel;
    private (string Name, QuantizedMatrix Matrix)? _lastQuantized;

    /// <param name="config">The model's configuration.</param>
    /// <param name="readTensor">Reads a checkpoint tensor as float32.</param>
    /// <param name="storage">The storage type of the weights that are not quantized.</param>
    /// <param name="store">Where initializers go.</param>
    /// <param name="onLayerWritten">Called after each layer.</param>
    /// <param name="quantization">Block quantization of the projections and LM heads (MatMulNBits), or none.</param>
    /// <param name="compute">
    /// The type activations, the KV cache and the stage hand-over are in: float32, or float16 for GPU verification
    /// (norms accumulate in float32, softmax runs in float32, logits leave the graph as float32).
    /// </param>
    /// <param name="accuracyLevel">
    /// MatMulNBits' accuracy_level: 0 computes in float32 from the dequantized weights; 4 lets the CPU kernel quantize
    /// the activations to int8 per block and use integer dot products (faster, and looser).
    /// </param>
    public LlamaGraphWriter(
        LlamaConfig config,
        Func<string, float[]> readTensor,
        TensorDType storage,
        InitializerStore store,
        Action<int>? onLayerWritten = null,
        WeightQuantization quantization = WeightQuantization.None,
        int accuracyLevel = 0,
        TensorDType compute = TensorDType.Float32)
    {
        _compute = compute;
        _element = OnnxGraphBuilder.ElementType(compute);
        _config = config;
        _read = readTensor;
        _storage = storage;
        _store = store;
        _onLayerWritten = onLayerWritten;
        _quantization = quantization;
        _accuracyLevel = accuracyLevel;
    }

    /// <summary>Builds the graph of layers [<paramref name="firstLayer"/>, <paramref name="endLayer"/>).</summary>
    /// <param name="firstLayer">The first layer; layer 0 makes the graph take token ids.</param>
    /// <param name="endLayer">One past the last layer.</param>
    /// <param name="head">The head at the end of the stage: the final head (null norm/head names) or an exit head; null for none.</param>
    /// <param name="emitHidden">Whether the stage outputs its hidden states for the next stage.</param>
    /// <param name="producerVersion">The converter version recorded in the file.</param>
    /// <param name="metadata">Metadata properties of the ONNX model.</param>
    /// <param name="form">How attention reads the cache.</param>
    public ModelProto BuildStage(int firstLayer, int endLayer, ExitHeadWeights? head, bool emitHidden, string producerVersion, IReadOnlyDictionary<string, string> metadata, AttentionForm form = AttentionForm.SharedBuffer)
    {
        var c = _config;
        var batched = form == AttentionForm.Batched;
        var g = new OnnxGraphBuilder($"specedge_llama_layers_{firstLayer}_{endLayer}{(batched ? "_batched" : string.Empty)}", _store);

        // Inputs, in the common decoder convention.
        string hidden;
        if (firstLayer == 0)
        {
            g.AddInput(GraphNames.InputIds, DataType.Int64, "batch_size", "sequence_length");
        }
        else
        {
            g.AddInput(GraphNames.HiddenStates, _element, "batch_size", "sequence_length", c.HiddenSize);
        }

        if (batched)
        {
            g.AddInput(GraphNames.AttentionBias, DataType.Float, "batch_size", 1, "sequence_length", "total_sequence_length");
        }
        else
        {
            g.AddInput(GraphNames.AttentionMask, DataType.Int64, "batch_size", "total_sequence_length");
        }

        g.AddInput(GraphNames.PositionIds, DataType.Int64, "batch_size", "sequence_length");
        for (var layer = firstLayer; layer < endLayer; layer++)
        {
            g.AddInput(GraphNames.PastKey(layer), _element, "batch_size", c.NumKeyValueHeads, "past_sequence_length", c.HeadDim);
            g.AddInput(GraphNames.PastValue(layer), _element, "batch_size", c.NumKeyValueHeads, "past_sequence_length", c.HeadDim);
        }

        if (firstLayer == 0)
        {
            var embedding = Weight(g, LlamaTensorNames.Embedding, [c.VocabSize, c.HiddenSize], transpose: false);
            hidden = g.Node("Gather", [embedding, GraphNames.InputIds], ["/embed/output"], attributes: [OnnxGraphBuilder.Int("axis", 0)])[0];
        }
        else
        {
            hidden = GraphNames.HiddenStates;
        }

        string seqLensK = string.Empty, totalLength = string.Empty, pastEnd = string.Empty, splitSizes = string.Empty, bias = string.Empty;
        if (batched)
        {
            // The past each row reads: bias width − step tokens positions; the bias, repeated for each query head of a
            // key/value head (rows g·T + t of the grouped query), once for all the stage's layers.
            var biasShape = g.Node("Shape", [GraphNames.AttentionBias])[0];
            var total = g.Node("Gather", [biasShape, g.AddInt64Constant("/const/index3", [1], 3)], attributes: [OnnxGraphBuilder.Int("axis", 0)])[0];
            var steps = g.Node("Gather", [biasShape, g.AddInt64Constant("/const/index2", [1], 2)], attributes: [OnnxGraphBuilder.Int("axis", 0)])[0];
            pastEnd = g.Node("Sub", [total, steps], ["/attn/past_end"])[0];
            splitSizes = g.Node("Concat", [pastEnd, steps], ["/attn/split_sizes"], attributes: [OnnxGraphBuilder.Int("axis", 0)])[0];
            var group = c.NumAttentionHeads / c.NumKeyValueHeads;

            // The bias comes in as float32 (0 or -inf) whatever the graph computes in.
            bias = _compute == TensorDType.Float32 ? GraphNames.AttentionBias : g.Node("Cast", [GraphNames.AttentionBias], ["/attn/bias_cast"], attributes: [OnnxGraphBuilder.Int("to", (long)_element)])[0];
            bias = group == 1 ? bias : g.Node("Tile", [bias, g.AddInt64Constant("/const/bias_repeats", [4], 1, 1, group, 1)], ["/attn/bias_grouped"])[0];
        }
        else
        {
            // seqlens_k = sum(attention_mask) - 1 and total_sequence_length = mask width, as GroupQueryAttention wants them.
            var axis1 = g.AddInt64Constant("/const/axis1", [1], 1);
            var one = g.AddInt64Constant("/const/one", [], 1);
            var index1 = g.AddInt64Constant("/const/index1", [], 1);
            var maskSum = g.Node("ReduceSum", [GraphNames.AttentionMask, axis1], attributes: [OnnxGraphBuilder.Int("keepdims", 0)])[0];
            var seqLensK64 = g.Node("Sub", [maskSum, one])[0];
            seqLensK = g.Node("Cast", [seqLensK64], ["/attn/seqlens_k"], attributes: [OnnxGraphBuilder.Int("to", (long)DataType.Int32)])[0];
            var maskShape = g.Node("Shape", [GraphNames.AttentionMask])[0];
            var total64 = g.Node("Gather", [maskShape, index1], attributes: [OnnxGraphBuilder.Int("axis", 0)])[0];
            totalLength = g.Node("Cast", [total64], ["/attn/total_seq_len"], attributes: [OnnxGraphBuilder.Int("to", (long)DataType.Int32)])[0];
        }

        var (cos, sin) = RopeCaches(g);
        var eps = (float)c.RmsNormEps;

        string? pending = null; // the last sub-block's output, not yet added to the residual stream
        var residual = hidden;
        for (var layer = firstLayer; layer < endLayer; layer++)
        {
            var p = $"/layers.{layer}";
            var inputNorm = Weight(g, LlamaTensorNames.InputNorm(layer), [c.HiddenSize], transpose: false);
            string normed;
            if (pending is null)
            {
                normed = g.Node("SimplifiedLayerNormalization", [residual, inputNorm], [$"{p}/input_layernorm/output"], attributes: [OnnxGraphBuilder.Float("epsilon", eps), OnnxGraphBuilder.Int("axis", -1), OnnxGraphBuilder.Int("stash_type", 1)])[0];
            }
            else
            {
                var outputs = g.Node("SkipSimplifiedLayerNormalization", [pending, residual, inputNorm], [$"{p}/input_layernorm/output", string.Empty, string.Empty, $"{p}/input_layernorm/residual"], OnnxGraphBuilder.MicrosoftDomain, [OnnxGraphBuilder.Float("epsilon", eps)]);
                normed = outputs[0];
                residual = outputs[3];
            }

            var q = Projection(g, normed, LlamaTensorNames.QProj(layer), c.NumAttentionHeads * c.HeadDim, $"{p}/q_proj");
            var k = Projection(g, normed, LlamaTensorNames.KProj(layer), c.NumKeyValueHeads * c.HeadDim, $"{p}/k_proj");
            var v = Projection(g, normed, LlamaTensorNames.VProj(layer), c.NumKeyValueHeads * c.HeadDim, $"{p}/v_proj");
            var qRot = g.Node("RotaryEmbedding", [q, GraphNames.PositionIds, cos, sin], [$"{p}/q_rotary"], OnnxGraphBuilder.MicrosoftDomain, [OnnxGraphBuilder.Int("interleaved", 0), OnnxGraphBuilder.Int("num_heads", c.NumAttentionHeads)])[0];
            var kRot = g.Node("RotaryEmbedding", [k, GraphNames.PositionIds, cos, sin], [$"{p}/k_rotary"], OnnxGraphBuilder.MicrosoftDomain, [OnnxGraphBuilder.Int("interleaved", 0), OnnxGraphBuilder.Int("num_heads", c.NumKeyValueHeads)])[0];
            var attention = batched
                ? BatchedAttention(g, p, layer, qRot, kRot, v, pastEnd, splitSizes, bias)
                : g.Node(
                "GroupQueryAttention",
                [qRot, kRot, v, GraphNames.PastKey(layer), GraphNames.PastValue(layer), seqLensK, totalLength],
                [$"{p}/attn/output", GraphNames.PresentKey(layer), GraphNames.PresentValue(layer)],
                OnnxGraphBuilder.MicrosoftDomain,
                [
                    OnnxGraphBuilder.Int("num_heads", c.NumAttentionHeads),
                    OnnxGraphBuilder.Int("kv_num_heads", c.NumKeyValueHeads),
                    OnnxGraphBuilder.Float("scale", (float)(1.0 / Math.Sqrt(c.HeadDim))),
                ])[0];
            var attnOut = MatMul(g, attention, LlamaTensorNames.OProj(layer), c.HiddenSize, c.NumAttentionHeads * c.HeadDim, $"{p}/o_proj");

            var postNorm = Weight(g, LlamaTensorNames.PostAttentionNorm(layer), [c.HiddenSize], transpose: false);
            var post = g.Node("SkipSimplifiedLayerNormalization", [attnOut, residual, postNorm], [$"{p}/post_attention_layernorm/output", string.Empty, string.Empty, $"{p}/post_attention_layernorm/residual"], OnnxGraphBuilder.MicrosoftDomain, [OnnxGraphBuilder.Float("epsilon", eps)]);
            residual = post[3];
            var gate = MatMul(g, post[0], LlamaTensorNames.GateProj(layer), c.IntermediateSize, c.HiddenSize, $"{p}/gate_proj");
            var up = MatMul(g, post[0], LlamaTensorNames.UpProj(layer), c.IntermediateSize, c.HiddenSize, $"{p}/up_proj");
            var sigmoid = g.Node("Sigmoid", [gate], [$"{p}/mlp/sigmoid"])[0];
            var silu = g.Node("Mul", [gate, sigmoid], [$"{p}/mlp/silu"])[0];
            var act = g.Node("Mul", [silu, up], [$"{p}/mlp/act"])[0];
            pending = MatMul(g, act, LlamaTensorNames.DownProj(layer), c.HiddenSize, c.IntermediateSize, $"{p}/down_proj");
            _onLayerWritten?.Invoke(layer);
        }

        // The stage's hidden state: the residual stream after its last layer.
        var stageHidden = g.Node("Add", [pending!, residual], [emitHidden ? GraphNames.LastHiddenState : "/stage/hidden"])[0];
        if (emitHidden)
        {
            g.AddOutput(GraphNames.LastHiddenState, _element, "batch_size", "sequence_length", c.HiddenSize);
        }

        if (head is not null)
        {
            var headInput = stageHidden;
            if (head.Projection is not null)
            {
                var projected = MatMul(g, stageHidden, head.Projection, c.HiddenSize, c.HiddenSize, "/exit_head/proj");
                headInput = g.Node("Add", [stageHidden, projected], ["/exit_head/proj_residual"])[0];
            }

            var normWeight = Weight(g, head.Norm ?? LlamaTensorNames.FinalNorm, [c.HiddenSize], transpose: false);
            var normed = g.Node("SimplifiedLayerNormalization", [headInput, normWeight], ["/head/norm"], attributes: [OnnxGraphBuilder.Float("epsilon", eps), OnnxGraphBuilder.Int("axis", -1), OnnxGraphBuilder.Int("stash_type", 1)])[0];
            var lmHead = head.LmHead ?? (c.TieWordEmbeddings ? LlamaTensorNames.Embedding : LlamaTensorNames.LmHead);
            var storedHead = lmHead == LlamaTensorNames.Embedding ? "lm_head.weight.tied" : lmHead;
            if (_quantization == WeightQuantization.None)
            {
                var headWeight = Weight(g, lmHead, [c.VocabSize, c.HiddenSize], transpose: true, storedName: storedHead);
                if (_compute == TensorDType.Float32)
                {
                    g.Node("MatMul", [normed, headWeight], [GraphNames.Logits]);
                }
                else
                {
                    // Logits leave as float32: the sampler and the verdict rules read float32.
                    var logits = g.Node("MatMul", [normed, headWeight], ["/head/logits"])[0];
                    g.Node("Cast", [logits], [GraphNames.Logits], attributes: [OnnxGraphBuilder.Int("to", (long)DataType.Float)]);
                }
            }
            else
            {
                QuantizedMatMul(g, normed, lmHead, storedHead, c.VocabSize, c.HiddenSize, GraphNames.Logits);
            }

            g.AddOutput(GraphNames.Logits, DataType.Float, "batch_size", "sequence_length", c.VocabSize);
        }

        for (var layer = firstLayer; layer < endLayer; layer++)
        {
            if (batched)
            {
                g.AddOutput(GraphNames.StepKey(layer), _element, "batch_size", c.NumKeyValueHeads, "sequence_length", c.HeadDim);
                g.AddOutput(GraphNames.StepValue(layer), _element, "batch_size", c.NumKeyValueHeads, "sequence_length", c.HeadDim);
            }
            else
            {
                g.AddOutput(GraphNames.PresentKey(layer), _element, "batch_size", c.NumKeyValueHeads, "total_sequence_length", c.HeadDim);
                g.AddOutput(GraphNames.PresentValue(layer), _element, "batch_size", c.NumKeyValueHeads, "total_sequence_length", c.HeadDim);
            }
        }

        return g.Build(producerVersion, metadata);
    }

    /// <summary>
    /// Grouped-query attention from standard operators: queries [B, T, H·D] grouped by key/value head as
    /// [B, Hkv, G·T, D] (query head h uses key/value head h / G, as Hugging Face's repeat_kv), scored against the
    /// first past_end positions of the cache and against this step's keys, plus the bias, softmax over both, and the
    /// two value products summed, back to [B, T, H·D]. This step's keys and values leave the graph as outputs.
    /// </summary>
    private string BatchedAttention(OnnxGraphBuilder g, string p, int layer, string q, string k, string v, string pastEnd, string splitSizes, string bias)
    {
        var c = _config;
        var heads = c.NumAttentionHeads;
        var kvHeads = c.NumKeyValueHeads;
        var d = c.HeadDim;
        var perm0213 = OnnxGraphBuilder.Ints("perm", 0, 2, 1, 3);
        var headsShape = g.AddInt64Constant("/const/shape_heads", [4], 0, 0, heads, d);
        var kvShape = g.AddInt64Constant("/const/shape_kv_heads", [4], 0, 0, kvHeads, d);
        var groupedShape = g.AddInt64Constant("/const/shape_grouped", [4], 0, kvHeads, -1, d);
        var ungroupedShape = g.AddInt64Constant("/const/shape_ungrouped", [4], 0, heads, -1, d);
        var mergedShape = g.AddInt64Constant("/const/shape_merged", [3], 0, 0, heads * d);
        var zero = g.AddInt64Constant("/const/zero1", [1], 0);
        var axis2 = g.AddInt64Constant("/const/axis2", [1], 2);
        var scale = g.AddWeight("/const/attention_scale", [], () => [(float)(1.0 / Math.Sqrt(d))], _compute, _compute);

        var qHeads = g.Node("Transpose", [g.Node("Reshape", [q, headsShape])[0]], attributes: [perm0213])[0];
        var qGrouped = g.Node("Reshape", [qHeads, groupedShape], [$"{p}/attn/q_grouped"])[0];
        var kNew = g.Node("Transpose", [g.Node("Reshape", [k, kvShape])[0]], [GraphNames.StepKey(layer)], attributes: [perm0213])[0];
        var vNew = g.Node("Transpose", [g.Node("Reshape", [v, kvShape])[0]], [GraphNames.StepValue(layer)], attributes: [perm0213])[0];
        var kPast = g.Node("Slice", [GraphNames.PastKey(layer), zero, pastEnd, axis2])[0];
        var vPast = g.Node("Slice", [GraphNames.PastValue(layer), zero, pastEnd, axis2])[0];

        // Scores against the past and against this step's keys apart, joined only as scores (G·T rows, far smaller
        // than the keys): no copy of the whole past for a concatenation.
        var transposeLast = OnnxGraphBuilder.Ints("perm", 0, 1, 3, 2);
        var pastScores = g.Node("MatMul", [qGrouped, g.Node("Transpose", [kPast], attributes: [transposeLast])[0]])[0];
        var newScores = g.Node("MatMul", [qGrouped, g.Node("Transpose", [kNew], attributes: [transposeLast])[0]])[0];
        var scores = g.Node("Concat", [pastScores, newScores], [$"{p}/attn/scores"], attributes: [OnnxGraphBuilder.Int("axis", 3)])[0];
        var scaled = g.Node("Mul", [scores, scale])[0];
        var biased = g.Node("Add", [scaled, bias])[0];
        string probs;
        if (_compute == TensorDType.Float32)
        {
            probs = g.Node("Softmax", [biased], [$"{p}/attn/probs"], attributes: [OnnxGraphBuilder.Int("axis", -1)])[0];
        }
        else
        {
            // Softmax in float32 (its sum over a long row is where float16 loses most), as fused kernels do.
            var wide = g.Node("Cast", [biased], attributes: [OnnxGraphBuilder.Int("to", (long)DataType.Float)])[0];
            var softmax = g.Node("Softmax", [wide], attributes: [OnnxGraphBuilder.Int("axis", -1)])[0];
            probs = g.Node("Cast", [softmax], [$"{p}/attn/probs"], attributes: [OnnxGraphBuilder.Int("to", (long)_element)])[0];
        }

        var parts = g.Node("Split", [probs, splitSizes], [$"{p}/attn/probs_past", $"{p}/attn/probs_new"], attributes: [OnnxGraphBuilder.Int("axis", 3)]);
        var context = g.Node("Add", [g.Node("MatMul", [parts[0], vPast])[0], g.Node("MatMul", [parts[1], vNew])[0]])[0];
        var ungrouped = g.Node("Reshape", [context, ungroupedShape])[0];
        var merged = g.Node("Transpose", [ungrouped], attributes: [perm0213])[0];
        return g.Node("Reshape", [merged, mergedShape], [$"{p}/attn/output"])[0];
    }

    /// <summary>
    /// Adds a weight. Hugging Face stores projections as [out, in]; MatMul wants [in, out], so projections are
    /// transposed once here rather than by a Transpose node at every session load.
    /// </summary>
    private string Weight(OnnxGraphBuilder g, string name, long[] hfShape, bool transpose, string? storedName = null)
    {
        var dims = transpose ? new[] { hfShape[1], hfShape[0] } : hfShape;
        return g.AddWeight(storedName ?? name, dims, () => transpose ? Transpose(_read(name), (int)hfShape[0], (int)hfShape[1]) : _read(name), _storage, _compute);
    }

    /// <summary>A query, key or value projection: the MatMul, then the bias where the model has one (Qwen2).</summary>
    private string Projection(OnnxGraphBuilder g, string input, string weightName, int outFeatures, string scope)
    {
        var projected = MatMul(g, input, weightName, outFeatures, _config.HiddenSize, scope);
        if (!_config.AttentionBias)
        {
            return projected;
        }

        var bias = Weight(g, LlamaTensorNames.Bias(weightName), [outFeatures], transpose: false);
        return g.Node("Add", [projected, bias], [$"{scope}/biased"])[0];
    }

    private string MatMul(OnnxGraphBuilder g, string input, string weightName, int outFeatures, int inFeatures, string scope)
    {
        if (_quantization != WeightQuantization.None)
        {
            return QuantizedMatMul(g, input, weightName, weightName, outFeatures, inFeatures, $"{scope}/output");
        }

        var weight = Weight(g, weightName, [outFeatures, inFeatures], transpose: true);
        return g.Node("MatMul", [input, weight], [$"{scope}/output"])[0];
    }

    /// <summary>
    /// A projection by a block-quantized weight: com.microsoft MatMulNBits with the packed blocks, float32 scales and
    /// packed zero points as initializers (the three are quantized once, though both graph forms use them).
    /// </summary>
    private string QuantizedMatMul(OnnxGraphBuilder g, string input, string weightName, string storedName, int outFeatures, int inFeatures, string output)
    {
        if (_quantization == WeightQuantization.Int8Qdq)
        {
            return QdqMatMul(g, input, weightName, storedName, outFeatures, inFeatures, output);
        }

        var bits = _quantization.Bits();
        QuantizedMatrix Quantized()
        {
            if (_lastQuantized is not { } last || last.Name != storedName)
            {
                _lastQuantized = (storedName, BlockQuantizer.Quantize(_read(weightName), outFeatures, inFeatures, bits));
            }

            return _lastQuantized.Value.Matrix;
        }

        var (blocks, blockBytes, zeroBytes) = BlockQuantizer.Layout(inFeatures, bits);
        var packed = g.AddRawWeight($"{storedName}.q{bits}", [outFeatures, blocks, blockBytes], DataType.Uint8, () => Quantized().Packed);
        var scales = g.AddRawWeight($"{storedName}.q{bits}.scales", [(long)outFeatures * blocks], DataType.Float, () => System.Runtime.InteropServices.MemoryMarshal.AsBytes(Quantized().Scales.AsSpan()).ToArray());
        var zeroPoints = g.AddRawWeight($"{storedName}.q{bits}.zero_points", [(long)outFeatures * zeroBytes], DataType.Uint8, () => Quantized().ZeroPoints);
        return g.Node(
            "MatMulNBits",
            [input, packed, scales, zeroPoints],
            [output],
            OnnxGraphBuilder.MicrosoftDomain,
            [
                OnnxGraphBuilder.Int("K", inFeatures),
                OnnxGraphBuilder.Int("N", outFeatures),
                OnnxGraphBuilder.Int("bits", bits),
                OnnxGraphBuilder.Int("block_size", BlockQuantizer.DefaultBlockSize),
                OnnxGraphBuilder.Int("accuracy_level", _accuracyLevel),
            ])[0];
    }

    /// <summary>
    /// The standard QDQ form of a weight-only 8-bit projection: the [in, out] weight as uint8 with a scale and zero point
    /// per output column, DequantizeLinear (axis 1), then MatMul. A whole column shares one range (a block is its full
    /// length), which is coarser than MatMulNBits' blocks of 32.
    /// </summary>
    private string QdqMatMul(OnnxGraphBuilder g, string input, string weightName, string storedName, int outFeatures, int inFeatures, string output)
    {
        (byte[] Codes, float[] Scales, byte[] Zeros) Quantized()
        {
            // One block per output row (the whole row), then the codes transposed to [in, out] as MatMul wants them.
            var rows = BlockQuantizer.Quantize(_read(weightName), outFeatures, inFeatures, bits: 8, blockSize: inFeatures);
            var codes = new byte[(long)inFeatures * outFeatures];
            for (var o = 0; o < outFeatures; o++)
            {
                for (var i = 0; i < inFeatures; i++)
                {
                    codes[((long)i * outFeatures) + o] = rows.Packed[((long)o * inFeatures) + i];
                }
            }

            return (codes, rows.Scales, rows.ZeroPoints);
        }

        (byte[] Codes, float[] Scales, byte[] Zeros)? cached = null;
        (byte[] Codes, float[] Scales, byte[] Zeros) Get() => cached ??= Quantized();
        var codes = g.AddRawWeight($"{storedName}.qdq8", [inFeatures, outFeatures], DataType.Uint8, () => Get().Codes);
        var scales = g.AddRawWeight($"{storedName}.qdq8.scales", [outFeatures], DataType.Float, () => System.Runtime.InteropServices.MemoryMarshal.AsBytes(Get().Scales.AsSpan()).ToArray());
        var zeros = g.AddRawWeight($"{storedName}.qdq8.zero_points", [outFeatures], DataType.Uint8, () => Get().Zeros);
        var weight = g.Node("DequantizeLinear", [codes, scales, zeros], [$"{storedName}.dequantized"], attributes: [OnnxGraphBuilder.Int("axis", 1)])[0];
        return g.Node("MatMul", [input, weight], [output])[0];
    }

    private (string Cos, string Sin) RopeCaches(OnnxGraphBuilder g)
    {
        var c = _config;
        var half = c.HeadDim / 2;
        float[] Build(bool cosine)
        {
            var cache = new float[(long)c.MaxPositionEmbeddings * half];
            for (var pos = 0; pos < c.MaxPositionEmbeddings; pos++)
            {
                var scaled = pos / c.RopeLinearFactor;
                for (var i = 0; i < half; i++)
                {
                    var invFreq = c.InverseFrequency(i);
                    var angle = scaled * invFreq;
                    cache[((long)pos * half) + i] = (float)(cosine ? Math.Cos(angle) : Math.Sin(angle));
                }
            }

            return cache;
        }

        // The caches are small: float32 (computed in double), or float16 where RotaryEmbedding computes in float16.
        var cos = g.AddWeight("/rope/cos_cache", [c.MaxPositionEmbeddings, half], () => Build(cosine: true), _compute, _compute);
        var sin = g.AddWeight("/rope/sin_cache", [c.MaxPositionEmbeddings, half], () => Build(cosine: false), _compute, _compute);
        return (cos, sin);
    }

    private static float[] Transpose(float[] source, int rows, int cols)
    {
        var result = new float[source.LongLength];
        const int Block = 64;
        for (var r0 = 0; r0 < rows; r0 += Block)
        {
            for (var c0 = 0; c0 < cols; c0 += Block)
            {
                var rEnd = Math.Min(r0 + Block, rows);
                var cEnd = Math.Min(c0 + Block, cols);
                for (var r = r0; r < rEnd; r++)
                {
                    for (var col = c0; col < cEnd; col++)
                    {
                        result[((long)col * rows) + r] = source[((long)r * cols) + col];
                    }
                }
            }
        }

        return result;
    }
}
