//! Where the host's cgroup hierarchies are, to read a container's OOM-kill counter before
//! its cgroup goes, and to find (and remove) the cgroup directories of a node.
//! Works on cgroup v1, v2, and the hybrid layout (v1 controllers beside an empty v2 mount).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// One mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hierarchy {
    mount: PathBuf,
    /// For v1, the controllers bound to this mount (`memory`, `cpu`, `name=systemd`…).
    controllers: Vec<String>,
    unified: bool,
}

/// The host's cgroup hierarchies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroups {
    hierarchies: Vec<Hierarchy>,
}

impl Cgroups {
    /// The hierarchies mounted in this process's mount namespace.
    pub fn detect() -> io::Result<Self> {
        Ok(Self::from_mountinfo(&fs::read_to_string(
            "/proc/self/mountinfo",
        )?))
    }

    fn from_mountinfo(mountinfo: &str) -> Self {
        let mut hierarchies = Vec::new();
        for line in mountinfo.lines() {
            // "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [TAGS…] - FSTYPE SOURCE SUPEROPTIONS"
            let Some((before, after)) = line.split_once(" - ") else {
                continue;
            };
            let Some(mount) = before.split(' ').nth(4) else {
                continue;
            };
            let mut after = after.split(' ');
            let (Some(fstype), Some(_source), Some(options)) =
                (after.next(), after.next(), after.next())
            else {
                continue;
            };
            let mount = PathBuf::from(unescape_octal(mount));
            match fstype {
                "cgroup" => hierarchies.push(Hierarchy {
                    mount,
                    controllers: options
                        .split(',')
                        .filter(|option| !is_mount_flag(option))
                        .map(String::from)
                        .collect(),
                    unified: false,
                }),
                "cgroup2" => hierarchies.push(Hierarchy {
                    mount,
                    controllers: Vec::new(),
                    unified: true,
                }),
                _ => {}
            }
        }
        Self { hierarchies }
    }

    /// How many processes of `cgroup` (a path like `/swarm-n1/c1`) the kernel killed for
    /// lack of memory, or `None` when no hierarchy counts it.
    pub fn oom_kills(&self, cgroup: &str) -> Option<u64> {
        for hierarchy in &self.hierarchies {
            let dir = hierarchy.dir(cgroup);
            let (file, key) = if hierarchy.unified {
                (dir.join("memory.events"), "oom_kill")
            } else if hierarchy.controllers.iter().any(|c| c == "memory") {
                (dir.join("memory.oom_control"), "oom_kill")
            } else {
                continue;
            };
            if let Ok(text) = fs::read_to_string(file)
                && let Some(count) = counter(&text, key)
            {
                return Some(count);
            }
        }
        None
    }

    /// The directories `cgroup` has in the hierarchies.
    pub fn existing(&self, cgroup: &str) -> Vec<PathBuf> {
        self.hierarchies
            .iter()
            .map(|hierarchy| hierarchy.dir(cgroup))
            .filter(|dir| dir.is_dir())
            .collect()
    }

    /// Removes the directories of `cgroup` (without children, with no process left) from
    /// every hierarchy; what does not exist is fine.
    pub fn remove(&self, cgroup: &str) -> io::Result<()> {
        for dir in self.existing(cgroup) {
            match fs::remove_dir(&dir) {
                Err(error) if error.kind() != io::ErrorKind::NotFound => {
                    return Err(io::Error::new(
                        error.kind(),
                        format!("{}: {error}", dir.display()),
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

impl Hierarchy {
    fn dir(&self, cgroup: &str) -> PathBuf {
        self.mount.join(cgroup.trim_start_matches('/'))
    }
}

fn is_mount_flag(option: &str) -> bool {
    matches!(
        option,
        "rw" | "ro" | "nosuid" | "nodev" | "noexec" | "relatime" | "noatime" | "clone_children"
    ) || option.starts_with("release_agent=")
}

/// `KEY N` from a flat-keyed cgroup file.
fn counter(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(' ')?;
        (name == key).then(|| value.trim().parse().ok())?
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value = bytes[i + 1..i + 4]
                .iter()
                .fold(0u16, |value, digit| value * 8 + u16::from(digit - b'0'));
            out.push(value as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `path` is the mount point of anything in this mount namespace (for tests that
/// check nothing was left mounted).
pub fn mounts_under(path: &Path) -> io::Result<Vec<PathBuf>> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
    Ok(mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|mount| PathBuf::from(unescape_octal(mount)))
        .filter(|mount| mount.starts_with(path))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
32 31 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
33 31 0:28 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
36 31 0:31 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory
37 31 0:32 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,cpu,cpuacct
40 30 0:40 / /mnt/with\\040space rw - tmpfs tmpfs rw
";

    #[test]
    fn hierarchies_from_mountinfo() {
        let cgroups = Cgroups::from_mountinfo(HYBRID);
        let found: Vec<(&str, Vec<&str>, bool)> = cgroups
            .hierarchies
            .iter()
            .map(|h| {
                (
                    h.mount.to_str().unwrap(),
                    h.controllers.iter().map(String::as_str).collect(),
                    h.unified,
                )
            })
            .collect();
        assert_eq!(
            found,
            vec![
                ("/sys/fs/cgroup/unified", vec![], true),
                (
                    "/sys/fs/cgroup/systemd",
                    vec!["xattr", "name=systemd"],
                    false
                ),
                ("/sys/fs/cgroup/memory", vec!["memory"], false),
                ("/sys/fs/cgroup/cpu,cpuacct", vec!["cpu", "cpuacct"], false),
            ]
        );
    }

    #[test]
    fn counters_from_cgroup_files() {
        let cases = [
            ("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n", Some(2)),
            (
                "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\noom_group_kill 0\n",
                Some(1),
            ),
            ("oom_kill_disable 0\nunder_oom 0\n", None),
            ("oom_kill x\n", None),
        ];
        for (text, expected) in cases {
            assert_eq!(counter(text, "oom_kill"), expected, "{text:?}");
        }
    }

    #[test]
    fn octal_escapes() {
        let cases = [
            ("/mnt/with\\040space", "/mnt/with space"),
            ("/plain", "/plain"),
            ("/trailing\\04", "/trailing\\04"),
        ];
        for (escaped, plain) in cases {
            assert_eq!(unescape_octal(escaped), plain);
        }
    }
}
