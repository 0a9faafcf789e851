using SpecEdge.Shared.Decoding;
using SpecEdge.Shared.Tokenization;

namespace SpecEdge.EdgeClient.Client;

/// <summary>One generation to run.</summary>
public sealed record GenerationRequest
{
    /// <summary>Default for <see cref="MaxNewTokens"/>.</summary>
    public const int DefaultMaxNewTokens = 64;

    /// <summary>Default for <see cref="DraftTokens"/> (γ).</summary>
    public const int DefaultDraftTokens = 4;

    /// <summary>The prompt as token ids; <see cref="PromptText"/> is encoded when this is null.</summary>
    public IReadOnlyList<TokenId>? PromptIds { get; init; }

    /// <summary>The prompt as text, encoded with the draft model's tokenizer (with its beginning-of-sequence token).</summary>
    public string? PromptText { get; init; }

    /// <summary>
    /// The prompt as a conversation, rendered with the draft model's chat template (its <c>tokenizer_config.json</c>, or
    /// the built-in plain format); used when <see cref="PromptIds"/> and <see cref="PromptText"/> are null. The
    /// template's end-of-turn marker ends the generation.
    /// </summary>
    public IReadOnlyList<ChatMessage>? Messages { get; init; }

    /// <summary>
    /// Text that ends the generation where it first appears; the text delivered stops just before it (at most 4, none
    /// empty). The verifier computes on a little past it: stop sequences are matched on the edge, in committed text.
    /// </summary>
    public IReadOnlyList<string> StopSequences { get; init; } = [];

    /// <summary>The most stop sequences a request may carry (as OpenAI's API allows).</summary>
    public const int MaxStopSequences = 4;

    /// <summary>How to decode (default speculative).</summary>
    public GenerationMode Mode { get; init; } = GenerationMode.Speculative;

    /// <summary>New tokens to generate at most (default 64).</summary>
    public int MaxNewTokens { get; init; } = DefaultMaxNewTokens;

    /// <summary>Drafts per round (γ); with <see cref="AdaptiveDraftTokens"/>, the largest γ the adaptive rule may pick.</summary>
    public int DraftTokens { get; init; } = DefaultDraftTokens;

    /// <summary>Choose each round's length as it drafts, from the draft's calibrated confidence and measured timings (<see cref="DraftTokens"/> at most).</summary>
    public bool AdaptiveDraftTokens { get; init; }

    /// <summary>
    /// Multi-candidate pre-drafting (pre-emptive and conditional modes, greedy): on an early verdict, pre-draft the next
    /// round for this many provisional outcomes (1 to 4), the exit's own verdict and the alternatives it ranks next, one
    /// after another; conditional mode sends each as a conditional round. Null (the default): 1, the exit's verdict
    /// alone, except in auto mode, which chooses from the drafting speed and early-verdict lead it has measured.
    /// </summary>
    public int? Candidates { get; init; }

    /// <summary>
    /// Token trees: beside each draft, this many leaves from the same row of the draft (0: a chain; at most
    /// <see cref="Shared.Protocol.ProtocolLimits.MaxLeafWidth"/>). Greedy, the draft's next most likely tokens; sampling,
    /// tokens drawn from the draft's distribution. A leaf costs no drafting, only a scored token on the verifier; when
    /// the draft at its depth falls and the leaf stands, the round commits one token more. The verifier must take
    /// leaves (<c>Opened.max_leaves</c>; batching on); otherwise rounds are chains. Null (the default): the mode's
    /// choice, a chain in every mode but auto, which drafts trees of <see cref="SpecEdgeClient.AutoLeaves"/>.
    /// </summary>
    public int? Leaves { get; init; }

    /// <summary>Greedy (default) or sampling settings.</summary>
    public SamplingConfig Sampling { get; init; } = SamplingConfig.Greedy;

    /// <summary>Stop at the end-of-sequence token (default true).</summary>
    public bool StopAtEos { get; init; } = true;

    /// <summary>Per-exit thresholds to ask the verifier for (null: the verifier's own).</summary>
    public IReadOnlyList<float>? ExitThresholds { get; init; }

    /// <summary>A label the verifier logs.</summary>
    public string? ClientLabel { get; init; }
}

/// <summary>A token the generation has committed (it will never change).</summary>
/// <param name="Id">The token.</param>
/// <param name="Index">0 for the first new token.</param>
/// <param name="Text">The text this token completes (possibly empty while a multi-byte character is split across tokens).</param>
/// <param name="Verified">False for a token the draft produced alone under the degraded policy, with no verifier reachable.</param>
public readonly record struct CommittedToken(TokenId Id, int Index, string Text, bool Verified = true);
