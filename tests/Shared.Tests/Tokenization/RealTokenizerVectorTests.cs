using System.IO.Compression;
using System.Text.Json;
using SpecEdge.Shared.Tokenization;
using SpecEdge.TestUtilities;

namespace SpecEdge.Shared.Tests.Tokenization;

/// <summary>
/// Llama 3's and Qwen2's real byte-level BPE tokenizer.json files (regex pre-tokenizer, 128 000 and 151 643 merges'
/// worth of vocabulary, added special tokens), against ids the reference implementation (Hugging Face tokenizers)
/// produced: llama.cpp's vocabulary test vectors and transformers.js's tokenization tests. TestData/tokenizers/SOURCES.md
/// names every file's origin.
/// </summary>
public sealed class RealTokenizerVectorTests : IClassFixture<RealTokenizerVectorTests.Files>
{
    private readonly Files _files;

    public RealTokenizerVectorTests(Files files) => _files = files;

    [Theory]
    [InlineData("llama3")]
    [InlineData("qwen2")]
    public void Encode_LlamaCppVectors_MatchHuggingFaceIds(string family)
    {
        var tokenizer = _files.Tokenizer(family);
        var folder = Files.Folder(family);
        var inputName = Directory.GetFiles(folder, "*.inp").Single();
        var texts = File.ReadAllText(inputName).Split("\n__ggml_vocab_test__\n")[..^1];
        var expected = File.ReadAllText(Path.ChangeExtension(inputName, ".out")).Split('\n')[..texts.Length];

        Assert.Equal(46, texts.Length);
        for (var i = 0; i < texts.Length; i++)
        {
            var ids = tokenizer.Encode(texts[i], addBos: false).Select(t => t.Value).ToArray();
            var want = expected[i].Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(int.Parse).ToArray();
            Assert.True(want.SequenceEqual(ids), $"{family} vector {i} ({JsonSerializer.Serialize(texts[i])}): expected [{string.Join(' ', want)}], got [{string.Join(' ', ids)}]");
            Assert.Equal(texts[i], tokenizer.Decode(ids.Select(id => new TokenId(id)).ToArray()));
        }
    }

    [Theory]
    [InlineData("llama3")]
    [InlineData("qwen2")]
    public void Encode_TransformersJsCases_MatchIds(string family)
    {
        var tokenizer = _files.Tokenizer(family);
        using var cases = JsonDocument.Parse(File.ReadAllText(Path.Combine(Files.Folder(family), "transformers.js-cases.json")));
        var count = 0;
        foreach (var c in cases.RootElement.EnumerateArray())
        {
            var text = c.GetProperty("text").GetString()!;
            var bos = c.GetProperty("bos_prepended").GetBoolean();
            var want = c.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
            var ids = tokenizer.Encode(text, addBos: bos).Select(t => t.Value).ToArray();
            Assert.True(want.SequenceEqual(ids), $"{family} case {c.GetProperty("name").GetString()}: expected [{string.Join(' ', want)}], got [{string.Join(' ', ids)}]");
            count++;
        }

        Assert.True(count >= 25);
    }

    [Fact]
    public void Encode_Llama31ChatText_SplitsSpecialTokensAsTransformersJs()
    {
        // A rendered Llama 3.1 chat: the header and end-of-turn markers are added tokens, matched whole in the text.
        var tokenizer = _files.Tokenizer("llama3");
        using var chat = JsonDocument.Parse(File.ReadAllText(Path.Combine(Files.Folder("llama3"), "transformers.js-llama3.1-chat.json")));
        var text = chat.RootElement.GetProperty("text").GetString()!;
        var want = chat.RootElement.GetProperty("input_ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();

        var ids = tokenizer.Encode(text, addBos: false).Select(t => t.Value).ToArray();

        Assert.Equal(want, ids);
        Assert.Equal(128_006, ids[1]); // <|start_header_id|>
    }

    /// <summary>The compressed tokenizer files, unpacked once into a temporary folder and loaded.</summary>
    public sealed class Files : IDisposable
    {
        private readonly TempDirectory _temp = new("real-tokenizers");
        private readonly Dictionary<string, ITextTokenizer> _loaded = [];

        public static string Folder(string family) => Path.Combine(AppContext.BaseDirectory, "TestData", "tokenizers", family);

        public ITextTokenizer Tokenizer(string family)
        {
            lock (_loaded)
            {
                if (!_loaded.TryGetValue(family, out var tokenizer))
                {
                    var path = _temp.Combine(family, "tokenizer.json");
                    Directory.CreateDirectory(Path.GetDirectoryName(path)!);
                    using (var source = new GZipStream(File.OpenRead(Path.Combine(Folder(family), "tokenizer.json.gz")), CompressionMode.Decompress))
                    using (var destination = File.Create(path))
                    {
                        source.CopyTo(destination);
                    }

                    // The models' own ids: Llama 3 begins with <|begin_of_text|> (128000); Qwen2 has no BOS.
                    tokenizer = family == "llama3" ? HfBpeTokenizer.Load(path, 128_000, [128_009]) : HfBpeTokenizer.Load(path, null, [151_645]);
                    _loaded[family] = tokenizer;
                }

                return tokenizer;
            }
        }

        public void Dispose() => _temp.Dispose();
    }
}
