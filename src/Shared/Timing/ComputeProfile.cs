using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace SpecEdge.Shared.Timing;

/// <summary>
/// A compute profile: floors on how long drafting and verification take, so that this machine can stand in for other
/// hardware (a Jetson drafting, an A100 verifying) in latency studies. A floor only ever adds waiting: when the real
/// computation is slower than the floor, the real time stands. Output made under an emulated profile always says so.
/// </summary>
public sealed record ComputeProfile
{
    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    /// <summary>This machine's own compute: no floors.</summary>
    public static ComputeProfile Real { get; } = new() { Name = "real", Description = "this machine's own compute (no emulated floors)" };

    /// <summary>A short name (used on command lines and in reports).</summary>
    public required string Name { get; init; }

    /// <summary>Where the figures come from; shown beside every result that used the profile.</summary>
    public string? Description { get; init; }

    /// <summary>Floor on the edge's time to draft one token, in milliseconds.</summary>
    public double DraftMsPerToken { get; init; }

    /// <summary>Fixed part of the floor on one verification step, in milliseconds.</summary>
    public double VerifyMsPerStep { get; init; }

    /// <summary>Per-scored-token part of the floor on one verification step, in milliseconds.</summary>
    public double VerifyMsPerToken { get; init; }

    /// <summary>
    /// What each token of a batched step's rows after the first adds to the step's floor, in milliseconds
    /// (<c>verify_ms_per_batched_token</c>). A GPU verifying a few sequences at once is bound by reading the weights,
    /// so a step of B rows costs about what one row costs until the batch is large: this is the marginal cost that
    /// remains. 0 makes extra rows free.
    /// </summary>
    public double VerifyMsPerBatchedToken { get; init; }

    /// <summary>
    /// The share of a verification step each stage takes, in stage order (for a staged target; they are scaled to sum
    /// to 1). Empty: the step's time is spread evenly over the stages. When the target has a different number of
    /// stages, the first stage keeps its share (what "the first exit stage costs a quarter of the step" means) and the
    /// other stages split the rest evenly.
    /// </summary>
    public IReadOnlyList<double> StageFractions { get; init; } = [];

    /// <summary>True when the profile sets any floor.</summary>
    [JsonIgnore]
    public bool IsEmulated => DraftMsPerToken > 0 || VerifyMsPerStep > 0 || VerifyMsPerToken > 0;

    /// <summary>The floor on drafting <paramref name="tokens"/> tokens.</summary>
    public TimeSpan DraftFloor(int tokens) => TimeSpan.FromMilliseconds(DraftMsPerToken * tokens);

    /// <summary>The floor on a whole verification step of one row of <paramref name="tokens"/> scored tokens, in milliseconds.</summary>
    public double StepMs(int tokens) => VerifyMsPerStep + (VerifyMsPerToken * tokens);

    /// <summary>The floor on running stage <paramref name="stage"/> of <paramref name="stageCount"/> over <paramref name="tokens"/> scored tokens.</summary>
    public TimeSpan StageFloor(int stage, int stageCount, int tokens) => BatchStageFloor(stage, stageCount, 1, tokens);

    /// <summary>
    /// The floor on running stage <paramref name="stage"/> of a batched step of <paramref name="rows"/> rows of
    /// <paramref name="tokensPerRow"/> tokens (padding included): the per-step floor once, the per-token floor for one
    /// row, and <see cref="VerifyMsPerBatchedToken"/> for each token of the other rows.
    /// </summary>
    public TimeSpan BatchStageFloor(int stage, int stageCount, int rows, int tokensPerRow)
    {
        var step = StepMs(tokensPerRow) + (VerifyMsPerBatchedToken * Math.Max(rows - 1, 0) * tokensPerRow);
        if (step <= 0)
        {
            return TimeSpan.Zero;
        }

        double fraction;
        if (StageFractions.Count == stageCount)
        {
            fraction = StageFractions[stage] / StageFractions.Sum();
        }
        else if (StageFractions.Count > 0 && stageCount > 1)
        {
            var first = StageFractions[0] / StageFractions.Sum();
            fraction = stage == 0 ? first : (1 - first) / (stageCount - 1);
        }
        else
        {
            fraction = 1.0 / stageCount;
        }

        return TimeSpan.FromMilliseconds(step * fraction);
    }

    /// <summary>Why the profile is not valid, or null.</summary>
    public string? Validate()
    {
        if (string.IsNullOrWhiteSpace(Name))
        {
            return "a compute profile needs a name";
        }

        if (!(DraftMsPerToken >= 0) || !(VerifyMsPerStep >= 0) || !(VerifyMsPerToken >= 0) || !(VerifyMsPerBatchedToken >= 0))
        {
            return $"compute profile '{Name}': draft_ms_per_token, verify_ms_per_step, verify_ms_per_token and verify_ms_per_batched_token must be non-negative numbers";
        }

        if (StageFractions.Any(f => !(f > 0)))
        {
            return $"compute profile '{Name}': every stage fraction must be positive";
        }

        return null;
    }

    /// <summary>Reads a profile file (JSON with snake_case fields).</summary>
    /// <exception cref="FormatException">The file is not valid JSON, misses <c>name</c>, or holds invalid values.</exception>
    public static ComputeProfile Load(string path)
    {
        ComputeProfile? profile;
        try
        {
            profile = JsonSerializer.Deserialize<ComputeProfile>(File.ReadAllText(path), JsonOptions);
        }
        catch (JsonException ex)
        {
            throw new FormatException($"{path}: not a valid compute profile ({ex.Message})", ex);
        }
        catch (Exception ex) when (ex is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new FormatException($"{path}: compute profile file not found", ex);
        }

        if (profile is null)
        {
            throw new FormatException($"{path}: empty compute profile");
        }

        return profile.Validate() is { } problem ? throw new FormatException($"{path}: {problem}") : profile;
    }

    /// <summary>Writes the profile as JSON (snake_case fields) to <paramref name="path"/>.</summary>
    public void Save(string path) => File.WriteAllText(path, JsonSerializer.Serialize(this, JsonOptions));

    /// <summary>How output made under this profile describes its compute.</summary>
    [JsonIgnore]
    public string Label => IsEmulated
        ? string.Create(CultureInfo.InvariantCulture, $"emulated '{Name}'{(Description is null ? string.Empty : $" ({Description})")}")
        : "real compute";
}
