using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using SpecEdge.Shared.Models;

namespace SpecEdge.Shared.Tokenization;

/// <summary>
/// A Hugging Face <c>tokenizer.json</c> BPE tokenizer, in its two common flavours: byte-level (GPT-2, Llama 3: the
/// ByteLevel pre-tokenizer and decoder) and SentencePiece-style (Llama 2, Vicuna, TinyLlama: "▁" for spaces and
/// <c>&lt;0xNN&gt;</c> byte-fallback tokens).
/// </summary>
public sealed partial class HfBpeTokenizer : ITextTokenizer
{
    private const char MetaSpace = '\u2581';
    private const int MaxCachedWords = 1 << 16;

    private static readonly char[] ByteToChar = BuildByteToChar();
    private static readonly Dictionary<char, byte> CharToByte = BuildCharToByte();

    private readonly Dictionary<string, int> _vocab;
    private readonly Dictionary<(string Left, string Right), int> _mergeRanks;
    private readonly string?[] _idToToken;
    private readonly bool[] _isSpecial;
    private readonly List<(string Content, int Id)> _addedTokens;
    private readonly List<PreTokenizerStep> _preTokenizers;
    private readonly string? _prepend;
    private readonly List<(string Pattern, string Content)> _replacements;
    private readonly bool _byteLevel;
    private readonly bool _byteFallback;
    private readonly bool _ignoreMerges;
    private readonly int? _unkId;
    private readonly Dictionary<string, int[]> _cache = new(StringComparer.Ordinal);
    private readonly Lock _cacheLock = new();

    private HfBpeTokenizer(
        Dictionary<string, int> vocab,
        Dictionary<(string, string), int> mergeRanks,
        List<(string Content, int Id, bool Special)> added,
        List<PreTokenizerStep> preTokenizers,
        string? prepend,
        List<(string, string)> replacements,
        bool byteFallback,
        bool ignoreMerges,
        int? unkId,
        TokenId? bos,
        IReadOnlyList<TokenId> eos)
    {
        _vocab = vocab;
        _mergeRanks = mergeRanks;
        _preTokenizers = preTokenizers;
        _prepend = prepend;
        _replacements = replacements;
        _byteLevel = preTokenizers.Exists(p => p.Kind == PreTokenizerKind.ByteLevel);
        _byteFallback = byteFallback;
        _ignoreMerges = ignoreMerges;
        _unkId = unkId;
        Bos = bos;
        Eos = eos;

        var maxId = -1;
        foreach (var id in vocab.Values)
        {
            maxId = Math.Max(maxId, id);
        }

        foreach (var (_, id, _) in added)
        {
            maxId = Math.Max(maxId, id);
        }

        VocabSize = maxId + 1;
        _idToToken = new string?[VocabSize];
        _isSpecial = new bool[VocabSize];
        foreach (var (token, id) in vocab)
        {
            _idToToken[id] = token;
        }

        foreach (var (content, id, special) in added)
        {
            _idToToken[id] = content;
            _isSpecial[id] = special;
        }

        _addedTokens = [.. added.OrderByDescending(a => a.Content.Length).Select(a => (a.Content, a.Id))];
    }

    private enum PreTokenizerKind
    {
        ByteLevel,
        Split,
        Metaspace,
    }

    /// <inheritdoc/>
    public string Kind => _byteLevel ? "byte-level-bpe" : "sentencepiece-bpe";

    /// <inheritdoc/>
    public int VocabSize { get; }

    /// <inheritdoc/>
    public TokenId? Bos { get; }

    /// <inheritdoc/>
    public IReadOnlyList<TokenId> Eos { get; }

