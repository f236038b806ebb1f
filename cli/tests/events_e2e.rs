//! `swarm events` end to end: a real manager daemon running real containers; the stream
//! shows a service's creation, scaling and removal with its tasks' states, in order, by
//! name; filters narrow it; `--since` replays what the manager kept; Ctrl-C and a reader
//! that goes end it quietly.
//!
//! Address pool 198.18.124.0/23 (no other test uses it); the cluster, dropped, removes
//! containers, mounts and bridges even when the test fails.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// How long the stream may take to show a change (a pull, a start, a report), with room
/// for parallel tests on two cores.
const EVENT_WAIT: Duration = Duration::from_secs(90);

/// A following `swarm events`, killed and reaped however the test ends; its lines arrive
/// on a channel.
struct Stream {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<Value>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Stream {
    fn start(socket: &std::path::Path, args: &[&str]) -> Stream {
        let mut child = Command::new(env!("CARGO_BIN_EXE_swarm"))
            .arg("events")
            .args(args)
            .env("SWARM_HOST", format!("unix://{}", socket.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        Stream {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads events until one is `type action name`; panics after `EVENT_WAIT`.
    fn until(&mut self, kind: &str, action: &str, name: &str) -> Value {
        let deadline = Instant::now() + EVENT_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "no `{kind} {action} {name}` within {EVENT_WAIT:?}; seen: {}",
                    summary(&self.seen).join("\n")
                )
            });
            let event: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not one JSON object a line ({e}): {line}"));
            self.seen.push(event.clone());
            if event["type"] == kind && event["action"] == action && event["name"] == name {
                return event;
            }
        }
    }

    /// Where `type action name` came in what was read, if it did.
    fn position(&self, kind: &str, action: &str, name: &str) -> Option<usize> {
        self.seen
            .iter()
            .position(|e| e["type"] == kind && e["action"] == action && e["name"] == name)
    }
}

/// `type action name` of each event.
fn summary(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| format!("{} {} {}", e["type"], e["action"], e["name"]).replace('"', ""))
        .collect()
}

/// Docker's listing habits on a running service (on this test's cluster: a daemon less to
/// start): filters, `-q`, `--no-trunc`, templates.
fn listings_take_dockers_filters_and_templates(cluster: &Cluster) {
    assert_eq!(
        ok(
            cluster,
            &["service", "ls", "--format", "{{.Name}} {{.Replicas}}"]
        ),
        "web 2/2\n"
    );
    let table = ok(
        cluster,
        &["service", "ls", "--format", r"table {{.Name}}\t{{.Mode}}"],
    );
    assert_eq!(table, "NAME   MODE\nweb    replicated\n");
    let ids = ok(
        cluster,
        &[
            "service",
            "ps",
            "web",
            "-q",
            "--no-trunc",
            "-f",
            "desired-state=running",
        ],
    );
    let ids: Vec<&str> = ids.lines().collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.iter().all(|id| id.len() > 12), "whole ids: {ids:?}");
    let names = ok(
        cluster,
        &[
            "node",
            "ps",
            "node1",
            "-f",
            "name=web.2",
            "--format",
            "{{.Name}} {{.Node}}",
        ],
    );
    assert_eq!(names, "web.2 node1\n");
    assert_eq!(
        ok(
            cluster,
            &[
                "node",
                "ls",
                "-f",
                "role=manager",
                "--format",
                "{{.Hostname}}"
            ]
        ),
        "node1\n"
    );
    assert_eq!(ok(cluster, &["node", "ls", "-q", "-f", "role=worker"]), "");
    let out = swarm(
        &cluster.socket(0),
        &["service", "ls", "--format", "{{.Nope}}"],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("unknown field .Nope in --format: this listing has .ID, .Name, .Mode, .Replicas, .Image, .Ports"),
        "{}",
        text(&out.stderr)
    );
}

/// A change that makes an event: node `node` gets label `probe=N`, N counted by `probes`.
fn probe(cluster: &Cluster, node: &str, probes: &mut u32) {
    *probes += 1;
    let label = format!("probe={probes}");
    ok(cluster, &["node", "update", "--label-add", &label, node]);
}

