#!/usr/bin/env bash
# The peer of bench/rollback.sh: Docker Swarm on this machine, the same failing update
# (2 replicas, `--update-failure-action rollback --update-monitor 2s --entrypoint
# /bin/false`, default rollback settings), timed from the CLI call to the CLI's exit and to
# `service inspect` showing `rollback_completed` (polled every 50 ms). A private dockerd
# (own data, exec root and socket; --iptables=false) in a one-node swarm; the image is
# busybox-static's httpd imported with `docker import`. Needs root and Debian's docker.io.
# Usage: bench/rollback-docker.sh [RUNS] (default 5). Stops dockerd at the end.
set -euo pipefail
runs=${1:-5}
command -v dockerd >/dev/null || { echo "install docker.io first (apt-get install docker.io)" >&2; exit 1; }
work=$(mktemp -d)
export DOCKER_HOST="unix://$work/docker.sock"
cleanup() {
    docker swarm leave --force >/dev/null 2>&1 || true
    [ -f "$work/docker.pid" ] && kill "$(cat "$work/docker.pid")" 2>/dev/null || true
    sleep 2
    umount "$work"/data/* "$work"/exec/* 2>/dev/null || true
    rm -rf "$work" 2>/dev/null || true
}
trap cleanup EXIT
dockerd --data-root "$work/data" --exec-root "$work/exec" -H "$DOCKER_HOST" \
    --pidfile "$work/docker.pid" --iptables=false --ip-forward=false --ip-masq=false \
    > "$work/dockerd.log" 2>&1 &
for _ in $(seq 100); do docker version >/dev/null 2>&1 && break; sleep 0.1; done
mkdir -p "$work/rootfs/bin" "$work/rootfs/www"
cp /bin/busybox "$work/rootfs/bin/"
for applet in $(/bin/busybox --list); do [ "$applet" = busybox ] || ln -s busybox "$work/rootfs/bin/$applet"; done
echo hello > "$work/rootfs/www/index.html"
tar -C "$work/rootfs" -c . | docker import --change 'CMD ["httpd","-f","-p","80","-h","/www"]' - hello:1 >/dev/null
docker swarm init --advertise-addr 127.0.0.1 >/dev/null

now() { date +%s.%N; }
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
