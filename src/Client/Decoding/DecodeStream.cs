using System.Threading.Channels;
using Grpc.Core;
using SpecEdge.EdgeClient.Transport;
using SpecEdge.Protocol.V1;

namespace SpecEdge.EdgeClient.Decoding;

/// <summary>
/// One Decode stream as the round loop sees it: send a message, wait for the next verifier message (within a deadline),
/// or for a message to be there at all, and close in order. The loop's logic never touches the call itself.
/// </summary>
internal interface IDecodeStream : IAsyncDisposable
{
    Task SendAsync(EdgeMessage message, CancellationToken cancellationToken);

    /// <summary>The next message; <see cref="RoundTimeoutException"/> naming <paramref name="what"/> when <paramref name="deadline"/> passes first.</summary>
    Task<VerifierMessage> ReadAsync(string what, CancellationToken deadline, CancellationToken cancellationToken);

    /// <summary>A message taken at once when one is waiting.</summary>
    bool TryRead(out VerifierMessage message);

    /// <summary>Completes when a message is waiting, the stream ended or failed, or <paramref name="cancellationToken"/> fires.</summary>
    Task WaitForMessageAsync(CancellationToken cancellationToken);

    /// <summary>Ends the edge's side and drains the verifier's, so the call closes in order rather than with a reset.</summary>
    Task CloseAsync(CancellationToken cancellationToken);
}

/// <summary>The gRPC Decode call behind <see cref="IDecodeStream"/>: one reader pump into a bounded inbox, writes in order.</summary>
internal sealed class GrpcDecodeStream : IDecodeStream
{
    private readonly CancellationTokenSource _stop;
    private readonly AsyncDuplexStreamingCall<EdgeMessage, VerifierMessage> _call;
    private readonly Channel<VerifierMessage> _inbox = Channel.CreateBounded<VerifierMessage>(new BoundedChannelOptions(64) { SingleReader = true, SingleWriter = true });
    private readonly Task _reader;

    public GrpcDecodeStream(Verifier.VerifierClient client, CancellationToken cancellationToken)
    {
        _stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        _call = client.Decode(cancellationToken: _stop.Token);
        _reader = PumpAsync(_call.ResponseStream, _inbox.Writer, _stop.Token);
    }

    public Task SendAsync(EdgeMessage message, CancellationToken cancellationToken) => _call.RequestStream.WriteAsync(message, cancellationToken);

    public async Task<VerifierMessage> ReadAsync(string what, CancellationToken deadline, CancellationToken cancellationToken)
    {
        using var both = CancellationTokenSource.CreateLinkedTokenSource(deadline, cancellationToken);
        try
        {
            return await _inbox.Reader.ReadAsync(both.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (deadline.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
        {
            throw new RoundTimeoutException($"no answer for {what}");
        }
    }

    public bool TryRead(out VerifierMessage message) => _inbox.Reader.TryRead(out message!);

    public async Task WaitForMessageAsync(CancellationToken cancellationToken)
    {
        try
        {
            await _inbox.Reader.WaitToReadAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is OperationCanceledException or ChannelClosedException or RpcException)
        {
            // Whatever ended the wait, the next read reports it.
        }
    }

    public async Task CloseAsync(CancellationToken cancellationToken)
    {
        await _call.RequestStream.CompleteAsync().ConfigureAwait(false);
        while (await _inbox.Reader.WaitToReadAsync(cancellationToken).ConfigureAwait(false))
        {
            _inbox.Reader.TryRead(out _);
        }

        await _reader.ConfigureAwait(false);
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        try
        {
            await _reader.ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is OperationCanceledException or RpcException)
        {
        }

        _call.Dispose();
        _stop.Dispose();
    }

    private static async Task PumpAsync(IAsyncStreamReader<VerifierMessage> responses, ChannelWriter<VerifierMessage> inbox, CancellationToken cancellationToken)
    {
        try
        {
            while (await responses.MoveNext(cancellationToken).ConfigureAwait(false))
            {
                if (responses.Current.KindCase == VerifierMessage.KindOneofCase.Draining)
                {
                    // The verifier is shutting down: this session ends here (the call is cancelled on the way out) and the
                    // retry pipeline re-opens it elsewhere with the committed tokens.
                    throw new VerifierDrainingException(responses.Current.Draining.CommittedLength);
                }

                await inbox.WriteAsync(responses.Current, cancellationToken).ConfigureAwait(false);
            }

            inbox.TryComplete();
        }
        catch (Exception ex)
        {
            inbox.TryComplete(ex);
            throw;
        }
    }
}
