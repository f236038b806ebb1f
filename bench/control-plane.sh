#!/usr/bin/env bash
# Reproduces the control plane's figures of BENCHMARKS.md ("Control plane (issue 3)"):
#
# 1. write throughput and latency at 1 and 64 concurrent clients, 3 managers on loopback,
#    fsync on: swarm (UpdateNode over gRPC + mutual TLS, `control_bench load`) against etcd
#    3.4 (3 members, PUT through its JSON gateway with `hey`), RUNS times, alternating;
# 2. failover: the leader SIGKILLed KILLS times while a writer writes through a surviving
#    manager (`control_bench failover`), FAILOVER_RUNS times.
#
#   bench/control-plane.sh                 # from anywhere in the workspace
#   RUNS=1 FAILOVER_RUNS=0 bench/control-plane.sh
#   FSYNCS=500 RUNS=0 FAILOVER_RUNS=0 bench/control-plane.sh   # fsyncs per write (strace)
#   ETCD_TLS=1 RUNS=1 FAILOVER_RUNS=0 bench/control-plane.sh     # etcd again with TLS (openssl)
#
# SWARM=PATH and CONTROL_BENCH=PATH use binaries built before (target/release/swarm and
# target/release/examples/control_bench) and skip the build.
# Needs: cargo, etcd and etcdctl (Debian etcd-server, etcd-client), hey, jq; root is not
# needed. Everything listens on 127.0.0.1, ports 24701-24773; data dirs live in a temporary
# directory on the same file system as /tmp, removed at the end.
set -euo pipefail

RUNS=${RUNS:-3}
FAILOVER_RUNS=${FAILOVER_RUNS:-3}
KILLS=${KILLS:-20}
WRITES_1=${WRITES_1:-2000}
WRITES_64=${WRITES_64:-20000}
# Every load phase stops after this many seconds, whatever is left.
PHASE_SECONDS=${PHASE_SECONDS:-60}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
SWARM=${SWARM:-}
CONTROL_BENCH=${CONTROL_BENCH:-}

for tool in cargo etcd etcdctl hey jq timeout; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/swarm-control-bench.XXXXXX)
PIDS=()
# Run as root, the daemons' workers make their nodes' nftables tables (VIPs, mesh, canary), which a
# SIGKILLed daemon leaves behind (a stopped daemon keeps them for its tasks): those not
# here before the script are removed with the daemons.
our_tables() { nft list tables 2>/dev/null | awk '$3 ~ /^sw(vip|mesh|canary)/ {print $3}' | sort; }
# And their canary chains in the iptables filter and nat tables ("table chain" lines).
our_chains() {
    for table in filter nat; do
        iptables -w 5 -t "$table" -S 2>/dev/null | awk -v t="$table" '$1 == "-N" && $2 ~ /^SWCANARY-/ {print t, $2}'
    done | sort
}
TABLES_BEFORE=$(our_tables)
CHAINS_BEFORE=$(our_chains)
stop_all() {
    for pid in "${PIDS[@]}"; do
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
    for table in $(comm -13 <(echo "$TABLES_BEFORE") <(our_tables)); do
        nft delete table ip "$table" 2>/dev/null || true
    done
    comm -13 <(echo "$CHAINS_BEFORE") <(our_chains) | while read -r table chain; do
        iptables -w 5 -t "$table" -X "$chain" 2>/dev/null || true
    done
}
cleanup() {
    stop_all
    rm -rf "$WORK"
}
trap cleanup EXIT
# A signal ends the script through `exit`, so that the EXIT trap cleans up.
trap 'exit 130' INT TERM

echo "== machine"
echo "$(nproc) cores, $(. /etc/os-release && echo "$PRETTY_NAME"), $(uname -r)"
grep -m1 'model name' /proc/cpuinfo || true
uptime
etcd --version | head -1
rustc --version

