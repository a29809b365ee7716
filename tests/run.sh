#!/bin/sh
# Build deltafs and run every test twice: in a normal build, and in a build with AddressSanitizer
# and UndefinedBehaviorSanitizer (meson's b_sanitize option). The last line is the sum over both:
# "N passed, N failed, N skipped".
# Usage: tests/run.sh [BUILD_DIR]   (default: build; the sanitizer build goes to BUILD_DIR-asan)
set -u
cd "$(dirname "$0")/.."
tools/deps.sh || exit 1
B=${1:-build}
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
status=0
for dir in "$B" "$B-asan"; do
	opts=""
	[ "$dir" = "$B-asan" ] && opts="-Db_sanitize=address,undefined -Db_lundef=false"
	# shellcheck disable=SC2086
	[ -f "$dir/build.ninja" ] || meson setup "$dir" $opts >/dev/null || exit 1
	ninja -C "$dir" || exit 1
	echo "== tests in $dir"
	meson test -C "$dir" --print-errorlogs --num-processes 2 >"$dir/test-output.txt" 2>&1 || status=1
	grep -E '^ *[0-9]+/[0-9]+ ' "$dir/test-output.txt"
	grep -A40 -E '^(=+ [0-9]+/[0-9]+ =+|--- .* ---)$' "$dir/test-output.txt" | head -400 >&2 || true
done
awk '/^Ok:/ {ok+=$2} /^Expected Fail:/ {xf+=$3} /^Fail:/ {f+=$2} /^Unexpected Pass:/ {up+=$3}
     /^Skipped:/ {s+=$2} /^Timeout:/ {t+=$2}
     END {printf "%d passed, %d failed, %d skipped\n", ok+xf, f+up+t, s}' \
	"$B/test-output.txt" "$B-asan/test-output.txt"
exit $status
