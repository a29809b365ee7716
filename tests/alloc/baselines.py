#!/usr/bin/python3
"""baselines.py METHOD R BASE FT -o OUT -- the published lossy delta compressors, in numpy, at a
compression ratio R, as the reference points deltafs's own lossy formats are measured against.

Why: a claim that deltafs keeps more of a fine-tune at R x than the literature needs the
literature's methods run on the same pair, at the same bytes, scored the same way (baselines.sh:
delta error and, on charlm, the model's own perplexity).  These are the methods as their papers
define them, with every stored number costed in bits, not tuned implementations.

Per matrix: dW = FT - BASE (float64) gets a budget of numel * esize * 8 / R bits (esize: FT's
bytes per element), and METHOD stores an approximation dW' of it:
  bitdelta  BitDelta (Liu et al. 2402.10193): sign(dW) (+1 for 0) times one scale per row, the
            row's mean |dW| (the L2-optimal scale of a sign matrix), as f16: rows * cols + 16 rows
            bits.  Its size is fixed, R is ignored: a little under 16x for F16/BF16 and 32x for
            F32 (27x on charlm's 64-wide rows).
  dare      DARE (Yu et al. 2311.03099): k = min(numel, floor(budget / 16)) entries chosen
            uniformly at random and rescaled by numel / k, each stored as f16; the positions cost
            nothing (regenerated from the seed), so 16 k bits.
  kmeans    per-row scalar k-means: 2^b levels per row, b = floor(budget / numel), at least 1,
            lowered (to 1 at the least) while numel * b + rows * 2^b * 16 exceeds the budget;
            Lloyd, 20 iterations from the row's quantiles (i + 0.5) / 2^b, levels stored as f16
            and every value assigned to its nearest stored level.
  svd       quantized truncated SVD: dW = U S V^T, factors U_r S_r^1/2 and V_r S_r^1/2 each
            quantized to b bits, symmetric uniform with one absmax scale (f16) per column, levels
            -(2^(b-1)-1) .. 2^(b-1)-1: r (rows + cols) b + 2 r 16 bits.  For each b in 2..8 the
            largest r that fits; the (r, b) with the least ||dW - dW'||_F wins (r = 0, dW' = 0 at
            no cost, when none fits).
The "achieved" ratio is the matrices' original bytes over the bits stored / 8, both summed over
the compressed matrices, so a method that cannot hit R (bitdelta, kmeans at 1 bit) says so.

Which tensors: the 2-D float (F32, F16, BF16) tensors of FT with a tensor of the same name and
shape in BASE, embeddings and LM head included, whose values differ from it (deltafs stores an
unchanged tensor in nothing, so charlm's causal-mask buffers are not counted).  Everything else,
1-D norms and biases included, is copied from FT unchanged: deltafs stores those losslessly too.

OUT has FT's header and bytes verbatim outside the compressed matrices, whose values are
BASE + dW' computed in float32 and rounded once to FT's dtype (BF16 to nearest-even on the bit
pattern, F16 by numpy's cast, also nearest-even), written to OUT.tmp and renamed.  Prints one
line:
    method M ratio R achieved A delta_err E
E = sqrt(sum ||dW - dW'||^2 / sum ||dW||^2) over the compressed matrices, dW' as OUT holds it
after rounding.  Deterministic: DARE's positions come from a numpy PCG64 seeded from
sha256(method, tensor name); the other methods draw nothing.
"""

import argparse
import hashlib
import json
import os
import struct
import sys

import numpy as np

ESIZE = {"F32": 4, "F16": 2, "BF16": 2}
KMEANS_ITERS = 20
SVD_BITS = range(2, 9)


def read_st(path):
    """(file bytes, {name: header entry}, offset of the data region)."""
    with open(path, "rb") as f:
        raw = f.read()
    (hlen,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + hlen])
    header.pop("__metadata__", None)
    return raw, header, 8 + hlen


def to_f32(raw, dtype):
    if dtype == "F32":
        return np.frombuffer(raw, "<f4").astype(np.float32)
    if dtype == "F16":
        return np.frombuffer(raw, "<f2").astype(np.float32)
    return (np.frombuffer(raw, "<u2").astype(np.uint32) << np.uint32(16)).view(np.float32)


def from_f32(x, dtype):
    """float32 -> the dtype's little-endian bytes, rounded to nearest-even."""
    x = np.ascontiguousarray(x, np.float32)
    if dtype == "F32":
        return x.astype("<f4").tobytes()
    if dtype == "F16":
        return x.astype("<f2").tobytes()
    u = x.view(np.uint32)
    return ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)) \
        .astype("<u2").tobytes()


def f16(x):
    """x as stored in 16 bits: rounded to float16 and back."""
    return np.asarray(x).astype(np.float16).astype(np.float64)


def rng_for(method, name):
    digest = hashlib.sha256(f"{method}\0{name}".encode()).digest()
    entropy = [int.from_bytes(digest[i:i + 8], "little") for i in range(0, 32, 8)]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy)))


def bitdelta(d, budget, name):
    rows, cols = d.shape
    scale = f16(np.abs(d).mean(axis=1))
    return np.where(d >= 0, 1.0, -1.0) * scale[:, None], rows * cols + 16 * rows


