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
#
# Exit 77 (meson's skip) when the Ceph packages are absent. Why these settings: memstore needs no
# disk set-up and pool size 1 with chooseleaf type 0 lets one OSD hold every placement group; the
# cluster is up in about 6 s. A memstore OSD loses its objects when it stops: CEPH_OBJECTSTORE=
# bluestore keeps them in a sparse file under DIR instead (up in about 10 s), for tests that restart
# the OSD.
set -eu
cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop|kill-osd|start-osd DIR [POOL...]" >&2; exit 2; }
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

case "$cmd" in
stop)
	for d in osd.0 mgr.x mon.a; do stop_pid "$d"; done
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
