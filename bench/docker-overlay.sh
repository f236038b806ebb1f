#!/usr/bin/env bash
# The Docker peer of the overlay throughput benchmark (agent/examples/overlay_throughput.rs,
# issue 12: task → task ≥ 0.95× Docker's overlay): container → container TCP throughput
# over a Docker Swarm overlay network across two test hosts, against host → host on the same
# two hosts, in the same run.
#
# Two test hosts as swarm_testkit::Hosts makes them: network namespaces swdk0h0 and swdk0h1
# on a bridge swdk0 (198.18.124.1/24) in the machine's namespace, veths with MTU 1500,
# host i at 198.18.124.(10+i), default route through the bridge. On each host a private
# dockerd (own data root, exec root and socket, own hostname dk-I via `unshare --uts`,
# --bridge none, --iptables=false), entered with `nsenter --net` (`ip netns exec` remounts
# /sys and hides the cgroups runc needs). Host 0 inits a swarm (advertise 198.18.124.10,
# data path port 4789), host 1 joins; an attachable overlay network `benchnet` (Docker's
# defaults: VXLAN, not encrypted), one container on it on each host (`docker run -d
# --network benchnet`, image imported from a busybox rootfs: nothing is pulled).
#
# Each run is one TCP stream of MIB MiB in 64 KiB writes from host 0 to host 1, then from
# container 0 to container 1; the receiver reads to the end of stream; timed from the
# connection to the receiver's close (bench/tcpblast.c, built static here and run, the same
# binary, in the hosts' namespaces and in the containers). The two paths alternate run by
# run; the medians and their ratio are printed, with the overlay's VXLAN device counters
# (evidence the stream crossed it) and MTU. The measuring holds /tmp/swarm-bench.lock.
#
# Needs root, Debian's docker.io (installed when dockerd is missing), runc, gcc with a
# static libc (libc6-dev), busybox-static, iproute2, util-linux. It also holds the
# testkit's bridge number 124 (an empty bridge swt124) so no test harness takes the same
# /24 meanwhile. Everything is removed on exit, on failure too: containers, the swarm,
# dockerd and its containerd, their mounts and directories, Docker's network namespaces
# and VXLAN devices (inside the test hosts), the hosts, the bridges, the FORWARD rule.
# Usage: bench/docker-overlay.sh [MiB] [RUNS] (default 512 MiB, 5 runs); with
# DOCKER_OVERLAY_LOGS=DIR the two dockerd logs are copied to DIR at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
mib=${1:-512}
runs=${2:-5}
[ "$(id -u)" -eq 0 ] || { echo "docker-overlay: needs root (network namespaces, dockerd)" >&2; exit 1; }
ensure_packages dockerd:docker.io runc:runc gcc:gcc busybox:busybox-static ip:iproute2 \
    nsenter:util-linux "/usr/lib/$(uname -m)-linux-gnu/libc.a:libc6-dev"

bridge=swdk0
subnet=198.18.124
claim=swt124
port=5201
hosts=("${bridge}h0" "${bridge}h1")
work=$(mktemp -d /tmp/docker-overlay.XXXXXX)
forward_rule=false
claimed=false
made_bridge=false

log() { echo "docker-overlay: $*" >&2; }
# dk I ARGS...: the docker CLI against host I's dockerd, bounded.
dk() { local i=$1; shift; DOCKER_HOST="unix://$work/h$i/docker.sock" timeout 120 docker "$@"; }
on_host() { local i=$1; shift; nsenter --net="/var/run/netns/${hosts[$i]}" -- "$@"; }

# Processes whose command line names this run's directory: dockerd, its containerd and
# the containerd shims (nothing else names it).
ours() {
    local dir
    for dir in /proc/[0-9]*; do
        [ "${dir#/proc/}" != $$ ] && grep -qF "$work" "$dir/cmdline" 2>/dev/null && echo "${dir#/proc/}"
    done
    return 0
}

