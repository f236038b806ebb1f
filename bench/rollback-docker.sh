#!/usr/bin/env bash
# The peer of bench/rollback.sh: Docker Swarm on this machine, the same failing update
# (2 replicas, `--update-failure-action rollback --update-monitor 2s --entrypoint
# /bin/false`, default rollback settings), timed from the CLI call to the CLI's exit and to
# `service inspect` showing `rollback_completed` (polled every 50 ms). A private dockerd
# (own data, exec root and socket; --iptables=false) in a one-node swarm; the image is
# busybox-static's httpd imported with `docker import`. Needs root and Debian's docker.io.
# Usage: bench/rollback-docker.sh [RUNS] (default 5). Stops dockerd at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
runs=${1:-5}
start_docker_swarm

state() { docker service inspect -f '{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}' "$1"; }
detected=(); completed=()
for i in $(seq "$runs"); do
    docker service create --quiet --name "r$i" --replicas 2 --stop-grace-period 0s hello:1 >/dev/null 2>&1
    start=$(now)
    if docker service update --update-failure-action rollback --update-monitor 2s \
        --entrypoint /bin/false "r$i" > "$work/update.out" 2>&1; then
        echo "the update did not fail:" >&2; cat "$work/update.out" >&2
    fi
    detected+=("$(echo "$(now) - $start" | bc)")
    for _ in $(seq 1200); do [ "$(state "r$i")" = rollback_completed ] && break; sleep 0.05; done
    [ "$(state "r$i")" = rollback_completed ] || { echo "no rollback_completed: $(state "r$i")" >&2; exit 1; }
    completed+=("$(echo "$(now) - $start" | bc)")
    docker service rm "r$i" >/dev/null
    sleep 1
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
printf 'docker: failing update → CLI exits:          median %.3f s over %d runs (%s)\n' \
    "$(median "${detected[@]}")" "$runs" "$(printf '%.3f ' "${detected[@]}")"
printf 'docker: failing update → rollback_completed: median %.3f s over %d runs (%s)\n' \
    "$(median "${completed[@]}")" "$runs" "$(printf '%.3f ' "${completed[@]}")"
tail -3 "$work/update.out" | sed 's/^/docker CLI said: /'
