//! What the tests that use real components share: the rule for a missing prerequisite,
//! a loopback registry with the test images (`Registry`), and network-namespace test hosts
//! (`Hosts`). Test code only: a dev-dependency, never a dependency, and
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

mod hosts;
mod registry;

pub use hosts::{Hosts, HostsError};

pub use registry::{
    Registry, RegistryError, Request, TEST_PASSWORD, TEST_USER, push_test_images, test_image_script,
};
/// Makes `dir` a container root filesystem from Debian's busybox-static: `/bin/busybox`
/// with every applet linked beside it, the directories a container's mounts need, and a
/// minimal /etc. Needs `/bin/busybox` (`has_program("busybox")`).
pub fn busybox_rootfs(dir: &std::path::Path) -> std::io::Result<()> {
    use std::fs;
    let bin = dir.join("bin");
    fs::create_dir_all(&bin)?;
    fs::copy("/bin/busybox", bin.join("busybox"))?;
    let list = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" && !applet.is_empty() {
            std::os::unix::fs::symlink("busybox", bin.join(applet))?;
        }
    }
    for sub in ["proc", "sys", "dev", "etc", "root", "tmp", "var/run"] {
        fs::create_dir_all(dir.join(sub))?;
    }
    fs::set_permissions(
        dir.join("tmp"),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )?;
    fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )?;
    fs::write(dir.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    Ok(())
}

/// Runs `git ARGS` in `dir` as a user with no configuration of their own (author Ada
/// Lovelace <ada@example.org>, branch `main` by default, no signing) and returns its
/// output, trimmed; panics with git's message if it fails.
pub fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=Ada Lovelace",
            "-c",
            "user.email=ada@example.org",
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The remote address of the established TCP socket whose local address is `local` in the
/// network namespace at `netns`, as the kernel has it (`ss`, not `getpeername`, which a
/// program may answer otherwise); `None` when there is none.
pub fn established_peer(
    netns: &std::path::Path,
    local: std::net::SocketAddr,
) -> Option<std::net::IpAddr> {
    let output = std::process::Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["ss", "-Htn", "state", "established"])
        .output()
        .ok()?;
    let local = local.to_string();
    // With a state filter, ss prints no State column: Recv-Q Send-Q Local Peer.
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| {
            let columns: Vec<&str> = line.split_whitespace().collect();
            (*columns.get(2)? == local).then(|| columns.get(3)?.rsplit_once(':')?.0.parse().ok())?
        })
}
