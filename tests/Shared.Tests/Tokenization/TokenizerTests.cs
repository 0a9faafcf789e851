using SpecEdge.Shared.Tokenization;
using SpecEdge.TestUtilities;

namespace SpecEdge.Shared.Tests.Tokenization;

public sealed class TokenizerTests : IDisposable
{
    private static readonly string[] Texts =
    [
        "hello world",
        "the speculative world, hello!",
        "  two  spaces and\ttabs\nnew line",
        "naïve café — 日本語 🚀 done",
        "",
    ];

    private readonly TempDirectory _temp = new("tokenizers");

    public static TheoryData<string> Kinds() => ["bytes", "byte-level-bpe", "sentencepiece-bpe", "sentencepiece"];

    [Theory]
    [MemberData(nameof(Kinds))]
    public void Decode_OfEncode_GivesTextBack(string kind)
    {
        var tokenizer = Create(kind);
        foreach (var text in Texts)
        {
            var ids = tokenizer.Encode(text, addBos: false);

            var decoded = tokenizer.Decode(ids);

            // SentencePiece-style tokenizers put a space in front of the text (the dummy prefix).
            var expected = kind.StartsWith("sentencepiece", StringComparison.Ordinal) && text.Length > 0 ? " " + text : text;
            Assert.Equal(expected, decoded);
        }
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public void Push_MultiByteCharactersSplitAcrossTokens_NeverEmitsHalfACharacter(string kind)
    {
        var tokenizer = Create(kind);
        const string Text = "café 日本 🚀!";
        var ids = tokenizer.Encode(Text, addBos: false);
        var decoder = new Utf8StreamDecoder(tokenizer);
        var pieces = new List<string>();

        foreach (var id in ids)
        {
            pieces.Add(decoder.Push(id));
        }

        pieces.Add(decoder.Flush());

        Assert.DoesNotContain(pieces, p => p.Contains('\uFFFD'));
        Assert.All(pieces, p => Assert.False(p.Length > 0 && char.IsHighSurrogate(p[^1]), $"piece '{p}' ends inside a surrogate pair"));
        Assert.EndsWith(Text, string.Concat(pieces));
    }

    [Fact]
    public void Encode_ByteLevelBpe_UsesMergesForKnownWords()
    {
        var tokenizer = Create("byte-level-bpe");

        var ids = tokenizer.Encode("hello world", addBos: false);

        Assert.Equal(2, ids.Length);
        Assert.Equal("hello", tokenizer.Decode([ids[0]]));
        Assert.Equal(" world", tokenizer.Decode([ids[1]]));
    }

    [Fact]
    public void Encode_ByteLevelBpe_SpecialTokenInTextIsOneIdAndDecodesToNothing()
    {
        var tokenizer = Create("byte-level-bpe");

        var ids = tokenizer.Encode("the<|end|>", addBos: false);

        Assert.Equal(2, ids.Length);
        Assert.Equal("the", tokenizer.Decode(ids));
    }

    [Theory]
    [InlineData("sentencepiece-bpe")]
    [InlineData("sentencepiece")]
    public void Encode_SentencePieceStyle_WholeWordsAndByteFallback(string kind)
    {
        var tokenizer = Create(kind);

        var words = tokenizer.Encode("hello world", addBos: false);
        var fallback = tokenizer.Encode("é", addBos: false);

        Assert.Equal(2, words.Length);
        Assert.Equal(" hello", tokenizer.Decode([words[0]]));
        // "▁" then the two UTF-8 bytes of é as <0xC3> <0xA9>.
        Assert.Equal(3, fallback.Length);
        Assert.Equal(" é", tokenizer.Decode(fallback));
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public void Encode_OneCharacter_GivesItsToken(string kind)
    {
        var tokenizer = Create(kind);

        var ids = tokenizer.Encode("h", addBos: false);

        Assert.NotEmpty(ids);
        Assert.EndsWith("h", tokenizer.Decode(ids));
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public void AppendBytes_IdOutsideVocabulary_Throws(string kind)
    {
        var tokenizer = Create(kind);

        Assert.Throws<ArgumentOutOfRangeException>(() => tokenizer.AppendBytes(new TokenId(tokenizer.VocabSize), []));
    }

    [Fact]
    public void Encode_WithBos_PutsBosFirst()
    {
        var tokenizer = new ByteTokenizer(258);

        var ids = tokenizer.Encode("a", addBos: true);

        Assert.Equal([new TokenId(ByteTokenizer.BosId), new TokenId('a')], ids);
        Assert.True(tokenizer.IsEos(new TokenId(ByteTokenizer.EosId)));
    }

    private ITextTokenizer Create(string kind)
    {
        var dir = _temp.Combine(kind);
        Directory.CreateDirectory(dir);
        switch (kind)
        {
            case "bytes":
                return new ByteTokenizer(258);
            case "byte-level-bpe":
                TokenizerFixtures.WriteByteLevelBpe(Path.Combine(dir, TokenizerFiles.TokenizerJson));
                return TokenizerFiles.Load(dir, 1000, null, []);
            case "sentencepiece-bpe":
                TokenizerFixtures.WriteSentencePieceStyleBpe(Path.Combine(dir, TokenizerFiles.TokenizerJson));
                return TokenizerFiles.Load(dir, 1000, 1, [2]);
            default:
                TokenizerFixtures.WriteSentencePieceModel(Path.Combine(dir, TokenizerFiles.SentencePieceModel));
                return TokenizerFiles.Load(dir, 1000, 1, [2]);
        }
    }

    public void Dispose() => _temp.Dispose();
}
