using System.CommandLine;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using SpecEdge.CloudVerifier.Hosting;
using SpecEdge.EdgeClient.Cli;
using SpecEdge.TestUtilities;

namespace SpecEdge.EdgeClient.Tests.Cli;

/// <summary>A verifier on real Kestrel for the CLI tests.</summary>
public sealed class CliVerifierFixture : IAsyncLifetime
{
    private readonly TempDirectory _temp = new("edge-cli");
    private WebApplication? _app;

    public TestPair Pair { get; private set; } = null!;

    public Uri Address { get; private set; } = null!;

    public string Root => _temp.Path;

    public async Task InitializeAsync()
    {
        Pair = TestModels.WritePair(_temp.Path);
        (_app, Address) = await VerifierHost.StartLoopbackAsync(Pair.TargetDir, o =>
        {
            o.IntraOpThreads = 1;
            o.DefaultExitThreshold = 0;
        }).DefaultTimeout();
    }

    public async Task DisposeAsync()
    {
        if (_app is not null)
        {
            await _app.StopAsync().DefaultTimeout();
            await _app.DisposeAsync();
        }

        _temp.Dispose();
    }
}

/// <summary><c>specedge-edge generate</c> end to end, and its one-line errors.</summary>
public sealed class GenerateCommandTests(CliVerifierFixture fixture) : IClassFixture<CliVerifierFixture>
{
    [Theory]
    [InlineData("speculative", null)]
    [InlineData("cloud", null)]
    [InlineData("edge", null)]
    [InlineData("preemptive", null)]
    [InlineData("conditional", "rtt=4ms,bw=20mbit")]
    [InlineData("proactive", "rtt=4ms")]
    [InlineData("speculative", "rtt=6ms,jitter=2ms")]
    public async Task Generate_Json_PrintsTheReport(string mode, string? link)
    {
        var args = new List<string> { "generate", "--server", fixture.Address.ToString(), "--draft", fixture.Pair.DraftDir, "--prompt", "Hi there", "--max-new-tokens", "12", "--mode", mode, "--json", "--ignore-eos" };
        if (link is not null)
        {
            args.AddRange(["--link", link]);
        }

        var (code, output, error) = await RunAsync([.. args]);

        Assert.True(code == 0, error);
        var report = JsonNode.Parse(output)!;
        Assert.Equal(mode, report["mode"]!.GetValue<string>());
        Assert.Equal(12, report["new_tokens"]!.GetValue<int>());
        Assert.Equal(12, report["token_ids"]!.AsArray().Count);
        Assert.True(report["latency_ms"]!["total"]!.GetValue<double>() > 0);
        foreach (var field in new[] { "text", "rounds", "draft_tokens", "accepted_tokens", "acceptance_rate", "mean_accepted_length" })
        {
            Assert.NotNull(report[field]);
        }

        foreach (var part in new[] { "draft", "network_and_queue", "verify" })
        {
            Assert.NotNull(report["time_breakdown_ms"]![part]);
        }

        Assert.Equal(link ?? "none", mode == "edge" ? "none" : report["link"]!.GetValue<string>() == "none" ? "none" : link);
    }

    [Fact]
    public async Task Generate_Text_StreamsToStdout()
    {
        var (code, output, error) = await RunAsync("generate", "--server", fixture.Address.ToString(), "--draft", fixture.Pair.DraftDir, "--prompt-ids", "256,72,105", "--max-new-tokens", "8");

        Assert.True(code == 0, error);
        Assert.NotEmpty(output.Trim('\n'));
        Assert.Contains("[speculative: ", error);
    }

    [Fact]
    public async Task Generate_ChatWithStop_RendersTheConversationAndStops()
    {
        var (code, output, error) = await RunAsync("generate", "--server", fixture.Address.ToString(), "--draft", fixture.Pair.DraftDir, "--system", "Be brief.", "--chat", "Say hi", "--max-new-tokens", "24", "--ignore-eos", "--json");
        Assert.True(code == 0, error);
        var full = JsonNode.Parse(output)!["text"]!.GetValue<string>();
        Assert.True(full.Length > 6, $"too short to cut: '{full}'");
        var stop = full.Substring(3, 2);

        (code, output, error) = await RunAsync("generate", "--server", fixture.Address.ToString(), "--draft", fixture.Pair.DraftDir, "--system", "Be brief.", "--chat", "Say hi", "--max-new-tokens", "24", "--ignore-eos", "--json", "--stop", stop);

        Assert.True(code == 0, error);
        var report = JsonNode.Parse(output)!;
        Assert.Equal(full[..full.IndexOf(stop, StringComparison.Ordinal)], report["text"]!.GetValue<string>());
        Assert.Equal("stop", report["finish_reason"]!.GetValue<string>());
    }

