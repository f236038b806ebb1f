#!/usr/bin/env bash
# Reproduces the figures of BENCHMARKS.md: the in-process plan benchmarks, then `swarm plan`
# end to end against `docker stack config` (the peer) in one hyperfine run, and the peak RSS
# of both. Everything runs on a generated 1,000-service stack file.
#
#   bench/plan-vs-docker.sh            # from anywhere in the workspace
#   RUNS=20 WARMUP=3 BENCH_FILTER=none bench/plan-vs-docker.sh
#
# BENCH_FILTER=none skips the in-process cases (the bench still writes the fixtures).
# SWARM=PATH and PLAN_BENCH=PATH use binaries built before (the `swarm` CLI, and the bench
# executable that `cargo bench -p swarm-controller --bench plan --no-run` names) and skip
# the builds, e.g. to measure a known build while the tree is being edited.
# Needs: cargo, git, hyperfine, /usr/bin/time (package `time`), docker (the CLI only: no
# daemon is contacted by `docker stack config`).
set -euo pipefail

RUNS=${RUNS:-20}
WARMUP=${WARMUP:-3}
RSS_RUNS=${RSS_RUNS:-3}
BENCH_FILTER=${BENCH_FILTER:-}
DOCKER=${DOCKER:-docker}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
SWARM=${SWARM:-}
PLAN_BENCH=${PLAN_BENCH:-}

for tool in cargo git hyperfine /usr/bin/time "$DOCKER"; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

echo "== machine"
echo "$(nproc) cores, $(. /etc/os-release && echo "$PRETTY_NAME"), $(uname -r)"
grep -m1 'model name' /proc/cpuinfo || true
uptime
"$DOCKER" --version
hyperfine --version
rustc --version

echo "== build"
if [ -z "$SWARM" ]; then
    (cd "$ROOT" && cargo build --release -p swarm-cli)
    SWARM=$TARGET/release/swarm
else
    SWARM=$(realpath "$SWARM")
    echo "using $SWARM"
fi

echo "== in-process benchmarks (controller/benches/plan.rs); also writes the fixtures"
# A filter that matches no case (`none`) only writes the fixtures.
if [ -z "$PLAN_BENCH" ]; then
    (cd "$ROOT" && SWARM_BENCH_FIXTURES="$WORK/fixtures" \
        cargo bench -p swarm-controller --bench plan -- $BENCH_FILTER)
else
    PLAN_BENCH=$(realpath "$PLAN_BENCH")
    echo "using $PLAN_BENCH"
    SWARM_BENCH_FIXTURES="$WORK/fixtures" "$PLAN_BENCH" --bench $BENCH_FILTER
fi

# A repository whose last commit changes one service's image: `--base HEAD~1` plans the
# 1,000 services of the working tree against the 1,000 of the previous commit.
REPO=$WORK/repo
mkdir -p "$REPO/stacks"
cd "$REPO"
git init -q
cp "$WORK/fixtures/big.yaml" stacks/big.yaml
git add stacks
git -c user.name=bench -c user.email=bench@example.invalid commit -q -m base
cp "$WORK/fixtures/big-changed.yaml" stacks/big.yaml
git -c user.name=bench -c user.email=bench@example.invalid commit -q -am "change one image"
# The state export of the base: the 1,000 services as applied (origin stacks/big.yaml).
cp "$WORK/fixtures/state.json" "$WORK/state.json"

PLAN_BASE="$SWARM plan --base HEAD~1 stacks/big.yaml --format json"
PLAN_STATE="$SWARM plan --state $WORK/state.json stacks/big.yaml --format json"
PEER="$DOCKER stack config -c stacks/big.yaml"

echo "== sanity: each command once"
for cmd in "$PLAN_BASE" "$PLAN_STATE"; do
    set +e
    $cmd >"$WORK/plan.json"
    rc=$?
    set -e
    actions=$(grep -c '"op":' "$WORK/plan.json" || true)
    echo "$cmd -> exit $rc (2 = changes), $actions action(s)"
    [ "$rc" -eq 2 ] && [ "$actions" -eq 1 ] || { echo "unexpected plan" >&2; exit 1; }
done
$PEER >"$WORK/peer.yaml"
echo "$PEER -> exit 0, $(grep -c '^  svc-' "$WORK/peer.yaml") services in its output"

echo "== wall time (hyperfine, $RUNS runs, $WARMUP warm-up)"
# -i: `swarm plan` exits 2 when the plan has changes. -N: no intermediate shell.
hyperfine -N -i --warmup "$WARMUP" --runs "$RUNS" \
    --export-markdown "$WORK/hyperfine.md" --export-json "$WORK/hyperfine.json" \
    -n "swarm plan --base HEAD~1" "$PLAN_BASE" \
    -n "swarm plan --state" "$PLAN_STATE" \
    -n "docker stack config" "$PEER"
cat "$WORK/hyperfine.md"
if command -v python3 >/dev/null; then
    echo "median / p10 / p90 (ms):"
    python3 - "$WORK/hyperfine.json" <<'PY'
import json, statistics, sys
for r in json.load(open(sys.argv[1]))["results"]:
    t = sorted(x * 1e3 for x in r["times"])
    q = lambda p: t[round(p * (len(t) - 1))]
    print(f"  {r['command']:<26} median {statistics.median(t):7.1f}  p10 {q(0.1):7.1f}  p90 {q(0.9):7.1f}  ({len(t)} runs)")
PY
fi

echo "== startup floor: the same commands on a 1-service stack (fixed cost of each tool)"
mkdir -p "$WORK/small/stacks"
awk '/^  svc-0001:/ {skip = 1} /^networks:/ {skip = 0} !skip' "$WORK/fixtures/big.yaml" \
    >"$WORK/small/stacks/big.yaml"
(cd "$WORK/small" && hyperfine -N -i --warmup "$WARMUP" --runs "$RUNS" \
    -n "swarm plan (1 service, empty cluster)" "$SWARM plan stacks/big.yaml --format json" \
    -n "docker stack config (1 service)" "$DOCKER stack config -c stacks/big.yaml")

echo "== peak RSS (/usr/bin/time -v, $RSS_RUNS runs each, KiB)"
for entry in "swarm plan --base HEAD~1|$PLAN_BASE" "swarm plan --state|$PLAN_STATE" "docker stack config|$PEER"; do
    name=${entry%%|*}
    cmd=${entry#*|}
    values=()
    for _ in $(seq "$RSS_RUNS"); do
        /usr/bin/time -v $cmd >/dev/null 2>"$WORK/time.txt" || true
        values+=("$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/time.txt")")
    done
    echo "$name: ${values[*]}"
done
