namespace SpecEdge.Shared.Timing;

/// <summary>The built-in compute profiles, and loading one by name or from a file.</summary>
public static class ComputeProfiles
{
    /// <summary>
    /// The marginal cost of one more token in a batched verification step of a 7B model on an A100: about 2 × 7e9
    /// floating-point operations at about 300 TFLOP/s of fp16 tensor throughput, so 0.05 ms. An estimate from the
    /// hardware's published peak, not a measurement; it matters only once a batch holds hundreds of tokens.
    /// </summary>
    public const double A100BatchedTokenMs = 0.05;

    /// <summary>
    /// The robot regime of Venkatesha, Kundu and Panda (TMLR 2025, arXiv 2505.21594): a Jetson Orin drafts γ = 4 tokens in
    /// 288 ms and an A100 verifies in 620 ms (their 120 ms communication time is a link, not compute: use --link).
    /// </summary>
    public static ComputeProfile PaperRobot { get; } = new()
    {
        Name = "paper-robot",
        Description = "emulated from published figures: Jetson Orin drafts γ=4 in 288 ms, A100 verifies in 620 ms (Venkatesha et al., TMLR 2025, robot regime)",
        DraftMsPerToken = 72,
        VerifyMsPerStep = 620,
        VerifyMsPerBatchedToken = A100BatchedTokenMs,
    };

    /// <summary>
    /// The regime of the paper's main experiments (Vicuna-68M drafting on an NVIDIA Jetson Nano, Llama2-7B verifying on an
    /// A100). The per-token times are estimates consistent with that setup and its reported 35 % gain, not figures
    /// printed in the paper: 7 ms per draft token, 60 ms per verification step, the first exit stage a quarter of it.
    /// </summary>
    public static ComputeProfile PaperNanoA100 { get; } = new()
    {
        Name = "paper-nano-a100",
        Description = "estimated for the paper's setup (Vicuna-68M on a Jetson Nano, Llama2-7B on an A100; Venkatesha et al., TMLR 2025): draft 7 ms/token, verify 60 ms/step, first exit stage 1/4; estimates, not the paper's own figures",
        DraftMsPerToken = 7,
        VerifyMsPerStep = 60,
        VerifyMsPerBatchedToken = A100BatchedTokenMs,
        StageFractions = [0.25, 0.75],
    };

    /// <summary>
    /// A synthetic ratio profile: a verification step costs 10 draft tokens (5 ms per draft token, 50 ms per step) and
    /// the first exit stage a quarter of the step. Used by the early-exit benchmark.
    /// </summary>
    public static ComputeProfile TenToOne { get; } = new()
    {
        Name = "ratio-10x",
        Description = "synthetic: draft 5 ms/token, verification 50 ms/step (10x), first exit stage 1/4 of the step",
        DraftMsPerToken = 5,
        VerifyMsPerStep = 50,
        VerifyMsPerBatchedToken = A100BatchedTokenMs,
        StageFractions = [0.25, 0.75],
    };

    /// <summary>Every built-in profile, <c>real</c> first.</summary>
    public static IReadOnlyList<ComputeProfile> BuiltIn { get; } = [ComputeProfile.Real, PaperNanoA100, PaperRobot, TenToOne];

    /// <summary>A built-in profile by name, or a profile file by path.</summary>
    /// <exception cref="FormatException">Neither a built-in name nor a readable, valid profile file.</exception>
    public static ComputeProfile Resolve(string nameOrPath)
    {
        foreach (var profile in BuiltIn)
        {
            if (string.Equals(profile.Name, nameOrPath, StringComparison.OrdinalIgnoreCase))
            {
                return profile;
            }
        }

        if (File.Exists(nameOrPath))
        {
            return ComputeProfile.Load(nameOrPath);
        }

        throw new FormatException($"unknown compute profile '{nameOrPath}': use one of {string.Join(", ", BuiltIn.Select(p => p.Name))} or the path of a profile file");
    }
}
