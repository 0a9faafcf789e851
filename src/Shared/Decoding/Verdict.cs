using SpecEdge.Shared.Tokenization;

namespace SpecEdge.Shared.Decoding;

/// <summary>
/// The outcome of checking a round of drafts: the first <see cref="Accepted"/> drafts stand, and <see cref="Next"/>
/// follows them (the correction after a rejection, or the bonus token when every draft stands).
/// </summary>
public readonly record struct Verdict(int Accepted, TokenId Next);
