#!/usr/bin/python3
"""The remote tier over S3 against a real radosgw (tests/remote/ceph.sh start + start-rgw: a
memstore one-node cluster with radosgw on 127.0.0.1), two "hosts" simulated as two stores with
their own caches on one bucket:

- host A (keys from a 0600 --keys file) adds the charlm pair and pushes; host B clones with the
  keys in its environment and reads both files through its mount byte-identical; a second push
  sends nothing; a checkpoint pushed while B runs `deltafs pull --every 1` appears in B's mount
  (S3 has no notifications: the puller polls);
- four stores push different checkpoints into one catalog at the same moment: all are published,
  one catalog key each; a name published twice resolves to the later version;
- remote gc keeps a young unreferenced object (a push in flight) and removes old unreferenced
  ones, never what is published; unpublishing a name that another host published again since it
  was read keeps the new version;
- a flipped byte in a blob object on the S3 side: EIO on the reads that need it, right bytes on
  every other read;
- radosgw stopped: reads of uncached blobs fail with EIO within a bound, never hang;
- the secret and access keys never appear in any command's output, the mount's log or
  STORE/remote; a keys file readable by others is refused; a wrong secret says "access denied".

Exit 77 without radosgw / the Ceph packages, /dev/fuse, libcurl support or the shared charlm data.
"""

import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fs"))
import fsutil as fu  # noqa: E402
from test_remote import read_checked, reads_fail_in_bound  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CEPH = os.path.join(HERE, "ceph.sh")
BUCKET = "deltafs"
TIMEOUT = 3  # DELTAFS_REMOTE_TIMEOUT for every process: seconds per remote operation

OUTPUT = []  # every output of every command run, searched for the keys at the end


