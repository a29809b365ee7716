#!/usr/bin/python3
"""What goes wrong, and how it shows: a missing, empty or corrupt store, a missing, non-directory
or busy mountpoint, a bad option: one clear line, exit status 1, nothing mounted. A damaged blob:
EIO for reads that touch it (and only those, to the page) and a log line naming checkpoint, file and tensor.
Starting detached with the options mount(8) and fstab pass, and stopping by fusermount3 -u or
SIGTERM: the mount comes and goes cleanly and the daemon exits."""

import errno
import json
import os
import struct
import subprocess

import numpy as np

import fsutil as fu


def refused(store, mnt, *args, want):
    """mount.deltafs must exit 1 with a message containing want, leaving nothing mounted."""
    was_mounted = os.path.ismount(mnt) if os.path.isdir(mnt) else False
    p = fu.run(fu.MOUNT, store, mnt, *args, check=False)
    assert p.returncode == 1, f"exit {p.returncode} for {store} {mnt} {args}: {p.stderr}"
    assert want in p.stderr, f"message {p.stderr!r} lacks {want!r}"
    assert len(p.stderr.strip().splitlines()) <= 3, p.stderr  # a message, not a dump
    if os.path.isdir(mnt):
        assert os.path.ismount(mnt) == was_mounted


def daemon_pids(mnt):
    """Processes running mount.deltafs on mnt (a detached daemon has no other handle)."""
    pids = []
    for d in os.listdir("/proc"):
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{d}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError, ValueError):
            continue
        if argv[0] == fu.MOUNT.encode() and mnt.encode() in argv and state != "Z":
            pids.append(int(d))
    return pids


def write_noise_model(path, rng):
    """A safetensors file whose tensor "noise" is 3 chunks of random bytes: random bytes do not
    compress, so the store keeps them verbatim and the test can find and damage one."""
    n = (3 << 18) - 1000
    noise = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    w = np.arange(16, dtype=np.float32).tobytes()
    hdr = {"noise": {"dtype": "U8", "shape": [n], "data_offsets": [0, n]},
           "w": {"dtype": "F32", "shape": [16], "data_offsets": [n, n + len(w)]}}
    h = json.dumps(hdr).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + noise + w)
    return 8 + len(h), noise


def damaged_blob(w, rng):
    store, mnt = os.path.join(w, "dstore"), os.path.join(w, "dmnt")
    os.makedirs(os.path.join(w, "noisy"))
    src = os.path.join(w, "noisy", "noise.safetensors")
    start, noise = write_noise_model(src, rng)
    fu.add(store, "noisy", src)
    # Flip one byte inside the second chunk's blob (ingest's default chunk: 128 KiB).
    chunk = 128 << 10
    needle = noise[chunk + 1000:chunk + 1064]
    data = os.path.join(store, "data.mdb")
    with open(data, "r+b") as f:
        buf = f.read()
        at = buf.find(needle)
        assert at >= 0 and buf.find(needle, at + 1) < 0, "blob bytes not found once in data.mdb"
        f.seek(at + 10)
        f.write(bytes([buf[at + 10] ^ 0x40]))
    with fu.Mount(store, mnt) as m:
        path = os.path.join(mnt, "noisy", "noise.safetensors")
        fd = os.open(path, os.O_RDONLY)
        try:
            with open(src, "rb") as f:
                orig = f.read()
            # The kernel reads whole pages: the pages holding any byte of chunk 1 fail, the
            # others (both sides of it) read right.
            page = os.sysconf("SC_PAGE_SIZE")
            c1, c2 = start + chunk, start + 2 * chunk
            lo, hi = c1 // page * page, -(-c2 // page) * page
            for off, n in ((0, 4096), (lo - 100, 100), (hi, 5000)):
                assert os.pread(fd, n, off) == orig[off:off + n], (off, n)
            for off in (c1, c1 + 1001, c2 - 1, lo, hi - 1):
                try:
                    os.pread(fd, 1, off)
                    raise AssertionError(f"read at {off} of a damaged chunk succeeded")
                except OSError as e:
                    assert e.errno == errno.EIO, e
        finally:
            os.close(fd)
        try:
            fu.sha256(path)
            raise AssertionError("reading the whole damaged file succeeded")
        except OSError as e:
            assert e.errno == errno.EIO, e
        log = m.log()
        line = next((l for l in log.splitlines() if "hash" in l), "")
        for word in ('"noisy"', "noise.safetensors", '"noise"'):
            assert word in line, f"log line {line!r} lacks {word} (log: {log})"


