//! The runc runtime: one OCI bundle per container, `runc --root <node state dir>` for each
//! operation, and no shim. The daemon is a child subreaper: a container's init becomes its
//! child when `runc run --detach` exits, and a pidfd reports its exit. The container's
//! stdout and stderr are log files it appends to directly (see `logs`).

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use oci_spec::runtime::Spec;
use serde::Deserialize;
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::bundle;
use super::cgroup::Cgroups;
use super::logs::{self, LogWatch};
use super::process::{self, PidFd};
use super::runtime::{
    ContainerConfig, ContainerInfo, ExecOutput, ExecRequest, Exit, ExitStatus, LogConfig, Runtime,
    RuntimeError, Status, valid_id,
};

/// How long a container may take to die after SIGKILL before stop and delete give up.
const KILL_BOUND: Duration = Duration::from_secs(10);

/// How long exec output is still read after the command exited.
const OUTPUT_DRAIN: Duration = Duration::from_millis(500);

/// Where and as whom a node runs its containers.
#[derive(Debug, Clone)]
pub struct RuncConfig {
    /// The node's id: names its cgroup parent (`/swarm-<node id>`).
    pub node_id: String,
    /// runc's state directory (`runc --root`); one per node.
    pub state_dir: PathBuf,
    /// Where the bundles go, one directory per container.
    pub bundle_dir: PathBuf,
    /// The runc program.
    pub runc: PathBuf,
    /// How often log files are indexed (their lines' times) and checked for rotation.
    pub log_check_interval: Duration,
}

impl RuncConfig {
    /// The layout under a node's data directory: `runc/` for runc's state, `bundles/`.
    pub fn new(node_id: &str, data_dir: &Path) -> Self {
        Self {
            node_id: node_id.to_string(),
            state_dir: data_dir.join("runc"),
            bundle_dir: Self::bundle_dir_of(data_dir),
            runc: PathBuf::from("runc"),
            log_check_interval: Duration::from_secs(1),
        }
    }

    /// Where a node whose data directory is `data_dir` keeps its containers' bundles.
    pub fn bundle_dir_of(data_dir: &Path) -> PathBuf {
        data_dir.join("bundles")
    }

    /// Where the runc program is; a node without runc learns it here in those words, rather
    /// than as a spawn error at its first container.
    pub fn installed_runc(&self) -> Result<PathBuf, RuntimeError> {
        find_program(&self.runc)
    }
}

/// Drives containers with runc. Cheap to clone; clones share their containers.
#[derive(Clone)]
pub struct RuncRuntime {
    shared: Arc<Shared>,
}

struct Shared {
    config: RuncConfig,
    cgroups: Cgroups,
    tracked: Mutex<HashMap<String, Arc<Tracked>>>,
    exec_sequence: AtomicU64,
    /// The daemon's own hard open-file limit, the most a container can be given.
    nofile_hard: u64,
    /// Whether runc, the daemon's child, may give a container a lower out-of-memory score
    /// than the daemon's own.
    may_lower_oom_scores: bool,
}

/// A container this runtime watches: its exit, once seen, and the tasks watching it.
struct Tracked {
    exit: watch::Receiver<Option<ExitStatus>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Where `program` is: itself when it names a path, else the first executable of that name
/// in `PATH` (as `Command` looks it up).
pub(crate) fn find_program(program: &Path) -> Result<PathBuf, RuntimeError> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |path: &Path| {
        fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let bare = program.components().count() == 1 && !program.has_root();
    let found = if bare {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|candidate| executable(candidate))
    } else {
        Some(program.to_path_buf()).filter(|path| executable(path))
    };
    found.ok_or_else(|| RuntimeError::ProgramNotFound {
        program: program.to_path_buf(),
        searched_path: bare,
    })
}

/// A container as `runc state` and `runc list` print it.
#[derive(Debug, Deserialize)]
struct RuncState {
    id: String,
    pid: i32,
    status: String,
    #[serde(default)]
    annotations: Option<HashMap<String, String>>,
}

impl RuncState {
    fn info(&self) -> Result<ContainerInfo, RuntimeError> {
        let status = match self.status.as_str() {
            "creating" => Status::Creating,
            "created" => Status::Created,
            "running" => Status::Running,
            "paused" => Status::Paused,
            "stopped" => Status::Stopped,
            other => {
                return Err(RuntimeError::RuncOutput {
                    command: "state",
                    id: self.id.clone(),
                    detail: format!("unknown status {other:?}"),
                });
            }
        };
        Ok(ContainerInfo {
            id: self.id.clone(),
            status,
            pid: (status != Status::Stopped && self.pid > 0).then_some(self.pid),
        })
    }
}

