#!/usr/bin/python3
"""Is an SPP fine-tune's delta, divided by W on the support, low-rank?  And what would storing its
factors cost against the support-only codec?  (The "going further" question of codec/spp.h.)

  lowrank.py BASE FT PRED     BASE a pruned base, FT an SPP fine-tune of it (genpruned.py spp),
                              PRED written: FT with every fitted matrix replaced by the prediction

SPP's update is dW = W (.) M, M = s diag(b) E A with A of R = 16 rows repeated over R contiguous
blocks of rows (tests/data/genpruned.py), so on rows block g, M = b_g a_g^T has rank 1, and
rank(M) <= 16.  For each matrix with zeros this fits, per row block, u (rows) and v (columns) of
rank 1 to R = dW / W observed on the support only, by alternating least squares weighted by W^2
(the error is then measured in units of the weights, not of the ratio; s is folded into u), 10
iterations from the start described in fit().  The fit is rounded to the stored precision of
the factors (F32 or BF16) and the prediction ft_hat = round(W + W * (u v^T)), computed in float32
as the generator does, is compared with FT on the support: the fraction of elements predicted
bit-exactly, and ||ft_hat - ft|| / ||ft - W||.  That error is the rank test: near the rounding
noise of the dtype for a rank-16 M, near 1 for a fine-tune that is not (run it on a dense
fine-tune of the same base as a control).  Printed per file: factor bytes (out + R * in values
per matrix) in F32 and BF16, and those two figures for each precision.

PRED is written with the BF16-factor prediction, so `bench_spp PRED FT` gives the bytes of the
residual of a lossless "factors + support-only residual" codec (the residual is zero off the
support, since W's zeros stay zero in ft_hat too).  Figures and conclusion: codec/spp.h.
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data"))
from genpruned import from_f32, prunable, read_st, to_f32  # noqa: E402

RANK = 16
ITERS = 10


def bf16_round(x):
    return to_f32(np.frombuffer(from_f32(x, "BF16"), np.uint8), "BF16").reshape(x.shape)


def fit(w, d, r):
    """Per-block rank-1 fit of d ~ w * (u v_g^T); returns u (out), v (r x in)."""
    out, inp = w.shape
    blk = np.arange(out) * r // out
    w64, d64 = w.astype(np.float64), d.astype(np.float64)
    wd, ww = w64 * d64, w64 * w64
    on = w64 != 0
    ratio = np.where(on, d64 / np.where(on, w64, 1), 0)
    # Initial u: each row against the block's strongest row r0, by least squares on the columns
    # both observe. Plain ALS from a flat start stalls when a column is observed on one row of
    # its block only (that row's u shrinks while v there grows; measured: rows left at 90 %
    # error after 200 iterations); started this way it converges in a few.
    u = np.ones(out)
    v = np.zeros((r, inp))
    for g in range(r):
        rows = np.flatnonzero(blk == g)
        r0 = rows[np.argmax((wd[rows] ** 2).sum(1))]
        common = on[rows] & on[r0]
        num = (ratio[rows] * ratio[r0] * common).sum(1)
        den = ((ratio[r0] ** 2) * common).sum(1)
        u[rows] = np.where(den > 0, num / np.where(den > 0, den, 1), 1.0)
    for _ in range(ITERS):
        for g in range(r):
            rows = blk == g
            uu = u[rows, None]
            v[g] = (wd[rows] * uu).sum(0) / np.maximum((ww[rows] * uu * uu).sum(0), 1e-300)
        vv = v[blk]
        u = (wd * vv).sum(1) / np.maximum((ww * vv * vv).sum(1), 1e-300)
    return u, v, blk


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    _, hbase, dbase = read_st(sys.argv[1])
    hf, hft, dft = read_st(sys.argv[2])
    tensors = sorted(((t["data_offsets"][0], n, t) for n, t in hft.items() if n != "__metadata__"),
                     key=lambda v: v[0])
    tot = {"mats": 0, "elems": 0, "f32": 0, "bf16": 0}
    stat = {p: [0, 0, 0.0, 0.0] for p in ("F32", "BF16")}  # exact, support, err^2, delta^2
    with open(sys.argv[3] + ".tmp", "wb") as f:
        f.write(hf)
        for begin, name, t in tensors:
            raw = np.asarray(dft[begin:t["data_offsets"][1]])
            tb = hbase.get(name)
            w = None
            if prunable(name, t, False) and tb and tb["shape"] == t["shape"]:
                w = to_f32(np.asarray(dbase[tb["data_offsets"][0]:tb["data_offsets"][1]]),
                           t["dtype"]).reshape(t["shape"])
            if w is None or not np.any(w == 0):
                f.write(raw.tobytes())
                continue
            ft = to_f32(raw, t["dtype"]).reshape(t["shape"])
            out, inp = w.shape
            r = min(RANK, out)
            u, v, blk = fit(w, ft - w, r)
            tot["mats"] += 1
            tot["elems"] += w.size
            tot["f32"] += 4 * (out + r * inp)
            tot["bf16"] += 2 * (out + r * inp)
            on = w != 0
            for prec in ("F32", "BF16"):
                uq, vq = u.astype(np.float32), v.astype(np.float32)
                if prec == "BF16":
                    uq, vq = bf16_round(uq), bf16_round(vq)
                m = uq[:, None] * vq[blk]
                pred = to_f32(np.frombuffer(from_f32(w + w * m, t["dtype"]), np.uint8),
                              t["dtype"]).reshape(w.shape)
                st = stat[prec]
                st[0] += int(np.count_nonzero((pred == ft) & on))
                st[1] += int(np.count_nonzero(on))
                st[2] += float(np.sum((pred.astype(np.float64) - ft) ** 2))
                st[3] += float(np.sum((ft.astype(np.float64) - w) ** 2))
                if prec == "BF16":
                    f.write(from_f32(pred, t["dtype"]))
    os.replace(sys.argv[3] + ".tmp", sys.argv[3])
    print(f"{sys.argv[2]}: {tot['mats']} matrices, {tot['elems']} elements; factors "
          f"{tot['f32']} B in F32, {tot['bf16']} B in BF16")
    for prec, st in stat.items():
        print(f"  {prec} factors: support elements predicted bit-exactly {st[0] / max(st[1], 1):.4f}"
              f", ||ft_hat - ft|| / ||dW|| = {np.sqrt(st[2] / max(st[3], 1e-300)):.4f}")


if __name__ == "__main__":
    main()
