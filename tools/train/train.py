#!/usr/bin/python3
"""Train SpecEdge's default model pair: a Llama-architecture target with early exits and a small draft.

Offline tool (Debian's python3-torch); nothing at run time or in CI needs Python. See tools/train/README.md.

Corpus: the King James Version of the Bible (1611; public domain), read from Debian's bible-kjv package; every 50th
chapter is held out. Tokenizer: a byte-level BPE of 1024 tokens trained here and written as a Hugging Face
tokenizer.json. Three phases, all seeded:
  1. the target's body (6 layers, hidden 256, GQA 4/2) on next-token cross-entropy, plus half-weighted cross-entropy
     at its exits (after layers 2 and 4), so the early layers learn to predict;
  2. the exit heads (a residual projection and an RMSNorm per exit, sharing the LM head) on KL from the target's own
     final distribution, the body frozen: an exit is worth having when it agrees with the final verdict;
  3. the draft (2 layers, hidden 128) distilled from the target (KL from a cache of its distributions, plus a little
     cross-entropy).
Output: Hugging Face folders (config.json, model.safetensors in float16, tokenizer.json); the target also holds
exit_adapters.safetensors and names its exits in config.json ("specedge_exits").
"""

import argparse
import json
import math
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

PRETOKENIZE = r" ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+"
BOS, EOS = 256, 257


# ---------------------------------------------------------------------------------------------------------------- corpus

def read_corpus(path):
    """Verses of the KJV, one per line: from a text file, or from Debian's `bible` program when path is None."""
    if path is not None:
        if not os.path.isfile(path):
            sys.exit(f"train.py: error: corpus file '{path}' not found")
        raw = open(path, encoding="utf-8").read()
    else:
        try:
            raw = subprocess.run(["bible", "-l0", "gen1:1-rev22:21"], check=True, capture_output=True, text=True).stdout
        except FileNotFoundError:
            sys.exit("train.py: error: no corpus: the 'bible' program is missing (apt-get install bible-kjv) and --corpus was not given")
    chapters, current = [], []
    for line in raw.splitlines():
        verse = re.match(r"^\s+\d+\s+(.*\S)\s*$", line)
        if verse:
            current.append(verse.group(1))
        elif line.strip() and current:
            chapters.append(current)
            current = []
    if current:
        chapters.append(current)
    if sum(len(c) for c in chapters) < 1000:
        sys.exit(f"train.py: error: the corpus holds only {sum(len(c) for c in chapters)} verses; expected the whole KJV text")
    return chapters


# ------------------------------------------------------------------------------------------------------------- tokenizer