    /// <summary>Loads a <c>tokenizer.json</c>. Beginning/end-of-sequence ids come from the model's config, which owns them.</summary>
    /// <exception cref="ModelFormatException">The file is not valid JSON or uses a model or step SpecEdge does not implement.</exception>
    public static HfBpeTokenizer Load(string path, int? bosId = null, IReadOnlyList<int>? eosIds = null)
    {
        JsonObject root;
        try
        {
            root = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new ModelFormatException(path, "tokenizer.json must hold a JSON object");
        }
        catch (JsonException ex)
        {
            throw new ModelFormatException(path, $"tokenizer.json is not valid JSON ({ex.Message})", ex);
        }
        catch (FileNotFoundException ex)
        {
            throw new ModelFormatException(path, "tokenizer.json not found", ex);
        }

        var model = root["model"] as JsonObject ?? throw new ModelFormatException(path, "tokenizer.json has no 'model' object");
        var type = model["type"]?.GetValue<string>();
        if (type is not null && type != "BPE")
        {
            throw new UnsupportedModelException(path, $"tokenizer model type '{type}' is not supported; SpecEdge reads BPE tokenizer.json files (use tokenizer.model for SentencePiece unigram models)");
        }

        var vocabNode = model["vocab"] as JsonObject ?? throw new ModelFormatException(path, "tokenizer.json model has no 'vocab' object");
        var vocab = new Dictionary<string, int>(vocabNode.Count, StringComparer.Ordinal);
        foreach (var (token, idNode) in vocabNode)
        {
            vocab[token] = idNode?.GetValue<int>() ?? throw new ModelFormatException(path, $"vocab entry '{token}' has no id");
        }

        var merges = new Dictionary<(string, string), int>();
        if (model["merges"] is JsonArray mergeArray)
        {
            for (var rank = 0; rank < mergeArray.Count; rank++)
            {
                var (left, right) = mergeArray[rank] switch
                {
                    JsonArray pair when pair.Count == 2 => (pair[0]!.GetValue<string>(), pair[1]!.GetValue<string>()),
                    JsonValue text when text.GetValue<string>().Split(' ') is [var first, var second] => (first, second),
                    var other => throw new ModelFormatException(path, $"merge {rank} ({other?.ToJsonString()}) is not a pair of tokens"),
                };
                merges.TryAdd((left, right), rank);
            }
        }

        var added = new List<(string, int, bool)>();
        if (root["added_tokens"] is JsonArray addedArray)
        {
            foreach (var item in addedArray.OfType<JsonObject>())
            {
                added.Add((item["content"]!.GetValue<string>(), item["id"]!.GetValue<int>(), item["special"]?.GetValue<bool>() ?? false));
            }
        }

        var preTokenizers = new List<PreTokenizerStep>();
        ReadPreTokenizer(path, root["pre_tokenizer"], preTokenizers);
        string? prepend = null;
        var replacements = new List<(string, string)>();
        ReadNormalizer(path, root["normalizer"], ref prepend, replacements);

        int? unkId = null;
        if (model["unk_token"]?.GetValue<string>() is { } unk && vocab.TryGetValue(unk, out var unkValue))
        {
            unkId = unkValue;
        }

        var eos = (eosIds ?? []).Select(id => new TokenId(id)).ToList();
        return new HfBpeTokenizer(
            vocab,
            merges,
            added,
            preTokenizers,
            prepend,
            replacements,
            model["byte_fallback"]?.GetValue<bool>() ?? false,
            model["ignore_merges"]?.GetValue<bool>() ?? false,
            unkId,
            bosId is { } b ? new TokenId(b) : null,
            eos);
    }

    /// <summary>
    /// Writes the <c>tokenizer.json</c> of a plain byte vocabulary: token <c>b</c> is byte <c>b</c> (no merges), then
    /// <c>&lt;s&gt;</c> = 256 and <c>&lt;/s&gt;</c> = 257 when <paramref name="vocabSize"/> has room.
    /// </summary>
    public static void WriteByteVocabulary(string path, int vocabSize)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(vocabSize, 256);
        var vocab = new JsonObject();
        for (var b = 0; b < 256; b++)
        {
            vocab[ByteToChar[b].ToString()] = b;
        }

        var added = new JsonArray();
        if (vocabSize >= ByteTokenizer.MinVocabWithSpecials)
        {
            added.Add(AddedToken(ByteTokenizer.BosId, "<s>"));
            added.Add(AddedToken(ByteTokenizer.EosId, "</s>"));
        }