def dare(d, budget, name):
    k = min(d.size, int(budget // 16))
    out = np.zeros(d.size)
    if k:
        keep = rng_for("dare", name).choice(d.size, k, replace=False)
        out[keep] = f16(d.ravel()[keep] * (d.size / k))
    return out.reshape(d.shape), 16 * k


def nearest(d, levels):
    """Index of the nearest of each row's sorted levels, for every element of d."""
    mids = (levels[:, 1:] + levels[:, :-1]) / 2
    idx = np.zeros(d.shape, np.int64)
    for j in range(mids.shape[1]):
        idx += d > mids[:, j, None]
    return idx


def kmeans(d, budget, name):
    rows, cols = d.shape
    b = max(1, int(budget // d.size))
    while b > 1 and d.size * b + rows * 2 ** b * 16 > budget:
        b -= 1
    k = 2 ** b
    levels = np.quantile(d, (np.arange(k) + 0.5) / k, axis=1).T
    flat = np.arange(rows)[:, None] * k
    for _ in range(KMEANS_ITERS):
        cell = (nearest(d, levels) + flat).ravel()
        count = np.bincount(cell, minlength=rows * k).reshape(rows, k)
        total = np.bincount(cell, weights=d.ravel(), minlength=rows * k).reshape(rows, k)
        levels = np.sort(np.where(count > 0, total / np.maximum(count, 1), levels), axis=1)
    levels = np.sort(f16(levels), axis=1)
    return np.take_along_axis(levels, nearest(d, levels), axis=1), d.size * b + rows * k * 16


def quantize_columns(x, bits):
    qmax = 2 ** (bits - 1) - 1
    scale = f16(np.abs(x).max(axis=0) / qmax)
    safe = np.where(scale > 0, scale, 1.0)
    return np.clip(np.round(x / safe), -qmax, qmax) * scale


def svd(d, budget, name):
    rows, cols = d.shape
    u, s, vt = np.linalg.svd(d, full_matrices=False)
    root = np.sqrt(s)
    best = (np.zeros(d.shape), 0, np.linalg.norm(d))
    for bits in SVD_BITS:
        r = min(len(s), int(budget // ((rows + cols) * bits + 32)))
        if r == 0:
            continue
        left = quantize_columns(u[:, :r] * root[:r], bits)
        right = quantize_columns(vt[:r].T * root[:r], bits)
        approx = left @ right.T
        err = np.linalg.norm(d - approx)
        if err < best[2]:
            best = (approx, r * (rows + cols) * bits + 2 * r * 16, err)
    return best[0], best[1]


METHODS = {"bitdelta": bitdelta, "dare": dare, "kmeans": kmeans, "svd": svd}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("method", choices=sorted(METHODS))
    p.add_argument("ratio", type=float, help="target compression ratio R of every matrix")
    p.add_argument("base")
    p.add_argument("ft")
    p.add_argument("-o", required=True, metavar="OUT", help="reconstructed fine-tune")
    a = p.parse_args()
    if a.ratio <= 0:
        p.error("R must be > 0")

    braw, bhead, boff = read_st(a.base)
    fraw, fhead, foff = read_st(a.ft)
    out = bytearray(fraw)
    orig_bytes = stored_bits = err_sq = delta_sq = 0.0
    for name, t in fhead.items():
        bt = bhead.get(name)
        if len(t["shape"]) != 2 or t["dtype"] not in ESIZE or bt is None \
                or bt["shape"] != t["shape"] or bt["dtype"] not in ESIZE:
            continue
        fb, fe = (foff + o for o in t["data_offsets"])
        bb, be = (boff + o for o in bt["data_offsets"])
        w = to_f32(braw[bb:be], bt["dtype"]).reshape(t["shape"])
        ft = to_f32(fraw[fb:fe], t["dtype"]).reshape(t["shape"])
        if np.array_equal(w, ft):
            continue
        d = ft.astype(np.float64) - w
        budget = d.size * ESIZE[t["dtype"]] * 8 / a.ratio
        approx, bits = METHODS[a.method](d, budget, name)
        rec = from_f32(w + approx.astype(np.float32), t["dtype"])
        out[fb:fe] = rec
        got = to_f32(rec, t["dtype"]).reshape(t["shape"]).astype(np.float64) - w
        orig_bytes += d.size * ESIZE[t["dtype"]]
        stored_bits += bits
        err_sq += float(np.sum((d - got) ** 2))
        delta_sq += float(np.sum(d ** 2))
    if not orig_bytes:
        sys.exit(f"baselines: {a.ft}: no 2-D float tensor differs from {a.base}")
    with open(a.o + ".tmp", "wb") as f:
        f.write(out)
    os.replace(a.o + ".tmp", a.o)
    achieved = orig_bytes * 8 / stored_bits if stored_bits else float("inf")
    print(f"method {a.method} ratio {a.ratio:g} achieved {achieved:.3f} "
          f"delta_err {np.sqrt(err_sq / delta_sq):.5f}")


if __name__ == "__main__":
    main()
