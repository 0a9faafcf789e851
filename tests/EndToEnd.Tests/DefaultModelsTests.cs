using System.Text.Json;
using SpecEdge.Demo;
using SpecEdge.Shared.Models;
using SpecEdge.TestUtilities;

namespace SpecEdge.EndToEnd.Tests;

/// <summary>The shipped trained pair is found and checked against its SHA256SUMS; an edited or truncated file is refused.</summary>
public sealed class DefaultModelsTests : IDisposable
{
    private readonly TempDirectory _temp = new("default-models");

    [Fact]
    public void FindRepositoryModels_ShippedPair_ChecksumsHoldAndExitsComeFromTheConfig()
    {
        var pair = DefaultModels.FindRepositoryModels();

        Assert.NotNull(pair);
        Assert.True(pair.Trained);
        Assert.True(File.Exists(Path.Combine(Path.GetDirectoryName(pair.Target)!, DefaultModels.ChecksumFileName)), "models/SHA256SUMS is missing");
        // The exits the checkpoint names, read straight from its config.json.
        using var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(pair.Target, "config.json")));
        var named = config.RootElement.GetProperty("specedge_exits").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        Assert.NotEmpty(named);
        Assert.Equal(named, pair.Exits);
        Assert.NotNull(pair.Calibration);
    }

    [Theory]
    [InlineData("target/model.safetensors")]
    [InlineData("draft/config.json")]
    public void LoadTrainedPair_FileEdited_FailsWithContentHashError(string file)
    {
        var models = CopyShippedPair();
        var path = Path.Combine(models, file);
        var bytes = File.ReadAllBytes(path);
        bytes[bytes.Length / 2] ^= 0x20;
        File.WriteAllBytes(path, bytes);

        var ex = Assert.Throws<ModelIntegrityException>(() => DefaultModels.LoadTrainedPair(models));

        Assert.Equal(path, ex.FilePath);
        Assert.Contains("content hash mismatch", ex.Message);
        Assert.Contains("restore it", ex.Message);
    }

    [Fact]
    public void LoadTrainedPair_WeightsTruncated_FailsWithContentHashError()
    {
        var models = CopyShippedPair();
        var path = Path.Combine(models, "draft", "model.safetensors");
        using (var stream = new FileStream(path, FileMode.Open))
        {
            stream.SetLength(stream.Length - 1000);
        }

        var ex = Assert.Throws<ModelIntegrityException>(() => DefaultModels.LoadTrainedPair(models));

        Assert.Equal(path, ex.FilePath);
    }

    [Fact]
    public void LoadTrainedPair_ChecksumListMalformed_NamesTheLine()
    {
        var models = CopyShippedPair();
        var sums = Path.Combine(models, DefaultModels.ChecksumFileName);
        File.AppendAllText(sums, "not a checksum line\n");

        var ex = Assert.Throws<ModelFormatException>(() => DefaultModels.LoadTrainedPair(models));

        Assert.Equal(sums, ex.FilePath);
        Assert.Contains($"line {File.ReadAllLines(sums).Length}", ex.Message);
    }

    [Fact]
    public void LoadTrainedPair_ListedFileMissing_NamesIt()
    {
        var models = CopyShippedPair();
        var path = Path.Combine(models, "target", "exit_adapters.safetensors");
        File.Delete(path);

        var ex = Assert.Throws<ModelFormatException>(() => DefaultModels.LoadTrainedPair(models));

        Assert.Equal(path, ex.FilePath);
        Assert.Contains("missing", ex.Message);
    }

    public void Dispose() => _temp.Dispose();

    private string CopyShippedPair()
    {
        var shipped = Path.GetDirectoryName(DefaultModels.FindRepositoryModels()!.Target)!;
        var copy = _temp.Combine($"models-{Guid.NewGuid():N}");
        foreach (var file in Directory.EnumerateFiles(shipped, "*", SearchOption.AllDirectories))
        {
            var destination = Path.Combine(copy, Path.GetRelativePath(shipped, file));
            Directory.CreateDirectory(Path.GetDirectoryName(destination)!);
            File.Copy(file, destination);
        }

        return copy;
    }
}
