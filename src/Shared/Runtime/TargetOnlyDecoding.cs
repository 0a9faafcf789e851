using SpecEdge.Shared.Decoding;
using SpecEdge.Shared.Tokenization;

namespace SpecEdge.Shared.Runtime;

/// <summary>
/// Plain autoregressive greedy decoding with one model, no speculation: the reference output speculative decoding must
/// reproduce, used by tests, benchmarks and the quality figures.
/// </summary>
public static class TargetOnlyDecoding
{
    /// <summary>The model's greedy continuation of <paramref name="prompt"/>, one token per step.</summary>
    /// <param name="model">The model.</param>
    /// <param name="prompt">The prompt (at least one token).</param>
    /// <param name="maxNewTokens">The most tokens to generate.</param>
    /// <param name="stopAtEos">Stop after (and including) an end-of-sequence token.</param>
    public static List<TokenId> Greedy(LanguageModel model, IReadOnlyList<TokenId> prompt, int maxNewTokens, bool stopAtEos = false)
    {
        using var context = model.CreateContext(Math.Min(model.MaxSequenceLength, prompt.Count + maxNewTokens + 1));
        var row = context.Prefill([.. prompt]).ToArray();
        var result = new List<TokenId>(maxNewTokens);
        for (var i = 0; i < maxNewTokens; i++)
        {
            var next = TokenSampler.ArgMax(row);
            result.Add(next);
            if ((stopAtEos && model.Tokenizer.IsEos(next)) || i == maxNewTokens - 1)
            {
                break;
            }

            row = context.Forward([next]).Last.ToArray();
        }

        return result;
    }
}