impl RuncRuntime {
    /// Makes the directories and this process a child subreaper (process-wide: the daemon
    /// reaps every orphan of its descendants from now on: container inits through their
    /// pidfds, other container processes through the orphan reaper).
    pub fn new(config: RuncConfig) -> Result<Self, RuntimeError> {
        let setup = |what: &str, error: io::Error| RuntimeError::Setup {
            detail: format!("{what}: {error}"),
        };
        for dir in [&config.state_dir, &config.bundle_dir] {
            fs::create_dir_all(dir)
                .map_err(|error| setup(&format!("creating {}", dir.display()), error))?;
        }
        process::become_subreaper().map_err(|error| setup("becoming a child subreaper", error))?;
        process::start_orphan_reaper();
        let cgroups =
            Cgroups::detect().map_err(|error| setup("reading /proc/self/mountinfo", error))?;
        if !valid_id(&config.node_id) {
            return Err(RuntimeError::Setup {
                detail: format!("node id {:?} cannot name a cgroup", config.node_id),
            });
        }
        Ok(Self {
            shared: Arc::new(Shared {
                config,
                cgroups,
                tracked: Mutex::new(HashMap::new()),
                exec_sequence: AtomicU64::new(0),
                nofile_hard: nofile_hard_limit()
                    .map_err(|error| setup("reading the open-file limit", error))?,
                may_lower_oom_scores: may_lower_oom_scores(
                    &std::fs::read_to_string("/proc/self/status")
                        .map_err(|error| setup("reading /proc/self/status", error))?,
                    &std::fs::read_to_string("/proc/self/uid_map")
                        .map_err(|error| setup("reading /proc/self/uid_map", error))?,
                ),
            }),
        })
    }

    pub fn config(&self) -> &RuncConfig {
        &self.shared.config
    }

    /// The config.json this runtime writes for `config`.
    pub fn bundle_spec(&self, config: &ContainerConfig) -> Result<Spec, RuntimeError> {
        bundle::spec(
            config,
            &self.cgroups_path(&config.id),
            self.daemon_limits()?,
        )
    }

    /// What the daemon may give a container now: its open-file limit, and the lowest
    /// out-of-memory score (read at each start: the daemon's own may have changed since).
    pub fn daemon_limits(&self) -> Result<bundle::DaemonLimits, RuntimeError> {
        Ok(bundle::DaemonLimits {
            nofile_hard: self.shared.nofile_hard,
            oom_score_adj_floor: if self.shared.may_lower_oom_scores {
                -1000
            } else {
                own_oom_score_adj().map_err(|error| RuntimeError::Setup {
                    detail: format!("reading /proc/self/oom_score_adj: {error}"),
                })?
            },
        })
    }

    /// The cgroup path of a container of this node.
    pub fn cgroups_path(&self, id: &str) -> String {
        bundle::cgroups_path(&self.shared.config.node_id, id)
    }

    /// The cgroup directories left for container `id` (none once it is deleted).
    pub fn cgroup_dirs(&self, id: &str) -> Vec<PathBuf> {
        self.shared.cgroups.existing(&self.cgroups_path(id))
    }

    /// Removes the node's cgroup parent, once its containers are deleted (when the node
    /// leaves, or a test ends).
    pub fn remove_node_cgroups(&self) -> Result<(), RuntimeError> {
        let node = bundle::node_cgroup(&self.shared.config.node_id);
        self.shared
            .cgroups
            .remove(&node)
            .map_err(|source| RuntimeError::NodeCgroup {
                node: self.shared.config.node_id.clone(),
                source,
            })
    }

    /// The node cgroup's directories (none once `remove_node_cgroups` ran).
    pub fn node_cgroup_dirs(&self) -> Vec<PathBuf> {
        self.shared
            .cgroups
            .existing(&bundle::node_cgroup(&self.shared.config.node_id))
    }

    fn bundle_path(&self, id: &str) -> PathBuf {
        self.shared.config.bundle_dir.join(id)
    }

