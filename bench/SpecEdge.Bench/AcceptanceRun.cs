using SpecEdge.EdgeClient.Client;
using SpecEdge.Shared.Decoding;

namespace SpecEdge.Bench;

/// <summary>
/// Greedy pre-emptive generations at γ = 4 over a set of prompts, summed: how often a draft stands against the target
/// (the figure the quality and quantize benchmarks report).
/// </summary>
internal sealed record AcceptanceRun(IReadOnlyList<GenerationReport> Reports)
{
    public int Drafted => Reports.Sum(r => r.DraftTokens);

    public int Accepted => Reports.Sum(r => r.AcceptedTokens);

    public int Rounds => Reports.Sum(r => r.Rounds);

    public double AcceptanceRate => Accepted / (double)Drafted;

    public double TokensPerRound => Reports.Sum(r => r.NewTokens) / (double)Rounds;

    public static async Task<AcceptanceRun> RunAsync(SpecEdgeClient client, IEnumerable<string> prompts, int tokens, CancellationToken cancellationToken)
    {
        var reports = new List<GenerationReport>();
        foreach (var prompt in prompts)
        {
            reports.Add(await client.Generate(new GenerationRequest
            {
                PromptText = prompt,
                Mode = GenerationMode.Preemptive,
                DraftTokens = 4,
                MaxNewTokens = tokens,
                Sampling = SamplingConfig.Greedy,
                StopAtEos = false,
            }).RunToEndAsync(cancellationToken));
        }

        return new AcceptanceRun(reports);
    }
}
