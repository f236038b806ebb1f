//! What the crates' build scripts share (each includes this file with `#[path]`): a C
//! source built as a static executable, for programs that run where there may be no C
//! library (a container's image, a test image).

use std::path::PathBuf;
use std::process::Command;

/// Builds `source` (relative to the crate) into `OUT_DIR/name` as a static executable;
/// its path.
pub fn static_executable(source: &str, name: &str) -> PathBuf {
    println!("cargo:rerun-if-changed={source}");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let binary = out.join(name);
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
    binary
}
