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
    /// <summary>A pre-drafted round was used; <paramref name="alternate"/> when it was drafted on an alternative outcome, not the exit's own verdict.</summary>
    public void Hit(bool alternate)
    {
        tracker.Hits++;
        if (alternate)
        {
            tracker.AlternateHits++;
        }
    }

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
        catch (Exception)
        {
            // Stopped first, or failed: either way it is thrown away (a failing draft fails the next round's own drafting too).
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

/// <summary>One pre-drafted candidate for the next round: its branch, whether it assumes an alternative outcome (not the exit's own verdict), and, once sent, the conditional round.</summary>
internal sealed class Candidate(Branch branch, bool alternate)
{
    public Branch Branch { get; } = branch;

    public bool Alternate { get; } = alternate;

    public SentAhead? Sent { get; set; }
}

/// <summary>
/// What is drafted ahead between rounds: a list of candidates for the next round, each a branch drafted on one
/// provisional outcome of the round in flight: an exit's own verdict first, then, with multi-candidate pre-drafting,
/// the alternatives it ranks next (<c>Open.candidates</c>). Branches draft one after another (the draft has one cache),
/// in the order the verdicts rank them. A later exit's verdict stops the unsent branches it no longer backs and adds
/// its own outcomes, even after a candidate went ahead: in conditional mode candidates go to the verifier as soon as
/// they are drafted, as round N + 1 with their condition, while fewer than <paramref name="maxSent"/> have gone (the
/// verifier's inbox allows that many); the rest stay unsent, ready should the final verdict back them. The verifier
/// verifies the first whose condition holds and drops the others. The final verdict settles them: a sent candidate
/// whose condition held is <see cref="TakeAccepted">already at the verifier</see>; an unsent one drafted on the final
/// prefix is <see cref="TakeBranchAsync">taken</see>; the rest are misses. Hits and misses count pre-drafted rounds
/// used and thrown away (<see cref="RoundStats"/>).
/// </summary>
/// <param name="stats">Where hits, misses and drops are counted.</param>
/// <param name="maxSent">The most conditional rounds one round may send (Open.candidates).</param>
internal sealed class PreDraftMachine(RoundStats stats, int maxSent = 1)
{
    private readonly List<Candidate> _candidates = [];
    private SentAhead? _accepted;

    /// <summary>The branch started last: the next one starts after it (the list's order is the verdicts' ranking, not the order branches started in).</summary>
    private Task? _lastStarted;

    /// <summary>The round already at the verifier, when a conditional round held (and forgets it).</summary>
    public SentAhead? TakeAccepted(uint round)
    {
        if (_accepted is { } accepted && accepted.Round == round)
        {
            _accepted = null;
            return accepted;
        }

        return null;
    }

    /// <summary>
    /// The unsent branch drafted on exactly <paramref name="committed"/> (a hit: the caller awaits its drafts, then
    /// releases it), else null; every other branch is stopped and counted a miss.
    /// </summary>
    public async Task<Branch?> TakeBranchAsync(IReadOnlyList<TokenId> committed)
    {
        var hit = _candidates.Find(c => c.Sent is null && c.Branch.Prefix.SequenceEqual(committed));
        if (hit is not null)
        {
            _candidates.Remove(hit);
            stats.Hit(hit.Alternate);
        }

        await CancelAsync().ConfigureAwait(false);
        return hit?.Branch;
    }

    /// <summary>
    /// On a provisional verdict and its ranked alternatives (<paramref name="conditions"/>, the exit's own first): stops
    /// the unsent branches drafted on other outcomes (a later exit disagreeing), keeps the rest, and starts a branch for
    /// each condition no candidate has yet, in order, each after the one before it.
    /// </summary>
    /// <param name="conditions">The outcomes to draft for, most likely first.</param>
    /// <param name="start">Starts a branch on a condition after a task (the branch before it; null for none); null when the outcome would end the generation.</param>
    public async Task OnProvisionalAsync(IReadOnlyList<Condition> conditions, Func<Condition, Task?, Branch?> start)
    {
        for (var i = _candidates.Count - 1; i >= 0; i--)
        {
            var candidate = _candidates[i];
            if (candidate.Sent is null && !Contains(conditions, candidate.Branch.Condition))
            {
                // A later exit disagrees with the outcome this branch was drafted on: stop it.
                _candidates.RemoveAt(i);
                stats.Miss(await candidate.Branch.CancelAsync().ConfigureAwait(false));
            }
        }

        var ordered = new List<Candidate>(_candidates.Count + conditions.Count);
        ordered.AddRange(_candidates.Where(c => c.Sent is not null));
        try
        {
            for (var i = 0; i < conditions.Count; i++)
            {
                if (ordered.Exists(c => c.Branch.Condition.Equals(conditions[i])))
                {
                    continue;
                }

                if (_candidates.Find(c => c.Branch.Condition.Equals(conditions[i])) is { } existing)
                {
                    ordered.Add(existing);
                }
                else if (start(conditions[i], _lastStarted) is { } branch)
                {
                    ordered.Add(new Candidate(branch, alternate: i > 0));
                    _lastStarted = branch.Task;
                }
            }
        }
        finally
        {
            // The kept branches, and on an error the ones this call started too, stay where cancelling and abandoning find them.
            _candidates.Clear();
            _candidates.AddRange(ordered);
        }
    }

    /// <summary>A drafted branch not yet sent, ready to go ahead as a conditional round while the round has sent fewer than its most; else null.</summary>
    public Branch? ReadyToSend() => AllSent ? null : _candidates.Find(c => c.Sent is null && c.Branch.Task.IsCompletedSuccessfully)?.Branch;

    /// <summary>While a branch that may yet be sent is drafting: a task that completes when any of them ends, which the round loop waits for beside the verifier's messages; else null.</summary>
    public Task? PendingBranch()
    {
        if (AllSent)
        {
            return null;
        }

        // Asked on every message of a round: one pending branch (the usual case) allocates nothing.
        Task? single = null;
        List<Task>? several = null;
        foreach (var c in _candidates)
        {
            if (c.Sent is null && !c.Branch.Task.IsCompleted)
            {
                if (single is null)
                {
                    single = c.Branch.Task;
                }
                else
                {
                    (several ??= [single]).Add(c.Branch.Task);
                }
            }
        }

        return several is null ? single : Task.WhenAny(several);
    }

    /// <summary>Whether the round has sent as many conditional rounds as it may.</summary>
    private bool AllSent
    {
        get
        {
            var sent = 0;
            foreach (var c in _candidates)
            {
                if (c.Sent is not null)
                {
                    sent++;
                }
            }

            return sent >= maxSent;
        }
    }

    public void MarkSent(Branch branch, SentAhead round)
    {
        stats.SentAhead();
        _candidates.Find(c => ReferenceEquals(c.Branch, branch))!.Sent = round;
    }

    /// <summary>
    /// After a final verdict: a sent candidate whose condition held is accepted (every other candidate is stopped and a
    /// miss); sent ones that did not hold are dropped by the verifier; unsent ones stay for <see cref="TakeBranchAsync"/>.
    /// The generation's end stops everything.
    /// </summary>
    public async Task SettleAsync(FinalVerdict final)
    {
        var verdict = final.ToDomain();
        var held = final.Finished ? null : _candidates.Find(c => c.Sent is not null && c.Sent.Condition.ToDomain() == verdict);
        for (var i = _candidates.Count - 1; i >= 0; i--)
        {
            var candidate = _candidates[i];
            if (candidate.Sent is not { } sent)
            {
                continue;
            }

            _candidates.RemoveAt(i);
            candidate.Branch.Release();
            if (ReferenceEquals(candidate, held))
            {
                stats.Hit(candidate.Alternate);
                _accepted = sent;
            }
            else
            {
                // The verifier drops it (or, after the one that held, finds it late); the round goes on without it.
                stats.Dropped(sent.Drafts.Tokens.Length);
            }
        }

        if (final.Finished || held is not null)
        {
            await CancelAsync().ConfigureAwait(false);
        }
    }

    /// <summary>Stops every branch still drafting or drafted and unsent, counting each a miss.</summary>
    public async Task CancelAsync()
    {
        for (var i = _candidates.Count - 1; i >= 0; i--)
        {
            var candidate = _candidates[i];
            if (candidate.Sent is null)
            {
                _candidates.RemoveAt(i);
                stats.Miss(await candidate.Branch.CancelAsync().ConfigureAwait(false));
            }
        }
    }

    /// <summary>On the way out (an error or a cancelled call): stop whatever drafts, counting nothing.</summary>
    public async Task AbandonAsync()
    {
        var branches = _candidates.Select(c => c.Branch).ToList();
        _candidates.Clear();
        _accepted = null;
        foreach (var branch in branches)
        {
            await branch.CancelAsync().ConfigureAwait(false);
        }
    }

    private static bool Contains(IReadOnlyList<Condition> conditions, Condition condition)
    {
        foreach (var c in conditions)
        {
            if (c.Equals(condition))
            {
                return true;
            }
        }

        return false;
    }
}
