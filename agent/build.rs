//! Builds swarm-init (`init/init.c`), the init a task with `init: true` runs as PID 1, as a
//! static executable: the container's image may have no C library. The agent embeds it.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let source = "init/init.c";
    println!("cargo:rerun-if-changed={source}");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let binary = out.join("swarm-init");
    let mut command: Command = cc::Build::new().get_compiler().to_command();
    command
        .args(["-static", "-Os", "-s", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&binary)
        .arg(source);
    let status = command
        .status()
        .unwrap_or_else(|error| panic!("cannot run the C compiler for {source}: {error}"));
    assert!(
        status.success(),
        "{source} did not compile as a static executable ({status}): install the C library's static archive (Debian: libc6-dev)"
    );
}
