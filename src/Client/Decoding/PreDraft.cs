using SpecEdge.EdgeClient.Client;
using SpecEdge.EdgeClient.Drafting;
using SpecEdge.Protocol.V1;
using SpecEdge.Shared.Protocol;
using SpecEdge.Shared.Tokenization;

namespace SpecEdge.EdgeClient.Decoding;

/// <summary>How a drafting mode uses the time between sending a round and its final verdict.</summary>
/// <param name="Mode">The mode.</param>
/// <param name="DraftsOnEarlyVerdicts">Pre-draft the next round on an exit's provisional verdict (pre-emptive, conditional).</param>
/// <param name="SendsAhead">Send the pre-drafted round before the final verdict, with the condition it assumes (conditional).</param>
/// <param name="GuessesAhead">Pre-draft on the edge's own guess that every draft stands (proactive): each round drafts one token more than it sends, the guess of the token after them.</param>
internal sealed record ModePolicy(GenerationMode Mode, bool DraftsOnEarlyVerdicts, bool SendsAhead, bool GuessesAhead)
{
    public static ModePolicy For(GenerationMode mode) => mode switch
    {
        GenerationMode.Preemptive => new(mode, DraftsOnEarlyVerdicts: true, SendsAhead: false, GuessesAhead: false),
        GenerationMode.Conditional => new(mode, DraftsOnEarlyVerdicts: true, SendsAhead: true, GuessesAhead: false),
        GenerationMode.Proactive => new(mode, DraftsOnEarlyVerdicts: false, SendsAhead: false, GuessesAhead: true),
        _ => new(mode, DraftsOnEarlyVerdicts: false, SendsAhead: false, GuessesAhead: false),
    };
}

/// <summary>Counts what pre-drafting gained and lost: the one place hits, misses, dropped rounds and wasted drafts are counted.</summary>
internal sealed class RoundStats(GenerationTracker tracker)
{
    /// <summary>A pre-drafted round was used.</summary>
    public void Hit() => tracker.Hits++;

    /// <summary>A pre-drafted round was not used; its <paramref name="wastedTokens"/> drafts were for nothing.</summary>
    public void Miss(int wastedTokens)
    {
        tracker.Misses++;
        tracker.Wasted += wastedTokens;
    }

    /// <summary>A pre-drafted round went to the verifier ahead of its predecessor's final verdict.</summary>
    public void SentAhead() => tracker.SentAhead++;

    /// <summary>A round sent ahead was dropped by the verifier (its condition did not hold).</summary>
    public void Dropped(int wastedTokens)
    {
        Miss(wastedTokens);
        tracker.Dropped++;
    }
}

/// <summary>A round drafted ahead on a provisional prefix (the committed tokens plus the verdict it assumes).</summary>
internal sealed class Branch(List<TokenId> prefix, Condition condition, Task<DraftedRound> task, CancellationTokenSource cancel)
{
    public IReadOnlyList<TokenId> Prefix { get; } = prefix;

    public Condition Condition { get; } = condition;

    public Task<DraftedRound> Task { get; } = task;

    /// <summary>Stops the drafting and waits for it; returns how many tokens it had drafted (0 when stopped first).</summary>
    public async Task<int> CancelAsync()
    {
        await cancel.CancelAsync().ConfigureAwait(false);
        try
        {
            return (await Task.ConfigureAwait(false)).Tokens.Length;
        }
        catch (OperationCanceledException)
        {
            return 0;
        }
        finally
        {
            cancel.Dispose();
        }
    }

    /// <summary>The drafting ended and its result is taken: release what it held.</summary>
    public void Release() => cancel.Dispose();
}

/// <summary>A round sent ahead of the final verdict of the round before it, with the condition it assumes.</summary>
internal sealed record SentAhead(uint Round, Condition Condition, DraftedRound Drafts, DateTimeOffset SentWall);

/// <summary>
/// The pre-draft state between rounds, as a state machine:
/// <list type="bullet">
/// <item><see cref="Idle"/>: nothing drafted ahead.</item>
/// <item><see cref="Drafting"/>: a branch drafts (or has drafted) the next round on a provisional prefix, not sent.</item>
/// <item><see cref="Sent"/>: the branch went to the verifier as a conditional round; the final verdict settles it.</item>
/// <item><see cref="Accepted"/>: its condition held: the next round is already at the verifier.</item>
/// </list>
/// </summary>
internal abstract record PreDraft
{
    public static readonly PreDraft Idle = new IdleState();

