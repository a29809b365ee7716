#!/usr/bin/python3
"""charlm.py -- the charlm GPT of ../shared/data/charlm, run in numpy: LIM importance scores for
`deltafs-add --importance`, and the output error of a compressed checkpoint against its original.

Why: "total output error" of a lossy store has to mean what the model does with the weights, not
a norm of them.  charlm is small enough to run exactly, in float64, on a CPU in a second, so every
compressed fine-tune can be compared with the real one on the same text.

The architecture (the source repository's model.py, github.com/Amit123103/LLM-Model cee0ec68):
  x = token_embedding_table[idx] + position_embedding_table[0..T)
  4 x block:  x = x + proj(concat_h softmax_causal(q_h k_h^T * C^-1/2) v_h)(ln1(x))
              x = x + net.2(relu(net.0(ln2(x))))
  logits = lm_head(ln_f(x))
with 4 heads of 16 (key/query/value without bias), C = 64: the attention scale is C^-1/2 of the
*embedding* width, not of the head width, because model.py scales by the C of x's shape (B, T, C).
LayerNorm eps 1e-5 (PyTorch's default).  Characters outside the vocabulary read as ' ', as the
source's fine-tuning script encodes them.

Subcommands:
  lim MODEL TEXT -o scores.json
      LIM (layer input modification, Dumitru et al. 2406.17415): for each block, 1 - cos(input,
      output) of its residual stream, averaged over every position of TEXT (run it on the
      fine-tune whose delta is stored, with text of its task); written as a JSON map
      from every tensor name of the block to its block's score (higher = more important).  Tensors
      outside the blocks (embeddings, ln_f, lm_head) have no LIM and are left out: deltafs keeps
      them at the budget ratio.  Any framework makes the same file with forward hooks on its
      decoder layers: record cos(hidden_in, hidden_out) per token on a few hundred tokens of text
      from the fine-tune's domain, and write {"<layer prefix>": 1 - mean cos}; deltafs-add matches
      a key to a tensor by exact name or by the longest key that is a '.'-bounded prefix of it.
  eval REF CAND TEXT
      Next-character distributions of both models on TEXT; prints one line:
        kl K top1 A ppl_ref P ppl_cand Q positions N
      K = mean KL(REF || CAND) in nats, A = fraction of positions where both put the same character
      first, P and Q = perplexity of each on TEXT's own next characters.

TEXT is read in windows of the block size (128): each window predicts its next 128 characters from
the characters before them in the window.
"""

import argparse
import json
import os
import struct
import sys

import numpy as np

BLOCK = 128
N_EMBD = 64
N_HEAD = 4
LN_EPS = 1e-5
DEFAULT_VOCAB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared",
                             "data", "charlm", "vocab.json")


