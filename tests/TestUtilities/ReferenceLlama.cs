using SpecEdge.Shared.Models.Checkpoints;

namespace SpecEdge.TestUtilities;

/// <summary>
/// An independent plain-C# Llama forward pass: arrays and loops, double accumulators, no ONNX, no KV cache (every call
/// recomputes the whole sequence). It reads weights in Hugging Face layout straight from a dictionary, so it shares
/// nothing with the converter or the runtime it checks.
/// </summary>
public sealed class ReferenceLlama
{
    private readonly LlamaConfig _c;
    private readonly IReadOnlyDictionary<string, float[]> _w;

    public ReferenceLlama(LlamaConfig config, IReadOnlyDictionary<string, float[]> weights)
    {
        _c = config;
        _w = weights;
    }

    /// <summary>A plain softmax of a row of logits, in double (the tests' independent one).</summary>
    public static double[] Softmax(IReadOnlyList<float> logits)
    {
        var max = logits.Max();
        var e = logits.Select(l => Math.Exp(l - max)).ToArray();
        var sum = e.Sum();
        return [.. e.Select(x => x / sum)];
    }

    /// <summary>The largest probability of a row's softmax.</summary>
    public static double MaxProbability(IReadOnlyList<float> logits) => Softmax(logits).Max();

    /// <summary>The result of a full forward pass over a sequence.</summary>
    /// <param name="HiddenAfterLayer">[layer + 1][position] = residual stream after that many layers ([0] is the embedding).</param>
    /// <param name="Logits">[position] = final logits.</param>
    public sealed record Result(float[][][] HiddenAfterLayer, float[][] Logits);

    public Result Forward(IReadOnlyList<int> tokens)
    {
        var c = _c;
        var n = tokens.Count;
        var h = c.HiddenSize;
        var hidden = new float[c.NumHiddenLayers + 1][][];
        var x = new float[n][];
        var embed = _w["model.embed_tokens.weight"];
        for (var t = 0; t < n; t++)
        {
            x[t] = embed.AsSpan(tokens[t] * h, h).ToArray();
        }

        hidden[0] = Copy(x);
        for (var layer = 0; layer < c.NumHiddenLayers; layer++)
        {
            var prefix = $"model.layers.{layer}.";
            var normed = x.Select(v => RmsNorm(v, _w[prefix + "input_layernorm.weight"])).ToArray();
            float[][] q, k, v2;
            if (_w.TryGetValue(prefix + "self_attn.qkv_proj.weight", out var qkvWeight))
            {
                // Phi-3: one projection, then split as Hugging Face's Phi3Attention does: [q | k | v].
                var qSize = c.NumAttentionHeads * c.HeadDim;
                var kvSize = c.NumKeyValueHeads * c.HeadDim;
                var qkv = normed.Select(v => Linear(v, qkvWeight, qSize + (2 * kvSize))).ToArray();
                q = [.. qkv.Select(r => r[..qSize])];
                k = [.. qkv.Select(r => r[qSize..(qSize + kvSize)])];
                v2 = [.. qkv.Select(r => r[(qSize + kvSize)..])];
            }
            else
            {
                q = normed.Select(v => Projection(v, prefix + "self_attn.q_proj", c.NumAttentionHeads * c.HeadDim)).ToArray();
                k = normed.Select(v => Projection(v, prefix + "self_attn.k_proj", c.NumKeyValueHeads * c.HeadDim)).ToArray();
                v2 = normed.Select(v => Projection(v, prefix + "self_attn.v_proj", c.NumKeyValueHeads * c.HeadDim)).ToArray();
            }
            for (var t = 0; t < n; t++)
            {
                Rotate(q[t], c.NumAttentionHeads, t);
                Rotate(k[t], c.NumKeyValueHeads, t);
            }

            var attn = new float[n][];
            var group = c.NumAttentionHeads / c.NumKeyValueHeads;
            var scale = 1.0 / Math.Sqrt(c.HeadDim);
            for (var t = 0; t < n; t++)
            {
                attn[t] = new float[c.NumAttentionHeads * c.HeadDim];
                for (var head = 0; head < c.NumAttentionHeads; head++)
                {
                    var kvHead = head / group;
                    var scores = new double[t + 1];
                    var max = double.NegativeInfinity;
                    for (var s = 0; s <= t; s++)
                    {
                        double dot = 0;
                        for (var d = 0; d < c.HeadDim; d++)
                        {
                            dot += (double)q[t][(head * c.HeadDim) + d] * k[s][(kvHead * c.HeadDim) + d];
                        }

                        scores[s] = dot * scale;
                        max = Math.Max(max, scores[s]);
                    }

                    double sum = 0;
                    for (var s = 0; s <= t; s++)
                    {
                        scores[s] = Math.Exp(scores[s] - max);
                        sum += scores[s];
                    }

                    for (var d = 0; d < c.HeadDim; d++)
                    {
                        double acc = 0;
                        for (var s = 0; s <= t; s++)
                        {
                            acc += scores[s] / sum * v2[s][(kvHead * c.HeadDim) + d];
                        }

                        attn[t][(head * c.HeadDim) + d] = (float)acc;
                    }
                }
            }

            for (var t = 0; t < n; t++)
            {
                var o = Linear(attn[t], _w[prefix + "self_attn.o_proj.weight"], h);
                for (var i = 0; i < h; i++)
                {
                    x[t][i] += o[i];
                }

                var post = RmsNorm(x[t], _w[prefix + "post_attention_layernorm.weight"]);
                float[] gate, up;
                if (_w.TryGetValue(prefix + "mlp.gate_up_proj.weight", out var gateUpWeight))
                {
                    // Phi-3: gate_up_proj, then chunk(2): the gate first.
                    var both = Linear(post, gateUpWeight, 2 * c.IntermediateSize);
                    (gate, up) = (both[..c.IntermediateSize], both[c.IntermediateSize..]);
                }
                else
                {
                    gate = Linear(post, _w[prefix + "mlp.gate_proj.weight"], c.IntermediateSize);
                    up = Linear(post, _w[prefix + "mlp.up_proj.weight"], c.IntermediateSize);
                }

                var act = new float[c.IntermediateSize];
                for (var i = 0; i < act.Length; i++)
                {
                    var g = (double)gate[i];
                    act[i] = (float)(g / (1.0 + Math.Exp(-g)) * up[i]);
                }

                var down = Linear(act, _w[prefix + "mlp.down_proj.weight"], h);
                for (var i = 0; i < h; i++)
                {
                    x[t][i] += down[i];
                }
            }

            hidden[layer + 1] = Copy(x);
        }

        var logits = x.Select(v => Head(v, null, null, null)).ToArray();
        return new Result(hidden, logits);
    }