        var root = new JsonObject
        {
            ["version"] = "1.0",
            ["truncation"] = null,
            ["padding"] = null,
            ["added_tokens"] = added,
            ["normalizer"] = null,
            ["pre_tokenizer"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = true },
            ["post_processor"] = null,
            ["decoder"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = true, ["trim_offsets"] = true, ["use_regex"] = true },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE",
                ["dropout"] = null,
                ["unk_token"] = null,
                ["continuing_subword_prefix"] = null,
                ["end_of_word_suffix"] = null,
                ["fuse_unk"] = false,
                ["byte_fallback"] = false,
                ["vocab"] = vocab,
                ["merges"] = new JsonArray(),
            },
        };
        File.WriteAllText(path, root.ToJsonString(new JsonSerializerOptions { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }));

        static JsonObject AddedToken(int id, string content) => new()
        {
            ["id"] = id,
            ["content"] = content,
            ["single_word"] = false,
            ["lstrip"] = false,
            ["rstrip"] = false,
            ["normalized"] = false,
            ["special"] = true,
        };
    }

    /// <summary>The character GPT-2's byte-level alphabet uses for a byte.</summary>
    public static char ByteLevelChar(byte value) => ByteToChar[value];

    /// <inheritdoc/>
    public TokenId[] Encode(string text, bool addBos)
    {
        var ids = new List<int>(text.Length / 3 + 2);
        if (addBos && Bos is { } bos)
        {
            ids.Add(bos.Value);
        }

        var start = 0;
        while (start < text.Length)
        {
            var (matchAt, matchId, matchLength) = FindAddedToken(text, start);
            var end = matchAt < 0 ? text.Length : matchAt;
            if (end > start)
            {
                EncodeSegment(text[start..end], ids);
            }

            if (matchAt < 0)
            {
                break;
            }

            ids.Add(matchId);
            start = matchAt + matchLength;
        }

        var result = new TokenId[ids.Count];
        for (var i = 0; i < ids.Count; i++)
        {
            result[i] = new TokenId(ids[i]);
        }

        return result;
    }

    /// <inheritdoc/>
    public void AppendBytes(TokenId token, List<byte> destination)
    {
        if ((uint)token.Value >= (uint)VocabSize || _idToToken[token.Value] is not { } text)
        {
            throw new ArgumentOutOfRangeException(nameof(token), token.Value, $"token id is not in the tokenizer's vocabulary of {VocabSize}");
        }

        if (_isSpecial[token.Value])
        {
            return;
        }

        if (_byteLevel)
        {
            foreach (var ch in text)
            {
                if (CharToByte.TryGetValue(ch, out var b))
                {
                    destination.Add(b);
                }
                else
                {
                    AppendUtf8(ch.ToString(), destination);
                }
            }

            return;
        }

        if (_byteFallback && text.Length == 6 && text.StartsWith("<0x", StringComparison.Ordinal) && text[5] == '>'
            && byte.TryParse(text.AsSpan(3, 2), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out var raw))
        {
            destination.Add(raw);
            return;
        }

        AppendUtf8(text.Replace(MetaSpace, ' '), destination);
    }

    private static void AppendUtf8(string text, List<byte> destination)
    {
        Span<byte> buffer = stackalloc byte[256];
        if (Encoding.UTF8.GetByteCount(text) <= buffer.Length)
        {
            var n = Encoding.UTF8.GetBytes(text, buffer);
            foreach (var b in buffer[..n])
            {
                destination.Add(b);
            }
        }
        else
        {
            destination.AddRange(Encoding.UTF8.GetBytes(text));
        }
    }

    private (int At, int Id, int Length) FindAddedToken(string text, int start)
    {
        var best = (-1, 0, 0);
        foreach (var (content, id) in _addedTokens)
        {
            var at = text.IndexOf(content, start, StringComparison.Ordinal);
            if (at >= 0 && (best.Item1 < 0 || at < best.Item1))
            {
                best = (at, id, content.Length);
            }
        }

        return best;
    }

    private void EncodeSegment(string segment, List<int> ids)
    {
        foreach (var (pattern, content) in _replacements)
        {
            segment = segment.Replace(pattern, content, StringComparison.Ordinal);
        }

        if (_prepend is not null)
        {
            segment = _prepend + segment;
        }

        IEnumerable<string> words = [segment];
        foreach (var step in _preTokenizers)
        {
            words = step.Apply(words);
        }

        foreach (var word in words)
        {
            if (word.Length == 0)
            {
                continue;
            }

            var mapped = _byteLevel ? ToByteChars(word) : word;
            ids.AddRange(EncodeWord(mapped));
        }
    }

    private int[] EncodeWord(string word)
    {
        lock (_cacheLock)
        {
            if (_cache.TryGetValue(word, out var cached))
            {
                return cached;
            }
        }

        int[] result;
        if (_ignoreMerges && _vocab.TryGetValue(word, out var whole))
        {
            result = [whole];
        }
        else
        {
            result = MergeAndLookUp(word);
        }

        lock (_cacheLock)
        {
            if (_cache.Count >= MaxCachedWords)
            {
                _cache.Clear();
            }

            _cache[word] = result;
        }

        return result;
    }

    private int[] MergeAndLookUp(string word)
    {
        var symbols = new List<string>(word.Length);
        foreach (var rune in word.EnumerateRunes())
        {
            symbols.Add(rune.ToString());
        }

        while (symbols.Count > 1)
        {
            var bestRank = int.MaxValue;
            var bestAt = -1;
            for (var i = 0; i < symbols.Count - 1; i++)
            {
                if (_mergeRanks.TryGetValue((symbols[i], symbols[i + 1]), out var rank) && rank < bestRank)
                {
                    bestRank = rank;
                    bestAt = i;
                }
            }

            if (bestAt < 0)
            {
                break;
            }

            var left = symbols[bestAt];
            var right = symbols[bestAt + 1];
            for (var i = 0; i < symbols.Count - 1; i++)
            {
                if (symbols[i] == left && symbols[i + 1] == right)
                {
                    symbols[i] = left + right;
                    symbols.RemoveAt(i + 1);
                }
            }
        }

        var ids = new List<int>(symbols.Count);
        foreach (var symbol in symbols)
        {
            if (_vocab.TryGetValue(symbol, out var id))
            {
                ids.Add(id);
            }
            else if (_byteFallback)
            {
                foreach (var b in Encoding.UTF8.GetBytes(symbol))
                {
                    ids.Add(_vocab.TryGetValue($"<0x{b:X2}>", out var byteId) ? byteId : _unkId ?? throw new ArgumentException($"byte 0x{b:X2} has no byte-fallback token"));
                }
            }
            else if (_unkId is { } unk)
            {
                ids.Add(unk);
            }
            else
            {
                throw new ArgumentException($"symbol '{symbol}' is not in the vocabulary and the tokenizer has neither byte fallback nor an unknown token");
            }
        }

        return [.. ids];
    }

    private static string ToByteChars(string word)
    {
        var bytes = Encoding.UTF8.GetBytes(word);
        var chars = new char[bytes.Length];
        for (var i = 0; i < bytes.Length; i++)
        {
            chars[i] = ByteToChar[bytes[i]];
        }

        return new string(chars);
    }

    private static void ReadNormalizer(string path, JsonNode? node, ref string? prepend, List<(string, string)> replacements)
    {
        if (node is not JsonObject obj)
        {
            return;
        }

        switch (obj["type"]?.GetValue<string>())
        {
            case "Sequence":
                foreach (var inner in obj["normalizers"] as JsonArray ?? [])
                {
                    ReadNormalizer(path, inner, ref prepend, replacements);
                }

                break;
            case "Prepend":
                prepend = obj["prepend"]?.GetValue<string>();
                break;
            case "Replace":
                var pattern = (obj["pattern"] as JsonObject)?["String"]?.GetValue<string>()
                    ?? throw new UnsupportedModelException(path, "normalizer Replace with a regex pattern is not supported");
                replacements.Add((pattern, obj["content"]?.GetValue<string>() ?? string.Empty));
                break;
            case "NFC" or "NFKC":
                // Not applied: SpecEdge runs in invariant-globalization mode, whose string.Normalize leaves non-ASCII text
                // as it is. Text that is already NFC (almost all text) encodes exactly; decomposed accents do not.
                break;
            case var other:
                throw new UnsupportedModelException(path, $"tokenizer normalizer '{other}' is not supported");
        }
    }

    private static void ReadPreTokenizer(string path, JsonNode? node, List<PreTokenizerStep> steps)
    {
        if (node is not JsonObject obj)
        {
            return;
        }

        switch (obj["type"]?.GetValue<string>())
        {
            case "Sequence":
                foreach (var inner in obj["pretokenizers"] as JsonArray ?? [])
                {
                    ReadPreTokenizer(path, inner, steps);
                }

                break;
            case "ByteLevel":
                steps.Add(new PreTokenizerStep(
                    PreTokenizerKind.ByteLevel,
                    obj["use_regex"]?.GetValue<bool>() ?? true ? Gpt2Pattern() : null,
                    obj["add_prefix_space"]?.GetValue<bool>() ?? false));
                break;
            case "Split":
                var pattern = obj["pattern"] as JsonObject;
                var regex = pattern?["Regex"]?.GetValue<string>() is { } r
                    ? new Regex(r, RegexOptions.Compiled | RegexOptions.CultureInvariant)
                    : pattern?["String"]?.GetValue<string>() is { } s
                        ? new Regex(Regex.Escape(s), RegexOptions.CultureInvariant)
                        : throw new ModelFormatException(path, "Split pre-tokenizer has no pattern");
                var behavior = obj["behavior"]?.GetValue<string>() ?? "Isolated";
                if (behavior != "Isolated" || (obj["invert"]?.GetValue<bool>() ?? false))
                {
                    throw new UnsupportedModelException(path, $"Split pre-tokenizer behaviour '{behavior}' (invert {obj["invert"]}) is not supported; 'Isolated' is");
                }

                steps.Add(new PreTokenizerStep(PreTokenizerKind.Split, regex, false));
                break;
            case "Metaspace":
                var scheme = obj["prepend_scheme"]?.GetValue<string>() ?? ((obj["add_prefix_space"]?.GetValue<bool>() ?? true) ? "always" : "never");
                steps.Add(new PreTokenizerStep(PreTokenizerKind.Metaspace, null, scheme != "never", obj["split"]?.GetValue<bool>() ?? true));
                break;
            case var other:
                throw new UnsupportedModelException(path, $"tokenizer pre_tokenizer '{other}' is not supported");
        }
    }

    private static char[] BuildByteToChar()
    {
        var map = new char[256];
        var next = 256;
        for (var b = 0; b < 256; b++)
        {
            var printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            map[b] = printable ? (char)b : (char)next++;
        }

        return map;
    }

    private static Dictionary<char, byte> BuildCharToByte()
    {
        var map = new Dictionary<char, byte>(256);
        for (var b = 0; b < 256; b++)
        {
            map[ByteToChar[b]] = (byte)b;
        }

        return map;
    }

    [GeneratedRegex(@"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+", RegexOptions.CultureInvariant)]
    private static partial Regex Gpt2Pattern();

    private sealed record PreTokenizerStep(PreTokenizerKind Kind, Regex? Pattern, bool PrefixSpace, bool SplitOnMetaSpace = true)
    {
        public IEnumerable<string> Apply(IEnumerable<string> words)
        {
            foreach (var word in words)
            {
                switch (Kind)
                {
                    case PreTokenizerKind.ByteLevel:
                        var text = PrefixSpace && !word.StartsWith(' ') ? " " + word : word;
                        if (Pattern is null)
                        {
                            yield return text;
                        }
                        else
                        {
                            foreach (Match m in Pattern.Matches(text))
                            {
                                yield return m.Value;
                            }
                        }

                        break;
                    case PreTokenizerKind.Split:
                        var last = 0;
                        foreach (Match m in Pattern!.Matches(word))
                        {
                            if (m.Index > last)
                            {
                                yield return word[last..m.Index];
                            }

                            if (m.Length > 0)
                            {
                                yield return m.Value;
                            }

                            last = m.Index + m.Length;
                        }

                        if (last < word.Length)
                        {
                            yield return word[last..];
                        }

                        break;
                    case PreTokenizerKind.Metaspace:
                        var replaced = word.Replace(' ', MetaSpace);
                        if (PrefixSpace && !replaced.StartsWith(MetaSpace))
                        {
                            replaced = MetaSpace + replaced;
                        }

                        if (!SplitOnMetaSpace)
                        {
                            yield return replaced;
                            break;
                        }

                        var begin = 0;
                        for (var i = 1; i < replaced.Length; i++)
                        {
                            if (replaced[i] == MetaSpace)
                            {
                                yield return replaced[begin..i];
                                begin = i;
                            }
                        }

                        yield return replaced[begin..];
                        break;
                }
            }
        }
    }
}