    private sealed record IdleState : PreDraft;
}

internal sealed record Drafting(Branch Branch) : PreDraft;

internal sealed record Sent(Branch Branch, SentAhead Round) : PreDraft;

internal sealed record Accepted(SentAhead Round) : PreDraft;

/// <summary>The transitions of <see cref="PreDraft"/>, with what each costs or gains counted in <see cref="RoundStats"/>.</summary>
internal sealed class PreDraftMachine(RoundStats stats)
{
    public PreDraft State { get; private set; } = PreDraft.Idle;

    /// <summary>The round already at the verifier, when the last conditional round held (and forgets it).</summary>
    public SentAhead? TakeAccepted(uint round)
    {
        if (State is Accepted accepted && accepted.Round.Round == round)
        {
            State = PreDraft.Idle;
            return accepted.Round;
        }

        return null;
    }

    /// <summary>
    /// The branch when it was drafted on exactly <paramref name="committed"/> (a hit: the caller awaits its drafts, then
    /// releases it), else null, after stopping any branch and counting it a miss.
    /// </summary>
    public async Task<Branch?> TakeBranchAsync(IReadOnlyList<TokenId> committed)
    {
        if (State is Drafting drafting && drafting.Branch.Prefix.SequenceEqual(committed))
        {
            State = PreDraft.Idle;
            stats.Hit();
            return drafting.Branch;
        }

        await CancelAsync().ConfigureAwait(false);
        return null;
    }

    /// <summary>Starts drafting on a provisional verdict, unless a branch on the same condition exists or one was sent.</summary>
    public async Task OnProvisionalAsync(Condition condition, Func<Branch?> start)
    {
        switch (State)
        {
            case Drafting drafting when drafting.Branch.Condition.Equals(condition):
            case Sent:
                return;
            case Drafting:
                // A later exit disagrees with the one the branch was drafted on: restart it from the new provisional prefix.
                await CancelAsync().ConfigureAwait(false);
                break;
        }

        if (State == PreDraft.Idle && start() is { } branch)
        {
            State = new Drafting(branch);
        }
    }

    /// <summary>The branch ready to go ahead as a conditional round, or null.</summary>
    public Branch? ReadyToSend() => State is Drafting { Branch.Task.IsCompletedSuccessfully: true } drafting ? drafting.Branch : null;

    /// <summary>The branch still drafting, whose completion the round loop waits for beside the verifier's messages.</summary>
    public Task? PendingBranch() => State is Drafting { Branch.Task.IsCompleted: false } drafting ? drafting.Branch.Task : null;

    public void MarkSent(Branch branch, SentAhead round)
    {
        stats.SentAhead();
        State = new Sent(branch, round);
    }

    /// <summary>After a final verdict: a round sent ahead is accepted when its condition held, else dropped; the generation's end cancels any branch.</summary>
    public async Task SettleAsync(FinalVerdict final)
    {
        if (State is Sent sent)
        {
            sent.Branch.Release();
            if (!final.Finished && sent.Round.Condition.ToDomain() == final.ToDomain())
            {
                stats.Hit();
                State = new Accepted(sent.Round);
            }
            else
            {
                // The verifier drops it; the round is sent again.
                stats.Dropped(sent.Round.Drafts.Tokens.Length);
                State = PreDraft.Idle;
            }
        }

        if (final.Finished)
        {
            await CancelAsync().ConfigureAwait(false);
        }
    }

    /// <summary>Stops a branch that is drafting, counting it as a miss.</summary>
    public async Task CancelAsync()
    {
        if (State is Drafting drafting)
        {
            State = PreDraft.Idle;
            stats.Miss(await drafting.Branch.CancelAsync().ConfigureAwait(false));
        }
    }

    /// <summary>On the way out (an error or a cancelled call): stop whatever drafts, counting nothing.</summary>
    public async Task AbandonAsync()
    {
        var branch = State switch
        {
            Drafting drafting => drafting.Branch,
            Sent sent => sent.Branch,
            _ => null,
        };
        State = PreDraft.Idle;
        if (branch is not null)
        {
            await branch.CancelAsync().ConfigureAwait(false);
        }
    }
}