    fn check_id(id: &str) -> Result<(), RuntimeError> {
        if valid_id(id) {
            Ok(())
        } else {
            Err(RuntimeError::InvalidId { id: id.to_string() })
        }
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.shared.config.runc);
        command
            .arg("--root")
            .arg(&self.shared.config.state_dir)
            .arg("--log-format")
            .arg("json")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// Runs `runc <args>` and returns its stdout; a failure carries runc's messages.
    async fn runc(
        &self,
        command: &'static str,
        id: &str,
        args: &[OsString],
    ) -> Result<Vec<u8>, RuntimeError> {
        let output = self
            .command()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await
            .map_err(|source| self.spawn_error(id, source))?;
        if output.status.success() {
            return Ok(output.stdout);
        }
        Err(runc_error(
            command,
            id,
            &runc_messages(&String::from_utf8_lossy(&output.stderr)),
        ))
    }

    fn spawn_error(&self, id: &str, source: io::Error) -> RuntimeError {
        RuntimeError::Spawn {
            program: self.shared.config.runc.clone(),
            id: id.to_string(),
            source,
        }
    }

    async fn runc_state(&self, id: &str) -> Result<RuncState, RuntimeError> {
        let stdout = self.runc("state", id, &["state".into(), id.into()]).await?;
        serde_json::from_slice(&stdout).map_err(|error| RuntimeError::RuncOutput {
            command: "state",
            id: id.to_string(),
            detail: error.to_string(),
        })
    }