    [Fact]
    public async Task Generate_ServerUnreachable_OneLineNamingIt()
    {
        var port = TestPlaces.FreePort();

        var (code, _, error) = await RunAsync("generate", "--server", $"http://127.0.0.1:{port}", "--draft", fixture.Pair.DraftDir, "--prompt", "x");

        Assert.Equal(1, code);
        Assert.Contains($"cannot use the verifier at http://127.0.0.1:{port}/: unreachable", error);
        Assert.Single(error.Trim().Split('\n'));
    }

    [Theory]
    [InlineData("not a url", "--server: 'not a url' is not a verifier URL")]
    [InlineData("ftp://127.0.0.1:21", "--server: 'ftp://127.0.0.1:21' is not a verifier URL")]
    public async Task Generate_MalformedServer_NamesTheFlag(string server, string message)
    {
        var (code, _, error) = await RunAsync("generate", "--server", server, "--draft", fixture.Pair.DraftDir, "--prompt", "x");

        Assert.Equal(2, code);
        Assert.Contains(message, error);
    }

    [Fact]
    public async Task Generate_WrongService_SaysItIsNotAVerifier()
    {
        // A plain HTTP/2 listener that is not a SpecEdge verifier.
        await using var other = WebApplication.CreateBuilder().Build();
        other.Urls.Add("http://127.0.0.1:0");
        other.MapGet("/", () => "hello");
        await other.StartAsync().DefaultTimeout();

        var (code, _, error) = await RunAsync("generate", "--server", other.Urls.First(), "--draft", fixture.Pair.DraftDir, "--prompt", "x");

        Assert.Equal(1, code);
        Assert.Contains("cannot use the verifier at", error);
    }

    [Fact]
    public async Task Generate_DraftFolderMissing_NamesTheFolder()
    {
        var missing = Path.Combine(fixture.Root, "no-such-draft");

        var (code, _, error) = await RunAsync("generate", "--server", fixture.Address.ToString(), "--draft", missing, "--prompt", "x");

        Assert.Equal(1, code);
        Assert.Contains($"{missing}: model folder not found", error);
    }

    [Theory]
    [InlineData(new[] { "--mode", "warp" }, "--mode: unknown mode 'warp'")]
    [InlineData(new[] { "--link", "rtt=fast" }, "--link: link spec 'rtt=fast': rtt=fast is not a non-negative duration")]
    [InlineData(new[] { "--profile", "jetson-9000" }, "--profile: unknown compute profile 'jetson-9000'")]
    [InlineData(new[] { "--temperature", "-1" }, "temperature -1 is out of range")]
    [InlineData(new[] { "--prompt-ids", "1,x" }, "--prompt-ids: 'x' is not a token id")]
    [InlineData(new[] { "--chat", "hello" }, "give exactly one of --prompt, --prompt-file, --prompt-ids and --chat")]
    [InlineData(new[] { "--system", "be brief" }, "--system goes with --chat")]
    [InlineData(new[] { "--stop", "" }, "--stop: at most 4 stop sequences, none empty")]
    [InlineData(new[] { "--stop", "a", "--stop", "b", "--stop", "c", "--stop", "d", "--stop", "e" }, "--stop: at most 4 stop sequences")]
    [InlineData(new[] { "--balance", "random" }, "--balance: 'random' is not a balancing policy: use failover or session-hash")]
    [InlineData(new[] { "--candidates", "5" }, "--candidates: use 1 to 4 (got 5)")]
    [InlineData(new[] { "--candidates", "0" }, "--candidates: use 1 to 4 (got 0)")]
    [InlineData(new[] { "--leaves", "5" }, "--leaves: use 0 to 4 (got 5)")]
    [InlineData(new[] { "--leaves", "-1" }, "--leaves: use 0 to 4 (got -1)")]
    public async Task Generate_BadOption_NamesIt(string[] extra, string message)
    {
        var args = new List<string> { "generate", "--server", fixture.Address.ToString(), "--draft", fixture.Pair.DraftDir };
        if (!extra.Contains("--prompt-ids"))
        {
            args.AddRange(["--prompt", "x"]);
        }

        args.AddRange(extra);

        var (code, _, error) = await RunAsync([.. args]);

        Assert.NotEqual(0, code);
        Assert.Contains(message, error);
    }

    private static async Task<(int Code, string Output, string Error)> RunAsync(params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        var code = await EdgeCli.Build().Parse(args).InvokeAsync(new InvocationConfiguration { Output = output, Error = error }).DefaultTimeout();
        return (code, output.ToString(), error.ToString());
    }

}
