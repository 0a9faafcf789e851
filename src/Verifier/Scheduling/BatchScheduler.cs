using Grpc.Core;
using Microsoft.Extensions.Options;
using SpecEdge.CloudVerifier.Configuration;
using SpecEdge.CloudVerifier.Hosting;
using SpecEdge.CloudVerifier.Logging;
using SpecEdge.CloudVerifier.Telemetry;
using SpecEdge.Shared.Runtime;
using SpecEdge.Shared.Timing;
using SpecEdge.Shared.Tokenization;

namespace SpecEdge.CloudVerifier.Scheduling;

/// <summary>
/// Told each stage's logits of its own rows as soon as the stage ends (on the scheduler's thread: it must be quick and
/// must not block; the logits are valid only during the call).
/// </summary>
internal interface IStageObserver
{
    void OnStage(int stage, LogitsView logits);
}

/// <summary>What one step request cost: waiting, each stage of its last step, and the emulated part.</summary>
internal sealed record StepOutcome(TimeSpan Queued, IReadOnlyList<TimeSpan> Stages, TimeSpan Emulated);

/// <summary>
/// The one stage runner of the verifier (continuous batching): Decode rounds, prefills and cloud Generate steps of every
/// session queue here, and one thread runs them, as many as are ready, as one batched step per stage
/// (<see cref="BatchRunner"/>). After each stage every row's observer sees its logits at once, so every member of a batch
/// gets its own early verdict.
/// </summary>
/// <remarks>
/// <para>
/// <b>Forming a step.</b> Requests are taken in arrival order until <see cref="BatchingOptions.MaxRows"/> or the token
/// budget (rows × the longest row, padding included) is reached; the first request that does not fit ends the step, so
/// order is kept and no session is starved. A prompt longer than <see cref="BatchingOptions.PrefillChunkTokens"/> runs
/// a chunk per step and goes back to the end of the queue, so it never holds up other sessions' rounds.
/// </para>
/// <para>
/// <b>Compute floors.</b> Under an emulated profile a batched step pays the profile's per-step floor once, plus its
/// per-batched-token cost for the rows after the first (<see cref="ComputeProfile.BatchStageFloor"/>).
/// </para>
/// <para>
/// Disposal stops taking steps, lets the one in flight finish (the model is never freed under a run: the scheduler takes
/// the <see cref="TargetModel"/> in its constructor, so the container disposes it first) and fails what is still queued.
/// </para>
/// </remarks>
public sealed class BatchScheduler : IDisposable
{
    private static readonly TimeSpan DrainTimeout = TimeSpan.FromSeconds(30);

    private readonly TargetModel _target;
    private readonly BatchRunner _runner;
    private readonly BatchingOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger<BatchScheduler> _logger;
    private readonly Lock _queueLock = new();
    private readonly Lock _modelLock = new();
    private readonly LinkedList<StepRequest> _queue = new();
    private readonly SemaphoreSlim _signal = new(0);
    private readonly Thread _thread;
    private readonly List<(StepRequest Request, int Tokens)> _taken = [];
    private readonly List<BatchRow> _rows = [];
    private readonly HashSet<SequenceSlot> _returning = [];
    private volatile bool _stopping;
    private long _steps;
    private long _sharedSteps;
    private long _rowsRun;
    private long _tokensRun;
    private long _paddedTokens;
    private long _busyTicks;
    private long _floorTicks;

    /// <summary>Starts the scheduler's thread over the target model, with the <c>Verifier:Batching</c> settings.</summary>
    public BatchScheduler(TargetModel target, IOptions<VerifierOptions> options, TimeProvider time, VerifierMetrics metrics, ILogger<BatchScheduler> logger)
    {
        _target = target;
        _options = options.Value.Batching;
        _time = time;
        _logger = logger;
        var maxRows = _options.Enabled ? _options.MaxRows : 1;
        _runner = new BatchRunner(target.Model, target.Limits.MaxSessions, target.MaxSequenceLength, maxRows, Math.Max(_options.TokenBudget, target.Model.Options.MaxStepTokens));
        _thread = new Thread(Loop) { IsBackground = true, Name = "specedge-batch-scheduler" };
        _thread.Start();
        metrics.ObserveScheduler(QueueDepth, () => Counters);
    }

    /// <summary>Requests waiting for a step: rounds, prefill chunks and Generate steps.</summary>
    public int QueueDepth()
    {
        lock (_queueLock)
        {
            return _queue.Count;
        }
    }

    /// <summary>Bytes of KV cache one session's slot holds (what admission counts against the budget).</summary>
    public long BytesPerSession => _runner.BytesPerSlot;

    /// <summary>The most tokens one row of a step scores.</summary>
    public int MaxStepTokens => _runner.MaxStepTokens;

