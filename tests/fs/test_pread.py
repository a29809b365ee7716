#!/usr/bin/python3
"""10,000 random preads through the mount (odd offsets, 1 B to 8 MiB, around the header end and
tensor and chunk boundaries, past EOF) on a generated base and its delta-stored fine-tune, each
compared with the original file. The chunk cache is 1 MiB and the page cache is dropped every 200
reads, so the daemon decodes, evicts and decodes again throughout."""

import os

import numpy as np

import fsutil as fu


def main():
    fu.need_fuse()
    rng = np.random.default_rng(20241125)
    with fu.Workdir() as w:
        store, orig = fu.pair_store(w)
        mnt = os.path.join(w, "mnt")
        with fu.Mount(store, mnt, "-o", "cache_size=1"):
            for name, path in orig.items():
                fu.compare_reads(fu.mounted_path(mnt, name, path), path,
                                 fu.random_reads(rng, path, 5000), drop_every=200)
    print("ok")


if __name__ == "__main__":
    main()
