#!/usr/bin/python3
"""Read speed through mount.deltafs on a generated ~135 MB model (BF16, hidden 1024, 4 layers) and a
fine-tune of it stored as deltas. Per checkpoint, medians of REPS fresh mounts:
  seq cold      read(1 MiB) start to end on a fresh mount (nothing cached), MB/s
  daemon cpu    CPU seconds the daemon spent on that read (robust on a loaded machine)
  seq warm      the same again (kernel page cache), MB/s
  chunk-cached  page cache dropped, decoded chunks still in the daemon's cache, MB/s
  rand 128K     1000 preads of 128 KiB at random offsets on a fresh mount, MB/s and us/op
  rand 128K x8  the same from 8 threads at once (how model loaders fault), MB/s

usage: bench_mount.py [mount options...], e.g. bench_mount.py -o threads=4 -o read_ahead_kb=0
Run by `meson test -C BUILD --benchmark --suite fs`.
"""

import os
import statistics
import sys
import threading
import time

import numpy as np

import fsutil as fu

REPS = 3
SHAPE = ["--preset", "tiny", "--hidden", "1024", "--intermediate", "2816", "--layers", "4",
         "--vocab", "8000", "--heads", "8"]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def seq_read(path):
    fd = os.open(path, os.O_RDONLY)
    n, t = 0, time.perf_counter()
    while True:
        b = os.read(fd, 1 << 20)
        if not b:
            break
        n += len(b)
    dt = time.perf_counter() - t
    os.close(fd)
    return n / dt / 1e6


def rand_read(path, threads, n=1000, size=128 << 10):
    offs = np.random.default_rng(1).integers(0, os.path.getsize(path) - size, n)
    fd = os.open(path, os.O_RDONLY)

    def work(part):
        for o in part:
            os.pread(fd, size, int(o))

    parts = np.array_split(offs, threads)
    ts = [threading.Thread(target=work, args=(p,)) for p in parts]
    t = time.perf_counter()
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    dt = time.perf_counter() - t
    os.close(fd)
    return n * size / dt / 1e6, dt / n * 1e6 * threads


def drop_page_cache(path):
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)


def one_rep(store, mnt, name, opts):
    r = {}
    with fu.Mount(store, mnt, *opts) as m:
        p = os.path.join(mnt, name, name + ".safetensors")
        c0 = cpu_seconds(m.proc.pid)
        r["seq cold MB/s"] = seq_read(p)
        r["daemon cpu s"] = cpu_seconds(m.proc.pid) - c0
        r["seq warm MB/s"] = seq_read(p)
        drop_page_cache(p)
        r["chunk-cached MB/s"] = seq_read(p)
    with fu.Mount(store, mnt, *opts):
        r["rand 128K MB/s"], r["rand 128K us/op"] = rand_read(p, 1)
    with fu.Mount(store, mnt, *opts):
        r["rand 128K x8 MB/s"], _ = rand_read(p, 8)
    return r


def main():
    fu.need_fuse()
    opts = sys.argv[1:]
    with fu.Workdir() as w:
        src = {"base": os.path.join(w, "base.safetensors"), "ft": os.path.join(w, "ft.safetensors")}
        fu.genmodel(*SHAPE, "--out", src["base"])
        fu.genmodel(*SHAPE, "--finetune", "5", "--out", src["ft"])
        store, mnt = os.path.join(w, "store"), os.path.join(w, "mnt")
        fu.add(store, "base", src["base"])
        fu.add(store, "ft", src["ft"], "--base", "base")
        print(f"mount options: {' '.join(opts) or '(defaults)'}; {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.1f}; median of {REPS}")
        for name in ("base", "ft"):
            reps = [one_rep(store, mnt, name, opts) for _ in range(REPS)]
            size = os.path.getsize(src[name]) / 1e6
            cols = "  ".join(f"{k} {statistics.median(r[k] for r in reps):.2f}"
                             if k == "daemon cpu s" else
                             f"{k} {statistics.median(r[k] for r in reps):.0f}" for k in reps[0])
            print(f"{name} ({size:.0f} MB): {cols}", flush=True)


if __name__ == "__main__":
    main()
