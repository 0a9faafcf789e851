using System.Globalization;
using System.Text;
using Microsoft.ML.Tokenizers;
using SpecEdge.Shared.Models;

namespace SpecEdge.Shared.Tokenization;

/// <summary>
/// A SentencePiece <c>tokenizer.model</c> (Llama 2, Vicuna, TinyLlama), read with Microsoft.ML.Tokenizers; SpecEdge adds
/// the per-token byte view that streaming needs ("▁" is a space, <c>&lt;0xNN&gt;</c> pieces are raw bytes).
/// </summary>
public sealed class SentencePieceModelTokenizer : ITextTokenizer
{
    private const char MetaSpace = '\u2581';

    private readonly SentencePieceTokenizer _inner;
    private readonly byte[]?[] _bytes;

    private SentencePieceModelTokenizer(SentencePieceTokenizer inner, IReadOnlyList<TokenId> eos)
    {
        _inner = inner;
        var maxId = inner.Vocabulary.Values.DefaultIfEmpty(-1).Max();
        VocabSize = maxId + 1;
        _bytes = new byte[]?[VocabSize];
        var control = new HashSet<int> { inner.BeginningOfSentenceId, inner.EndOfSentenceId };
        if (inner.SpecialTokens is { } specials)
        {
            foreach (var id in specials.Values)
            {
                control.Add(id);
            }
        }

        foreach (var (piece, id) in inner.Vocabulary)
        {
            if (control.Contains(id))
            {
                _bytes[id] = [];
            }
            else if (id == inner.UnknownId)
            {
                _bytes[id] = Encoding.UTF8.GetBytes(" \u2047 ");
            }
            else if (inner.ByteFallback && piece.Length == 6 && piece.StartsWith("<0x", StringComparison.Ordinal) && piece[5] == '>'
                && byte.TryParse(piece.AsSpan(3, 2), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out var raw))
            {
                _bytes[id] = [raw];
            }
            else
            {
                _bytes[id] = Encoding.UTF8.GetBytes(piece.Replace(MetaSpace, ' '));
            }
        }

        Bos = new TokenId(inner.BeginningOfSentenceId);
        Eos = eos.Count > 0 ? eos : [new TokenId(inner.EndOfSentenceId)];
    }

    /// <inheritdoc/>
    public string Kind => "sentencepiece";

    /// <inheritdoc/>
    public int VocabSize { get; }

    /// <inheritdoc/>
    public TokenId? Bos { get; }

    /// <inheritdoc/>
    public IReadOnlyList<TokenId> Eos { get; }

    /// <summary>Loads a SentencePiece model file.</summary>
    /// <exception cref="ModelFormatException">The file is missing or is not a SentencePiece model ML.Tokenizers can read.</exception>
    public static SentencePieceModelTokenizer Load(string path, IReadOnlyList<int>? eosIds = null)
    {
        try
        {
            using var stream = File.OpenRead(path);
            var inner = SentencePieceTokenizer.Create(stream, false, false);
            return new SentencePieceModelTokenizer(inner, (eosIds ?? []).Select(id => new TokenId(id)).ToList());
        }
        catch (FileNotFoundException ex)
        {
            throw new ModelFormatException(path, "tokenizer.model not found", ex);
        }
        catch (Exception ex) when (ex is not ModelFormatException and not OutOfMemoryException)
        {
            throw new ModelFormatException(path, $"not a SentencePiece model ({ex.Message})", ex);
        }
    }

    /// <inheritdoc/>
    public TokenId[] Encode(string text, bool addBos)
    {
        var ids = _inner.EncodeToIds(text, addBeginningOfSentence: addBos, addEndOfSentence: false);
        if (text.Length > 0 && ids.Count == (addBos ? 1 : 0))
        {
            // Microsoft.ML.Tokenizers 2.0.1 returns no ids for a one-character text; encode it here.
            ids = [.. ids, .. EncodeShort(text)];
        }

        var result = new TokenId[ids.Count];
        for (var i = 0; i < result.Length; i++)
        {
            result[i] = new TokenId(ids[i]);
        }

        return result;
    }

    // Greedy merging of adjacent pieces present in the vocabulary, then byte fallback: what SentencePiece BPE gives for
    // the short texts the library skips.
    private List<int> EncodeShort(string text)
    {
        var normalized = (_inner.AddDummyPrefix ? MetaSpace.ToString() : string.Empty) + (_inner.EscapeWhiteSpaces ? text.Replace(' ', MetaSpace) : text);
        var symbols = normalized.EnumerateRunes().Select(r => r.ToString()).ToList();
        var merged = true;
        while (merged && symbols.Count > 1)
        {
            merged = false;
            for (var i = 0; i < symbols.Count - 1; i++)
            {
                if (_inner.Vocabulary.ContainsKey(symbols[i] + symbols[i + 1]))
                {
                    symbols[i] += symbols[i + 1];
                    symbols.RemoveAt(i + 1);
                    merged = true;
                    break;
                }
            }
        }

        var ids = new List<int>();
        foreach (var symbol in symbols)
        {
            if (_inner.Vocabulary.TryGetValue(symbol, out var id))
            {
                ids.Add(id);
                continue;
            }

            foreach (var b in Encoding.UTF8.GetBytes(symbol))
            {
                ids.Add(_inner.ByteFallback && _inner.Vocabulary.TryGetValue($"<0x{b:X2}>", out var byteId) ? byteId : _inner.UnknownId);
            }
        }

        return ids;
    }

    /// <inheritdoc/>
    public void AppendBytes(TokenId token, List<byte> destination)
    {
        if ((uint)token.Value >= (uint)VocabSize || _bytes[token.Value] is not { } bytes)
        {
            throw new ArgumentOutOfRangeException(nameof(token), token.Value, $"token id is not in the SentencePiece vocabulary of {VocabSize}");
        }

        destination.AddRange(bytes);
    }
}
