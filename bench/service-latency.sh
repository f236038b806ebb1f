#!/usr/bin/env bash
# Service latency on a single-node cluster (issue 5's targets): `service create` of one
# replica of a cached image → running, `service scale 1→5` → all running, and (issue 4's)
# 20 tasks of a cached image started on one node → all running, measured by
# the wall clock around the CLI calls, polling `service ps --format json` every 10 ms (as
# the Docker peer is measured); and (issue 10) the same create and scale from the CLI call
# to the tasks' own running timestamps (the agent's clock, this machine's), which leaves
# out the polling's new processes; and the CLI's own wait (`service create` without `-d`,
# which returns once the service converged and held 200 ms).
# Needs root (runc, network namespaces). Usage: bench/service-latency.sh [RUNS] (default 11).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. bench/lib.sh
ensure_build_tools
ensure_runtime_tools
runs=${1:-11}
cargo build --release --locked -p swarm-cli >&2
swarm="$PWD/target/release/swarm"
start_swarm_node "$swarm" 198.18.199.0/24
image="$registry/swarm/hello:1"

running() { # SERVICE COUNT: whether COUNT tasks of SERVICE run
    "$swarm" service ps "$1" --filter desired-state=running --format json |
        python3 -c "import json,sys; sys.exit(0 if sum(t['status']['state']=='running' for t in json.load(sys.stdin)) == $2 else 1)"
}
running_at() { # SERVICE: when the last of its running tasks started running (s since the epoch)
    "$swarm" service ps "$1" --filter desired-state=running --format json |
        python3 -c "import json,sys; print(max(t['status']['since'] for t in json.load(sys.stdin) if t['status']['state']=='running')/1000)"
}
wait_running() { for _ in $(seq 3000); do running "$1" "$2" && return 0; sleep 0.01; done; echo "timed out" >&2; exit 1; }
gone() { for _ in $(seq 3000); do [ -z "$(runc --root "$work/data/runc" list -q)" ] && return 0; sleep 0.05; done; }

# Warm-up: the image is pulled and unpacked once.
"$swarm" service create --name warm --stop-grace-period 0s "$image" >/dev/null
wait_running warm 1
"$swarm" service rm warm >/dev/null
gone

create=(); scale=(); twenty=(); inside=(); create_stamped=(); scale_stamped=(); create_waited=()
for i in $(seq "$runs"); do
    start=$(now)
    "$swarm" service create -d --name "s$i" --stop-grace-period 0s "$image" >/dev/null
    wait_running "s$i" 1
    create+=("$(echo "$(now) - $start" | bc)")
    create_stamped+=("$(echo "$(running_at "s$i") - $start" | bc)")
    # The same path seen from inside, without the CLI and the polling: from the moment the
    # orchestrator made the task to the moment its agent saw it running.
    inside+=("$("$swarm" service ps "s$i" --format json |
        python3 -c "import json,sys; t=json.load(sys.stdin)[0]; print((t['status']['since']-t['created_at'])/1000)")")
    start=$(now)
    "$swarm" service scale -d "s$i=5" >/dev/null
    wait_running "s$i" 5
    scale+=("$(echo "$(now) - $start" | bc)")
    scale_stamped+=("$(echo "$(running_at "s$i") - $start" | bc)")
    "$swarm" service rm "s$i" >/dev/null
    gone
    start=$(now)
    "$swarm" service create -d --name "t$i" --replicas 20 --stop-grace-period 0s "$image" >/dev/null
    wait_running "t$i" 20
    twenty+=("$(echo "$(now) - $start" | bc)")
    "$swarm" service rm "t$i" >/dev/null
    gone
    start=$(now)
    "$swarm" service create --name "w$i" --stop-grace-period 0s "$image" >/dev/null 2>&1
    create_waited+=("$(echo "$(now) - $start" | bc)")
    running "w$i" 1
    "$swarm" service rm "w$i" >/dev/null
    gone
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
printf 'service create (1 replica, cached image) → running: median %.3f s over %d runs (%s)\n' \
    "$(median "${create[@]}")" "$runs" "$(printf '%.3f ' "${create[@]}")"
printf '  of which task made → running (agent):           median %.3f s (%s)\n' \
    "$(median "${inside[@]}")" "$(printf '%.3f ' "${inside[@]}")"
printf '  CLI call → running (task timestamps):          median %.3f s (%s)\n' \
    "$(median "${create_stamped[@]}")" "$(printf '%.3f ' "${create_stamped[@]}")"
printf '  CLI without -d → returned converged:           median %.3f s (%s)\n' \
    "$(median "${create_waited[@]}")" "$(printf '%.3f ' "${create_waited[@]}")"
printf 'service scale 1 → 5 → all running:                 median %.3f s over %d runs (%s)\n' \
    "$(median "${scale[@]}")" "$runs" "$(printf '%.3f ' "${scale[@]}")"
printf '  CLI call → all running (task timestamps):      median %.3f s (%s)\n' \
    "$(median "${scale_stamped[@]}")" "$(printf '%.3f ' "${scale_stamped[@]}")"
printf 'service create (20 replicas, one node) → all running: median %.3f s over %d runs (%s)\n' \
    "$(median "${twenty[@]}")" "$runs" "$(printf '%.3f ' "${twenty[@]}")"
