#!/usr/bin/python3
"""Pruned bases and their fine-tunes, from any safetensors checkpoint: test data for codec/spp.h.

Why this exists: deltafs stores fine-tunes of pruned models (SPP, arXiv 2405.16057, see
../shared/SEEDS.md) on the base's support only, and must be tested and measured on such pairs
without downloading any.  Three commands, each IN -> OUT:

  prune   magnitude pruning of every prunable matrix (below): --pattern 50% zeroes the
          floor(0.5 n) smallest |W| of the matrix (--pattern P% for any P), --pattern 2:4 (or
          N:M) the M-N smallest |W| of each group of M consecutive elements along the last
          dimension (a matrix whose last dimension is not a multiple of M is left dense).  Pruned
          elements are +0.0, as SparseGPT and Wanda write them; with --signed-zeros they keep
          the weight's sign (-0.0 for a negative one), as torch.nn.utils.prune's multiplication
          by a 0/1 mask leaves them.
  spp     an SPP-style fine-tune: for each prunable matrix W (out x in), dW = W (.) M with
          M = s * diag(b) * E * A, b ~ N(0, 1) a row vector (out), A ~ N(0, 1) a R x in matrix
          (R = min(--rank, out), default 16), E repeats the rows of A over R blocks of about
          out / R rows (row r takes A[r * R // out]), and s chosen per matrix so that
          ||dW|| / ||W|| = --rel (default 0.05) before rounding.  W + dW is computed in float32
          and rounded once to the tensor's dtype, so W's zeros stay +0.0 (0.0 + -0.0 = +0.0).
  dense   an ordinary dense fine-tune of (typically) a pruned base: dW = --rel * rms(W) * z,
          z ~ N(0, 1) on every element of every prunable matrix, so it breaks the zeros.
Every other tensor (1-D norms and biases, buffers, embeddings) is copied unchanged, as SPP
leaves it frozen.

Prunable: a 2-D tensor whose name ends in ".weight" and does not name an embedding or the LM
head ("embed", "lm_head", "wte", "wpe"), the linear layers SparseGPT, Wanda and SPP prune;
--all includes those too.

Input dtypes F32, BF16 and F16 (others are copied).  Arithmetic is float32 (float64 for norms);
BF16 is rounded to nearest-even on the bit pattern, F16 by numpy's cast (also nearest-even).
The output has the input's header verbatim (same tensors, dtypes, shapes and offsets), so a base
and its derived files line up byte for byte outside the changed tensors.

Determinism: the random streams are numpy PCG64 seeded from sha256(role, --seed, tensor name),
so the same input and arguments give byte-identical output.  Files are written to OUT.tmp and
renamed.  Per-file figures (matrices changed, zero fraction, realised ||dW||/||W||, broken zeros)
go to stderr.

examples:
  genpruned.py prune --pattern 50% base.safetensors pruned50.safetensors
  genpruned.py prune --pattern 2:4 base.safetensors pruned24.safetensors
  genpruned.py spp --seed 3 pruned24.safetensors spp24.safetensors
  genpruned.py dense --seed 4 pruned50.safetensors dense50.safetensors
"""

import argparse
import hashlib
import json
import os
import struct
import sys

import numpy as np

FLOAT_DTYPES = ("F32", "BF16", "F16")
ESIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
         "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8}
NOT_PRUNED = ("embed", "lm_head", "wte", "wpe")


def read_st(path):
    """(header bytes incl. the 8-byte length, parsed header, memmap of the data region)."""
    with open(path, "rb") as f:
        (hlen,) = struct.unpack("<Q", f.read(8))
        hjson = f.read(hlen)
    header = json.loads(hjson)
    data = np.memmap(path, np.uint8, "r", offset=8 + hlen)
    for name, t in header.items():
        if name == "__metadata__":
            continue
        b, e = t["data_offsets"]
        if t["dtype"] not in ESIZE or e - b != ESIZE[t["dtype"]] * int(np.prod(t["shape"])) \
                or e > data.size:
            sys.exit(f"genpruned: {path}: tensor {name}: bad dtype or offsets")
    return struct.pack("<Q", hlen) + hjson, header, data


def to_f32(raw, dtype):
    if dtype == "F32":
        return raw.view("<f4").astype(np.float32)
    if dtype == "F16":
        return raw.view("<f2").astype(np.float32)
    return (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)


def from_f32(x, dtype):
    """float32 -> the dtype's little-endian bytes, rounded to nearest-even."""
    x = np.ascontiguousarray(x, np.float32)
    if dtype == "F32":
        return x.astype("<f4").tobytes()
    if dtype == "F16":
        return x.astype("<f2").tobytes()
    u = x.view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2").tobytes()


