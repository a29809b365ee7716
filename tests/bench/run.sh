#!/bin/bash
# The benchmark suite: one command, markdown tables, every comparison measured in the same run on
# the same data.
#
#   tests/bench/run.sh [--set 1g|7b] [--runs N] [--reads N] [--no-zstd19] [SCRATCH]
#     (as root, from anywhere; SCRATCH default ./scratch, where the generated set is made once and
#      kept; env BUILD (default ./build), CACHE_MB (mount.deltafs cache_size, default 256))
#
# Also the real F32 pair in ../shared/data/charlm (CHARLM=DIR), sizes only, when it is there.
# The set (tests/data/genmodel.py, deterministic, never committed): a llama-shaped BF16 base and
# three fine-tunes of it with different delta sizes, ||dW||/||W|| = 0.003 (ft-small), 0.01
# (ft-mid, the one every read test uses) and 0.03 (ft-large, a 3-shard Hugging Face directory with
# index, config and tokenizer files). --set 1g: ~1.07 GB per checkpoint (a few minutes in all);
# --set 7b: LLaMA-7B shapes, ~13.5 GB per checkpoint (needs ~140 GB of scratch and hours, mostly
# zstd -19; --no-zstd19 leaves that column out).
#
# What it measures, and against what (why these baselines: zstd is what anyone compresses a file
# with; squashfuse on a `mksquashfs -comp zstd` image is the usual compressed read-only FUSE;
# `cat` of the original with the page cache hot is the ceiling):
#   1. store size: per checkpoint, deltafs lossless (the bytes it added to the store) and DeltaDQ
#      at 16x and 64x (ft-mid), against zstd -3 and zstd -19 of the same files; the squashfs
#      image of the whole set; the store file as checkpoints are added (base, +1, +2, +3).
#   2. ingest MB/s: deltafs-add against zstd -3 -T0 of the same file (page cache warm), to
#      /dev/null and to a file it then syncs, median of RUNS; deltafs-add's peak RSS
#      (/usr/bin/time) and the anonymous part of it.
#   3. reads (median of RUNS; cold = page cache dropped and a fresh mount; warm = at once again):
#      sequential, READS random 128 KiB preads, mmap of the largest tensor touched page by page
#      (cold), and 4 readers at once, each reading a different checkpoint from start to end
#      (cold); for deltafs, squashfuse and the original files.
#   4. mount.deltafs peak memory: RssAnon (its own memory) against cache_size, and VmHWM.
#   5. instructions per decoded byte of each decode path on a fixed chunk (tests/bench/
#      bench_decode.c under valgrind --tool=callgrind; machine noise does not move these), with
#      the MB/s of one core beside them.
# Targets (issue 7): reads >= 2x squashfuse and >= 0.7x cat; ingest >= 1x zstd -3 -T0; RssAnon
# <= cache_size + 64 MiB. The tables print the ratios.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SET=1g RUNS=3 READS=1000 ZSTD19=1 SCRATCH=./scratch
while (($#)); do
    case $1 in
        --set) SET=$2; shift 2 ;;
        --runs) RUNS=$2; shift 2 ;;
        --reads) READS=$2; shift 2 ;;
        --no-zstd19) ZSTD19=0; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) SCRATCH=$1; shift ;;
    esac
done
[[ $SET == 1g || $SET == 7b ]] || { echo "run.sh: --set is 1g or 7b" >&2; exit 2; }
BUILD=$(cd "${BUILD:-./build}" && pwd)
CACHE_MB=${CACHE_MB:-256}
ADD=$BUILD/tools/deltafs-add DFS=$BUILD/tools/deltafs MOUNT=$BUILD/fs/mount.deltafs
DECODE=$BUILD/tests/bench/bench_decode
PY=/usr/bin/python3
for tool in "$ADD" "$DFS" "$MOUNT" "$DECODE"; do
    [[ -x $tool ]] || { echo "run.sh: $tool missing: build first (BUILD=$BUILD)" >&2; exit 1; }
