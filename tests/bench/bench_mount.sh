#!/bin/bash
# Read benchmark of the mount: the ~1 GB generated fine-tune, stored lossless as a delta against its
# base, read through mount.deltafs, against the same file read from disk and through squashfuse.
#
#   tests/bench/bench_mount.sh [SCRATCH]     (as root, from the repository root; SCRATCH ./scratch)
#   env: BUILD (./build), CACHE_MB (mount.deltafs -o cache_size, default 256),
#        SQUASHFUSE (squashfuse; squashfuse_ll is the low-level one), RUNS (3), READS (2000)
#
# Why these baselines: squashfuse on a zstd image is the usual "compressed read-only FUSE" answer,
# so deltafs must be measured against it on equal terms (both decode in a FUSE daemon); `cat` of the
# original file is the ceiling (no FUSE, no decoding).
#
# Method, per (reader, access pattern), median of RUNS:
#   cold = `echo 3 > /proc/sys/vm/drop_caches` and a fresh mount before the run, so the kernel page
#          cache and the daemon's own chunk cache are both empty: the read pays disk + decoding.
#   warm = the same read again at once: what the kernel page cache (keep_cache) gives back.
#   seq  = the whole file with cat;  rand = READS preads of 128 KiB at 4 KiB-aligned offsets drawn
#          from a fixed seed (the same offsets for every reader).
# The peak RSS of mount.deltafs is VmHWM from /proc/PID/status over the daemon's lifetime, reported
# against its cache_size.  VmHWM counts the pages of the store's LMDB map the daemon has touched
# (file-backed, shared with the page cache, reclaimable), so RssAnon at the end of each run (the
# daemon's own memory, chunk cache included) is reported beside it.  All mounts are undone on exit, whatever happens.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SCRATCH=${1:-./scratch}
BUILD=${BUILD:-./build}
CACHE_MB=${CACHE_MB:-256}
SQUASHFUSE=${SQUASHFUSE:-squashfuse}
RUNS=${RUNS:-3}
READS=${READS:-2000}
ADD=$BUILD/tools/deltafs-add
MOUNT=$BUILD/fs/mount.deltafs

for tool in "$ADD" "$MOUNT"; do
    [[ -x $tool ]] || { echo "bench_mount: $tool missing: build first (BUILD=$BUILD)" >&2; exit 1; }
done
for tool in "$SQUASHFUSE" mksquashfs fusermount3 mountpoint; do
    command -v "$tool" >/dev/null || { echo "bench_mount: $tool missing" >&2; exit 1; }
done
[[ -w /proc/sys/vm/drop_caches ]] || { echo "bench_mount: needs root (drop_caches)" >&2; exit 1; }

mkdir -p "$SCRATCH"
SCRATCH=$(cd "$SCRATCH" && pwd)
BASE=$SCRATCH/base.safetensors
FT=$SCRATCH/ft.safetensors
[[ -f $BASE ]] || "$ROOT/tests/data/genmodel.py" --preset 1g --seed 1 --out "$BASE"
[[ -f $FT ]] || "$ROOT/tests/data/genmodel.py" --preset 1g --seed 1 --finetune 7 --out "$FT"
SIZE=$(stat -c %s "$FT")

