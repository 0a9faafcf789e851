namespace SpecEdge.Shared.Runtime;

/// <summary>
/// The logits of the positions a step scored: <see cref="Rows"/> rows of <see cref="VocabSize"/> floats. It views a
/// buffer the context reuses, so it is valid until the context's next step of the same stage.
/// </summary>
public readonly struct LogitsView
{
    private readonly float[] _buffer;
    private readonly int _offset;

    internal LogitsView(float[] buffer, int rows, int vocabSize)
        : this(buffer, 0, rows, vocabSize)
    {
    }

    internal LogitsView(float[] buffer, int offset, int rows, int vocabSize)
    {
        _buffer = buffer;
        _offset = offset;
        Rows = rows;
        VocabSize = vocabSize;
    }

    /// <summary>Scored positions.</summary>
    public int Rows { get; }

    /// <summary>Logits per position.</summary>
    public int VocabSize { get; }

    /// <summary>The logits of scored position <paramref name="row"/> (0 = the first token of the step).</summary>
    public ReadOnlySpan<float> Row(int row)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(row);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(row, Rows);
        return _buffer.AsSpan(_offset + (row * VocabSize), VocabSize);
    }

    /// <summary>The logits of the last scored position.</summary>
    public ReadOnlySpan<float> Last => Row(Rows - 1);
}
