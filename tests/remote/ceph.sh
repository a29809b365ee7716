#!/bin/sh
# A throwaway one-node Ceph cluster on 127.0.0.1 for the remote-tier tests: one monitor, one
# manager and one OSD keeping its objects in memory (memstore), cephx on, pool size 1.
#
#   tests/remote/ceph.sh start DIR [POOL...]   start it under DIR (created, must not hold a running
#                                              cluster); prints the ceph.conf path (use it as
#                                              CEPH_CONF) once the pools are usable
#   tests/remote/ceph.sh stop DIR              stop the daemons started under DIR, by pid
#   tests/remote/ceph.sh kill-osd DIR          SIGKILL the OSD (fault tests); restart with start-osd
#   tests/remote/ceph.sh start-osd DIR
#   tests/remote/ceph.sh start-rgw DIR [BUCKET...]
#                                              start radosgw (S3) for the cluster under DIR on a free
#                                              127.0.0.1 port, create an S3 user whose keys go to
#                                              DIR/s3.keys (0600, credentials-file lines) and the
#                                              buckets; prints the endpoint URL once it answers
#   tests/remote/ceph.sh stop-rgw DIR            (stop also stops it)
#
# Exit 77 (meson's skip) when the Ceph packages are absent. Why these settings: memstore needs no
# disk set-up and pool size 1 with chooseleaf type 0 lets one OSD hold every placement group; the
# cluster is up in about 6 s. A memstore OSD loses its objects when it stops: CEPH_OBJECTSTORE=
# bluestore keeps them in a sparse file under DIR instead (up in about 10 s), for tests that restart
# the OSD.
# radosgw (`start-rgw`, packages radosgw and curl, else exit 77) answers about 10 s after it starts;
# it needs cephx (with auth none it could not reach the monitor), and its own pools take 8
# placement groups each (osd pool default pg num) so that one OSD stays under its PG limit.
set -eu
cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop|kill-osd|start-osd|start-rgw|stop-rgw DIR [POOL...|BUCKET...]" >&2; exit 2; }
shift 2

for b in ceph-mon ceph-osd ceph-mgr ceph-authtool monmaptool ceph; do
	command -v "$b" >/dev/null 2>&1 || { echo "SKIP: $b is not installed (apt-get install ceph-mon ceph-mgr ceph-osd ceph-common)" >&2; exit 77; }
done

conf="$dir/ceph.conf"
objectstore=${CEPH_OBJECTSTORE:-memstore}

stop_pid() {
	f="$dir/$1.pid"
	[ -f "$f" ] || return 0
	pid=$(cat "$f")
	if kill "$pid" 2>/dev/null; then
		i=0
		while kill -0 "$pid" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
		kill -9 "$pid" 2>/dev/null || true
	fi
	rm -f "$f"
}

start_osd() {
	ceph-osd -c "$conf" -i 0 >>"$dir/osd.out" 2>&1
}

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# curl with the S3 user's keys, given on stdin as a config file (never in argv): s3curl ARGS...
s3curl() {
	python3 - "$dir/s3.keys" <<'PY' | curl -K - -sS --aws-sigv4 "aws:amz:us-east-1:s3" "$@"
import sys
k = dict(l.split(" = ", 1) for l in open(sys.argv[1]).read().splitlines() if " = " in l)
print('user = "%s:%s"' % (k["aws_access_key_id"], k["aws_secret_access_key"]))
PY
}
# radosgw wants the payload hash header, which curl 7.88 does not add by itself.
empty_sha256=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855

start_rgw() {
	for b in radosgw radosgw-admin curl; do
		command -v "$b" >/dev/null 2>&1 || { echo "SKIP: $b is not installed (apt-get install radosgw curl)" >&2; exit 77; }
	done
	[ -f "$dir/mon.a.pid" ] || { echo "$0: no cluster runs under $dir (start it first)" >&2; exit 1; }
	ceph -c "$conf" --connect-timeout 20 auth get-or-create client.rgw.x mon 'allow rw' \
		osd 'allow rwx' mgr 'allow rw' >>"$dir/keyring"
	rport=$(free_port)
	mkdir -p "$dir/rgw.x"
	radosgw -c "$conf" -n client.rgw.x --rgw-data "$dir/rgw.x" \
		--rgw-frontends "beast endpoint=127.0.0.1:$rport" >>"$dir/rgw.out" 2>&1
	umask 077
	radosgw-admin -c "$conf" user create --uid deltafs --display-name deltafs 2>>"$dir/rgw.out" |
		python3 -c 'import json, sys; k = json.load(sys.stdin)["keys"][0]
print("[default]\naws_access_key_id = %s\naws_secret_access_key = %s" % (k["access_key"], k["secret_key"]))' \
		>"$dir/s3.keys"
	umask 022
	ep="http://127.0.0.1:$rport"
	i=0
	until curl -s -o /dev/null --max-time 2 "$ep/"; do
		i=$((i + 1))
		[ $i -lt 120 ] || { echo "$0: radosgw does not answer on $ep; see $dir/client.rgw.x.log" >&2; exit 1; }
		sleep 0.5
	done
	for b in "$@"; do
		s3curl -f -o /dev/null -X PUT -H "x-amz-content-sha256: $empty_sha256" "$ep/$b" || { echo "$0: cannot create bucket $b" >&2; exit 1; }
	done
	echo "$ep"
}

