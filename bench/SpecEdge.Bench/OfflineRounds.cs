using System.Numerics.Tensors;
using SpecEdge.Demo;
using SpecEdge.Shared.Models.Conversion;
using SpecEdge.Shared.Decoding;
using SpecEdge.Shared.Runtime;
using SpecEdge.Shared.Tokenization;

namespace SpecEdge.Bench;

/// <summary>A round replayed offline: the drafts, every stage's softmax rows (exits in order, the final head last), and the final verdict.</summary>
/// <param name="Drafts">The γ greedy drafts.</param>
/// <param name="Stages">Per stage, the γ + 1 rows' distributions over the vocabulary.</param>
/// <param name="Accepted">Drafts the final head kept.</param>
/// <param name="Next">The final head's token after them.</param>
/// <param name="DraftRows">The draft's softmax row each draft was taken from (its arg-max), one per draft.</param>
internal sealed record OfflineRound(TokenId[] Drafts, float[][][] Stages, int Accepted, int Next, float[][] DraftRows);

/// <summary>
/// Greedy speculative rounds replayed offline on a pair, without a verifier or a link: the draft drafts γ tokens, the
/// target scores them stage by stage, the final head's verdict commits; each round is handed over with every stage's rows.
/// </summary>
internal static class OfflineRounds
{
    /// <summary>The prompts the offline analyses replay; the modes benchmark takes the first four.</summary>
    public static IReadOnlyList<string> Prompts { get; } =
    [
        "The edge drafts and the cloud verifies",
        "Once upon a time",
        "Speculative decoding works because",
        "A robot arm must react quickly when",
        "And the LORD spake unto Moses, saying,",
        "In the beginning God created",
    ];

    /// <summary>The default pair, loaded for replay: the target with its exits, and the draft (the caller disposes both).</summary>
    public static OfflinePair LoadDefaultPair()
    {
        var pair = DefaultModels.Resolve();
        return Load(ModelResolver.Resolve(pair.Target, new ConversionOptions { Exits = pair.Exits }), ModelResolver.Resolve(pair.Draft), pair.Description);
    }

    /// <summary>A converted target and draft, loaded for replay (the caller disposes them).</summary>
    public static OfflinePair Load(string convertedTarget, string convertedDraft, string description)
    {
        var target = LanguageModel.Load(convertedTarget, new RuntimeOptions { IntraOpThreads = 2 });
        try
        {
            return new OfflinePair(target, LanguageModel.Load(convertedDraft, new RuntimeOptions { IntraOpThreads = 2 }), description);
        }
        catch
        {
            target.Dispose();
            throw;
        }
    }

    /// <summary>Replays rounds after <paramref name="prompt"/> until <paramref name="count"/> tokens are committed; returns how many were.</summary>
    public static int Replay(LanguageModel target, LanguageModel draft, string prompt, int gamma, int count, Action<OfflineRound> onRound)
    {
        var ids = target.Tokenizer.Encode(prompt, addBos: true);
        using var t = target.CreateContext();
        using var d = draft.CreateContext();
        t.Prefill(ids.AsSpan(0, ids.Length - 1));
        d.Prefill(ids.AsSpan(0, ids.Length - 1));
        var last = ids[^1];
        var committed = 0;
        while (committed < count)
        {
            // Draft γ tokens greedily after `last`.
            var baseLength = d.Length;
            var drafts = new TokenId[gamma];
            var draftRows = new float[gamma][];
            var input = last;
            for (var i = 0; i < gamma; i++)
            {
                var logits = d.Forward([input]);
                drafts[i] = TokenSampler.ArgMax(logits.Row(0));
                draftRows[i] = Softmaxes(logits, 1)[0];
                input = drafts[i];
            }

            // The target scores [last, d1..dγ], stage by stage.
            var step = new TokenId[gamma + 1];
            step[0] = last;
            drafts.CopyTo(step, 1);
            var targetBase = t.Length;
            t.BeginStep(step);
            var stages = new List<float[][]>();
            while (t.NextStage >= 0)
            {
                stages.Add(Softmaxes(t.RunNextStage(), gamma + 1));
            }

            var (accepted, next) = Verdict(stages[^1], drafts);
            onRound(new OfflineRound(drafts, [.. stages], accepted, next, draftRows));
            committed += accepted + 1;

            // Keep [last, d1..da]; the next round starts from the new token.
            t.Rollback(targetBase + 1 + accepted);
            d.Rollback(Math.Min(baseLength + 1 + accepted, d.Length));
            if (d.Length < baseLength + 1 + accepted)
            {
                d.Forward([drafts[gamma - 1]]);
            }

            last = new TokenId(next);
        }

        return committed;
    }

    /// <summary>A head's greedy verdict on the drafts: accept while its arg-max is the draft, then its arg-max.</summary>
    public static (int Accepted, int Next) Verdict(float[][] rows, TokenId[] drafts)
    {
        var accepted = 0;
        while (accepted < drafts.Length && ArgMax(rows[accepted]) == drafts[accepted].Value)
        {
            accepted++;
        }

        return (accepted, ArgMax(rows[accepted]));
    }

    /// <summary>The index of a row's largest entry.</summary>
    public static int ArgMax(float[] row) => TokenSampler.ArgMax(row).Value;

    /// <summary>The softmax of each of the first <paramref name="rows"/> rows.</summary>
    public static float[][] Softmaxes(LogitsView logits, int rows)
    {
        var result = new float[rows][];
        for (var r = 0; r < rows; r++)
        {
            var row = logits.Row(r);
            result[r] = new float[row.Length];
            TensorPrimitives.SoftMax(row, result[r]);
        }

        return result;
    }
}

/// <summary>A target and a draft loaded for offline replay; disposing it frees both.</summary>
internal sealed record OfflinePair(LanguageModel Target, LanguageModel Draft, string Description) : IDisposable
{
    public void Dispose()
    {
        Target.Dispose();
        Draft.Dispose();
    }
}
