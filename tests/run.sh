#!/bin/sh
# Build deltafs and run every test twice: in a normal build, and in a build with AddressSanitizer
# and UndefinedBehaviorSanitizer (meson's b_sanitize option); then, in a clang build with the
# libFuzzer targets (-Dfuzz=true), replay each fuzz corpus and fuzz each target for 20 s. The last
# line is the sum over all three: "N passed, N failed, N skipped".
# Usage: tests/run.sh [BUILD_DIR]   (default: build; the others go to BUILD_DIR-asan, BUILD_DIR-fuzz)
set -u
cd "$(dirname "$0")/.."
tools/deps.sh || exit 1
B=${1:-build}
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
status=0
for dir in "$B" "$B-asan" "$B-fuzz"; do
	opts="" cc="${CC:-cc}" suite=""
	[ "$dir" = "$B-asan" ] && opts="-Db_sanitize=address,undefined -Db_lundef=false"
	[ "$dir" = "$B-fuzz" ] && opts="-Dfuzz=true" cc=clang suite="--suite fuzz"
	# shellcheck disable=SC2086
	[ -f "$dir/build.ninja" ] || CC=$cc meson setup "$dir" $opts >/dev/null || exit 1
	ninja -C "$dir" || exit 1
	echo "== tests in $dir"
	# shellcheck disable=SC2086
	meson test -C "$dir" $suite --print-errorlogs --num-processes 2 >"$dir/test-output.txt" 2>&1 ||
		status=1
	grep -E '^ *[0-9]+/[0-9]+ ' "$dir/test-output.txt"
	grep -A40 -E '^(=+ [0-9]+/[0-9]+ =+|--- .* ---)$' "$dir/test-output.txt" | head -400 >&2 || true
done
awk '/^Ok:/ {ok+=$2} /^Expected Fail:/ {xf+=$3} /^Fail:/ {f+=$2} /^Unexpected Pass:/ {up+=$3}
     /^Skipped:/ {s+=$2} /^Timeout:/ {t+=$2}
     END {printf "%d passed, %d failed, %d skipped\n", ok+xf, f+up+t, s}' \
	"$B/test-output.txt" "$B-asan/test-output.txt" "$B-fuzz/test-output.txt"
exit $status
