using System.CommandLine;
using SpecEdge.Bench;

var root = new RootCommand("specedge-bench: SpecEdge benchmarks. Results are ratios measured side by side in one run.")
{
    DecodeBenchmark.Create(),
    OverheadBenchmark.Create(),
    ModesBenchmark.Create(),
    MatrixBenchmark.Create(),
    ProfileCommand.Create(),
    PairPathsCommand.Create(),
    ReliabilityCommands.Soak(),
    ReliabilityCommands.Load(),
    ReliabilityCommands.Fuzz(),
    ReliabilityCommands.Fleet(),
    ServeBenchmark.Create(),
    BatchDriftCommand.Create(),
    QualityCommand.Create(),
    QuantizeCommand.Create(),
    StartupCommand.Create(),
    HalfOpsCommand.Create(),
    CandidatesCommand.Create(),
    ExitLayersCommand.Create(),
    TreesCommand.Create(),
};
return await root.Parse(args).InvokeAsync();
