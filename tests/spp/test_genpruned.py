#!/usr/bin/python3
"""The pruned-model generator and the support-only codec on whole checkpoints.

  test_genpruned.py GENPRUNED GENMODEL BENCH_SPP CHARLM_DIR

On the real F32 charlm base (skipped if CHARLM_DIR is missing) and on a tiny generated model in
BF16 and F16 (tests/data/genmodel.py), checks that genpruned.py
  - prune 50%: zeroes exactly floor(n/2) elements of each prunable matrix, the smallest |W|, and
    leaves every other tensor byte-identical; prune 2:4: at most 2 non-zeros per group of 4 along
    the last dimension, 2 zeros per group;
  - spp: keeps exactly the base's zeros, ||dW||/||W|| = 0.05 per matrix, dW / W on the support of
    rank 1 on each of the 16 row blocks (the rank-<=16 fit of lowrank.py reproduces it); the same
    arguments give the same bytes;
  - dense: breaks (almost: F16 can round a tiny dW to zero) every zero;
then runs BENCH_SPP on each pruned base with its fine-tunes: it exits non-zero unless every chunk
of both codecs decodes bit-exactly, and its table must show the support-only codec smaller than
the lossless delta on the SPP fine-tunes, with no exceptions there and exceptions for every chunk
of the dense ones.  Exit 77 (skip) without numpy.
"""

import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
except ImportError:
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "data"))
from genpruned import prunable, read_st, to_f32  # noqa: E402
from lowrank import fit  # noqa: E402


def check(cond, msg):
    if not cond:
        print("FAIL:", msg, file=sys.stderr)
        sys.exit(1)


def tensors(path):
    _, header, data = read_st(path)
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        b, e = t["data_offsets"]
        raw = np.asarray(data[b:e]).copy()
        out[name] = (t, raw, to_f32(raw, t["dtype"]).reshape(t["shape"])
                     if t["dtype"] in ("F32", "BF16", "F16") else None)
    return out


def run(*args):
    subprocess.run([sys.executable, *args], check=True, stderr=subprocess.DEVNULL)


def check_model(gen, bench, src, tmp, tag):
    p = lambda s: os.path.join(tmp, f"{tag}-{s}.safetensors")  # noqa: E731
    run(gen, "prune", "--pattern", "50%", src, p("p50"))
    run(gen, "prune", "--pattern", "2:4", src, p("p24"))
    for b in ("p50", "p24"):
        run(gen, "spp", "--seed", "3", p(b), p(b + "-spp"))
        run(gen, "dense", "--seed", "4", p(b), p(b + "-dense"))
    run(gen, "spp", "--seed", "3", p("p24"), p("again"))
    with open(p("p24-spp"), "rb") as f1, open(p("again"), "rb") as f2:
        check(f1.read() == f2.read(), f"{tag}: spp not deterministic")

    orig = tensors(src)
    pruned = {b: tensors(p(b)) for b in ("p50", "p24")}
    nmat = 0
    for name, (t, raw, w) in orig.items():
        for b, model in pruned.items():
            t2, raw2, w2 = model[name]
            if not prunable(name, t, False):
                check(np.array_equal(raw, raw2), f"{tag} {b}: {name} changed")
                continue
            z = w2 == 0
            if b == "p50":
                check(z.sum() == max(w.size // 2, (w == 0).sum()), f"{tag} {b}: {name} zeros")
                kept = np.abs(w[~z])
                check(kept.size == 0 or kept.min() >= np.abs(w[z]).max(),
                      f"{tag} {b}: {name}: a larger |W| was pruned")
            else:
                g = (~z).reshape(-1, 4).sum(1)
                check(g.max() <= 2, f"{tag} {b}: {name}: group with {g.max()} non-zeros")
            check(np.array_equal(w2[~z], w[~z]), f"{tag} {b}: {name}: kept weights changed")
        nmat += prunable(name, t, False)
    check(nmat > 0, f"{tag}: no prunable matrix")

    for b, base in pruned.items():
        spp, dense = tensors(p(b + "-spp")), tensors(p(b + "-dense"))
        for name, (t, raw, w) in base.items():
            if not prunable(name, t, False):
                check(np.array_equal(raw, spp[name][1]) and np.array_equal(raw, dense[name][1]),
                      f"{tag} {b}: {name}: a frozen tensor changed")
                continue
            ft, fd = spp[name][2], dense[name][2]
            check(np.array_equal(ft == 0, w == 0), f"{tag} {b}: {name}: spp moved the zeros")
            # An F16 dW below half the smallest subnormal (~1e-4 of them here) rounds to zero.
            check(np.mean(fd[w == 0] != 0) > 0.99, f"{tag} {b}: {name}: dense kept the zeros")
            rel = np.linalg.norm(ft.astype(np.float64) - w) / np.linalg.norm(w)
            # BF16/F16 rounding of W + dW perturbs the realised ratio by ~2^-9 / 0.05.
            check(abs(rel - 0.05) < 0.005, f"{tag} {b}: {name}: ||dW||/||W|| = {rel}")
            u, v, blk = fit(w, ft - w, min(16, w.shape[0]))
            pred = w + w * (u[:, None] * v[blk])
            err = np.linalg.norm(pred - ft) / np.linalg.norm(ft.astype(np.float64) - w)
            check(err < (1e-4 if t["dtype"] == "F32" else 0.05),
                  f"{tag} {b}: {name}: dW/W not rank <= 16 (fit error {err})")

    for b in ("p50", "p24"):
        out = subprocess.run([bench, p(b), p(b + "-spp"), p(b + "-dense")], check=True,
                             capture_output=True, text=True).stdout
        print(out)
        rows = [line.split() for line in out.splitlines() if line.startswith(tmp)]
        check(len(rows) == 2, f"{tag} {b}: bench_spp output")
        spp_row, dense_row = rows
        ll, sp = int(spp_row[3]), int(spp_row[4])
        check(sp < ll, f"{tag} {b}: spp {sp} bytes not below lossless {ll}")
        none, lst, full = (int(x) for x in spp_row[-3].split("/"))
        check(lst == 0 and full == 0 and none > 0, f"{tag} {b}: exceptions in an SPP fine-tune")
        none, lst, full = (int(x) for x in dense_row[-3].split("/"))
        check(none == 0, f"{tag} {b}: a dense chunk without exceptions")


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    gen, genmodel, bench, charlm = sys.argv[1:]
    with tempfile.TemporaryDirectory() as tmp:
        for dt in ("BF16", "F16"):
            src = os.path.join(tmp, f"tiny-{dt}.safetensors")
            run(genmodel, "--preset", "tiny", "--dtype", dt, "--jobs", "1", "-q", "--out", src)
            check_model(gen, bench, src, tmp, f"tiny-{dt}")
        src = os.path.join(charlm, "base.safetensors")
        if not os.path.exists(src):
            print("charlm data missing: generated models only")
            return
        check_model(gen, bench, src, tmp, "charlm")


if __name__ == "__main__":
    main()