    /// `runc run --detach` (create and start in one runc process: a second process, `runc
    /// start`, cost 15 ms more) with the log files as the container's stdio; returns the
    /// init's pid. The init may have exited already: as our child it stays a zombie until
    /// the pidfd reaps it, so the pid is still its own.
    async fn run_detached(
        &self,
        config: &ContainerConfig,
        bundle: &Path,
    ) -> Result<i32, RuntimeError> {
        let id = &config.id;
        let io_error = |what: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| RuntimeError::Io {
                what,
                id: id.clone(),
                path,
                source,
            }
        };
        let spec = self.bundle_spec(config)?;
        let config_path = bundle.join("config.json");
        let json = serde_json::to_vec_pretty(&spec).map_err(|error| RuntimeError::Config {
            id: id.clone(),
            detail: error.to_string(),
        })?;
        fs::write(&config_path, json).map_err(io_error("writing the bundle", &config_path))?;
        let stdout = logs::open_for_append(&config.logs.stdout)
            .map_err(io_error("opening the stdout log", &config.logs.stdout))?;
        let stderr = logs::open_for_append(&config.logs.stderr)
            .map_err(io_error("opening the stderr log", &config.logs.stderr))?;
        // runc's stderr is the container's: a failure's messages are what runc appended
        // there. (runc's --log would keep them apart, but it opens the file O_SYNC, which
        // cost 6 ms per start here.)
        let stderr_start = stderr
            .metadata()
            .map_err(io_error("reading the stderr log", &config.logs.stderr))?
            .len();
        let pid_file = bundle.join("init.pid");
        let status = self
            .command()
            .arg("run")
            .arg("--detach")
            .arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(id)
            .stdout(stdout)
            .stderr(stderr)
            .status()
            .await
            .map_err(|source| self.spawn_error(id, source))?;
        if !status.success() {
            let printed = logs::read_from(&config.logs.stderr, stderr_start)
                .map_err(io_error("reading the stderr log", &config.logs.stderr))?;
            return Err(runc_error(
                "run",
                id,
                &runc_messages(&String::from_utf8_lossy(&printed)),
            ));
        }
        let pid =
            fs::read_to_string(&pid_file).map_err(io_error("reading the pid file", &pid_file))?;
        pid.trim().parse().map_err(|_| RuntimeError::RuncOutput {
            command: "run",
            id: id.clone(),
            detail: format!("pid file {} holds {pid:?}", pid_file.display()),
        })
    }

    /// The tracked container `id`, adopting it (watching its init) when this runtime did
    /// not start it, as after a daemon restart.
    async fn tracked(&self, id: &str) -> Result<Arc<Tracked>, RuntimeError> {
        Self::check_id(id)?;
        if let Some(tracked) = self.shared.tracked.lock().unwrap().get(id) {
            return Ok(tracked.clone());
        }
        let state = self.runc_state(id).await?;
        let info = state.info()?;
        let pidfd = match info.pid {
            Some(pid) => PidFd::open(pid).map_err(|source| RuntimeError::Io {
                what: "opening a pidfd",
                id: id.to_string(),
                path: PathBuf::from(format!("/proc/{pid}")),
                source,
            })?,
            None => None,
        };
        // runc checks the pid's start time; asking again after pidfd_open proves that the
        // pidfd is the container's init and not a process that reused its pid.
        let pidfd = match pidfd {
            Some(pidfd) if self.runc_state(id).await?.info()?.pid == info.pid => Some(pidfd),
            _ => None,
        };
        let logs = state
            .annotations
            .as_ref()
            .and_then(bundle::log_config_from_annotations);
        let tracked = self.watch(id, pidfd, logs);
        let mut map = self.shared.tracked.lock().unwrap();
        Ok(map.entry(id.to_string()).or_insert(tracked).clone())
    }

    /// Starts watching a container: its exit (through `pidfd`; without one it has already
    /// exited) and its log sizes.
    fn watch(&self, id: &str, pidfd: Option<PidFd>, logs: Option<LogConfig>) -> Arc<Tracked> {
        let (sender, receiver) = watch::channel(None);
        let cgroups = self.shared.cgroups.clone();
        let cgroup = self.cgroups_path(id);
        let container = id.to_string();
        let monitor = tokio::spawn(async move {
            let exit = match pidfd {
                Some(pidfd) => pidfd.exited().await.unwrap_or_else(|error| {
                    tracing::warn!(container, %error, "cannot read the exit status");
                    Exit::Unknown
                }),
                None => Exit::Unknown,
            };
            // Read before the cgroup is deleted: delete waits for this.
            let oom_killed = cgroups.oom_kills(&cgroup).is_some_and(|kills| kills > 0);
            let _ = sender.send(Some(ExitStatus { exit, oom_killed }));
        });
        let mut tasks = vec![monitor];
        if let Some(logs) = logs {
            let interval = self.shared.config.log_check_interval;
            let container = id.to_string();
            tasks.push(tokio::spawn(async move {
                let mut paths = vec![logs.stdout.clone()];
                if logs.stderr != logs.stdout {
                    paths.push(logs.stderr.clone());
                }
                let mut watches = Vec::new();
                for path in paths {
                    match LogWatch::new(&path, logs.max_bytes, logs.max_files) {
                        Ok(watch) => watches.push(watch),
                        Err(error) => tracing::warn!(container, path = %path.display(),
                            %error, "cannot watch the log"),
                    }
                }
                loop {
                    for watch in &mut watches {
                        if let Err(error) = watch.look(SystemTime::now()) {
                            tracing::warn!(container, ?watch, %error,
                                "cannot index or rotate the log");
                        }
                    }
                    tokio::time::sleep(interval).await;
                }
            }));
        }
        Arc::new(Tracked {
            exit: receiver,
            tasks,
        })
    }

    async fn exit_of(&self, id: &str, tracked: &Tracked) -> Result<ExitStatus, RuntimeError> {
        let mut exit = tracked.exit.clone();
        let status = exit
            .wait_for(Option::is_some)
            .await
            .map_err(|_| RuntimeError::NotFound { id: id.to_string() })?;
        Ok(status.expect("waited for Some"))
    }

    async fn exit_within(
        &self,
        id: &str,
        tracked: &Tracked,
        limit: Duration,
    ) -> Result<Option<ExitStatus>, RuntimeError> {
        match tokio::time::timeout(limit, self.exit_of(id, tracked)).await {
            Ok(result) => result.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// Sends a signal; a container that is no longer running is not an error here.
    async fn signal_if_running(&self, id: &str, signal: i32) -> Result<(), RuntimeError> {
        match self.kill(id, signal).await {
            Err(RuntimeError::NotRunning { .. }) => Ok(()),
            other => other,
        }
    }

    /// Removes what `start` made when it fails half-way.
    async fn discard(&self, id: &str) {
        if let Err(error) = self.delete(id).await {
            tracing::warn!(container = id, %error, "cannot clean up after a failed start");
            // At least free the id: the bundle directory claims it.
            let _ = fs::remove_dir_all(self.bundle_path(id));
        }
    }

    async fn run_exec(&self, id: &str, request: &ExecRequest) -> Result<ExecOutput, RuntimeError> {
        let bundle = self.bundle_path(id);
        // runc's log for this exec goes into the bundle: without one there is no container.
        if !bundle.is_dir() {
            return Err(RuntimeError::NotFound { id: id.to_string() });
        }
        let sequence = self.shared.exec_sequence.fetch_add(1, Ordering::Relaxed);
        let pid_file = bundle.join(format!("exec-{sequence}.pid"));
        let runc_log = bundle.join(format!("exec-{sequence}.log"));
        let _cleanup = RemoveOnDrop(vec![pid_file.clone(), runc_log.clone()]);
        let (writer, reader) =
            tokio::net::unix::pipe::pipe().map_err(|source| RuntimeError::Io {
                what: "making a pipe for exec output",
                id: id.to_string(),
                path: bundle.clone(),
                source,
            })?;
        let writer = writer
            .into_blocking_fd()
            .map_err(|source| RuntimeError::Io {
                what: "making a pipe for exec output",
                id: id.to_string(),
                path: bundle.clone(),
                source,
            })?;
        let writer_too = writer.try_clone().map_err(|source| RuntimeError::Io {
            what: "making a pipe for exec output",
            id: id.to_string(),
            path: bundle.clone(),
            source,
        })?;
        let mut child = self
            .command()
            .arg("--log")
            .arg(&runc_log)
            .arg("exec")
            .arg("--pid-file")
            .arg(&pid_file)
            // Flags end here, so neither the id nor the command is read as one of runc's.
            .arg("--")
            .arg(id)
            .args(&request.args)
            .stdout(Stdio::from(writer))
            .stderr(Stdio::from(writer_too))
            .spawn()
            .map_err(|source| self.spawn_error(id, source))?;
        // The Command (and its write ends) was dropped with the statement: the output ends
        // when runc and the command have both closed theirs.
        let output = Arc::new(Mutex::new(BoundedOutput::new(request.max_output)));
        let collector = tokio::spawn(collect_output(reader, output.clone()));
        let status = match tokio::time::timeout(request.timeout, child.wait()).await {
            Ok(status) => status.map_err(|source| self.spawn_error(id, source))?,
            Err(_) => {
                // runc exec forwards no SIGKILL: kill the command itself, then runc.
                if let Some(pid) = fs::read_to_string(&pid_file)
                    .ok()
                    .and_then(|pid| pid.trim().parse::<i32>().ok())
                {
                    // SAFETY: kill has no memory effects; the pid is the exec'd process,
                    // which runc (still running, its parent) has not reaped.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                if tokio::time::timeout(KILL_BOUND, child.wait())
                    .await
                    .is_err()
                {
                    let _ = child.start_kill();
                }
                collector.abort();
                let output = output.lock().unwrap().take();
                return Ok(ExecOutput {
                    exit_code: None,
                    output: output.kept,
                    truncated: output.truncated,
                });
            }
        };
        // runc copies the command's output through pipes of its own and exits once they
        // close (a background process the command left holding them keeps runc, and so
        // the check, running until the timeout). Its exit closes our pipe; the bound is a
        // safety net.
        if tokio::time::timeout(OUTPUT_DRAIN, &mut Box::pin(collector))
            .await
            .is_err()
        {
            tracing::debug!(
                container = id,
                "exec output still open after the command exited"
            );
        }
        let output = output.lock().unwrap().take();
        let log = fs::read_to_string(&runc_log).unwrap_or_default();
        let messages = runc_messages(&log);
        if !messages.is_empty() {
            return Err(runc_error("exec", id, &messages));
        }
        Ok(ExecOutput {
            exit_code: status
                .code()
                .or_else(|| status.signal().map(|signal| 128 + signal)),
            output: output.kept,
            truncated: output.truncated,
        })
    }
}

/// Whether the daemon may lower a process's out-of-memory score: CAP_SYS_RESOURCE in its
/// effective set (`status`), held in the host's user namespace (`uid_map` the identity),
/// where the kernel checks it; in a container's user namespace the bit says nothing.
fn may_lower_oom_scores(status: &str, uid_map: &str) -> bool {
    const CAP_SYS_RESOURCE: u32 = 24;
    let capable = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << CAP_SYS_RESOURCE) != 0);
    let host_namespace = uid_map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"];
    capable && host_namespace
}

