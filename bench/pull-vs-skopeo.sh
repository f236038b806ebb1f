#!/usr/bin/env bash
# Reproduces the pull figures of BENCHMARKS.md: swarm's image pull (agent/examples/pull.rs)
# against skopeo, both pulling the same image from one Debian docker-registry on loopback,
# each run into a fresh directory, process start included on both sides:
#
#   fetch + verify:  pull --fetch-only REF DIR      vs  skopeo copy docker://REF dir:DIR
#   fetch + unpack:  pull REF DIR                   vs  skopeo copy docker://REF oci:DIR:img
#                                                       && umoci unpack --image DIR:img BUNDLE
#
#   bench/pull-vs-skopeo.sh                 # RUNS=21 WARMUP=2 IMAGE=swarm/layers:1
#   AUTH=1 bench/pull-vs-skopeo.sh          # the registry wants basic authentication: swarm
#                                           # pulls with --user (a task's credentials), skopeo
#                                           # with --src-creds
#   PULL=target/release/examples/pull bench/pull-vs-skopeo.sh   # a binary built before
#
# The runs of the four commands are interleaved, so a slow moment of the shared machine hits
# all of them. Needs: cargo, docker-registry, skopeo, umoci, busybox-static (for the test
# images), curl; root (umoci unpack keeps owners).
set -euo pipefail

RUNS=${RUNS:-21}
WARMUP=${WARMUP:-2}
IMAGE=${IMAGE:-swarm/layers:1}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
PULL=${PULL:-}
AUTH=${AUTH:-}
# The test registries' user (swarm_testkit::TEST_USER, TEST_PASSWORD, bcrypt cost 4).
USER_PASS=swarm:swarm-test-password
HTPASSWD='swarm:$2b$04$R5rs6gb8OgCXYVWhxV06meChF4Xt6f6uT1CIbtb8K4IO2lJzgwSP6'

for tool in cargo docker-registry skopeo umoci curl; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done

WORK=$(mktemp -d)
REGISTRY_PID=
cleanup() {
    [ -z "$REGISTRY_PID" ] || { kill "$REGISTRY_PID" 2>/dev/null; wait "$REGISTRY_PID" 2>/dev/null || true; }
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "== machine"
echo "$(nproc) cores, $(. /etc/os-release && echo "$PRETTY_NAME"), $(uname -r)"
grep -m1 'model name' /proc/cpuinfo || true
uptime
skopeo --version
umoci --version
dpkg-query -W docker-registry 2>/dev/null || true
rustc --version

echo "== build"
if [ -z "$PULL" ]; then
    (cd "$ROOT" && cargo build --release -p swarm-agent --example pull)
    PULL=$TARGET/release/examples/pull
else
    PULL=$(realpath "$PULL")
    echo "using $PULL"
fi

echo "== registry${AUTH:+ with basic authentication}"
AUTH_CONFIG=
SWARM_CREDS=()
SKOPEO_CREDS=()
if [ -n "$AUTH" ]; then
    echo "$HTPASSWD" >"$WORK/htpasswd"
    AUTH_CONFIG=$(printf 'auth:\n  htpasswd:\n    realm: bench\n    path: %s' "$WORK/htpasswd")
    SWARM_CREDS=(--user "$USER_PASS")
    SKOPEO_CREDS=(--src-creds "$USER_PASS")
fi
for attempt in 1 2 3 4 5; do
    port=$((20000 + RANDOM % 40000))
    cat >"$WORK/registry.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $WORK/registry
http:
  addr: 127.0.0.1:$port
$AUTH_CONFIG
EOF
    docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
    REGISTRY_PID=$!
    for _ in $(seq 100); do
        # 401 once it answers, when it wants credentials.
        curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v2/" 2>/dev/null | grep -qE '200|401' && break 2
        kill -0 "$REGISTRY_PID" 2>/dev/null || break
        sleep 0.05
    done
    kill "$REGISTRY_PID" 2>/dev/null || true
    wait "$REGISTRY_PID" 2>/dev/null || true
    REGISTRY_PID=
    [ "$attempt" -lt 5 ] || { cat "$WORK/registry.log" >&2; exit 1; }
done
ADDR=127.0.0.1:$port
REGISTRY_CREDS=${AUTH:+$USER_PASS} "$ROOT/scripts/test-image" "$ADDR"
REF=$ADDR/$IMAGE
echo "registry on $ADDR, image $REF"

# run NAME CMD...: runs CMD (output discarded) and appends its wall time in µs to NAME.times.
run() {
    local name=$1
    shift
    local start end
    start=$(date +%s%N)
    "$@" >"$WORK/$name.out" 2>&1 || { cat "$WORK/$name.out" >&2; exit 1; }
    end=$(date +%s%N)
    echo $(((end - start) / 1000)) >>"$WORK/$name.times"
}

swarm_fetch() { "$PULL" --fetch-only "${SWARM_CREDS[@]}" "$REF" "$WORK/s-fetch"; }
skopeo_dir() { skopeo copy --quiet --src-tls-verify=false "${SKOPEO_CREDS[@]}" "docker://$REF" "dir:$WORK/k-dir"; }
swarm_pull() { "$PULL" "${SWARM_CREDS[@]}" "$REF" "$WORK/s-pull"; }
skopeo_umoci() {
    skopeo copy --quiet --src-tls-verify=false "${SKOPEO_CREDS[@]}" "docker://$REF" "oci:$WORK/k-oci:img" &&
        umoci unpack --image "$WORK/k-oci:img" "$WORK/k-bundle"
}

echo "== $WARMUP warm-up and $RUNS measured runs of each, interleaved"
for i in $(seq $((WARMUP + RUNS))); do
    rm -rf "$WORK"/s-* "$WORK"/k-*
    for case in swarm_fetch skopeo_dir swarm_pull skopeo_umoci; do
        run "$case" "$case"
        # The in-process time `pull` prints (without process start and store opening).
        case $case in swarm_*) awk '{print int($2 * 1000)}' "$WORK/$case.out" >>"$WORK/$case.inproc" ;; esac
    done
    if [ "$i" -le "$WARMUP" ]; then
        rm -f "$WORK"/*.times "$WORK"/*.inproc
    fi
done

median() { sort -n "$1" | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
ms() { awk -v us="$1" 'BEGIN {printf "%.1f", us / 1000}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
minmax() { sort -n "$1" | awk 'NR == 1 {min = $1} {max = $1} END {printf "%.1f–%.1f", min / 1000, max / 1000}'; }

echo "== results: medians of $RUNS runs (ms; min–max)"
for pair in "swarm_fetch skopeo_dir fetch+verify" "swarm_pull skopeo_umoci fetch+unpack"; do
    set -- $pair
    ours=$(median "$WORK/$1.times")
    peer=$(median "$WORK/$2.times")
    inproc=$(median "$WORK/$1.inproc")
    printf '%-13s swarm %7s ms (%s, in-process %s ms)   peer %7s ms (%s)   swarm/peer %s\n' \
        "$3" "$(ms "$ours")" "$(minmax "$WORK/$1.times")" "$(ms "$inproc")" \
        "$(ms "$peer")" "$(minmax "$WORK/$2.times")" "$(ratio "$ours" "$peer")"
done
echo "swarm fetch+unpack vs skopeo copy to dir: $(ratio "$(median "$WORK/swarm_pull.times")" "$(median "$WORK/skopeo_dir.times")")"