def run(*args, check=True, env=None):
    p = subprocess.run([str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, env=env, timeout=300)
    OUTPUT.append(p.stdout + p.stderr)
    if check and p.returncode:
        raise AssertionError(f"{' '.join(map(str, args))}: exit {p.returncode}\n{p.stdout}{p.stderr}")
    return p


class Rgw:
    """A one-node cluster with radosgw; .endpoint, .keys (the 0600 file), .access, .secret."""

    def __init__(self, w):
        self.dir = os.path.join(w, "ceph")

    def __enter__(self):
        p = subprocess.run([CEPH, "start", self.dir], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
        if p.returncode == fu.SKIP:
            fu.skip(p.stderr.strip())
        if p.returncode == 0:
            p = subprocess.run([CEPH, "start-rgw", self.dir, BUCKET], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        if p.returncode:
            self.stop()
            if p.returncode == fu.SKIP:
                fu.skip(p.stderr.strip())
            raise AssertionError(f"ceph.sh: exit {p.returncode}\n{p.stderr}")
        self.endpoint = p.stdout.strip().splitlines()[-1]
        self.keys = os.path.join(self.dir, "s3.keys")
        k = dict(line.split(" = ", 1) for line in open(self.keys).read().splitlines()
                 if " = " in line)
        self.access, self.secret = k["aws_access_key_id"], k["aws_secret_access_key"]
        return self

    def curl(self, method, key, data=None, query=""):
        """One signed request on BUCKET/key with the curl CLI, the keys on stdin (never argv)."""
        cfg = f'user = "{self.access}:{self.secret}"\n'
        args = ["curl", "-K", "-", "-sS", "-f", "--aws-sigv4", "aws:amz:us-east-1:s3",
                "-X", method, f"{self.endpoint}/{BUCKET}/{key}{query}"]
        if data is not None:
            import hashlib
            path = os.path.join(self.dir, "upload")
            with open(path, "wb") as f:
                f.write(data)
            args += ["-T", path, "-H", f"x-amz-content-sha256: {hashlib.sha256(data).hexdigest()}"]
        else:
            args += ["-H", "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b"
                     "934ca495991b7852b855"]
        p = subprocess.run(args, input=cfg.encode(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=60)
        if p.returncode:
            raise AssertionError(f"curl {method} {key}: {p.stderr.decode()}")
        return p.stdout

    def keys_under(self, prefix):
        import re
        xml = self.curl("GET", "", query=f"?list-type=2&prefix={prefix.replace('/', '%2F')}")
        return re.findall(r"<Key>([^<]*)</Key>", xml.decode())

    def stop_rgw(self):
        subprocess.run([CEPH, "stop-rgw", self.dir])

    def stop(self):
        subprocess.run([CEPH, "stop", self.dir])

    def __exit__(self, *exc):
        self.stop()


def main():
    fu.need_fuse()
    src = fu.charlm()
    os.environ["DELTAFS_REMOTE_TIMEOUT"] = str(TIMEOUT)
    for v in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        os.environ.pop(v, None)
    with fu.Workdir() as w:
        probe = os.path.join(w, "probe")
        run(fu.DELTAFS, "init", probe)
        p = run(fu.DELTAFS, "remote", probe, "set", "s3://xyz", check=False)
        if "without libcurl" in p.stderr:
            fu.skip("this build has no libcurl")
        assert p.returncode == 1 and "no S3 keys" in p.stderr, p.stderr
        with Rgw(w) as rgw:
            scenarios(w, rgw, src)
    print("s3: push, clone, mount, poll, concurrent pushes, gc, damaged object, dead endpoint, "
          "keys: ok")


def s3_store(w, name, url, rgw, *files):
    s = os.path.join(w, name)
    for ck, path, *base in files:
        fu.add(s, ck, path, *(["--base", base[0]] if base else []))
    run(fu.DELTAFS, "remote", s, "set", url, "--endpoint", rgw.endpoint, "--keys", rgw.keys)
    return s


def scenarios(w, rgw, src):
    base_src = os.path.join(src, "base.safetensors")
    qa_src = os.path.join(src, "finetuned_qa.safetensors")
    pair = (("base", base_src), ("qa", qa_src, "base"))
    keys_env = dict(os.environ, AWS_ACCESS_KEY_ID=rgw.access, AWS_SECRET_ACCESS_KEY=rgw.secret)
    ep = ("--endpoint", rgw.endpoint)

    # Keys: a file others may read is refused; a wrong secret is "access denied", unechoed.
    os.chmod(rgw.keys, 0o644)
    p = run(fu.DELTAFS, "remote", os.path.join(w, "probe"), "set", f"s3://{BUCKET}/x", *ep,
            "--keys", rgw.keys, check=False)
    os.chmod(rgw.keys, 0o600)
    assert p.returncode == 1 and "chmod 600" in p.stderr, p.stderr
    bad = os.path.join(w, "bad")
    wrong = "WRONG" + rgw.secret[5:]
    p = run(fu.DELTAFS, "clone", f"s3://{BUCKET}/main", bad, *ep, check=False,
            env=dict(keys_env, AWS_SECRET_ACCESS_KEY=wrong))
    assert p.returncode == 1 and "access denied" in p.stderr and wrong not in p.stderr, p.stderr
    p = run(fu.DELTAFS, "clone", f"s3://nosuchbucket/x", os.path.join(w, "bad2"), *ep,
            check=False, env=keys_env)
    assert p.returncode == 1 and "no such bucket" in p.stderr, p.stderr

    # Host A pushes; host B clones and reads through its mount.
    url = f"s3://{BUCKET}/main"
    a = s3_store(w, "a", url, rgw, *pair)
    out = run(fu.DELTAFS, "push", a).stdout
    assert "2 checkpoints published" in out and " 0 already there" in out, out
    out = run(fu.DELTAFS, "push", a).stdout
    assert " 0 blobs sent" in out and "0 manifests" in out, out
    assert "nothing new to publish: 2 already published as they are" in out, out
    b, mb = os.path.join(w, "b"), os.path.join(w, "mb")
    out = run(fu.DELTAFS, "clone", url, b, *ep, env=keys_env).stdout
    assert "2 checkpoints added" in out, out
    remote_file = open(os.path.join(b, "remote")).read()
    OUTPUT.append(remote_file + run(fu.DELTAFS, "remote", b).stdout)
    assert os.stat(os.path.join(b, "remote")).st_mode & 0o777 == 0o600
    os.environ.update(AWS_ACCESS_KEY_ID=rgw.access, AWS_SECRET_ACCESS_KEY=rgw.secret)
    try:
        with fu.Mount(b, mb) as m:  # the mount finds the keys in its environment too
            b_mount(w, a, b, mb, m, keys_env, base_src, qa_src)
    finally:
        del os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
    assert "0 problems" in run(fu.DELTAFS, "verify", b, env=keys_env).stdout
    concurrent_gc_flip_dead(w, rgw, src, url, ep, pair, base_src, qa_src, wrong)


def b_mount(w, a, b, mb, m, keys_env, base_src, qa_src):
    """B reads both files through its mount, then follows A's push of qa2 by polling."""
    assert fu.sha256(os.path.join(mb, "qa", "finetuned_qa.safetensors")) == fu.sha256(qa_src)
    assert fu.sha256(os.path.join(mb, "base", "base.safetensors")) == fu.sha256(base_src)
    # Pushed by A while B follows the catalog by polling (no notifications on S3).
    puller = subprocess.Popen([fu.DELTAFS, "pull", b, "--every", "1"], env=keys_env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        fu.add(a, "qa2", qa_src, "--base", "base")
        t0 = time.monotonic()
        run(fu.DELTAFS, "push", a, "qa2")
        qa2 = os.path.join(mb, "qa2", "finetuned_qa.safetensors")
        fu.wait_for(lambda: os.path.exists(qa2), "qa2 to appear in B's mount")
        print(f"pushed on A, listed in B's mount {time.monotonic() - t0:.1f} s later (polling)")
    finally:
        puller.kill()
        o, e = puller.communicate()
        OUTPUT.append(o + e)
    assert "1 checkpoint added" in o and not e, o + e
    assert fu.sha256(qa2) == fu.sha256(qa_src)
    OUTPUT.append(m.log())


def concurrent_gc_flip_dead(w, rgw, src, url, ep, pair, base_src, qa_src, wrong):
    # Four hosts push into one catalog at the same moment: all entries survive, one key each.
    cat = f"s3://{BUCKET}/concurrent"
    stores = [s3_store(w, f"c{i}", cat, rgw, (f"ck{i}", base_src if i % 2 else qa_src))
              for i in range(4)]
    procs = [subprocess.Popen([fu.DELTAFS, "push", s], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for s in stores]
    for pr in procs:
        o, e = pr.communicate(timeout=120)
        OUTPUT.append(o + e)
        assert pr.returncode == 0, o + e
    d = os.path.join(w, "d")
    out = run(fu.DELTAFS, "clone", cat, d, *ep, "--keys", rgw.keys).stdout
    assert "4 checkpoints added" in out, out
    ckeys = rgw.keys_under("concurrent/catalog/")
    assert [k.split("/")[2] for k in ckeys] == ["ck0", "ck1", "ck2", "ck3"], ckeys
    # A second version of ck0, named: it replaces the first, whose key goes.
    x = s3_store(w, "x", cat, rgw, ("ck0", base_src))
    run(fu.DELTAFS, "push", x, "ck0")
    after = rgw.keys_under("concurrent/catalog/ck0/")
    assert len(after) == 1 and after[0] not in ckeys, (ckeys, after)
    out = run(fu.DELTAFS, "pull", d).stdout
    assert "1 updated" in out, out

    # Remote gc: a young unreferenced object stays, old unreferenced ones go, published stay.
    gurl = f"s3://{BUCKET}/gc"
    ga = s3_store(w, "ga", gurl, rgw, *pair)
    run(fu.DELTAFS, "push", ga)
    run(fu.DELTAFS, "rm", ga, "qa", "--remote")
    print(run(os.path.join(fu.BUILD, "tests", "remote", "rb_race"), f"s3://{BUCKET}/race",
              rgw.endpoint, rgw.keys).stdout)
    time.sleep(1.5)  # Last-Modified has one-second resolution
    stray = "0123456789abcdef0123456789abcdef"  # as a push in flight leaves its blobs
    rgw.curl("PUT", f"gc/{stray}", data=b"in flight")
    before = set(rgw.keys_under("gc/"))
    out = run(fu.DELTAFS, "gc", ga, "--remote", "--grace", "1").stdout
    after = set(rgw.keys_under("gc/"))
    assert "removed 0 objects" not in out and f"gc/{stray}" in after, out
    assert len(after) < len(before) and any("/catalog/base/" in k for k in after), out
    gb = os.path.join(w, "gb")
    run(fu.DELTAFS, "clone", gurl, gb, *ep, "--keys", rgw.keys)
    assert "0 problems" in run(fu.DELTAFS, "verify", gb).stdout

    # A flipped byte in a blob object: EIO where it is needed, right bytes everywhere else.
    furl = f"s3://{BUCKET}/flip"
    fa = s3_store(w, "fa", furl, rgw, *pair)
    run(fu.DELTAFS, "push", fa)
    blobs = sorted(k for k in rgw.keys_under("flip/") if len(k) == len("flip/") + 32)
    victim = blobs[len(blobs) // 2]
    obj = bytearray(rgw.curl("GET", victim))
    obj[len(obj) // 2] ^= 0x10
    rgw.curl("PUT", victim, data=bytes(obj))
    fb, mfb = os.path.join(w, "fb"), os.path.join(w, "mfb")
    run(fu.DELTAFS, "clone", furl, fb, *ep, "--keys", rgw.keys)
    with fu.Mount(fb, mfb) as m:
        bad = sum(read_checked(os.path.join(mfb, n, os.path.basename(o)), o)[0]
                  for n, o in (("base", base_src), ("qa", qa_src)))
        assert bad, "a damaged object read without error"
        assert f"object {victim[5:]} fails its hash" in m.log(), m.log()
        OUTPUT.append(m.log())

    # radosgw stopped: EIO within a bound for uncached blobs, never a hang; cached ones read.
    g, mg = os.path.join(w, "g"), os.path.join(w, "mg")
    run(fu.DELTAFS, "clone", url, g, *ep, "--keys", rgw.keys)
    with fu.Mount(g, mg) as m:
        base_m = os.path.join(mg, "base", "base.safetensors")
        assert fu.sha256(base_m) == fu.sha256(base_src)  # base now cached
        rgw.stop_rgw()
        reads_fail_in_bound(os.path.join(mg, "qa", "finetuned_qa.safetensors"), qa_src,
                            "radosgw down")
        OUTPUT.append(m.log())
    p = run(fu.DELTAFS, "pull", g, check=False)
    assert p.returncode == 1 and "connect to 127.0.0.1" in p.stderr, p.stderr

    # The keys never showed: not in any output, log or STORE/remote.
    text = "\n".join(OUTPUT)
    assert rgw.secret not in text and rgw.access not in text, "a key leaked into an output"
    assert wrong not in text
    print(f"keys: absent from {len(OUTPUT)} outputs and logs")


if __name__ == "__main__":
    main()
