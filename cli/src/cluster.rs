//! `swarm daemon`, `swarm init`, `swarm node ls`, `swarm join-token`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use swarm_api::grpc::control::{
    ExportStateRequest, InitRequest, InspectNodeRequest, IssueClientCertificateRequest,
    JoinRequest, JoinTokenRequest, LeaveRequest, ListNodesRequest, RemoveNodeRequest, Role,
    SetNodeRoleRequest, UpdateNodeRequest,
};
use swarm_api::units::{GoDuration, UnitError};
use swarm_node::{self as daemon, DaemonConfig};

use crate::client::{self, DEFAULT_SOCKET, Host};
use crate::filter::NodeFilter;
use crate::output::{ListFormat, Rows};

/// Run the node process: the control API on a unix socket and, in a cluster, the manager.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Where the node keeps everything durable
    #[arg(long, default_value = "/var/lib/swarm")]
    data_dir: PathBuf,
    /// The cluster port (gRPC over mutual TLS)
    #[arg(long, default_value = "0.0.0.0:2377")]
    listen_addr: SocketAddr,
    /// Where other nodes reach this one [default: the listen address]
    #[arg(long)]
    advertise_addr: Option<String>,
    /// The control API's unix socket
    #[arg(long, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Where the node keeps what a reboot clears (its tasks' network namespaces)
    #[arg(long, default_value = "/run/swarm")]
    run_dir: PathBuf,
    /// The node's name in the cluster [default: the machine's hostname]
    #[arg(long)]
    hostname: Option<String>,
    /// Where push webhooks from a forge are received (`POST /hooks/git/NAME`, plain HTTP);
    /// none by default
    #[arg(long)]
    webhook_addr: Option<SocketAddr>,
    /// Where Prometheus scrapes this node's metrics (`GET /metrics`, plain HTTP); none by
    /// default
    #[arg(long)]
    metrics_addr: Option<SocketAddr>,
    /// A registry (`host[:port]`, as in image references) reached over plain http, as
    /// loopback ones always are; repeat for several (Docker's `insecure-registries`)
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    insecure_registries: Vec<String>,
    /// The UDP port this node takes overlay (VXLAN) traffic on; give each node sharing a
    /// network namespace its own
    #[arg(long, default_value_t = swarm_api::endpoints::VXLAN_PORT, value_parser = clap::value_parser!(u16).range(1..))]
    data_path_port: u16,
    /// Log level: error, warn, info, debug or trace
    #[arg(long, default_value = "info")]
    log_level: tracing::Level,
}

pub fn daemon(args: DaemonArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    tracing_subscriber::fmt()
        .with_max_level(args.log_level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    let hostname = args.hostname.unwrap_or_else(hostname);
    // Absolute: runc resolves a relative root filesystem against the bundle, not here.
    let config = DaemonConfig {
        data_dir: std::path::absolute(&args.data_dir)?,
        listen_addr: args.listen_addr,
        advertise_addr: args.advertise_addr,
        socket: args.socket,
        run_dir: std::path::absolute(&args.run_dir)?,
        hostname,
        webhook_addr: args.webhook_addr,
        metrics_addr: args.metrics_addr,
        insecure_registries: args.insecure_registries,
        data_path_port: args.data_path_port,
    };
    runtime.block_on(async {
        tracing::info!(socket = %config.socket.display(), "control API listening");
        daemon::run(config, shutdown_signal()).await
    })?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM can be handled");
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned())
}

/// Start a new cluster with this node as its first manager.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where other nodes reach this one (host:port)
    #[arg(long)]
    advertise_addr: Option<String>,
    /// How often nodes report to the managers
    #[arg(long, default_value = "1s", value_parser = duration)]
    dispatcher_heartbeat: Duration,
    /// Missed heartbeats before a node is marked Down
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    missed_heartbeats: u32,
    /// How long node certificates are valid (nodes renew them before)
    #[arg(long, default_value = "2160h", value_parser = duration)]
    cert_expiry: Duration,
    /// Recover a cluster that lost its quorum: restart this manager, with its data, as the
    /// only manager
    #[arg(long)]
    force_new_cluster: bool,
    /// Managers need the unlock key (printed once) to start after a restart
    #[arg(long, conflicts_with = "force_new_cluster")]
    autolock: bool,
    /// The pool each node's task subnet is leased from
    #[arg(long, default_value = "198.19.0.0/16")]
    default_addr_pool: String,
    /// The size of each node's subnet (prefix length)
    #[arg(long, default_value_t = 24)]
    default_addr_pool_mask_length: u32,
    /// A git repository to deploy from once the cluster is up (as `swarm repo add`)
    #[arg(long, conflicts_with = "force_new_cluster")]
    repo: Option<String>,
    /// The repository's name [default: the URL's last part, without .git]
    #[arg(long, requires = "repo")]
    repo_name: Option<String>,
    #[command(flatten, next_help_heading = "With --repo")]
    repo_options: crate::gitops::RepoOptions,
}

