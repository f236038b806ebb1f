//! Builds udp-echo (`udp-echo/udp-echo.c`), the UDP server the test images carry, as a
//! static executable (the images have no C library); `push_test_images` hands its path to
//! `scripts/test-image`.

#[path = "../build-support/static_c.rs"]
mod static_c;

fn main() {
    let binary = static_c::static_executable("udp-echo/udp-echo.c", "udp-echo");
    println!("cargo:rustc-env=SWARM_UDP_ECHO={}", binary.display());
}
