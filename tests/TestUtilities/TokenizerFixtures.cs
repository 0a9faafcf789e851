using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Google.Protobuf;
using SpecEdge.Shared.Tokenization;

namespace SpecEdge.TestUtilities;

/// <summary>Small tokenizer files in the real formats, written by the tests themselves.</summary>
public static class TokenizerFixtures
{
    /// <summary>Words the fixtures' merges build whole.</summary>
    public static readonly string[] Words = ["hello", "world", "the", "speculative"];

    /// <summary>A GPT-2 style byte-level BPE tokenizer.json: the 256 byte symbols plus merges that build <see cref="Words"/> (with and without a leading space).</summary>
    public static void WriteByteLevelBpe(string path)
    {
        var vocab = new JsonObject();
        for (var b = 0; b < 256; b++)
        {
            vocab[HfBpeTokenizer.ByteLevelChar((byte)b).ToString()] = b;
        }

        var merges = new JsonArray();
        var ranks = new List<(string Left, string Right)>();
        var next = 256;
        foreach (var word in Words.SelectMany(w => new[] { w, " " + w }))
        {
            // Apply the merges learned so far (as BPE will), then add merges for what is left, left to right.
            var symbols = ApplyMerges(Encoding.UTF8.GetBytes(word).Select(b => HfBpeTokenizer.ByteLevelChar(b).ToString()).ToList(), ranks);
            while (symbols.Count > 1)
            {
                var merged = symbols[0] + symbols[1];
                vocab[merged] = next++;
                merges.Add($"{symbols[0]} {symbols[1]}");
                ranks.Add((symbols[0], symbols[1]));
                symbols[0] = merged;
                symbols.RemoveAt(1);
            }
        }

        var root = new JsonObject
        {
            ["version"] = "1.0",
            ["added_tokens"] = new JsonArray(
                new JsonObject { ["id"] = next, ["content"] = "<|begin|>", ["special"] = true },
                new JsonObject { ["id"] = next + 1, ["content"] = "<|end|>", ["special"] = true }),
            ["normalizer"] = null,
            ["pre_tokenizer"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["use_regex"] = true },
            ["decoder"] = new JsonObject { ["type"] = "ByteLevel" },
            ["model"] = new JsonObject { ["type"] = "BPE", ["vocab"] = vocab, ["merges"] = merges },
        };
        File.WriteAllText(path, root.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }

    private static List<string> ApplyMerges(List<string> symbols, List<(string Left, string Right)> ranks)
    {
        while (true)
        {
            var best = -1;
            var at = -1;
            for (var i = 0; i < symbols.Count - 1; i++)
            {
                var rank = ranks.IndexOf((symbols[i], symbols[i + 1]));
                if (rank >= 0 && (best < 0 || rank < best))
                {
                    best = rank;
                    at = i;
                }
            }

            if (at < 0)
            {
                return symbols;
            }

            symbols[at] += symbols[at + 1];
            symbols.RemoveAt(at + 1);
        }
    }

    /// <summary>
    /// A Llama-2 style tokenizer.json: "▁" for spaces, &lt;0xNN&gt; byte-fallback tokens, merges for <see cref="Words"/>
    /// (with the leading "▁").
    /// </summary>
    public static void WriteSentencePieceStyleBpe(string path)
    {
        var vocab = new JsonObject { ["<unk>"] = 0, ["<s>"] = 1, ["</s>"] = 2 };
        for (var b = 0; b < 256; b++)
        {
            vocab[$"<0x{b:X2}>"] = 3 + b;
        }

        var next = 259;
        vocab["▁"] = next++;
        var merges = new JsonArray();
        foreach (var word in Words)
        {
            var symbols = ("▁" + word).Select(c => c.ToString()).ToList();
            foreach (var s in symbols.Where(s => !vocab.ContainsKey(s)))
            {
                vocab[s] = next++;
            }

            while (symbols.Count > 1)
            {
                var merged = symbols[0] + symbols[1];
                if (!vocab.ContainsKey(merged))
                {
                    vocab[merged] = next++;
                    merges.Add(new JsonArray(symbols[0], symbols[1]));
                }

                symbols[0] = merged;
                symbols.RemoveAt(1);
            }
        }

        var root = new JsonObject
        {
            ["version"] = "1.0",
            ["added_tokens"] = new JsonArray(
                new JsonObject { ["id"] = 0, ["content"] = "<unk>", ["special"] = true },
                new JsonObject { ["id"] = 1, ["content"] = "<s>", ["special"] = true },
                new JsonObject { ["id"] = 2, ["content"] = "</s>", ["special"] = true }),
            ["normalizer"] = new JsonObject
            {
                ["type"] = "Sequence",
                ["normalizers"] = new JsonArray(
                    new JsonObject { ["type"] = "Prepend", ["prepend"] = "▁" },
                    new JsonObject { ["type"] = "Replace", ["pattern"] = new JsonObject { ["String"] = " " }, ["content"] = "▁" }),
            },
            ["pre_tokenizer"] = null,
            ["model"] = new JsonObject { ["type"] = "BPE", ["unk_token"] = "<unk>", ["byte_fallback"] = true, ["vocab"] = vocab, ["merges"] = merges },
        };
        File.WriteAllText(path, root.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }

    /// <summary>
    /// A SentencePiece BPE <c>tokenizer.model</c> (protobuf, sentencepiece_model.proto field numbers): &lt;unk&gt;,
    /// &lt;s&gt;, &lt;/s&gt;, 256 byte pieces, then pieces that build "▁"+<see cref="Words"/>, scored so longer merges win.
    /// </summary>
    public static void WriteSentencePieceModel(string path)
    {
        var pieces = new List<(string Piece, float Score, int Type)>
        {
            ("<unk>", 0, 2), ("<s>", 0, 3), ("</s>", 0, 3),
        };
        for (var b = 0; b < 256; b++)
        {
            pieces.Add(($"<0x{b:X2}>", 0, 6));
        }

        var normal = new List<string> { "▁" };
        foreach (var word in Words)
        {
            var text = "▁" + word;
            for (var i = 0; i < text.Length; i++)
            {
                normal.Add(text[i].ToString());
            }

            for (var length = 2; length <= text.Length; length++)
            {
                normal.Add(text[..length]);
            }
        }

        var score = -1f;
        foreach (var piece in normal.Distinct().OrderBy(p => p.Length))
        {
            pieces.Add((piece, piece.Length == 1 ? -1000f : score--, 1));
        }

        using var stream = File.Create(path);
        var output = new CodedOutputStream(stream);
        foreach (var (piece, pieceScore, type) in pieces)
        {
            var message = new MemoryStream();
            var inner = new CodedOutputStream(message);
            inner.WriteTag(1, WireFormat.WireType.LengthDelimited);
            inner.WriteString(piece);
            inner.WriteTag(2, WireFormat.WireType.Fixed32);
            inner.WriteFloat(pieceScore);
            inner.WriteTag(3, WireFormat.WireType.Varint);
            inner.WriteEnum(type);
            inner.Flush();
            output.WriteTag(1, WireFormat.WireType.LengthDelimited);
            output.WriteBytes(ByteString.CopyFrom(message.ToArray()));
        }

        var trainer = new MemoryStream();
        var t = new CodedOutputStream(trainer);
        t.WriteTag(3, WireFormat.WireType.Varint);
        t.WriteEnum(2); // BPE
        t.WriteTag(4, WireFormat.WireType.Varint);
        t.WriteInt32(pieces.Count);
        t.WriteTag(35, WireFormat.WireType.Varint);
        t.WriteBool(true); // byte_fallback
        t.WriteTag(40, WireFormat.WireType.Varint);
        t.WriteInt32(0);
        t.WriteTag(41, WireFormat.WireType.Varint);
        t.WriteInt32(1);
        t.WriteTag(42, WireFormat.WireType.Varint);
        t.WriteInt32(2);
        t.Flush();
        output.WriteTag(2, WireFormat.WireType.LengthDelimited);
        output.WriteBytes(ByteString.CopyFrom(trainer.ToArray()));

        var normalizer = new MemoryStream();
        var n = new CodedOutputStream(normalizer);
        n.WriteTag(1, WireFormat.WireType.LengthDelimited);
        n.WriteString("identity");
        n.WriteTag(3, WireFormat.WireType.Varint);
        n.WriteBool(true); // add_dummy_prefix
        n.WriteTag(4, WireFormat.WireType.Varint);
        n.WriteBool(false); // remove_extra_whitespaces, off in Llama's tokenizer.model
        n.WriteTag(5, WireFormat.WireType.Varint);
        n.WriteBool(true);
        n.Flush();
        output.WriteTag(3, WireFormat.WireType.LengthDelimited);
        output.WriteBytes(ByteString.CopyFrom(normalizer.ToArray()));
        output.Flush();
    }
}
