#!/bin/bash
# Model scale, correctness first: a LLaMA-7B-shaped BF16 base (13.5 GB) and fine-tunes of it,
# ingested and read back through the mount byte for byte, on whatever disk and memory this
# machine has. run.sh measures speed against other tools on the 1 GB set; this shows the same
# code holds at 7B: every mounted file's sha256 equals the original's.
#
#   tests/bench/scale.sh [--preset 7b] [--keep] [SCRATCH] [FT...]
#     (as root; SCRATCH default ./scratch; FT: any of ft-small ft-mid ft-large, default all three;
#      env BUILD (default ./build), CACHE_MB (mount.deltafs cache_size, default 256))
#
# Fine-tunes as in run.sh: ||dW||/||W|| = 0.003 (ft-small), 0.01 (ft-mid), 0.03 (ft-large, a
# 3-shard Hugging Face directory). Each fine-tune's input is generated, ingested, checked through
# the mount and deleted before the next (unless --keep), so the scratch space needed is two
# checkpoints plus the store (~50 GB at 7b). Generation is most of the time (~10 min per 7B
# checkpoint on 2 cores).
#
# Prints one markdown table: per checkpoint its size, the bytes the store added, deltafs-add MB/s
# and peak RSS, a cold sequential read of every file through a fresh mount (page cache dropped),
# `sha256sum -c` of every file through it against sums of the originals taken after generating
# them, and the daemon's RssAnon after that.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PRESET=7b KEEP=0 SCRATCH=./scratch FTS=()
while (($#)); do
    case $1 in
        --preset) PRESET=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        ft-small|ft-mid|ft-large) FTS+=("$1"); shift ;;
        -*) echo "scale.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) SCRATCH=$1; shift ;;
    esac
done
((${#FTS[@]})) || FTS=(ft-small ft-mid ft-large)
BUILD=$(cd "${BUILD:-./build}" && pwd)
CACHE_MB=${CACHE_MB:-256}
ADD=$BUILD/tools/deltafs-add DFS=$BUILD/tools/deltafs MOUNT=$BUILD/fs/mount.deltafs
for tool in "$ADD" "$DFS" "$MOUNT"; do
    [[ -x $tool ]] || { echo "scale.sh: $tool missing: build first (BUILD=$BUILD)" >&2; exit 1; }
done
[[ -w /proc/sys/vm/drop_caches ]] || { echo "scale.sh: needs root (drop_caches)" >&2; exit 1; }

mkdir -p "$SCRATCH"
DATA=$(cd "$SCRATCH" && pwd)/scale-$PRESET
STORE=$DATA/store MNT=$DATA/mnt DPID=
mkdir -p "$DATA" "$MNT"
cleanup() {
    if mountpoint -q "$MNT" 2>/dev/null; then fusermount3 -u "$MNT" || fusermount3 -uz "$MNT"; fi
    if [[ -n $DPID ]] && kill -0 "$DPID" 2>/dev/null; then kill "$DPID"; wait "$DPID" || true; fi
}
trap cleanup EXIT
log() { echo "scale.sh: $(date -u +%T) $*" >&2; }
now() { date +%s.%N; }
mb() { awk -v n="$1" 'BEGIN { printf "%.1f", n / 1e6 }'; }
rate() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN { printf "%.1f", n / 1e6 / (b - a) }'; }
files_of() { if [[ -d $1 ]]; then (cd "$1" && find . -type f | sed 's|^\./||' | sort); else basename "$1"; fi; }
bytes_of() { if [[ -d $1 ]]; then du -sb --apparent-size "$1" | cut -f1; else stat -c %s "$1"; fi; }
stored() { "$DFS" ls "$STORE" --bytes | awk -v n="$1" '$1 == n { print $4 }'; }

gen() { /usr/bin/python3 "$ROOT/tests/data/genmodel.py" --preset "$PRESET" --seed 1 -q "$@"; }
src() { [[ $1 == ft-large ]] && echo "$DATA/ft-large" || echo "$DATA/$1.safetensors"; }
make_input() {
    case $1 in
        base) gen --out "$DATA/base.safetensors" ;;
        ft-small) gen --finetune 11 --delta 0.003 --out "$DATA/ft-small.safetensors" ;;
        ft-mid) gen --finetune 7 --delta 0.01 --out "$DATA/ft-mid.safetensors" ;;
        ft-large) gen --finetune 13 --delta 0.03 --hf-dir "$DATA/ft-large" --shards 3 ;;
    esac
}

