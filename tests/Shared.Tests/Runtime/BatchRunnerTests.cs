using SpecEdge.Shared.Models.Conversion;
using SpecEdge.Shared.Models.Onnx;
using SpecEdge.Shared.Runtime;
using SpecEdge.Shared.Tokenization;
using SpecEdge.TestUtilities;
using static SpecEdge.Shared.Tests.Runtime.LanguageModelParityTests;

namespace SpecEdge.Shared.Tests.Runtime;

/// <summary>
/// Batched steps against the independent plain-C# reference forward pass: every row of a batch, whatever its length,
/// its padding, its place in the arena and the other rows beside it, gets the logits its own sequence has alone.
/// </summary>
public sealed class BatchRunnerTests : IDisposable
{
    private readonly TempDirectory _temp = new("batch");

    public void Dispose() => _temp.Dispose();

    [Fact]
    public void RunNextStage_RowsOfDifferentLengthsAndCounts_EachMatchesReference()
    {
        var spec = TestModels.Small(seed: 61) with { Layers = 4 };
        var (model, converted) = TestModels.WriteAndConvert(_temp.Combine("mixed"), spec, new ConversionOptions { Exits = [2] });
        var reference = model.Reference();
        using var lm = TestModels.Load(converted, attention: AttentionForm.Batched);
        using var runner = new BatchRunner(lm, maxSlots: 8, maxSequenceLength: 64, maxRows: 8, maxBatchTokens: 256);

        // Five sequences; each step gives every sequence a different number of tokens (1 to 9), so rows are padded.
        var random = new Random(5);
        var sequences = Enumerable.Range(0, 5).Select(_ => new List<int>()).ToList();
        var slots = sequences.Select(_ => runner.Allocate()).ToList();
        for (var step = 0; step < 4; step++)
        {
            var rows = new List<BatchRow>();
            var added = new List<int[]>();
            for (var i = 0; i < sequences.Count; i++)
            {
                var tokens = Tokens(spec.Vocab, 1 + random.Next(9), seed: (step * 10) + i);
                added.Add(tokens);
                rows.Add(new BatchRow(slots[i], ToTokenIds(tokens)));
            }

            runner.BeginStep(rows);

            // Each stage's logits live until the next stage runs: check the exit's first.
            var expected = new List<ReferenceLlama.Result>();
            for (var i = 0; i < sequences.Count; i++)
            {
                expected.Add(reference.Forward([.. sequences[i], .. added[i]]));
            }

            var exit = runner.RunNextStage();
            for (var i = 0; i < sequences.Count; i++)
            {
                var rowsOf = exit.Row(i, added[i].Length);
                for (var t = 0; t < added[i].Length; t++)
                {
                    var at = sequences[i].Count + t;
                    AssertClose(reference.Head(expected[i].HiddenAfterLayer[2][at], null, null, null), rowsOf.Row(t), $"step {step} sequence {i} exit, position {at}");
                }
            }

            var final = runner.RunNextStage();
            for (var i = 0; i < sequences.Count; i++)
            {
                var before = sequences[i].Count;
                sequences[i].AddRange(added[i]);
                var finalRows = final.Row(i, added[i].Length);
                for (var t = 0; t < added[i].Length; t++)
                {
                    AssertClose(expected[i].Logits[before + t], finalRows.Row(t), $"step {step} sequence {i} position {before + t}");
                }

                Assert.Equal(sequences[i].Count, slots[i].Length);
            }
        }
    }

