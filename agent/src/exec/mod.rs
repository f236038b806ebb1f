//! Running tasks: the container runtime and the per-task state machine.
//!
//! - `runtime`: the `Runtime` trait (the IO boundary, used as `Arc<dyn Runtime>`) and the
//!   types it speaks: `ContainerConfig` in, `ContainerInfo`, `ExitStatus`, `ExecOutput` out.
//! - `runc`: the implementation over runc, with `bundle` (config.json as Docker makes it),
//!   `process` (subreaper and pidfd exit watching), `cgroup` (OOM counters, cleanup) and
//!   `logs` (log files, rotation, reading back and following).
//! - `fake`: an in-memory runtime with scripted exits for simulations.
//! - `init`: swarm-init, the static init a task with `init: true` runs as PID 1.

pub mod bundle;
pub mod cgroup;
pub mod fake;
pub mod init;
pub mod lifecycle;
pub mod logs;
pub mod process;
pub mod runc;
pub mod runtime;

pub use fake::{FakeRuntime, Script};
pub use runc::{RuncConfig, RuncRuntime};
pub use runtime::{
    ContainerConfig, ContainerInfo, DataMount, ExecOutput, ExecRequest, Exit, ExitStatus,
    FileMount, LogConfig, ProcessOptions, Resources, Runtime, RuntimeError, Status, User,
};
