//! What the tests that use real components share: the rule for a missing prerequisite,
//! a loopback registry with the test images (`Registry`), and (as they arrive)
//! network-namespace test hosts. Test code only: a dev-dependency, never a dependency, and
//! free of the project's own crates.

/// Whether a test can go on: true when `available`. When it is not, the test skips with a
/// loud message, except under `CI=true`, where a missing prerequisite is a failure.
pub fn require(test: &str, available: bool, what: &str) -> bool {
    if available {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: {what} is missing, and under CI=true this test must run"
    );
    eprintln!("SKIPPED {test}: {what} is missing (install it, or run as root)");
    false
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether `program` is on the PATH.
pub fn has_program(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

mod registry;

pub use registry::{
    Registry, RegistryError, Request, TEST_PASSWORD, TEST_USER, push_test_images, test_image_script,
};