cleanup() {
    local status=$? i pid
    trap - EXIT INT TERM
    set +e
    exec 9>&- 2>/dev/null
    if [ -n "${DOCKER_OVERLAY_LOGS:-}" ]; then
        mkdir -p "$DOCKER_OVERLAY_LOGS"
        for i in 0 1; do cp "$work/h$i/dockerd.log" "$DOCKER_OVERLAY_LOGS/dockerd-h$i.log" 2>/dev/null; done
    fi
    if [ "$status" -ne 0 ]; then
        for i in 0 1; do
            [ -f "$work/h$i/dockerd.log" ] && { log "dockerd on host $i, last lines:"; tail -15 "$work/h$i/dockerd.log" >&2; }
        done
    fi
    for i in 1 0; do
        [ -S "$work/h$i/docker.sock" ] || continue
        dk "$i" rm -f dk0 dk1 >/dev/null 2>&1
        dk "$i" swarm leave --force >/dev/null 2>&1
    done
    for i in 0 1; do
        pid=$(cat "$work/h$i/docker.pid" 2>/dev/null) && kill "$pid" 2>/dev/null
    done
    for _ in $(seq 200); do [ -z "$(ours)" ] && break; sleep 0.1; done
    for pid in $(ours); do kill -9 "$pid" 2>/dev/null; done
    sleep 0.2
    # Network namespaces (Docker's under each exec root), overlay and container mounts.
    findmnt -rn -o TARGET | grep -F "$work/" | sort -r | while read -r target; do umount -l "$target"; done
    for i in 0 1; do ip netns del "${hosts[$i]}" 2>/dev/null; done
    $made_bridge && ip link del "$bridge" 2>/dev/null
    $claimed && ip link del "$claim" 2>/dev/null
    $forward_rule && iptables -D FORWARD -i "$bridge" -o "$bridge" -j ACCEPT 2>/dev/null
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The test hosts.
if ! ip link add "$claim" type bridge 2>/dev/null; then
    log "$claim exists: a test harness uses $subnet.0/24; try again when it is done"; exit 1
fi
claimed=true
if ip route show | grep -q "^$subnet\.0/24"; then log "$subnet.0/24 is already routed here"; exit 1; fi
ip link add "$bridge" type bridge
made_bridge=true
ip addr add "$subnet.1/24" dev "$bridge"
ip link set "$bridge" up
if command -v iptables >/dev/null; then
    iptables -I FORWARD -i "$bridge" -o "$bridge" -j ACCEPT
    forward_rule=true
fi
for i in 0 1; do
    ns=${hosts[$i]}
    ip netns add "$ns"
    ip link add "$ns" mtu 1500 type veth peer name eth0 mtu 1500 netns "$ns"
    ip link set "$ns" master "$bridge" up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "$subnet.$((10 + i))/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route add default via "$subnet.1"
done

# The stream tool, and an image holding it (busybox for the shell, ip and sleep).
gcc -O2 -static -o "$work/tcpblast" bench/tcpblast.c
blast=$work/tcpblast
rootfs=$work/rootfs
mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp" "$rootfs/proc" "$rootfs/sys" "$rootfs/dev"
cp /bin/busybox "$blast" "$rootfs/bin/"
for applet in $(/bin/busybox --list); do [ -e "$rootfs/bin/$applet" ] || ln -s busybox "$rootfs/bin/$applet"; done

# A dockerd on each host.
for i in 0 1; do
    mkdir -p "$work/h$i"
    # shellcheck disable=SC2016 # $0 and $@ are the inner shell's: the hostname, then dockerd
    on_host "$i" unshare --uts -- sh -c 'hostname "$0" && exec "$@"' "dk-$i" \
        dockerd --data-root "$work/h$i/data" --exec-root "$work/h$i/exec" \
        -H "unix://$work/h$i/docker.sock" --pidfile "$work/h$i/docker.pid" \
        --bridge none --iptables=false --ip-forward=false --ip-masq=false \
        > "$work/h$i/dockerd.log" 2>&1 &
done
for i in 0 1; do
    for _ in $(seq 300); do dk "$i" version >/dev/null 2>&1 && break; sleep 0.1; done
    dk "$i" version >/dev/null 2>&1 || { log "dockerd on host $i did not start:"; tail -20 "$work/h$i/dockerd.log" >&2; exit 1; }
    tar -C "$rootfs" -c . | dk "$i" import --change 'CMD ["sleep", "3600"]' - tcpblast:1 >/dev/null
done
version=$(dk 0 version -f '{{.Server.Version}}')

# The swarm and the overlay network.
dk 0 swarm init --advertise-addr "$subnet.10" --listen-addr "$subnet.10:2377" >/dev/null
token=$(dk 0 swarm join-token -q worker)
for _ in $(seq 10); do
    dk 1 swarm join --token "$token" --advertise-addr "$subnet.11" --listen-addr "$subnet.11:2377" \
        "$subnet.10:2377" >/dev/null 2>&1 && break
    sleep 1
done
[ "$(dk 1 info -f '{{.Swarm.LocalNodeState}}')" = active ] || { log "host 1 did not join the swarm"; exit 1; }
dk 0 network create -d overlay --attachable benchnet >/dev/null
for i in 0 1; do
    dk "$i" run -d --name "dk$i" --hostname "dk$i" --network benchnet tcpblast:1 >/dev/null
done
address() { dk "$1" inspect -f '{{with index .NetworkSettings.Networks "benchnet"}}{{.IPAddress}}{{end}}' "dk$1"; }
addresses=("$(address 0)" "$(address 1)")
for _ in $(seq 60); do dk 0 exec dk0 ping -c 1 -W 1 "${addresses[1]}" >/dev/null 2>&1 && break; done
dk 0 exec dk0 ping -c 1 -W 1 "${addresses[1]}" >/dev/null || { log "container 0 cannot reach container 1 (${addresses[1]}) over benchnet"; exit 1; }
# The container's interface on benchnet and its MTU, and the overlay's VXLAN device (in
# Docker's namespace for the network on host 0, under the exec root).
interface=$(dk 0 exec dk0 ip -o -4 addr show | awk -v a="${addresses[0]}/" 'index($4, a) == 1 {print $2}')
mtu=$(dk 0 exec dk0 cat "/sys/class/net/$interface/mtu")
network=$(dk 0 network inspect -f '{{.ID}}' benchnet)
sandbox=$work/h0/exec/netns/1-${network:0:10}
[ -e "$sandbox" ] || { log "no namespace $sandbox for benchnet"; ls "$work/h0/exec/netns" >&2; exit 1; }
vxlan=$(nsenter --net="$sandbox" ip -o link show type vxlan | awk -F': ' '{print $2; exit}')
vxlan=${vxlan%%@*}
# tx bytes|packets: the VXLAN device's counter (/proc/net/dev is the caller's namespace's).
tx() {
    nsenter --net="$sandbox" cat /proc/net/dev | tr ':' ' ' |
        awk -v dev="$vxlan" -v field="$([ "$1" = bytes ] && echo 10 || echo 11)" '$1 == dev {print $field}'
}

# transfer NAME SEND... -- RECEIVE...: one stream, the seconds the sender measured (the
# receiver's byte count is checked).
transfer() {
    local name=$1 send=() receive=()
    shift
    while [ "$1" != -- ]; do send+=("$1"); shift; done
    shift
    receive=("$@")
    "${receive[@]}" > "$work/$name.recv" 2> "$work/$name.err" &
    local receiver=$!
    "${send[@]}" > "$work/$name.send" 2>> "$work/$name.err" || { log "$name: sender failed"; cat "$work/$name.err" >&2; exit 1; }
    wait "$receiver" || { log "$name: receiver failed"; cat "$work/$name.err" >&2; exit 1; }
    local sent received seconds
    read -r sent seconds < "$work/$name.send"
    read -r received _ < "$work/$name.recv"
    [ "$received" -ge "$sent" ] || { log "$name: received $received of $sent bytes"; exit 1; }
    echo "$seconds"
}

exec 9>/tmp/swarm-bench.lock
flock -w 3600 9 || { log "waited an hour for /tmp/swarm-bench.lock"; exit 1; }
started=$(date -u +%H:%M:%S)
load=$(cut -d' ' -f1-3 /proc/loadavg)
before=$(tx bytes); before_packets=$(tx packets)
direct=(); overlay=()
for _ in $(seq "$runs"); do
    direct+=("$(transfer host \
        timeout 120 nsenter --net="/var/run/netns/${hosts[0]}" "$blast" send "$subnet.11" "$port" "$mib" -- \
        timeout 120 nsenter --net="/var/run/netns/${hosts[1]}" "$blast" recv "$port")")
    overlay+=("$(transfer container \
        dk 0 exec dk0 tcpblast send "${addresses[1]}" "$port" "$mib" -- \
        dk 1 exec dk1 tcpblast recv "$port")")
done
sent=$(($(tx bytes) - before)); packets=$(($(tx packets) - before_packets))
flock -u 9
[ "$sent" -ge $((mib * runs << 20)) ] || { log "$vxlan sent $sent bytes, less than the container runs' $((mib * runs)) MiB"; exit 1; }

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
gbits() { awk -v s="$1" -v m="$mib" 'BEGIN {printf "%.2f", m * 1048576 * 8 / s / 1e9}'; }
each() { local s; for s in "$@"; do printf '%s ' "$(gbits "$s")"; done; }
host=$(gbits "$(median "${direct[@]}")")
container=$(gbits "$(median "${overlay[@]}")")
echo "Docker $version overlay (VXLAN, not encrypted; $interface MTU $mtu), $mib MiB x $runs runs, one TCP stream, $started UTC, load $load"
echo "  host→host:                  $(each "${direct[@]}")Gbit/s"
echo "  container→container:        $(each "${overlay[@]}")Gbit/s"
echo "  medians: host→host $host Gbit/s, container→container over Docker's overlay $container Gbit/s, ratio $(awk -v c="$container" -v h="$host" 'BEGIN {printf "%.2f", c / h}') ($vxlan sent $((sent >> 20)) MiB, $((sent / (packets > 0 ? packets : 1))) bytes per packet)"
