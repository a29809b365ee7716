#!/usr/bin/python3
"""The remote tier against a real one-node Ceph cluster (tests/remote/ceph.sh, a bluestore OSD so
that it can restart), two "hosts"
simulated as two stores with their own caches on one pool:

- host A adds the charlm pair and pushes; host B clones (manifests only) and reads both files
  through its mount byte-identical, fetching blobs on demand; B's verify passes; a second push
  sends nothing;
- `deltafs-add --base` on a fresh clone reads the base's blobs from the remote;
- eight readers of one file on a fresh clone fetch no blob twice; a cache bounded at 512 KiB
  evicts and stays within its bound;
- four stores push different checkpoints into one catalog at the same moment: all are published;
  a stale store cannot replace a published checkpoint in passing (as a base), only by name;
- remote gc removes what no published checkpoint names once older than the grace period, keeps
  young objects (a push in flight) and everything published; unpublishing a base is refused;
  unpublishing a name that another host published again since it was read keeps the new version;
- a checkpoint pushed while B is mounted appears in B's mount within seconds while
  `deltafs pull --every 300` runs (RADOS watch/notify on the catalog);
- a flipped byte in a blob object: reads that need it fail with EIO, with a log line naming the
  checkpoint and tensor; every read that succeeds gives the original bytes;
- the OSD killed, then the whole cluster stopped: reads that need the remote fail with EIO within
  a bounded time (never hang, never wrong bytes); cached blobs still read; a mount started while
  the cluster is down comes up and says what it cannot reach;
- a read waiting on a killed OSD that restarts within the timeout completes with the right bytes.

Exit 77 without the Ceph packages, /dev/fuse, librados support or the shared charlm data.
"""

import errno
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fs"))
import fsutil as fu  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CEPH = os.path.join(HERE, "ceph.sh")
POOL = "deltafs"
TIMEOUT = 3  # DELTAFS_REMOTE_TIMEOUT for every process: seconds per remote operation
BOUND = 30.0  # a read that needs an unreachable remote must fail within this


class Cluster:
    def __init__(self, w):
        self.dir = os.path.join(w, "ceph")

    def __enter__(self):
        p = subprocess.run([CEPH, "start", self.dir, POOL], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True,
                           env=dict(os.environ, CEPH_OBJECTSTORE="bluestore"))
        if p.returncode == fu.SKIP:
            fu.skip(p.stderr.strip())
        if p.returncode:
            self.stop()
            raise AssertionError(f"ceph.sh start: exit {p.returncode}\n{p.stderr}")
        os.environ["CEPH_CONF"] = p.stdout.strip()
        return self

    def kill_osd(self):
        fu.run(CEPH, "kill-osd", self.dir)

    def start_osd(self):
        fu.run(CEPH, "start-osd", self.dir)

    def stop(self):
        subprocess.run([CEPH, "stop", self.dir])

    def __exit__(self, *exc):
        self.stop()