    /// <summary>Sessions holding a KV slot right now.</summary>
    public int OpenSlots
    {
        get
        {
            lock (_modelLock)
            {
                return _runner.Occupied;
            }
        }
    }

    /// <summary>Counters since start: steps, rows, real tokens, tokens with padding, and time spent running steps.</summary>
    public BatchCounters Counters => new(Interlocked.Read(ref _steps), Interlocked.Read(ref _sharedSteps), Interlocked.Read(ref _rowsRun), Interlocked.Read(ref _tokensRun), Interlocked.Read(ref _paddedTokens), TimeSpan.FromTicks(Interlocked.Read(ref _busyTicks)), TimeSpan.FromTicks(Interlocked.Read(ref _floorTicks)), _runner.SlotMoves);

    /// <summary>A KV slot for a new session (waits for the step in flight, if any).</summary>
    internal SequenceSlot OpenSlot()
    {
        lock (_modelLock)
        {
            ObjectDisposedException.ThrowIf(_stopping, this);
            return _runner.Allocate();
        }
    }

    /// <summary>Gives a session's slot back (waits for the step in flight, which may still be writing it).</summary>
    internal void CloseSlot(SequenceSlot slot)
    {
        lock (_modelLock)
        {
            _runner.Release(slot);
        }

        lock (_queueLock)
        {
            _returning.Remove(slot);
        }
    }

    /// <summary>
    /// Says a session will send no more requests (its generation ended), so a batching window stops waiting for it.
    /// </summary>
    internal void Finished(SequenceSlot slot)
    {
        lock (_queueLock)
        {
            _returning.Remove(slot);
        }

        _signal.Release();
    }

    /// <summary>
    /// Scores <paramref name="tokens"/> after <paramref name="slot"/>'s sequence in the next steps that have room; the
    /// observer sees every stage of the step that scores the last of them. A long prefill runs in chunks.
    /// </summary>
    /// <param name="slot">The sequence.</param>
    /// <param name="tokens">The tokens to score after it.</param>
    /// <param name="observer">Told every stage's logits of the step that scores the last of the tokens.</param>
    /// <param name="cancellationToken">Drops the request while it waits.</param>
    /// <param name="parents">Empty for a chain; for a token tree, each token's parent (<see cref="BatchRow.Parents"/>), run in one step.</param>
    /// <exception cref="RpcException">Unavailable when the verifier shuts down before the request ran.</exception>
    internal Task<StepOutcome> RunAsync(SequenceSlot slot, ReadOnlyMemory<TokenId> tokens, IStageObserver? observer, CancellationToken cancellationToken, ReadOnlyMemory<int> parents = default)
    {
        if (tokens.IsEmpty)
        {
            throw new ArgumentException("a step request needs at least one token", nameof(tokens));
        }

        if (!parents.IsEmpty && (parents.Length != tokens.Length || tokens.Length > _runner.MaxStepTokens || _runner.OneSequencePerStep))
        {
            throw new ArgumentException($"a token tree runs in one batched step: {parents.Length} parents for {tokens.Length} tokens, at most {_runner.MaxStepTokens} tokens{(_runner.OneSequencePerStep ? ", and batching is off" : string.Empty)}", nameof(parents));
        }

        if (slot.Length + tokens.Length > slot.MaxLength)
        {
            throw new SequenceTooLongException(slot.Length, tokens.Length, slot.MaxLength);
        }

        // Checked here, not in the step: a bad row must fail alone, not the batch it would have joined.
        var vocab = _target.Model.VocabSize;
        foreach (var token in tokens.Span)
        {
            if ((uint)token.Value >= (uint)vocab)
            {
                throw new ArgumentOutOfRangeException(nameof(tokens), token.Value, $"token id {token.Value} is outside the vocabulary of {vocab}");
            }
        }

        var request = new StepRequest(slot, tokens, observer, _time.GetTimestamp()) { Parents = parents };
        lock (_queueLock)
        {
            if (_stopping)
            {
                throw ShuttingDown();
            }

            request.Node = _queue.AddLast(request);
        }

        if (cancellationToken.CanBeCanceled)
        {
            request.Cancellation = cancellationToken.Register(() => Cancel(request));
        }

        _signal.Release();
        return request.Completion.Task;
    }

    /// <summary>Stops taking steps, lets the step in flight finish, fails what is still queued with Unavailable.</summary>
    public void Dispose()
    {
        lock (_queueLock)
        {
            if (_stopping)
            {
                return;
            }

            _stopping = true;
        }

        _signal.Release();
        if (!_thread.Join(DrainTimeout))
        {
            VerifierLog.RunsInFlight(_logger, (int)DrainTimeout.TotalSeconds);
            return;
        }

        lock (_queueLock)
        {
            foreach (var request in _queue)
            {
                request.Completion.TrySetException(ShuttingDown());
            }

            _queue.Clear();
        }

        // Under the model lock: a session opening or closing a slot right now (OpenSlot grows the arena, disposing and
        // creating native tensors) must not meet the runner's disposal half-way; after this, OpenSlot sees the scheduler
        // stopped. The signal is left undisposed: a late RunAsync or Finished may still release it harmlessly.
        lock (_modelLock)
        {
            _runner.Dispose();
        }
    }

