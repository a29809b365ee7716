#!/bin/bash
# The remote tier measured in one run against a throwaway one-node Ceph cluster (tests/remote/ceph.sh:
# one memstore OSD on this machine, so "the network" is loopback and the OSD keeps objects in RAM):
# push MB/s and cold sequential reads through a clone's mount, against `rados put` / `rados get` of
# the same file (the engine's own speed); warm reads (blobs in the clone's cache directory) against
# a mount of the local store; and cloning / listing N_LIST published checkpoints. Then the same over
# S3 through radosgw on that cluster (ceph.sh start-rgw): push against `aws s3 cp` up, a cold read
# against `aws s3 cp` down, and N_LIST checkpoints cloned and pulled. Prints a markdown table.
#
#   tests/bench/bench_remote.sh [SCRATCH]    (as root, from the repository root; SCRATCH ./scratch)
#   env: BUILD (./build), LAYERS (2: a ~470 MB BF16 base and fine-tune), N_LIST (1000),
#        AWS (/usr/bin/aws: Debian's awscli, not a pyenv shim that PATH may put first)
#
# Cold means: a new clone (empty cache) and a fresh mount (no page cache for its files); the
# host's page cache is not dropped (other work on the machine is left alone). Sizes are logical
# bytes of the file read, MB = 10^6 bytes. One run of each: figures on a shared 2-core machine vary.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SCRATCH=$(mkdir -p "${1:-./scratch}" && cd "${1:-./scratch}" && pwd)/bench-remote
BUILD=$(cd "${BUILD:-./build}" && pwd)
LAYERS=${LAYERS:-2}
N_LIST=${N_LIST:-1000}
PY=/usr/bin/python3
D=$BUILD/tools/deltafs
ADD=$BUILD/tools/deltafs-add
MOUNT=$BUILD/fs/mount.deltafs
POOL=bench
BUCKET=bench
AWS=${AWS:-/usr/bin/aws}

rm -rf "$SCRATCH"
mkdir -p "$SCRATCH"
mounts=()
cleanup() {
	for m in "${mounts[@]}"; do fusermount3 -u "$m" 2>/dev/null || true; done
	"$ROOT/tests/remote/ceph.sh" stop "$SCRATCH/ceph" || true
}
trap cleanup EXIT
export CEPH_CONF
CEPH_CONF=$("$ROOT/tests/remote/ceph.sh" start "$SCRATCH/ceph" "$POOL")
EP=$("$ROOT/tests/remote/ceph.sh" start-rgw "$SCRATCH/ceph" "$BUCKET")
KEYS=$SCRATCH/ceph/s3.keys
# aws reads the same keys file (it is a credentials file), deltafs names it with --keys.
export AWS_SHARED_CREDENTIALS_FILE=$KEYS AWS_CONFIG_FILE=/dev/null AWS_DEFAULT_REGION=us-east-1
s3set() { "$D" remote "$1" set "s3://$BUCKET/$2" --endpoint "$EP" --keys "$KEYS" >/dev/null; }

now() { date +%s.%N; }
mbps() { awk -v b="$1" -v t="$2" 'BEGIN { printf "%.0f", b / t / 1e6 }'; }
secs() { awk -v t="$1" 'BEGIN { printf "%.2f", t }'; }
mnt() { # STORE MOUNTPOINT
	mkdir -p "$2"
	"$MOUNT" "$1" "$2"
	mounts+=("$2")
}
umnt() { fusermount3 -u "$1"; }
timed() { # prints the seconds the command took
	local t0 t1
	t0=$(now)
	"$@" >/dev/null
	t1=$(now)
	awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }'
}

base=$SCRATCH/base.safetensors ft=$SCRATCH/ft.safetensors
$PY "$ROOT/tests/data/genmodel.py" -q --preset 1g --layers "$LAYERS" --seed 1 --out "$base"
$PY "$ROOT/tests/data/genmodel.py" -q --preset 1g --layers "$LAYERS" --seed 1 --finetune 7 \
	--delta 0.01 --out "$ft"
fsize=$(stat -c %s "$ft") bsize=$(stat -c %s "$base")

A=$SCRATCH/a B=$SCRATCH/b
$ADD "$A" base "$base" -q >/dev/null
$ADD "$A" ft "$ft" --base base -q >/dev/null
$D remote "$A" set "rados:$POOL/m" >/dev/null
stored=$($D ls "$A" --bytes | awk 'NR > 1 && NF > 5 { s += $4 } END { print s }')

t_push=$(timed "$D" push "$A" 2>/dev/null)
t_put=$(timed rados -p "$POOL" put whole "$base")
t_get=$(timed rados -p "$POOL" get whole "$SCRATCH/got")
rm -f "$SCRATCH/got"

t_clone=$(timed "$D" clone "rados:$POOL/m" "$B")
mnt "$B" "$SCRATCH/mb"
t_cold=$(timed cat "$SCRATCH/mb/ft/ft.safetensors")
umnt "$SCRATCH/mb"
mnt "$B" "$SCRATCH/mb"
t_warm=$(timed cat "$SCRATCH/mb/ft/ft.safetensors")
umnt "$SCRATCH/mb"
mnt "$A" "$SCRATCH/ma"
t_local=$(timed cat "$SCRATCH/ma/ft/ft.safetensors")
umnt "$SCRATCH/ma"

