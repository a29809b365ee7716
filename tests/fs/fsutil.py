"""Shared by the mount tests: skip rules, stores built with the real CLIs, a mount that is always
taken down, and the reference checks (sha256, safetensors tensors as numpy arrays).

Every test mounts for real: $BUILD/fs/mount.deltafs -f in the background, waited for with
os.path.ismount, unmounted with fusermount3 -u in a finally (the daemon is killed if it does not
exit by itself), temp dirs removed. Exit 77 (meson's skip) when /dev/fuse cannot be opened or the
shared data a test needs is absent.
"""

import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

SKIP = 77
BUILD = os.environ.get("BUILD", "")
SHARED = os.environ.get("SHARED", "")
MOUNT = os.path.join(BUILD, "fs", "mount.deltafs")
ADD = os.path.join(BUILD, "tools", "deltafs-add")
DELTAFS = os.path.join(BUILD, "tools", "deltafs")
HERE = os.path.dirname(os.path.abspath(__file__))
GENMODEL = os.path.join(HERE, "..", "data", "genmodel.py")

# How long to wait for things that happen "within about a second" before calling it a failure.
# Generous on purpose: the machine may be loaded; this bounds a hang, it measures nothing.
PATIENCE = 20.0


def skip(why):
    print("SKIP:", why)
    sys.exit(SKIP)


def need_fuse():
    if not os.path.exists(MOUNT):
        sys.exit(f"{MOUNT} is not built")
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
    except OSError as e:
        skip(f"/dev/fuse is not usable here ({e.strerror})")
    if os.geteuid() != 0 and not shutil.which("fusermount3"):
        skip("not root and no fusermount3")


def charlm():
    d = os.path.join(SHARED, "data", "charlm")
    if not SHARED or not os.path.isfile(os.path.join(d, "base.safetensors")):
        skip("the shared charlm data is absent")
    return d


