//! Builds udp-echo (`udp-echo/udp-echo.c`), the UDP server the test images carry, as a
//! static executable (the images have no C library); `push_test_images` hands its path to
//! `scripts/test-image`.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let source = "udp-echo/udp-echo.c";
    println!("cargo:rerun-if-changed={source}");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let binary = out.join("udp-echo");
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
    println!("cargo:rustc-env=SWARM_UDP_ECHO={}", binary.display());
}