    [Fact]
    public void BeginStep_MembershipAndOrderChange_SlotsMoveAndResultsStayExact()
    {
        var spec = TestModels.Small(seed: 62) with { Layers = 3 };
        var (model, converted) = TestModels.WriteAndConvert(_temp.Combine("moves"), spec);
        var reference = model.Reference();
        using var lm = TestModels.Load(converted, attention: AttentionForm.Batched);
        using var runner = new BatchRunner(lm, maxSlots: 6, maxSequenceLength: 80, maxRows: 6, maxBatchTokens: 64);

        var sequences = Enumerable.Range(0, 6).Select(_ => new List<int>()).ToList();
        var slots = sequences.Select(_ => runner.Allocate()).ToList();
        var random = new Random(9);
        for (var step = 0; step < 8; step++)
        {
            // A different subset, in a different order, every step; one sequence rolls back first.
            var members = Enumerable.Range(0, 6).OrderBy(_ => random.Next()).Take(1 + random.Next(6)).ToList();
            var rolled = members[0];
            if (sequences[rolled].Count > 2)
            {
                var keep = sequences[rolled].Count - 2;
                sequences[rolled].RemoveRange(keep, 2);
                slots[rolled].Rollback(keep);
            }

            var added = members.Select(m => Tokens(spec.Vocab, 1 + random.Next(5), seed: (step * 100) + m)).ToList();
            runner.BeginStep([.. members.Select((m, r) => new BatchRow(slots[m], ToTokenIds(added[r])))]);
            var logits = runner.RunNextStage();
            for (var r = 0; r < members.Count; r++)
            {
                var sequence = sequences[members[r]];
                var before = sequence.Count;
                sequence.AddRange(added[r]);
                var expected = reference.Forward(sequence);
                var rows = logits.Row(r, added[r].Length);
                for (var t = 0; t < added[r].Length; t++)
                {
                    AssertClose(expected.Logits[before + t], rows.Row(t), $"step {step} sequence {members[r]} position {before + t}");
                }
            }
        }

        Assert.True(runner.SlotMoves > 0, "membership changed every step, so slots must have moved");
    }

    [Fact]
    public void Allocate_BeyondFirstCapacity_GrowsAndKeepsEarlierSequences()
    {
        var spec = TestModels.Small(seed: 63) with { Layers = 2 };
        var (model, converted) = TestModels.WriteAndConvert(_temp.Combine("grow"), spec);
        var reference = model.Reference();
        using var lm = TestModels.Load(converted, attention: AttentionForm.Batched);
        using var runner = new BatchRunner(lm, maxSlots: 9, maxSequenceLength: 40, maxRows: 9, maxBatchTokens: 128);

        var first = runner.Allocate();
        var prompt = Tokens(spec.Vocab, 7, seed: 1);
        runner.BeginStep([new BatchRow(first, ToTokenIds(prompt))]);
        runner.RunNextStage();
        var others = Enumerable.Range(0, 8).Select(_ => runner.Allocate()).ToList();
        Assert.Equal(9, runner.Capacity);
        Assert.Throws<InvalidOperationException>(() => runner.Allocate());

        var next = Tokens(spec.Vocab, 3, seed: 2);
        runner.BeginStep([new BatchRow(others[^1], ToTokenIds(next)), new BatchRow(first, ToTokenIds(next))]);
        var logits = runner.RunNextStage();
        var expected = reference.Forward([.. prompt, .. next]);
        for (var t = 0; t < next.Length; t++)
        {
            AssertClose(expected.Logits[prompt.Length + t], logits.Row(1, next.Length).Row(t), $"grown arena, position {prompt.Length + t}");
        }

        runner.Release(others[0]);
        Assert.Equal(8, runner.Occupied);
        Assert.NotNull(runner.Allocate());
    }

    [Fact]
    public void SharedBufferForm_OneSequencePerStep_RollbackAndReuse_MatchReference()
    {
        var spec = TestModels.Small(seed: 64) with { Layers = 3 };
        var (model, converted) = TestModels.WriteAndConvert(_temp.Combine("per-sequence"), spec, new ConversionOptions { Exits = [1] });
        var reference = model.Reference();
        using var lm = TestModels.Load(converted);
        using var runner = new BatchRunner(lm, maxSlots: 3, maxSequenceLength: 48, maxRows: 8, maxBatchTokens: 64);

        Assert.True(runner.OneSequencePerStep);
        Assert.Equal(1, runner.MaxRows);
        var slots = new[] { runner.Allocate(), runner.Allocate() };
        var sequences = new[] { new List<int>(), new List<int>() };
        var random = new Random(9);
        for (var step = 0; step < 6; step++)
        {
            var i = step % 2;
            if (step == 3)
            {
                // A rejected suffix: the slot forgets two tokens; its context's longer prefix must not leak in.
                slots[i].Rollback(slots[i].Length - 2);
                sequences[i].RemoveRange(sequences[i].Count - 2, 2);
            }

            var tokens = Tokens(spec.Vocab, 1 + random.Next(6), seed: step);
            runner.BeginStep([new BatchRow(slots[i], ToTokenIds(tokens))]);
            var expected = reference.Forward([.. sequences[i], .. tokens]);
            var exit = runner.RunNextStage().Row(0, tokens.Length);
            for (var t = 0; t < tokens.Length; t++)
            {
                AssertClose(reference.Head(expected.HiddenAfterLayer[1][sequences[i].Count + t], null, null, null), exit.Row(t), $"step {step} exit, token {t}");
            }

            var final = runner.RunNextStage().Row(0, tokens.Length);
            for (var t = 0; t < tokens.Length; t++)
            {
                AssertClose(expected.Logits[sequences[i].Count + t], final.Row(t), $"step {step} final, token {t}");
            }

            sequences[i].AddRange(tokens);
            Assert.Equal(sequences[i].Count, slots[i].Length);
        }

        // A released slot's place serves a new, empty sequence.
        runner.Release(slots[0]);
        var fresh = runner.Allocate();
        Assert.Equal(0, fresh.Length);
        var first = Tokens(spec.Vocab, 4, seed: 99);
        runner.BeginStep([new BatchRow(fresh, ToTokenIds(first))]);
        runner.RunNextStage();
        AssertClose(reference.Forward(first).Logits[^1], runner.RunNextStage().Row(0, 4).Row(3), "fresh sequence");
        Assert.Throws<ArgumentException>(() => runner.BeginStep([new BatchRow(fresh, ToTokenIds(first)), new BatchRow(slots[1], ToTokenIds(first))]));
    }

