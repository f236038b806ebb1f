#!/usr/bin/env bash
# The peer of bench/service-latency.sh: Docker Swarm on this machine, measured the same
# way (the CLI call, then `docker service ps` polled every 10 ms until the tasks run). A
# private dockerd (own data, exec root and socket; --iptables=false so the host's FORWARD
# policy is left alone) in a one-node swarm; the image is busybox-static's httpd imported
# with `docker import` (nothing pulled). Needs root and Debian's docker.io.
# Usage: bench/service-latency-docker.sh [RUNS] (default 11). Stops dockerd at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
runs=${1:-11}
start_docker_swarm

running() { [ "$(docker service ps "$1" --filter desired-state=running --format '{{.CurrentState}}' | grep -c '^Running')" = "$2" ]; }
wait_running() { for _ in $(seq 3000); do running "$1" "$2" && return 0; sleep 0.01; done; echo "timed out" >&2; exit 1; }
create=(); scale=()
for i in $(seq "$runs"); do
    start=$(now)
    docker service create -d --quiet --name "s$i" --stop-grace-period 0s hello:1 >/dev/null
    wait_running "s$i" 1
    create+=("$(echo "$(now) - $start" | bc)")
    start=$(now)
    docker service scale -d "s$i=5" >/dev/null
    wait_running "s$i" 5
    scale+=("$(echo "$(now) - $start" | bc)")
    docker service rm "s$i" >/dev/null
    sleep 1
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
printf 'docker service create (1 replica, local image) → running: median %.3f s over %d runs (%s)\n' \
    "$(median "${create[@]}")" "$runs" "$(printf '%.3f ' "${create[@]}")"
printf 'docker service scale 1 → 5 → all running:                 median %.3f s over %d runs (%s)\n' \
    "$(median "${scale[@]}")" "$runs" "$(printf '%.3f ' "${scale[@]}")"