case "$cmd" in
stop)
	for d in client.rgw.x osd.0 mgr.x mon.a; do stop_pid "$d"; done
	exit 0 ;;
stop-rgw)
	stop_pid client.rgw.x
	exit 0 ;;
start-rgw)
	dir=$(cd "$dir" && pwd)
	conf="$dir/ceph.conf"
	start_rgw "$@"
	exit 0 ;;
kill-osd)
	kill -9 "$(cat "$dir/osd.0.pid")"
	rm -f "$dir/osd.0.pid"
	exit 0 ;;
start-osd)
	start_osd
	exit 0 ;;
start) ;;
*) echo "$0: unknown command $cmd" >&2; exit 2 ;;
esac

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
conf="$dir/ceph.conf"
[ -f "$dir/mon.a.pid" ] && kill -0 "$(cat "$dir/mon.a.pid")" 2>/dev/null &&
	{ echo "$0: a cluster already runs under $dir" >&2; exit 1; }

# A free port for the monitor: ask the kernel for one.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
fsid=$(cat /proc/sys/kernel/random/uuid)
cat >"$conf" <<EOF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$port
public network = 127.0.0.1/32
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $dir/keyring
run dir = $dir
log file = $dir/\$name.log
pid file = $dir/\$name.pid
admin socket = $dir/\$name.asok
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon allow pool delete = true
osd crush chooseleaf type = 0
osd pool default pg autoscale mode = off
osd pool default pg num = 8
osd pool default pgp num = 8
mon max pg per osd = 1000
mon warn on pool no redundancy = false
ms bind ipv6 = false
[mon]
mon data = $dir/mon.\$id
mon cluster log file = $dir/cluster.log
[mgr]
mgr data = $dir/mgr.\$id
[osd]
osd data = $dir/osd.\$id
osd max object size = 1073741824
EOF
if [ "$objectstore" = bluestore ]; then
	printf '%s\n' "osd objectstore = bluestore" "bluestore block create = true" \
		"bluestore block size = 4294967296" "bluestore fsck on mkfs = false" \
		"bluestore cache size = 134217728" >>"$conf"
else
	printf '%s\n' "osd objectstore = memstore" "memstore device bytes = 4294967296" >>"$conf"
fi

kr="$dir/keyring"
ceph-authtool --create-keyring "$kr" --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph-authtool "$kr" --gen-key -n client.admin --cap mon 'allow *' --cap osd 'allow *' \
	--cap mgr 'allow *' --cap mds 'allow *' >/dev/null
ceph-authtool "$kr" --gen-key -n mgr.x --cap mon 'allow profile mgr' --cap osd 'allow *' \
	--cap mds 'allow *' >/dev/null
ceph-authtool "$kr" --gen-key -n osd.0 --cap mon 'allow profile osd' --cap mgr 'allow profile osd' \
	--cap osd 'allow *' >/dev/null
monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$port]" "$dir/monmap" >/dev/null
mkdir -p "$dir/mon.a" "$dir/mgr.x" "$dir/osd.0"
cp "$kr" "$dir/mgr.x/keyring"
ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap" --keyring "$kr" >>"$dir/mon.out" 2>&1
ceph-mon -c "$conf" -i a >>"$dir/mon.out" 2>&1

C="ceph -c $conf --connect-timeout 20"
$C osd create >/dev/null
cp "$kr" "$dir/osd.0/keyring"
ceph-osd -c "$conf" -i 0 --mkfs --osd-uuid "$(cat /proc/sys/kernel/random/uuid)" >>"$dir/osd.out" 2>&1
$C osd crush add osd.0 1.0 host=localhost root=default >/dev/null 2>&1 || true
start_osd
ceph-mgr -c "$conf" -i x >>"$dir/mgr.out" 2>&1

for pool in "$@"; do
	$C osd pool create "$pool" 8 8 >/dev/null 2>&1
	$C osd pool application enable "$pool" deltafs >/dev/null 2>&1
done
# Usable when an object can be written and read back in every pool.
for pool in "$@"; do
	i=0
	until echo ok | timeout 10 rados -c "$conf" -p "$pool" put .probe - 2>/dev/null; do
		i=$((i + 1))
		[ $i -lt 30 ] || { echo "$0: pool $pool not writable after 30 tries; see $dir/*.log" >&2; exit 1; }
		sleep 1
	done
	rados -c "$conf" -p "$pool" rm .probe
done
echo "$conf"