/// The daemon's own out-of-memory score adjustment.
fn own_oom_score_adj() -> io::Result<i32> {
    std::fs::read_to_string("/proc/self/oom_score_adj")?
        .trim()
        .parse()
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))
}

fn nofile_hard_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into `limit`, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(limit.rlim_max)
}

/// Output kept up to a size; what comes after is counted as truncated and dropped.
struct BoundedOutput {
    kept: Vec<u8>,
    truncated: bool,
    limit: usize,
}

impl BoundedOutput {
    fn new(limit: usize) -> Self {
        Self {
            kept: Vec::new(),
            truncated: false,
            limit,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        let room = self.limit.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
        self.truncated |= bytes.len() > room;
    }

    fn take(&mut self) -> Self {
        std::mem::replace(self, Self::new(self.limit))
    }
}

/// Reads `reader` to its end into `output`.
async fn collect_output(
    mut reader: tokio::net::unix::pipe::Receiver,
    output: Arc<Mutex<BoundedOutput>>,
) {
    let mut buffer = [0u8; 4096];
    while let Ok(read @ 1..) = reader.read(&mut buffer).await {
        output.lock().unwrap().push(&buffer[..read]);
    }
}

/// Removes files when dropped.
struct RemoveOnDrop(Vec<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = fs::remove_file(path);
        }
    }
}

