#!/usr/bin/python3
"""Checkpoints added, removed and replaced while mounted show up or vanish without a remount, and
a file open when its checkpoint is removed (and its blobs garbage-collected) stays readable,
with its old bytes, until it is closed, even after a new checkpoint takes the same name. A file
open in a checkpoint that stays unchanged follows the store (its snapshot moves to the newest
generation, so it pins no space) and keeps reading right."""

import errno
import os
import shutil

import fsutil as fu


def listed(mnt, name):
    return name in os.listdir(mnt)


def exists(path):
    return os.path.exists(path)


def main():
    fu.need_fuse()
    src = fu.charlm()
    base_src = os.path.join(src, "base.safetensors")
    qa_src = os.path.join(src, "finetuned_qa.safetensors")
    with fu.Workdir() as w:
        store, mnt = os.path.join(w, "store"), os.path.join(w, "mnt")
        _, orig = fu.pair_store(w, layers=1)  # "big" (no base) and "big-ft"
        fu.add(store, "base", base_src)

        # -d for the debug lines; a 1 MiB chunk cache so that late reads decode again.
        with fu.Mount(store, mnt, "-d", "-o", "cache_size=1") as m:
            big = os.path.join(mnt, "big", "big.safetensors")
            assert os.path.exists(big)  # cache a positive entry for a name that will vanish
            kept = os.open(os.path.join(mnt, "base", "base.safetensors"), os.O_RDONLY)

            # Added while mounted: appears, reads right.
            fu.add(store, "qa", qa_src, "--base", "base")
            fu.wait_for(lambda: listed(mnt, "qa"), "qa to appear")
            fu.wait_for(lambda: "an older snapshot now reads at" in m.log(),
                        "the snapshot holding base open to follow the store")
            qa = os.path.join(mnt, "qa", "finetuned_qa.safetensors")
            assert fu.sha256(qa) == fu.sha256(qa_src)

            # Open across rm + gc: the handle keeps the old snapshot.
            fd = os.open(qa, os.O_RDONLY)
            head = os.pread(fd, 4096, 0)
            fu.run(fu.DELTAFS, "rm", store, "qa")
            fu.run(fu.DELTAFS, "gc", store)
            fu.wait_for(lambda: not listed(mnt, "qa") and not exists(qa), "qa to vanish")
            try:
                os.stat(qa)
                raise AssertionError("removed file still stats")
            except OSError as e:
                assert e.errno == errno.ENOENT, e

            # The same name again, other bytes: new lookups see them, the old handle does not.
            fu.add(store, "qa", base_src)
            fu.wait_for(lambda: exists(os.path.join(mnt, "qa", "base.safetensors")),
                        "the new qa to appear")
            assert os.listdir(os.path.join(mnt, "qa")) == ["base.safetensors"]
            assert fu.sha256(os.path.join(mnt, "qa", "base.safetensors")) == fu.sha256(base_src)
            # Drop the old inode's page cache so these reads reach the old snapshot for real.
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            with open(qa_src, "rb") as f:
                want = f.read()
            assert os.fstat(fd).st_size == len(want)
            got = b"".join(os.pread(fd, 1 << 16, off) for off in range(0, len(want), 1 << 16))
            assert got == want and got[:4096] == head, "open file changed under its reader"
            os.close(fd)

            # Replaced in place (same name, same path, new manifest): new bytes, new inode.
            f1 = os.path.join(mnt, "big", "big.safetensors")
            ino = os.stat(f1).st_ino
            assert fu.sha256(f1) == fu.sha256(orig["big"])
            fu.run(fu.DELTAFS, "rm", store, "big-ft")  # it has "big" as base
            alt = os.path.join(w, "alt", "big.safetensors")  # other bytes, same file name
            os.makedirs(os.path.dirname(alt))
            shutil.copy(orig["big-ft"], alt)
            fu.add(store, "big", alt, "--replace")
            fu.wait_for(lambda: os.stat(f1).st_ino != ino, "the replaced file's new inode")
            assert fu.sha256(f1) == fu.sha256(orig["big-ft"])
            assert not listed(mnt, "big-ft")

            # Removed while mounted, nothing open: gone, and the rest is untouched.
            fu.run(fu.DELTAFS, "rm", store, "qa")
            fu.wait_for(lambda: not listed(mnt, "qa"), "qa to vanish again")
            assert sorted(os.listdir(mnt)) == ["base", "big"]
            assert fu.sha256(os.path.join(mnt, "base", "base.safetensors")) == \
                fu.sha256(base_src)
            assert "generation" in m.log()
            os.posix_fadvise(kept, 0, 0, os.POSIX_FADV_DONTNEED)
            with open(base_src, "rb") as f:
                want = f.read()
            got = b"".join(os.pread(kept, 1 << 16, o) for o in range(0, len(want), 1 << 16))
            assert got == want, "a file open across the changes reads wrong"
            os.close(kept)
    print("ok")


if __name__ == "__main__":
    main()