    /// <summary>
    /// An exit head on a hidden state: optional residual projection, RMSNorm (the final norm unless another is given),
    /// then the LM head (the model's unless another is given).
    /// </summary>
    public float[] Head(float[] hiddenState, float[]? norm, float[]? projection, float[]? lmHead)
    {
        var input = hiddenState;
        if (projection is not null)
        {
            var p = Linear(hiddenState, projection, _c.HiddenSize);
            input = hiddenState.Select((v, i) => v + p[i]).ToArray();
        }

        var normed = RmsNorm(input, norm ?? _w["model.norm.weight"]);
        var head = lmHead ?? (_c.TieWordEmbeddings ? _w["model.embed_tokens.weight"] : _w["lm_head.weight"]);
        return Linear(normed, head, _c.VocabSize);
    }

    private float[] RmsNorm(float[] v, float[] weight)
    {
        double sumSquares = 0;
        foreach (var value in v)
        {
            sumSquares += (double)value * value;
        }

        var inv = 1.0 / Math.Sqrt((sumSquares / v.Length) + _c.RmsNormEps);
        var result = new float[v.Length];
        for (var i = 0; i < v.Length; i++)
        {
            result[i] = (float)(v[i] * inv * weight[i]);
        }

        return result;
    }

    /// <summary>y = W·v with W in Hugging Face [out, in] layout.</summary>
    private static float[] Linear(float[] v, float[] weight, int outFeatures)
    {
        var inFeatures = v.Length;
        var y = new float[outFeatures];
        for (var o = 0; o < outFeatures; o++)
        {
            double acc = 0;
            var row = o * inFeatures;
            for (var i = 0; i < inFeatures; i++)
            {
                acc += (double)weight[row + i] * v[i];
            }

            y[o] = (float)acc;
        }

        return y;
    }

    private void Rotate(float[] v, int heads, int position)
    {
        var d = _c.HeadDim;
        var half = d / 2;
        var scaledPosition = position / _c.RopeLinearFactor;
        for (var head = 0; head < heads; head++)
        {
            var b = head * d;
            for (var i = 0; i < half; i++)
            {
                var angle = scaledPosition * Frequency(i, d);
                var (sin, cos) = Math.SinCos(angle);
                double x1 = v[b + i];
                double x2 = v[b + i + half];
                v[b + i] = (float)((x1 * cos) - (x2 * sin));
                v[b + i + half] = (float)((x2 * cos) + (x1 * sin));
            }
        }
    }

    /// <summary>
    /// The rotary inverse frequency of pair i, written from Hugging Face's definition of Llama 3's scaling
    /// (<c>_compute_llama3_parameters</c>): keep high frequencies, divide low ones by the factor, blend between.
    /// </summary>
    private double Frequency(int i, int d)
    {
        var inverse = 1.0 / Math.Pow(_c.RopeTheta, 2.0 * i / d);
        if (_c.RopeLlama3 is not { } s)
        {
            return inverse;
        }

        var wavelength = 2 * Math.PI / inverse;
        if (wavelength < s.OriginalMaxPositions / s.HighFreqFactor)
        {
            return inverse;
        }

        if (wavelength > s.OriginalMaxPositions / s.LowFreqFactor)
        {
            return inverse / s.Factor;
        }

        var smooth = ((s.OriginalMaxPositions / wavelength) - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor);
        return ((1 - smooth) * inverse / s.Factor) + (smooth * inverse);
    }

    /// <summary>x·Wᵀ, plus the projection's bias when the checkpoint has one (Qwen2's query, key and value).</summary>
    private float[] Projection(float[] x, string name, int outFeatures)
    {
        var y = Linear(x, _w[name + ".weight"], outFeatures);
        if (_w.TryGetValue(name + ".bias", out var bias))
        {
            for (var i = 0; i < y.Length; i++)
            {
                y[i] += bias[i];
            }
        }

        return y;
    }

    private static float[][] Copy(float[][] x) => x.Select(v => (float[])v.Clone()).ToArray();
}