def rng_for(role, seed, name):
    digest = hashlib.sha256(f"{role}\0{seed}\0{name}".encode()).digest()
    entropy = [int.from_bytes(digest[i:i + 8], "little") for i in range(0, 32, 8)]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy)))


def prunable(name, t, everything):
    return (len(t["shape"]) == 2 and t["dtype"] in FLOAT_DTYPES and name.endswith(".weight")
            and (everything or not any(s in name for s in NOT_PRUNED)))


def prune(w, pattern, signed):
    """Magnitude pruning; None if the pattern does not fit the matrix."""
    a = np.abs(w)
    if ":" in pattern:
        n, m = (int(v) for v in pattern.split(":"))
        if w.shape[1] % m or not 0 <= n < m:
            return None
        g = a.reshape(-1, m)
        drop = np.argsort(g, axis=1, kind="stable")[:, :m - n]
        keep = np.ones(g.shape, bool)
        np.put_along_axis(keep, drop, False, axis=1)
        keep = keep.reshape(w.shape)
    else:
        k = int(float(pattern.rstrip("%")) / 100 * w.size)
        flat = a.ravel()
        keep = np.ones(w.size, bool)
        keep[np.argsort(flat, kind="stable")[:k]] = False
        keep = keep.reshape(w.shape)
    return np.where(keep, w, np.copysign(np.float32(0), w) if signed else np.float32(0))


def spp_delta(w, g, rel, rank):
    out, inp = w.shape
    r = min(rank, out)
    b = g.standard_normal(out).astype(np.float32)
    a = g.standard_normal((r, inp)).astype(np.float32)
    m = b[:, None] * a[np.arange(out) * r // out]
    dw = w * m
    nw, nd = np.linalg.norm(w.astype(np.float64)), np.linalg.norm(dw.astype(np.float64))
    return dw * np.float32(rel * nw / nd) if nd > 0 else dw


def dense_delta(w, g, rel):
    rms = np.sqrt(np.mean(w.astype(np.float64) ** 2))
    return (g.standard_normal(w.shape) * (rel * rms)).astype(np.float32)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("command", choices=("prune", "spp", "dense"))
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--pattern", default="50%", help="prune: P%% unstructured or N:M (default 50%%)")
    p.add_argument("--signed-zeros", action="store_true",
                   help="prune: -0.0 for pruned negative weights")
    p.add_argument("--seed", type=int, default=1, help="spp, dense: random seed (default 1)")
    p.add_argument("--rel", type=float, default=0.05, help="spp, dense: ||dW||/||W|| (default 0.05)")
    p.add_argument("--rank", type=int, default=16, help="spp: rows of A (default 16)")
    p.add_argument("--all", action="store_true", help="also embeddings and the LM head")
    args = p.parse_args()

    hbytes, header, data = read_st(args.input)
    tensors = sorted(((t["data_offsets"][0], name, t) for name, t in header.items()
                      if name != "__metadata__"), key=lambda v: v[0])
    tmp = args.output + ".tmp"
    changed = elems = zeros = broken = 0
    sq_w = sq_d = 0.0
    with open(tmp, "wb") as f:
        f.write(hbytes)
        for begin, name, t in tensors:
            raw = np.asarray(data[begin:t["data_offsets"][1]])
            if not prunable(name, t, args.all):
                f.write(raw.tobytes())
                continue
            w = to_f32(raw, t["dtype"]).reshape(t["shape"])
            if args.command == "prune":
                new = prune(w, args.pattern, args.signed_zeros)
                if new is None:
                    print(f"genpruned: {name} {t['shape']}: last dim not a multiple of the "
                          f"group, left dense", file=sys.stderr)
                    f.write(raw.tobytes())
                    continue
                out = from_f32(new, t["dtype"])
            else:
                g = rng_for(args.command, args.seed, name)
                dw = spp_delta(w, g, args.rel, args.rank) if args.command == "spp" \
                    else dense_delta(w, g, args.rel)
                out = from_f32(w + dw, t["dtype"])
            new = to_f32(np.frombuffer(out, np.uint8), t["dtype"])
            changed += 1
            elems += w.size
            zeros += int(np.count_nonzero(new == 0))
            broken += int(np.count_nonzero((w.ravel() == 0) & (new != 0)))
            sq_w += float(np.sum(w.astype(np.float64) ** 2))
            sq_d += float(np.sum((new.astype(np.float64) - w.ravel()) ** 2))
            f.write(out)
    os.replace(tmp, args.output)
    print(f"genpruned {args.command}: {args.output}: {changed} matrices, {elems} elements, "
          f"zeros {zeros / max(elems, 1):.4f}, ||dW||/||W|| {np.sqrt(sq_d / max(sq_w, 1e-300)):.4f}"
          f", broken zeros {broken}", file=sys.stderr)


if __name__ == "__main__":
    main()
