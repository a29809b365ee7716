#!/usr/bin/python3
"""Reliability trials (issue 8): crash safety, corruption, disk full, descriptors, memory,
concurrency, and the security rules, driven through the real binaries as a user would run them.

Each scenario is a function taking a work directory, a trial count (or a duration), a seeded
random generator and a Stats object; the short tests run them small (reliability.py CASE, one
meson test per case) and tests/stress/stress.py runs the same functions long and prints the Stats
as a table. In a test the first failed check raises; under the stress script (Stats.keep_going) a
failed trial is counted, its message kept, the fixture rebuilt, and the run goes on.

What "damage" means here is exact, not statistical: tests/reliability/storedump reports where each
record's value lies in data.mdb and what each manifest refers to, so a trial flips a bit at a known
place and derives from the manifests precisely which byte ranges of which files must now fail
(every chunk naming the blob, and every chunk of a fine-tune built on one of those), and checks
both sides: EIO for the pages that touch them, the original bytes for every other page.

Nothing here asserts on time. Kills land at random moments drawn from the measured length of an
uninterrupted run; waits are for conditions, bounded by fsutil.PATIENCE only to end a hang.

Exit 77 (skip) when what a case needs is absent: /dev/fuse, root for a tmpfs.
"""

import collections
import contextlib
import errno
import faulthandler
import json
import mmap
import multiprocessing
import os
import queue
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "fs"))
import fsutil as fu  # noqa: E402  (reads BUILD and SHARED from the environment)

BUILD = fu.BUILD
ADD, DFS, MOUNT = fu.ADD, fu.DELTAFS, fu.MOUNT
STOREDUMP = os.environ.get("STOREDUMP") or os.path.join(BUILD, "tests", "reliability", "storedump")
SKIP = 77
PAGE = os.sysconf("SC_PAGE_SIZE")
MiB = 1 << 20


# --- bookkeeping --------------------------------------------------------------------------------

class Stats:
    """Counts for one scenario: trials, failures (with their messages), bytes compared with the
    original, and how the trials fell (outcome -> count), for the stress script's table."""

    def __init__(self, name, keep_going=False):
        self.name, self.keep_going = name, keep_going
        self.trials = self.failures = self.bytes = 0
        self.outcomes = collections.Counter()
        self.errors = []
        self.info = {}

    def trial(self, fn, *args):
        """Run one trial; True if it passed. Outside keep_going a failure propagates."""
        self.trials += 1
        try:
            fn(*args)
            return True
        except Exception as e:  # noqa: BLE001 -- any exception is a failed trial
            self.failures += 1
            self.errors.append(f"trial {self.trials}: {type(e).__name__}: {e}\n"
                               + "".join(traceback.format_tb(e.__traceback__)[-3:]))
            if not self.keep_going:
                raise
            return False


def run(*args, ok=True, env=None, timeout=600):
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env,
                       errors="replace", timeout=timeout)
    if ok and p.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))}: exit {p.returncode}\n"
                             f"{p.stdout}{p.stderr}")
    return p


def no_crash(p, what):
    """A command that met bad input must end by itself with a message, not by a signal or a
    sanitizer report."""
    out = (p.stdout or "") + (p.stderr or "")
    assert p.returncode >= 0, f"{what}: killed by signal {-p.returncode}\n{out}"
    for word in ("AddressSanitizer", "runtime error:", "LeakSanitizer", "Segmentation fault"):
        assert word not in out, f"{what}: {word}\n{out}"


def clear_error(p, what, *words):
    """Exit status 1 and a short message holding every word."""
    no_crash(p, what)
    assert p.returncode == 1, f"{what}: exit {p.returncode}, expected 1\n{p.stdout}{p.stderr}"
    err = p.stderr.strip()
    assert err and len(err.splitlines()) <= 12, f"{what}: no message, or a dump:\n{err}"
    for w in words:
        assert w in err, f"{what}: message lacks {w!r}:\n{err}"


def sha256(path):
    return fu.sha256(path)


def gen(*args):
    fu.genmodel(*args)


def dump(store):
    p = subprocess.run([STOREDUMP, store], capture_output=True)
    assert p.returncode == 0, f"storedump {store}: {p.stderr.decode(errors='replace')}"
    return json.loads(p.stdout.decode(errors="surrogateescape"))


def names(store):
    out = run(DFS, "ls", store).stdout.splitlines()[1:-1]
    return sorted(line.split()[0] for line in out)


def live_blobs(d):
    return {b["hash"] for b in d["blobs"]}


def referenced(d, ckpts=None):
    """Hashes of the blobs the manifests (all, or those named) refer to."""
    out = set()
    for c in d["ckpts"]:
        if "error" in c or (ckpts is not None and c["key"] not in ckpts):
            continue
        for f in c["files"]:
            for seg in f["segs"]:
                out.update(h for h in seg[5] if h)
    return out


def check_clean(store, d=None):
    """After gc: every blob referenced, every referenced blob present, refcounts consistent."""
    d = d or dump(store)
    garbage = [b["hash"] for b in d["blobs"] if b["refs"] <= 0]
    assert not garbage, f"{len(garbage)} blobs at refcount 0 (or without a refs record) after gc"
    assert d["refs_without_blob"] == 0, f"{d['refs_without_blob']} refs records without a blob"
    assert live_blobs(d) == referenced(d), "blobs present differ from the blobs manifests name"
    return d


def verify_ok(store):
    r = run(DFS, "verify", store, ok=False)
    no_crash(r, "verify")
    assert r.returncode == 0 and " 0 problems" in r.stdout, f"verify failed:\n{r.stdout}{r.stderr}"
    return r


def flip(path, off, mask):
    with open(path, "r+b") as f:
        f.seek(off)
        b = f.read(1)[0]
        f.seek(off)
        f.write(bytes([b ^ mask]))


def wait_names(mnt, want):
    fu.wait_for(lambda: sorted(os.listdir(mnt)) == sorted(want), f"the mount to list {want}")


def has_asan(pid):
    with open(f"/proc/{pid}/maps") as f:
        return any("libasan" in line or "libubsan" in line for line in f)


def need_fuse():
    fu.need_fuse()  # exits 77 without a usable /dev/fuse


class Models:
    """Generated checkpoints, made once per work directory (genmodel is deterministic)."""

    def __init__(self, w):
        self.d = os.path.join(w, "models")
        os.makedirs(self.d, exist_ok=True)

    def get(self, name):
        p = os.path.join(self.d, name)
        if os.path.exists(p):
            return p
        tiny = ("--preset", "tiny")
        big = tiny + ("--hidden", "512", "--intermediate", "1536", "--layers", "8",
                      "--vocab", "8192")
        recipes = {
            # ~71 MB BF16: an ingest long enough to be killed in the middle (2 batches at -j 1)
            "kb.safetensors": big + ("--seed", "11"),
            "kf.safetensors": big + ("--seed", "11", "--finetune", "12"),
            # ~8 MB F32 base, a fine-tune of it, another fine-tune for churn
            "b.safetensors": tiny + ("--dtype", "F32", "--seed", "21"),
            "f.safetensors": tiny + ("--dtype", "F32", "--seed", "21", "--finetune", "22"),
            "g.safetensors": tiny + ("--dtype", "F32", "--seed", "21", "--finetune", "23"),
            # ~1.5 MB BF16 model directory in 2 shards with config and tokenizer files
            "hf": tiny + ("--seed", "31", "--layers", "2", "--shards", "2"),
            "hf2": tiny + ("--seed", "32", "--layers", "1"),
            # ~24 MB: too big for the disk-full tmpfs once a base is in it
            "d.safetensors": tiny + ("--dtype", "F32", "--seed", "41", "--layers", "6"),
        }
        args = recipes[name]
        gen(*args, "--hf-dir" if name.startswith("hf") else "--out", p)
        return p


