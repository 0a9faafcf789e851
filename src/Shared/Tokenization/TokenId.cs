namespace SpecEdge.Shared.Tokenization;

/// <summary>A token id in a model's vocabulary.</summary>
public readonly record struct TokenId(int Value) : IComparable<TokenId>
{
    public static implicit operator int(TokenId id) => id.Value;

    public static explicit operator TokenId(int value) => new(value);

    public int CompareTo(TokenId other) => Value.CompareTo(other.Value);

    public override string ToString() => Value.ToString(System.Globalization.CultureInfo.InvariantCulture);
}
