#!/usr/bin/python3
"""8 reader processes at once on a fresh mount (cold page cache and chunk cache): each memory-maps
every tensor of both files and compares it with the original, hashes a whole file, and does random
preads; they contend for the same chunks, which the daemon must decode once and hand to all."""

import multiprocessing
import os
import sys

import numpy as np

import fsutil as fu

READERS = 8


def reader(i, mnt, orig):
    rng = np.random.default_rng(i)
    names = sorted(orig)
    for name in names[i % 2:] + names[:i % 2]:  # half start with each file
        path = fu.mounted_path(mnt, name, orig[name])
        mine, theirs = fu.st_memmap(path), fu.st_memmap(orig[name])
        for t in theirs:
            if not np.array_equal(mine[t], theirs[t]):
                sys.exit(f"reader {i}: {path}: tensor {t} differs")
        fu.compare_reads(path, orig[name], fu.random_reads(rng, orig[name], 100), drop_every=50)
    name = names[i % 2]
    if fu.sha256(fu.mounted_path(mnt, name, orig[name])) != fu.sha256(orig[name]):
        sys.exit(f"reader {i}: sha256 of {name} differs")


def main():
    fu.need_fuse()
    with fu.Workdir() as w:
        store, orig = fu.pair_store(w)
        mnt = os.path.join(w, "mnt")
        with fu.Mount(store, mnt):
            ctx = multiprocessing.get_context("fork")
            procs = [ctx.Process(target=reader, args=(i, mnt, orig)) for i in range(READERS)]
            for p in procs:
                p.start()
            for p in procs:
                p.join()
            bad = [i for i, p in enumerate(procs) if p.exitcode != 0]
            assert not bad, f"readers {bad} failed"
    print("ok")


if __name__ == "__main__":
    main()
