using System.Text.Json;
using System.Text.Json.Serialization;

namespace SpecEdge.Shared.Calibration;

/// <summary>How often one exit's provisional verdict matched the final verdict at or above one confidence level.</summary>
public sealed record CalibrationBin(double Confidence, int Verdicts, int Matches)
{
    /// <summary>Matched over sent (NaN when none was sent).</summary>
    public double Precision => Verdicts == 0 ? double.NaN : (double)Matches / Verdicts;
}

/// <summary>Calibration figures of one exit, and the threshold chosen for the requested precision.</summary>
public sealed record ExitCalibration
{
    /// <summary>The exit layer.</summary>
    public required int Layer { get; init; }

    /// <summary>Verdicts and matches with confidence at or above each level.</summary>
    public required IReadOnlyList<CalibrationBin> Bins { get; init; }

    /// <summary>The lowest confidence level whose verdicts reach the requested precision (1 when none does).</summary>
    public required double Threshold { get; init; }

    /// <summary>Precision of the verdicts at or above <see cref="Threshold"/>.</summary>
    public double PrecisionAtThreshold { get; init; }

    /// <summary>Share of rounds whose verdict reaches <see cref="Threshold"/> (how often an early verdict is sent).</summary>
    public double CoverageAtThreshold { get; init; }
}

/// <summary>
/// The output of the calibration command: per exit, how often the provisional verdict matches the final one at each
/// confidence level, and the threshold reaching the requested precision. The verifier loads it (Verifier:Calibration).
/// </summary>
public sealed record CalibrationReport
{
    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    /// <summary>The target model the calibration measured.</summary>
    public required string Model { get; init; }

    /// <summary>The precision each chosen threshold had to reach.</summary>
    public required double TargetPrecision { get; init; }

    /// <summary>Rounds measured.</summary>
    public required int Rounds { get; init; }

    /// <summary>Drafted tokens over those rounds.</summary>
    public required int DraftTokens { get; init; }

    /// <summary>Per exit: the verdicts at each confidence level and the chosen threshold.</summary>
    public required IReadOnlyList<ExitCalibration> Exits { get; init; }

    /// <summary>Writes the report as JSON to <paramref name="path"/>.</summary>
    public void Save(string path) => File.WriteAllText(path, JsonSerializer.Serialize(this, JsonOptions));

    /// <summary>The chosen threshold of each exit, in exit order.</summary>
    /// <exception cref="FormatException">The file is missing or not a calibration report.</exception>
    public static IReadOnlyList<float> LoadThresholds(string path)
    {
        try
        {
            var report = JsonSerializer.Deserialize<CalibrationReport>(File.ReadAllText(path), JsonOptions)
                ?? throw new FormatException($"{path}: empty calibration file");
            return [.. report.Exits.Select(e => (float)e.Threshold)];
        }
        catch (JsonException ex)
        {
            throw new FormatException($"{path}: not a calibration report ({ex.Message})", ex);
        }
        catch (Exception ex) when (ex is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new FormatException($"{Path.GetFullPath(path)}: calibration file not found", ex);
        }
    }
}