    [Fact]
    public void BeginStep_BadRows_ThrowWithoutChangingAnySequence()
    {
        var spec = TestModels.Small(seed: 64) with { Layers = 2 };
        var (_, converted) = TestModels.WriteAndConvert(_temp.Combine("bad"), spec);
        using var lm = TestModels.Load(converted, attention: AttentionForm.Batched);
        using var runner = new BatchRunner(lm, maxSlots: 2, maxSequenceLength: 8, maxRows: 2, maxBatchTokens: 64);
        var a = runner.Allocate();
        var b = runner.Allocate();

        Assert.Throws<ArgumentException>(() => runner.BeginStep([new BatchRow(a, new TokenId[] { new(1) }), new BatchRow(a, new TokenId[] { new(2) })]));
        Assert.Throws<ArgumentOutOfRangeException>(() => runner.BeginStep([new BatchRow(a, new TokenId[] { new(1) }), new BatchRow(b, new TokenId[] { new(spec.Vocab) })]));
        runner.BeginStep([new BatchRow(b, ToTokenIds(Tokens(spec.Vocab, 6, seed: 3)))]);
        runner.RunNextStage();
        Assert.Throws<SequenceTooLongException>(() => runner.BeginStep([new BatchRow(b, ToTokenIds(Tokens(spec.Vocab, 3, seed: 4)))]));
        Assert.Equal(6, b.Length);
        Assert.Equal(0, a.Length);
        Assert.Equal(-1, runner.NextStage);
    }

