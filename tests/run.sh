#!/bin/sh
# Build deltafs and run every test; the last line is "N passed, N failed, N skipped".
# Usage: tests/run.sh [BUILD_DIR]   (default: build)
set -u
cd "$(dirname "$0")/.."
tools/deps.sh || exit 1
B=${1:-build}
[ -f "$B/build.ninja" ] || meson setup "$B" >/dev/null || exit 1
ninja -C "$B" || exit 1
meson test -C "$B" --print-errorlogs --num-processes 2 2>&1 | tee "$B/test-summary.txt"
status=$?
awk '/^Ok:/ {ok=$2} /^Expected Fail:/ {xf=$3} /^Fail:/ {f=$2} /^Unexpected Pass:/ {up=$3}
     /^Skipped:/ {s=$2} /^Timeout:/ {t=$2}
     END {printf "%d passed, %d failed, %d skipped\n", ok+xf, f+up+t, s}' "$B/test-summary.txt"
exit $status