echo "== build"
if [ -z "$SWARM" ] || [ -z "$CONTROL_BENCH" ]; then
    (cd "$ROOT" && cargo build --release -p swarm-cli --bin swarm --example control_bench)
    SWARM=$TARGET/release/swarm
    CONTROL_BENCH=$TARGET/release/examples/control_bench
fi
SWARM=$(realpath "$SWARM")
CONTROL_BENCH=$(realpath "$CONTROL_BENCH")
echo "swarm: $SWARM"
echo "control_bench: $CONTROL_BENCH"

# Waits (at most $1 seconds) until the command after it succeeds.
wait_for() {
    local limit=$1
    shift
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then
            echo "not within ${limit}s: $*" >&2
            return 1
        fi
        sleep 0.1
    done
}

# Three swarm managers: m0 initialises, m1 and m2 join as managers; an admin certificate
# for the load process. m0 leads (the joins do not move leadership).
start_swarm() {
    local dir=$WORK/swarm
    rm -rf "$dir"
    for n in 0 1 2; do
        mkdir -p "$dir/m$n"
        "$SWARM" daemon --data-dir "$dir/m$n/data" --listen-addr "127.0.0.1:$((24701 + n))" \
            --socket "$dir/m$n/swarm.sock" --hostname "bench-m$n" 2>"$dir/m$n/daemon.log" &
        PIDS+=($!)
        wait_for 10 test -S "$dir/m$n/swarm.sock"
    done
    SWARM_HOST=unix://$dir/m0/swarm.sock "$SWARM" init >/dev/null
    local token
    token=$(SWARM_HOST=unix://$dir/m0/swarm.sock "$SWARM" join-token manager -q)
    for n in 1 2; do
        SWARM_HOST=unix://$dir/m$n/swarm.sock "$SWARM" join --token "$token" 127.0.0.1:24701 >/dev/null
    done
    SWARM_HOST=unix://$dir/m0/swarm.sock "$SWARM" client-cert --out "$dir/admin" >/dev/null
    wait_for 20 bash -c "SWARM_HOST=unix://$dir/m0/swarm.sock '$SWARM' node ls | grep -c Reachable | grep -qx 2"
}

# A CA and one certificate for 127.0.0.1 (etcd's members and clients), for `start_etcd tls`.
make_etcd_certs() {
    local dir=$1
    mkdir -p "$dir"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
        -subj /CN=bench-ca -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=etcd \
        -keyout "$dir/etcd.key" -out "$dir/etcd.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' >"$dir/ext"
    openssl x509 -req -in "$dir/etcd.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
        -CAcreateserial -days 1 -extfile "$dir/ext" -out "$dir/etcd.pem" 2>/dev/null
}

# Three etcd members, fsync on (the default); sets ETCD_LEADER to the leader's client URL.
# `start_etcd tls`: TLS between the members (each verifying the other's certificate, as
# swarm's managers do) and to the clients, which swarm's clients also have.
start_etcd() {
    local dir=$WORK/etcd cluster="" endpoints="" scheme=http tls=()
    rm -rf "$dir"
    if [ "${1:-}" = tls ]; then
        scheme=https
        make_etcd_certs "$dir/certs"
        tls=(--cert-file "$dir/certs/etcd.pem" --key-file "$dir/certs/etcd.key"
            --peer-cert-file "$dir/certs/etcd.pem" --peer-key-file "$dir/certs/etcd.key"
            --peer-trusted-ca-file "$dir/certs/ca.pem" --peer-client-cert-auth)
    fi
    for n in 0 1 2; do
        cluster+="${cluster:+,}e$n=$scheme://127.0.0.1:$((24721 + n))"
        endpoints+="${endpoints:+,}$scheme://127.0.0.1:$((24711 + n))"
    done
    for n in 0 1 2; do
        mkdir -p "$dir/e$n"
        etcd --name "e$n" --data-dir "$dir/e$n/data" \
            --listen-client-urls "$scheme://127.0.0.1:$((24711 + n))" \
            --advertise-client-urls "$scheme://127.0.0.1:$((24711 + n))" \
            --listen-peer-urls "$scheme://127.0.0.1:$((24721 + n))" \
            --initial-advertise-peer-urls "$scheme://127.0.0.1:$((24721 + n))" \
            --initial-cluster "$cluster" --initial-cluster-token swarm-bench \
            --initial-cluster-state new --logger zap --log-outputs stderr "${tls[@]}" \
            2>"$dir/e$n/etcd.log" &
        PIDS+=($!)
    done
    local ctl=(etcdctl --endpoints "$endpoints")
    [ "$scheme" = https ] && ctl+=(--cacert "$dir/certs/ca.pem")
    wait_for 30 "${ctl[@]}" endpoint health
    ETCD_LEADER=$("${ctl[@]}" endpoint status -w json |
        jq -r '.[] | select(.Status.leader == .Status.header.member_id) | .Endpoint')
}

# One line like control_bench's from hey's report: N clients writing one key (hey takes
# the https URL of `start_etcd tls` without checking its certificate). LABEL names the
# line (etcd-load, etcd-tls-load).
etcd_load() {
    local url=$1 clients=$2 writes=$3 label=${4:-etcd-load} report
    # hey takes a count or a duration, not both: the count; `timeout` bounds the time (hey
    # reports what it did when interrupted).
    report=$(timeout -s INT "$PHASE_SECONDS" hey -n "$writes" -c "$clients" \
        -m POST -T application/json -d '{"key":"YmVuY2g=","value":"MTIzNDU2Nzg="}' \
        "$url/v3/kv/put" 2>&1) || true
    echo "$report" | awk -v clients="$clients" -v label="$label" '
        /Requests\/sec:/ { rps = $2 }
        /Total:/ { total = $2 }
        /  50%+ in/ { p50 = $3 * 1000 }
        /  90%+ in/ { p90 = $3 * 1000 }
        /  99%+ in/ { p99 = $3 * 1000 }
        /^Status code distribution:/ { section = "status" }
        /^Error distribution:/ { section = "errors" }
        section == "status" && /^  \[200\]/ { ok = $2 }
        section == "status" && /^  \[[0-9]+\]/ && !/\[200\]/ { bad += $2 }
        section == "errors" && /^  \[[0-9]+\]/ { gsub(/[\[\]]/, "", $1); bad += $1 }
        END { printf "%s clients=%d writes=%d errors=%d seconds=%.2f throughput=%.0f p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f\n",
              label, clients, ok, bad, total, rps, p50, p90, p99 }'
}

RESULTS=$WORK/results.txt
: >"$RESULTS"

# With FSYNCS=N: N writes at 1 client with strace counting each manager's fsync and
# fdatasync calls (strace slows the daemons: these writes are not timed).
if [ "${FSYNCS:-0}" -gt 0 ]; then
    command -v strace >/dev/null || { echo "missing: strace" >&2; exit 1; }
    echo "== fsyncs per write: $FSYNCS writes, 1 client"
    start_swarm
    traces=()
    for n in 0 1 2; do
        strace -f -c -e trace=fsync,fdatasync -o "$WORK/strace-m$n.txt" -p "${PIDS[$n]}" 2>/dev/null &
        traces+=($!)
    done
    sleep 1
    "$CONTROL_BENCH" load --manager 127.0.0.1:24701 --tls-dir "$WORK/swarm/admin" \
        --clients 1 --writes "$FSYNCS" --warmup 0 --seconds "$PHASE_SECONDS" >/dev/null
    kill -INT "${traces[@]}"
    wait "${traces[@]}" 2>/dev/null || true
    for n in 0 1 2; do
        calls=$(awk '$NF == "fsync" || $NF == "fdatasync" { sum += $4 } END { print sum + 0 }' \
            "$WORK/strace-m$n.txt")
        awk -v n="$n" -v calls="$calls" -v writes="$FSYNCS" \
            'BEGIN { printf "fsyncs m%d: %d calls, %.2f per write\n", n, calls, calls / writes }'
    done
    stop_all
fi

for run in $(seq 1 "$RUNS"); do
    echo "== run $run/$RUNS: swarm, 3 managers"
    start_swarm
    for clients in 1 64; do
        writes=$WRITES_1
        [ "$clients" = 64 ] && writes=$WRITES_64
        timeout $((PHASE_SECONDS + 60)) "$CONTROL_BENCH" load --manager 127.0.0.1:24701 \
            --tls-dir "$WORK/swarm/admin" --clients "$clients" --writes "$writes" \
            --seconds "$PHASE_SECONDS" | sed "s/^/run=$run /" | tee -a "$RESULTS"
    done
    stop_all

    echo "== run $run/$RUNS: etcd, 3 members"
    start_etcd
    echo "etcd leader: $ETCD_LEADER"
    # Untimed warm-up, as control_bench does before its timed phase.
    etcd_load "$ETCD_LEADER" 64 640 >/dev/null
    for clients in 1 64; do
        writes=$WRITES_1
        [ "$clients" = 64 ] && writes=$WRITES_64
        etcd_load "$ETCD_LEADER" "$clients" "$writes" | sed "s/^/run=$run /" | tee -a "$RESULTS"
    done
    stop_all

    if [ "${ETCD_TLS:-0}" = 1 ]; then
        echo "== run $run/$RUNS: etcd, 3 members, TLS between members and to clients"
        start_etcd tls
        etcd_load "$ETCD_LEADER" 64 640 etcd-tls-load >/dev/null
        for clients in 1 64; do
            writes=$WRITES_1
            [ "$clients" = 64 ] && writes=$WRITES_64
            etcd_load "$ETCD_LEADER" "$clients" "$writes" etcd-tls-load |
                sed "s/^/run=$run /" | tee -a "$RESULTS"
        done
        stop_all
    fi
done

for run in $(seq 1 "$FAILOVER_RUNS"); do
    echo "== failover run $run/$FAILOVER_RUNS: $KILLS leader kills"
    rm -rf "$WORK/failover"
    mkdir -p "$WORK/failover"
    timeout $((KILLS * 60 + 60)) "$CONTROL_BENCH" failover --swarm "$SWARM" \
        --dir "$WORK/failover" --base-port 24771 --kills "$KILLS" |
        sed "s/^swarm-failover/run=$run swarm-failover/" | tee -a "$RESULTS"
done

echo "== summary: medians over $RUNS runs"
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print "-" }'; }
printf "%-8s %8s %14s %10s %10s %10s\n" system clients "writes/s" p50_ms p90_ms p99_ms
for system in swarm etcd etcd-tls; do
    [ "$system" = etcd-tls ] && [ "${ETCD_TLS:-0}" != 1 ] && continue
    for clients in 1 64; do
        lines=$(grep "$system-load clients=$clients " "$RESULTS" || true)
        printf "%-8s %8s %14s %10s %10s %10s\n" "$system" "$clients" \
            "$(echo "$lines" | field throughput | median)" \
            "$(echo "$lines" | field p50_ms | median)" \
            "$(echo "$lines" | field p90_ms | median)" \
            "$(echo "$lines" | field p99_ms | median)"
    done
done
grep "swarm-failover" "$RESULTS" || true
# Every kill of every failover run: `kill leader writer kill->ack_ms ...` lines.
awk '$2 ~ /^bench-m/ && $4 ~ /^[0-9]+$/ { print $4 }' "$RESULTS" | sort -n | awk '
    { v[NR] = $1 }
    function q(p) { return v[int(p * (NR - 1) + 0.5) + 1] }
    END { if (NR) printf "failover, all %d kills: p50 %d ms, p90 %d ms, p99 %d ms, max %d ms\n", NR, q(0.5), q(0.9), q(0.99), v[NR] }'