/// The messages in runc's output: the `msg` of each JSON log line (`--log-format json`),
/// other lines as they are.
fn runc_messages(output: &str) -> String {
    #[derive(Deserialize)]
    struct Line {
        level: String,
        msg: String,
    }
    output
        .lines()
        .filter(|line| !line.trim().is_empty())
        .filter_map(|line| match serde_json::from_str::<Line>(line) {
            Ok(line) => {
                matches!(line.level.as_str(), "error" | "fatal" | "panic").then_some(line.msg)
            }
            Err(_) => Some(line.trim().to_string()),
        })
        .fold(Vec::<String>::new(), |mut messages, message| {
            // runc prints a fatal error both as a log line and as plain text.
            if !messages.contains(&message) {
                messages.push(message);
            }
            messages
        })
        .join("; ")
}

/// runc's failure as the error the caller can act on.
fn runc_error(command: &'static str, id: &str, messages: &str) -> RuntimeError {
    let id = id.to_string();
    if messages.contains("container does not exist") {
        RuntimeError::NotFound { id }
    } else if messages.contains("container not running")
        || messages.contains("container is not running")
        || messages.contains("process already finished")
        || messages.contains("cannot exec in a stopped container")
    {
        RuntimeError::NotRunning { id }
    } else if messages.contains("already exists") {
        RuntimeError::AlreadyExists { id }
    } else {
        RuntimeError::Runc {
            command,
            id,
            stderr: if messages.is_empty() {
                "(runc printed nothing)".to_string()
            } else {
                messages.to_string()
            },
        }
    }
}

