using Microsoft.Extensions.Options;
using SpecEdge.CloudVerifier.Hosting;
using SpecEdge.Shared.Models;

if (args.Contains("--help") || args.Contains("-h"))
{
    Console.WriteLine("""
        specedge-cloud: the SpecEdge cloud verifier (gRPC over HTTP/2).

        Usage: specedge-cloud --model DIR [--urls URL] [--device cpu|cuda] [--exits L1,L2] [options]

          --model DIR            target model: a converted SpecEdge folder, or a Hugging Face checkpoint folder
                                 (converted on first use into ~/.cache/specedge/models, or $SPECEDGE_CACHE)
          --urls URL             where to listen (default http://127.0.0.1:50051; plaintext HTTP/2)
          --device cpu|cuda      where the target runs (CUDA falls back to the CPU, loudly, when it cannot load)
          --compute f32|f16      the type a checkpoint is converted to compute in on first use (f16 for a GPU)
          --exits L1,L2          exit layers to cut a checkpoint at (the staged early-exit form)
          --threads N            ONNX Runtime intra-op threads (default: one per core)
          --profile NAME|FILE    emulate a compute profile's verification time (ratio-10x, paper-robot, or a file)
          --calibration FILE     use the exit thresholds of a calibration report
          --max-sessions N       sessions at once (default 64)
          --max-draft-tokens N   drafts per round (default 16)
          --cache DIR            conversion cache folder
          --tls-cert F --tls-key F   serve TLS (PEM files) on https:// addresses
          --require-client-cert --client-ca F   mutual TLS: clients need a certificate from this CA (PEM)
          --allow-plaintext      allow plaintext HTTP/2 off loopback (logged as a warning)
          --config FILE          an extra JSON configuration file (e.g. API keys: Verifier:ApiKeys)
          --grace SECONDS        on SIGTERM, how long rounds in flight may finish (default 20)
          --drain-delay SECONDS  on SIGTERM, how long readiness says NOT_SERVING before sessions move (default 0)
          --metrics-url URL      serve Prometheus metrics at URL/metrics on its own HTTP/1.1 listener (e.g. http://+:9464/)
          --otlp URL             export metrics and traces over OTLP (also on with OTEL_EXPORTER_OTLP_ENDPOINT)
          --hash-key             read an API key on stdin and print the SHA-256 to configure

        Health (gRPC health service): "" and specedge.v1.Verifier are readiness (NOT_SERVING while the model loads and
        from the start of draining), "liveness" is liveness.

        Every setting is also configuration: appsettings.json, Verifier__* environment variables, --Verifier:Key=value.
        """);
    return 0;
}

if (args.Length >= 1 && args[0] == "--hash-key")
{
    // The key comes on stdin, never the command line (which other users of the machine can read).
    var key = Console.In.ReadLine();
    if (string.IsNullOrWhiteSpace(key))
    {
        Console.Error.WriteLine("specedge-cloud: error: --hash-key reads the API key from standard input; got nothing");
        return 2;
    }

    Console.WriteLine(SpecEdge.CloudVerifier.Security.ApiKeyAuthenticator.Hash(key));
    return 0;
}

if (VerifierHost.UnknownSwitch(args) is { } unknown)
{
    Console.Error.WriteLine($"specedge-cloud: error: unknown option {unknown} (see --help)");
    return 2;
}

try
{
    var app = VerifierHost.Create(args, defaultUrl: VerifierHost.DefaultUrl);
    await VerifierHost.RunAsync(app);
    return 0;
}
catch (Exception ex) when (ex is OptionsValidationException or ModelFormatException or FormatException or ArgumentException or IOException or InvalidOperationException or System.Security.Cryptography.CryptographicException)
{
    Console.Error.WriteLine($"specedge-cloud: error: {ex.Message}");
    return 1;
}
