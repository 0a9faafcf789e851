namespace SpecEdge.EdgeClient.Client;

/// <summary>
/// Ends a generation at the first of its stop sequences, as OpenAI's <c>stop</c> does: the text before the sequence is
/// delivered, the sequence itself and everything after it is not. Tokens whose text might begin a stop sequence are
/// held back until the following text settles it, so no caller ever sees part of a stop sequence.
/// </summary>
internal sealed class StopSequenceFilter
{
    private readonly IReadOnlyList<string> _stops;
    private readonly List<CommittedToken> _held = [];
    private string _heldText = string.Empty;

    public StopSequenceFilter(IReadOnlyList<string> stops)
    {
        _stops = stops;
    }

    /// <summary>Whether a stop sequence has been seen (nothing after it is released).</summary>
    public bool Stopped { get; private set; }

    /// <summary>Every character released so far.</summary>
    public System.Text.StringBuilder Released { get; } = new();

    /// <summary>Takes a committed token and returns the tokens that are now safe to deliver.</summary>
    public List<CommittedToken> Push(CommittedToken token)
    {
        var released = new List<CommittedToken>();
        if (Stopped)
        {
            return released;
        }

        _held.Add(token);
        _heldText += token.Text;
        var match = -1;
        foreach (var stop in _stops)
        {
            var at = _heldText.IndexOf(stop, StringComparison.Ordinal);
            if (at >= 0 && (match < 0 || at < match))
            {
                match = at;
            }
        }

        if (match >= 0)
        {
            // Deliver the text before the sequence: whole tokens, then the part of the token the sequence begins in.
            Stopped = true;
            var offset = 0;
            foreach (var held in _held)
            {
                if (offset + held.Text.Length <= match)
                {
                    Release(held, released);
                }
                else
                {
                    if (match > offset)
                    {
                        Release(held with { Text = held.Text[..(match - offset)] }, released);
                    }

                    break;
                }

                offset += held.Text.Length;
            }

            _held.Clear();
            _heldText = string.Empty;
            return released;
        }

        // Hold back from the start of the longest ending that could still grow into a stop sequence.
        var keepFrom = _heldText.Length;
        foreach (var stop in _stops)
        {
            for (var length = Math.Min(stop.Length - 1, _heldText.Length); length > 0; length--)
            {
                if (_heldText.AsSpan(_heldText.Length - length).SequenceEqual(stop.AsSpan(0, length)))
                {
                    keepFrom = Math.Min(keepFrom, _heldText.Length - length);
                    break;
                }
            }
        }

        var releasedLength = 0;
        var count = 0;
        while (count < _held.Count && releasedLength + _held[count].Text.Length <= keepFrom)
        {
            releasedLength += _held[count].Text.Length;
            Release(_held[count], released);
            count++;
        }

        _held.RemoveRange(0, count);
        _heldText = _heldText[releasedLength..];
        return released;
    }

    /// <summary>At the end of the generation: whatever is still held (it never became a stop sequence).</summary>
    public List<CommittedToken> Flush()
    {
        var released = new List<CommittedToken>();
        foreach (var held in _held)
        {
            Release(held, released);
        }

        _held.Clear();
        _heldText = string.Empty;
        return released;
    }

    private void Release(CommittedToken token, List<CommittedToken> released)
    {
        Released.Append(token.Text);
        released.Add(token);
    }
}
