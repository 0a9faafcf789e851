using SpecEdge.Shared.Runtime;
using SpecEdge.Shared.Tokenization;

namespace SpecEdge.Bench.Reliability;

/// <summary>The reliability proofs' prompts and what every generation must equal: the target's own greedy output.</summary>
internal static class ReferenceOutputs
{
    /// <summary><paramref name="count"/> short prompts (BOS and 3, 4, … byte tokens) drawn from <paramref name="random"/>.</summary>
    public static List<TokenId[]> Prompts(Random random, int count) =>
        [.. Enumerable.Range(0, count).Select(p => new[] { 256 }.Concat(Enumerable.Range(0, 3 + p).Select(_ => random.Next(32, 127))).Select(t => new TokenId(t)).ToArray())];

    /// <summary>The target's greedy continuation of each prompt, <paramref name="tokens"/> long (the target loaded once).</summary>
    public static List<List<int>> Greedy(string targetDir, IEnumerable<TokenId[]> prompts, int tokens)
    {
        using var model = LanguageModel.Load(targetDir, new RuntimeOptions { IntraOpThreads = 1 });
        return [.. prompts.Select(p => TargetOnlyDecoding.Greedy(model, p, tokens).Select(t => t.Value).ToList())];
    }
}