ROWS=()
check() { # NAME: ingest it, read it back through a fresh mount, compare sha256 file by file
    local n=$1 s t0 t1 rss base=() f bad=0 total=0 anon
    s=$(src "$n")
    [[ -e $s ]] || { log "generating $n"; make_input "$n"; }
    [[ $n != base ]] && base=(--base base)
    if ! "$DFS" ls "$STORE" --bytes 2>/dev/null | awk '{ print $1 }' | grep -qx "$n"; then
        log "ingesting $n"
        t0=$(now)
        /usr/bin/time -f %M -o "$DATA/rss" "$ADD" -q "$STORE" "$n" "$s" "${base[@]}" >/dev/null
        t1=$(now)
        ROW_ADD=$(rate "$(bytes_of "$s")" "$t0" "$t1") rss=$(($(cat "$DATA/rss") / 1024))
    else
        ROW_ADD=- rss=-
    fi
    [[ -f $DATA/$n.sha256 ]] || (cd "$(dirname "$s")" && files_of "$s" |
        sed "s|^|$( [[ -d $s ]] && echo "$(basename "$s")/")|" | xargs sha256sum) >"$DATA/$n.sha256"
    log "reading $n back through the mount"
    sync; echo 3 >/proc/sys/vm/drop_caches
    "$MOUNT" "$STORE" "$MNT" -f -o cache_size="$CACHE_MB" 2>"$DATA/mount.log" &
    DPID=$!
    for ((i = 0; i < 100; i++)); do mountpoint -q "$MNT" && break; sleep 0.1; done
    # Timed: a plain sequential read, cold (coreutils sha256sum runs at ~260 MB/s here, so timing
    # it would time the hash). Then the check, from the page cache the read filled.
    t0=$(now)
    (cd "$MNT/$n" && files_of "$s" | xargs cat) >/dev/null
    t1=$(now)
    total=$(bytes_of "$s")
    (cd "$MNT/$n" && sed "s|  $( [[ -d $s ]] && echo "$(basename "$s")/")|  |" "$DATA/$n.sha256" |
        sha256sum --quiet -c) >&2 || { log "$n: sha256 differs through the mount"; bad=1; }
    anon=$(awk '/^RssAnon:/ { print int($2 / 1024) }' "/proc/$DPID/status")
    fusermount3 -u "$MNT"; wait "$DPID"; DPID=
    ROWS+=("| $n | $(mb "$(bytes_of "$s")") | $(mb "$(stored "$n")") | $ROW_ADD | $rss | $(rate "$total" "$t0" "$t1") | $anon | $( ((bad)) && echo "**differs**" || echo equal) |")
    ((bad == 0)) || FAILED=1
    if [[ $n != base ]] && ((!KEEP)); then rm -rf "$s"; fi
}

FAILED=0
check base
for n in "${FTS[@]}"; do check "$n"; done
"$DFS" verify "$STORE" >/dev/null || { log "deltafs verify failed"; FAILED=1; }

echo
echo "## $PRESET-shaped set: ingest and read-back through the mount ($(nproc) cores, $(free -g | awk '/^Mem:/ { print $2 }') GiB; $(date -u +%F))"
echo
echo "| checkpoint | size MB | stored MB | deltafs-add MB/s | add peak RSS MiB | cat through the mount MB/s (cold) | daemon RssAnon MiB | sha256 vs original |"
echo "|---|---|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
echo
echo "Store file: $(mb "$(stat -c %s "$STORE/data.mdb")") MB for $(mb "$(awk -v a="$(bytes_of "$(src base)")" 'BEGIN { print a }')") MB of base plus the fine-tunes above; deltafs verify: $( ((FAILED)) && echo FAILED || echo passed)."
exit $FAILED
