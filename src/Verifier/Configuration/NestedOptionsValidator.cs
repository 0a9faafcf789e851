using System.ComponentModel.DataAnnotations;
using Microsoft.Extensions.Options;

namespace SpecEdge.CloudVerifier.Configuration;

/// <summary>
/// Validates the data annotations of the <c>Verifier</c> section's nested groups (<c>Limits</c>, <c>Batching</c>), which
/// <c>ValidateDataAnnotations</c> does not descend into; each failure names its setting.
/// </summary>
internal sealed class NestedOptionsValidator : IValidateOptions<VerifierOptions>
{
    public ValidateOptionsResult Validate(string? name, VerifierOptions options)
    {
        var failures = new List<string>();
        Check(options.Limits, "Limits", failures);
        Check(options.Batching, "Batching", failures);
        Check(options.Telemetry, "Telemetry", failures);
        return failures.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(failures);
    }

    private static void Check(object? group, string section, List<string> failures)
    {
        if (group is null)
        {
            failures.Add($"{VerifierOptions.SectionName}:{section} is required");
            return;
        }

        var results = new List<ValidationResult>();
        if (!Validator.TryValidateObject(group, new ValidationContext(group), results, validateAllProperties: true))
        {
            foreach (var result in results)
            {
                failures.Add($"{VerifierOptions.SectionName}:{section}:{string.Join(",", result.MemberNames)}: {result.ErrorMessage}");
            }
        }
    }
}
