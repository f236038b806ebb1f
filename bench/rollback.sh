#!/usr/bin/env bash
# Automatic rollback on a one-node cluster: a service of 2 replicas is updated to a command
# that exits at once (`--entrypoint /bin/false`) with `--update-failure-action rollback
# --update-monitor 2s`; timed from the CLI call to the CLI's exit (it stops waiting when it
# sees the rollback) and to `service inspect` showing `rollback_completed` (polled every
# 50 ms). Rollback settings are the defaults (parallelism 1, monitor 5s), as in the peer,
# bench/rollback-docker.sh. Needs root (runc, network namespaces).
# Usage: bench/rollback.sh [RUNS] (default 5). PROFILE=release for a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. bench/lib.sh
ensure_build_tools
ensure_runtime_tools
runs=${1:-5}
profile=${PROFILE:-debug}
if [ "$profile" = release ]; then cargo build --release --locked -p swarm-cli >&2; else cargo build --locked -p swarm-cli >&2; fi
swarm="$PWD/target/$profile/swarm"
start_swarm_node "$swarm" 198.18.198.0/24
image="$registry/swarm/hello:1"

state() { "$swarm" service inspect "$1" | python3 -c "import json,sys; print(json.load(sys.stdin)[0].get('UpdateStatus',{}).get('State',''))"; }
gone() { for _ in $(seq 600); do [ -z "$(runc --root "$work/data/runc" list -q)" ] && return 0; sleep 0.05; done; }

detected=(); completed=()
for i in $(seq "$runs"); do
    "$swarm" service create --name "r$i" --replicas 2 --stop-grace-period 0s "$image" >/dev/null 2>&1
    start=$(now)
    if "$swarm" service update --update-failure-action rollback --update-monitor 2s \
        --entrypoint /bin/false --timeout 60s "r$i" > /dev/null 2> "$work/update.err"; then
        echo "the update did not fail" >&2; exit 1
    fi
    detected+=("$(echo "$(now) - $start" | bc)")
    grep -q "rollback: update rolled back" "$work/update.err" || { cat "$work/update.err" >&2; exit 1; }
    for _ in $(seq 1200); do [ "$(state "r$i")" = rollback_completed ] && break; sleep 0.05; done
    [ "$(state "r$i")" = rollback_completed ] || { echo "no rollback_completed" >&2; exit 1; }
    completed+=("$(echo "$(now) - $start" | bc)")
    "$swarm" service rm "r$i" >/dev/null
    gone
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
printf 'failing update → CLI exits naming the rollback: median %.3f s over %d runs (%s)\n' \
    "$(median "${detected[@]}")" "$runs" "$(printf '%.3f ' "${detected[@]}")"
printf 'failing update → rollback_completed:            median %.3f s over %d runs (%s)\n' \
    "$(median "${completed[@]}")" "$runs" "$(printf '%.3f ' "${completed[@]}")"
