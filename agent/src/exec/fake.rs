//! A runtime in memory for simulation tests: containers are records, exits are scripted or
//! triggered by the test, time is tokio's (pause it for deterministic runs). No IO.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use super::runtime::{
    ContainerConfig, ContainerInfo, ExecOutput, ExecRequest, Exit, ExitStatus, Runtime,
    RuntimeError, Status, valid_id,
};

/// How a fake container behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// `start` fails with this message.
    pub start_error: Option<String>,
    /// The container exits by itself after this long.
    pub exit_after: Option<(Duration, ExitStatus)>,
    /// Signals other than SIGKILL are ignored (as by a program with no handler).
    pub ignore_signals: bool,
    /// What `exec` answers.
    pub exec_exit_code: i32,
}

impl Default for Script {
    /// Runs until signalled, dies of any signal, answers exec with 0.
    fn default() -> Self {
        Self {
            start_error: None,
            exit_after: None,
            ignore_signals: false,
            exec_exit_code: 0,
        }
    }
}

type Scripter = dyn Fn(&ContainerConfig) -> Script + Send + Sync;

/// The fake runtime. Cheap to clone; clones share their containers.
#[derive(Clone)]
pub struct FakeRuntime {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    scripter: Arc<Scripter>,
    containers: HashMap<String, Container>,
    /// Every id started, in order (a deleted container stays here).
    started: Vec<String>,
}

struct Container {
    script: Script,
    exit: watch::Sender<Option<ExitStatus>>,
}

impl Default for FakeRuntime {
    fn default() -> Self {
        Self::new(|_| Script::default())
    }
}

impl FakeRuntime {
    /// A runtime whose containers follow the script `scripter` gives each configuration.
    pub fn new(scripter: impl Fn(&ContainerConfig) -> Script + Send + Sync + 'static) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                scripter: Arc::new(scripter),
                containers: HashMap::new(),
                started: Vec::new(),
            })),
        }
    }

    /// Ends container `id` as if its process had exited; false if it is not running.
    pub fn exit(&self, id: &str, status: ExitStatus) -> bool {
        let inner = self.inner.lock().unwrap();
        inner
            .containers
            .get(id)
            .is_some_and(|container| end(&container.exit, status))
    }

    /// The ids started so far, in order.
    pub fn started(&self) -> Vec<String> {
        self.inner.lock().unwrap().started.clone()
    }

    fn with_container<T>(
        &self,
        id: &str,
        action: impl FnOnce(&Container) -> T,
    ) -> Result<T, RuntimeError> {
        let inner = self.inner.lock().unwrap();
        let container = inner
            .containers
            .get(id)
            .ok_or_else(|| RuntimeError::NotFound { id: id.to_string() })?;
        Ok(action(container))
    }

    fn exit_receiver(&self, id: &str) -> Result<watch::Receiver<Option<ExitStatus>>, RuntimeError> {
        self.with_container(id, |container| container.exit.subscribe())
    }
}

/// Records the exit unless there already is one; says whether it did.
fn end(exit: &watch::Sender<Option<ExitStatus>>, status: ExitStatus) -> bool {
    exit.send_if_modified(|current| {
        if current.is_some() {
            return false;
        }
        *current = Some(status);
        true
    })
}

async fn exited(
    id: &str,
    mut receiver: watch::Receiver<Option<ExitStatus>>,
) -> Result<ExitStatus, RuntimeError> {
    let status = receiver
        .wait_for(Option::is_some)
        .await
        .map_err(|_| RuntimeError::NotFound { id: id.to_string() })?;
    Ok(status.expect("waited for Some"))
}

