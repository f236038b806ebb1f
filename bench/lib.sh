# Shared by the service benchmarks (sourced, after scripts/lib.sh): the cluster each one
# measures, started the same way for swarm and for its Docker peer, and removed on exit.

# start_swarm_node SWARM POOL: a one-node swarm cluster (the `swarm` binary SWARM, address
# pool POOL in one /24) with a loopback registry holding the test images. Sets `work` (its
# directory), `registry` (host:port) and exports SWARM_HOST.
start_swarm_node() {
    local swarm=$1 pool=$2
    work=$(mktemp -d)
    swarm_node_pids=()
    swarm_node_binary=$swarm
    trap stop_swarm_node EXIT
    local manager
    registry="127.0.0.1:$(free_port)"
    manager="127.0.0.1:$(free_port)"
    printf 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n' \
        "$work/registry" "$registry" > "$work/registry.yml"
    docker-registry serve "$work/registry.yml" > "$work/registry.log" 2>&1 &
    swarm_node_pids+=($!)
    for _ in $(seq 100); do curl -sf "http://$registry/v2/" >/dev/null && break; sleep 0.1; done
    scripts/test-image "$registry" >&2
    export SWARM_HOST="unix://$work/swarm.sock"
    "$swarm" daemon --data-dir "$work/data" --socket "$work/swarm.sock" --run-dir "$work/run" \
        --listen-addr "$manager" --hostname bench 2> "$work/daemon.log" &
    swarm_node_pids+=($!)
    for _ in $(seq 100); do [ -S "$work/swarm.sock" ] && break; sleep 0.1; done
    "$swarm" init --advertise-addr "$manager" --default-addr-pool "$pool" \
        --default-addr-pool-mask-length 24 >/dev/null
}

stop_swarm_node() {
    "$swarm_node_binary" leave --force >/dev/null 2>&1 || true
    for pid in "${swarm_node_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}

# start_docker_swarm: the peer, Docker Swarm on this machine: a private dockerd (own data,
# exec root and socket; --iptables=false so the host's FORWARD policy is left alone) in a
# one-node swarm, with busybox-static's httpd imported as hello:1 (nothing pulled). Sets
# `work` and exports DOCKER_HOST; stops dockerd on exit.
start_docker_swarm() {
    command -v dockerd >/dev/null || { echo "install docker.io first (apt-get install docker.io)" >&2; exit 1; }
    work=$(mktemp -d)
    export DOCKER_HOST="unix://$work/docker.sock"
    trap stop_docker_swarm EXIT
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
}

stop_docker_swarm() {
    docker swarm leave --force >/dev/null 2>&1 || true
    [ -f "$work/docker.pid" ] && kill "$(cat "$work/docker.pid")" 2>/dev/null || true
    sleep 2
    umount "$work"/data/* "$work"/exec/* 2>/dev/null || true
    rm -rf "$work" 2>/dev/null || true
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

now() { date +%s.%N; }
