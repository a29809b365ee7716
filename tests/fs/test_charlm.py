#!/usr/bin/python3
"""The real charlm base and its full fine-tune (stored as a delta) through a real mount: names,
bytes (sha256, numpy.memmap of every tensor, mmap), attributes, stable inode numbers across a
remount, extended attributes, statfs, and EROFS for every way of writing."""

import errno
import mmap
import os
import stat
import time

import numpy as np

import fsutil as fu


def expect_erofs(what, fn):
    try:
        fn()
    except OSError as e:
        assert e.errno == errno.EROFS, f"{what}: {e} (want EROFS)"
        return
    raise AssertionError(f"{what} succeeded on a read-only mount")


def check_views(mnt, src, names):
    assert sorted(os.listdir(mnt)) == sorted(names), os.listdir(mnt)
    for name, fname in names.items():
        orig = os.path.join(src, fname)
        path = os.path.join(mnt, name, fname)
        assert os.listdir(os.path.join(mnt, name)) == [fname]
        assert fu.sha256(path) == fu.sha256(orig), path

        mine, theirs = fu.st_memmap(path), fu.st_memmap(orig)
        assert mine.keys() == theirs.keys()
        for t in theirs:
            assert mine[t].dtype == theirs[t].dtype and mine[t].shape == theirs[t].shape, t
            assert np.array_equal(mine[t], theirs[t]), f"{path}: tensor {t} differs"

        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
            with open(orig, "rb") as g:
                assert m[:] == g.read(), f"{path}: mmap differs"


def main():
    fu.need_fuse()
    src = fu.charlm()
    names = {"base": "base.safetensors", "qa": "finetuned_qa.safetensors"}
    with fu.Workdir() as w:
        store, mnt = os.path.join(w, "store"), os.path.join(w, "mnt")
        t0 = time.time()
        fu.add(store, "base", os.path.join(src, names["base"]))
        fu.add(store, "qa", os.path.join(src, names["qa"]), "--base", "base")
        t1 = time.time()

        with fu.Mount(store, mnt):
            check_views(mnt, src, names)

            st = os.stat(mnt)
            assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o555
            assert st.st_nlink == 4, st.st_nlink  # ., .., base, qa
            inos = {}
            for name, fname in names.items():
                d = os.stat(os.path.join(mnt, name))
                assert stat.S_ISDIR(d.st_mode) and stat.S_IMODE(d.st_mode) == 0o555
                path = os.path.join(mnt, name, fname)
                s = os.stat(path)
                assert stat.S_ISREG(s.st_mode) and stat.S_IMODE(s.st_mode) == 0o444
                assert s.st_size == os.path.getsize(os.path.join(src, fname))
                assert int(t0) <= s.st_mtime <= t1 + 1, (s.st_mtime, t0, t1)  # ingest time
                inos[path] = s.st_ino
                inos[os.path.join(mnt, name)] = d.st_ino

                # What `getfattr -d` shows: the codec(s) and the stored size.
                assert sorted(os.listxattr(path)) == ["user.deltafs.codec", "user.deltafs.stored"]
                codecs = os.getxattr(path, "user.deltafs.codec").decode().split(",")
                assert codecs and set(codecs) <= {"lossless", "deltadq", "palette"}, codecs
                stored = int(os.getxattr(path, "user.deltafs.stored"))
                assert 0 < stored < s.st_size, stored
                try:
                    os.getxattr(path, "user.deltafs.nope")
                    raise AssertionError("unknown xattr answered")
                except OSError as e:
                    assert e.errno == errno.ENODATA, e
            assert os.getxattr(os.path.join(mnt, "qa"), "user.deltafs.base") == b"base"
            assert len(set(inos.values())) == len(inos)

            sv = os.statvfs(mnt)
            assert sv.f_files == 2 and sv.f_blocks > 0, sv
            assert sv.f_blocks * sv.f_frsize == os.path.getsize(os.path.join(store, "data.mdb"))

            f = os.path.join(mnt, "qa", names["qa"])
            expect_erofs("open O_RDWR", lambda: os.open(f, os.O_RDWR))
            expect_erofs("open O_WRONLY", lambda: os.open(f, os.O_WRONLY))
            expect_erofs("open O_TRUNC", lambda: os.open(f, os.O_RDONLY | os.O_TRUNC))
            expect_erofs("create", lambda: open(os.path.join(mnt, "qa", "new"), "wb"))
            expect_erofs("unlink", lambda: os.unlink(f))
            expect_erofs("mkdir", lambda: os.mkdir(os.path.join(mnt, "x")))
            expect_erofs("rename", lambda: os.rename(f, f + ".2"))
            expect_erofs("chmod", lambda: os.chmod(f, 0o644))
            expect_erofs("setxattr", lambda: os.setxattr(f, "user.x", b"1"))

        # Inode numbers are a function of (checkpoint, path, manifest): same after a remount.
        with fu.Mount(store, mnt):
            for path, ino in inos.items():
                assert os.stat(path).st_ino == ino, path

        # A lossy fine-tune reads through the mount as exactly the bytes `deltafs export` writes
        # (whole file, mmap, and random preads across chunk edges with the page cache dropped).
        fu.add(store, "qa16", os.path.join(src, names["qa"]), "--base", "base",
               "--codec", "deltadq", "--ratio", "16")
        out = os.path.join(w, "export")
        fu.run(fu.DELTAFS, "export", store, "qa16", out)
        ref = os.path.join(out, names["qa"])
        assert fu.sha256(ref) != fu.sha256(os.path.join(src, names["qa"])), "not stored lossy"
        with fu.Mount(store, mnt):
            path = os.path.join(mnt, "qa16", names["qa"])
            assert "deltadq" in os.getxattr(path, "user.deltafs.codec").decode().split(",")
            assert fu.sha256(path) == fu.sha256(ref), "DeltaDQ: mount and export differ"
            with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
                with open(ref, "rb") as g:
                    assert m[:] == g.read(), "DeltaDQ: mmap differs from export"
            fu.compare_reads(path, ref, fu.random_reads(np.random.default_rng(16), path, 300),
                             drop_every=50)
    print("ok")


if __name__ == "__main__":
    main()