# N_LIST checkpoints (a small file each, one blob shared by all) published in one push.
L=$SCRATCH/list
mkdir "$SCRATCH/small"
head -c 4096 /dev/urandom >"$SCRATCH/small/config.bin"
for i in $(seq 1 "$N_LIST"); do $ADD "$L" "c$i" "$SCRATCH/small" -q >/dev/null; done
$D remote "$L" set "rados:$POOL/list" >/dev/null
t_lpush=$(timed "$D" push "$L")
t_lclone=$(timed "$D" clone "rados:$POOL/list" "$SCRATCH/list2")
t_lpull=$(timed "$D" pull "$SCRATCH/list2")
t_lomap=$(timed rados -p "$POOL" -N list listomapkeys catalog)

# The same over S3 (radosgw on the same cluster, loopback).
S3B=$SCRATCH/s3b
s3set "$A" m
t_s3push=$(timed "$D" push "$A" 2>/dev/null)
t_s3put=$(timed "$AWS" --endpoint-url "$EP" s3 cp --only-show-errors "$base" "s3://$BUCKET/whole")
t_s3get=$(timed "$AWS" --endpoint-url "$EP" s3 cp --only-show-errors "s3://$BUCKET/whole" "$SCRATCH/got")
rm -f "$SCRATCH/got"
t_s3clone=$(timed "$D" clone "s3://$BUCKET/m" "$S3B" --endpoint "$EP" --keys "$KEYS")
mnt "$S3B" "$SCRATCH/ms3"
t_s3cold=$(timed cat "$SCRATCH/ms3/ft/ft.safetensors")
umnt "$SCRATCH/ms3"
s3set "$L" list
t_s3lpush=$(timed "$D" push "$L")
t_s3lclone=$(timed "$D" clone "s3://$BUCKET/list" "$SCRATCH/s3list2" --endpoint "$EP" --keys "$KEYS")
t_s3lpull=$(timed "$D" pull "$SCRATCH/s3list2")
t_s3lls=$(timed "$AWS" --endpoint-url "$EP" s3api list-objects-v2 --bucket "$BUCKET" --prefix list/catalog/)

cat <<EOF
| what | bytes | seconds | MB/s |
|---|---:|---:|---:|
| \`deltafs push\` base + fine-tune (blobs sent: stored bytes) | $stored | $(secs "$t_push") | $(mbps "$stored" "$t_push") |
| \`rados put\` of the base file (one object) | $bsize | $(secs "$t_put") | $(mbps "$bsize" "$t_put") |
| \`rados get\` of it | $bsize | $(secs "$t_get") | $(mbps "$bsize" "$t_get") |
| \`deltafs clone\` (manifests only) | | $(secs "$t_clone") | |
| cold \`cat\` of the fine-tune through the clone's mount (fetch + decode) | $fsize | $(secs "$t_cold") | $(mbps "$fsize" "$t_cold") |
| warm: same, fresh mount, blobs in the clone's cache directory | $fsize | $(secs "$t_warm") | $(mbps "$fsize" "$t_warm") |
| local: same file through a mount of the store that ingested it | $fsize | $(secs "$t_local") | $(mbps "$fsize" "$t_local") |
| push $N_LIST checkpoints (one shared blob, $N_LIST manifests, one publish) | | $(secs "$t_lpush") | |
| clone them (catalog + $N_LIST manifest reads + commits) | | $(secs "$t_lclone") | |
| pull with nothing new (catalog read, $N_LIST local comparisons) | | $(secs "$t_lpull") | |
| \`rados listomapkeys catalog\` ($N_LIST keys) | | $(secs "$t_lomap") | |
| **S3 (radosgw)**: \`deltafs push\` base + fine-tune (stored bytes) | $stored | $(secs "$t_s3push") | $(mbps "$stored" "$t_s3push") |
| \`aws s3 cp\` up of the base file | $bsize | $(secs "$t_s3put") | $(mbps "$bsize" "$t_s3put") |
| \`aws s3 cp\` down of it | $bsize | $(secs "$t_s3get") | $(mbps "$bsize" "$t_s3get") |
| S3: \`deltafs clone\` (manifests only) | | $(secs "$t_s3clone") | |
| S3: cold \`cat\` of the fine-tune through the clone's mount | $fsize | $(secs "$t_s3cold") | $(mbps "$fsize" "$t_s3cold") |
| S3: push $N_LIST checkpoints (manifests, $N_LIST catalog PUTs) | | $(secs "$t_s3lpush") | |
| S3: clone them (one LIST of the catalog + $N_LIST manifest GETs) | | $(secs "$t_s3lclone") | |
| S3: pull with nothing new (catalog LIST, $N_LIST local comparisons) | | $(secs "$t_s3lpull") | |
| \`aws s3api list-objects-v2\` of the catalog ($N_LIST keys) | | $(secs "$t_s3lls") | |

Base $bsize B and fine-tune $fsize B (genmodel --preset 1g --layers $LAYERS, BF16), stored $stored B.
One memstore OSD on this machine, radosgw (beast) on loopback; $(nproc) CPUs.
EOF
