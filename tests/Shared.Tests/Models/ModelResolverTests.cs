using SpecEdge.Shared.Models;
using SpecEdge.Shared.Models.Conversion;
using SpecEdge.TestUtilities;

namespace SpecEdge.Shared.Tests.Models;

public sealed class ModelResolverTests : IDisposable
{
    private readonly TempDirectory _temp = new("resolver");

    [Fact]
    public void Resolve_Checkpoint_ConvertsOnceIntoCacheThenReuses()
    {
        var model = TestModels.WriteCheckpoint(_temp.Combine("ck"), TestModels.Small());
        var cache = _temp.Combine("cache");
        var messages = new List<string>();

        var first = ModelResolver.Resolve(model.CheckpointDir, new ConversionOptions { Exits = [1] }, cache, messages.Add);
        var second = ModelResolver.Resolve(model.CheckpointDir, new ConversionOptions { Exits = [1] }, cache, messages.Add);
        var draft = ModelResolver.Resolve(model.CheckpointDir, new ConversionOptions(), cache, messages.Add);

        Assert.Equal(first, second);
        Assert.NotEqual(first, draft);
        Assert.StartsWith(cache, first);
        Assert.Equal([1], ModelManifest.Load(first).Exits);
        Assert.Equal(ModelKind.Draft, ModelManifest.Load(draft).Kind);

        // Two conversions, each announced and then reported every quarter (2 layers, written in two graph forms).
        Assert.Equal(2, messages.Count(m => m.StartsWith("converting checkpoint", StringComparison.Ordinal)));
        Assert.Equal(["25%", "50%", "75%", "100%", "25%", "50%", "75%", "100%"], messages.Where(m => m.Contains("layer graphs written", StringComparison.Ordinal)).Select(m => m.Split(": ")[1].Split(' ')[0]));
    }

    [Fact]
    public void Resolve_CheckpointChanged_ConvertsAgain()
    {
        var dir = _temp.Combine("ck");
        TestModels.WriteCheckpoint(dir, TestModels.Small(seed: 1));
        var cache = _temp.Combine("cache");
        var first = ModelResolver.Resolve(dir, null, cache);

        Directory.Delete(dir, recursive: true);
        TestModels.WriteCheckpoint(dir, TestModels.Small(seed: 2));
        var second = ModelResolver.Resolve(dir, null, cache);

        Assert.NotEqual(first, second);
    }

    [Fact]
    public void Resolve_ConvertedFolder_IsUsedAsItIs()
    {
        var (_, converted) = TestModels.WriteAndConvert(_temp.Combine("m"), TestModels.Small(), new ConversionOptions { Exits = [1] });

        Assert.Equal(converted, ModelResolver.Resolve(converted, new ConversionOptions { Exits = [1] }, _temp.Combine("cache")));
        var ex = Assert.Throws<ArgumentException>(() => ModelResolver.Resolve(converted, new ConversionOptions { Exits = [1, 2] }, _temp.Combine("cache")));
        Assert.Contains("exits [1], not [1,2]", ex.Message);
    }

    [Fact]
    public void Resolve_FolderWithoutModel_SaysWhatIsMissing()
    {
        var dir = _temp.Combine("nothing");
        Directory.CreateDirectory(dir);

        var ex = Assert.Throws<ModelFormatException>(() => ModelResolver.Resolve(dir, null, _temp.Combine("cache")));

        Assert.Contains("neither a converted SpecEdge model", ex.Message);
    }

    public void Dispose() => _temp.Dispose();
}