def main():
    fu.need_fuse()
    rng = np.random.default_rng(7)
    with fu.Workdir() as w:
        mnt = os.path.join(w, "mnt")
        os.makedirs(mnt)
        src = os.path.join(w, "one")
        os.makedirs(src)
        with open(os.path.join(src, "config.json"), "w") as f:
            json.dump({"model_type": "test"}, f)
        store = os.path.join(w, "store")
        fu.add(store, "one", src)

        # Bad stores: nothing mounted, in the foreground and detached alike.
        refused(os.path.join(w, "nope"), mnt, "-f", want="nope")
        refused(os.path.join(w, "nope"), mnt, want="nope")
        os.makedirs(os.path.join(w, "empty"))
        refused(os.path.join(w, "empty"), mnt, "-f", want="empty")
        os.makedirs(os.path.join(w, "junk"))
        with open(os.path.join(w, "junk", "data.mdb"), "wb") as f:
            f.write(rng.integers(0, 256, 1 << 16, dtype=np.uint8).tobytes())
        refused(os.path.join(w, "junk"), mnt, "-f", want="junk")

        # Bad mountpoints and options.
        refused(store, os.path.join(w, "nomnt"), "-f", want="nomnt")
        refused(store, os.path.join(src, "config.json"), "-f", want="not a directory")
        refused(store, mnt, "-f", "-o", "no_such_option", want="")
        refused(store, mnt, "-f", "-o", "cache_size=0", want="cache_size")
        with fu.Mount(store, mnt):
            refused(store, mnt, "-f", want="busy")
            refused(store, mnt, want="busy")
            assert os.listdir(os.path.join(mnt, "one")) == ["config.json"]

        # Detached, as mount(8) runs the helper for `mount -t deltafs` or an fstab line.
        p = fu.run(fu.MOUNT, store, mnt, "-s", "-n", "-v", "-o",
                   "rw,defaults,noauto,user,_netdev,nofail,x-systemd.automount,comment=x,"
                   "allow_other,cache_size=8,threads=4,prefetch=1", check=False)
        try:
            assert p.returncode == 0, p.stderr
            assert os.path.ismount(mnt)  # mounted by the time the helper returns
            with open(os.path.join(mnt, "one", "config.json")) as f:
                assert json.load(f) == {"model_type": "test"}
            with open("/proc/self/mountinfo") as f:
                line = next(l for l in f if f" {mnt} " in l)
            assert " ro," in line and "fuse.deltafs" in line, line
            assert daemon_pids(mnt), "no daemon process"
        finally:
            fu.unmount(mnt)
            fu.wait_for(lambda: not daemon_pids(mnt), "the detached daemon to exit")

        # SIGTERM unmounts and exits 0, also with a file still open, whose handle then gets no
        # release from the kernel (the sanitizer build's LeakSanitizer fails the exit if the
        # daemon does not free it itself).
        for hold in (False, True):
            m = fu.Mount(store, mnt).__enter__()
            fd = None
            try:
                if hold:
                    fd = os.open(os.path.join(mnt, os.listdir(mnt)[0], "config.json"), os.O_RDONLY)
                    assert os.pread(fd, 1, 0) == b"{"
                fu.terminate(m)
                assert m.proc.returncode == 0, m.log()
            finally:
                if fd is not None:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
                m.stop()
            assert not os.path.ismount(mnt)

        damaged_blob(w, rng)
    print("ok")


if __name__ == "__main__":
    main()