    private static RpcException ShuttingDown() =>
        new(new Status(StatusCode.Unavailable, "the verifier is shutting down: resume the generation on another verifier"));

    // A request still queued leaves at once; one in a running step finishes with it (its result is not waited for).
    private void Cancel(StepRequest request)
    {
        lock (_queueLock)
        {
            if (request.Node is { List: not null } node)
            {
                _queue.Remove(node);
                request.Node = null;
            }
        }

        request.Completion.TrySetCanceled();
    }

    private void Loop()
    {
        while (true)
        {
            _signal.Wait();
            if (_stopping)
            {
                return;
            }

            AwaitReturning();
            while (!_stopping && Take())
            {
                RunStep();
                AwaitReturning();
            }
        }
    }

    /// <summary>
    /// With a batching window: waits, at most the window, for the sessions the last step served to queue their next
    /// request. Their verdicts went out as the step ended and their next rounds follow within a round trip; a step
    /// started without them would leave each of them a whole step behind. Waits for nobody else, and not at all when
    /// they are all back.
    /// </summary>
    private void AwaitReturning()
    {
        if (!_options.Enabled || _options.WindowMicroseconds <= 0)
        {
            return;
        }

        var deadline = _time.GetTimestamp() + (long)(_options.WindowMicroseconds * (_time.TimestampFrequency / 1e6));
        while (!_stopping)
        {
            lock (_queueLock)
            {
                if (_queue.Count >= _runner.MaxRows || AllReturned())
                {
                    return;
                }
            }

            var left = deadline - _time.GetTimestamp();
            if (left <= 0)
            {
                return;
            }

            // A request arriving releases the signal; the count it leaves behind only costs the loop one empty look.
            _signal.Wait(TimeSpan.FromSeconds(left / (double)_time.TimestampFrequency));
        }
    }

    // Under the queue lock: whether every session the last step served (and still open) has a request queued.
    private bool AllReturned()
    {
        foreach (var slot in _returning)
        {
            var queued = false;
            foreach (var request in _queue)
            {
                if (ReferenceEquals(request.Slot, slot))
                {
                    queued = true;
                    break;
                }
            }

            if (!queued)
            {
                return false;
            }
        }

        return true;
    }

    // Takes the next step's rows from the head of the queue (under the queue lock).
    private bool Take()
    {
        _taken.Clear();
        lock (_queueLock)
        {
            var chunk = Math.Min(_options.PrefillChunkTokens, _runner.MaxStepTokens);
            var t = 0;
            var node = _queue.First;
            while (node is not null && _taken.Count < _runner.MaxRows)
            {
                var request = node.Value;
                var tokens = Math.Min(request.Remaining.Length, request.Remaining.Length > _runner.MaxStepTokens ? chunk : _runner.MaxStepTokens);
                var rowTokens = Math.Max(t, tokens);
                if (_taken.Count > 0 && (_taken.Count + 1) * rowTokens > _runner.MaxBatchTokens)
                {
                    break;
                }

                _taken.Add((request, tokens));
                t = rowTokens;
                var next = node.Next;
                _queue.Remove(node);
                request.Node = null;
                node = next;
            }
        }

        return _taken.Count > 0;
    }

    private void RunStep()
    {
        var started = _time.GetTimestamp();
        _rows.Clear();
        foreach (var (request, tokens) in _taken)
        {
            if (request.Started == 0)
            {
                request.Started = started;
            }

            _rows.Add(new BatchRow(request.Slot, request.Remaining[..tokens], request.Parents));
        }

        var step = RunStages();
        Account(step, _time.GetElapsedTime(started));
        Complete(step);
    }

    /// <summary>What one batched step did: each stage's time, the emulated part, its shape, or why it failed.</summary>
    private sealed record StepResult(TimeSpan[] Stages, TimeSpan Emulated, int Rows, int StepTokens, Exception? Failure);