#[async_trait]
impl Runtime for RuncRuntime {
    async fn start(&self, config: &ContainerConfig) -> Result<(), RuntimeError> {
        let id = &config.id;
        Self::check_id(id)?;
        let bundle = self.bundle_path(id);
        // The bundle directory is the claim on the id: creating it fails if it is taken.
        match fs::create_dir(&bundle) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                return Err(RuntimeError::AlreadyExists { id: id.clone() });
            }
            Err(source) => {
                return Err(RuntimeError::Io {
                    what: "creating the bundle",
                    id: id.clone(),
                    path: bundle,
                    source,
                });
            }
        }
        let pid = match self.run_detached(config, &bundle).await {
            Ok(pid) => pid,
            Err(error) => {
                self.discard(id).await;
                return Err(error);
            }
        };
        let pidfd = match PidFd::open(pid) {
            Ok(pidfd) => pidfd,
            Err(source) => {
                self.discard(id).await;
                return Err(RuntimeError::Io {
                    what: "opening a pidfd",
                    id: id.clone(),
                    path: PathBuf::from(format!("/proc/{pid}")),
                    source,
                });
            }
        };
        let tracked = self.watch(id, pidfd, Some(config.logs.clone()));
        self.shared
            .tracked
            .lock()
            .unwrap()
            .insert(id.clone(), tracked);
        Ok(())
    }

    async fn state(&self, id: &str) -> Result<ContainerInfo, RuntimeError> {
        Self::check_id(id)?;
        self.runc_state(id).await?.info()
    }

    async fn wait(&self, id: &str) -> Result<ExitStatus, RuntimeError> {
        let tracked = self.tracked(id).await?;
        self.exit_of(id, &tracked).await
    }

    async fn kill(&self, id: &str, signal: i32) -> Result<(), RuntimeError> {
        Self::check_id(id)?;
        self.runc(
            "kill",
            id,
            &["kill".into(), id.into(), signal.to_string().into()],
        )
        .await
        .map(drop)
    }

    async fn stop(
        &self,
        id: &str,
        signal: i32,
        grace: Duration,
    ) -> Result<ExitStatus, RuntimeError> {
        let tracked = self.tracked(id).await?;
        if let Some(status) = *tracked.exit.borrow() {
            return Ok(status);
        }
        self.signal_if_running(id, signal).await?;
        if let Some(status) = self.exit_within(id, &tracked, grace).await? {
            return Ok(status);
        }
        self.signal_if_running(id, libc::SIGKILL).await?;
        self.exit_within(id, &tracked, KILL_BOUND)
            .await?
            .ok_or(RuntimeError::StopTimeout {
                id: id.to_string(),
                after: KILL_BOUND,
            })
    }

    async fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        Self::check_id(id)?;
        match self.tracked(id).await {
            Ok(tracked) => {
                if tracked.exit.borrow().is_none() {
                    self.signal_if_running(id, libc::SIGKILL).await?;
                }
                // The exit (and the OOM counter) must be read before the cgroup goes.
                if self.exit_within(id, &tracked, KILL_BOUND).await?.is_none() {
                    return Err(RuntimeError::StopTimeout {
                        id: id.to_string(),
                        after: KILL_BOUND,
                    });
                }
                match self
                    .runc(
                        "delete",
                        id,
                        &["delete".into(), "--force".into(), id.into()],
                    )
                    .await
                {
                    Ok(_) | Err(RuntimeError::NotFound { .. }) => {}
                    Err(error) => return Err(error),
                }
            }
            Err(RuntimeError::NotFound { .. }) => {}
            Err(error) => return Err(error),
        }
        self.shared.tracked.lock().unwrap().remove(id);
        let bundle = self.bundle_path(id);
        match fs::remove_dir_all(&bundle) {
            Err(source) if source.kind() != io::ErrorKind::NotFound => {
                return Err(RuntimeError::Io {
                    what: "removing the bundle",
                    id: id.to_string(),
                    path: bundle,
                    source,
                });
            }
            _ => {}
        }
        // runc removes the cgroup; this catches what a failed create may leave.
        let cgroup = self.cgroups_path(id);
        self.shared
            .cgroups
            .remove(&cgroup)
            .map_err(|source| RuntimeError::Io {
                what: "removing the cgroup",
                id: id.to_string(),
                path: PathBuf::from(cgroup),
                source,
            })
    }

    async fn exec(&self, id: &str, request: &ExecRequest) -> Result<ExecOutput, RuntimeError> {
        Self::check_id(id)?;
        self.run_exec(id, request).await
    }

    async fn list(&self) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let failed = |detail: String| RuntimeError::List {
            state_dir: self.shared.config.state_dir.clone(),
            detail,
        };
        let stdout = self
            .runc(
                "list",
                "(all)",
                &["list".into(), "--format".into(), "json".into()],
            )
            .await
            .map_err(|error| match error {
                RuntimeError::Runc { stderr, .. } => failed(stderr),
                other => other,
            })?;
        // runc prints `null` when there are none.
        let states: Option<Vec<RuncState>> =
            serde_json::from_slice(&stdout).map_err(|error| failed(error.to_string()))?;
        states
            .unwrap_or_default()
            .iter()
            .map(RuncState::info)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_sys_resource_is_read_from_the_effective_set_in_the_host_namespace() {
        let status = |cap_eff: &str| {
            format!("Name:\tswarm\nCapPrm:\t000001ffffffffff\nCapEff:\t{cap_eff}\n")
        };
        let host = "         0          0 4294967295\n";
        assert!(may_lower_oom_scores(&status("000001ffffffffff"), host));
        assert!(may_lower_oom_scores(&status("0000000001000000"), host));
        assert!(!may_lower_oom_scores(&status("000001fffeffffff"), host));
        assert!(!may_lower_oom_scores(&status("0000000000000000"), host));
        assert!(!may_lower_oom_scores("Name:\tswarm\n", host));
        // Root of a container's user namespace: its capabilities are not the host's.
        let mapped = "         0     100000      65536\n";
        assert!(!may_lower_oom_scores(&status("000001ffffffffff"), mapped));
    }

    #[test]
    fn runc_is_found_by_path_or_in_path() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mut config = RuncConfig::new("n1", dir.path());
        config.runc = dir.path().join("runc");
        let error = config.installed_runc().unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("{} not found", config.runc.display())
        );
        fs::write(&config.runc, "#!/bin/sh\n").unwrap();
        assert!(config.installed_runc().is_err(), "not executable");
        fs::set_permissions(&config.runc, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(config.installed_runc().unwrap(), config.runc);

        let error = find_program(Path::new("no-such-runc-anywhere")).unwrap_err();
        assert_eq!(error.to_string(), "no-such-runc-anywhere not found in PATH");
        assert!(find_program(Path::new("sh")).is_ok());
    }

    #[tokio::test]
    async fn a_missing_runc_is_named_and_leaves_no_bundle() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = RuncConfig::new("n1", dir.path());
        config.runc = dir.path().join("no-runc-here");
        let runtime = RuncRuntime::new(config).unwrap();
        let container = ContainerConfig {
            id: "c1".into(),
            rootfs: dir.path().join("rootfs"),
            args: vec!["true".into()],
            env: vec![],
            cwd: "/".into(),
            user: Default::default(),
            hostname: "c1".into(),
            netns: None,
            files: vec![],
            mounts: vec![],
            options: Default::default(),
            resources: Default::default(),
            logs: LogConfig {
                stdout: dir.path().join("logs/c1.out"),
                stderr: dir.path().join("logs/c1.err"),
                max_bytes: 1 << 20,
                max_files: 2,
            },
        };
        let error = runtime.start(&container).await.unwrap_err();
        assert!(matches!(error, RuntimeError::Spawn { .. }), "{error}");
        let message = error.to_string();
        assert!(
            message.contains("no-runc-here") && message.contains("c1"),
            "{message}"
        );
        assert_eq!(
            fs::read_dir(&runtime.config().bundle_dir).unwrap().count(),
            0
        );
    }

    #[test]
    fn runc_messages_from_json_and_text() {
        let cases = [
            (
                r#"{"level":"error","msg":"container does not exist","time":"2026-12-01T16:38:42Z"}"#,
                "container does not exist",
            ),
            (
                "{\"level\":\"warning\",\"msg\":\"noise\",\"time\":\"t\"}\n{\"level\":\"error\",\"msg\":\"runc create failed: exec: \\\"nosuch\\\": executable file not found in $PATH\",\"time\":\"t\"}\n",
                "runc create failed: exec: \"nosuch\": executable file not found in $PATH",
            ),
            ("plain failure\n\n", "plain failure"),
            (
                "{\"level\":\"error\",\"msg\":\"twice\",\"time\":\"t\"}\ntwice\n",
                "twice",
            ),
            ("", ""),
        ];
        for (output, expected) in cases {
            assert_eq!(runc_messages(output), expected, "{output:?}");
        }
    }

    #[test]
    fn runc_errors_classified() {
        let cases = [
            ("container does not exist", "NotFound"),
            ("cannot kill container: container not running", "NotRunning"),
            (
                "exec failed: cannot exec in a stopped container",
                "NotRunning",
            ),
            ("container with id exists: x", "Runc"),
            ("container x already exists", "AlreadyExists"),
            ("", "Runc"),
        ];
        for (messages, kind) in cases {
            let error = runc_error("kill", "c1", messages);
            assert!(
                format!("{error:?}").starts_with(kind),
                "{messages:?} → {error:?}"
            );
            assert!(error.to_string().contains("c1"), "{error}");
        }
    }

    #[test]
    fn output_bounded() {
        type Case<'a> = (&'a [&'a [u8]], &'a [u8], bool);
        let cases: [Case; 4] = [
            (&[b"ok\n"], b"ok\n", false),
            (&[b"0123", b"4567"], b"01234", true),
            (&[b"01234", b""], b"01234", false),
            (&[b"01234", b"5"], b"01234", true),
        ];
        for (pushes, kept, truncated) in cases {
            let mut output = BoundedOutput::new(5);
            for bytes in pushes {
                output.push(bytes);
            }
            let taken = output.take();
            assert_eq!((&taken.kept[..], taken.truncated), (kept, truncated));
            assert!(output.kept.is_empty() && !output.truncated);
        }
    }

    #[test]
    fn runc_state_statuses() {
        let cases = [
            (
                r#"{"id":"c","pid":42,"status":"running"}"#,
                Status::Running,
                Some(42),
            ),
            (
                r#"{"id":"c","pid":42,"status":"created"}"#,
                Status::Created,
                Some(42),
            ),
            (
                r#"{"id":"c","pid":0,"status":"stopped"}"#,
                Status::Stopped,
                None,
            ),
            (
                r#"{"id":"c","pid":42,"status":"stopped"}"#,
                Status::Stopped,
                None,
            ),
        ];
        for (json, status, pid) in cases {
            let state: RuncState = serde_json::from_str(json).unwrap();
            let info = state.info().unwrap();
            assert_eq!((info.status, info.pid), (status, pid), "{json}");
        }
        let odd: RuncState = serde_json::from_str(r#"{"id":"c","pid":1,"status":"odd"}"#).unwrap();
        assert!(odd.info().is_err());
    }
}
