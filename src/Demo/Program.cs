using SpecEdge.Demo;

return await DemoCommand.Create().Parse(args).InvokeAsync();
