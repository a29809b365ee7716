#!/bin/sh
# The demo: build deltafs, store a base model and a fine-tune of it, show what the store holds,
# mount it and read the fine-tune back through the mount, byte-identical to the original.
# Uses ../shared/data/charlm when present, else a small pair made by tests/data/genmodel.py.
# Usage: tools/demo.sh [BUILD_DIR]   (default: build). Leaves its store in scratch/demo/.
set -eu
cd "$(dirname "$0")/.."
tools/deps.sh
B=${1:-build}
[ -f "$B/build.ninja" ] || meson setup "$B" >/dev/null
ninja -C "$B" >/dev/null
W=scratch/demo
rm -rf "$W"
mkdir -p "$W"
if [ -f ../shared/data/charlm/base.safetensors ]; then
	BASE=../shared/data/charlm/base.safetensors
	FT=../shared/data/charlm/finetuned_qa.safetensors
	echo "== data: the charlm base model and its full fine-tune (../shared/data/charlm)"
else
	BASE=$W/base.safetensors
	FT=$W/finetuned.safetensors
	/usr/bin/python3 tests/data/genmodel.py -q --preset tiny --seed 1 --out "$BASE"
	/usr/bin/python3 tests/data/genmodel.py -q --preset tiny --seed 1 --finetune 2 --out "$FT"
	echo "== data: a generated llama-shaped BF16 pair (no ../shared here)"
fi
S=$W/store
echo "== deltafs-add $S base $BASE"
"$B/tools/deltafs-add" -q "$S" base "$BASE"
echo "== deltafs-add $S finetuned $FT --base base"
"$B/tools/deltafs-add" -q "$S" finetuned "$FT" --base base
echo "== deltafs ls $S"
"$B/tools/deltafs" ls "$S"
echo "== deltafs verify $S"
"$B/tools/deltafs" verify "$S"
sha() { sha256sum "$1" | cut -d' ' -f1; }
M=$W/mnt
if [ -x "$B/fs/mount.deltafs" ] && [ -c /dev/fuse ]; then
	mkdir -p "$M"
	echo "== mount.deltafs $S $M"
	"$B/fs/mount.deltafs" "$S" "$M"
	trap 'fusermount3 -u "$M" 2>/dev/null || true' EXIT
	ls -l "$M" "$M/finetuned"
	F=$M/finetuned/$(basename "$FT")
else
	echo "== (no mount here: /dev/fuse or mount.deltafs missing) deltafs export instead"
	"$B/tools/deltafs" export "$S" finetuned "$W/export"
	F=$W/export/$(basename "$FT")
fi
if [ "$(sha "$F")" = "$(sha "$FT")" ]; then
	echo "== $F: sha256 $(sha "$F") equals the original's: byte-identical"
else
	echo "== $F differs from $FT" >&2
	exit 1
fi
