using SpecEdge.Shared.Timing;

namespace SpecEdge.EdgeClient.Client;

/// <summary>How an edge client connects and drafts.</summary>
public sealed record EdgeClientOptions
{
    /// <summary>The verifier's address (<c>http://host:port</c>, or <c>https://</c>); null for edge-only decoding.</summary>
    public Uri? Server { get; init; }

    /// <summary>More verifiers to fail over to, tried in order after <see cref="Server"/>.</summary>
    public IReadOnlyList<Uri> FallbackServers { get; init; } = [];

    /// <summary>The API key sent as <c>authorization: Bearer KEY</c>; null when the verifier needs none.</summary>
    public string? ApiKey { get; init; }

    /// <summary>A CA certificate (PEM) to trust for the verifier's TLS certificate, besides the system's.</summary>
    public string? TrustedCaPath { get; init; }

    /// <summary>A client certificate (PEM) for mutual TLS, with <see cref="ClientKeyPath"/>.</summary>
    public string? ClientCertificatePath { get; init; }

    /// <summary>The key (PEM) of <see cref="ClientCertificatePath"/>.</summary>
    public string? ClientKeyPath { get; init; }

    /// <summary>A round with no final verdict for this long counts as a broken stream (default 30 s).</summary>
    public TimeSpan RoundTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Retries of a broken generation (re-opening the session on the same or the next verifier) before giving up (default 8).</summary>
    public int MaxRetries { get; init; } = 8;

    /// <summary>First retry delay; later ones back off exponentially with jitter (default 200 ms).</summary>
    public TimeSpan RetryDelay { get; init; } = TimeSpan.FromMilliseconds(200);

