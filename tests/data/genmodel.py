#!/usr/bin/python3
"""Deterministic generator of llama-shaped checkpoints in safetensors format.

Why this exists: deltafs must be tested and benchmarked on models of real shape and size (a few MB
for unit and mount tests, ~1 GB for benchmarks, LLaMA-7B size for the full-scale run) without
downloading weights.  The statistics matter as much as the shapes, since the codecs exploit them:

  base      W[r,c] = sigma_t * row[r] * col[c] * z[r,c],   z ~ N(0,1)
            sigma_t ~ 0.02 (jittered per matrix), row[] lognormal (rows differ by ~2x), col[] = 1
            except a few outlier input channels scaled 3-8x; layer norms near 1.0.
  fine-tune W_ft = W + dW, dW[r,c] = k * layer_t * drow[r] * rms(W_t) * z'[r,c]: dense and small,
            larger in later layers (layer_t from 0.5 to 1.5) and varying per row (drow lognormal).
            k is solved from the expected norms so that ||dW|| / ||W|| over the whole model equals
            --delta.  After rounding to BF16 many of these small deltas vanish, as in real fine-tunes;
            the realised figures are reported on stderr.
  --lora R  a merged LoRA fine-tune instead: every matrix's dW = k * layer_t * rms(W_t) * (c B A
            + 0.02 z'), B [out, R] and A [R, in] N(0,1), c normalising ||c B A||^2 to the matrix's
            element count exactly, so the dense noise z' is 2% of the low-rank part's norm (a
            merged adapter is never exactly low-rank once trained in, nor after rounding).  1-D
            tensors (the norms) get no delta, as LoRA leaves them frozen; k still makes ||dW||/||W||
            over the whole model (norms included in ||W||) equal --delta.

Determinism: every random stream is a numpy PCG64 seeded from sha256(role, seed, tensor name) and,
for the bulk values, the index of a fixed-size chunk of rows.  So a tensor's bytes depend only on
(seed, name, shape), never on tensor order, thread count or timing; the base of a fine-tune is
regenerated bit-identically from its seed, which is what makes `--seed 1` and `--seed 1
--finetune 7` a base/fine-tune pair.  The LoRA product B A is summed one rank at a time with
elementwise float32 multiply-adds rather than a BLAS matmul, whose rounding may vary with the
machine's kernels, so a --lora fine-tune is bit-identical everywhere too.

Speed and memory: the model is produced chunk by chunk (a few million elements each) on a thread
pool (numpy releases the GIL inside its generators and ufuncs) and written in order through a small
window of in-flight chunks, so memory stays ~100 MB whatever the model size.

Format written by hand (no safetensors package): u64 little-endian header length, JSON header
(with "__metadata__": {"format": "pt"} as torch writers emit it) padded with spaces to a multiple of
8, then the tensors contiguous in the header's order.  BF16 is rounded from f32 to nearest-even on
the bit pattern with uint32 arithmetic, so the values are exactly what a correct converter yields.
"""

import argparse
import concurrent.futures
import hashlib
import json
import os
import struct
import sys
import time

import numpy as np

PRESETS = {
    # ~4.2 MB in BF16: big enough for multi-chunk tensors and 3 shards, generated in well under 1 s.
    "tiny": dict(hidden=256, intermediate=688, layers=2, heads=4, vocab=1024),
    # 536M parameters = 1.07e9 bytes in BF16 (1.0 GiB): 8 layers of a 2048-wide model.
    "1g": dict(hidden=2048, intermediate=5504, layers=8, heads=16, vocab=32000),
    # LLaMA-7B: 6.74e9 parameters, 13.5 GB in BF16.
    "7b": dict(hidden=4096, intermediate=11008, layers=32, heads=32, vocab=32000),
}

DTYPES = {"BF16": 2, "F16": 2, "F32": 4}

# Rows per chunk are chosen so a chunk holds about this many elements: large enough that numpy's
# per-call overhead vanishes, small enough that a few chunks in flight stay cheap in memory.
CHUNK_ELEMS = 1 << 22

