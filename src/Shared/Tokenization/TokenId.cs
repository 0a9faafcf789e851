namespace SpecEdge.Shared.Tokenization;

/// <summary>A token id in a model's vocabulary.</summary>
public readonly record struct TokenId(int Value) : IComparable<TokenId>
{
    /// <summary>The id as an integer.</summary>
    public static implicit operator int(TokenId id) => id.Value;

    /// <summary>An integer as a token id.</summary>
    public static explicit operator TokenId(int value) => new(value);

    /// <inheritdoc/>
    public int CompareTo(TokenId other) => Value.CompareTo(other.Value);

    /// <inheritdoc/>
    public override string ToString() => Value.ToString(System.Globalization.CultureInfo.InvariantCulture);
}
