using Grpc.Core;
using Grpc.Core.Interceptors;

namespace SpecEdge.CloudVerifier.Security;

/// <summary>Authenticates every call to the Verifier service (health and reflection stay open) and hands the key to the service.</summary>
public sealed class AuthInterceptor(ApiKeyAuthenticator authenticator) : Interceptor
{
    /// <inheritdoc/>
    public override Task<TResponse> UnaryServerHandler<TRequest, TResponse>(TRequest request, ServerCallContext context, UnaryServerMethod<TRequest, TResponse> continuation)
    {
        Authenticate(context);
        return continuation(request, context);
    }

    /// <inheritdoc/>
    public override Task ServerStreamingServerHandler<TRequest, TResponse>(TRequest request, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation)
    {
        Authenticate(context);
        return continuation(request, responseStream, context);
    }

    /// <inheritdoc/>
    public override Task DuplexStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, DuplexStreamingServerMethod<TRequest, TResponse> continuation)
    {
        Authenticate(context);
        return continuation(requestStream, responseStream, context);
    }

    private void Authenticate(ServerCallContext context)
    {
        if (!context.Method.StartsWith("/specedge.", StringComparison.Ordinal))
        {
            return;
        }

        if (authenticator.Authenticate(context) is { } identity)
        {
            context.UserState[ApiKeyAuthenticator.UserStateKey] = identity;
        }
    }
}
