// Embeds the verifier in a plain ASP.NET Core host (AddSpecEdgeVerifier, MapSpecEdgeVerifier) and asks it a question
// through SpecEdgeChatClient, the IChatClient, using nothing but the packed SpecEdge.Client and SpecEdge.Verifier.
// Usage: consumer TARGET_DIR DRAFT_DIR PORT
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.AI;
using SpecEdge.CloudVerifier.Hosting;
using SpecEdge.EdgeClient.Client;

var port = int.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture);
var builder = WebApplication.CreateBuilder();
builder.Logging.ClearProviders();
builder.Services.AddSpecEdgeVerifier(builder.Configuration.GetSection("Verifier"), o => o.Model = args[0]);
builder.WebHost.ConfigureKestrel(k => k.ListenLocalhost(port, l => l.Protocols = HttpProtocols.Http2));
var app = builder.Build();
app.MapSpecEdgeVerifier();
await app.StartAsync();

// The model loads in the background once the host starts; until it is warm the verifier answers UNAVAILABLE.
SpecEdgeClient? connected = null;
for (var attempt = 0; connected is null; attempt++)
{
    try
    {
        connected = await SpecEdgeClient.ConnectAsync(new EdgeClientOptions { Server = new Uri($"http://localhost:{port}"), DraftModel = args[1] });
    }
    catch (VerifierUnavailableException) when (attempt < 120)
    {
        await Task.Delay(500);
    }
}

await using var client = connected;
using IChatClient chat = new SpecEdgeChatClient(client);
var reply = await chat.GetResponseAsync("Once upon a time", new ChatOptions { MaxOutputTokens = 24, Temperature = 0 });
Console.WriteLine($"reply: {reply.Text}");
Console.WriteLine($"usage: {reply.Usage?.InputTokenCount} prompt tokens, {reply.Usage?.OutputTokenCount} output tokens");
await app.StopAsync();
