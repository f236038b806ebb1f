//! Builds swarm-init (`init/init.c`), the init a task with `init: true` runs as PID 1, as a
//! static executable: the container's image may have no C library. The agent embeds it.
//! Builds the VIPs' socket balancer (`bpf/vip_connect.c`), an eBPF object the agent loads
//! into the kernel, with clang (BPF is a target gcc 12 does not have).

#[path = "../build-support/static_c.rs"]
mod static_c;

use std::path::PathBuf;
use std::process::Command;

fn main() {
    static_c::static_executable("init/init.c", "swarm-init");
    bpf_object("bpf/vip_connect.c", "vip_connect.o");
}

/// Compiles `source` for the BPF target into `OUT_DIR/name`, with BTF (`-g`), which the
/// loader reads the maps' layout from.
fn bpf_object(source: &str, name: &str) {
    println!("cargo:rerun-if-changed={source}");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    // <linux/bpf.h> includes <asm/types.h>, which Debian keeps under the target's
    // multiarch directory (the C compiler names it: x86_64-linux-gnu,
    // arm-linux-gnueabihf…).
    let multiarch = cc::Build::new()
        .get_compiler()
        .to_command()
        .arg("-print-multiarch")
        .output()
        .ok()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| {
            let arch = std::env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets the arch");
            format!("{arch}-linux-gnu")
        });
    // The program's byte order is the target's, not the build machine's.
    let target = match std::env::var("CARGO_CFG_TARGET_ENDIAN").as_deref() {
        Ok("big") => "bpfeb",
        _ => "bpfel",
    };
    let status = Command::new("clang")
        .args(["-O2", "-g", "-Wall", "-Werror", "-target", target])
        .arg(format!("-I/usr/include/{multiarch}"))
        .arg("-c")
        .arg(source)
        .arg("-o")
        .arg(out.join(name))
        .status()
        .unwrap_or_else(|error| {
            panic!(
                "cannot run clang for {source}: {error}; install clang and libbpf-dev \
                 (./scripts/lib.sh ensure_build_tools does)"
            )
        });
    assert!(
        status.success(),
        "{source} did not compile for BPF ({status}): it needs clang and libbpf-dev's headers"
    );
}
