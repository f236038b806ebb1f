//! What the network benchmarks share: task namespaces with nginx in them, and the load
//! tools (`wrk`, `ab`, `hey`) run in a namespace, their figures read from their output.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub fn in_namespace<T: Send>(netns: &Path, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let file = std::fs::File::open(netns).unwrap();
                // SAFETY: setns changes only this thread's network namespace; the thread
                // ends with the scope.
                let joined = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(
                    joined,
                    0,
                    "setns {netns:?}: {}",
                    std::io::Error::last_os_error()
                );
                f()
            })
            .join()
            .unwrap()
    })
}

/// Task namespaces and the servers in them; removed on drop.
pub struct Tasks {
    /// Starts the namespaces' names: each benchmark its own.
    prefix: &'static str,
    names: Vec<String>,
    servers: Vec<Child>,
    dir: tempfile::TempDir,
}

impl Tasks {
    pub fn new(prefix: &'static str) -> Tasks {
        Tasks {
            prefix,
            names: Vec::new(),
            servers: Vec::new(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A new network namespace, its loopback up.
    pub fn add(&mut self, task: &str) -> PathBuf {
        let name = format!("{}{}{task}", self.prefix, std::process::id());
        let status = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(status.success());
        self.names.push(name.clone());
        let status = Command::new("ip")
            .args(["-n", &name, "link", "set", "lo", "up"])
            .status()
            .unwrap();
        assert!(status.success());
        PathBuf::from(format!("/var/run/netns/{name}"))
    }

    /// nginx in `netns` on `address:8080` and `:8081`, and `:8082` and `:8083` taking a
    /// PROXY protocol header first; one process, no logs.
    pub fn serve(&mut self, netns: &Path, name: &str, address: Ipv4Addr) {
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let config = format!(
            "master_process off; daemon off; worker_processes 1;\n\
             pid {dir}/nginx.pid; error_log {dir}/error.log;\n\
             events {{ worker_connections 4096; }}\n\
             http {{ access_log off;\n\
               client_body_temp_path {dir}; proxy_temp_path {dir}; fastcgi_temp_path {dir};\n\
               uwsgi_temp_path {dir}; scgi_temp_path {dir};\n\
               keepalive_requests 1000000;\n\
               server {{ listen {address}:8080 backlog=4096; listen {address}:8081 backlog=4096;\n\
                 listen {address}:8082 backlog=4096 proxy_protocol;\n\
                 listen {address}:8083 backlog=4096 proxy_protocol;\n\
                 location / {{ return 200 \"{name}\\n\"; }} }} }}\n",
            dir = dir.display()
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, config).unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net={}", netns.display()))
            .arg("nginx")
            .arg("-c")
            .arg(&path)
            .arg("-p")
            .arg(&dir)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        self.servers.push(child);
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for server in &mut self.servers {
            let _ = server.kill();
            let _ = server.wait();
        }
        for name in &self.names {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// Runs `program args` in `netns` (or here); its stdout.
pub fn inside(netns: Option<&Path>, program: &str, args: &[&str]) -> String {
    let mut command = match netns {
        Some(netns) => {
            let mut command = Command::new("nsenter");
            command
                .arg(format!("--net={}", netns.display()))
                .arg(program);
            command
        }
        None => Command::new(program),
    };
    let output = command.args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The number after `label` on the line that has it.
pub fn figure(output: &str, label: &str) -> f64 {
    output
        .lines()
        .find_map(|line| line.trim().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no {label:?} in\n{output}"))
}

pub fn wrk(client: Option<&Path>, url: &str, seconds: u64) -> f64 {
    let duration = format!("{seconds}s");
    let output = inside(client, "wrk", &["-t1", "-c32", "-d", &duration, url]);
    assert!(
        !output.contains("Non-2xx") && !output.contains("Socket errors"),
        "{output}"
    );
    figure(&output, "Requests/sec:")
}

/// `ab -c32` for `seconds` (a new connection per request): req/s.
pub fn ab(client: Option<&Path>, url: &str, seconds: u64) -> f64 {
    ab_concurrent(client, url, 32, seconds)
}

/// `ab -c CONCURRENCY` for `seconds`: req/s; any failed request is a panic.
pub fn ab_concurrent(client: Option<&Path>, url: &str, concurrency: usize, seconds: u64) -> f64 {
    let (concurrency, limit) = (concurrency.to_string(), seconds.to_string());
    let output = inside(
        client,
        "ab",
        &[
            "-q",
            "-c",
            &concurrency,
            "-t",
            &limit,
            "-n",
            "1000000",
            "-s",
            "5",
            url,
        ],
    );
    assert!(output.contains("Failed requests:        0"), "{output}");
    figure(&output, "Requests per second:")
}

/// p50 and p99 latency in µs at a fixed, moderate rate (4 workers × 250 req/s).
pub fn hey(client: Option<&Path>, url: &str, seconds: u64) -> (f64, f64) {
    let duration = format!("{seconds}s");
    let output = inside(
        client,
        "hey",
        &[
            "-z",
            &duration,
            "-c",
            "4",
            "-q",
            "250",
            "-disable-keepalive",
            url,
        ],
    );
    let micros = |label| figure(&output, label) * 1e6;
    (micros("50% in"), micros("99% in"))
}

pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
