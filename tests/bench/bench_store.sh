#!/bin/bash
# Storage benchmark: how many bytes deltafs needs for a base and a fine-tune of it, against general
# compressors on the same files, and how fast it ingests.
#
#   tests/bench/bench_store.sh [SCRATCH]     (run from the repository root; SCRATCH default ./scratch)
#   env: BUILD (default ./build), CHARLM (default ../shared/data/charlm)
#
# Why these comparisons: zstd -3 is what anyone would use for speed, zstd -19 is the best a general
# compressor does with no knowledge of tensors or of the base (it runs at a few MB/s, so it uses
# -T0 and is timed but not a fair speed baseline); the deltafs figure for the fine-tune is what the
# delta against the base buys.  Two models: the generated ~1 GB llama pair (tests/data/genmodel.py,
# BF16, ||dW||/||W|| = 0.01) and the real F32 charlm pair from ../shared, so a codec tuned to the
# synthetic statistics alone shows up.
#
# Method: every ingest runs into a fresh store (dedup would make a repeat free), three times; the
# median is reported.  Page cache is warm (each file is read once before timing), so the figures
# are the CPU cost of encoding plus the store's writes, as for zstd writing its output file.  Peak
# RSS of deltafs-add comes from /usr/bin/time -v (Debian package `time`).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SCRATCH=${1:-./scratch}
BUILD=${BUILD:-./build}
CHARLM=${CHARLM:-$ROOT/../shared/data/charlm}
ADD=$BUILD/tools/deltafs-add
LS=$BUILD/tools/deltafs
RUNS=3

for tool in "$ADD" "$LS"; do
    [[ -x $tool ]] || { echo "bench_store: $tool missing: build first (BUILD=$BUILD)" >&2; exit 1; }
done
for tool in zstd /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "bench_store: $tool missing" >&2; exit 1; }
done

mkdir -p "$SCRATCH"
SCRATCH=$(cd "$SCRATCH" && pwd)
WORK=$SCRATCH/bench_store.$$
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK"

if [[ ! -f $SCRATCH/base.safetensors ]]; then
    "$ROOT/tests/data/genmodel.py" --preset 1g --seed 1 --out "$SCRATCH/base.safetensors"
fi
if [[ ! -f $SCRATCH/ft.safetensors ]]; then
    "$ROOT/tests/data/genmodel.py" --preset 1g --seed 1 --finetune 7 --delta 0.01 \
        --out "$SCRATCH/ft.safetensors"
fi

now() { date +%s.%N; }
median() { printf '%s\n' "$@" | sort -g | sed -n "$(( ($# + 1) / 2 ))p"; }
mb() { awk -v b="$1" 'BEGIN { printf(b < 1e7 ? "%.2f MB" : "%.1f MB", b / 1e6) }'; }
# "N MB (r x)": bytes and the compression ratio against the original size.
sized() { echo "$(mb "$1") $(awk -v b="$1" -v o="$2" 'BEGIN { printf "(%.2fx)", o / b }')"; }
rate() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.0f", b / 1e6 / s }'; }

# Stored bytes of a checkpoint: `deltafs ls` prints name, base, size, stored, ratio, with sizes as
# "3.01 MB" (3 significant digits, decimal units), so the figure is good to 0.5%.
stored_bytes() {
    "$LS" ls "$1" | awk -v n="$2" '
        BEGIN { u["B"] = 1; u["kB"] = 1e3; u["MB"] = 1e6; u["GB"] = 1e9; u["TB"] = 1e12 }
        $1 == n { printf "%.0f\n", $5 * u[$6]; found = 1 }
        END { exit !found }'
}

# zstd LEVEL FILE -> "bytes seconds" (output written to a file, as deltafs-add writes its store).
zstd_run() {
    local t0 t1
    t0=$(now)
    zstd -q -f "$1" -T0 "$2" -o "$WORK/out.zst"
    t1=$(now)
    echo "$(stat -c %s "$WORK/out.zst") $(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')"
    rm -f "$WORK/out.zst"
}

# bench LABEL BASEFILE FTFILE: one model pair; appends rows to the two tables.
SIZE_ROWS=()
SPEED_ROWS=()
bench() {
    local label=$1 base=$2 ft=$3 f name size z3 z19 secs t0 t1 store rss
    declare -A zt=() dt=() rs=()
    cat "$base" "$ft" >/dev/null
    for ((r = 0; r < RUNS; r++)); do
        store=$WORK/store.$label.$r
        rm -rf "$store"
        for name in base ft; do
            if [[ $name == base ]]; then f=$base; set -- "$ADD" -q "$store" base "$base"
            else f=$ft; set -- "$ADD" -q "$store" ft "$ft" --base base; fi
            t0=$(now)
            /usr/bin/time -v -o "$WORK/time" "$@" >/dev/null
            t1=$(now)
            dt[$name]+="$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }') "
            rs[$name]+="$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$WORK/time") "
            zt[$name]+="$(zstd_run -3 "$f" | cut -d' ' -f2) "
        done
        # The last store is kept for `deltafs ls`; the others only cost disk.
        ((r == RUNS - 1)) || rm -rf "$store"
    done
    local -a tot=(0 0 0 0)
    for name in base ft; do
        [[ $name == base ]] && f=$base || f=$ft
        size=$(stat -c %s "$f")
        z3=$(zstd_run -3 "$f" | cut -d' ' -f1)
        echo "bench_store: zstd -19 -T0 on $(basename "$f") ($(mb "$size")), slow..." >&2
        z19=$(zstd_run -19 "$f")
        local stored
        stored=$(stored_bytes "$store" "$name")
        # shellcheck disable=SC2086
        secs=$(median ${dt[$name]})
        # shellcheck disable=SC2086
        rss=$(median ${rs[$name]})
        SIZE_ROWS+=("| $label | $(basename "$f") | $(mb "$size") | $(sized "$z3" "$size") | $(sized "${z19% *}" "$size") | $(sized "$stored" "$size") |")
        tot=($((tot[0] + size)) $((tot[1] + z3)) $((tot[2] + ${z19% *})) $((tot[3] + stored)))
        # shellcheck disable=SC2086
        SPEED_ROWS+=("| $label | $(basename "$f") | $(rate "$size" "$secs") | $(rate "$size" "$(median ${zt[$name]})") | $(rate "$size" "${z19#* }") | $(awk -v k="$rss" 'BEGIN { printf "%.0f MB", k / 1024 }') |")
    done
    SIZE_ROWS+=("| $label | **both** | $(mb "${tot[0]}") | $(sized "${tot[1]}" "${tot[0]}") | $(sized "${tot[2]}" "${tot[0]}") | $(sized "${tot[3]}" "${tot[0]}") |")
}

bench llama-1g "$SCRATCH/base.safetensors" "$SCRATCH/ft.safetensors"
if [[ -f $CHARLM/base.safetensors ]]; then
    bench charlm "$CHARLM/base.safetensors" "$CHARLM/finetuned_qa.safetensors"
else
    echo "bench_store: $CHARLM not found, charlm rows skipped" >&2
fi

echo
echo "Stored size (ratio = original / stored; fine-tune stored as a delta against base)"
echo
echo "| model | file | size | zstd -3 | zstd -19 -T0 | deltafs |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${SIZE_ROWS[@]}"
echo
echo "Ingest speed, MB/s of input (median of $RUNS, page cache warm, $(nproc) cores; zstd -19 one run)"
echo
echo "| model | file | deltafs-add | zstd -3 -T0 | zstd -19 -T0 | deltafs-add peak RSS |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${SPEED_ROWS[@]}"
