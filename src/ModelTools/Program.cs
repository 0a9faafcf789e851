using SpecEdge.ModelTools;

return await ModelToolsCli.Build().Parse(args).InvokeAsync();
