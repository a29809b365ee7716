#!/bin/sh
# Install what deltafs needs to build, test and run its demo on Debian (bookworm or later).
# Does nothing when everything is there already; needs root (or sudo) otherwise.
# librados-dev builds the remote tier's RADOS backend; ceph-mon, ceph-mgr, ceph-osd and ceph-common
# run the one-node cluster of tests/remote (the project builds and its other tests run without).
# libcurl4-openssl-dev builds the S3 backend; radosgw and curl serve and prepare the S3 tests,
# awscli is what tests/bench/bench_remote.sh compares S3 pushes and reads against. liblapacke-dev and
# libopenblas-dev give codec/lowrank.c its SVD and GEMMs.
set -e
PKGS="meson ninja-build pkg-config gcc clang libfuse3-dev fuse3 libzstd-dev libxxhash-dev liblmdb-dev
      libjansson-dev libssl-dev liblapacke-dev libopenblas-dev python3 python3-numpy zstd lmdb-utils
      librados-dev ceph-mon ceph-mgr ceph-osd ceph-common libcurl4-openssl-dev radosgw awscli curl"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "deltafs: installing:$missing" >&2
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