EPILOG = """
examples:
  # tests: a tiny model as a Hugging Face directory in 3 shards (with config and tokenizer)
  genmodel.py --preset tiny --hf-dir /tmp/tiny --shards 3

  # benchmarks: a ~1 GB base and a fine-tune of it (delta 1%% of the weights' norm)
  genmodel.py --preset 1g --seed 1 --out base.safetensors
  genmodel.py --preset 1g --seed 1 --finetune 7 --delta 0.01 --out ft.safetensors

  # a merged rank-16 LoRA fine-tune of the same base (matrices only, norms unchanged)
  genmodel.py --preset 1g --seed 1 --finetune 7 --lora 16 --out lora.safetensors

  # LLaMA-7B shapes (13.5 GB), overriding the depth; F16 instead of BF16
  genmodel.py --preset 7b --layers 4 --dtype F16 --out small7b.safetensors

presets (overridable with --hidden/--intermediate/--layers/--heads/--kv-heads/--vocab):
  tiny  hidden 256,  intermediate 688,   2 layers,  4 heads, vocab 1024   (~4.2 MB BF16)
  1g    hidden 2048, intermediate 5504,  8 layers, 16 heads, vocab 32000  (~1.07 GB BF16)
  7b    hidden 4096, intermediate 11008, 32 layers, 32 heads, vocab 32000 (~13.5 GB BF16)

output: same arguments give byte-identical files.  Files are written to NAME.tmp and renamed, so a
file that exists is complete.  Progress, GB/s of generation and (for fine-tunes) the realised
||dW||/||W|| after rounding and the fraction of elements changed go to stderr.
"""


def tensor_specs(cfg):
    """(name, shape) in the order of a Hugging Face LLaMA state dict."""
    h, inter, v = cfg["hidden"], cfg["intermediate"], cfg["vocab"]
    kv = cfg["kv_heads"] * (h // cfg["heads"])
    specs = [("model.embed_tokens.weight", (v, h))]
    for n in range(cfg["layers"]):
        p = f"model.layers.{n}."
        specs += [
            (p + "self_attn.q_proj.weight", (h, h)),
            (p + "self_attn.k_proj.weight", (kv, h)),
            (p + "self_attn.v_proj.weight", (kv, h)),
            (p + "self_attn.o_proj.weight", (h, h)),
            (p + "mlp.gate_proj.weight", (inter, h)),
            (p + "mlp.up_proj.weight", (inter, h)),
            (p + "mlp.down_proj.weight", (h, inter)),
            (p + "input_layernorm.weight", (h,)),
            (p + "post_attention_layernorm.weight", (h,)),
        ]
    specs += [("model.norm.weight", (h,)), ("lm_head.weight", (v, h))]
    return specs


def rng_for(role, seed, name, chunk=None):
    """An independent PCG64 stream per (role, seed, tensor name[, chunk])."""
    digest = hashlib.sha256(f"{role}\0{seed}\0{name}".encode()).digest()
    entropy = [int.from_bytes(digest[i:i + 8], "little") for i in range(0, 32, 8)]
    key = () if chunk is None else (chunk,)
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy, spawn_key=key)))


def layer_position(name, layers):
    """0..1 depth of a tensor: embeddings first, final norm and head last."""
    if name.startswith("model.layers."):
        n = int(name.split(".")[2])
        return n / max(1, layers - 1)
    return 0.0 if name.startswith("model.embed_tokens") else 1.0