done
for tool in zstd mksquashfs squashfuse fusermount3 mountpoint /usr/bin/time pgrep $PY; do
    command -v "$tool" >/dev/null ||
        { echo "run.sh: $tool missing (apt-get install zstd squashfs-tools squashfuse time procps)" >&2; exit 1; }
done
[[ -w /proc/sys/vm/drop_caches ]] || { echo "run.sh: needs root (drop_caches)" >&2; exit 1; }

mkdir -p "$SCRATCH"
DATA=$(cd "$SCRATCH" && pwd)/bench-$SET
WORK=$DATA/work.$$
mkdir -p "$DATA" "$WORK"
MNT_D=$WORK/mnt-deltafs MNT_S=$WORK/mnt-squash DPID=
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
log() { echo "run.sh: $*" >&2; }

# --- data --------------------------------------------------------------------------------------
gen() { "$ROOT/tests/data/genmodel.py" --preset "$SET" --seed 1 -q "$@"; }
[[ -f $DATA/base.safetensors ]] || { log "generating base"; gen --out "$DATA/base.safetensors"; }
[[ -f $DATA/ft-small.safetensors ]] ||
    { log "generating ft-small"; gen --finetune 11 --delta 0.003 --out "$DATA/ft-small.safetensors"; }
[[ -f $DATA/ft-mid.safetensors ]] ||
    { log "generating ft-mid"; gen --finetune 7 --delta 0.01 --out "$DATA/ft-mid.safetensors"; }
[[ -f $DATA/ft-large/config.json ]] ||
    { log "generating ft-large"; gen --finetune 13 --delta 0.03 --hf-dir "$DATA/ft-large" --shards 3; }
NAMES=(base ft-small ft-mid ft-large)
src() { [[ $1 == ft-large ]] && echo "$DATA/ft-large" || echo "$DATA/$1.safetensors"; }
files_of() { if [[ -d $1 ]]; then find "$1" -type f | sort; else echo "$1"; fi; }
bytes_of() { files_of "$1" | xargs stat -c %s | awk '{ s += $1 } END { print s }'; }

now() { date +%s.%N; }
# Peak RssAnon (KiB) of the child of process $1 (a /usr/bin/time), sampled every 20 ms until it
# exits: /usr/bin/time's peak RSS also counts the mapped input file and store pages, which the
# kernel can drop at any time; the anonymous part is the memory deltafs-add really holds.
peak_anon() {
    local c="" max=0 v
    while [[ -z $c ]] && kill -0 "$1" 2>/dev/null; do c=$(pgrep -P "$1"); sleep 0.005; done
    while [[ -n $c ]] && v=$(awk '/^RssAnon:/ { print $2 }' "/proc/$c/status" 2>/dev/null) && [[ -n $v ]]; do
        ((v > max)) && max=$v
        sleep 0.02
    done
    echo "$max"
}
median() { printf '%s\n' "$@" | sort -g | sed -n "$(( ($# + 1) / 2 ))p"; }
mb() { awk -v n="$1" 'BEGIN { printf "%.1f", n / 1e6 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b ? a / b : 0 }'; }
rate() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN { printf "%.1f", n / 1e6 / (b - a) }'; }
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
warm() { files_of "$1" | xargs cat >/dev/null; }
store_file() { stat -c %s "$1/data.mdb"; }
# Bytes a checkpoint added: the "stored" column of `deltafs ls` in bytes.
stored() { "$DFS" ls "$1" --bytes 2>/dev/null | awk -v n="$2" '$1 == n { print $4 }'; }

