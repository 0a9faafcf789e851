using System.Text.Json.Nodes;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using SpecEdge.CloudVerifier.Hosting;
using SpecEdge.TestUtilities;

namespace SpecEdge.CloudVerifier.Tests.Services;

public sealed class ModelLoadingTests(VerifierFixture fixture) : IClassFixture<VerifierFixture>
{
    [Fact]
    public void Startup_CheckpointNamingItsExits_ConvertedWithThoseExits()
    {
        using var temp = new TempDirectory("suggested-exits");
        var checkpoint = temp.Combine("checkpoint");
        Directory.CreateDirectory(checkpoint);
        foreach (var file in Directory.GetFiles(fixture.Pair.Target.CheckpointDir))
        {
            File.Copy(file, Path.Combine(checkpoint, Path.GetFileName(file)));
        }

        var configPath = Path.Combine(checkpoint, "config.json");
        var config = JsonNode.Parse(File.ReadAllText(configPath))!.AsObject();
        config["specedge_exits"] = new JsonArray(1);
        File.WriteAllText(configPath, config.ToJsonString());
        using var app = VerifierHost.Create([], builder => builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Verifier:Model"] = checkpoint,
            ["Verifier:CacheDirectory"] = temp.Combine("cache"),
            ["Verifier:IntraOpThreads"] = "1",
        }));

        var target = app.Services.GetRequiredService<TargetModel>();

        Assert.Equal([1u], target.Describe().Exits.Select(e => e.Layer));
        Assert.Equal(2, target.Model.Stages.Count);
    }
}