#[async_trait]
impl Runtime for FakeRuntime {
    async fn start(&self, config: &ContainerConfig) -> Result<(), RuntimeError> {
        let id = config.id.clone();
        if !valid_id(&id) {
            return Err(RuntimeError::InvalidId { id });
        }
        let mut inner = self.inner.lock().unwrap();
        if inner.containers.contains_key(&id) {
            return Err(RuntimeError::AlreadyExists { id });
        }
        let script = (inner.scripter)(config);
        if let Some(detail) = script.start_error.clone() {
            return Err(RuntimeError::Scripted { id, detail });
        }
        let (exit, _) = watch::channel(None);
        if let Some((after, status)) = script.exit_after {
            let exit = exit.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                end(&exit, status);
            });
        }
        inner.started.push(id.clone());
        inner.containers.insert(id, Container { script, exit });
        Ok(())
    }

    async fn state(&self, id: &str) -> Result<ContainerInfo, RuntimeError> {
        self.with_container(id, |container| {
            let running = container.exit.borrow().is_none();
            ContainerInfo {
                id: id.to_string(),
                status: if running {
                    Status::Running
                } else {
                    Status::Stopped
                },
                pid: running.then_some(1),
            }
        })
    }

    async fn wait(&self, id: &str) -> Result<ExitStatus, RuntimeError> {
        exited(id, self.exit_receiver(id)?).await
    }

    async fn kill(&self, id: &str, signal: i32) -> Result<(), RuntimeError> {
        let running = self.with_container(id, |container| {
            if container.exit.borrow().is_some() {
                return false;
            }
            if signal == libc::SIGKILL || !container.script.ignore_signals {
                end(
                    &container.exit,
                    ExitStatus {
                        exit: Exit::Signal(signal),
                        oom_killed: false,
                    },
                );
            }
            true
        })?;
        if running {
            Ok(())
        } else {
            Err(RuntimeError::NotRunning { id: id.to_string() })
        }
    }

    async fn stop(
        &self,
        id: &str,
        signal: i32,
        grace: Duration,
    ) -> Result<ExitStatus, RuntimeError> {
        let receiver = self.exit_receiver(id)?;
        let _ = self.kill(id, signal).await;
        if let Ok(status) = tokio::time::timeout(grace, exited(id, receiver.clone())).await {
            return status;
        }
        let _ = self.kill(id, libc::SIGKILL).await;
        exited(id, receiver).await
    }

    async fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        let mut inner = self.inner.lock().unwrap();
        if let Some(container) = inner.containers.remove(id) {
            end(
                &container.exit,
                ExitStatus {
                    exit: Exit::Signal(libc::SIGKILL),
                    oom_killed: false,
                },
            );
        }
        Ok(())
    }

    async fn exec(&self, id: &str, _request: &ExecRequest) -> Result<ExecOutput, RuntimeError> {
        let (running, exit_code) = self.with_container(id, |container| {
            (
                container.exit.borrow().is_none(),
                container.script.exec_exit_code,
            )
        })?;
        if !running {
            return Err(RuntimeError::NotRunning { id: id.to_string() });
        }
        Ok(ExecOutput {
            exit_code: Some(exit_code),
            output: Vec::new(),
            truncated: false,
        })
    }

    async fn list(&self) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let ids: Vec<String> = {
            let inner = self.inner.lock().unwrap();
            let mut ids: Vec<String> = inner.containers.keys().cloned().collect();
            ids.sort();
            ids
        };
        let mut infos = Vec::with_capacity(ids.len());
        for id in ids {
            infos.push(self.state(&id).await?);
        }
        Ok(infos)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::exec::runtime::{LogConfig, Resources, User};

    fn config(id: &str, args: &[&str]) -> ContainerConfig {
        ContainerConfig {
            id: id.into(),
            rootfs: PathBuf::from("/nowhere"),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: vec![],
            cwd: "/".into(),
            user: User::default(),
            hostname: id.into(),
            netns: None,
            files: vec![],
            mounts: vec![],
            options: Default::default(),
            resources: Resources::default(),
            logs: LogConfig {
                stdout: "/nowhere/out".into(),
                stderr: "/nowhere/err".into(),
                max_bytes: 1,
                max_files: 1,
            },
        }
    }

    fn code(code: i32) -> ExitStatus {
        ExitStatus {
            exit: Exit::Code(code),
            oom_killed: false,
        }
    }

    /// Scripts by the command, as a simulation would by image.
    fn scripted() -> Arc<dyn Runtime> {
        Arc::new(FakeRuntime::new(|config| match config.args[0].as_str() {
            "crash" => Script {
                exit_after: Some((Duration::from_secs(5), code(3))),
                ..Script::default()
            },
            "stubborn" => Script {
                ignore_signals: true,
                exec_exit_code: 1,
                ..Script::default()
            },
            "missing" => Script {
                start_error: Some("exec: \"missing\": executable file not found".into()),
                ..Script::default()
            },
            _ => Script::default(),
        }))
    }

    #[tokio::test(start_paused = true)]
    async fn scripted_exit_after_a_delay() {
        let runtime = scripted();
        runtime.start(&config("c1", &["crash"])).await.unwrap();
        assert_eq!(runtime.state("c1").await.unwrap().status, Status::Running);
        let started = tokio::time::Instant::now();
        assert_eq!(runtime.wait("c1").await.unwrap(), code(3));
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert_eq!(runtime.state("c1").await.unwrap().status, Status::Stopped);
        runtime.delete("c1").await.unwrap();
        assert!(runtime.list().await.unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn stop_escalates_to_sigkill_after_the_grace_period() {
        let runtime = scripted();
        runtime.start(&config("polite", &["serve"])).await.unwrap();
        runtime
            .start(&config("stubborn", &["stubborn"]))
            .await
            .unwrap();
        let grace = Duration::from_secs(10);
        let started = tokio::time::Instant::now();
        let polite = runtime.stop("polite", libc::SIGTERM, grace).await.unwrap();
        assert_eq!(polite.exit, Exit::Signal(libc::SIGTERM));
        assert_eq!(started.elapsed(), Duration::ZERO);
        let stubborn = runtime
            .stop("stubborn", libc::SIGTERM, grace)
            .await
            .unwrap();
        assert_eq!(stubborn.exit, Exit::Signal(libc::SIGKILL));
        assert_eq!(started.elapsed(), grace);
    }

    #[tokio::test(start_paused = true)]
    async fn start_errors_exec_and_triggered_exits() {
        let fake = FakeRuntime::default();
        let runtime = scripted();
        let error = runtime.start(&config("m", &["missing"])).await.unwrap_err();
        assert!(
            error.to_string().contains("executable file not found"),
            "{error}"
        );
        assert!(runtime.list().await.unwrap().is_empty());

        runtime.start(&config("s", &["stubborn"])).await.unwrap();
        let request = ExecRequest {
            args: vec!["check".into()],
            timeout: Duration::from_secs(1),
            max_output: 10,
        };
        assert_eq!(
            runtime.exec("s", &request).await.unwrap().exit_code,
            Some(1)
        );
        assert!(matches!(
            runtime.start(&config("s", &["serve"])).await,
            Err(RuntimeError::AlreadyExists { .. })
        ));

        fake.start(&config("t", &["serve"])).await.unwrap();
        let oom = ExitStatus {
            exit: Exit::Signal(libc::SIGKILL),
            oom_killed: true,
        };
        assert!(fake.exit("t", oom));
        assert!(!fake.exit("t", code(0)), "a second exit is ignored");
        assert_eq!(fake.wait("t").await.unwrap(), oom);
        assert!(matches!(
            fake.exec("t", &request).await,
            Err(RuntimeError::NotRunning { .. })
        ));
        assert!(matches!(
            fake.kill("t", libc::SIGTERM).await,
            Err(RuntimeError::NotRunning { .. })
        ));
        assert_eq!(fake.started(), vec!["t".to_string()]);
        assert!(matches!(
            fake.wait("nope").await,
            Err(RuntimeError::NotFound { .. })
        ));
    }
}