# --- 1 and 2: sizes, ingest ----------------------------------------------------------------------
declare -A SZ Z3 Z19 T_ADD T_Z3 T_Z3F RSS_ADD ANON_ADD
STORE=$WORK/store
for n in "${NAMES[@]}"; do
    s=$(src "$n")
    SZ[$n]=$(bytes_of "$s")
    log "zstd -3 / -19 of $n"
    Z3[$n]=$(files_of "$s" | while read -r f; do zstd -3 -T0 -c "$f" | wc -c; done | awk '{ s += $1 } END { print s }')
    if ((ZSTD19)); then
        Z19[$n]=$(files_of "$s" | while read -r f; do zstd -19 -T0 -c "$f" | wc -c; done | awk '{ s += $1 } END { print s }')
    else
        Z19[$n]=0
    fi
done
GROWTH=()
for n in "${NAMES[@]}"; do
    s=$(src "$n") base=()
    [[ $n != base ]] && base=(--base base)
    ta=() tz=() tzf=()
    for ((r = 0; r < RUNS; r++)); do
        log "ingest $n, run $((r + 1))/$RUNS"
        warm "$s"
        rm -rf "$WORK/tmpstore"
        if [[ $n != base ]]; then "$ADD" -q "$WORK/tmpstore" base "$(src base)" >/dev/null; fi
        t0=$(now)
        /usr/bin/time -f %M -o "$WORK/rss" "$ADD" -q "$WORK/tmpstore" "$n" "$s" "${base[@]}" >/dev/null &
        anon=$(peak_anon $!)
        wait $!
        t1=$(now)
        ta+=("$(rate "${SZ[$n]}" "$t0" "$t1")")
        RSS_ADD[$n]=$(cat "$WORK/rss")
        ANON_ADD[$n]=$anon
        t0=$(now)
        files_of "$s" | while read -r f; do zstd -3 -T0 -q -c "$f" >/dev/null; done
        t1=$(now)
        tz+=("$(rate "${SZ[$n]}" "$t0" "$t1")")
        # What a user would run: the compressed file written and synced (deltafs-add also writes
        # its store file and syncs it at the commit). Writing costs a fresh page-cache page per
        # 4 KiB; on this VM that cost swings with how recently the memory was freed.
        t0=$(now)
        files_of "$s" | while read -r f; do
            zstd -3 -T0 -q -f "$f" -o "$WORK/z.zst" && sync "$WORK/z.zst"; rm -f "$WORK/z.zst"
        done
        t1=$(now)
        tzf+=("$(rate "${SZ[$n]}" "$t0" "$t1")")
    done
    T_ADD[$n]=$(median "${ta[@]}")
    T_Z3[$n]=$(median "${tz[@]}")
    T_Z3F[$n]=$(median "${tzf[@]}")
    "$ADD" -q "$STORE" "$n" "$s" "${base[@]}" >/dev/null
    GROWTH+=("$(store_file "$STORE")")
done
rm -rf "$WORK/tmpstore"
log "DeltaDQ 16x and 64x of ft-mid"
for r in 16 64; do
    "$ADD" -q "$STORE" "ft-mid-dq$r" "$(src ft-mid)" --base base --codec deltadq --ratio "$r" >/dev/null
done
log "mksquashfs -comp zstd of the set"
mkdir -p "$WORK/set"
for n in "${NAMES[@]}"; do cp -al "$(src "$n")" "$WORK/set/"; done # hard links: mksquashfs keeps symlinks as links
mksquashfs "$WORK/set" "$WORK/set.sqfs" -comp zstd -noappend -quiet -no-progress >/dev/null
SQ=$(stat -c %s "$WORK/set.sqfs")

