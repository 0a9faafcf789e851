using System.CommandLine;
using SpecEdge.Demo;
using SpecEdge.Shared.Models.Conversion;

namespace SpecEdge.Bench;

/// <summary><c>pair-paths</c>: prints the converted target and draft folders of the default pair (converting on first use), for scripts.</summary>
internal static class PairPathsCommand
{
    public static Command Create()
    {
        var command = new Command("pair-paths", "Print the converted target and draft folders of the default model pair, one per line.");
        command.SetAction(parse =>
        {
            var pair = DefaultModels.Resolve();
            parse.InvocationConfiguration.Output.WriteLine(ModelResolver.Resolve(pair.Target, new ConversionOptions { Exits = pair.Exits }));
            parse.InvocationConfiguration.Output.WriteLine(ModelResolver.Resolve(pair.Draft));
            return 0;
        });
        return command;
    }
}
