using System.CommandLine;
using SpecEdge.Shared.Models;

namespace SpecEdge.ModelTools.Commands;

/// <summary>Runs a command body and turns the errors users can cause into one clear line and exit code 1.</summary>
internal static class CliErrors
{
    public const string Program = "specedge-models";

    public static int Run(ParseResult parse, Func<TextWriter, int> body)
    {
        var output = parse.InvocationConfiguration.Output;
        try
        {
            return body(output);
        }
        catch (Exception ex) when (ex is ModelFormatException or ArgumentException or IOException or UnauthorizedAccessException or InvalidOperationException)
        {
            parse.InvocationConfiguration.Error.WriteLine($"{Program}: error: {ex.Message}");
            return 1;
        }
    }

    /// <summary>A validator that a number option is at least <paramref name="minimum"/>, naming the option when it is not.</summary>
    public static void AtLeast(Option<int> option, int minimum) =>
        option.Validators.Add(result =>
        {
            var value = result.GetValueOrDefault<int>();
            if (value < minimum)
            {
                result.AddError($"{option.Name} must be at least {minimum} (got {value})");
            }
        });

    /// <summary>Parses a comma-separated list of integers such as <c>2,4</c>; null with an error message when malformed.</summary>
    public static IReadOnlyList<int>? ParseIntList(string? text, string optionName, out string? error)
    {
        error = null;
        if (string.IsNullOrWhiteSpace(text))
        {
            return [];
        }

        var values = new List<int>();
        foreach (var part in text.Split(',', StringSplitOptions.TrimEntries))
        {
            if (!int.TryParse(part, System.Globalization.NumberStyles.Integer, System.Globalization.CultureInfo.InvariantCulture, out var value))
            {
                error = $"{optionName}: '{part}' is not an integer (expected a list such as 2,4)";
                return null;
            }

            values.Add(value);
        }

        return values;
    }
}
