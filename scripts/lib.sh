# Shared by the scripts: install what is missing, never what is there.
# shellcheck shell=bash

# ensure_packages CMD:PACKAGE...: apt-get installs PACKAGE when CMD is not on the PATH (or,
# for a CMD that is an absolute path, such as a header file, when it does not exist).
ensure_packages() {
    local missing=()
    for pair in "$@"; do
        local what="${pair%%:*}"
        case "$what" in
        /*) [ -e "$what" ] || missing+=("${pair#*:}") ;;
        *) command -v "$what" >/dev/null 2>&1 || missing+=("${pair#*:}") ;;
        esac
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "installing: ${missing[*]}" >&2
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

# ensure_rust: the workspace needs a current stable toolchain (edition 2024); Debian's is too old.
ensure_rust() {
    if ! command -v cargo >/dev/null 2>&1; then
        [ -x "$HOME/.cargo/bin/cargo" ] || {
            ensure_packages curl:curl
            echo "installing the Rust toolchain with rustup" >&2
            curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy,rustfmt
        }
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
}

# git2 fetches over https with the system's OpenSSL (libssl-dev); libssh2 is built from source.
ensure_build_tools() {
    ensure_packages git:git cc:gcc make:make pkg-config:pkg-config protoc:protobuf-compiler \
        /usr/include/openssl/ssl.h:libssl-dev
    # The agent's build links swarm-init (the tasks' init) statically: glibc's libc.a.
    ensure_packages "/usr/lib/$(uname -m)-linux-gnu/libc.a:libc6-dev"
    # The agent's socket balancer for VIPs is an eBPF program: clang and libbpf's headers.
    ensure_packages clang:clang /usr/include/bpf/bpf_helpers.h:libbpf-dev
    ensure_rust
}

# ensure_runtime_tools: what the real tests and the demo run: runc for containers, busybox
# for the test image's rootfs, umoci, jq and skopeo to build and push it, docker-registry to
# serve it on loopback, iproute2 for network namespaces and test hosts (nsenter and unshare
# come with util-linux), nftables for their packet loss.
ensure_runtime_tools() {
    ensure_packages runc:runc busybox:busybox-static umoci:umoci skopeo:skopeo \
        docker-registry:docker-registry ip:iproute2 iptables:iptables jq:jq nft:nftables curl:curl python3:python3
}