echo
echo "## Store size ($SET set, BF16; $(nproc) cores; $(date -u +%F))"
echo
echo "| checkpoint | size MB | zstd -3 | zstd -19 | deltafs lossless | DeltaDQ 16x | DeltaDQ 64x | deltafs / zstd -19 |"
echo "|---|---|---|---|---|---|---|---|"
total=0 tz3=0 tz19=0 tdf=0
for n in "${NAMES[@]}"; do
    d=$(stored "$STORE" "$n")
    q16=- q64=-
    [[ $n == ft-mid ]] && q16="$(mb "$(stored "$STORE" ft-mid-dq16)") ($(ratio "${SZ[$n]}" "$(stored "$STORE" ft-mid-dq16)")x)" &&
        q64="$(mb "$(stored "$STORE" ft-mid-dq64)") ($(ratio "${SZ[$n]}" "$(stored "$STORE" ft-mid-dq64)")x)"
    z19=$( ((ZSTD19)) && echo "$(mb "${Z19[$n]}") ($(ratio "${SZ[$n]}" "${Z19[$n]}")x)" || echo -)
    echo "| $n | $(mb "${SZ[$n]}") | $(mb "${Z3[$n]}") ($(ratio "${SZ[$n]}" "${Z3[$n]}")x) | $z19 | $(mb "$d") ($(ratio "${SZ[$n]}" "$d")x) | $q16 | $q64 | $( ((ZSTD19)) && ratio "${Z19[$n]}" "$d" || echo -) |"
    total=$((total + SZ[$n])) tz3=$((tz3 + Z3[$n])) tz19=$((tz19 + Z19[$n])) tdf=$((tdf + d))
done
echo "| **set** | $(mb $total) | $(mb $tz3) | $( ((ZSTD19)) && mb $tz19 || echo -) | $(mb $tdf) ($(ratio $total $tdf)x) | | | $( ((ZSTD19)) && ratio $tz19 $tdf || echo -) |"
echo
echo "squashfs image of the set (mksquashfs -comp zstd): $(mb "$SQ") MB ($(ratio "$total" "$SQ")x)."
echo "Store file (data.mdb) as checkpoints are added: $(for i in "${!NAMES[@]}"; do printf '%s%s %s MB' "$( ((i)) && echo ', ' )" "$( ((i)) && echo "+${NAMES[$i]}" || echo base)" "$(mb "${GROWTH[$i]}")"; done);"
echo "with the two DeltaDQ checkpoints: $(mb "$(store_file "$STORE")") MB."
CHARLM=${CHARLM:-$ROOT/../shared/data/charlm}
if [[ -f $CHARLM/base.safetensors && -f $CHARLM/finetuned_qa.safetensors ]]; then
    "$ADD" -q "$WORK/charlm" base "$CHARLM/base.safetensors" >/dev/null
    "$ADD" -q "$WORK/charlm" qa "$CHARLM/finetuned_qa.safetensors" --base base >/dev/null
    "$ADD" -q "$WORK/charlm" qa16 "$CHARLM/finetuned_qa.safetensors" --base base --codec deltadq --ratio 16 >/dev/null
    echo
    echo "The real pair, ../shared/data/charlm (F32):"
    echo
    echo "| checkpoint | size | zstd -3 | zstd -19 | deltafs lossless | DeltaDQ 16x |"
    echo "|---|---|---|---|---|---|"
    for f in base qa; do
        p=$CHARLM/$([[ $f == base ]] && echo base || echo finetuned_qa).safetensors
        n=$(stat -c %s "$p") z3=$(zstd -3 -c "$p" | wc -c) z19=$(zstd -19 -c "$p" | wc -c)
        d=$(stored "$WORK/charlm" "$f")
        q=$([[ $f == qa ]] && echo "$(stored "$WORK/charlm" qa16) ($(ratio "$n" "$(stored "$WORK/charlm" qa16)")x)" || echo -)
        echo "| $f$([[ $f == qa ]] && echo " (delta)") | $n | $z3 ($(ratio "$n" "$z3")x) | $z19 ($(ratio "$n" "$z19")x) | $d ($(ratio "$n" "$d")x) | $q |"
    done