def bytes_to_unicode():
    """GPT-2's byte-level alphabet: printable bytes stand for themselves, the others are shifted past 255."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


BYTE_CHAR = bytes_to_unicode()


def train_bpe(text, vocab_size):
    """Byte-level BPE: merges learned greedily by pair frequency over pre-tokenized words."""
    words = Counter(re.findall(PRETOKENIZE, text))
    symbols = {w: tuple(BYTE_CHAR[b] for b in w.encode("utf-8")) for w in words}
    merges = []
    pair_counts = Counter()
    for w, count in words.items():
        s = symbols[w]
        for a, b in zip(s, s[1:]):
            pair_counts[(a, b)] += count
    while 258 + len(merges) < vocab_size and pair_counts:
        (a, b), count = max(pair_counts.items(), key=lambda kv: (kv[1], kv[0]))
        if count < 2:
            break
        merges.append((a, b))
        for w, wc in words.items():
            s = symbols[w]
            if len(s) < 2 or a not in s:
                continue
            i, out = 0, []
            changed = False
            while i < len(s):
                if i < len(s) - 1 and s[i] == a and s[i + 1] == b:
                    out.append(a + b)
                    i += 2
                    changed = True
                else:
                    out.append(s[i])
                    i += 1
            if changed:
                for x, y in zip(s, s[1:]):
                    pair_counts[(x, y)] -= wc
                out = tuple(out)
                for x, y in zip(out, out[1:]):
                    pair_counts[(x, y)] += wc
                symbols[w] = out
        pair_counts = Counter({k: v for k, v in pair_counts.items() if v > 0})
    vocab = {BYTE_CHAR[b]: b for b in range(256)}
    for i, (a, b) in enumerate(merges):
        vocab[a + b] = 258 + i
    return vocab, merges


class Tokenizer:
    def __init__(self, vocab, merges):
        self.vocab = vocab
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.cache = {}
        self.id_to_bytes = {}
        char_byte = {c: b for b, c in BYTE_CHAR.items()}
        for token, i in vocab.items():
            self.id_to_bytes[i] = bytes(char_byte[c] for c in token)

    def encode_word(self, word):
        if word in self.cache:
            return self.cache[word]
        s = [BYTE_CHAR[b] for b in word.encode("utf-8")]
        while len(s) > 1:
            best = min(((self.ranks.get((s[i], s[i + 1]), 1 << 30), i) for i in range(len(s) - 1)))
            if best[0] == 1 << 30:
                break
            a, b = s[best[1]], s[best[1] + 1]
            i, out = 0, []
            while i < len(s):
                if i < len(s) - 1 and s[i] == a and s[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            s = out
        ids = [self.vocab[t] for t in s]
        self.cache[word] = ids
        return ids

    def encode(self, text):
        ids = []
        for word in re.findall(PRETOKENIZE, text):
            ids.extend(self.encode_word(word))
        return ids

    def decode(self, ids):
        return b"".join(self.id_to_bytes.get(i, b"") for i in ids).decode("utf-8", errors="replace")


def write_tokenizer_json(path, vocab, merges):
    added = [
        {"id": BOS, "content": "<s>", "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True},
        {"id": EOS, "content": "</s>", "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True},
    ]
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": PRETOKENIZE}, "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
            ],
        },
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
            "vocab": vocab, "merges": [f"{a} {b}" for a, b in merges],
        },
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(tokenizer, f, ensure_ascii=False, indent=1)


# ----------------------------------------------------------------------------------------------------------------- model

class RMSNorm(nn.Module):
    def __init__(self, size, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        h, hd = c["hidden_size"], c["head_dim"]
        self.heads, self.kv_heads, self.head_dim = c["num_attention_heads"], c["num_key_value_heads"], hd
        self.input_layernorm = RMSNorm(h, c["rms_norm_eps"])
        self.post_attention_layernorm = RMSNorm(h, c["rms_norm_eps"])
        self.q_proj = nn.Linear(h, self.heads * hd, bias=False)
        self.k_proj = nn.Linear(h, self.kv_heads * hd, bias=False)
        self.v_proj = nn.Linear(h, self.kv_heads * hd, bias=False)
        self.o_proj = nn.Linear(self.heads * hd, h, bias=False)
        self.gate_proj = nn.Linear(h, c["intermediate_size"], bias=False)
        self.up_proj = nn.Linear(h, c["intermediate_size"], bias=False)
        self.down_proj = nn.Linear(c["intermediate_size"], h, bias=False)

    def forward(self, x, cos, sin, mask):
        b, t, _ = x.shape
        n = self.input_layernorm(x)
        q = self.q_proj(n).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(n).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(n).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        group = self.heads // self.kv_heads
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim) + mask
        attn = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, -1)
        x = x + self.o_proj(attn)
        n = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(n)) * self.up_proj(n))


class Llama(nn.Module):
    def __init__(self, c, exits):
        super().__init__()
        self.c, self.exits = c, exits
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList([Layer(c) for _ in range(c["num_hidden_layers"])])
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.exit_norms = nn.ModuleDict({str(l): RMSNorm(c["hidden_size"], c["rms_norm_eps"]) for l in exits})
        inv = 1.0 / (c["rope_theta"] ** (torch.arange(0, c["head_dim"], 2).float() / c["head_dim"]))
        self.register_buffer("inv_freq", inv, persistent=False)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)
        for layer in self.layers:
            nn.init.normal_(layer.o_proj.weight, std=0.02 / math.sqrt(2 * len(self.layers)))
            nn.init.normal_(layer.down_proj.weight, std=0.02 / math.sqrt(2 * len(self.layers)))
        # Each exit head: h + P·h, its own RMSNorm, the shared LM head. P starts at zero and is trained only in the
        # exit-head phase (the body's phase leaves it at zero).
        self.exit_projs = nn.ModuleDict({str(l): nn.Linear(c["hidden_size"], c["hidden_size"], bias=False) for l in exits})
        for proj in self.exit_projs.values():
            nn.init.zeros_(proj.weight)
            proj.weight.requires_grad_(False)

    def head(self, h, norm):
        return norm(h) @ self.embed_tokens.weight.t()

    def exit_head(self, h, layer):
        return self.head(h + self.exit_projs[str(layer)](h), self.exit_norms[str(layer)])

    def hidden_states(self, ids, upto):
        """The hidden state after each of the first `upto` layers (for the exit-head phase)."""
        cos, sin, mask = self.rope(ids.shape[1])
        x = self.embed_tokens(ids)
        states = {}
        for i, layer in enumerate(self.layers[:upto]):
            x = layer(x, cos, sin, mask)
            states[i + 1] = x
        return states

    def rope(self, t):
        freqs = torch.outer(torch.arange(t, dtype=torch.float32), self.inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos()[None, None], emb.sin()[None, None], torch.full((t, t), float("-inf")).triu(1)

    def forward(self, ids):
        cos, sin, mask = self.rope(ids.shape[1])
        x = self.embed_tokens(ids)
        exit_logits = {}
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, mask)
            if (i + 1) in self.exits:
                exit_logits[i + 1] = self.exit_head(x, i + 1)
        return self.head(x, self.norm), exit_logits


def config(layers, hidden, heads, kv_heads, intermediate, vocab, max_positions, exits):
    c = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "hidden_size": hidden, "intermediate_size": intermediate, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv_heads, "head_dim": hidden // heads,
        "vocab_size": vocab, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "rope_scaling": None,
        "tie_word_embeddings": True, "max_position_embeddings": max_positions,
        "attention_bias": False, "mlp_bias": False, "bos_token_id": BOS, "eos_token_id": EOS, "torch_dtype": "float16",
    }
    if exits:
        c["specedge_exits"] = exits
    return c


# ------------------------------------------------------------------------------------------------------------- training

def batches(data, batch, seq, rng):
    while True:
        starts = rng.integers(0, len(data) - seq - 1, size=batch)
        x = np.stack([data[s:s + seq] for s in starts])
        y = np.stack([data[s + 1:s + seq + 1] for s in starts])
        yield torch.from_numpy(x).long(), torch.from_numpy(y).long()


def evaluate(model, data, seq, bytes_per_token, exits=()):
    """Held-out bits per byte of the final head (and each exit), over non-overlapping windows."""
    model.eval()
    totals = {"final": 0.0, **{l: 0.0 for l in exits}}
    count = 0
    with torch.no_grad():
        for s in range(0, len(data) - seq - 1, seq * 2):
            x = torch.from_numpy(data[s:s + seq][None]).long()
            y = torch.from_numpy(data[s + 1:s + seq + 1][None]).long()
            logits, exit_logits = model(x)
            totals["final"] += F.cross_entropy(logits[0], y[0], reduction="sum").item()
            for l in exits:
                totals[l] += F.cross_entropy(exit_logits[l][0], y[0], reduction="sum").item()
            count += seq
    model.train()
    return {k: v / count / math.log(2) / bytes_per_token for k, v in totals.items()}


def optimizer_for(params, lr, steps):
    """AdamW with warm-up and cosine decay to a tenth of the peak."""
    optimizer = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    warmup = max(1, steps // 20)
    schedule = lambda step: min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps)))
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def kl_from(teacher_logprobs, logits):
    """KL(teacher ‖ student) per position, averaged."""
    return F.kl_div(F.log_softmax(logits, -1).reshape(-1, logits.shape[-1]), teacher_logprobs.reshape(-1, logits.shape[-1]), log_target=True, reduction="batchmean")


def train(name, model, data, held_out, bytes_per_token, steps, lr, batch, seq, seed, exit_weight, log, teacher=None, kl_weight=0.9):
    """Trains `model` on next-token cross-entropy; exit heads add exit_weight × their cross-entropy. With a teacher
    (a TeacherCache), the loss is (1 - kl_weight) × cross-entropy + kl_weight × KL from the teacher's distribution."""
    rng = np.random.default_rng(seed)
    optimizer, scheduler = optimizer_for([p for p in model.parameters() if p.requires_grad], lr, steps)
    curve = []
    start = time.time()
    it = batches(data, batch, seq, rng) if teacher is None else teacher.batches(batch, rng)
    for step in range(steps):
        if teacher is None:
            x, y = next(it)
        else:
            x, y, teacher_logprobs = next(it)
        logits, exit_logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        total = loss if teacher is None else (1 - kl_weight) * loss + kl_weight * kl_from(teacher_logprobs, logits)
        for l, el in exit_logits.items():
            total = total + exit_weight * F.cross_entropy(el.reshape(-1, el.shape[-1]), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        if step % 25 == 0 or step == steps - 1:
            point = {"step": step, "train_bits_per_byte": loss.item() / math.log(2) / bytes_per_token, "seconds": round(time.time() - start, 1)}
            if step % 250 == 0 or step == steps - 1:
                point["held_out"] = evaluate(model, held_out, seq, bytes_per_token, model.exits)
            curve.append(point)
            log(f"[{name}] step {step}/{steps} train {point['train_bits_per_byte']:.3f} bpb" + (f", held-out {point['held_out']['final']:.3f} bpb" if "held_out" in point else "") + f", {point['seconds']} s")
    return curve, time.time() - start


class TeacherCache:
    """The target's next-token log-probabilities over the training text, computed once (float16, in windows of `seq`
    tokens), so distillation does not run the target at every step: about three times faster per draft step here."""

    def __init__(self, teacher, data, seq, log):
        n = (len(data) - 1) // seq
        self.x = torch.from_numpy(data[:n * seq].reshape(n, seq)).long()
        self.y = torch.from_numpy(data[1:n * seq + 1].reshape(n, seq)).long()
        self.logprobs = torch.empty((n, seq, teacher.c["vocab_size"]), dtype=torch.float16)
        began = time.time()
        with torch.no_grad():
            for i in range(0, n, 16):
                logits, _ = teacher(self.x[i:i + 16])
                self.logprobs[i:i + 16] = F.log_softmax(logits, -1).half()
        log(f"teacher cache: {n} windows of {seq} tokens, {self.logprobs.numel() * 2 / 2**30:.1f} GiB, {time.time() - began:.0f} s")

    def batches(self, batch, rng):
        while True:
            rows = torch.from_numpy(rng.integers(0, len(self.x), size=batch))
            yield self.x[rows], self.y[rows], self.logprobs[rows].float()


def train_exit_heads(target, cache, held_out, seq, steps, lr, batch, seed, log):
    """Trains each exit's projection and norm (the body and LM head frozen) on KL from the target's own final
    distribution: an exit is useful when it agrees with the final verdict, so it learns the final head, not the text."""
    for p in target.parameters():
        p.requires_grad_(False)
    params = []
    for l in target.exits:
        for p in (target.exit_projs[str(l)].weight, target.exit_norms[str(l)].weight):
            p.requires_grad_(True)
            params.append(p)
    rng = np.random.default_rng(seed)
    optimizer, scheduler = optimizer_for(params, lr, steps)
    curve = []
    start = time.time()
    it = cache.batches(batch, rng)
    deepest = max(target.exits)
    for step in range(steps):
        x, _, teacher_logprobs = next(it)
        with torch.no_grad():
            states = target.hidden_states(x, deepest)
        total = sum(kl_from(teacher_logprobs, target.exit_head(states[l], l)) for l in target.exits)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        scheduler.step()
        if step % 25 == 0 or step == steps - 1:
            point = {"step": step, "kl": total.item() / len(target.exits), "seconds": round(time.time() - start, 1)}
            if step % 100 == 0 or step == steps - 1:
                point["held_out_agreement"] = agreement(target, held_out, seq)
            curve.append(point)
            log(f"[exits] step {step}/{steps} KL {point['kl']:.3f}" + (f", held-out argmax agreement with the final head {point['held_out_agreement']}" if "held_out_agreement" in point else "") + f", {point['seconds']} s")
    for p in params:
        p.requires_grad_(False)
    return curve, time.time() - start


def agreement(target, data, seq, draft=None):
    """How often each exit's (or the draft's) next-token argmax equals the target's final head's, on held-out text."""
    same, count = Counter(), 0
    with torch.no_grad():
        for s in range(0, len(data) - seq - 1, seq * 2):
            x = torch.from_numpy(data[s:s + seq][None]).long()
            logits, exit_logits = target(x)
            final = logits.argmax(-1)
            if draft is None:
                for l, el in exit_logits.items():
                    same[str(l)] += (el.argmax(-1) == final).sum().item()
            else:
                same["draft"] += (draft(x)[0].argmax(-1) == final).sum().item()
            count += final.numel()
    return {k: round(v / count, 4) for k, v in same.items()}


def round_to_float16(model):
    """The checkpoints are stored in float16; everything trained after the target learns from the target as stored."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())


# ------------------------------------------------------------------------------------------------------------ writing

def save_safetensors(path, tensors, dtype):
    header, offset, blobs = {"__metadata__": {"format": "pt"}}, 0, []
    for name, t in tensors.items():
        array = t.detach().to(dtype).contiguous().numpy()
        blob = array.tobytes()
        header[name] = {"dtype": {torch.float16: "F16", torch.float32: "F32"}[dtype], "shape": list(array.shape), "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for blob in blobs:
            f.write(blob)


def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        raw = f.read()
    dtypes = {"F16": np.float16, "F32": np.float32}
    return {name: torch.from_numpy(np.frombuffer(raw[m["data_offsets"][0]:m["data_offsets"][1]], dtype=dtypes[m["dtype"]]).reshape(m["shape"]).astype(np.float32))
            for name, m in header.items() if name != "__metadata__"}


def load_target(folder, model, tokenizer_json):
    """Loads a target saved by this recipe (--target-from): same architecture and tokenizer, or a clear error."""
    for f in ("config.json", "model.safetensors", "tokenizer.json"):
        if not os.path.isfile(os.path.join(folder, f)):
            sys.exit(f"train.py: error: --target-from: '{os.path.join(folder, f)}' not found; give the target folder of an earlier run")
    with open(os.path.join(folder, "config.json")) as f:
        if json.load(f) != model.c:
            sys.exit(f"train.py: error: --target-from: {folder}/config.json is not the configuration this recipe trains")
    with open(os.path.join(folder, "tokenizer.json")) as f, open(tokenizer_json) as g:
        if json.load(f)["model"] != json.load(g)["model"]:
            sys.exit(f"train.py: error: --target-from: {folder}/tokenizer.json differs from the tokenizer this corpus gives")
    tensors = load_safetensors(os.path.join(folder, "model.safetensors"))
    adapters = os.path.join(folder, "exit_adapters.safetensors")
    if os.path.isfile(adapters):
        tensors.update(load_safetensors(adapters))
    with torch.no_grad():
        for name, t in saved_tensors(model).items():
            if name in tensors:
                t.copy_(tensors[name])
            elif not name.endswith("proj.weight") or not name.startswith("exits."):
                sys.exit(f"train.py: error: --target-from: tensor '{name}' is missing in {folder}")


def saved_tensors(model):
    """The tensors of a checkpoint, by Hugging Face name (exit heads under exits.{L}.)."""
    tensors = {"model.embed_tokens.weight": model.embed_tokens.weight, "model.norm.weight": model.norm.weight}
    for i, layer in enumerate(model.layers):
        p = f"model.layers.{i}."
        tensors[p + "input_layernorm.weight"] = layer.input_layernorm.weight
        tensors[p + "post_attention_layernorm.weight"] = layer.post_attention_layernorm.weight
        for part in ("q_proj", "k_proj", "v_proj", "o_proj"):
            tensors[p + f"self_attn.{part}.weight"] = getattr(layer, part).weight
        for part in ("gate_proj", "up_proj", "down_proj"):
            tensors[p + f"mlp.{part}.weight"] = getattr(layer, part).weight
    for l in model.exits:
        tensors[f"exits.{l}.norm.weight"] = model.exit_norms[str(l)].weight
        tensors[f"exits.{l}.proj.weight"] = model.exit_projs[str(l)].weight
    return tensors


def save_model(folder, model, c, tokenizer_json):
    os.makedirs(folder)
    tensors = saved_tensors(model)
    save_safetensors(os.path.join(folder, "model.safetensors"), {k: v for k, v in tensors.items() if not k.startswith("exits.")}, torch.float16)
    if model.exits:
        save_safetensors(os.path.join(folder, "exit_adapters.safetensors"), {k: v for k, v in tensors.items() if k.startswith("exits.")}, torch.float16)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(c, f, indent=2)
    shutil.copy(tokenizer_json, os.path.join(folder, "tokenizer.json"))


def plot(path, curves, exit_curve):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [2, 1]})
    for name, curve in curves.items():
        ax.plot([p["step"] for p in curve], [p["train_bits_per_byte"] for p in curve], label=f"{name} train", alpha=0.6)
        held = [p for p in curve if "held_out" in p]
        ax.plot([p["step"] for p in held], [p["held_out"]["final"] for p in held], "o-", label=f"{name} held-out")
        for key in (held[-1]["held_out"].keys() if held else []):
            if key != "final":
                ax.plot([p["step"] for p in held], [p["held_out"][key] for p in held], "x--", label=f"{name} exit {key} held-out")
    ax.set_xlabel("step")
    ax.set_ylabel("bits per byte")
    ax.set_ylim(0.8, 5)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Target and draft (KJV corpus)")
    held = [p for p in exit_curve if "held_out_agreement" in p]
    for key in (held[-1]["held_out_agreement"].keys() if held else []):
        bx.plot([p["step"] for p in held], [p["held_out_agreement"][key] for p in held], "o-", label=f"exit after layer {key}")
    bx.set_xlabel("exit-head step")
    bx.set_ylabel("held-out argmax agreement with the final head")
    bx.grid(alpha=0.3)
    bx.legend()
    bx.set_title("Exit heads (distilled from the final head)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


# --------------------------------------------------------------------------------------------------------------- main

def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
    parser.add_argument("--corpus", help="a KJV text file in `bible -l0` format (default: run Debian's `bible` program)")
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--target-steps", type=int, default=1200)
    parser.add_argument("--exit-steps", type=int, default=600, help="steps of the exit-head phase (KL from the final head)")
    parser.add_argument("--draft-steps", type=int, default=3000)
    parser.add_argument("--no-distill", action="store_true", help="train the draft on the corpus alone, not distilled from the target")
    parser.add_argument("--kl-weight", type=float, default=0.9, help="share of the draft's loss that is KL from the target (the rest: cross-entropy)")
    parser.add_argument("--target-from", help="skip the target's body phase: load the target folder of an earlier run of this recipe (same seed, same result)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=2025)
    args = parser.parse_args()

    if os.path.exists(args.out) and (not os.path.isdir(args.out) or os.listdir(args.out)):
        sys.exit(f"train.py: error: output folder '{args.out}' already holds files; give a new or empty folder")
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(args.threads)
    began = time.time()
    log = lambda message: print(message, flush=True)

    chapters = read_corpus(args.corpus)
    held_out_chapters = chapters[::50]
    train_chapters = [c for i, c in enumerate(chapters) if i % 50 != 0]
    train_text = "\n".join("\n".join(c) for c in train_chapters) + "\n"
    held_text = "\n".join("\n".join(c) for c in held_out_chapters) + "\n"
    log(f"corpus: {len(chapters)} chapters, {len(train_text)} training bytes, {len(held_text)} held-out bytes")

    vocab, merges = train_bpe(train_text, args.vocab)
    tokenizer = Tokenizer(vocab, merges)
    os.makedirs(args.out, exist_ok=True)
    staging = os.path.join(args.out, ".tokenizer.json")
    write_tokenizer_json(staging, vocab, merges)
    train_ids = np.array(tokenizer.encode(train_text), dtype=np.int64)
    held_ids = np.array(tokenizer.encode(held_text), dtype=np.int64)
    assert tokenizer.decode(tokenizer.encode(held_text[:5000])) == held_text[:5000]
    bytes_per_token = len(held_text.encode()) / len(held_ids)
    log(f"tokenizer: {len(vocab) + 2} tokens, {len(merges)} merges, {bytes_per_token:.2f} bytes per token; {len(train_ids)} training tokens")

    target_config = config(6, 256, 4, 2, 768, len(vocab) + 2, 1024, [2, 4])
    draft_config = config(2, 128, 2, 1, 384, len(vocab) + 2, 1024, [])
    target = Llama(target_config, [2, 4])
    draft = Llama(draft_config, [])
    log(f"target: {sum(p.numel() for p in target.parameters()) / 1e6:.2f} M parameters; draft: {sum(p.numel() for p in draft.parameters()) / 1e6:.2f} M")

    if args.target_from:
        load_target(args.target_from, target, staging)
        prior = os.path.join(os.path.dirname(os.path.abspath(args.target_from)), "training.json")
        prior = json.load(open(prior)) if os.path.isfile(prior) else {}
        target_curve, target_seconds = prior.get("curves", {}).get("target", []), prior.get("wall_seconds", {}).get("target", 0)
        log(f"target: loaded from {args.target_from} (trained in {target_seconds} s by an earlier run)")
    else:
        target_curve, target_seconds = train("target", target, train_ids, held_ids, bytes_per_token, args.target_steps, 3e-3, args.batch, args.seq, args.seed, 0.5, log)
    round_to_float16(target)
    target.eval()
    for p in target.parameters():
        p.requires_grad_(False)

    cache = TeacherCache(target, train_ids, args.seq, log) if args.exit_steps > 0 or not args.no_distill else None
    began_exits = time.time()
    exit_curve, _ = train_exit_heads(target, cache, held_ids, args.seq, args.exit_steps, 2e-3, args.batch, args.seed + 2, log) if args.exit_steps > 0 else ([], 0)
    round_to_float16(target)
    exit_seconds = time.time() - began_exits
    draft_curve, draft_seconds = train("draft", draft, train_ids, held_ids, bytes_per_token, args.draft_steps, 5e-3, args.batch, args.seq, args.seed + 1, 0.0, log, teacher=None if args.no_distill else cache, kl_weight=args.kl_weight)
    round_to_float16(draft)
    draft.eval()
    agreements = {**agreement(target, held_ids, args.seq), **agreement(target, held_ids, args.seq, draft)}
    log(f"held-out argmax agreement with the target's final head: {agreements}")
    final_held_out = evaluate(target, held_ids, args.seq, bytes_per_token, target.exits)

    with open(os.path.join(args.out, "heldout.txt"), "w", encoding="utf-8") as f:
        f.write(held_text)
    save_model(os.path.join(args.out, "target"), target, target_config, staging)
    save_model(os.path.join(args.out, "draft"), draft, draft_config, staging)
    os.remove(staging)
    plot(os.path.join(args.out, "loss_curves.png"), {"target": target_curve, "draft": draft_curve}, exit_curve)
    summary = {
        "corpus": "King James Version of the Bible (1611), public domain; from Debian's bible-kjv / bible-kjv-text packages",
        "held_out": "every 50th chapter",
        "draft_distilled": not args.no_distill,
        "bytes_per_token": bytes_per_token,
        "args": vars(args),
        "torch": torch.__version__,
        "target_from": args.target_from,
        "wall_seconds": {"target": round(target_seconds), "exit_heads": round(exit_seconds), "draft": round(draft_seconds), "total": round(time.time() - began + (target_seconds if args.target_from else 0))},
        "held_out_bits_per_byte": {"target": final_held_out, "draft": draft_curve[-1]["held_out"]["final"]},
        "held_out_argmax_agreement_with_final_head": agreements,
        "curves": {"target": target_curve, "exit_heads": exit_curve, "draft": draft_curve},
    }
    with open(os.path.join(args.out, "training.json"), "w") as f:
        json.dump(summary, f, indent=1)
    log(f"done in {time.time() - began:.0f} s: {args.out}")


if __name__ == "__main__":
    main()