def read_safetensors(path):
    """{name: float64 array} for every tensor of a safetensors file (F32, F16 or BF16)."""
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    data = memoryview(raw)[8 + n:]
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        b, e = t["data_offsets"]
        if t["dtype"] == "F32":
            a = np.frombuffer(data[b:e], dtype="<f4")
        elif t["dtype"] == "F16":
            a = np.frombuffer(data[b:e], dtype="<f2")
        elif t["dtype"] == "BF16":
            a = (np.frombuffer(data[b:e], dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise SystemExit(f"{path}: tensor {name}: dtype {t['dtype']} is not a float type")
        out[name] = a.astype(np.float64).reshape(t["shape"])
    return out


def layer_norm(x, w, b):
    mu = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + LN_EPS) * w + b


def linear(x, w, b=None):
    y = x @ w.T
    return y if b is None else y + b


def forward(m, idx, taps=None):
    """Logits [T, vocab] for one window idx (T <= BLOCK).  With taps (a list), appends (input,
    output) of each block's residual stream."""
    t = len(idx)
    x = m["token_embedding_table.weight"][idx] + m["position_embedding_table.weight"][:t]
    mask = np.tril(np.ones((t, t), dtype=bool))
    for blk in range(sum(1 for k in m if k.endswith(".ln1.weight"))):
        p = f"blocks.{blk}."
        x_in = x
        h = layer_norm(x, m[p + "ln1.weight"], m[p + "ln1.bias"])
        heads = []
        for hd in range(N_HEAD):
            q = linear(h, m[f"{p}sa.heads.{hd}.query.weight"])
            k = linear(h, m[f"{p}sa.heads.{hd}.key.weight"])
            v = linear(h, m[f"{p}sa.heads.{hd}.value.weight"])
            wei = q @ k.T * N_EMBD ** -0.5
            wei = np.where(mask, wei, -np.inf)
            wei = np.exp(wei - wei.max(-1, keepdims=True))
            wei /= wei.sum(-1, keepdims=True)
            heads.append(wei @ v)
        x = x + linear(np.concatenate(heads, -1), m[p + "sa.proj.weight"], m[p + "sa.proj.bias"])
        h = layer_norm(x, m[p + "ln2.weight"], m[p + "ln2.bias"])
        h = np.maximum(linear(h, m[p + "ffwd.net.0.weight"], m[p + "ffwd.net.0.bias"]), 0)
        x = x + linear(h, m[p + "ffwd.net.2.weight"], m[p + "ffwd.net.2.bias"])
        if taps is not None:
            taps.append((x_in, x))
    x = layer_norm(x, m["ln_f.weight"], m["ln_f.bias"])
    return linear(x, m["lm_head.weight"], m["lm_head.bias"])


def encode(text, vocab_path):
    with open(vocab_path) as f:
        stoi = json.load(f)["stoi"]
    return np.array([stoi.get(c, stoi[" "]) for c in text], dtype=np.int64)


def windows(ids):
    """(inputs, targets) of each window of the text."""
    for s in range(0, len(ids) - 1, BLOCK):
        x = ids[s:s + BLOCK]
        y = ids[s + 1:s + 1 + BLOCK]
        yield x[:len(y)], y


def log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def cmd_lim(a):
    m = read_safetensors(a.model)
    ids = encode(open(a.text).read(), a.vocab)
    cos_sum, count = {}, 0
    for x, _ in windows(ids):
        taps = []
        forward(m, x, taps)
        for blk, (i, o) in enumerate(taps):
            c = (i * o).sum(-1) / (np.linalg.norm(i, axis=-1) * np.linalg.norm(o, axis=-1))
            cos_sum[blk] = cos_sum.get(blk, 0.0) + c.sum()
        count += len(x)
    scores = {}
    for blk, s in cos_sum.items():
        lim = 1.0 - s / count
        for name in m:
            if name.startswith(f"blocks.{blk}."):
                scores[name] = round(float(lim), 6)
        print(f"blocks.{blk}: LIM {lim:.6f}", file=sys.stderr)
    with open(a.o, "w") as f:
        json.dump(dict(sorted(scores.items())), f, indent=1)
        f.write("\n")


def cmd_eval(a):
    ref, cand = read_safetensors(a.ref), read_safetensors(a.cand)
    ids = encode(open(a.text).read(), a.vocab)
    kl = agree = nll_r = nll_c = 0.0
    n = 0
    for x, y in windows(ids):
        lr, lc = log_softmax(forward(ref, x)), log_softmax(forward(cand, x))
        kl += (np.exp(lr) * (lr - lc)).sum()
        agree += (lr.argmax(-1) == lc.argmax(-1)).sum()
        nll_r -= lr[np.arange(len(y)), y].sum()
        nll_c -= lc[np.arange(len(y)), y].sum()
        n += len(y)
    print(f"kl {kl / n:.6f} top1 {agree / n:.5f} ppl_ref {np.exp(nll_r / n):.4f} "
          f"ppl_cand {np.exp(nll_c / n):.4f} positions {n}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab", default=DEFAULT_VOCAB, help="vocab.json (default: %(default)s)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("lim", help="LIM score of each block, as a --importance JSON file")
    p.add_argument("model")
    p.add_argument("text")
    p.add_argument("-o", required=True, help="output JSON")
    p.set_defaults(fn=cmd_lim)
    p = sub.add_parser("eval", help="KL, top-1 agreement and perplexities of CAND against REF")
    p.add_argument("ref")
    p.add_argument("cand")
    p.add_argument("text")
    p.set_defaults(fn=cmd_eval)
    a = ap.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