fi
echo
echo "## Ingest (median of $RUNS, page cache warm)"
echo
echo "| checkpoint | deltafs-add MB/s | zstd -3 -T0 to /dev/null MB/s | deltafs / zstd | zstd -3 -T0 to a synced file MB/s | deltafs / zstd to a file | deltafs-add peak RSS MiB | of it anonymous, peak MiB |"
echo "|---|---|---|---|---|---|---|---|"
for n in "${NAMES[@]}"; do
    echo "| $n$([[ $n != base ]] && echo " (delta)") | ${T_ADD[$n]} | ${T_Z3[$n]} | $(ratio "${T_ADD[$n]}" "${T_Z3[$n]}") | ${T_Z3F[$n]} | $(ratio "${T_ADD[$n]}" "${T_Z3F[$n]}") | $((RSS_ADD[$n] / 1024)) | $((ANON_ADD[$n] / 1024)) |"
done

# --- 3 and 4: reads ------------------------------------------------------------------------------
wait_mounted() {
    local i
    for ((i = 0; i < 100; i++)); do mountpoint -q "$1" && return 0; sleep 0.1; done
    echo "run.sh: $1 did not mount" >&2
    exit 1
}
HWM_KB=0 ANON_KB=0
mount_deltafs() {
    "$MOUNT" "$STORE" "$MNT_D" -f -o cache_size="$CACHE_MB" 2>/dev/null &
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
mount_squash() { squashfuse "$WORK/set.sqfs" "$MNT_S"; wait_mounted "$MNT_S"; }
umount_squash() { fusermount3 -u "$MNT_S"; }

# The file of checkpoint n as reader r sees it (ft-large: its first shard).
path_of() {
    local r=$1 n=$2 rel shards
    rel=$n.safetensors
    if [[ $n == ft-large ]]; then
        shards=("$DATA"/ft-large/model-*.safetensors)
        rel=$(basename "${shards[0]}")
    fi
    case $r in
        deltafs) if [[ $n == ft-large ]]; then echo "$MNT_D/$n/$rel"; else echo "$MNT_D/$n/$n.safetensors"; fi ;;
        squashfuse) if [[ $n == ft-large ]]; then echo "$MNT_S/ft-large/$rel"; else echo "$MNT_S/$rel"; fi ;;
        cat) if [[ $n == ft-large ]]; then echo "$DATA/ft-large/$rel"; else echo "$DATA/$rel"; fi ;;
    esac
}

seq_read() {
    local t0 t1 n
    n=$(stat -c %s "$1")
    t0=$(now); cat "$1" >/dev/null; t1=$(now)
    rate "$n" "$t0" "$t1"
}
rand_read() {
    $PY - "$1" "$READS" <<'EOF'
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
print(f"{reads * block / 1e6 / (time.perf_counter() - t0):.1f}")
EOF
}
# mmap the file, find its largest tensor from the safetensors header, touch one byte per page.
mmap_read() {
    $PY - "$1" <<'EOF'
import json, mmap, os, struct, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
size = os.fstat(fd).st_size
mm = mmap.mmap(fd, size, prot=mmap.PROT_READ)
n = struct.unpack("<Q", mm[:8])[0]
hdr = json.loads(mm[8:8 + n])
b, e = max((v["data_offsets"] for k, v in hdr.items() if k != "__metadata__"), key=lambda o: o[1] - o[0])
b, e = b + 8 + n, e + 8 + n
t0 = time.perf_counter()
s = 0
for off in range(b, e, 4096):
    s += mm[off]
dt = time.perf_counter() - t0
print(f"{(e - b) / 1e6 / dt:.1f}")
EOF
}
# 4 readers at once, each a different checkpoint, start to end: aggregate MB/s.
par_read() {
    local r=$1 t0 t1 n=0 p f
    local -a files=()
    if [[ $r == deltafs ]]; then
        files=("$(path_of deltafs ft-small)" "$(path_of deltafs ft-mid)" "$(path_of deltafs ft-large)" "$MNT_D/ft-mid-dq16/ft-mid.safetensors")
    else
        for p in base ft-small ft-mid ft-large; do files+=("$(path_of "$r" "$p")"); done
    fi
    for f in "${files[@]}"; do n=$((n + $(stat -c %s "$f"))); done
    t0=$(now)
    for f in "${files[@]}"; do cat "$f" >/dev/null & done
    wait
    t1=$(now)
    rate "$n" "$t0" "$t1"
}

