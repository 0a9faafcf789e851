using System.Text.Json;
using SpecEdge.Shared.Tokenization;

namespace SpecEdge.Shared.Tests.Tokenization;

/// <summary>
/// The default pair's trained tokenizer.json, read by SpecEdge, gives the ids the training recipe's own Python BPE gives
/// (tools/train/tokenizer_vectors.py wrote the vectors): two implementations of byte-level BPE that must agree.
/// </summary>
public sealed class TrainedTokenizerVectorTests
{
    [Fact]
    public void Encode_TrainedTokenizer_MatchesTheRecipesIds()
    {
        var models = FindModels();
        if (models is null)
        {
            Assert.Fail("models/target/tokenizer.json is missing from the repository");
        }

        var tokenizer = TokenizerFiles.Load(Path.Combine(models, "target"), 1024, 256, [257]);
        using var vectors = JsonDocument.Parse(File.ReadAllText(Path.Combine(models, "tokenizer-vectors.json")));
        var checkedCount = 0;
        foreach (var vector in vectors.RootElement.GetProperty("vectors").EnumerateArray())
        {
            var text = vector.GetProperty("text").GetString()!;
            var expected = vector.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();

            var ids = tokenizer.Encode(text, addBos: false).Select(t => t.Value).ToArray();

            Assert.Equal(expected, ids);
            Assert.Equal(text, tokenizer.Decode(ids.Select(i => new TokenId(i)).ToArray()));
            checkedCount++;
        }

        Assert.True(checkedCount >= 5);
    }

    private static string? FindModels()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var models = Path.Combine(dir.FullName, "models");
            if (File.Exists(Path.Combine(models, "tokenizer-vectors.json")))
            {
                return models;
            }
        }

        return null;
    }
}