def run(*args, check=True):
    p = subprocess.run([str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True)
    if check and p.returncode:
        raise AssertionError(f"{' '.join(map(str, args))}: exit {p.returncode}\n{p.stdout}{p.stderr}")
    return p


def add(store, name, path, *opts):
    run(ADD, store, name, path, "-q", *opts)


def genmodel(*args):
    """A generated model (tests/data/genmodel.py): --hf-dir or --out in args."""
    run(sys.executable, GENMODEL, "-q", *args)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def files_under(d):
    """Relative paths of the regular files under d, sorted."""
    out = []
    for root, _, names in os.walk(d):
        out += [os.path.relpath(os.path.join(root, n), d) for n in names]
    return sorted(out)


def wait_for(pred, what):
    deadline = time.monotonic() + PATIENCE
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting ({PATIENCE:.0f} s) for {what}")
        time.sleep(0.05)


class Workdir:
    """A temp dir removed on exit (after any mount under it is gone)."""

    def __enter__(self):
        self.path = tempfile.mkdtemp(prefix="deltafs-fs-")
        return self.path

    def __exit__(self, *exc):
        shutil.rmtree(self.path, ignore_errors=True)


def unmount(mnt):
    """Lazily, so that a test failing with files open still leaves nothing mounted."""
    if os.path.ismount(mnt):
        cmd = ["fusermount3", "-u", "-z"] if shutil.which("fusermount3") else ["umount", "-l"]
        subprocess.run(cmd + [mnt], stderr=subprocess.DEVNULL)


class Mount:
    """mount.deltafs STORE MNT -f [opts] for the duration of a with-block; .log() is its stderr."""

    def __init__(self, store, mnt, *opts):
        self.store, self.mnt, self.opts = store, mnt, opts
        self.errpath = mnt.rstrip("/") + ".log"

    def __enter__(self):
        os.makedirs(self.mnt, exist_ok=True)
        self.err = open(self.errpath, "w")
        self.proc = subprocess.Popen([MOUNT, self.store, self.mnt, "-f", *self.opts],
                                     stdout=subprocess.DEVNULL, stderr=self.err)
        try:
            wait_for(lambda: os.path.ismount(self.mnt) or self.proc.poll() is not None,
                     "the mount")
            if not os.path.ismount(self.mnt):
                raise AssertionError(f"mount.deltafs exited {self.proc.returncode}: {self.log()}")
        except BaseException:
            self.stop()
            raise
        return self

    def log(self):
        if not self.err.closed:
            self.err.flush()
        with open(self.errpath) as f:
            return f.read()

    def stop(self):
        """Unmount and reap the daemon; returns its exit status."""
        unmount(self.mnt)
        try:
            self.proc.wait(timeout=PATIENCE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.err.close()
        return self.proc.returncode

    def __exit__(self, exc_type, *exc):
        rc = self.stop()
        if exc_type is None and rc != 0:
            raise AssertionError(f"mount.deltafs exited {rc}: {self.log()}")


def terminate(mount):
    """Stop a Mount with SIGTERM instead of fusermount3 (the daemon must unmount itself)."""
    mount.proc.send_signal(signal.SIGTERM)
    mount.proc.wait(timeout=PATIENCE)


# --- safetensors, read the way loaders read them -----------------------------------------------

NP_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "U8": np.uint8,
             "I8": np.int8, "I32": np.int32, "I64": np.int64, "F64": np.float64,
             "I16": np.int16, "U16": np.uint16, "U32": np.uint32, "U64": np.uint64,
             "BOOL": np.bool_}


def st_header(path):
    """(header dict without __metadata__, data start offset)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
    h.pop("__metadata__", None)
    return h, 8 + n


def st_memmap(path):
    """{name: numpy.memmap of the tensor}, as safetensors' numpy loader maps them."""
    h, start = st_header(path)
    out = {}
    for name, t in h.items():
        b, e = t["data_offsets"]
        dt = np.dtype(NP_DTYPES[t["dtype"]])
        if e == b:
            out[name] = np.zeros(t["shape"], dt)
            continue
        out[name] = np.memmap(path, dtype=dt, mode="r", offset=start + b, shape=tuple(t["shape"]))
    return out


def boundaries(path, chunk=128 << 10):
    """Offsets where reads are likely to go wrong: header end, every tensor's start and end, and
    the chunk boundaries inside tensors (chunk: deltafs-add's default chunk size)."""
    h, start = st_header(path)
    out = {0, 8, start, os.path.getsize(path)}
    for t in h.values():
        b, e = t["data_offsets"]
        out.update((start + b, start + e))
        out.update(start + b + k for k in range(chunk, e - b, chunk))
    return sorted(out)


def pair_store(w, layers=6):
    """A store with a generated single-file base ("big", ~10 MB at 6 layers) and a fine-tune of it
    stored as deltas ("big-ft"). Returns (store, {checkpoint: original file})."""
    orig = {"big": os.path.join(w, "big.safetensors"), "big-ft": os.path.join(w, "ft.safetensors")}
    genmodel("--preset", "tiny", "--layers", str(layers), "--out", orig["big"])
    genmodel("--preset", "tiny", "--layers", str(layers), "--finetune", "3", "--out",
             orig["big-ft"])
    store = os.path.join(w, "store")
    add(store, "big", orig["big"])
    add(store, "big-ft", orig["big-ft"], "--base", "big")
    return store, orig


def mounted_path(mnt, name, orig):
    return os.path.join(mnt, name, os.path.basename(orig))


def random_reads(rng, path, n):
    """n (offset, size) pairs over file path: half near a boundary (header end, tensor and chunk
    edges) give or take a few bytes, half anywhere; sizes log-uniform from 1 B to 8 MiB; many end
    past EOF."""
    edges = boundaries(path)
    size = os.path.getsize(path)
    out = []
    for _ in range(n):
        if rng.random() < 0.5:
            off = int(edges[rng.integers(len(edges))]) + int(rng.integers(-7, 8))
        else:
            off = int(rng.integers(0, size))
        off = min(max(off, 0), size + 3)
        out.append((off, int(np.exp(rng.uniform(0, np.log(8 << 20))))))
    return out


def compare_reads(mounted, orig, reads, drop_every=0):
    """pread each (offset, size) from both files and compare; every drop_every reads, drop the
    mounted file's page cache so the daemon serves the next ones again."""
    fm, fo = os.open(mounted, os.O_RDONLY), os.open(orig, os.O_RDONLY)
    try:
        for i, (off, n) in enumerate(reads):
            if drop_every and i % drop_every == 0:
                os.posix_fadvise(fm, 0, 0, os.POSIX_FADV_DONTNEED)
            a, b = os.pread(fm, n, off), os.pread(fo, n, off)
            if a != b:
                raise AssertionError(f"{mounted}: pread({n}, {off}) differs from the original "
                                     f"({len(a)} vs {len(b)} bytes)")
    finally:
        os.close(fm)
        os.close(fo)