declare -A R=()
run() { # READER PATTERN
    local reader=$1 pattern=$2 file
    drop
    case $reader in
        deltafs) mount_deltafs ;;
        squashfuse) mount_squash ;;
    esac
    file=$(path_of "$reader" ft-mid)
    [[ $pattern == par ]] && file=$reader # par_read picks its own four files
    R[$reader.$pattern.cold]+="$("${pattern}_read" "$file") "
    [[ $pattern == seq || $pattern == rand ]] && R[$reader.$pattern.warm]+="$("${pattern}_read" "$file") "
    case $reader in
        deltafs) umount_deltafs ;;
        squashfuse) umount_squash ;;
    esac
}
mount_deltafs
cmp "$(path_of deltafs ft-mid)" "$(path_of cat ft-mid)" || { echo "run.sh: mounted ft-mid differs" >&2; exit 1; }
umount_deltafs
for ((r = 0; r < RUNS; r++)); do
    for pattern in seq rand mmap par; do
        for reader in deltafs squashfuse cat; do
            log "reads: run $((r + 1))/$RUNS $pattern $reader"
            run "$reader" "$pattern"
        done
    done
done

echo
echo "## Reads, MB/s (median of $RUNS; ft-mid, $(mb "${SZ[ft-mid]}") MB, stored lossless as a delta; cache_size=$CACHE_MB MiB)"
echo
echo "| read | deltafs | squashfuse | original (cat) | deltafs / squashfuse | deltafs / cat |"
echo "|---|---|---|---|---|---|"
row() { # LABEL KEY
    local d s c
    # shellcheck disable=SC2086
    d=$(median ${R[deltafs.$2]}) s=$(median ${R[squashfuse.$2]}) c=$(median ${R[cat.$2]})
    echo "| $1 | $d | $s | $c | $(ratio "$d" "$s") | $(ratio "$d" "$c") |"
}
row "sequential, cold" seq.cold
row "sequential, warm" seq.warm
row "random 128 KiB x $READS, cold" rand.cold
row "random 128 KiB x $READS, warm" rand.warm
row "mmap of the largest tensor, cold" mmap.cold
row "4 readers of 4 checkpoints, cold" par.cold
echo
echo "(cold: page cache dropped and a fresh mount before each; the original files are read from"
echo "disk then too. 4 readers: deltafs reads ft-small, ft-mid, ft-large's first shard and ft-mid"
echo "at DeltaDQ 16x; the others base, ft-small, ft-mid and that shard.)"
echo
echo "mount.deltafs, cache_size=$CACHE_MB MiB: RssAnon at most $((ANON_KB / 1024)) MiB" \
    "(target <= $((CACHE_MB + 64))); VmHWM $((HWM_KB / 1024)) MiB (also counts the store's mapped pages)."

# --- 5: decode instructions ----------------------------------------------------------------------
echo
echo "## Decode cost per path (tests/bench/bench_decode.c: one 256 KiB BF16 chunk)"
echo
if command -v valgrind >/dev/null; then
    echo "| path | instructions per output byte (callgrind) |"
    echo "|---|---|"
    for p in base delta dq16 dq64; do
        valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.$p" --collect-atstart=no \
            --toggle-collect=bd_decode "$DECODE" --reps 2 "$p" >/dev/null 2>&1
        ir=$(awk '/^(summary|totals):/ { print $2; exit }' "$WORK/cg.$p")
        echo "| $p | $(awk -v i="$ir" 'BEGIN { printf "%.2f", i / (10 * 262144) }') |"
    done
    echo
else
    echo "(valgrind not installed: no instruction counts)"
    echo
fi
"$DECODE"
