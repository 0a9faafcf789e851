using Grpc.Core;
using Microsoft.Extensions.Time.Testing;
using SpecEdge.EdgeClient.Client;
using SpecEdge.EdgeClient.Decoding;
using SpecEdge.EdgeClient.Drafting;
using SpecEdge.EdgeClient.Transport;
using SpecEdge.Protocol.V1;
using SpecEdge.Shared.Runtime;
using SpecEdge.Shared.Timing;
using SpecEdge.Shared.Tokenization;
using SpecEdge.TestUtilities;

namespace SpecEdge.EdgeClient.Tests.Decoding;

/// <summary>A real draft model (synthetic, real ONNX Runtime) for the round-loop tests, and the truth the scripted verifier plays.</summary>
public sealed class RoundLoopFixture : IDisposable
{
    public const int NewTokens = 24;
    private readonly TempDirectory _temp = new("round-loop");

    public RoundLoopFixture()
    {
        var (_, dir) = TestModels.WriteAndConvert(_temp.Path, TestModels.PairTarget() with { Layers = 1 });
        Model = TestModels.Load(dir);

        // The target's output: the draft's own greedy continuation with every fourth token changed, so rounds are
        // accepted in part and the loop meets both acceptance and rejection.
        var draftGreedy = TargetOnlyDecoding.Greedy(Model, [.. Prompt], NewTokens + 10, stopAtEos: false).Select(t => t.Value).ToArray();
        Truth = [.. Prompt.Select(t => t.Value), .. draftGreedy.Select((t, i) => i % 4 == 3 ? (t + 1) % 250 : t)];
    }

    public static IReadOnlyList<TokenId> Prompt { get; } = [new(256), new(72), new(105)];

    public LanguageModel Model { get; }

    public int[] Truth { get; }

    public int End => Prompt.Count + NewTokens;

    public IEnumerable<int> Expected => Truth.Skip(Prompt.Count).Take(NewTokens);

    public void Dispose()
    {
        Model.Dispose();
        _temp.Dispose();
    }
}

/// <summary>
/// The edge's round loop against a scripted verifier stream: every mode's transitions (hit, miss, a conditional round
/// dropped, an early verdict after its final one, the deadline, a stream broken while a branch drafts, cancellation),
/// each ending in the target's exact output or the right error.
/// </summary>
public sealed class RoundLoopTests(RoundLoopFixture fixture) : IClassFixture<RoundLoopFixture>
{
    private static readonly TimeSpan RoundTimeout = TimeSpan.FromSeconds(5);

    [Theory]
    [InlineData(GenerationMode.Speculative)]
    [InlineData(GenerationMode.Preemptive)]
    [InlineData(GenerationMode.Conditional)]
    [InlineData(GenerationMode.Proactive)]
    public async Task EveryMode_RightAndWrongEarlyVerdicts_OutputIsTheTargets(GenerationMode mode)
    {
        var stream = Stream(earlyIsRight: round => round % 3 != 0, holdFinals: true);

        var (tokens, tracker) = await RunAsync(mode, stream);

        Assert.Equal(fixture.Expected, tokens);
        if (mode is GenerationMode.Preemptive or GenerationMode.Conditional)
        {
            Assert.True(tracker.Hits > 0, "no pre-drafted round was used");
            Assert.True(tracker.Misses > 0, "no pre-drafted round was lost to a wrong early verdict");
        }
        else if (mode == GenerationMode.Speculative)
        {
            Assert.Equal(0, tracker.Hits + tracker.Misses);
        }
    }

    [Fact]
    public async Task Preemptive_RightEarlyVerdicts_NextRoundsStartFromTheBranch()
    {
        var stream = Stream(earlyIsRight: _ => true, holdFinals: true);

        var (tokens, tracker) = await RunAsync(GenerationMode.Preemptive, stream);

        Assert.Equal(fixture.Expected, tokens);
        Assert.Equal(0, tracker.Misses);
        Assert.Equal(tracker.Rounds.Count - 1, tracker.Hits);
        Assert.DoesNotContain(Drafts(stream), d => d.Condition is not null);
    }

    [Fact]
    public async Task Conditional_RightEarlyVerdicts_RoundsTravelAheadAndAreUsed()
    {
        var stream = Stream(earlyIsRight: _ => true, holdFinals: true);

        var (tokens, tracker) = await RunAsync(GenerationMode.Conditional, stream);

        Assert.Equal(fixture.Expected, tokens);
        Assert.True(Drafts(stream).Count(d => d.Condition is not null) > 0, "no round was sent ahead");
        Assert.Equal(Drafts(stream).Count(d => d.Condition is not null), tracker.SentAhead);
        Assert.Equal(0, tracker.Dropped);
        Assert.True(tracker.StartedWithoutWaiting > 0);
    }

    [Fact]
    public async Task Conditional_WrongEarlyVerdicts_RoundsDroppedAndSentAgain()
    {
        var stream = Stream(earlyIsRight: _ => false, holdFinals: true);

        var (tokens, tracker) = await RunAsync(GenerationMode.Conditional, stream);

        Assert.Equal(fixture.Expected, tokens);
        var ahead = Drafts(stream).Where(d => d.Condition is not null).ToList();
        Assert.NotEmpty(ahead);
        Assert.Equal(ahead.Count, tracker.Dropped);

        // Every dropped round number is sent again without a condition.
        Assert.All(ahead, a => Assert.Contains(Drafts(stream), d => d.Round == a.Round && d.Condition is null));
    }