    // Runs the step stage by stage, telling each row's observer its logits as the stage ends.
    private StepResult RunStages()
    {
        var stageCount = _target.Model.Stages.Count;
        var stageTimes = new TimeSpan[stageCount];
        var emulated = TimeSpan.Zero;
        lock (_modelLock)
        {
            try
            {
                _runner.BeginStep(_rows);
                var (rows, stepTokens) = (_runner.Rows, _runner.StepTokens);
                for (var stage = 0; stage < stageCount; stage++)
                {
                    var stageStart = _time.GetTimestamp();
                    var logits = _runner.RunNextStage();
                    emulated += ComputeFloor.Wait(_time, stageStart, _target.Profile.BatchStageFloor(stage, stageCount, rows, stepTokens), CancellationToken.None);
                    stageTimes[stage] = _time.GetElapsedTime(stageStart);
                    for (var r = 0; r < _taken.Count; r++)
                    {
                        var (request, tokens) = _taken[r];
                        if (tokens == request.Remaining.Length && request.Observer is { } observer && !request.Completion.Task.IsCompleted)
                        {
                            Observe(observer, stage, logits.Row(r, tokens), request);
                        }
                    }
                }

                return new StepResult(stageTimes, emulated, rows, stepTokens, null);
            }
            catch (Exception ex) when (ex is Microsoft.ML.OnnxRuntime.OnnxRuntimeException or ArgumentException or InvalidOperationException)
            {
                _runner.Abandon();
                VerifierLog.StepFailed(_logger, ex.Message);
                return new StepResult(stageTimes, emulated, _rows.Count, 0, ex);
            }
        }
    }

    private void Account(StepResult step, TimeSpan busy)
    {
        Interlocked.Increment(ref _steps);
        if (step.Rows > 1)
        {
            Interlocked.Increment(ref _sharedSteps);
        }

        Interlocked.Add(ref _rowsRun, step.Rows);
        Interlocked.Add(ref _paddedTokens, (long)step.Rows * step.StepTokens);
        Interlocked.Add(ref _busyTicks, busy.Ticks);
        Interlocked.Add(ref _floorTicks, step.Emulated.Ticks);
    }

    // Completes the requests the step finished (remembering their sessions for the batching window) and queues the
    // rest of a chunked prefill again, at the end.
    private void Complete(StepResult step)
    {
        lock (_queueLock)
        {
            _returning.Clear();
        }

        foreach (var (request, tokens) in _taken)
        {
            if (step.Failure is { } failure)
            {
                request.Completion.TrySetException(new RpcException(new Status(StatusCode.Internal, $"the model step failed: {failure.Message}")));
                continue;
            }

            Interlocked.Add(ref _tokensRun, tokens);
            request.Remaining = request.Remaining[tokens..];
            lock (_queueLock)
            {
                if (!request.Remaining.IsEmpty)
                {
                    if (!request.Completion.Task.IsCompleted)
                    {
                        request.Node = _queue.AddLast(request);
                    }

                    continue;
                }

                _returning.Add(request.Slot);
            }

            request.Cancellation.Dispose();
            request.Completion.TrySetResult(new StepOutcome(_time.GetElapsedTime(request.Queued, request.Started), step.Stages, step.Emulated));
        }
    }

    private void Observe(IStageObserver observer, int stage, LogitsView logits, StepRequest request)
    {
        try
        {
            observer.OnStage(stage, logits);
        }
        catch (Exception ex)
        {
            // One session's bad verdict must not take down the batch: that session's request fails alone.
            request.Completion.TrySetException(ex);
        }
    }

    private sealed class StepRequest(SequenceSlot slot, ReadOnlyMemory<TokenId> tokens, IStageObserver? observer, long queued)
    {
        public SequenceSlot Slot { get; } = slot;

        public ReadOnlyMemory<TokenId> Remaining { get; set; } = tokens;

        /// <summary>A token tree's parents (never chunked: a tree runs whole in one step).</summary>
        public ReadOnlyMemory<int> Parents { get; init; }

        public IStageObserver? Observer { get; } = observer;

        public long Queued { get; } = queued;

        public long Started { get; set; }

        public LinkedListNode<StepRequest>? Node { get; set; }

        public CancellationTokenRegistration Cancellation { get; set; }

        public TaskCompletionSource<StepOutcome> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }
}

/// <summary>What the scheduler has run since start.</summary>
/// <param name="Steps">Batched steps (one ONNX Runtime call per stage each).</param>
/// <param name="SharedSteps">Steps that served more than one session.</param>
/// <param name="Rows">Rows over all steps (mean rows per step = Rows / Steps).</param>
/// <param name="Tokens">Real tokens scored.</param>
/// <param name="PaddedTokens">Tokens run including padding (rows × the longest row).</param>
/// <param name="Busy">Time spent running steps (floors included).</param>
/// <param name="Floors">The part of <paramref name="Busy"/> that was emulated compute floors.</param>
/// <param name="SlotMoves">KV slot moves made to put a batch's rows side by side.</param>
public readonly record struct BatchCounters(long Steps, long SharedSteps, long Rows, long Tokens, long PaddedTokens, TimeSpan Busy, TimeSpan Floors, long SlotMoves);
