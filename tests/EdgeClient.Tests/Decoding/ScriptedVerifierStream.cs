using System.Threading.Channels;
using Grpc.Core;
using SpecEdge.EdgeClient.Decoding;
using SpecEdge.EdgeClient.Transport;
using SpecEdge.Protocol.V1;

namespace SpecEdge.EdgeClient.Tests.Decoding;

/// <summary>
/// A verifier played by a script, behind the round loop's <see cref="IDecodeStream"/>: it knows the target's output
/// (<see cref="Truth"/>, prompt included) and answers each round as a verifier would — accepted drafts are those that
/// match the truth, the next token is the truth's — with early verdicts right or wrong as the test says.
/// </summary>
/// <remarks>
/// With <see cref="HoldFinals"/>, a round's final verdict waits until the loop has nothing else to do (it blocks to read)
/// or sends the next round ahead (a conditional round), as a slow verifier's would; a conditional round is verified right
/// after the final verdict it assumes when its condition held, and dropped otherwise.
/// </remarks>
internal sealed class ScriptedVerifierStream : IDecodeStream
{
    private readonly Channel<VerifierMessage> _inbox = Channel.CreateUnbounded<VerifierMessage>();
    private readonly TaskCompletionSource _firstDraft = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _reading = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private FinalVerdict? _held;
    private FinalVerdict? _lastFinal;
    private bool _ended;
    private int _waits;

    public ScriptedVerifierStream(int[] truth, int end)
    {
        Truth = truth;
        End = end;
    }

    /// <summary>The target's greedy sequence, prompt included.</summary>
    public int[] Truth { get; }

    /// <summary>The committed length at which the generation ends.</summary>
    public int End { get; }

    /// <summary>Whether round r gets an early verdict, and whether it is right; null: no early verdicts.</summary>
    public Func<uint, bool>? EarlyIsRight { get; init; }

    public bool HoldFinals { get; init; }

    /// <summary>After each final verdict, also send a stale early verdict of the same round.</summary>
    public bool LateEarlyVerdicts { get; init; }

    /// <summary>Answer no round at all (a verifier that went silent).</summary>
    public bool Silent { get; init; }

    /// <summary>End the stream with this error right after round 1's early verdict.</summary>
    public Exception? BreakAfterFirstEarly { get; init; }

    /// <summary>End the stream cleanly right after round 1's early verdict.</summary>
    public bool EndAfterFirstEarly { get; init; }

    public List<EdgeMessage> Sent { get; } = [];

    /// <summary>How often the loop waited for a message without reading one (a spinning loop drives this up).</summary>
    public int Waits => Volatile.Read(ref _waits);

    /// <summary>Completes when the first round has been sent.</summary>
    public Task FirstDraftSent => _firstDraft.Task;

    /// <summary>Completes when the loop first waits to read after sending a round (its deadline is set by then).</summary>
    public Task ReadingAfterDraft => _reading.Task;

    public Task SendAsync(EdgeMessage message, CancellationToken cancellationToken)
    {
        lock (Sent)
        {
            Sent.Add(message);
            if (message.KindCase == EdgeMessage.KindOneofCase.Open)
            {
                Emit(new VerifierMessage { Opened = new Opened { SessionId = "scripted", CommittedLength = (uint)(message.Open.PromptIds.Count + message.Open.CommittedIds.Count), MaxDraftTokens = 8 } });
            }
            else if (message.KindCase == EdgeMessage.KindOneofCase.Draft)
            {
                if (_ended)
                {
                    // As a real call does once the server has ended it: the write fails with the call's error.
                    throw BreakAfterFirstEarly ?? new InvalidOperationException("scripted: the call is complete");
                }

                _firstDraft.TrySetResult();
                OnDraft(message.Draft);
            }
        }

        return Task.CompletedTask;
    }

    public async Task<VerifierMessage> ReadAsync(string what, CancellationToken deadline, CancellationToken cancellationToken)
    {
        lock (Sent)
        {
            if (!_inbox.Reader.TryPeek(out _))
            {
                ReleaseHeld();
            }
        }

        using var both = CancellationTokenSource.CreateLinkedTokenSource(deadline, cancellationToken);
        if (_firstDraft.Task.IsCompleted)
        {
            _reading.TrySetResult();
        }

        try
        {
            return await _inbox.Reader.ReadAsync(both.Token);
        }
        catch (OperationCanceledException) when (deadline.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
        {
            throw new RoundTimeoutException($"no answer for {what}");
        }
    }

    public bool TryRead(out VerifierMessage message) => _inbox.Reader.TryRead(out message!);

    public async Task WaitForMessageAsync(CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _waits);
        try
        {
            await _inbox.Reader.WaitToReadAsync(cancellationToken);
        }
        catch (Exception ex) when (ex is OperationCanceledException or ChannelClosedException or RpcException)
        {
        }
    }

    public Task CloseAsync(CancellationToken cancellationToken)
    {
        _inbox.Writer.TryComplete();
        return Task.CompletedTask;
    }

    public ValueTask DisposeAsync()
    {
        _inbox.Writer.TryComplete();
        return ValueTask.CompletedTask;
    }

    private void OnDraft(Draft draft)
    {
        if (Silent)
        {
            return;
        }

        if (draft.Condition is { } condition)
        {
            // Sent ahead: the final verdict it assumes goes out first, then the round is verified or dropped.
            ReleaseHeld();
            var last = _lastFinal!;
            if (last.Finished || last.Accepted != condition.Accepted || last.NextId != condition.NextId)
            {
                Emit(new VerifierMessage { Dropped = new RoundDropped { Round = draft.Round, Reason = "scripted: the condition did not hold" } });
                return;
            }
        }

        Verify(draft);
    }

    private void Verify(Draft draft)
    {
        var b = (int)draft.BaseLength;
        var accepted = 0;
        while (accepted < draft.Ids.Count && draft.Ids[accepted] == Truth[b + accepted])
        {
            accepted++;
        }

        var next = Truth[b + accepted];
        var final = new FinalVerdict { Round = draft.Round, Accepted = (uint)accepted, NextId = next, CommittedLength = (uint)(b + accepted + 1) };
        if (b + accepted + 1 >= End)
        {
            final.Finished = true;
            final.FinishReason = FinishReason.Length;
        }

        if (EarlyIsRight is { } isRight)
        {
            var right = isRight(draft.Round);
            Emit(new VerifierMessage { Early = new EarlyVerdict { Round = draft.Round, ExitLayer = 1, Accepted = (uint)accepted, NextId = right ? next : (next + 1) % 250, Confidence = 0.9f } });
            if (draft.Round == 1 && (BreakAfterFirstEarly is not null || EndAfterFirstEarly))
            {
                _inbox.Writer.TryComplete(BreakAfterFirstEarly);
                _ended = true;
                return;
            }
        }

        _lastFinal = final;
        if (HoldFinals)
        {
            _held = final;
        }
        else
        {
            EmitFinal(final);
        }
    }

    private void ReleaseHeld()
    {
        if (_held is { } held)
        {
            _held = null;
            EmitFinal(held);
        }
    }

    private void EmitFinal(FinalVerdict final)
    {
        Emit(new VerifierMessage { Final = final });
        if (LateEarlyVerdicts)
        {
            Emit(new VerifierMessage { Early = new EarlyVerdict { Round = final.Round, ExitLayer = 1, Accepted = 0, NextId = 3, Confidence = 0.5f } });
        }
    }

    private void Emit(VerifierMessage message) => _inbox.Writer.TryWrite(message);
}
