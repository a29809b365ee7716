#!/usr/bin/python3
"""stress.py -- the long reliability runs of issue 8, and a table of what they found.

    tests/stress/stress.py [--quick] [--build DIR] [--fuzz-build DIR] [--only NAME,...]
                           [--kill N] [--flips N] [--minutes N] [--fuzz-minutes N] [--seed N]

Runs, in this order (--only picks some by name):
  kill_add          SIGKILL deltafs-add at random moments (--kill trials; half delta, half whole)
  kill_rm_gc        SIGKILL deltafs rm and deltafs gc at random moments (--kill trials of each)
  stale_reader      a reader killed inside its transaction does not pin the store's space
  bitflip           one bit flipped in a blob per trial (--flips trials): verify and the mount
  damaged_meta      damaged format record and LMDB meta pages
  damaged_manifest  targeted and random damage to manifests (--flips random trials)
  disk_full         ingest into a full tmpfs (--flips / 4 trials; needs root)
  fd_leak           the daemon's descriptors over many opens (--kill * 200 opens)
  concurrency       16 readers against a writer for --minutes, daemon RSS within its cache bound
  security          file modes, allow_other, names, overflowing shapes and offsets
  fuzz_*            each libFuzzer target for --fuzz-minutes, from a scratch copy of its corpus
with the same scenario code as the short tests (tests/reliability/reliability.py), sized up, and
carrying on after a failed trial (counted, its message printed at the end, the fixture rebuilt).

Defaults: 100 kill trials (add, and rm and gc each), 100 flips, 5 minutes of concurrency, 5 minutes
per fuzz target (about 30 minutes in all on 2 cores). --quick: 10, 10, 30 s, 30 s (about 3
minutes).
The fuzz targets come from a clang build with -Dfuzz=true (--fuzz-build, default build-fuzz); a
target that is not built is reported as skipped. A crashing fuzz input is kept in the run's
artifact directory (printed) for tests/fuzz/corpus_*/, where the corpus tests replay it.

Exit status 0 if nothing failed, 1 otherwise. The last lines are the table: scenario, trials,
failures, bytes compared with the original, and what else was counted.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.normpath(os.path.join(HERE, "..", ".."))


def parse():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a short run (about 3 minutes)")
    ap.add_argument("--build", default=os.environ.get("BUILD", os.path.join(SRC, "build")),
                    help="build directory with the tools and storedump (default: build)")
    ap.add_argument("--fuzz-build", default=os.path.join(SRC, "build-fuzz"),
                    help="clang -Dfuzz=true build directory (default: build-fuzz)")
    ap.add_argument("--only", default="", help="comma-separated scenario names")
    ap.add_argument("--kill", type=int,
                    help="kill trials of add, and of rm and gc each (default 100; quick 10)")
    ap.add_argument("--flips", type=int, help="bit-flip trials (default 100; quick 10)")
    ap.add_argument("--minutes", type=float, help="concurrency run (default 5; quick 0.5)")
    ap.add_argument("--fuzz-minutes", type=float,
                    help="per fuzz target (default 5; quick 0.5)")
    ap.add_argument("--seed", type=int, default=int(time.time()) % 100000,
                    help="random seed (printed, to repeat a run)")
    a = ap.parse_args()
    for k, full, quick in (("kill", 100, 10), ("flips", 100, 10), ("minutes", 5, 0.5),
                           ("fuzz_minutes", 5, 0.5)):
        if getattr(a, k) is None:
            setattr(a, k, quick if a.quick else full)
    return a


def fuzz(target, corpus, minutes, fuzz_build, artifacts, st, extra=()):
    """Run one libFuzzer target for `minutes` on a scratch copy of its corpus; count executions;
    a crash or a leak fails the run, its input kept in artifacts/."""
    exe = os.path.join(fuzz_build, "tests", "fuzz", target)
    if not os.access(exe, os.X_OK):
        st.outcomes["skipped: not built (CC=clang meson setup build-fuzz -Dfuzz=true)"] += 1
        return
    with tempfile.TemporaryDirectory(prefix="deltafs-fuzz-") as scratch:
        for f in os.listdir(corpus):
            shutil.copy(os.path.join(corpus, f), scratch)
        p = subprocess.run([exe, f"-max_total_time={int(minutes * 60)}", "-timeout=30",
                            "-print_final_stats=1", f"-artifact_prefix={artifacts}/{target}-",
                            *extra, scratch], capture_output=True, text=True, errors="replace")
        st.trials += 1
        execs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", p.stderr)
        st.outcomes["executions"] += int(execs[-1]) if execs else 0
        st.outcomes["corpus size at the end"] = len(os.listdir(scratch))
        if p.returncode != 0:
            st.failures += 1
            st.errors.append(f"{target} exit {p.returncode}:\n" + "\n".join(
                p.stderr.splitlines()[-25:]))


def main():
    a = parse()
    os.environ["BUILD"] = os.path.abspath(a.build)
    os.environ.setdefault("STOREDUMP", os.path.join(os.environ["BUILD"], "tests", "reliability",
                                                    "storedump"))
    os.environ.setdefault("SHARED", os.path.join(SRC, "..", "shared"))
    sys.path.insert(0, os.path.join(SRC, "tests", "reliability"))
    import reliability as rel  # after BUILD is set: fsutil reads it at import

    for tool in (rel.ADD, rel.DFS, rel.MOUNT, rel.STOREDUMP):
        if not os.access(tool, os.X_OK):
            sys.exit(f"{tool} is not built (ninja -C {a.build})")
    rng = np.random.default_rng(a.seed)
    fuse = rel.fuse_ok()
    fz = os.path.join(SRC, "tests", "fuzz")
    artifacts = tempfile.mkdtemp(prefix="deltafs-stress-artifacts-")
    scenarios = [
        ("kill_add", lambda w, st: rel.kill_add(w, a.kill, rng, st, fuse)),
        ("kill_rm_gc", lambda w, st: rel.kill_rm_gc(w, 2 * a.kill, rng, st, fuse)),
        ("stale_reader", lambda w, st: rel.stale_reader(w, st)),
        ("bitflip", lambda w, st: rel.bitflip(w, a.flips, rng, st)),
        ("damaged_meta", lambda w, st: rel.damaged_meta(w, st)),
        ("damaged_manifest", lambda w, st: rel.damaged_manifest(w, a.flips, rng, st)),
        ("disk_full", lambda w, st: rel.disk_full(w, max(3, a.flips // 4), rng, st)),
        ("fd_leak", lambda w, st: rel.fd_leak(w, 200 * a.kill, rng, st)),
        ("concurrency", lambda w, st: rel.concurrency(w, 60 * a.minutes, rng, st)),
        ("security", lambda w, st: rel.security(w, st)),
        ("fuzz_safetensors", lambda w, st: fuzz(
            "fuzz_safetensors", os.path.join(fz, "corpus_safetensors"), a.fuzz_minutes,
            a.fuzz_build, artifacts, st, [f"-dict={os.path.join(fz, 'safetensors.dict')}"])),
        ("fuzz_codec", lambda w, st: fuzz("fuzz_codec", os.path.join(fz, "corpus_codec"),
                                          a.fuzz_minutes, a.fuzz_build, artifacts, st)),
        ("fuzz_manifest", lambda w, st: fuzz("fuzz_manifest", os.path.join(fz, "corpus_manifest"),
                                             a.fuzz_minutes, a.fuzz_build, artifacts, st)),
    ]
    only = set(filter(None, a.only.split(",")))
    unknown = only - {n for n, _ in scenarios}
    if unknown:
        sys.exit(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    print(f"stress: seed {a.seed}, build {a.build}, kill {a.kill}, flips {a.flips}, "
          f"concurrency {a.minutes} min, fuzz {a.fuzz_minutes} min per target", flush=True)
    results = []
    for name, fn in scenarios:
        if only and name not in only:
            continue
        st = rel.Stats(name, keep_going=True)
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="deltafs-stress-") as w:
            try:
                fn(w, st)
            except SystemExit as e:  # a scenario's need (fuse, root) is absent: exit 77
                if e.code != rel.SKIP:
                    raise
                st.outcomes["skipped: " + ("needs /dev/fuse" if not fuse else "needs root")] += 1
            except Exception as e:  # noqa: BLE001 -- a failed fixture or single-shot check
                st.failures += 1
                st.errors.append(f"{type(e).__name__}: {e}")
        st.seconds = time.monotonic() - t0
        results.append(st)
        print(f"  {name}: {st.trials} trials, {st.failures} failures, {st.seconds:.0f} s",
              flush=True)

    for st in results:
        for e in st.errors:
            print(f"\n--- {st.name} ---\n{e}")
    if not os.listdir(artifacts):
        os.rmdir(artifacts)
    else:
        print(f"\nfuzz crash inputs kept in {artifacts}")
    print(f"\n{'scenario':<18} {'trials':>7} {'failures':>8} {'bytes compared':>15} {'time':>6}"
          "  counted")
    for st in results:
        counted = "; ".join([f"{k} {v}" for k, v in sorted(st.outcomes.items())] +
                            [f"{k}: {v}" for k, v in st.info.items()])
        print(f"{st.name:<18} {st.trials:>7} {st.failures:>8} {st.bytes:>15,} "
              f"{st.seconds:>5.0f}s  {counted}")
    failed = sum(st.failures for st in results)
    print(f"{sum(st.trials for st in results)} trials, {failed} failures, seed {a.seed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
