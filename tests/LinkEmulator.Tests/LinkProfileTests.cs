namespace SpecEdge.LinkEmulator.Tests;

public sealed class LinkProfileTests
{
    [Fact]
    public void Parse_RoundTripJitterBandwidth_SplitsPerDirection()
    {
        var profile = LinkProfile.Parse("rtt=50ms,jitter=5ms,bw=10mbit");

        Assert.Equal(TimeSpan.FromMilliseconds(25), profile.Uplink.Delay);
        Assert.Equal(TimeSpan.FromMilliseconds(25), profile.Downlink.Delay);
        Assert.Equal(TimeSpan.FromMilliseconds(5), profile.Uplink.Jitter);
        Assert.Equal(10e6, profile.Downlink.BitsPerSecond);
        Assert.Equal(TimeSpan.FromMilliseconds(50), profile.RoundTrip);
    }

    [Fact]
    public void Parse_PerDirectionKeysAndStall()
    {
        var profile = LinkProfile.Parse("up-delay=10ms, down-delay=1.5s, up-bw=500kbit, down-bw=1gbit, stall=2s/10s");

        Assert.Equal(TimeSpan.FromMilliseconds(10), profile.Uplink.Delay);
        Assert.Equal(TimeSpan.FromSeconds(1.5), profile.Downlink.Delay);
        Assert.Equal(500e3, profile.Uplink.BitsPerSecond);
        Assert.Equal(1e9, profile.Downlink.BitsPerSecond);
        Assert.Equal(new StallSpec(TimeSpan.FromSeconds(2), TimeSpan.FromSeconds(10)), profile.Stall);
    }

    [Theory]
    [InlineData("none")]
    [InlineData("")]
    public void Parse_None_IsIdeal(string spec)
    {
        Assert.True(LinkProfile.Parse(spec).IsIdeal);
    }

    [Theory]
    [InlineData("rtt=fast", "rtt=fast is not a non-negative duration")]
    [InlineData("rtt=5h", "unknown unit 'h'")]
    [InlineData("latency=5ms", "unknown key 'latency'")]
    [InlineData("bw=0mbit", "bw=0mbit is not a positive bandwidth")]
    [InlineData("bw=10mb", "unknown unit 'mb'")]
    [InlineData("rtt", "'rtt' is not key=value")]
    [InlineData("stall=5s", "stall takes DURATION/EVERY")]
    [InlineData("stall=5s/1s", "a stall must be shorter than its period")]
    public void Parse_Malformed_NamesTheProblem(string spec, string message)
    {
        var ex = Assert.Throws<FormatException>(() => LinkProfile.Parse(spec));

        Assert.Contains(message, ex.Message);
    }

    [Fact]
    public void ToString_ParsesBackToTheSameProfile()
    {
        var profile = LinkProfile.Parse("rtt=40ms,jitter=4ms,up-bw=2mbit,down-bw=20mbit,stall=100ms/5s");

        Assert.Equal(profile, LinkProfile.Parse(profile.ToString()));
    }
}