    [Fact]
    public async Task LateEarlyVerdicts_OfSettledRounds_Ignored()
    {
        var stream = Stream(earlyIsRight: _ => true, holdFinals: false, lateEarly: true);

        var (tokens, _) = await RunAsync(GenerationMode.Conditional, stream);

        Assert.Equal(fixture.Expected, tokens);
    }

    [Fact]
    public async Task SilentVerifier_DeadlinePasses_RoundTimeout()
    {
        var time = new FakeTimeProvider();
        var stream = new ScriptedVerifierStream(fixture.Truth, fixture.End) { Silent = true };

        var run = RunAsync(GenerationMode.Preemptive, stream, time: time);
        await stream.ReadingAfterDraft.DefaultTimeout();
        time.Advance(RoundTimeout + TimeSpan.FromSeconds(1));

        var error = await Assert.ThrowsAsync<RoundTimeoutException>(() => run).DefaultTimeout();
        Assert.Contains("round 1's final verdict", error.Message);
    }

    [Fact]
    public async Task StreamBroken_WhileABranchDrafts_ErrorSurfacesAndTheDraftStaysUsable()
    {
        var stream = Stream(earlyIsRight: _ => true, holdFinals: true, breakAfterFirstEarly: new RpcException(new Status(StatusCode.Unavailable, "scripted reset")));

        var error = await Assert.ThrowsAnyAsync<Exception>(() => RunAsync(GenerationMode.Conditional, stream)).DefaultTimeout();

        Assert.IsType<RpcException>(error.InnerException ?? error);
        var (tokens, _) = await RunAsync(GenerationMode.Conditional, Stream(earlyIsRight: _ => true, holdFinals: true));
        Assert.Equal(fixture.Expected, tokens);
    }

    /// <summary>
    /// The stream ends while the branch is still drafting (a slow draft: its floor never passes on the fake clock). The
    /// loop must report the ended stream, waiting for a message a bounded number of times; a loop that goes back to wait
    /// after every empty read spins here until the branch ends (never).
    /// </summary>
    [Fact]
    public async Task StreamEnds_WhileABranchDrafts_NoSpin()
    {
        var time = new FakeTimeProvider();
        var stream = Stream(earlyIsRight: _ => true, holdFinals: true, endAfterFirstEarly: true);
        using var slow = new DraftEngine(fixture.Model, new ComputeProfile { Name = "slow", DraftMsPerToken = 1000 }, time);

        var error = await Assert.ThrowsAnyAsync<Exception>(() => RunAsync(GenerationMode.Conditional, stream, slow, time, firstRoundReady: time)).DefaultTimeout();

        Assert.IsType<System.Threading.Channels.ChannelClosedException>(error);
        Assert.InRange(stream.Waits, 1, 3);
    }

    [Fact]
    public async Task Cancelled_WhileWaiting_OperationCanceled()
    {
        var stream = new ScriptedVerifierStream(fixture.Truth, fixture.End) { Silent = true };
        using var cancel = new CancellationTokenSource();

        var run = RunAsync(GenerationMode.Conditional, stream, cancellationToken: cancel.Token);
        await stream.FirstDraftSent.DefaultTimeout();
        await cancel.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => run).DefaultTimeout();
    }

    private ScriptedVerifierStream Stream(Func<uint, bool> earlyIsRight, bool holdFinals, bool lateEarly = false, Exception? breakAfterFirstEarly = null, bool endAfterFirstEarly = false) =>
        new(fixture.Truth, fixture.End)
        {
            EarlyIsRight = earlyIsRight,
            HoldFinals = holdFinals,
            LateEarlyVerdicts = lateEarly,
            BreakAfterFirstEarly = breakAfterFirstEarly,
            EndAfterFirstEarly = endAfterFirstEarly,
        };

    private static List<Draft> Drafts(ScriptedVerifierStream stream)
    {
        lock (stream.Sent)
        {
            return [.. stream.Sent.Where(m => m.KindCase == EdgeMessage.KindOneofCase.Draft).Select(m => m.Draft)];
        }
    }

    private async Task<(List<int> Tokens, GenerationTracker Tracker)> RunAsync(GenerationMode mode, ScriptedVerifierStream stream, DraftEngine? engine = null, TimeProvider? time = null, FakeTimeProvider? firstRoundReady = null, CancellationToken cancellationToken = default)
    {
        time ??= TimeProvider.System;
        using var own = engine is null ? new DraftEngine(fixture.Model) : null;
        var tracker = new GenerationTracker(fixture.Model.Tokenizer, RoundLoopFixture.Prompt, time);
        var request = new GenerationRequest { PromptIds = RoundLoopFixture.Prompt, Mode = mode, DraftTokens = 3, MaxNewTokens = RoundLoopFixture.NewTokens, StopAtEos = false };
        var description = new ModelDescription { VocabSize = fixture.Model.VocabSize, Limits = new Limits { MaxDraftTokens = 8, MaxSequenceLength = 256 } };
        var runner = new SpeculativeRunner(_ => stream, engine ?? own!, request, tracker, description, time, RoundTimeout);
        var tokens = new List<int>();
        var loop = Task.Run(async () =>
        {
            await foreach (var token in runner.RunAsync(cancellationToken))
            {
                tokens.Add(token.Id.Value);
            }
        });
        if (firstRoundReady is not null)
        {
            // The first round's drafts wait for the slow draft's floor on the fake clock: let them through, not the branch's.
            while (!stream.FirstDraftSent.IsCompleted && !loop.IsCompleted)
            {
                firstRoundReady.Advance(TimeSpan.FromSeconds(1));
                await Task.Delay(5);
            }
        }

        await loop.WaitAsync(TimeSpan.FromMinutes(1));
        return (tokens, tracker);
    }
}
