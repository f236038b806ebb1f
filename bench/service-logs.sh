#!/usr/bin/env bash
# `swarm service logs` throughput on a single-node cluster: one task prints LINES lines
# (90 bytes each, below the 10 MiB rotation size) and stays; then hyperfine times, in the
# same run and the same way (wall clock around each command, output to /dev/null), the
# peer (`cat` of the task's log file: the bytes on disk, no protocol) and `swarm service
# logs` raw, with Docker's prefixes, with timestamps, and `--tail 10`; then how long a
# line appended to the log takes to be printed by `service logs -f` and by `tail -f`.
# Needs root (runc, network namespaces). Usage: bench/service-logs.sh [RUNS] (default 11);
# LINES=100000 by default.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. bench/lib.sh
ensure_build_tools
ensure_runtime_tools
runs=${1:-11}
lines=${LINES:-100000}
cargo build --release --locked -p swarm-cli >&2
swarm="$PWD/target/release/swarm"
start_swarm_node "$swarm" 198.18.242.0/24

# 89 characters and a newline per line.
text="the quick brown fox jumps over the lazy dog, 0123456789, the quick brown fox jumps over"
"$swarm" service create --name logbench --stop-grace-period 0s --entrypoint "/bin/sh -c" \
    "$registry/swarm/hello:1" "yes '$text' | head -n $lines; exec sleep 100000" >/dev/null
id=$("$swarm" service ps logbench --format json | python3 -c "import json,sys; print(json.load(sys.stdin)[0]['id'])")
log="$work/data/tasks/$id/logs/stdout.log"
for _ in $(seq 600); do [ "$(wc -l < "$log")" -ge "$lines" ] && break; sleep 0.1; done
[ "$(wc -l < "$log")" -eq "$lines" ] || { echo "service-logs: the task printed $(wc -l < "$log") lines, not $lines" >&2; exit 1; }
# Every line arrives, once.
[ "$("$swarm" service logs --raw logbench | wc -l)" -eq "$lines" ]
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
measure() { # NAME LINES COMMAND…: 2 untimed runs, then RUNS timed ones, output discarded
    local name=$1 count=$2 times=() start m
    shift 2
    for _ in 1 2; do "$@" >/dev/null 2>&1; done
    for _ in $(seq "$runs"); do
        start=$(now)
        "$@" >/dev/null 2>&1
        times+=("$(echo "$(now) - $start" | bc)")
    done
    m=$(median "${times[@]}")
    printf '%-24s median %7.1f ms  %6.2f M lines/s  (runs: %s)\n' "$name" \
        "$(echo "$m * 1000" | bc)" "$(echo "$count / $m / 1000000" | bc -l)" \
        "$(printf '%.3f ' "${times[@]}")"
}
printf 'service logs of %d lines (%s bytes on disk), %d runs each:\n' "$lines" "$(stat -c %s "$log")" "$runs"
measure "cat (peer)" "$lines" cat "$log"
measure "service logs --raw" "$lines" "$swarm" service logs --raw logbench
measure "service logs" "$lines" "$swarm" service logs logbench
measure "service logs -t" "$lines" "$swarm" service logs -t logbench
measure "service logs --tail 10" 10 "$swarm" service logs --tail 10 logbench

# Follow latency: a line appended to the task's log file (as the container appends to it)
# → printed by a follower, polled every 5 ms; the peer is `tail -f` of the same file.
follow_latency() { # NAME COMMAND…
    local name=$1 times=() start follower i
    shift
    : > "$work/followed"
    "$@" > "$work/followed" 2>/dev/null &
    follower=$!
    sleep 2 # subscribed
    for i in $(seq "$runs"); do
        start=$(now)
        echo "mark-$name-$i" >> "$log"
        for _ in $(seq 2000); do grep -q "mark-$name-$i\$" "$work/followed" && break; sleep 0.005; done
        times+=("$(echo "$(now) - $start" | bc)")
        # Out of phase with the follower's polling.
        sleep "0.$((RANDOM % 200 + 100))"
    done
    kill "$follower"
    wait "$follower" 2>/dev/null || true
    printf '%-24s median %7.1f ms  (runs: %s)\n' "$name" \
        "$(echo "$(median "${times[@]}") * 1000" | bc)" "$(printf '%.3f ' "${times[@]}")"
}
printf 'follow latency, line appended → printed, %d lines each:\n' "$runs"
follow_latency "tail -f (peer)" tail -n 0 -f "$log"
follow_latency "service logs -f" "$swarm" service logs -f --tail 0 --raw logbench