#[test]
fn events_follow_a_services_life_in_order_and_replay_since() {
    let test = "events_follow_a_services_life_in_order_and_replay_since";
    let Some(registry) = registry_for(test) else {
        return;
    };
    let image = format!("{}/swarm/hello:1", registry.addr());
    let cluster = cluster(1, &init_args("198.18.124.0/23", &[]));
    let node = cluster.node_id(0).unwrap();

    let mut stream = Stream::start(&cluster.socket(0), &["--format", "json"]);
    // The stream is live once a change made after it started shows.
    let mut probes = 0;
    wait_for("the stream to show a node update", EVENT_WAIT, || {
        probe(&cluster, &node, &mut probes);
        let event = stream.lines.recv_timeout(Duration::from_secs(1)).ok()?;
        let event: Value = serde_json::from_str(&event).unwrap();
        (event["type"] == "node" && event["action"] == "update").then_some(())
    });

    ok(&cluster, &["service", "create", "--name", "web", &image]);
    ok(&cluster, &["service", "scale", "web=2"]);
    listings_take_dockers_filters_and_templates(&cluster);
    ok(&cluster, &["service", "rm", "web"]);
    let created = stream.until("service", "create", "web");
    let service_id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["attributes"]["image"], image.as_str());
    let running = stream.until("task", "running", "web.1");
    assert_eq!(running["attributes"]["service"], "web");
    assert_eq!(running["attributes"]["service.id"], service_id.as_str());
    assert_eq!(running["attributes"]["node"], "node1");
    assert_eq!(running["attributes"]["image"], image.as_str());
    let scaled = stream.until("service", "update", "web");
    assert_eq!(scaled["attributes"]["replicas.old"], "1");
    assert_eq!(scaled["attributes"]["replicas.new"], "2");
    stream.until("task", "running", "web.2");
    stream.until("service", "remove", "web");
    stream.until("task", "shutdown", "web.1");
    let order = [
        ("service", "create", "web"),
        ("task", "create", "web.1"),
        ("task", "assigned", "web.1"),
        ("task", "running", "web.1"),
        ("service", "update", "web"),
        ("task", "create", "web.2"),
        ("task", "running", "web.2"),
        ("service", "remove", "web"),
        ("task", "shutdown", "web.1"),
    ];
    let positions: Vec<usize> = order
        .iter()
        .map(|(kind, action, name)| {
            stream.position(kind, action, name).unwrap_or_else(|| {
                panic!("no {kind} {action} {name} in {:#?}", summary(&stream.seen))
            })
        })
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "in the order they happened: {positions:?} in {:#?}",
        summary(&stream.seen)
    );

    // Ctrl-C ends the stream at once, with success.
    let pid = stream.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let ended = wait_for(
        "swarm events to end on SIGINT",
        Duration::from_secs(10),
        || stream.child.try_wait().unwrap(),
    );
    assert!(ended.success(), "{ended:?}");

    // Replayed: only the service's events with a type filter, up to now, then the end.
    let out = swarm(
        &cluster.socket(0),
        &[
            "events",
            "--since",
            "1m",
            "--until",
            "0s",
            "--filter",
            "type=service",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    let actions: Vec<&str> = lines
        .iter()
        .map(|l| l.split(' ').nth(2).unwrap_or_default())
        .collect();
    assert_eq!(actions, ["create", "update", "remove"], "{lines:#?}");
    assert!(
        lines[0].ends_with(&format!(
            "service create {service_id} (name=web, image={image}, replicas=1)"
        )),
        "Docker's line: {}",
        lines[0]
    );
    let out = swarm(
        &cluster.socket(0),
        &[
            "events",
            "--since",
            "1m",
            "--until",
            "0s",
            "--format",
            "json",
            "--filter",
            "service=web",
            "--filter",
            "event=running",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let replayed: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        summary(&replayed),
        ["task running web.1", "task running web.2"]
    );
    // Older than the manager keeps: said on stderr.
    let out = swarm(
        &cluster.socket(0),
        &["events", "--since", "2h", "--until", "0s"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("warning: the manager keeps events from"),
        "{}",
        text(&out.stderr)
    );

    // A reader that goes ends the stream quietly (SIGPIPE, as other tools do), at its
    // next line: the changes below make one if the replay fitted in the pipe.
    let mut piped = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{}' events --since 1m | head -n 1 >/dev/null",
            env!("CARGO_BIN_EXE_swarm")
        ))
        .env(
            "SWARM_HOST",
            format!("unix://{}", cluster.socket(0).display()),
        )
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ended = wait_for(
        "swarm events to end once its reader went",
        EVENT_WAIT,
        || {
            probe(&cluster, &node, &mut probes);
            piped.try_wait().unwrap()
        },
    );
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut piped.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(ended.success(), "{ended:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