def add(store, name, src, *opts, ok=True):
    return run(ADD, "-q", store, name, src, *opts, ok=ok)


def export_ref(w, store, name):
    """The checkpoint's files as deltafs decodes them (for lossy ones, not the original)."""
    out = os.path.join(w, "ref", name)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    run(DFS, "export", store, name, out)
    return out


# --- crash safety -------------------------------------------------------------------------------

def kill_at(argv, delay):
    """Start argv and SIGKILL it after delay seconds unless it ended first (then it must have
    succeeded). Returns whether it was killed."""
    p = subprocess.Popen([str(a) for a in argv], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    try:
        p.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        p.stderr.close()
        return True
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    assert p.returncode == 0, f"{argv} failed on its own ({p.returncode}): {err}"
    return False


def moment(rng, i, trials, span):
    """When to kill in trial i (1-based) of trials alternating between two kinds: a random moment
    in [0, span), stratified over each kind's trials so that even a handful of them spread over
    the whole run instead of bunching by chance."""
    n = (trials + 1) // 2
    return span * ((i - 1) // 2 + rng.uniform(0, 1)) / n


def timed(argv):
    t = time.monotonic()
    run(*argv)
    return time.monotonic() - t


class KillFixture:
    """A store holding a ~71 MB base ("base") and a small model directory ("keep"); the victim
    of each trial is a fine-tune of the base, stored as deltas (--base) or whole (-j 1: two
    batches of blobs, then the commit). The blob set of the fixture is the reference that gc must
    return to."""

    def __init__(self, w, models):
        self.store = os.path.join(w, "kill-store")
        shutil.rmtree(self.store, ignore_errors=True)
        self.kb, self.kf = models.get("kb.safetensors"), models.get("kf.safetensors")
        add(self.store, "base", self.kb)
        add(self.store, "keep", models.get("hf"))
        self.base_names = ["base", "keep"]
        self.blobs0 = live_blobs(check_clean(self.store))
        self.kf_sha = sha256(self.kf)
        self.argv = {"delta": [ADD, "-q", self.store, "victim", self.kf, "--base", "base"],
                     "plain": [ADD, "-q", "-j", "1", self.store, "victim", self.kf]}
        self.t = {}
        for kind, argv in self.argv.items():
            self.t[kind] = timed(argv)
            self.reset()
        self.mnt = None

    def reset(self):
        if "victim" in names(self.store):
            run(DFS, "rm", self.store, "victim")
        run(DFS, "gc", self.store)
        d = check_clean(self.store)
        assert live_blobs(d) == self.blobs0, "rm + gc did not bring the store back to its blobs"

    def victim_ok(self, w):
        out = os.path.join(w, "victim-out")
        shutil.rmtree(out, ignore_errors=True)
        run(DFS, "export", self.store, "victim", out)
        got = sha256(os.path.join(out, os.path.basename(self.kf)))
        shutil.rmtree(out)
        assert got == self.kf_sha, "the victim checkpoint reads back wrong"


def after_crash(fx, w, st, note):
    """The checks after any killed writer: the store opens, verify passes, the victim is there
    whole or not at all, the mount (if any) agrees. Returns whether the victim is there.

    A writer killed just after LMDB wrote its meta page, but before it published the new
    transaction id in lock.mdb, leaves readers of an environment that another process keeps open
    (the mount) on the previous state, until the next writer recovers the dead one's lock
    (LMDB 0.9's robust mutex). Both states are whole; the checks look at both: what readers see
    at once, and after `deltafs init` (a no-op write transaction on an existing store)."""
    allowed = (fx.base_names, sorted(fx.base_names + ["victim"]))
    seen = names(fx.store)
    assert seen in allowed, f"{note}: checkpoints after the kill: {seen}"
    run(DFS, "init", fx.store)
    present = names(fx.store)
    assert present in allowed, f"{note}: checkpoints after the kill: {present}"
    if seen != present:
        st.outcomes["readers saw the state before the killed commit, until the next writer"] += 1
    verify_ok(fx.store)
    there = "victim" in present
    if there:
        fx.victim_ok(w)
        st.bytes += os.path.getsize(fx.kf)
    if fx.mnt:
        wait_names(fx.mnt, present)
    return there


def kill_trials(w, trials, st, trial, mount):
    """Run trial(fx, i) trials times on a KillFixture, under a mount of its store if asked (then
    every check also waits for the mount to list what the store holds, and killed processes leave
    the mount's LMDB environment behind them). A failed trial (stress runs) gets a new fixture."""
    models = Models(w)
    mnt = os.path.join(w, "kill-mnt")
    i = 0
    while i < trials:
        fx = KillFixture(w, models)
        with fu.Mount(fx.store, mnt) if mount else contextlib.nullcontext():
            fx.mnt = mnt if mount else None
            while i < trials:
                i += 1
                if not st.trial(trial, fx, i):
                    break
    return fx


def kill_add(w, trials, rng, st, mount=False):
    """SIGKILL deltafs-add at random moments; the dead ingest's blobs must go with gc and the
    same add must then succeed."""

    def trial(fx, i):
        kind = ("delta", "plain")[i % 2]
        killed = kill_at(fx.argv[kind], moment(rng, i, trials, 1.2 * fx.t[kind]))
        there = after_crash(fx, w, st, f"add {kind}")
        d = dump(fx.store)
        garbage = sum(1 for b in d["blobs"] if b["refs"] == 0)
        run(DFS, "gc", fx.store)
        d = check_clean(fx.store)
        want = fx.blobs0 | (referenced(d, {"victim"}) if there else set())
        assert live_blobs(d) == want, "gc left blobs of the dead ingest, or freed live ones"
        st.outcomes[("not killed: finished" if not killed else
                     "killed after its commit" if there else
                     "killed with blobs written" if garbage else
                     "killed before writing blobs") + f" ({kind})"] += 1
        if not there:
            run(*fx.argv[kind])  # the same add now succeeds
            fx.victim_ok(w)
            st.bytes += os.path.getsize(fx.kf)
        fx.reset()

    fx = kill_trials(w, trials, st, trial, mount)
    st.info["uninterrupted add (s)"] = " ".join(f"{k} {v:.2f}" for k, v in fx.t.items())


def kill_rm_gc(w, trials, rng, st, mount=False):
    """SIGKILL `deltafs rm` and `deltafs gc` at random moments. The victim is stored whole in
    4 KiB chunks (some 17,000 blobs), so that rm and gc have long transactions to be killed in.
    Either happens whole or not at all: rm leaves the checkpoint whole or gone with its refcounts
    dropped, gc frees all the garbage or none of it."""
    t = {}

    def small(fx):
        return [ADD, "-q", fx.store, "victim", fx.kf, "--chunk-size", "4"]

    def trial(fx, i):
        if not t:
            run(*small(fx))
            t["rm"] = timed([DFS, "rm", fx.store, "victim"])
            t["gc"] = timed([DFS, "gc", fx.store])
        run(*small(fx))
        if i % 2:
            killed = kill_at([DFS, "rm", fx.store, "victim"],
                             moment(rng, i, trials, 1.5 * t["rm"]))
            there = after_crash(fx, w, st, "rm")
            st.outcomes["rm " + ("not killed" if not killed else
                                 "killed before its commit" if there else
                                 "killed after its commit")] += 1
            if there:
                run(DFS, "rm", fx.store, "victim")
        else:
            run(DFS, "rm", fx.store, "victim")
            g0 = sum(1 for b in dump(fx.store)["blobs"] if b["refs"] == 0)
            killed = kill_at([DFS, "gc", fx.store], moment(rng, i, trials, 1.5 * t["gc"]))
            after_crash(fx, w, st, "gc")
            g = sum(1 for b in dump(fx.store)["blobs"] if b["refs"] == 0)
            assert g in (0, g0), f"a killed gc freed {g0 - g} of {g0} garbage blobs: not atomic"
            st.outcomes["gc " + ("not killed" if not killed else
                                 "killed before its commit" if g else
                                 "killed after its commit")] += 1
        fx.reset()

    kill_trials(w, trials, st, trial, mount)
    st.info["uninterrupted rm / gc (s)"] = f"{t['rm']:.3f} / {t['gc']:.3f}"


class EnvHolder:
    """Keeps a store's LMDB environment open in this process without any transaction, as an
    idle mount does. While an environment is open somewhere, LMDB does not reset its reader table
    when the next process opens it, so a dead process's reader slot stays unless deltafs clears
    it. (A real mount would do as well, but it also holds read transactions of its own for up to
    a poll period, which pin pages too and blur what is measured.)"""

    def __init__(self, store):
        import ctypes
        import ctypes.util
        self.lib = ctypes.CDLL(ctypes.util.find_library("lmdb") or "liblmdb.so.0")
        self.env = ctypes.c_void_p()
        assert self.lib.mdb_env_create(ctypes.byref(self.env)) == 0
        self.lib.mdb_env_set_maxdbs(self.env, 8)
        self.lib.mdb_env_set_mapsize(self.env, ctypes.c_size_t(1 << 40))
        rc = self.lib.mdb_env_open(self.env, store.encode(), 0x20000 | 0x200000, 0o600)
        assert rc == 0, f"mdb_env_open {store}: {rc}"  # MDB_RDONLY | MDB_NOTLS

    def close(self):
        self.lib.mdb_env_close(self.env)


def stale_reader(w, st):
    """A process killed inside a read transaction while another keeps the store open (a mount)
    leaves its LMDB reader slot behind. Unless the slot is cleared, it pins that old snapshot:
    no page freed after it (by gc) is reused, and the file grows by a checkpoint's size on each
    add/rm/gc cycle. The killed reader: `deltafs export`, held inside its read transaction by a
    FIFO in place of its output file."""
    models = Models(w)
    store = os.path.join(w, "stale-store")
    shutil.rmtree(store, ignore_errors=True)
    b, g = models.get("b.safetensors"), models.get("g.safetensors")
    add(store, "base", b)
    data = os.path.join(store, "data.mdb")
    holder = EnvHolder(store)
    try:
        out = os.path.join(w, "fifo-out")
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        fifo = os.path.join(out, os.path.basename(b) + ".deltafs-tmp")
        os.mkfifo(fifo)
        p = subprocess.Popen([DFS, "export", store, "base", out, "--force"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            rd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
            try:
                # Bytes in the FIFO: export is in rd_stream, inside its read transaction.
                fu.wait_for(lambda: bool(select.select([rd], [], [], 0)[0]),
                            "export to write into the FIFO")
            finally:
                os.close(rd)
        finally:
            p.kill()
            p.wait()
        sizes = []
        for _ in range(3):
            add(store, "cycle", g, "-j", "1")  # one writer: the same layout every cycle
            run(DFS, "rm", store, "cycle")
            run(DFS, "gc", store)
            sizes.append(os.path.getsize(data))
        verify_ok(store)
    finally:
        holder.close()
    st.trials += 1
    grow = sizes[2] - sizes[1]
    st.info["growth per add/rm/gc cycle"] = f"{grow / MiB:.1f} MiB"
    assert grow < 2 * MiB, (f"data.mdb grew by {grow} bytes in one add/rm/gc cycle after a "
                            f"reader was killed (sizes {sizes}): its slot pins freed pages")


# --- corruption ---------------------------------------------------------------------------------

def damage_map(d, bad_hash):
    """What a damaged blob breaks: ({(checkpoint, file index): [(start, end) byte ranges]},
    {(checkpoint, file index) naming the blob directly}). A chunk breaks if it names the blob, or
    if its segment has a base and the same chunk of the base segment broke (SAME chunks and deltas
    alike need it), down any chain of bases."""
    ck = {c["key"]: c for c in d["ckpts"] if "error" not in c}
    bad = set()
    for name, c in ck.items():
        for fi, f in enumerate(c["files"]):
            for si, seg in enumerate(f["segs"]):
                bad.update((name, fi, si, ci) for ci, h in enumerate(seg[5]) if h == bad_hash)
    direct = {(n, fi) for n, fi, _, _ in bad}
    grew = True
    while grew:
        grew = False
        for name, c in ck.items():
            for fi, f in enumerate(c["files"] if c["base"] else ()):
                for si, seg in enumerate(f["segs"]):
                    for ci in range(len(seg[5]) if seg[3] >= 0 else 0):
                        k = (name, fi, si, ci)
                        if k not in bad and (c["base"], seg[3], seg[4], ci) in bad:
                            bad.add(k)
                            grew = True
    ranges = collections.defaultdict(list)
    for name, fi, si, ci in bad:
        off, n, cs = ck[name]["files"][fi]["segs"][si][:3]
        ranges[(name, fi)].append((off + ci * cs, off + min((ci + 1) * cs, n)))
    return ranges, direct


def pages_of(ranges):
    out = set()
    for a, b in ranges:
        out.update(range(a // PAGE, (b - 1) // PAGE + 1))
    return out


def compare_file(path, ref, bad_pages, rng, st, piece=MiB):
    """pread the mounted file: a sample of the bad pages (first, last, a few between) must fail
    with EIO; every other page must equal the reference, read in pieces of up to 1 MiB."""
    size = os.path.getsize(ref)
    assert os.path.getsize(path) == size, f"{path}: size {os.path.getsize(path)} != {size}"
    fd, rfd = os.open(path, os.O_RDONLY), os.open(ref, os.O_RDONLY)
    try:
        bad = sorted(bad_pages)
        sample = set(bad[:1] + bad[-1:])
        if bad:
            sample.update(int(x) for x in rng.choice(bad, min(4, len(bad)), replace=False))
        for pg in sorted(sample):
            try:
                os.pread(fd, 1 + int(rng.integers(PAGE)), pg * PAGE)
            except OSError as e:
                assert e.errno == errno.EIO, f"{path}: page {pg}: {e}"
                continue
            raise AssertionError(f"{path}: page {pg} of a damaged chunk read without error")
        pg, npages = 0, -(-size // PAGE)
        while pg < npages:
            if pg in bad_pages:
                pg += 1
                continue
            end = pg
            while end < npages and end not in bad_pages and (end - pg) * PAGE < piece:
                end += 1
            a, n = pg * PAGE, min(end * PAGE, size) - pg * PAGE
            got, want = os.pread(fd, n, a), os.pread(rfd, n, a)
            assert got == want, f"{path}: bytes [{a}, +{n}) differ from the reference"
            st.bytes += n
            pg = end
    finally:
        os.close(fd)
        os.close(rfd)


class FlipFixture:
    """A store of five checkpoints that between them have every kind of chunk: a lossless base,
    a fine-tune as deltas, a fine-tune equal to its base (all SAME chunks), a sharded model
    directory with raw files, and a lossy palette base. Reference bytes: each checkpoint
    exported before any damage (the originals, for the lossless ones: checked here)."""

    def __init__(self, w, models):
        self.store = os.path.join(w, "flip-store")
        shutil.rmtree(self.store, ignore_errors=True)
        b = models.get("b.safetensors")
        add(self.store, "base", b)
        add(self.store, "ft", models.get("f.safetensors"), "--base", "base")
        add(self.store, "same", b, "--base", "base")
        add(self.store, "hf", models.get("hf"))
        add(self.store, "pal", models.get("hf2"), "--codec", "palette", "--bits", "4")
        self.data = os.path.join(self.store, "data.mdb")
        self.d = check_clean(self.store)
        self.ref = {c["key"]: export_ref(w, self.store, c["key"]) for c in self.d["ckpts"]}
        for name, src in (("base", b), ("ft", models.get("f.safetensors"))):
            assert sha256(os.path.join(self.ref[name], os.path.basename(src))) == sha256(src)
        assert fu.files_under(self.ref["hf"]) == fu.files_under(models.get("hf"))
        self.blobs = [b for b in self.d["blobs"] if b["refs"] > 0]


def bitflip(w, trials, rng, st):
    """Flip one bit of one blob inside data.mdb, then: verify reports every broken file and names
    the checkpoint; through a fresh mount the broken pages give EIO and every other byte of every
    checkpoint is right; then the bit goes back and verify passes again."""
    need_fuse()
    models = Models(w)
    fx = FlipFixture(w, models)
    mnt = os.path.join(w, "flip-mnt")

    def trial():
        blob = fx.blobs[int(rng.integers(len(fx.blobs)))]
        bit = int(rng.integers(blob["len"] * 8))
        ranges, direct = damage_map(fx.d, blob["hash"])
        flip(fx.data, blob["off"] + bit // 8, 1 << (bit % 8))
        try:
            check_flip(fx, mnt, ranges, direct, rng, st)
        finally:
            flip(fx.data, blob["off"] + bit // 8, 1 << (bit % 8))
        verify_ok(fx.store)
        st.outcomes[f"{len(direct)} file(s) naming the blob, {len(ranges)} broken"] += 1

    for _ in range(trials):
        if not st.trial(trial):
            fx = FlipFixture(w, models)


def check_flip(fx, mnt, ranges, direct, rng, st):
    r = run(DFS, "verify", fx.store, ok=False)
    no_crash(r, "verify")
    assert r.returncode == 1, f"verify missed a flipped bit (exit {r.returncode}):\n{r.stdout}"
    lines = [l for l in r.stderr.splitlines() if l.startswith("verify: ")]
    ck = {c["key"]: c for c in fx.d["ckpts"]}
    for name, fi in direct:
        want = f'checkpoint "{name}" file "{ck[name]["files"][fi]["path"]}"'
        assert any(want in l and "hash" in l for l in lines), \
            f"verify: no line with {want}:\n{r.stderr}"
    assert len(lines) >= len(ranges), f"verify reported {len(lines)} of {len(ranges)} broken files"
    for name in ck:
        r = run(DFS, "verify", fx.store, name, ok=False)
        no_crash(r, "verify " + name)
        broken = any(n == name for n, _ in ranges)
        assert r.returncode == int(broken), f"verify {name}: exit {r.returncode}, broken={broken}"
    with fu.Mount(fx.store, mnt) as m:
        for name, c in ck.items():
            for fi, f in enumerate(c["files"]):
                compare_file(os.path.join(mnt, name, f["path"]),
                             os.path.join(fx.ref[name], f["path"]),
                             pages_of(ranges.get((name, fi), ())), rng, st)
        log = m.log()
        assert any("hash" in l and any(f'"{n}"' in l for n, _ in direct)
                   for l in log.splitlines()), f"no log line names the damaged checkpoint:\n{log}"


def all_commands(store, name, out, mnt):
    """Every command that reads checkpoint `name` (and the mount, if mnt): name -> result. The
    mount's result also holds, in .listing, what its root showed."""
    res = {
        "ls": run(DFS, "ls", store, ok=False),
        "info": run(DFS, "info", store, name, ok=False),
        "verify": run(DFS, "verify", store, ok=False),
        "verify NAME": run(DFS, "verify", store, name, ok=False),
        "export": run(DFS, "export", store, name, out, "--force", ok=False),
    }
    if mnt:
        os.makedirs(mnt, exist_ok=True)
        # detached: it returns once mounted, or failed
        m = res["mount"] = run(MOUNT, store, mnt, ok=False, timeout=fu.PATIENCE * 3)
        m.listing = None
        if m.returncode == 0:  # it mounted: look, then take it down
            try:
                m.listing = sorted(os.listdir(mnt))
            finally:
                fu.unmount(mnt)
    return res


def damaged_meta(w, st):
    """Damage deltafs's own meta records and LMDB's meta pages: every command fails with one clear
    line naming the store, and nothing crashes."""
    models = Models(w)
    pristine = os.path.join(w, "meta-pristine")
    shutil.rmtree(pristine, ignore_errors=True)
    add(pristine, "base", models.get("hf2"))
    d = dump(pristine)
    fmt = next(m for m in d["meta"] if m["key"] == "format")
    with open(os.path.join(pristine, "data.mdb"), "rb") as f:
        f.seek(fmt["off"])
        fmt_now = f.read(8)
    mnt = os.path.join(w, "meta-mnt") if fuse_ok() else None

    def put(path, off, old, new):
        with open(path, "r+b") as f:
            f.seek(off)
            assert f.read(len(old)) == old, f"unexpected bytes at {off} of {path}"
            f.seek(off)
            f.write(new)

    cases = {
        # the format version becomes 99
        "format version": (lambda p: put(p, fmt["off"], fmt_now, struct.pack("<Q", 99)),
                           ["format version 99"]),
        # the record's key is no longer "format"
        "format key": (lambda p: put(p, fmt["off"] - 6, b"format", b"fxrmat"),
                       ["not a deltafs store"]),
        # the record's size (LMDB node header: u16 size low, u16 size high, flags, key size)
        "format size": (lambda p: put(p, fmt["off"] - 6 - 8, struct.pack("<H", 8),
                                      struct.pack("<H", 4)), ["format record"]),
        # both LMDB meta pages lose their magic number
        "lmdb meta pages": (lambda p: (put(p, 16, struct.pack("<I", 0xBEEFC0DE), b"\0\0\0\0"),
                                       put(p, PAGE + 16, struct.pack("<I", 0xBEEFC0DE),
                                           b"\0\0\0\0")), ["LMDB"]),
    }
    for case, (damage, words) in cases.items():
        def trial():
            store = os.path.join(w, "meta-store")
            shutil.rmtree(store, ignore_errors=True)
            shutil.copytree(pristine, store)
            damage(os.path.join(store, "data.mdb"))
            res = all_commands(store, "base", os.path.join(w, "meta-out"), mnt)
            res["add"] = add(store, "x", models.get("hf2"), ok=False)
            res["gc"] = run(DFS, "gc", store, ok=False)
            res["rm"] = run(DFS, "rm", store, "base", ok=False)
            for cmd, p in res.items():
                clear_error(p, f"{case}: {cmd}", store, *words)
            st.outcomes[case] += 1
        st.trial(trial)


def manifest_fixture(w, models):
    store = os.path.join(w, "mf-store")
    shutil.rmtree(store, ignore_errors=True)
    add(store, "base", models.get("b.safetensors"))
    add(store, "ft", models.get("f.safetensors"), "--base", "base")
    add(store, "hf", models.get("hf"))
    d = dump(store)
    ref = {c["key"]: export_ref(w, store, c["key"]) for c in d["ckpts"]}
    return store, d, ref


def check_rejected(store, name, w, mnt, words=()):
    """A manifest the decoder refuses: every command says so, naming the checkpoint; ls still
    lists the others; export writes nothing; the mount starts, says on stderr which checkpoint it
    leaves out, and shows the others."""
    out = os.path.join(w, "mf-out")
    shutil.rmtree(out, ignore_errors=True)
    res = all_commands(store, name, out, mnt)
    for cmd, p in res.items():
        if cmd != "mount":
            clear_error(p, cmd, f'"{name}"', *words)
    assert "corrupt manifest" in res["verify"].stderr, res["verify"].stderr
    assert len(res["ls"].stdout.splitlines()) >= 2, "ls lists nothing after one bad manifest"
    assert not os.path.exists(out) or not fu.files_under(out), "export wrote files"
    if "mount" in res:
        m = res["mount"]
        no_crash(m, "mount")
        assert m.returncode == 0, f"mount refused the store:\n{m.stderr}"
        assert f'"{name}"' in m.stderr and "not shown" in m.stderr, \
            f"the mount does not say it leaves {name} out:\n{m.stderr}"
        assert name not in m.listing and len(m.listing) >= 1, \
            f"mount root with {name} damaged: {m.listing}"


def read_ckpts(store, d, ref, mnt, rng, st):
    """Read every checkpoint through a mount; return the set of checkpoints whose bytes differ
    from the reference (EIO is allowed: damage may show as a read error, never as other bytes
    unless verify sees it, which the caller checks)."""
    differ = set()
    with fu.Mount(store, mnt):
        for c in d["ckpts"]:
            for f in c["files"]:
                path = os.path.join(mnt, c["key"], f["path"])
                rpath = os.path.join(ref[c["key"]], f["path"])
                try:
                    with open(path, "rb") as a, open(rpath, "rb") as b:
                        got, want = a.read(), b.read()
                    st.bytes += len(want)
                    if got != want:
                        differ.add(c["key"])
                except OSError as e:
                    assert e.errno in (errno.EIO, errno.ENOENT), f"{path}: {e}"
    return differ


def damaged_manifest(w, trials, rng, st):
    """Damage a manifest record inside data.mdb. Targeted cases first (bad magic, version, a
    count, a segment length, chunk flags, a path made to climb out with "..", a checkpoint name
    with '/'): each gives a clear error from every command. Then random byte changes: nothing
    crashes; a manifest the decoder refuses is reported by every command; one it accepts must
    not change any byte unless verify reports a problem."""
    models = Models(w)
    store, d, ref = manifest_fixture(w, models)
    data = os.path.join(store, "data.mdb")
    mnt = os.path.join(w, "mf-mnt") if fuse_ok() else None
    ck = {c["key"]: c for c in d["ckpts"]}
    with open(data, "rb") as f:
        raw = f.read()

    def rec(name):
        c = ck[name]
        return c["off"], raw[c["off"]:c["off"] + c["len"]]

    def targeted(name, at, new, words):
        off, body = rec(name)
        old = body[at:at + len(new)]
        with open(data, "r+b") as f:
            f.seek(off + at)
            f.write(new)
        try:
            check_rejected(store, name, w, mnt, words)
            assert not os.path.exists(os.path.join(w, "fig.json")), "export escaped its directory"
            st.outcomes["targeted: rejected with a clear error"] += 1
        finally:
            with open(data, "r+b") as f:
                f.seek(off + at)
                f.write(old)

    _, hfb = rec("hf")
    cfg = hfb.find(b"config.json")
    _, ftb = rec("ft")
    # name length 2 at byte 6, then "ft", then the base "base" (u16 4), uid, ctime, nfiles
    nfiles_at = 6 + 2 + 2 + 2 + 4 + 8 + 8
    cases = [
        ("ft", 0, b"X", ["bad magic"]),
        ("ft", 4, b"\x7f", ["version"]),
        ("ft", nfiles_at, b"\x09", ["truncated"]),
        ("ft", 8, b"/", ["'/'"]),
        ("hf", cfg, b"../", ['".." are not allowed']),
        ("hf", cfg, b"\x01", ["control characters"]),
    ]
    # the first segment of ft's file: its len (8 bytes after off) + 1; its first chunk's flags
    path_len = struct.unpack_from("<H", ftb, nfiles_at + 4)[0]
    seg0 = nfiles_at + 4 + 2 + path_len + 8 + 1 + 1 + 32 + 4
    cases.append(("ft", seg0 + 8, bytes([ftb[seg0 + 8] ^ 1]), ["does not tile"]))
    name_len = struct.unpack_from("<H", ftb, seg0 + 16)[0]
    ndim = ftb[seg0 + 18 + name_len + 3]
    chunk0 = seg0 + 18 + name_len + 4 + 8 * ndim + 12 + 32 + 18 + 4
    cases.append(("ft", chunk0, b"\x07", ["bad flags"]))
    # Each case's own decoder check (the words above) sits behind the manifest's checksum, which
    # refuses every one of them first; tests/fuzz/fuzz_manifest.c, which fixes the checksum up,
    # reaches those checks.
    for name, at, new, _words in cases:
        st.trial(targeted, name, at, new, ["checksum"])

    def random_trial():
        name = sorted(ck)[int(rng.integers(len(ck)))]
        off, body = rec(name)
        at, mask = int(rng.integers(len(body))), int(rng.integers(1, 256))
        flip(data, off + at, mask)
        try:
            accepted(name, at, mask)
        finally:
            flip(data, off + at, mask)

    def accepted(name, at, mask):
        what = f"byte {at} of {name}'s manifest ^= {mask:#x}"
        dd = dump(store)
        if "error" in next(c for c in dd["ckpts"] if c["key"] == name):
            check_rejected(store, name, w, mnt)
            st.outcomes["random: rejected by the decoder"] += 1
            return
        v = run(DFS, "verify", store, ok=False)
        no_crash(v, f"{what}: verify")
        out = os.path.join(w, "mf-out")
        shutil.rmtree(out, ignore_errors=True)
        for c in ck:
            no_crash(run(DFS, "info", store, c, ok=False), f"{what}: info")
            no_crash(run(DFS, "export", store, c, os.path.join(out, c), ok=False),
                     f"{what}: export")
        if not mnt:
            st.outcomes["random: accepted, verify " + ("reports it" if v.returncode
                                                       else "finds nothing")] += 1
            return
        # Decoded, but its base references may not resolve: then the mount leaves it (and the
        # fine-tunes over it) out, saying so on stderr, and serves the rest.
        m = run(MOUNT, store, mnt, ok=False, timeout=fu.PATIENCE * 3)
        no_crash(m, f"{what}: mount")
        assert m.returncode == 0, f"{what}: the mount refused the store:\n{m.stderr}"
        try:
            shown = set(os.listdir(mnt))
        finally:
            fu.unmount(mnt)
        left_out = set(ck) - shown
        if left_out:
            assert "not shown" in m.stderr, f"{what}: {left_out} left out silently"
            assert v.returncode == 1, f"{what}: the mount leaves checkpoints out, verify passes"
        differ = read_ckpts(store, dd, ref, mnt, rng, st)
        if left_out and not differ:
            st.outcomes["random: accepted by the decoder, left out of the mount"] += 1
        elif differ:
            assert v.returncode == 1, (f"{what}: the mount serves other bytes for "
                                       f"{sorted(differ)} and verify reports nothing")
            st.outcomes["random: accepted, other bytes served, verify reports it"] += 1
        else:
            st.outcomes["random: accepted, " + ("verify reports it" if v.returncode
                                                else "bytes unchanged")] += 1

    for _ in range(trials):
        st.trial(random_trial)
    verify_ok(store)


def fuse_ok():
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
        return os.path.exists(MOUNT)
    except OSError:
        return False


# --- resource limits ----------------------------------------------------------------------------

@contextlib.contextmanager
def tmpfs(path, size):
    os.makedirs(path, exist_ok=True)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", path],
                       capture_output=True, text=True)
    if p.returncode:
        fu.skip(f"cannot mount a tmpfs (needs root): {p.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], capture_output=True)


def disk_full(w, trials, rng, st):
    """A store on a 20 MiB tmpfs. A model too big for it: a clear "no space" error, nothing added,
    the store intact and verifiable, and gc still works on the full disk. Then each trial starts a
    new store, fills the disk up to a random amount of free space (0 to 7 MiB, so that the ingest
    of a 5 MB delta fine-tune runs out at any point: a blob batch, the commit) and adds: it
    succeeds, or fails with the clear error and changes nothing; once the filler is gone the same
    add succeeds. (A new store each time: the data file of one that ran out keeps the space of the
    failed ingest as free pages, and the next ingest would fit in them.)"""
    models = Models(w)
    b, f, big = (models.get(n) for n in ("b.safetensors", "f.safetensors", "d.safetensors"))
    fsd = os.path.join(w, "tmpfs")
    with tmpfs(fsd, "20m"):
        store, filler = os.path.join(fsd, "store"), os.path.join(fsd, "filler")

        def fresh():
            shutil.rmtree(store, ignore_errors=True)
            add(store, "base", b)
            return live_blobs(check_clean(store))

        def intact(note):
            assert names(store) == ["base"], f"{note}: {names(store)}"
            verify_ok(store)
            out = os.path.join(w, "df-out")
            shutil.rmtree(out, ignore_errors=True)
            run(DFS, "export", store, "base", out)
            assert sha256(os.path.join(out, os.path.basename(b))) == sha256(b)
            st.bytes += os.path.getsize(b)

        def full_add(argv, note):
            p = run(*argv, ok=False)
            no_crash(p, note)
            if p.returncode == 0:
                return True
            clear_error(p, note, store, "no space left")
            assert "nothing was added" in p.stderr, p.stderr
            intact(note)
            return False

        def first():
            blobs0 = fresh()
            assert not full_add([ADD, "-q", store, "big", big], "a model bigger than the disk")
            g = run(DFS, "gc", store, ok=False)
            no_crash(g, "gc on a full disk")
            assert g.returncode == 0, f"gc on a full disk: {g.stderr}"
            assert live_blobs(check_clean(store)) == blobs0
            st.outcomes["bigger than the disk: refused"] += 1
        st.trial(first)

        def trial(i):
            blobs0 = fresh()
            sv = os.statvfs(fsd)
            leave = int(7 * MiB * (i + rng.uniform(0, 1)) / trials)  # stratified, as moment()
            with open(filler, "wb") as fh:
                try:
                    fh.write(b"\0" * max(0, sv.f_bavail * sv.f_frsize - leave))
                except OSError as e:
                    assert e.errno == errno.ENOSPC, e
            argv = [ADD, "-q", store, "ft", f, "--base", "base"]
            ok = full_add(argv, f"add with {leave >> 10} KiB free")
            os.unlink(filler)
            run(DFS, "gc", store)
            if not ok:
                run(*argv)
            verify_ok(store)
            run(DFS, "rm", store, "ft")
            run(DFS, "gc", store)
            assert live_blobs(check_clean(store)) == blobs0
            st.outcomes["ingest " + ("fit" if ok else "ran out of space: clear error")] += 1

        for i in range(trials):
            st.trial(trial, i)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(filler)
        subprocess.run(["mount", "-o", "remount,size=200m", fsd], check=True)
        add(store, "big", big)
        verify_ok(store)


def proc_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_leak(w, iterations, rng, st):
    """The daemon's open descriptors stay what they were after many open/read/mmap/close,
    directory listings, xattr reads, and checkpoints added and removed under open files."""
    need_fuse()
    models = Models(w)
    store, mnt = os.path.join(w, "fd-store"), os.path.join(w, "fd-mnt")
    shutil.rmtree(store, ignore_errors=True)
    add(store, "base", models.get("b.safetensors"))
    add(store, "hf", models.get("hf"))
    files = [os.path.join("base", "b.safetensors")] + \
        [os.path.join("hf", p) for p in fu.files_under(models.get("hf"))]
    st.trials += 1
    with fu.Mount(store, mnt) as m:
        pid = m.proc.pid
        for p in files:  # one pass first: anything opened once and kept is not a leak
            with open(os.path.join(mnt, p), "rb") as fh:
                fh.read(1)
        n0 = proc_fds(pid)
        held = None
        for i in range(iterations):
            path = os.path.join(mnt, files[int(rng.integers(len(files)))])
            fd = os.open(path, os.O_RDONLY)
            size = os.fstat(fd).st_size
            os.pread(fd, 4096, int(rng.integers(max(1, size))))
            if i % 10 == 0 and size:
                with mmap.mmap(fd, size, prot=mmap.PROT_READ) as mm:
                    _ = mm[int(rng.integers(size))]
            if i % 25 == 0:
                os.listdir(os.path.join(mnt, os.path.dirname(path)))
                os.listxattr(path)
            if i == iterations // 3:
                held = fd  # kept open while its checkpoint is replaced, closed after
                run(ADD, "-q", store, "hf", models.get("hf2"), "--replace")
                add(store, "extra", models.get("hf2"))
                wait_names(mnt, ["base", "extra", "hf"])
                run(DFS, "rm", store, "extra")
                run(DFS, "gc", store)
                wait_names(mnt, ["base", "hf"])
                files = [os.path.join("base", "b.safetensors")] + \
                    [os.path.join("hf", p) for p in fu.files_under(models.get("hf2"))]
                continue
            os.close(fd)
        os.pread(held, 10, 0)
        os.close(held)
        fu.wait_for(lambda: proc_fds(pid) == n0,
                    f"the daemon's descriptors to return to {n0} (now {proc_fds(pid)})")
        st.info["daemon descriptors"] = f"{n0} before and after {iterations} opens"


def rss_sampler(pid, stop, out):
    """Peak VmRSS / RssAnon / RssFile of pid (KiB) until stop is set."""
    while not stop.is_set():
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    k, _, v = line.partition(":")
                    if k in ("VmRSS", "RssAnon", "RssFile"):
                        out[k] = max(out.get(k, 0), int(v.split()[0]))
        except OSError:
            return
        stop.wait(0.05)


# --- concurrency --------------------------------------------------------------------------------

def reader(i, mnt, targets, deadline, q):
    """One reader process: until the deadline, open a random file of a random checkpoint and
    compare random ranges with its reference, by pread and by mmap. A checkpoint that churns may
    be absent at open (ENOENT); once open, every read must succeed and be right, even if the
    checkpoint is removed and collected meanwhile."""
    rng = np.random.default_rng(1000 + i)
    res = {"bytes": 0, "opens": 0, "absent": 0, "errors": []}
    faulthandler.enable()  # an mmap read that fails is a SIGBUS: say where
    os.nice(10)  # 16 busy readers on a small machine would starve the writer and the daemon
    try:
        while time.monotonic() < deadline and len(res["errors"]) < 5:
            name, rel, ref, churn = targets[int(rng.integers(len(targets)))]
            path = os.path.join(mnt, name, rel)
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError as e:
                if churn and e.errno in (errno.ENOENT, errno.ESTALE):
                    res["absent"] += 1
                    continue
                res["errors"].append(f"open {path}: {e}")
                continue
            res["opens"] += 1
            rfd = os.open(ref, os.O_RDONLY)
            try:
                size = os.fstat(fd).st_size
                if size != os.fstat(rfd).st_size:
                    res["errors"].append(f"{path}: size {size}, want {os.fstat(rfd).st_size}")
                    continue
                if rng.random() < 0.5:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # make the daemon serve
                mm = mmap.mmap(fd, size, prot=mmap.PROT_READ) if size else None
                for _ in range(8):
                    off = int(rng.integers(size + 1))
                    n = int(np.exp(rng.uniform(0, np.log(4 << 20))))
                    if mm is not None and rng.random() < 0.5:
                        got, how = mm[off:off + n], "mmap"
                    else:
                        got, how = os.pread(fd, n, off), "pread"
                    if got != os.pread(rfd, n, off):
                        res["errors"].append(f"{path}: {how}({n}, {off}) differs")
                        break
                    res["bytes"] += len(got)
                if mm is not None:
                    mm.close()
            except (OSError, ValueError) as e:
                res["errors"].append(f"{path}: {e}")
            finally:
                os.close(fd)
                os.close(rfd)
    finally:
        q.put((i, res))


def collect(procs, q, timeout):
    """The result of every reader process; a reader that dies before sending one (a signal: an
    mmap read that fails is a SIGBUS) fails the test at once instead of leaving it waiting."""
    results, deadline = {}, time.monotonic() + timeout
    while len(results) < len(procs):
        try:
            i, r = q.get(timeout=1)
            results[i] = r
            continue
        except queue.Empty:
            pass
        dead = [(i, p.exitcode) for i, p in enumerate(procs)
                if i not in results and p.exitcode is not None]
        if dead:
            time.sleep(1)  # a result sent just before exiting may still be in the pipe
            while not q.empty():
                i, r = q.get()
                results[i] = r
            dead = [(i, c) for i, c in dead if i not in results]
        assert not dead, "reader processes died: " + ", ".join(
            f"{i} ({signal.Signals(-c).name if c < 0 else f'exit {c}'})" for i, c in dead)
        assert time.monotonic() < deadline, f"readers still running after {timeout} s"
    for p in procs:
        p.join()
    return sorted(results.items())


def churn(store, sources, rng, stop, res):
    """Add, replace, remove and gc the churning checkpoints until stop is set."""
    try:
        while not stop.is_set():
            name = sorted(sources)[int(rng.integers(len(sources)))]
            src, opts = sources[name]
            there = name in names(store)
            op = rng.choice(["add", "rm", "gc", "replace"])
            if op == "gc":
                run(DFS, "gc", store)
            elif not there and op in ("add", "replace"):
                run(ADD, "-q", store, name, src, *opts)
            elif there and op == "replace":
                run(ADD, "-q", store, name, src, *opts, "--replace")
            elif there and op == "rm":
                run(DFS, "rm", store, name)
            else:
                continue
            res[op] += 1
    except Exception as e:  # noqa: BLE001 -- reported by the caller
        res["error"] = f"{type(e).__name__}: {e}"


def concurrency(w, seconds, rng, st, readers=16, cache_mib=32):
    """16 reader processes (pread and mmap, random ranges, stable and churning checkpoints,
    lossless and lossy) on one mount while another process adds, replaces, removes and gcs
    checkpoints; the daemon's anonymous memory must stay within its chunk cache bound + 64 MiB
    (not checked under ASan, whose shadow memory and quarantine count there too)."""
    need_fuse()
    models = Models(w)
    store, mnt = os.path.join(w, "cc-store"), os.path.join(w, "cc-mnt")
    shutil.rmtree(store, ignore_errors=True)
    b, f, g = (models.get(n) for n in ("b.safetensors", "f.safetensors", "g.safetensors"))
    add(store, "base", b)
    add(store, "ft", f, "--base", "base")
    add(store, "hf", models.get("hf"))
    add(store, "pal", models.get("hf2"), "--codec", "palette", "--bits", "3")
    # 140 MB more, so that the chunks read add up to far more than the cache bound
    add(store, "kb", models.get("kb.safetensors"))
    add(store, "kf", models.get("kf.safetensors"), "--base", "kb")
    refs = {n: export_ref(w, store, n) for n in ("base", "ft", "hf", "pal", "kb", "kf")}
    targets = []
    for n, d in refs.items():
        targets += [(n, p, os.path.join(d, p), False) for p in fu.files_under(d)]
    sources = {"c-delta": (g, ("--base", "base")), "c-whole": (g, ("-j", "1")),
               "c-dir": (models.get("hf2"), ()), "c-small": (f, ("--chunk-size", "64"))}
    for n, (src, _) in sources.items():
        if os.path.isdir(src):
            targets += [(n, p, os.path.join(src, p), True) for p in fu.files_under(src)]
        else:
            targets.append((n, os.path.basename(src), src, True))
    with fu.Mount(store, mnt, "-o", f"cache_size={cache_mib}") as m:
        pid, peak, stop = m.proc.pid, {}, threading.Event()
        sampler = threading.Thread(target=rss_sampler, args=(pid, stop, peak))
        ops = collections.Counter()
        churner = threading.Thread(target=churn, args=(store, sources, rng, stop, ops))
        ctx = multiprocessing.get_context("fork")
        q = ctx.Queue()
        deadline = time.monotonic() + seconds
        procs = [ctx.Process(target=reader, args=(i, mnt, targets, deadline, q))
                 for i in range(readers)]
        for p in procs:  # fork before the writer thread runs: no child may inherit its pipes
            p.start()
        sampler.start()
        churner.start()
        try:
            results = collect(procs, q, seconds + 300)
        except AssertionError as e:
            stop.set()
            raise AssertionError(f"{e}\ndaemon log (end):\n{m.log()[-4000:]}") from None
        stop.set()
        churner.join()
        sampler.join()
        asan = has_asan(pid)
    st.trials += 1
    errors = [e for _, r in results for e in r["errors"]]
    st.bytes += sum(r["bytes"] for _, r in results)
    st.outcomes["opens"] += sum(r["opens"] for _, r in results)
    st.outcomes["opens of an absent churning checkpoint"] += sum(r["absent"] for _, r in results)
    for k, v in ops.items():
        if k != "error":
            st.outcomes["churn: " + k] += v
    st.info["daemon peak RSS (MiB)"] = (f"{peak.get('VmRSS', 0) >> 10} total, "
                                        f"{peak.get('RssAnon', 0) >> 10} anonymous, "
                                        f"{peak.get('RssFile', 0) >> 10} file (the store's map)")
    bad = [p.exitcode for p in procs if p.exitcode]
    assert not bad and not errors, f"readers failed ({bad}): " + "\n".join(errors[:20])
    assert "error" not in ops, f"the churning writer failed: {ops['error']}"
    assert sum(ops.values()) > 0 and sum(r["opens"] for _, r in results) > 0, "nothing ran"
    verify_ok(store)
    if not asan:
        assert peak.get("RssAnon", 0) << 10 <= (cache_mib + 64) * MiB, \
            f"daemon anonymous RSS {peak['RssAnon'] >> 10} MiB > cache {cache_mib} + 64 MiB"


# --- security -----------------------------------------------------------------------------------

def st_file(path, header, data=b""):
    h = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)
    return path


def security(w, st):
    """The store's files are private whatever the umask; no allow_other unless asked; names
    that could escape a directory or confuse a listing are refused, for checkpoints and for files
    in a model directory; shapes and offsets whose arithmetic would overflow are refused."""
    models = Models(w)
    store = os.path.join(w, "sec-store")
    shutil.rmtree(store, ignore_errors=True)

    def modes():
        old = os.umask(0)
        try:
            run(DFS, "init", store)
            add(store, "base", models.get("hf2"))
            snap = os.path.join(w, "sec-snap")
            shutil.rmtree(snap, ignore_errors=True)
            run(DFS, "snapshot", store, snap)
        finally:
            os.umask(old)
        for p, want in ((store, 0o700), (os.path.join(store, "data.mdb"), 0o600),
                        (os.path.join(store, "lock.mdb"), 0o600),
                        (os.path.join(store, "ingest.lock"), 0o600), (snap, 0o700),
                        (os.path.join(snap, "data.mdb"), 0o600)):
            got = os.stat(p).st_mode & 0o777
            assert got == want, f"{p}: mode {got:o}, want {want:o} (umask 0)"
    st.trial(modes)

    def allow_other():
        if not fuse_ok():
            st.outcomes["allow_other: skipped, no /dev/fuse"] += 1
            return
        mnt = os.path.join(w, "sec-mnt")
        for opts, want in (((), False), (("-o", "allow_other"), True)):
            with fu.Mount(store, mnt, *opts):
                with open("/proc/self/mountinfo") as f:
                    line = next(l for l in f if f" {mnt} " in l)
                assert ("allow_other" in line) == want, f"mount {opts}: {line}"
    st.trial(allow_other)

    good = models.get("hf2")

    def bad_names():
        before = names(store)
        for bad in ("a/b", "/abs", "..", ".", "", "tab\tname", "nl\nname", "del\x7f", "x" * 256):
            p = run(ADD, "-q", store, bad, good, ok=False)
            no_crash(p, f"add {bad!r}")
            assert p.returncode != 0 and "name" in p.stderr, (bad, p.stderr)
        assert names(store) == before
        for bad in ("../base", "base/..", "/etc"):
            for cmd in (("info",), ("verify",), ("rm",)):
                p = run(DFS, *cmd, store, bad, ok=False)
                no_crash(p, f"{cmd} {bad!r}")
                assert p.returncode == 1 and "no checkpoint named" in p.stderr, (cmd, bad, p.stderr)
        d = os.path.join(w, "sec-dir")
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(good, d)
        open(os.path.join(d, "bad\x01name.txt"), "w").close()
        p = run(ADD, "-q", store, "dir", d, ok=False)
        no_crash(p, "add a directory holding a bad file name")
        assert p.returncode != 0 and "control characters" in p.stderr, p.stderr
        assert names(store) == before
    st.trial(bad_names)

    def overflow():
        cases = {
            "shape product overflows": {"t": {"dtype": "F32", "shape": [1 << 32, 1 << 32, 1 << 8],
                                              "data_offsets": [0, 0]}},
            "offsets near 2^63": {"t": {"dtype": "U8", "shape": [8],
                                        "data_offsets": [(1 << 63) - 8, (1 << 63) - 1]}},
            "end before begin": {"t": {"dtype": "U8", "shape": [8], "data_offsets": [8, 0]}},
            "offsets past 2^64": {"t": {"dtype": "U8", "shape": [8],
                                        "data_offsets": [0, 1 << 64]}},
            "dims past 2^64": {"t": {"dtype": "U8", "shape": [1 << 64], "data_offsets": [0, 8]}},
        }
        before = names(store)
        for case, hdr in cases.items():
            p = run(ADD, "-q", store, "ovf", st_file(os.path.join(w, "ovf.safetensors"), hdr,
                                                     b"\0" * 8), ok=False)
            clear_error(p, case, "ovf.safetensors")
        assert names(store) == before
    st.trial(overflow)


# --- seeds for the manifest fuzzer --------------------------------------------------------------

def manifest_seeds(w, out):
    """Real manifests of every shape ingest makes, for tests/fuzz/corpus_manifest: a base, a
    delta fine-tune, a fine-tune equal to its base (SAME chunks), a sharded model directory with
    nested and empty files, DeltaDQ and palette (lossy fields), SPP (sparsity fields), and a file
    with an empty tensor (an empty segment). Small models, so that the seeds stay small."""
    small = ("--preset", "tiny", "--layers", "1", "--hidden", "64", "--intermediate", "128",
             "--vocab", "256")
    m = {k: os.path.join(w, k) for k in ("b", "f", "b16", "f16", "hf", "p24", "spp", "e")}
    gen(*small, "--dtype", "F32", "--out", m["b"])
    gen(*small, "--dtype", "F32", "--finetune", "2", "--out", m["f"])
    gen(*small, "--out", m["b16"])
    gen(*small, "--finetune", "4", "--delta", "0.05", "--out", m["f16"])
    gen(*small, "--hf-dir", m["hf"], "--shards", "2")
    os.makedirs(os.path.join(m["hf"], "sub"))
    with open(os.path.join(m["hf"], "sub", "notes.txt"), "w") as f:
        f.write("nested\n")
    open(os.path.join(m["hf"], "empty.txt"), "w").close()
    pruned = os.path.join(HERE, "..", "data", "genpruned.py")
    run(sys.executable, pruned, "prune", "--pattern", "2:4", m["b16"], m["p24"])
    run(sys.executable, pruned, "spp", m["p24"], m["spp"])
    st_file(m["e"], {"empty": {"dtype": "F32", "shape": [0, 4], "data_offsets": [0, 0]},
                     "x": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 6]},
                     "__metadata__": {"format": "pt"}}, b"\1\2\3\4\5\6")
    store = os.path.join(w, "seed-store")
    for name, src, *opts in (("base", m["b"]), ("ft", m["f"], "--base", "base"),
                             ("same", m["b"], "--base", "base"), ("hfdir", m["hf"]),
                             ("b16", m["b16"]),
                             ("dq", m["f16"], "--base", "b16", "--codec", "deltadq",
                              "--ratio", "8"),
                             ("pal", m["b16"], "--codec", "palette", "--bits", "3"),
                             ("p24", m["p24"]), ("spp", m["spp"], "--base", "p24"),
                             ("empty-tensor", m["e"])):
        add(store, name, src, *opts)
    os.makedirs(out, exist_ok=True)
    for name in ("base", "ft", "same", "hfdir", "dq", "pal", "spp", "empty-tensor"):
        run(STOREDUMP, store, "manifest", name, os.path.join(out, name))


# --- the short tests ----------------------------------------------------------------------------

SHORT = {
    "kill_add": lambda w, rng, st: kill_add(w, 6, rng, st, fuse_ok()),
    "kill_rm_gc": lambda w, rng, st: kill_rm_gc(w, 6, rng, st, fuse_ok()),
    "stale_reader": lambda w, rng, st: stale_reader(w, st),
    "bitflip": lambda w, rng, st: bitflip(w, 5, rng, st),
    "damaged_meta": lambda w, rng, st: damaged_meta(w, st),
    "damaged_manifest": lambda w, rng, st: damaged_manifest(w, 10, rng, st),
    "disk_full": lambda w, rng, st: disk_full(w, 3, rng, st),
    "fd_leak": lambda w, rng, st: fd_leak(w, 2000, rng, st),
    "concurrency": lambda w, rng, st: concurrency(w, 10, rng, st),
    "security": lambda w, rng, st: security(w, st),
}


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "manifest-seeds":
        with tempfile.TemporaryDirectory(prefix="deltafs-seeds-") as w:
            manifest_seeds(w, sys.argv[2])
        return 0
    if len(sys.argv) != 2 or sys.argv[1] not in SHORT:
        print(f"usage: reliability.py {{{'|'.join(SHORT)}}} | manifest-seeds OUTDIR",
              file=sys.stderr)
        return 2
    for tool in (ADD, DFS, STOREDUMP):
        if not os.access(tool, os.X_OK):
            print(f"{tool} is not built", file=sys.stderr)
            return 1
    case = sys.argv[1]
    st = Stats(case)
    with fu.Workdir() as w:
        SHORT[case](w, np.random.default_rng(8), st)
    print(f"{case}: {st.trials} trials, {st.bytes} bytes compared, "
          + ", ".join(f"{k}: {v}" for k, v in sorted(st.outcomes.items()))
          + "".join(f"; {k}: {v}" for k, v in st.info.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