def rados(*args, data=None):
    p = subprocess.run(["rados", "-p", POOL, *args], input=data, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    if p.returncode:
        raise AssertionError(f"rados {' '.join(args)}: {p.stderr.decode()}")
    return p.stdout


def store_with_pair(w, name, url, src):
    s = os.path.join(w, name)
    fu.add(s, "base", os.path.join(src, "base.safetensors"))
    fu.add(s, "qa", os.path.join(src, "finetuned_qa.safetensors"), "--base", "base")
    fu.run(fu.DELTAFS, "remote", s, "set", url)
    return s


def read_checked(path, orig, step=64 << 10):
    """pread path from start to end; every byte a read returns must equal orig's there (a read
    may come back short when the kernel's readahead failed past its first pages). Returns the
    number of reads that failed with EIO (any other error fails the test; after one, the next read
    starts at the next step) and the slowest read's seconds."""
    with open(orig, "rb") as f:
        want = f.read()
    failed, slowest, pos = 0, 0.0, 0
    fd = os.open(path, os.O_RDONLY)
    try:
        while pos < len(want):
            t0 = time.monotonic()
            try:
                got = os.pread(fd, step, pos)
                assert got and got == want[pos:pos + len(got)], f"{path}: wrong bytes at {pos}"
                pos += len(got)
            except OSError as e:
                assert e.errno == errno.EIO, e
                failed += 1
                pos = (pos // step + 1) * step
            slowest = max(slowest, time.monotonic() - t0)
    finally:
        os.close(fd)
    return failed, slowest


def reads_fail_in_bound(path, orig, what):
    """Read path, whose blobs are not cached and whose remote is down (`what`), in a thread: the
    reads must fail with EIO (some), each within BOUND, never hang; prints the figures."""
    result = {}
    t0 = time.monotonic()
    t = threading.Thread(target=lambda: result.update(r=read_checked(path, orig, step=512 << 10)))
    t.start()
    t.join(BOUND * 4)
    assert not t.is_alive(), f"reads hang with {what}"
    failed, slowest = result["r"]
    print(f"{what}: {failed} reads failed, slowest {slowest:.1f} s, "
          f"all {time.monotonic() - t0:.1f} s")
    assert failed and slowest < BOUND, (failed, slowest)


def remote_stats(log):
    """The counters mount.deltafs logs at unmount: {"fetches": N, "evictions": N, ...}."""
    line = next(x for x in log.splitlines() if "remote: " in x and " fetches " in x)
    words = line.split("remote: ", 1)[1].replace("(", "").replace(")", "").replace(",", "").split()
    out = {}
    for i, w in enumerate(words):
        if w.isdigit() and i + 1 < len(words) and words[i + 1] in ("fetches", "evictions", "ahead",
                                                                 "failed", "shared", "cache"):
            out[words[i + 1]] = int(w)
    return out


def main():
    fu.need_fuse()
    src = fu.charlm()
    os.environ["DELTAFS_REMOTE_TIMEOUT"] = str(TIMEOUT)
    with fu.Workdir() as w:
        probe = os.path.join(w, "probe")
        fu.run(fu.DELTAFS, "init", probe)
        p = fu.run(fu.DELTAFS, "remote", probe, "set", "rados:x", check=False)
        if "without librados" in p.stderr:
            fu.skip("this build has no librados")
        assert p.returncode == 0, p.stderr
        with Cluster(w) as cl:
            scenarios(w, cl, src)
    print("remote: push, clone, mount, pull, concurrent pushes, gc, damaged object, dead cluster: ok")


def scenarios(w, cl, src):
    base_src = os.path.join(src, "base.safetensors")
    qa_src = os.path.join(src, "finetuned_qa.safetensors")

    # Host A pushes; host B clones and reads through its mount.
    url = f"rados:{POOL}/main"
    a = store_with_pair(w, "a", url, src)
    out = fu.run(fu.DELTAFS, "push", a).stdout
    assert "2 checkpoints published" in out and " 0 already there" in out, out
    out = fu.run(fu.DELTAFS, "push", a).stdout
    assert " 0 blobs sent" in out and "0 manifests" in out, out
    assert "nothing new to publish: 2 already published as they are" in out, out
    b, mb = os.path.join(w, "b"), os.path.join(w, "mb")
    out = fu.run(fu.DELTAFS, "clone", url, b).stdout
    assert "2 checkpoints added" in out, out
    assert os.stat(os.path.join(b, "remote")).st_mode & 0o777 == 0o600
    assert not os.listdir(os.path.join(b, "cache")), "clone fetched blobs without --all"
    with fu.Mount(b, mb) as m:
        assert fu.sha256(os.path.join(mb, "qa", "finetuned_qa.safetensors")) == fu.sha256(qa_src)
        assert fu.sha256(os.path.join(mb, "base", "base.safetensors")) == fu.sha256(base_src)
        assert os.listdir(os.path.join(b, "cache")), "the mount read without caching"

        # Pushed by A while B is mounted and follows the catalog: the mount shows it within
        # seconds, long before the puller's 300 s poll (the push notified its watch).
        puller = subprocess.Popen([fu.DELTAFS, "pull", b, "--every", "300"],
                                  stdout=subprocess.PIPE, text=True)
        try:
            fu.add(a, "qa2", qa_src, "--base", "base")
            time.sleep(2)  # the puller's first pull and its watch are in place
            t0 = time.monotonic()
            fu.run(fu.DELTAFS, "push", a, "qa2")
            qa2 = os.path.join(mb, "qa2", "finetuned_qa.safetensors")
            fu.wait_for(lambda: os.path.exists(qa2), "qa2 to appear in B's mount")
            print(f"pushed on A, listed in B's mount {time.monotonic() - t0:.1f} s later")
        finally:
            puller.kill()
            out = puller.communicate()[0]
        assert "1 checkpoint added" in out, out
        assert fu.sha256(qa2) == fu.sha256(qa_src)
        out = fu.run(fu.DELTAFS, "pull", b).stdout
        assert "0 checkpoints added, 0 updated, 3 unchanged" in out, out
        assert "fails" not in m.log(), m.log()
    out = fu.run(fu.DELTAFS, "verify", b).stdout
    assert "0 problems" in out, out
    ex = os.path.join(w, "export")
    fu.run(fu.DELTAFS, "export", b, "qa", ex)
    assert fu.sha256(os.path.join(ex, "finetuned_qa.safetensors")) == fu.sha256(qa_src)
    full = os.path.join(w, "full")
    out = fu.run(fu.DELTAFS, "clone", url, full, "--all").stdout
    assert "fetched" in out, out
    os.rename(os.path.join(full, "remote"), os.path.join(full, "remote.off"))
    out = fu.run(fu.DELTAFS, "verify", full).stdout  # every blob local now: no remote used
    assert "0 problems" in out, out

    # A fine-tune added on a fresh clone against its base, whose blobs only the remote holds:
    # the ingest reads them through the cache, as a mount does.
    f = os.path.join(w, "f")
    fu.run(fu.DELTAFS, "clone", url, f)
    fu.add(f, "qa3", qa_src, "--base", "base")
    assert os.listdir(os.path.join(f, "cache")), "the base's blobs came from nowhere"
    ex3 = os.path.join(w, "export3")
    fu.run(fu.DELTAFS, "export", f, "qa3", ex3)
    assert fu.sha256(os.path.join(ex3, "finetuned_qa.safetensors")) == fu.sha256(qa_src)

    # Eight readers of one file on a fresh clone: no blob fetched twice (each fetched blob
    # is one file in the cache, nothing evicted), most of them fetched ahead. Then a cache bounded at 512 KiB: blobs are
    # evicted, the directory stays within the bound (plus the blob just fetched), reads right.
    h, mh = os.path.join(w, "h"), os.path.join(w, "mh")
    fu.run(fu.DELTAFS, "clone", url, h)
    with fu.Mount(h, mh) as m:
        qa_m = os.path.join(mh, "qa", "finetuned_qa.safetensors")
        sums = []
        readers = [threading.Thread(target=lambda: sums.append(fu.sha256(qa_m)))
                   for _ in range(8)]
        for t in readers:
            t.start()
        for t in readers:
            t.join()
        assert sums == [fu.sha256(qa_src)] * 8
    stats = remote_stats(m.log())
    cached = os.listdir(os.path.join(h, "cache"))
    print("8 readers:", stats, len(cached), "blobs cached")
    assert stats["fetches"] == len(cached) and not stats["evictions"], (stats, len(cached))
    assert stats["ahead"] > stats["fetches"] // 2, stats
    for f in cached:
        os.unlink(os.path.join(h, "cache", f))
    old_tmp, new_tmp = (os.path.join(h, "cache", f".tmp.999.{i}") for i in (1, 2))
    for f in (old_tmp, new_tmp):
        with open(f, "wb") as fh:
            fh.write(b"part of a blob")
    os.utime(old_tmp, (time.time() - 7200, time.time() - 7200))
    bound = 512 << 10
    with fu.Mount(h, mh, "-o", f"remote_cache={bound / (1 << 30)}") as m:
        # Debris of a dead writer goes; a file that may be being written stays.
        assert not os.path.exists(old_tmp) and os.path.exists(new_tmp)
        os.unlink(new_tmp)
        for name, orig in (("base", base_src), ("qa", qa_src)):
            assert fu.sha256(os.path.join(mh, name, os.path.basename(orig))) == fu.sha256(orig)
            cdir = os.path.join(h, "cache")
            used = sum(os.path.getsize(os.path.join(cdir, f)) for f in os.listdir(cdir))
            assert used <= bound + (256 << 10), used
    stats = remote_stats(m.log())
    print("512 KiB cache:", stats)
    assert stats["evictions"] and stats["fetches"] > len(cached), stats

    # Two hosts push into one catalog at the same moment: both entries survive.
    cat = f"rados:{POOL}/concurrent"
    stores = []
    for i in range(4):
        s = os.path.join(w, f"c{i}")
        fu.add(s, f"ck{i}", base_src if i % 2 else qa_src)
        fu.run(fu.DELTAFS, "remote", s, "set", cat)
        stores.append(s)
    procs = [subprocess.Popen([fu.DELTAFS, "push", s], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for s in stores]
    for pr in procs:
        o, e = pr.communicate(timeout=120)
        assert pr.returncode == 0, o + e
    d = os.path.join(w, "d")
    out = fu.run(fu.DELTAFS, "clone", cat, d).stdout
    assert "4 checkpoints added" in out, out
    names = rados("-N", "concurrent", "listomapkeys", "catalog").decode().split()
    assert names == ["ck0", "ck1", "ck2", "ck3"], names

    # A store whose "ck0" is another version than the published one: pushing a fine-tune of it
    # must not replace ck0 in passing; naming ck0 does.
    x = os.path.join(w, "x")
    fu.add(x, "ck0", base_src)  # c0 published ck0 from qa_src
    fu.add(x, "ck0ft", qa_src, "--base", "ck0")
    fu.run(fu.DELTAFS, "remote", x, "set", cat)
    before = rados("-N", "concurrent", "getomapval", "catalog", "ck0")
    p = fu.run(fu.DELTAFS, "push", x, "ck0ft", check=False)
    assert p.returncode == 1 and "another version" in p.stderr, p.stdout + p.stderr
    assert rados("-N", "concurrent", "getomapval", "catalog", "ck0") == before
    assert "ck0ft" not in rados("-N", "concurrent", "listomapkeys", "catalog").decode().split()
    fu.run(fu.DELTAFS, "push", x, "ck0", "ck0ft")
    assert rados("-N", "concurrent", "getomapval", "catalog", "ck0") != before
    out = fu.run(fu.DELTAFS, "pull", d).stdout
    assert "1 checkpoint added, 1 updated" in out, out
    assert "0 problems" in fu.run(fu.DELTAFS, "verify", d, "ck0ft").stdout

    # Remote gc: only what no published manifest names, and only past the grace period.
    gurl = f"rados:{POOL}/gc"
    ga = store_with_pair(w, "ga", gurl, src)
    fu.run(fu.DELTAFS, "push", ga)
    p = fu.run(fu.DELTAFS, "rm", ga, "base", "--remote", check=False)
    assert p.returncode == 1 and "published base of qa" in p.stderr, p.stderr
    stray = "0123456789abcdef0123456789abcdef"  # as a push in flight leaves its blobs
    rados("-N", "gc", "put", stray, "-", data=b"in flight")
    before = set(rados("-N", "gc", "ls").decode().split())
    fu.run(fu.DELTAFS, "rm", ga, "qa", "--remote")
    print(fu.run(os.path.join(fu.BUILD, "tests", "remote", "rb_race"), f"rados:{POOL}/race").stdout)
    out = fu.run(fu.DELTAFS, "gc", ga, "--remote", "--grace", "3600").stdout
    assert "removed 0 objects" in out, out
    assert set(rados("-N", "gc", "ls").decode().split()) == before
    time.sleep(1.1)  # object mtimes have one-second resolution
    out = fu.run(fu.DELTAFS, "gc", ga, "--remote", "--grace", "1").stdout
    after = set(rados("-N", "gc", "ls").decode().split())
    assert stray not in after and "catalog" in after and len(after) < len(before) - 1, out
    gb = os.path.join(w, "gb")
    out = fu.run(fu.DELTAFS, "clone", gurl, gb).stdout
    assert "1 checkpoint added" in out, out
    assert "0 problems" in fu.run(fu.DELTAFS, "verify", gb).stdout
    fu.run(fu.DELTAFS, "push", ga, "qa")  # sends qa's blobs again
    fu.run(fu.DELTAFS, "pull", gb)
    assert "0 problems" in fu.run(fu.DELTAFS, "verify", gb, "qa").stdout

    # A flipped byte in a blob object: EIO and a log line naming checkpoint and tensor.
    furl = f"rados:{POOL}/flip"
    fa = store_with_pair(w, "fa", furl, src)
    fu.run(fu.DELTAFS, "push", fa)
    blobs = [o for o in rados("-N", "flip", "ls").decode().split() if len(o) == 32]
    victim = sorted(blobs)[len(blobs) // 2]
    obj = bytearray(rados("-N", "flip", "get", victim, "-"))
    obj[len(obj) // 2] ^= 0x10
    rados("-N", "flip", "put", victim, "-", data=bytes(obj))
    fb, mfb = os.path.join(w, "fb"), os.path.join(w, "mfb")
    fu.run(fu.DELTAFS, "clone", furl, fb)
    with fu.Mount(fb, mfb) as m:
        bad = 0
        for name, orig in (("base", base_src), ("qa", qa_src)):
            bad += read_checked(os.path.join(mfb, name, os.path.basename(orig)), orig)[0]
        assert bad, "a damaged object read without error"
        log = m.log()
        assert f"object {victim} fails its hash" in log and 'checkpoint "' in log \
            and 'tensor "' in log, log
    p = fu.run(fu.DELTAFS, "verify", fb, check=False)
    assert p.returncode == 1 and "fails its hash" in p.stderr, p.stdout + p.stderr

    # The OSD killed, then the cluster stopped: EIO within a bound, cached bytes still read.
    g, mg = os.path.join(w, "g"), os.path.join(w, "mg")
    g2, mg2 = os.path.join(w, "g2"), os.path.join(w, "mg2")
    fu.run(fu.DELTAFS, "clone", url, g)
    fu.run(fu.DELTAFS, "clone", url, g2)
    with fu.Mount(g, mg) as m:
        base_m = os.path.join(mg, "base", "base.safetensors")
        assert fu.sha256(base_m) == fu.sha256(base_src)  # base now cached
        cl.kill_osd()
        reads_fail_in_bound(os.path.join(mg, "qa", "finetuned_qa.safetensors"), qa_src,
                            "the OSD down")

    # An OSD restarted while a read waits for it: with a timeout longer than its return (about
    # 15 s here, until the monitors see it up again), librados resends and the read succeeds.
    os.environ["DELTAFS_REMOTE_TIMEOUT"] = "90"
    try:
        with fu.Mount(g2, mg2) as m:
            result = {}
            t0 = time.monotonic()
            t = threading.Thread(target=lambda: result.update(
                sha=fu.sha256(os.path.join(mg2, "qa", "finetuned_qa.safetensors"))))
            t.start()
            time.sleep(1)
            cl.start_osd()
            t.join(120)
            assert not t.is_alive(), "the read did not resume after the OSD came back"
            print(f"OSD restarted: the read finished after {time.monotonic() - t0:.1f} s")
            assert result.get("sha") == fu.sha256(qa_src), (result, m.log())
    finally:
        os.environ["DELTAFS_REMOTE_TIMEOUT"] = str(TIMEOUT)
    cl.stop()
    with fu.Mount(g, mg, "-o", "cache_size=1") as m:
        # Cached blobs read without the cluster (the kernel's page cache is gone with the
        # old mount, and the chunk cache is 1 MiB: these come from STORE/cache).
        assert fu.sha256(os.path.join(mg, "base", "base.safetensors")) == fu.sha256(base_src)
        assert "serving what is cached" in m.log(), m.log()
        t0 = time.monotonic()
        failed, slowest = read_checked(os.path.join(mg, "qa2", "finetuned_qa.safetensors"),
                                       qa_src, step=512 << 10)
        print(f"cluster down: {failed} reads failed, slowest {slowest:.1f} s, "
              f"all {time.monotonic() - t0:.1f} s")
        assert failed and slowest < BOUND, (failed, slowest)


if __name__ == "__main__":
    main()
