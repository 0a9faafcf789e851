using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text;
using System.Threading.RateLimiting;
using Grpc.Core;
using Microsoft.Extensions.Options;
using SpecEdge.CloudVerifier.Configuration;
using SpecEdge.CloudVerifier.Logging;

namespace SpecEdge.CloudVerifier.Security;

/// <summary>The API key a call was made with.</summary>
public sealed record ApiKeyIdentity(string Name, int MaxSessions);

/// <summary>
/// Checks bearer API keys against the configured SHA-256 hashes (in constant time), and each key's call rate with a
/// token bucket per key (System.Threading.RateLimiting, the limiter ASP.NET Core's rate limiting is built on).
/// Failures are logged without any part of the key.
/// </summary>
public sealed class ApiKeyAuthenticator : IDisposable
{
    /// <summary>The key's <see cref="ServerCallContext.UserState"/> entry.</summary>
    public const string UserStateKey = "specedge.api-key";

    private readonly IReadOnlyList<(ApiKeyOptions Options, byte[] Hash)> _keys;
    private readonly ConcurrentDictionary<string, RateLimiter> _limiters = new(StringComparer.Ordinal);
    private readonly TimeProvider _time;
    private readonly ILogger<ApiKeyAuthenticator> _logger;

    /// <summary>Reads the configured keys (hashes only) and their limits.</summary>
    public ApiKeyAuthenticator(IOptions<VerifierOptions> options, TimeProvider time, ILogger<ApiKeyAuthenticator> logger)
    {
        _keys = [.. options.Value.ApiKeys.Select(k => (k, Convert.FromHexString(k.Sha256)))];
        _time = time;
        _logger = logger;
    }

    /// <summary>True when keys are configured (calls must then carry one).</summary>
    public bool Enabled => _keys.Count > 0;

    /// <summary>SHA-256 (hex, lower case) of a key: what the configuration stores.</summary>
    public static string Hash(string key) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(key.Trim())));

    /// <summary>Authenticates a call and takes one token from its key's rate limit.</summary>
    /// <exception cref="RpcException">Unauthenticated (missing, malformed, unknown or revoked key) or ResourceExhausted (rate).</exception>
    public ApiKeyIdentity? Authenticate(ServerCallContext context)
    {
        if (!Enabled)
        {
            return null;
        }

        var header = context.RequestHeaders.GetValue("authorization");
        if (header is null)
        {
            return Refuse(context, "missing", "this verifier requires an API key: send 'authorization: Bearer KEY'");
        }

        if (!header.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase) || header.Length <= 7)
        {
            return Refuse(context, "malformed", "the authorization header must be 'Bearer KEY'");
        }

        var hash = SHA256.HashData(Encoding.UTF8.GetBytes(header[7..].Trim()));
        ApiKeyOptions? match = null;
        foreach (var (key, expected) in _keys)
        {
            // Compare against every key so the time taken says nothing about which one almost matched.
            if (CryptographicOperations.FixedTimeEquals(hash, expected))
            {
                match = key;
            }
        }

        if (match is null)
        {
            return Refuse(context, "unknown", "the API key is not valid");
        }

        if (match.Revoked)
        {
            VerifierLog.AuthFailed(_logger, $"revoked key '{match.Name}'", context.Peer);
            throw new RpcException(new Status(StatusCode.Unauthenticated, "the API key has been revoked"));
        }

        var limiter = _limiters.GetOrAdd(match.Name, _ => new TokenBucketRateLimiter(new TokenBucketRateLimiterOptions
        {
            TokenLimit = match.RequestsPerMinute,
            TokensPerPeriod = match.RequestsPerMinute,
            ReplenishmentPeriod = TimeSpan.FromMinutes(1),
            QueueLimit = 0,
            AutoReplenishment = true,
        }));
        using var lease = limiter.AttemptAcquire();
        if (!lease.IsAcquired)
        {
            VerifierLog.RateLimited(_logger, match.Name, match.RequestsPerMinute);
            var trailers = new Metadata { { "grpc-retry-pushback-ms", "1000" } };
            throw new RpcException(new Status(StatusCode.ResourceExhausted, $"API key '{match.Name}' is over its limit of {match.RequestsPerMinute} calls per minute; retry later"), trailers);
        }

        return new ApiKeyIdentity(match.Name, match.MaxSessions);
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var limiter in _limiters.Values)
        {
            limiter.Dispose();
        }
    }

    private ApiKeyIdentity Refuse(ServerCallContext context, string reason, string message)
    {
        VerifierLog.AuthFailed(_logger, $"{reason} key", context.Peer);
        throw new RpcException(new Status(StatusCode.Unauthenticated, message));
    }
}
