#!/usr/bin/python3
"""A mount does not keep the store from reusing space: after `deltafs rm` + `deltafs gc`, adding
checkpoints again grows data.mdb no more with an idle mount (no file open) than with none. (LMDB
cannot reuse pages freed by commits at or after its oldest reader; an idle mount must hold none.)

Ingests run single-threaded (-j 1), so the write transactions, and so the growth, are the same
from run to run. Two checkpoints are re-added because LMDB never lets the write transaction right
after a commit reuse what that commit freed: the second one is where a reader would show."""

import os

import fsutil as fu

XS = ("x1", "x2")


def regrowth(w, tag, mounted):
    """Bytes data.mdb grows by when x1 and x2 are added again after rm + gc."""
    store, mnt = os.path.join(w, "store-" + tag), os.path.join(w, "mnt-" + tag)
    src = os.path.join(w, "src")

    def add(name):
        fu.add(store, name, os.path.join(src, name + ".safetensors"), "-j", "1")

    for name in ("base",) + XS:
        add(name)

    def rm_gc_readd(before_gc=lambda: None):
        for x in XS:
            fu.run(fu.DELTAFS, "rm", store, x)
        before_gc()
        fu.run(fu.DELTAFS, "gc", store)
        size = os.path.getsize(os.path.join(store, "data.mdb"))
        for x in XS:
            add(x)
        return os.path.getsize(os.path.join(store, "data.mdb")) - size

    if not mounted:
        return rm_gc_readd()
    with fu.Mount(store, mnt, "-d") as m:  # -d: the debug lines say when readers are dropped
        for name in ("base",) + XS:
            fu.sha256(os.path.join(mnt, name, name + ".safetensors"))  # read through txns

        def settle():
            fu.wait_for(lambda: not set(XS) & set(os.listdir(mnt)), "x1 and x2 to vanish")
            seen = m.log().count("idle:")
            fu.wait_for(lambda: m.log().count("idle:") > seen, "the mount to drop its readers")

        return rm_gc_readd(settle)


def main():
    fu.need_fuse()
    with fu.Workdir() as w:
        src = os.path.join(w, "src")
        os.makedirs(src)
        for name, seed in (("base", 1), ("x1", 9), ("x2", 11)):
            fu.genmodel("--preset", "tiny", "--layers", "4", "--seed", str(seed), "--out",
                        os.path.join(src, name + ".safetensors"))
        alone = regrowth(w, "alone", False)
        mounted = regrowth(w, "mounted", True)
        slack = os.path.getsize(os.path.join(src, "x1.safetensors")) // 10
        assert mounted <= alone + slack, \
            f"re-adding grew the store by {mounted} bytes with an idle mount, {alone} without"
    print(f"ok: re-adding grew the store by {mounted} bytes with an idle mount, {alone} without")


if __name__ == "__main__":
    main()
