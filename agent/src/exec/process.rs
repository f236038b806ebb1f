//! Seeing containers exit without a shim: the daemon is a child subreaper, so a container's
//! init becomes its child once runc exits, and a pidfd says when it ends. Other processes of
//! containers can end up its children too (a `runc exec` that died before its command): an
//! orphan reaper collects those, or a container's init, which waits for every process of its
//! PID namespace to be reaped before it can exit, would never end.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Once;
use std::time::Duration;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::runtime::Exit;

/// Makes this process the reaper of its orphaned descendants, so that a container's init
/// (orphaned when runc exits) is re-parented to it and its exit status readable.
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer argument and touches no
    // memory of ours.
    let result = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if result == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// How often the orphan reaper looks for processes to reap.
const REAP_PERIOD: Duration = Duration::from_millis(500);

/// Starts, once per process, a thread that reaps the zombies among this process's children
/// that are not a container's init but some other process of a container: their status
/// interests nobody, and a container's init cannot finish exiting while they stay.
pub fn start_orphan_reaper() {
    static STARTED: Once = Once::new();
    STARTED.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("orphan-reaper".into())
            .spawn(|| {
                loop {
                    reap_container_orphans();
                    std::thread::sleep(REAP_PERIOD);
                }
            });
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot start the orphan reaper");
        }
    });
}

/// Reaps the children that are zombies of containers' processes other than their inits;
/// returns how many.
pub fn reap_container_orphans() -> usize {
    let mut reaped = 0;
    for pid in children() {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        if is_container_orphan(&status) {
            // SAFETY: waitpid writes nothing through a null status pointer; the pid is a
            // zombie child of ours that no one else waits for.
            if unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) } == pid {
                reaped += 1;
            }
        }
    }
    reaped
}

/// This process's children: the `children` of each of its threads.
fn children() -> Vec<i32> {
    let Ok(threads) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    threads
        .flatten()
        .filter_map(|thread| std::fs::read_to_string(thread.path().join("children")).ok())
        .flat_map(|pids| {
            pids.split_whitespace()
                .filter_map(|pid| pid.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

/// Whether `/proc/PID/status` text describes a zombie in a nested PID namespace that is not
/// the namespace's init (pid 1 there): a container process other than its init. This
/// process never starts processes in other PID namespaces itself, so such a child came to
/// it as an orphan.
fn is_container_orphan(status: &str) -> bool {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(str::trim)
    };
    let zombie = field("State:").is_some_and(|state| state.starts_with('Z'));
    let pids: Vec<&str> = field("NSpid:")
        .map(|pids| pids.split_whitespace().collect())
        .unwrap_or_default();
    zombie && pids.len() >= 2 && pids.last() != Some(&"1")
}

/// A process handle that cannot be confused with a later process reusing the pid.
#[derive(Debug)]
pub struct PidFd {
    fd: OwnedFd,
}

impl PidFd {
    /// A handle on process `pid`, or `None` when no such process exists any more.
    pub fn open(pid: i32) -> io::Result<Option<Self>> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd == -1 {
            let error = io::Error::last_os_error();
            return match error.raw_os_error() {
                Some(libc::ESRCH) => Ok(None),
                _ => Err(error),
            };
        }
        // SAFETY: the syscall returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok(Some(Self { fd }))
    }

    /// Waits until the process has exited, then reaps it when it is our child. A process
    /// that is not our child (a container adopted after a restart) exits with
    /// `Exit::Unknown`: its status went to its parent.
    pub async fn exited(self) -> io::Result<Exit> {
        // SAFETY: the OwnedFd moves into the AsyncFd, which keeps it open and unchanged
        // until it is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(self.fd, Interest::READABLE) }?;
        // A pidfd becomes readable when the process exits, and stays so.
        let _ready = fd.readable().await?;
        reap(fd.get_ref())
    }
}

/// Collects the exit status of an exited process through its pidfd.
fn reap(fd: &OwnedFd) -> io::Result<Exit> {
    // SAFETY: siginfo_t is plain data; all zeros is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid writes into `info`, which lives for the call; the descriptor is open.
    let result = unsafe {
        libc::waitid(
            libc::P_PIDFD,
            fd.as_raw_fd() as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG,
        )
    };
    if result == -1 {
        let error = io::Error::last_os_error();
        return match error.raw_os_error() {
            Some(libc::ECHILD) => Ok(Exit::Unknown),
            _ => Err(error),
        };
    }
    // SAFETY: waitid filled `info` for a child state change (si_pid is 0 when it had
    // none, which the readable pidfd rules out for a child).
    let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
    if pid == 0 {
        return Ok(Exit::Unknown);
    }
    Ok(match info.si_code {
        libc::CLD_EXITED => Exit::Code(status),
        libc::CLD_KILLED | libc::CLD_DUMPED => Exit::Signal(status),
        _ => Exit::Unknown,
    })
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};
    use std::time::Duration;

    use super::*;

    #[test]
    fn only_zombies_of_nested_namespaces_other_than_their_init_are_orphans() {
        let status = |state: &str, nspid: &str| {
            format!("Name:\tsh\nState:\t{state}\nTgid:\t7\nNSpid:\t{nspid}\nPPid:\t1\n")
        };
        let cases = [
            (status("Z (zombie)", "17542\t4"), true),
            (status("Z (zombie)", "17542\t9\t4"), true),
            (status("Z (zombie)", "17524\t1"), false),
            (status("Z (zombie)", "17542"), false),
            (status("S (sleeping)", "17542\t4"), false),
            ("State:\tZ (zombie)\n".to_owned(), false),
        ];
        for (text, expected) in cases {
            assert_eq!(is_container_orphan(&text), expected, "{text}");
        }
    }

    async fn exit_of(pid: i32) -> Exit {
        let pidfd = PidFd::open(pid).unwrap().expect("the process exists");
        tokio::time::timeout(Duration::from_secs(10), pidfd.exited())
            .await
            .expect("exit within 10 s")
            .unwrap()
    }

    #[tokio::test]
    async fn child_exit_codes_and_signals() {
        let cases = [
            ("exit 0", Exit::Code(0)),
            ("exit 3", Exit::Code(3)),
            ("kill -9 $$", Exit::Signal(9)),
        ];
        for (script, expected) in cases {
            // The pidfd reaps the child, not std's Child.
            #[allow(clippy::zombie_processes)]
            let child = Command::new("sh").args(["-c", script]).spawn().unwrap();
            assert_eq!(exit_of(child.id() as i32).await, expected, "{script}");
        }
    }

    #[tokio::test]
    async fn a_process_not_our_child_exits_with_unknown_status() {
        // A grandchild: its parent (sh) stays alive and reaps it.
        let mut parent = Command::new("sh")
            .args(["-c", "sleep 0.3 & echo $!; wait"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(parent.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let grandchild: i32 = line.trim().parse().unwrap();
        assert_eq!(exit_of(grandchild).await, Exit::Unknown);
        assert!(parent.wait().unwrap().success());
    }

    #[test]
    fn a_gone_process_has_no_handle() {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        child.wait().unwrap();
        assert!(PidFd::open(pid).unwrap().is_none());
    }
}