/// A duration as Docker writes them: 1s, 500ms, 1m30s, 2160h.
fn duration(text: &str) -> Result<Duration, String> {
    let parsed: GoDuration = text.parse().map_err(|e: UnitError| e.to_string())?;
    if parsed.0.is_zero() {
        return Err("must be longer than zero".to_owned());
    }
    Ok(parsed.0)
}

pub async fn init(host: &Host, args: InitArgs) -> anyhow::Result<ExitCode> {
    // The repository's files are read first: a missing one leaves no cluster made.
    let repository = match args.repo {
        Some(url) => {
            let name = match args.repo_name {
                Some(name) => name,
                None => crate::gitops::name_from_url(&url).with_context(|| {
                    format!("cannot make a repository name of {url:?}: give one with --repo-name")
                })?,
            };
            let request = args.repo_options.request(name, url)?;
            // Checked as the daemon will check it, before there is a cluster to leave
            // half made.
            daemon::repos::declaration(request.clone(), 0).map_err(anyhow::Error::msg)?;
            Some(request)
        }
        None if args.repo_options.given() => {
            anyhow::bail!("the repository options (--branch, --path, …) need --repo URL")
        }
        None => None,
    };
    let mut client = client::connect(host).await?;
    let response = client
        .init(InitRequest {
            advertise_addr: args.advertise_addr.unwrap_or_default(),
            heartbeat_period_ms: args.dispatcher_heartbeat.as_millis().max(1) as u64,
            missed_heartbeats_for_down: args.missed_heartbeats,
            certificate_validity_ms: args.cert_expiry.as_millis().max(1) as u64,
            force_new_cluster: args.force_new_cluster,
            default_addr_pool: args.default_addr_pool,
            default_addr_pool_mask_length: args.default_addr_pool_mask_length,
            autolock: args.autolock,
        })
        .await
        .map_err(client::explain)?
        .into_inner();
    if args.force_new_cluster {
        println!(
            "Swarm recovered: current node ({}) is now the only manager of cluster {}.\n\nTo add a manager, run 'swarm join-token manager' and follow the instructions.",
            response.node_id, response.cluster_id
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "Swarm initialized: current node ({}) is now a manager.\n\nTo add a worker to this swarm, run the following command:\n\n    swarm join --token {} {}\n\nTo add a manager to this swarm, run 'swarm join-token manager' and follow the instructions.",
        response.node_id, response.worker_token, response.advertise_addr
    );
    crate::lock::print_init_unlock_key(&response.unlock_key);
    if let Some(request) = repository {
        println!();
        let name = request.name.clone();
        crate::gitops::add(host, request).await.with_context(|| {
            format!("the swarm is initialized, but repository {name} was not added: fix this and run `swarm repo add`")
        })?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Join the cluster of the manager at ADDR, as a worker or a manager (the token says which)
#[derive(Debug, Args)]
pub struct JoinArgs {
    /// The token printed by `swarm join-token worker|manager`
    #[arg(long)]
    token: String,
    /// Where other nodes reach this one (host:port) [default: the daemon's listen address]
    #[arg(long)]
    advertise_addr: Option<String>,
    /// A manager's address (host:port)
    remote_addr: String,
}

pub async fn join(host: &Host, args: JoinArgs) -> anyhow::Result<ExitCode> {
    let mut client = client::connect(host).await?;
    let response = client
        .join(JoinRequest {
            token: args.token,
            remote_addr: args.remote_addr,
            advertise_addr: args.advertise_addr.unwrap_or_default(),
        })
        .await
        .map_err(client::explain)?
        .into_inner();
    let role = match Role::try_from(response.role) {
        Ok(Role::Manager) => "a manager",
        _ => "a worker",
    };
    println!(
        "This node joined a swarm as {role} (node {}).",
        response.node_id
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List the nodes of the cluster
    #[command(alias = "list")]
    Ls {
        /// Only the IDs
        #[arg(long, short)]
        quiet: bool,
        /// Only nodes matching KEY=VALUE: id, name (prefixes), role (manager or worker),
        /// membership (accepted), label or node.label (the node's labels, KEY or
        /// KEY=VALUE); repeat a key for alternatives (labels must all match)
        #[arg(long, short)]
        filter: Vec<String>,
        /// table, json, or a template: `{{.Hostname}}`, `table {{.ID}}\t{{.Status}}`
        #[arg(long, default_value = "table")]
        format: ListFormat,
    },
    /// Change a node's availability or labels
    Update {
        /// The node: its id, a unique prefix of the id, or its hostname
        node: String,
        /// active, pause or drain
        #[arg(long)]
        availability: Option<String>,
        /// Add or change a label (KEY=VALUE)
        #[arg(long = "label-add", value_name = "KEY=VALUE")]
        label_add: Vec<String>,
        /// Remove a label
        #[arg(long = "label-rm", value_name = "KEY")]
        label_rm: Vec<String>,
    },
    /// Remove a worker from the cluster (it must be down, or --force)
    Rm {
        /// The node: its id, a unique prefix of the id, or its hostname
        node: String,
        /// Remove the node even if it is up: its certificate is refused from then on
        #[arg(long, short)]
        force: bool,
    },
    /// Show a node in detail (JSON)
    Inspect {
        /// Nodes: ids, unique prefixes of ids, or hostnames ("self" for this node)
        #[arg(required = true)]
        nodes: Vec<String>,
        /// Human-readable output
        #[arg(long, conflicts_with = "format")]
        pretty: bool,
        /// A Go template over each node's JSON: `{{.Status.Addr}}`, `{{json .Spec}}`
        #[arg(long, short)]
        format: Option<String>,
    },
    /// Make workers managers
    Promote {
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Make managers workers
    Demote {
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// List the tasks on nodes ("self" is not supported: name the node)
    Ps {
        #[arg(required = true)]
        nodes: Vec<String>,
        #[command(flatten)]
        listing: crate::tasks::TaskListArgs,
    },
}

pub async fn node(host: &Host, command: NodeCommand) -> anyhow::Result<ExitCode> {
    match command {
        NodeCommand::Update {
            node,
            availability,
            label_add,
            label_rm,
        } => {
            let mut labels = std::collections::HashMap::new();
            for label in label_add {
                let (key, value) = label.split_once('=').unwrap_or((label.as_str(), ""));
                if key.is_empty() {
                    anyhow::bail!("invalid --label-add {label:?}: expected KEY=VALUE");
                }
                labels.insert(key.to_owned(), value.to_owned());
            }
            let mut client = client::connect(host).await?;
            let id = client
                .update_node(UpdateNodeRequest {
                    node,
                    availability: availability.unwrap_or_default(),
                    label_add: labels,
                    label_rm,
                })
                .await
                .map_err(client::explain)?
                .into_inner()
                .id;
            println!("{id}");
            Ok(ExitCode::SUCCESS)
        }
        NodeCommand::Rm { node, force } => {
            let mut client = client::connect(host).await?;
            let id = client
                .remove_node(RemoveNodeRequest { node, force })
                .await
                .map_err(client::explain)?
                .into_inner()
                .id;
            println!("{id}");
            Ok(ExitCode::SUCCESS)
        }
        NodeCommand::Inspect {
            nodes,
            pretty,
            format,
        } => {
            let mut client = client::connect(host).await?;
            let mut inspected = Vec::new();
            for node in nodes {
                let json = client
                    .inspect_node(InspectNodeRequest { node })
                    .await
                    .map_err(client::explain)?
                    .into_inner()
                    .json;
                inspected.push(serde_json::from_str::<serde_json::Value>(&json)?);
            }
            if pretty {
                for node in &inspected {
                    print!("{}", pretty_node(node));
                }
            } else if let Some(template) = format {
                print!(
                    "{}",
                    crate::go_template::render_each(&template, &inspected)?
                );
            } else {
                println!("{}", serde_json::to_string_pretty(&inspected)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        NodeCommand::Promote { nodes } => set_roles(host, nodes, Role::Manager).await,
        NodeCommand::Demote { nodes } => set_roles(host, nodes, Role::Worker).await,
        NodeCommand::Ps { nodes, listing } => crate::tasks::node_ps(host, &nodes, &listing).await,
        NodeCommand::Ls {
            quiet,
            filter,
            format,
        } => {
            let filter = NodeFilter::parse(&filter)?;
            let mut client = client::connect(host).await?;
            let nodes = client
                .list_nodes(ListNodesRequest {})
                .await
                .map_err(client::explain)?
                .into_inner()
                .nodes
                .into_iter()
                .filter(|node| filter.matches(node))
                .collect::<Vec<_>>();
            if format == ListFormat::Json {
                let listed: Vec<serde_json::Value> = nodes
                    .iter()
                    .map(|node| {
                        serde_json::json!({
                            "id": node.id,
                            "hostname": node.hostname,
                            "status": node.status,
                            "availability": node.availability,
                            "manager_status": node.manager_status,
                            "message": node.message,
                            "self": node.is_self,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&listed)?);
                return Ok(ExitCode::SUCCESS);
            }
            if quiet {
                for node in &nodes {
                    println!("{}", node.id);
                }
                return Ok(ExitCode::SUCCESS);
            }
            // Docker's columns, and a MESSAGE column when some node has something wrong
            // that its status does not say (a worker that is not running).
            let with_message = nodes.iter().any(|node| !node.message.is_empty());
            let rows: Vec<[String; 6]> = nodes
                .into_iter()
                .map(|node| {
                    let id = if node.is_self {
                        format!("{} *", node.id)
                    } else {
                        node.id
                    };
                    [
                        id,
                        node.hostname,
                        capitalise(&node.status),
                        capitalise(&node.availability),
                        capitalise(&node.manager_status),
                        node.message,
                    ]
                })
                .collect();
            let header = [
                "ID",
                "HOSTNAME",
                "STATUS",
                "AVAILABILITY",
                "MANAGER STATUS",
                "MESSAGE",
            ];
            if with_message {
                print!("{}", Rows { header, rows }.render(&format)?);
            } else {
                let rows: Vec<[String; 5]> = rows
                    .into_iter()
                    .map(|[id, host, status, availability, manager, _]| {
                        [id, host, status, availability, manager]
                    })
                    .collect();
                let header = [header[0], header[1], header[2], header[3], header[4]];
                print!("{}", Rows { header, rows }.render(&format)?);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn set_roles(host: &Host, nodes: Vec<String>, role: Role) -> anyhow::Result<ExitCode> {
    let mut client = client::connect(host).await?;
    let what = match role {
        Role::Manager => "a manager",
        _ => "a worker",
    };
    for node in nodes {
        let response = client
            .set_node_role(SetNodeRoleRequest {
                node: node.clone(),
                role: role as i32,
            })
            .await
            .map_err(client::explain)?
            .into_inner();
        match (response.changed, role) {
            (true, Role::Manager) => {
                println!("Node {} promoted to a manager in the swarm.", response.id)
            }
            (true, _) => println!("Manager {} demoted in the swarm.", response.id),
            (false, _) => println!("Node {} is already {what} in the swarm.", response.id),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `node inspect --pretty`: the fields a person looks for, one per line.
fn pretty_node(node: &serde_json::Value) -> String {
    let text = |value: &serde_json::Value| match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    let mut out = format!("ID:\t\t\t{}\n", text(&node["ID"]));
    out += &format!("Hostname:\t\t{}\n", text(&node["Description"]["Hostname"]));
    let labels = node["Spec"]["Labels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    if !labels.is_empty() {
        out += "Labels:\n";
        for (key, value) in labels {
            out += &format!(" - {key}={}\n", text(&value));
        }
    }
    out += "Status:\n";
    out += &format!(
        " State:\t\t\t{}\n",
        capitalise(&text(&node["Status"]["State"]))
    );
    if let Some(message) = node["Status"]["Message"].as_str() {
        out += &format!(" Message:\t\t{message}\n");
    }
    out += &format!(
        " Availability:\t\t{}\n",
        capitalise(&text(&node["Spec"]["Availability"]))
    );
    out += &format!(" Address:\t\t{}\n", text(&node["Status"]["Addr"]));
    if let Some(manager) = node["ManagerStatus"].as_object() {
        out += "Manager Status:\n";
        out += &format!(" Address:\t\t{}\n", text(&manager["Addr"]));
        out += &format!(
            " Raft Status:\t\t{}\n",
            capitalise(&text(&manager["Reachability"]))
        );
        let leader = if manager["Leader"] == serde_json::Value::Bool(true) {
            "Yes"
        } else {
            "No"
        };
        out += &format!(" Leader:\t\t{leader}\n");
    }
    out
}

/// Leave the cluster this node is in
#[derive(Debug, Args)]
pub struct LeaveArgs {
    /// Leave even as a manager (the others may lose their quorum)
    #[arg(long, short)]
    force: bool,
}

pub async fn leave(host: &Host, args: LeaveArgs) -> anyhow::Result<ExitCode> {
    let mut client = client::connect(host).await?;
    client
        .leave(LeaveRequest { force: args.force })
        .await
        .map_err(client::explain)?;
    println!("Node left the swarm.");
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Write the cluster's objects as JSON (the format `swarm plan --state` reads)
    Export {
        /// Write to FILE instead of standard output
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

pub async fn state(host: &Host, command: StateCommand) -> anyhow::Result<ExitCode> {
    match command {
        StateCommand::Export { output } => {
            let mut client = client::connect(host).await?;
            let json = client
                .export_state(ExportStateRequest {})
                .await
                .map_err(client::explain)?
                .into_inner()
                .json;
            match output {
                Some(path) => std::fs::write(&path, json)
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None => print!("{json}"),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TokenRole {
    Worker,
    Manager,
}

/// Show (or rotate) the token that joins a node in a role
#[derive(Debug, Args)]
pub struct JoinTokenArgs {
    role: TokenRole,
    /// Replace the token: the old one stops working
    #[arg(long)]
    rotate: bool,
    /// Print only the token
    #[arg(short, long)]
    quiet: bool,
}

pub async fn join_token(host: &Host, args: JoinTokenArgs) -> anyhow::Result<ExitCode> {
    let mut client = client::connect(host).await?;
    let role = match args.role {
        TokenRole::Worker => Role::Worker,
        TokenRole::Manager => Role::Manager,
    };
    let response = client
        .join_token(JoinTokenRequest {
            role: role as i32,
            rotate: args.rotate,
        })
        .await
        .map_err(client::explain)?
        .into_inner();
    if args.quiet {
        println!("{}", response.token);
    } else {
        let what = match args.role {
            TokenRole::Worker => "a worker",
            TokenRole::Manager => "a manager",
        };
        if args.rotate {
            println!(
                "Successfully rotated the {} join token.\n",
                what.trim_start_matches("a ")
            );
        }
        println!(
            "To add {what} to this swarm, run the following command:\n\n    swarm join --token {} {}",
            response.token, response.manager_addr
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn capitalise(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Make a certificate for an operator to reach a manager from elsewhere
/// (`swarm --host tcp://MANAGER:2377 --tls-dir DIR …`)
#[derive(Debug, Args)]
pub struct ClientCertArgs {
    /// Where to write ca.pem, cert.pem and key.pem
    #[arg(long)]
    out: PathBuf,
    /// Who the certificate is for
    #[arg(long, default_value = "admin")]
    name: String,
}

pub async fn client_cert(host: &Host, args: ClientCertArgs) -> anyhow::Result<ExitCode> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let key = swarm_controller::ca::NodeKey::generate()?;
    let mut client = client::connect(host).await?;
    let response = client
        .issue_client_certificate(IssueClientCertificateRequest {
            csr_pem: key.csr_pem()?,
            name: args.name,
        })
        .await
        .map_err(client::explain)?
        .into_inner();
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    for (name, contents, mode) in [
        ("ca.pem", response.ca_pem, 0o644),
        ("cert.pem", response.cert_pem, 0o644),
        ("key.pem", key.pem(), 0o600),
    ] {
        let path = args.out.join(name);
        // Created with its mode: the key is never readable by others, even for a moment.
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&path)
            .and_then(|mut file| {
                file.set_permissions(std::fs::Permissions::from_mode(mode))?;
                std::io::Write::write_all(&mut file, contents.as_bytes())
            })
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!(
        "Client certificate written to {}.\n\nUse it with:\n\n    swarm --host tcp://MANAGER:2377 --tls-dir {} node ls",
        args.out.display(),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
