//! `swarm`: the command line. Each subcommand lives in its own module; this file parses the
//! arguments and turns outcomes into exit codes.

mod apply;
mod client;
mod cluster;
mod converge;
mod deploy;
mod events;
mod filter;
mod gitops;
mod go_template;
mod inspect;
mod lock;
mod logs;
mod network;
mod output;
mod plan;
mod plans;
mod registry_auth;
mod repo;
mod rollback_flags;
mod secret;
mod service;
mod stack;
mod tasks;
mod update_flags;
mod volume;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A container orchestrator with the simplicity of Docker Swarm mode and a GitOps heart.
#[derive(Debug, Parser)]
#[command(name = "swarm", version, propagate_version = true)]
struct Cli {
    /// The daemon to talk to: unix:///PATH (a local daemon) or tcp://MANAGER:PORT (mutual TLS)
    #[arg(long, global = true, env = "SWARM_HOST", default_value = concat!("unix://", "/run/swarm/swarm.sock"))]
    host: String,

    /// For tcp:// hosts: the directory with ca.pem, cert.pem and key.pem [default: ~/.swarm]
    #[arg(long, global = true, env = "SWARM_TLS_DIR")]
    tls_dir: Option<std::path::PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Daemon(cluster::DaemonArgs),
    Init(Box<cluster::InitArgs>),
    Join(cluster::JoinArgs),
    Leave(cluster::LeaveArgs),
    /// Manage the cluster's nodes: list, inspect, update, promote, demote, remove, their tasks
    #[command(subcommand)]
    Node(cluster::NodeCommand),
    JoinToken(cluster::JoinTokenArgs),
    Unlock(lock::UnlockArgs),
    UnlockKey(lock::UnlockKeyArgs),
    /// Change the cluster's settings (autolock)
    #[command(subcommand)]
    Cluster(lock::ClusterCommand),
    ClientCert(cluster::ClientCertArgs),
    /// Export the cluster's objects (for `swarm plan --state`)
    #[command(subcommand)]
    State(cluster::StateCommand),
    Plan(plan::PlanArgs),
    Apply(apply::ApplyArgs),
    /// Manage services: create, list, inspect, update, scale, roll back, remove; their tasks and logs
    #[command(subcommand)]
    Service(service::ServiceCommand),
    /// Manage the cluster's networks: create, list, inspect, remove
    #[command(subcommand)]
    Network(network::NetworkCommand),
    /// Manage the cluster's secrets: create, list, inspect, remove (never shown)
    #[command(subcommand)]
    Secret(secret::FileCommand),
    /// Manage the cluster's configs: create, list, inspect, remove
    #[command(subcommand)]
    Config(secret::FileCommand),
    /// Manage this node's volumes: list, inspect, remove, prune
    #[command(subcommand)]
    Volume(volume::VolumeCommand),
    /// Deploy stack files to the cluster, list and remove stacks
    #[command(subcommand)]
    Stack(stack::StackCommand),
    /// Manage the git repositories the leader watches and deploys: add, list, inspect,
    /// remove, sync
    #[command(subcommand)]
    Repo(repo::RepoCommand),
    /// The Deployments made of the repositories' commits: list, show, roll back
    #[command(subcommand)]
    Deploy(deploy::DeployCommand),
    /// Stream the cluster's events (services, nodes, tasks, networks, configs, secrets,
    /// repositories, Deployments) as the manager asked sees them
    Events(events::EventsArgs),
    /// Save a registry login in Docker's client config (for --with-registry-auth); the
    /// registry is not asked whether it is right
    Login(registry_auth::LoginArgs),
    /// Remove a registry login from Docker's client config
    Logout(registry_auth::LogoutArgs),
    /// Print the shell completion script: `source <(swarm completion bash)`, or save it
    /// where your shell loads completions from
    Completion {
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon never dies of a closed socket; `service logs` ends by itself, with
    // success as Docker's does, when its reader goes.
    let handles_closed_pipes = matches!(
        &cli.command,
        Command::Daemon(_) | Command::Service(service::ServiceCommand::Logs(_))
    );
    if !handles_closed_pipes {
        end_quietly_on_a_closed_pipe();
    }
    let host = client::Host {
        uri: cli.host,
        tls_dir: cli.tls_dir.unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(std::path::PathBuf::from)
                .unwrap_or_default()
                .join(".swarm")
        }),
    };
    let outcome = match cli.command {
        Command::Daemon(args) => cluster::daemon(args),
        Command::Init(args) => client(cluster::init(&host, *args)),
        Command::Join(args) => client(cluster::join(&host, args)),
        Command::Leave(args) => client(cluster::leave(&host, args)),
        Command::Node(command) => client(cluster::node(&host, command)),
        Command::JoinToken(args) => client(cluster::join_token(&host, args)),
        Command::Unlock(args) => client(lock::unlock(&host, args)),
        Command::UnlockKey(args) => client(lock::unlock_key(&host, args)),
        Command::Cluster(command) => client(lock::cluster(&host, command)),
        Command::ClientCert(args) => client(cluster::client_cert(&host, args)),
        Command::State(command) => client(cluster::state(&host, command)),
        Command::Plan(args) => client(plan::run(&host, args)),
        Command::Apply(args) => client(apply::run(&host, args)),
        Command::Service(command) => client(service::run(&host, command)),
        Command::Network(command) => client(network::run(&host, command)),
        Command::Secret(command) => client(secret::run(
            &host,
            swarm_api::grpc::control::FileKind::Secret,
            command,
        )),
        Command::Config(command) => client(secret::run(
            &host,
            swarm_api::grpc::control::FileKind::Config,
            command,
        )),
        Command::Volume(command) => client(volume::run(&host, command)),
        Command::Stack(command) => client(stack::run(&host, command)),
        Command::Repo(command) => client(repo::run(&host, command)),
        Command::Deploy(command) => client(deploy::run(&host, command)),
        Command::Events(args) => client(events::run(&host, args)),
        Command::Login(args) => registry_auth::login(args),
        Command::Logout(args) => registry_auth::logout(args),
        Command::Completion { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "swarm", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(1)
        }
    }
}

/// Runs a client command, which talks to a daemon, on a small runtime of its own.
fn client(
    command: impl std::future::Future<Output = anyhow::Result<ExitCode>>,
) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(command)
}

/// A command whose output goes to a reader that went away (`swarm node ls | head -1`) ends
/// as other Unix tools do, killed by SIGPIPE (status 141 in a shell), instead of panicking
/// in `println!`. Rust ignores SIGPIPE by default; commands that handle a closed pipe
/// themselves keep it ignored.
fn end_quietly_on_a_closed_pipe() {
    // SAFETY: called first in main, before any thread exists; SIG_DFL is a valid handler.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
