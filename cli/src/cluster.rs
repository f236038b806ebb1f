//! `swarm daemon`, `swarm init`, `swarm node ls`, `swarm join-token`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use swarm_api::grpc::control::{
    ExportStateRequest, InitRequest, JoinRequest, JoinTokenRequest, ListNodesRequest,
    RemoveNodeRequest, Role, UpdateNodeRequest,
};
use swarm_controller::daemon::{self, DaemonConfig};

use crate::client::{self, DEFAULT_SOCKET};

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
}

pub fn daemon(args: DaemonArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let hostname = hostname();
    let config = DaemonConfig {
        data_dir: args.data_dir,
        listen_addr: args.listen_addr,
        advertise_addr: args.advertise_addr,
        socket: args.socket,
        hostname,
    };
    runtime.block_on(async {
        eprintln!("swarm daemon: control API on {}", config.socket.display());
        daemon::run(config, shutdown_signal()).await
    })?;
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
}

pub async fn init(host: &str, args: InitArgs) -> anyhow::Result<ExitCode> {
    let mut client = client::connect(host).await?;
    let response = client
        .init(InitRequest {
            advertise_addr: args.advertise_addr.unwrap_or_default(),
        })
        .await
        .map_err(client::explain)?
        .into_inner();
    println!(
        "Swarm initialized: current node ({}) is now a manager.\n\nTo add a worker to this swarm, run the following command:\n\n    swarm join --token {} {}\n\nTo add a manager to this swarm, run 'swarm join-token manager' and follow the instructions.",
        response.node_id, response.worker_token, response.advertise_addr
    );
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

pub async fn join(host: &str, args: JoinArgs) -> anyhow::Result<ExitCode> {
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
    Ls,
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
    /// Remove a worker from the cluster
    Rm {
        /// The node: its id, a unique prefix of the id, or its hostname
        node: String,
    },
}

pub async fn node(host: &str, command: NodeCommand) -> anyhow::Result<ExitCode> {
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
        NodeCommand::Rm { node } => {
            let mut client = client::connect(host).await?;
            let id = client
                .remove_node(RemoveNodeRequest { node })
                .await
                .map_err(client::explain)?
                .into_inner()
                .id;
            println!("{id}");
            Ok(ExitCode::SUCCESS)
        }
        NodeCommand::Ls => {
            let mut client = client::connect(host).await?;
            let nodes = client
                .list_nodes(ListNodesRequest {})
                .await
                .map_err(client::explain)?
                .into_inner()
                .nodes;
            let rows: Vec<[String; 5]> = nodes
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
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    ["ID", "HOSTNAME", "STATUS", "AVAILABILITY", "MANAGER STATUS"],
                    &rows
                )
            );
            Ok(ExitCode::SUCCESS)
        }
    }
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

pub async fn state(host: &str, command: StateCommand) -> anyhow::Result<ExitCode> {
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

pub async fn join_token(host: &str, args: JoinTokenArgs) -> anyhow::Result<ExitCode> {
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

/// Columns padded to their widest cell, separated by three spaces, as Docker prints them.
fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths: [usize; N] = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == N {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}   ", width = widths[i]));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}