class BaseTensor:
    """Per-tensor scales of the base: cheap (one value per row or column) and needed before any
    chunk, both to generate and to predict the tensor's norm."""

    def __init__(self, seed, name, shape):
        self.name, self.shape = name, shape
        g = rng_for("base-meta", seed, name)
        if len(shape) == 1:
            # Norm weights: near 1.0, a little spread, slightly higher deeper in the network as in
            # trained LLaMA checkpoints.
            self.center = 1.0 + 0.1 * g.random()
            self.spread = 0.05
            self.expected_sq = shape[0] * (self.center ** 2 + self.spread ** 2)
            return
        rows, cols = shape
        self.sigma = 0.02 * float(np.exp(g.normal(0.0, 0.15)))
        # lognormal sigma 0.35: one standard deviation either side is a factor exp(0.7) ~ 2.
        row = np.exp(g.normal(0.0, 0.35, rows)).astype(np.float32)
        row /= np.sqrt(np.mean(row.astype(np.float64) ** 2))
        self.row = row * np.float32(self.sigma)
        col = np.ones(cols, np.float32)
        n_out = max(1, cols // 512)
        idx = g.choice(cols, n_out, replace=False)
        col[idx] = g.uniform(3.0, 8.0, n_out).astype(np.float32)
        self.col = col
        self.expected_sq = float(np.sum(self.row.astype(np.float64) ** 2)) * \
            float(np.sum(col.astype(np.float64) ** 2))

    def rows_per_chunk(self):
        if len(self.shape) == 1:
            return self.shape[0]
        return max(1, CHUNK_ELEMS // self.shape[1])

    def n_chunks(self):
        return -(-self.shape[0] // self.rows_per_chunk())

    def chunk(self, seed, i):
        rpc = self.rows_per_chunk()
        shape = self.shape if len(self.shape) == 1 else \
            (min(rpc, self.shape[0] - i * rpc), self.shape[1])
        z = rng_for("base", seed, self.name, i).standard_normal(shape, dtype=np.float32)
        if len(self.shape) == 1:
            z *= np.float32(self.spread)
            z += np.float32(self.center)
            return z
        z *= self.row[i * rpc:i * rpc + z.shape[0], None]
        z *= self.col[None, :]
        return z


# --lora: the dense noise added to the merged low-rank product, relative to its norm.
LORA_NOISE = 0.02


class DeltaTensor:
    """Per-tensor scales of a fine-tune's delta: rms(dW_t) = k * layer_t * rms(W_t), per row drow;
    with lora (a rank), a matrix's factors B and A instead, and no delta on 1-D tensors."""

    def __init__(self, ft_seed, base, layers, lora=None):
        self.name, self.shape = base.name, base.shape
        g = rng_for("delta-meta", ft_seed, base.name)
        self.layer = 0.5 + layer_position(base.name, layers)
        size = int(np.prod(base.shape))
        self.rms_w = np.sqrt(base.expected_sq / size)
        self.frozen = lora is not None and len(base.shape) == 1
        self.lora_b = None
        if lora is not None and not self.frozen:
            rows, cols = base.shape
            b = g.standard_normal((rows, lora), dtype=np.float32)
            a = g.standard_normal((lora, cols), dtype=np.float32)
            # ||B A||_F^2 = trace((B^T B)(A A^T)), exact in float64 at the cost of two R x R Grams.
            bb, aa = b.T.astype(np.float64) @ b, a.astype(np.float64) @ a.T
            b *= np.float32(np.sqrt(size / np.sum(bb * aa)))
            self.lora_b, self.lora_a = b, a
        else:
            drow = np.exp(g.normal(0.0, 0.5, base.shape[0])).astype(np.float32)
            drow /= np.sqrt(np.mean(drow.astype(np.float64) ** 2))
            self.drow = drow
        self.k = None  # set once the whole model's norms are known (solve_delta_scale)

    def unscaled_sq(self):
        if self.frozen:
            return 0.0
        noise = 1.0 + LORA_NOISE ** 2 if self.lora_b is not None else 1.0
        return (self.layer * self.rms_w) ** 2 * int(np.prod(self.shape)) * noise

    def chunk(self, ft_seed, i, rows_per_chunk):
        n = min(rows_per_chunk, self.shape[0] - i * rows_per_chunk)
        shape = (n,) if len(self.shape) == 1 else (n, self.shape[1])
        if self.frozen:
            return np.zeros(shape, np.float32)
        d = rng_for("delta", ft_seed, self.name, i).standard_normal(shape, dtype=np.float32)
        scale = np.float32(self.k * self.layer * self.rms_w)
        if self.lora_b is not None:
            d *= np.float32(LORA_NOISE) * scale
            b = self.lora_b[i * rows_per_chunk:i * rows_per_chunk + n] * scale
            term = np.empty_like(d)
            for r in range(b.shape[1]):
                np.multiply(b[:, r, None], self.lora_a[r], out=term)
                d += term
            return d
        rows = self.drow[i * rows_per_chunk:i * rows_per_chunk + n] * scale
        if len(self.shape) == 1:
            d *= rows
        else:
            d *= rows[:, None]
        return d


def solve_delta_scale(bases, deltas, rel):
    """k such that sum ||dW_t||^2 = rel^2 * sum ||W_t||^2 in expectation."""
    w_sq = sum(b.expected_sq for b in bases)
    d_sq = sum(d.unscaled_sq() for d in deltas)
    k = rel * np.sqrt(w_sq / d_sq)
    for d in deltas:
        d.k = float(k)


def to_storage(x, dtype):
    """f32 array -> little-endian array of the storage dtype (x may be clobbered)."""
    if dtype == "F32":
        return x.astype("<f4", copy=False)
    if dtype == "F16":
        return x.astype("<f2")
    # BF16, round to nearest even: add 0x7FFF plus the lowest kept bit, then truncate.
    u = x.view(np.uint32)
    t = u >> np.uint32(16)
    t &= np.uint32(1)
    t += np.uint32(0x7FFF)
    t += u
    t >>= np.uint32(16)
    return t.astype("<u2")


def from_storage(a, dtype):
    if dtype == "BF16":
        return (a.astype(np.uint32) << np.uint32(16)).view(np.float32)
    return a.astype(np.float32)


def make_job(args, base, delta, i):
    """Work for one chunk, run on the pool: returns (bytes-like array, stats or None)."""
    w = base.chunk(args.seed, i)
    if delta is None:
        return to_storage(w, args.dtype), None
    d = delta.chunk(args.finetune, i, base.rows_per_chunk())
    ft = to_storage(w + d, args.dtype)
    b = to_storage(w, args.dtype)
    changed = int(np.count_nonzero(ft != b))
    bf = from_storage(b, args.dtype).ravel()
    diff = from_storage(ft, args.dtype).ravel() - bf
    d = d.ravel()
    w = w.ravel()
    stats = (float(np.dot(bf, bf)), float(np.dot(diff, diff)),
             float(np.dot(w, w)), float(np.dot(d, d)), changed)
    return ft, stats


def safetensors_header(specs, dtype):
    esize = DTYPES[dtype]
    hdr = {"__metadata__": {"format": "pt"}}
    off = 0
    for name, shape in specs:
        n = int(np.prod(shape)) * esize
        hdr[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    raw = json.dumps(hdr, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


class Progress:
    def __init__(self, total, quiet):
        self.total, self.quiet, self.done = total, quiet, 0
        self.t0 = time.monotonic()
        self.last = self.t0
        self.stats = [0.0, 0.0, 0.0, 0.0, 0]

    def add(self, nbytes, stats):
        self.done += nbytes
        if stats:
            for j, s in enumerate(stats):
                self.stats[j] += s
        now = time.monotonic()
        if not self.quiet and sys.stderr.isatty() and now - self.last > 2.0:
            self.last = now
            print(f"\r  {self.done / 1e9:6.2f} / {self.total / 1e9:.2f} GB "
                  f"({self.done / 1e9 / (now - self.t0):.2f} GB/s)", end="", file=sys.stderr)


def write_safetensors(path, entries, args, pool, progress):
    """entries: [(BaseTensor, DeltaTensor|None)] in file order; writes path atomically."""
    header = safetensors_header([(b.name, b.shape) for b, _ in entries], args.dtype)
    jobs = [(b, d, i) for b, d in entries for i in range(b.n_chunks())]
    window = 2 * args.jobs
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(header)
        pending = []
        for job in jobs:
            pending.append(pool.submit(make_job, args, *job))
            if len(pending) > window:
                arr, stats = pending.pop(0).result()
                f.write(memoryview(arr).cast("B"))
                progress.add(arr.nbytes, stats)
        for fut in pending:
            arr, stats = fut.result()
            f.write(memoryview(arr).cast("B"))
            progress.add(arr.nbytes, stats)
    os.replace(tmp, path)


def split_shards(specs, esize, n):
    """Assign each tensor (in order) to the shard holding the midpoint of its bytes, like HF's
    size-based sharding but with exactly n shards."""
    sizes = [int(np.prod(s)) * esize for _, s in specs]
    total = sum(sizes)
    out, start = [], 0
    for size in sizes:
        out.append(min(n - 1, (start + size // 2) * n // total))
        start += size
    if len(set(out)) != n:
        sys.exit(f"genmodel: cannot split {len(specs)} tensors into {n} non-empty shards")
    return out


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)


SPECIAL = ["<unk>", "<s>", "</s>"]


def synthetic_tokenizer(vocab_size):
    """A LLaMA-like BPE tokenizer.json: special tokens, 256 byte-fallback tokens, single characters,
    then merges of existing tokens into new ones until the vocabulary is full.  The merges are drawn
    from a fixed-seed PCG64 with a bias to short, frequent pieces, so the file looks and sizes like
    a real one (a few MB at 32000) and is identical on every run."""
    vocab = {t: i for i, t in enumerate(SPECIAL)}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    chars = list("\u2581etaoinshrdlcumwfgypbvkjxqzETAOINSHRDLCUMWFGYPBVKJXQZ0123456789"
                 ".,;:!?'\"()-_/[]{}<>=+*&%$#@\u00e9\u00e8\u00e0\u00fc\u00f6\u00e4\u00df")
    for c in chars:
        if len(vocab) < vocab_size:
            vocab[c] = len(vocab)
    tokens = list(vocab)[len(SPECIAL) + 256:]
    # Zipf-like weights over single characters: frequent letters are merged most.
    cw = 1.0 / np.arange(1, len(chars) + 1) ** 1.1
    cw /= cw.sum()
    g = np.random.Generator(np.random.PCG64(np.random.SeedSequence(0x70C)))
    merges = []
    while len(vocab) < vocab_size:
        left_u, right_u, pick = g.random(3)
        # Prefer recent (longer) tokens as the left part sometimes, short ones mostly.
        left = tokens[int(len(tokens) * left_u ** 2.5)]
        right = chars[int(np.searchsorted(np.cumsum(cw), right_u * 0.999999))] \
            if pick < 0.8 else tokens[int(len(tokens) * right_u ** 4)]
        if right.startswith("\u2581") or len(left) + len(right) > 16:
            continue
        new = left + right
        if new in vocab:
            continue
        vocab[new] = len(vocab)
        tokens.append(new)
        merges.append(f"{left} {right}")
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, t in enumerate(SPECIAL)]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
        "pre_tokenizer": None,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<s>", "type_id": 1}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>",
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }


def write_hf_dir(args, cfg, entries, pool, progress):
    d = args.hf_dir
    os.makedirs(d, exist_ok=True)
    esize = DTYPES[args.dtype]
    if args.shards == 1:
        write_safetensors(os.path.join(d, "model.safetensors"), entries, args, pool, progress)
    else:
        owner = split_shards([(b.name, b.shape) for b, _ in entries], esize, args.shards)
        weight_map = {}
        for k in range(args.shards):
            fname = f"model-{k + 1:05d}-of-{args.shards:05d}.safetensors"
            part = [e for e, o in zip(entries, owner) if o == k]
            write_safetensors(os.path.join(d, fname), part, args, pool, progress)
            for b, _ in part:
                weight_map[b.name] = fname
        total = sum(int(np.prod(b.shape)) * esize for b, _ in entries)
        write_json(os.path.join(d, "model.safetensors.index.json"),
                   {"metadata": {"total_size": total},
                    "weight_map": dict(sorted(weight_map.items()))})
    torch_dtype = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}[args.dtype]
    write_json(os.path.join(d, "config.json"), {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": cfg["hidden"],
        "initializer_range": 0.02,
        "intermediate_size": cfg["intermediate"],
        "max_position_embeddings": 4096,
        "model_type": "llama",
        "num_attention_heads": cfg["heads"],
        "num_hidden_layers": cfg["layers"],
        "num_key_value_heads": cfg["kv_heads"],
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": torch_dtype,
        "transformers_version": "4.40.0",
        "use_cache": True,
        "vocab_size": cfg["vocab"],
    })
    write_json(os.path.join(d, "generation_config.json"), {
        "_from_model_config": True, "bos_token_id": 1, "eos_token_id": 2,
        "pad_token_id": 0, "transformers_version": "4.40.0"})
    write_json(os.path.join(d, "tokenizer.json"), synthetic_tokenizer(cfg["vocab"]))
    write_json(os.path.join(d, "tokenizer_config.json"), {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": {str(i): {"content": t, "lstrip": False, "normalized": False,
                                          "rstrip": False, "single_word": False, "special": True}
                                 for i, t in enumerate(SPECIAL)},
        "bos_token": "<s>",
        "clean_up_tokenization_spaces": False,
        "eos_token": "</s>",
        "legacy": False,
        "model_max_length": 4096,
        "pad_token": None,
        "padding_side": "right",
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": "<unk>",
        "use_default_system_prompt": False,
    })
    tok = {"content": None, "lstrip": False, "normalized": False, "rstrip": False,
           "single_word": False}
    write_json(os.path.join(d, "special_tokens_map.json"), {
        key: dict(tok, content=t) for key, t in
        (("bos_token", "<s>"), ("eos_token", "</s>"), ("unk_token", "<unk>"))})


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Deterministic llama-shaped safetensors checkpoints (base or fine-tune).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny",
                   help="model size (default tiny)")
    for opt, what in (("hidden", "hidden size"), ("intermediate", "MLP intermediate size"),
                      ("layers", "number of decoder layers"), ("heads", "attention heads"),
                      ("kv-heads", "key/value heads (GQA; default = heads)"),
                      ("vocab", "vocabulary size")):
        p.add_argument("--" + opt, type=int, help=f"override the preset's {what}")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="BF16",
                   help="element type (default BF16, rounded to nearest even)")
    p.add_argument("--seed", type=int, default=1, help="seed of the base weights (default 1)")
    p.add_argument("--finetune", type=int, metavar="SEED",
                   help="write a fine-tune of the --seed base: W + dW with dW from this seed")
    p.add_argument("--delta", type=float, default=0.01, metavar="REL",
                   help="||dW||/||W|| over the whole model, before rounding (default 0.01)")
    p.add_argument("--lora", type=int, metavar="RANK",
                   help="with --finetune: each matrix's dW is a merged rank-RANK LoRA B A plus 2%% "
                        "dense noise; 1-D tensors unchanged")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", metavar="FILE", help="write one .safetensors file")
    out.add_argument("--hf-dir", metavar="DIR",
                     help="write a Hugging Face model directory: weights, index, config.json, "
                          "generation_config.json, tokenizer files")
    p.add_argument("--shards", type=int, default=1,
                   help="with --hf-dir: number of model-0000K-of-0000N.safetensors files, split "
                        "by size (1 = a single model.safetensors, no index)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="generator threads (default: all cores); does not change the output")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress or summary")
    args = p.parse_args(argv)
    if args.shards < 1 or args.jobs < 1:
        p.error("--shards and --jobs must be >= 1")
    if args.shards > 1 and not args.hf_dir:
        p.error("--shards needs --hf-dir")
    if args.delta < 0:
        p.error("--delta must be >= 0")
    if args.lora is not None and (args.finetune is None or args.lora < 1):
        p.error("--lora needs --finetune and a rank >= 1")
    cfg = dict(PRESETS[args.preset])
    for key in ("hidden", "intermediate", "layers", "heads", "vocab"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    cfg["kv_heads"] = args.kv_heads if args.kv_heads is not None else cfg["heads"]
    if min(cfg.values()) < 1 or cfg["hidden"] % cfg["heads"] or cfg["heads"] % cfg["kv_heads"]:
        p.error("shapes must be positive, hidden divisible by heads, heads by kv-heads")
    return args, cfg


def main(argv):
    args, cfg = parse_args(argv)
    bases = [BaseTensor(args.seed, n, s) for n, s in tensor_specs(cfg)]
    deltas = [None] * len(bases)
    if args.finetune is not None:
        deltas = [DeltaTensor(args.finetune, b, cfg["layers"], args.lora) for b in bases]
        solve_delta_scale(bases, deltas, args.delta)
    entries = list(zip(bases, deltas))
    total = sum(int(np.prod(b.shape)) for b in bases) * DTYPES[args.dtype]
    progress = Progress(total, args.quiet)
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        if args.hf_dir:
            write_hf_dir(args, cfg, entries, pool, progress)
        else:
            write_safetensors(args.out, entries, args, pool, progress)
    if args.quiet:
        return
    dt = time.monotonic() - progress.t0
    params = total // DTYPES[args.dtype]
    print(f"\r{args.out or args.hf_dir}: {params / 1e6:.1f}M params, {total / 1e9:.3f} GB "
          f"{args.dtype} in {dt:.1f} s ({total / 1e9 / dt:.2f} GB/s, {args.jobs} threads)",
          file=sys.stderr)
    if args.finetune is not None:
        w_sq, dq_sq, w32_sq, d32_sq, changed = progress.stats
        print(f"  delta: ||dW||/||W|| {np.sqrt(d32_sq / w32_sq):.5f} before rounding, "
              f"{np.sqrt(dq_sq / w_sq):.5f} after; {changed / params:.1%} of elements changed",
              file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