WORK=$SCRATCH/bench_mount.$$
MNT_D=$WORK/mnt-deltafs
MNT_S=$WORK/mnt-squash
DPID=
cleanup() {
    local m
    for m in "$MNT_D" "$MNT_S"; do
        if mountpoint -q "$m" 2>/dev/null; then fusermount3 -u "$m" || fusermount3 -uz "$m"; fi
    done
    if [[ -n $DPID ]] && kill -0 "$DPID" 2>/dev/null; then kill "$DPID"; wait "$DPID" || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$MNT_D" "$MNT_S"

wait_mounted() {
    local i
    for ((i = 0; i < 100; i++)); do mountpoint -q "$1" && return 0; sleep 0.1; done
    echo "bench_mount: $1 did not mount" >&2
    exit 1
}

# Daemon in the foreground of a background job, so its PID (for VmHWM) is ours.
HWM_KB=0
ANON_KB=0
mount_deltafs() {
    "$MOUNT" "$WORK/store" "$MNT_D" -f -o cache_size="$CACHE_MB" &
    DPID=$!
    wait_mounted "$MNT_D"
}
umount_deltafs() {
    local kb anon
    kb=$(awk '/^VmHWM:/ { print $2 }' "/proc/$DPID/status")
    anon=$(awk '/^RssAnon:/ { print $2 }' "/proc/$DPID/status")
    ((kb > HWM_KB)) && HWM_KB=$kb
    ((anon > ANON_KB)) && ANON_KB=$anon
    fusermount3 -u "$MNT_D"
    wait "$DPID"
    DPID=
}
mount_squash() { "$SQUASHFUSE" "$WORK/ft.sqfs" "$MNT_S"; wait_mounted "$MNT_S"; }
umount_squash() { fusermount3 -u "$MNT_S"; }

now() { date +%s.%N; }
median() { printf '%s\n' "$@" | sort -g | sed -n "$(( ($# + 1) / 2 ))p"; }

seq_read() {
    local t0 t1
    t0=$(now)
    cat "$1" >/dev/null
    t1=$(now)
    awk -v n="$SIZE" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", n / 1e6 / (b - a) }'
}

rand_read() {
    /usr/bin/python3 - "$1" "$READS" <<'EOF'
import os, random, sys, time
path, reads = sys.argv[1], int(sys.argv[2])
size, block = os.path.getsize(path), 128 << 10
rng = random.Random(20240601)
offs = [rng.randrange(0, (size - block) // 4096) * 4096 for _ in range(reads)]
fd = os.open(path, os.O_RDONLY)
t0 = time.perf_counter()
for off in offs:
    if len(os.pread(fd, block, off)) != block:
        sys.exit(f"short read at {off}")
dt = time.perf_counter() - t0
os.close(fd)
print(f"{reads * block / 1e6 / dt:.1f}")
EOF
}

drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
# Readahead the kernel allows on a FUSE mount (its bdi is named after the mount's major:minor).
read_ahead_kb() { cat "/sys/class/bdi/$(mountpoint -d "$1")/read_ahead_kb" 2>/dev/null || echo '?'; }

echo "bench_mount: storing base + ft (lossless) in $WORK/store" >&2
"$ADD" "$WORK/store" base "$BASE" >/dev/null
"$ADD" "$WORK/store" ft "$FT" --base base >/dev/null
echo "bench_mount: mksquashfs -comp zstd" >&2
mksquashfs "$FT" "$WORK/ft.sqfs" -comp zstd -noappend -quiet -no-progress >/dev/null

mount_deltafs
DFILE=$MNT_D/ft/$(basename "$FT")
[[ -f $DFILE ]] || DFILE=$(find "$MNT_D/ft" -name '*.safetensors' -size "${SIZE}c" | head -n 1)
[[ -n $DFILE && -f $DFILE ]] || { echo "bench_mount: ft not found under $MNT_D" >&2; exit 1; }
DFILE=${DFILE#"$MNT_D"/}
cmp "$MNT_D/$DFILE" "$FT" || { echo "bench_mount: mounted ft differs from the original" >&2; exit 1; }
BDI_D=$(read_ahead_kb "$MNT_D")
umount_deltafs
mount_squash
BDI_S=$(read_ahead_kb "$MNT_S")
umount_squash

declare -A R=()
# run READER PATTERN: one cold and one warm measurement, appended to R[READER.PATTERN.{cold,warm}].
run() {
    local reader=$1 pattern=$2 file
    drop
    case $reader in
        deltafs) mount_deltafs; file=$MNT_D/$DFILE ;;
        squashfuse) mount_squash; file=$MNT_S/$(basename "$FT") ;;
        cat) file=$FT ;;
    esac
    R[$reader.$pattern.cold]+="$("${pattern}_read" "$file") "
    R[$reader.$pattern.warm]+="$("${pattern}_read" "$file") "
    case $reader in
        deltafs) umount_deltafs ;;
        squashfuse) umount_squash ;;
    esac
}

for ((r = 0; r < RUNS; r++)); do
    for pattern in seq rand; do
        for reader in deltafs squashfuse cat; do
            echo "bench_mount: run $((r + 1))/$RUNS $pattern $reader" >&2
            run "$reader" "$pattern"
        done
    done
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
echo
echo "Read through the mount, MB/s (median of $RUNS; $(awk -v n="$SIZE" 'BEGIN { printf "%.1f MB", n / 1e6 }') BF16 fine-tune, stored lossless;"
echo "squashfs image $(stat -c %s "$WORK/ft.sqfs" | awk '{ printf "%.1f MB", $1 / 1e6 }'), zstd; $(nproc) cores; bdi read_ahead_kb deltafs $BDI_D, squashfuse $BDI_S)"
echo
echo "| read | deltafs | $SQUASHFUSE | cat original | deltafs/$SQUASHFUSE | deltafs/cat |"
echo "|---|---|---|---|---|---|"
for pattern in seq rand; do
    for state in cold warm; do
        # shellcheck disable=SC2086
        d=$(median ${R[deltafs.$pattern.$state]})
        # shellcheck disable=SC2086
        s=$(median ${R[squashfuse.$pattern.$state]})
        # shellcheck disable=SC2086
        c=$(median ${R[cat.$pattern.$state]})
        what=$([[ $pattern == seq ]] && echo "sequential" || echo "random 128 KiB x $READS")
        echo "| $what, $state | $d | $s | $c | $(ratio "$d" "$s") | $(ratio "$d" "$c") |"
    done
done
echo
echo "mount.deltafs with -o cache_size=$CACHE_MB (MiB): peak RSS (VmHWM) $((HWM_KB / 1024)) MiB," \
    "RssAnon after a run $((ANON_KB / 1024)) MiB (max over runs)"
