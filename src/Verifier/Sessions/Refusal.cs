using Grpc.Core;

namespace SpecEdge.CloudVerifier.Sessions;

/// <summary>The gRPC errors a verifier answers bad input with: the status code says what kind, the message what exactly.</summary>
internal static class Refusal
{
    public static RpcException InvalidArgument(string detail) => new(new Status(StatusCode.InvalidArgument, detail));

    public static RpcException FailedPrecondition(string detail) => new(new Status(StatusCode.FailedPrecondition, detail));

    public static RpcException ResourceExhausted(string detail) => new(new Status(StatusCode.ResourceExhausted, detail));
}