    /// <summary>
    /// A token tree in one row beside a chain row: every node's logits, at the exit and the final head, are the
    /// reference forward pass's over the prefix and the node's own path (its ancestors, then itself), so a node sees
    /// nothing of its siblings' branches. After the leaf taken at depth 2 is moved into the place of the draft it
    /// replaced and the sequence rolled back to the kept path, the next step matches the reference on that path.
    /// </summary>
    [Fact]
    public void TreeRow_EachNodeMatchesReferenceOnItsPath_AndTheKeptLeafServesTheNextStep()
    {
        var spec = TestModels.Small(seed: 65) with { Layers = 4 };
        var (model, converted) = TestModels.WriteAndConvert(_temp.Combine("tree"), spec, new ConversionOptions { Exits = [2] });
        var reference = model.Reference();
        using var lm = TestModels.Load(converted, attention: AttentionForm.Batched);
        using var runner = new BatchRunner(lm, maxSlots: 2, maxSequenceLength: 64, maxRows: 2, maxBatchTokens: 64);
        var tree = runner.Allocate();
        var chain = runner.Allocate();
        var prefix = Tokens(spec.Vocab, 6, seed: 11).ToList();
        var other = Tokens(spec.Vocab, 9, seed: 12).ToList();
        runner.BeginStep([new BatchRow(tree, ToTokenIds([.. prefix])), new BatchRow(chain, ToTokenIds([.. other]))]);
        runner.RunNextStage();
        runner.RunNextStage();

        // [last, d0, d1, d2], then leaves: one at depth 0 (parent: last), two at depth 2 (parent: d1).
        var nodes = Tokens(spec.Vocab, 7, seed: 13);
        int[] parents = [-1, 0, 1, 2, 0, 2, 2];
        var more = Tokens(spec.Vocab, 3, seed: 14);
        runner.BeginStep([new BatchRow(tree, ToTokenIds(nodes), parents), new BatchRow(chain, ToTokenIds(more))]);
        var expected = new ReferenceLlama.Result[nodes.Length];
        for (var i = 0; i < nodes.Length; i++)
        {
            var path = new List<int>();
            for (var node = i; node >= 0; node = parents[node])
            {
                path.Insert(0, nodes[node]);
            }

            expected[i] = reference.Forward([.. prefix, .. path]);
        }

        var chainExpected = reference.Forward([.. other, .. more]);
        var exit = runner.RunNextStage();
        for (var i = 0; i < nodes.Length; i++)
        {
            AssertClose(reference.Head(expected[i].HiddenAfterLayer[2][^1], null, null, null), exit.Row(0, nodes.Length).Row(i), $"exit, tree node {i}");
        }

        var final = runner.RunNextStage();
        for (var i = 0; i < nodes.Length; i++)
        {
            AssertClose(expected[i].Logits[^1], final.Row(0, nodes.Length).Row(i), $"final head, tree node {i}");
        }

        for (var t = 0; t < more.Length; t++)
        {
            AssertClose(chainExpected.Logits[other.Count + t], final.Row(1, more.Length).Row(t), $"chain row beside the tree, position {t}");
        }

        // Keep [last, d0, d1, leaf 5] (leaf 5 replaced d2): move its cache entry into d2's place, drop the rest.
        Assert.Equal(prefix.Count + nodes.Length, tree.Length);
        tree.MoveToken(prefix.Count + 5, prefix.Count + 3);
        tree.Rollback(prefix.Count + 4);
        var next = Tokens(spec.Vocab, 2, seed: 15);
        runner.BeginStep([new BatchRow(tree, ToTokenIds(next))]);
        runner.RunNextStage();
        var after = runner.RunNextStage();
        var kept = reference.Forward([.. prefix, nodes[0], nodes[1], nodes[2], nodes[5], .. next]);
        for (var t = 0; t < next.Length; t++)
        {
            AssertClose(kept.Logits[prefix.Count + 4 + t], after.Row(0, next.Length).Row(t), $"after the kept leaf, position {t}");
        }
    }

    [Fact]
    public void TreeRow_BadParents_ThrowWithoutChangingTheSequence()
    {
        var spec = TestModels.Small(seed: 66) with { Layers = 2 };
        var (_, converted) = TestModels.WriteAndConvert(_temp.Combine("bad-tree"), spec);
        using var lm = TestModels.Load(converted, attention: AttentionForm.Batched);
        using var runner = new BatchRunner(lm, maxSlots: 1, maxSequenceLength: 16, maxRows: 1, maxBatchTokens: 64);
        var slot = runner.Allocate();
        var tokens = ToTokenIds(Tokens(spec.Vocab, 3, seed: 5));

        Assert.Throws<ArgumentException>(() => runner.BeginStep([new BatchRow(slot, tokens, new[] { -1, 0 })]));
        Assert.Throws<ArgumentException>(() => runner.BeginStep([new BatchRow(slot, tokens, new[] { -1, 2, 1 })]));
        Assert.Throws<ArgumentException>(() => runner.BeginStep([new BatchRow(slot, tokens, new[] { -1, -2, 0 })]));
        Assert.Throws<ArgumentOutOfRangeException>(() => slot.MoveToken(0, 1));
        Assert.Equal(0, slot.Length);
        Assert.Equal(-1, runner.NextStage);
    }

    [Fact]
    public void TreeRow_SharedBufferForm_IsRefused()
    {
        var spec = TestModels.Small(seed: 67) with { Layers = 2 };
        var (_, converted) = TestModels.WriteAndConvert(_temp.Combine("tree-shared"), spec);
        using var lm = TestModels.Load(converted);
        using var runner = new BatchRunner(lm, maxSlots: 1, maxSequenceLength: 16, maxRows: 1, maxBatchTokens: 64);
        var slot = runner.Allocate();

        var refused = Assert.Throws<ArgumentException>(() => runner.BeginStep([new BatchRow(slot, ToTokenIds(Tokens(spec.Vocab, 2, seed: 6)), new[] { -1, 0 })]));
        Assert.Contains("batched graphs", refused.Message);
    }
}
