#!/usr/bin/python3
"""Writes test vectors for a trained tokenizer.json: texts and the ids this script's own BPE gives them.

The C# tests check SpecEdge's tokenizer.json reader against these ids: an independent implementation (the recipe's
Python BPE) rather than the code under test.  Usage: tokenizer_vectors.py TOKENIZER_JSON OUT_JSON
"""
import json
import sys

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import train  # noqa: E402

TEXTS = [
    "In the beginning God created the heaven and the earth.",
    "And God said, Let there be light: and there was light.",
    "  Two  spaces,\ttabs and\nnew lines; numbers 1611 and 42!",
    "Naïve café — 日本語 and an emoji 🚀 the corpus never saw.",
    "The LORD is my shepherd; I shall not want.",
    "",
]

tokenizer_json, out = sys.argv[1], sys.argv[2]
with open(tokenizer_json, encoding="utf-8") as f:
    model = json.load(f)["model"]
tokenizer = train.Tokenizer(model["vocab"], [tuple(m.split(" ")) for m in model["merges"]])
vectors = [{"text": t, "ids": tokenizer.encode(t)} for t in TEXTS]
with open(out, "w", encoding="utf-8") as f:
    json.dump({"tokenizer_sha256_note": "ids from tools/train/tokenizer_vectors.py (the recipe's Python BPE)", "vectors": vectors}, f, ensure_ascii=False, indent=1)
print(f"wrote {len(vectors)} vectors to {out}")
