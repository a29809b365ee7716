#!/usr/bin/python3
"""A pruned base and its SPP fine-tune through the mount: the base (one-layer tiny model pruned
2:4) and the fine-tune stored lossless read back with their sha256; the fine-tune stored with
DeltaDQ at 16x and 64x (support mode: its delta on the base's support only) keeps every zero of
every pruned matrix, at the base's positions and with the base's bits (+0.0), read through
numpy.memmap, while its support does change (the delta is there)."""

import os
import sys

import numpy as np

import fsutil as fu

GENPRUNED = os.path.join(fu.HERE, "..", "data", "genpruned.py")
MAG = np.uint16(0x7fff)  # BF16 bits other than the sign: zero iff the element is +-0.0


def check_zeros(bt, path, pruned, what):
    """Asserts that the pruned matrices of the file at path have the base's zeros, exactly; returns
    how many of them differ from the base on its support. The file's maps are gone on return, so
    the mount can go."""
    mt = fu.st_memmap(path)
    changed = 0
    for n in pruned:
        b, m = np.asarray(bt[n]), np.asarray(mt[n])
        zb, zm = (b & MAG) == 0, (m & MAG) == 0
        assert np.count_nonzero(zm) == np.count_nonzero(zb), \
            f"{what} {n}: {np.count_nonzero(zm)} zeros, base {np.count_nonzero(zb)}"
        assert np.array_equal(zm, zb), f"{what} {n}: zeros moved"
        assert np.array_equal(m[zb], b[zb]), f"{what} {n}: a zero changed its bits"
        changed += np.count_nonzero(m[~zb] != b[~zb]) > 0
    return changed


def main():
    fu.need_fuse()
    with fu.Workdir() as w:
        dense, base, ft = (os.path.join(w, n + ".safetensors") for n in ("dense", "p24", "spp"))
        fu.genmodel("--preset", "tiny", "--layers", "1", "--seed", "3", "--out", dense)
        fu.run(sys.executable, GENPRUNED, "prune", "--pattern", "2:4", dense, base)
        fu.run(sys.executable, GENPRUNED, "spp", base, ft)
        store, mnt = os.path.join(w, "store"), os.path.join(w, "mnt")
        fu.add(store, "base", base)
        fu.add(store, "ll", ft, "--base", "base")
        for r in ("16", "64"):
            fu.add(store, "dq" + r, ft, "--base", "base", "--codec", "deltadq", "--ratio", r)

        bt = fu.st_memmap(base)
        pruned = [n for n, t in bt.items() if t.ndim == 2 and t.dtype == np.uint16 and
                  np.count_nonzero((t & MAG) == 0) * 2 == t.size]
        assert len(pruned) == 7, f"{len(pruned)} 2:4 matrices in the pruned base, not 7"
        with fu.Mount(store, mnt):
            for name, orig in (("base", base), ("ll", ft)):
                got = fu.sha256(os.path.join(mnt, name, os.path.basename(orig)))
                assert got == fu.sha256(orig), f"{name}: sha256 differs"
            for r in ("16", "64"):
                path = os.path.join(mnt, "dq" + r, "spp.safetensors")
                changed = check_zeros(bt, path, pruned, "dq" + r)
                assert changed == len(pruned), f"dq{r}: {len(pruned) - changed} deltas lost"
                assert fu.sha256(path) != fu.sha256(ft), f"dq{r}: not stored lossy"
                print(f"dq{r}: zeros of {len(pruned)} 2:4 matrices kept exactly")


if __name__ == "__main__":
    main()
