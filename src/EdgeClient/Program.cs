using SpecEdge.EdgeClient.Cli;

return await EdgeCli.Build().Parse(args).InvokeAsync();
