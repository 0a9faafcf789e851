using SpecEdge.EdgeClient.Client;
using SpecEdge.Shared.Tokenization;

namespace SpecEdge.EdgeClient.Tests.Client;

/// <summary>Stop sequences over tokens of several characters: inside one token, across tokens, and false starts.</summary>
public sealed class StopSequenceFilterTests
{
    [Theory]
    [InlineData(new[] { "Hello", " wor", "ld.", " Bye" }, "ld. B", "Hello wor")]
    [InlineData(new[] { "ab", "cSTOPde", "f" }, "STOP", "abc")]
    [InlineData(new[] { "S", "T", "O", "X", "STOP" }, "STOP", "STOX")]
    [InlineData(new[] { "xx", "ST", "ST", "OP" }, "STOP", "xxST")]
    [InlineData(new[] { "no", " stop", " here" }, "STOP", "no stop here")]
    public void Push_DeliversExactlyTheTextBeforeTheFirstStop(string[] tokens, string stop, string expected)
    {
        var filter = new StopSequenceFilter([stop, "\n\n"]);
        var delivered = new System.Text.StringBuilder();
        for (var i = 0; i < tokens.Length && !filter.Stopped; i++)
        {
            foreach (var token in filter.Push(new CommittedToken(new TokenId(i), i, tokens[i])))
            {
                // Nothing delivered may ever hold the start of the stop sequence that ends the text.
                delivered.Append(token.Text);
                Assert.True(expected.StartsWith(delivered.ToString(), StringComparison.Ordinal), $"delivered '{delivered}' is not a prefix of '{expected}'");
            }
        }

        if (!filter.Stopped)
        {
            foreach (var token in filter.Flush())
            {
                delivered.Append(token.Text);
            }
        }

        Assert.Equal(expected, delivered.ToString());
        Assert.Equal(expected, filter.Released.ToString());
        Assert.Equal(expected != string.Concat(tokens), filter.Stopped);
    }
}