    /// <summary>How long a verifier's circuit stays open after repeated failures (default 5 s).</summary>
    public TimeSpan BreakDuration { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// The degraded policy, off (null) by default: with no verified progress for this long, keep generating with the
    /// draft alone, every such token marked unverified, and return to verified decoding when a verifier answers again.
    /// </summary>
    public TimeSpan? DegradedAfter { get; init; }

    /// <summary>While degraded, how often to look for a verifier again (default 1 s).</summary>
    public TimeSpan ProbeInterval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>Every verifier address, primary first.</summary>
    public IReadOnlyList<Uri> Servers => Server is null ? [] : [Server, .. FallbackServers];

    /// <summary>The draft model: a converted SpecEdge folder or a Hugging Face checkpoint folder (converted on first use).</summary>
    public string? DraftModel { get; init; }

    /// <summary>ONNX Runtime intra-op threads for the draft model; 0 lets ONNX Runtime choose.</summary>
    public int IntraOpThreads { get; init; }

    /// <summary>Emulated drafting speed (a compute profile's draft floor); real compute by default.</summary>
    public ComputeProfile Profile { get; init; } = ComputeProfile.Real;

    /// <summary>
    /// A hook on each verifier connection, called once per verifier address with the HTTP handler its channel uses
    /// (before any call): it may route the connection, e.g. a <c>ConnectCallback</c> to a link emulator's relay
    /// (<c>EmulatedLink</c> in specedge-edge does). What it returns is disposed with the connection. Null connects
    /// directly.
    /// </summary>
    public Func<Uri, SocketsHttpHandler, IAsyncDisposable?>? ConnectionHook { get; init; }

    /// <summary>What <see cref="ConnectionHook"/> does to the link, for reports (e.g. <c>rtt=50ms,bw=10mbit</c>); "none" when null.</summary>
    public string? ConnectionLabel { get; init; }

    /// <summary>Where converted checkpoints are cached; the default cache when null.</summary>
    public string? CacheDirectory { get; init; }

    /// <summary>Deadline for connecting and describing the verifier.</summary>
    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// How the edge spreads generations over verifiers: <see cref="VerifierBalancing.Failover"/> (default) uses
    /// <see cref="Server"/> and fails over along <see cref="FallbackServers"/>; <see cref="VerifierBalancing.SessionHash"/>
    /// resolves <see cref="Server"/>'s host name to every address it has (DNS) and sends each generation to one of them
    /// by hashing its session key, without a balancer in front.
    /// </summary>
    public VerifierBalancing Balancing { get; init; } = VerifierBalancing.Failover;

    /// <summary>A test seam, not configuration: resolves the verifier's name instead of DNS when balancing by session hash.</summary>
    internal Grpc.Net.Client.Balancer.ResolverFactory? Resolver { get; init; }

    /// <summary>The clock for deadlines, backoff and drafting floors (tests inject a fake one).</summary>
    public TimeProvider Time { get; init; } = TimeProvider.System;

    /// <summary>What is wrong with these options, naming the option, or null when they are valid.</summary>
    public string? Validate()
    {
        foreach (var server in Servers)
        {
            if (!server.IsAbsoluteUri || server.Scheme is not ("http" or "https") || string.IsNullOrEmpty(server.Host))
            {
                return $"{(server == Server ? nameof(Server) : nameof(FallbackServers))}: '{server}' is not a verifier address: use http://host:port or https://host:port";
            }
        }

        return (ClientCertificatePath is null) != (ClientKeyPath is null) ? $"{nameof(ClientCertificatePath)} and {nameof(ClientKeyPath)} go together: give both or neither"
            : RoundTimeout <= TimeSpan.Zero ? $"{nameof(RoundTimeout)} must be positive (got {RoundTimeout})"
            : MaxRetries < 0 ? $"{nameof(MaxRetries)} must be 0 or more (got {MaxRetries})"
            : RetryDelay < TimeSpan.Zero ? $"{nameof(RetryDelay)} must not be negative (got {RetryDelay})"
            : BreakDuration <= TimeSpan.Zero ? $"{nameof(BreakDuration)} must be positive (got {BreakDuration})"
            : DegradedAfter is { } degraded && degraded <= TimeSpan.Zero ? $"{nameof(DegradedAfter)} must be positive when set (got {degraded})"
            : ProbeInterval <= TimeSpan.Zero ? $"{nameof(ProbeInterval)} must be positive (got {ProbeInterval})"
            : ConnectTimeout <= TimeSpan.Zero ? $"{nameof(ConnectTimeout)} must be positive (got {ConnectTimeout})"
            : IntraOpThreads < 0 ? $"{nameof(IntraOpThreads)} must be 0 (ONNX Runtime chooses) or more (got {IntraOpThreads})"
            : Profile.Validate() is { } profile ? $"{nameof(Profile)}: {profile}"
            : Server is null && FallbackServers.Count > 0 ? $"{nameof(FallbackServers)} needs a {nameof(Server)} first"
            : Balancing == VerifierBalancing.SessionHash && (Server is null || FallbackServers.Count > 0) ? $"{nameof(Balancing)} {nameof(VerifierBalancing.SessionHash)} takes one {nameof(Server)} whose host name resolves to the verifiers, not a list"
            : Balancing == VerifierBalancing.SessionHash && ConnectionHook is not null ? $"a {nameof(ConnectionHook)} (a link emulator) routes one verifier address and cannot sit under {nameof(Balancing)} {nameof(VerifierBalancing.SessionHash)}"
            : Server is null && DraftModel is null ? $"give a {nameof(Server)}, a {nameof(DraftModel)}, or both"
            : null;
    }
}

/// <summary>How an edge spreads its generations over verifiers.</summary>
public enum VerifierBalancing
{
    /// <summary>One verifier at a time: the first, then the next in the list after failures.</summary>
    Failover,

    /// <summary>Every address the server's host name resolves to; each generation to one, chosen by hashing its session key.</summary>
    SessionHash,
}

/// <summary>The verifier cannot be reached, or refused the connection: the message says which and where.</summary>
public sealed class VerifierUnavailableException : Exception
{
    /// <summary>A failure to reach or use any verifier, saying which and why.</summary>
    public VerifierUnavailableException(string message, Exception? inner = null)
        : base(message, inner)
    {
    }
}

/// <summary>The draft and the verifier's target cannot work together (vocabulary or tokenizer differ).</summary>
public sealed class ModelMismatchException : Exception
{
    /// <summary>Draft and target that cannot work together, saying how they differ.</summary>
    public ModelMismatchException(string message)
        : base(message)
    {
    }
}
