//! `swarm stack deploy|ls|services|ps|rm`: a stack file applied to the cluster as one plan
//! — the plan `swarm plan --state` would print against the cluster's state, applied all or
//! nothing, and refused if the state moved meanwhile. Loading and planning are
//! `swarm_controller::deploy`'s; this file talks to the daemon and prints.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::Subcommand;
use swarm_controller::deploy::{self, WorkingCopy};
use swarm_controller::plan::render;

use crate::client::{Host, view};
use crate::output::{ListFormat, Rows, print_diagnostics, print_services};
use crate::plans::{self, Sending};
use crate::tasks::{TaskListArgs, hostname, print_tasks};

#[derive(Debug, Subcommand)]
pub enum StackCommand {
    /// Deploy a new stack or update an existing one
    #[command(alias = "up")]
    Deploy {
        /// The stack file (Compose format); several are merged, each overriding those before it
        #[arg(long = "compose-file", short = 'c', required = true)]
        compose_files: Vec<PathBuf>,
        /// Remove the services of the stack that the file no longer declares
        #[arg(long)]
        prune: bool,
        /// Send the registry credentials of Docker's client config to the nodes
        #[arg(long)]
        with_registry_auth: bool,
        #[command(flatten)]
        wait: crate::converge::Wait,
        /// The stack's name: its objects are named NAME_<key>
        name: String,
    },
    /// List stacks
    #[command(alias = "list")]
    Ls {
        /// Only the names
        #[arg(long, short)]
        quiet: bool,
        /// table, json, or a template: `{{.Name}}`, `table {{.Name}}\t{{.Services}}`
        #[arg(long, default_value = "table")]
        format: ListFormat,
    },
    /// List the services of a stack
    Services {
        name: String,
        /// Only services matching KEY=VALUE, as `service ls --filter`: id, label, mode, name
        #[arg(long, short)]
        filter: Vec<String>,
        /// Only the IDs
        #[arg(long, short)]
        quiet: bool,
        /// Whole ids
        #[arg(long)]
        no_trunc: bool,
        /// table, json, or a template: `{{.Name}}`, `table {{.Name}}\t{{.Replicas}}`
        #[arg(long, default_value = "table")]
        format: ListFormat,
    },
    /// List the tasks of a stack
    Ps {
        name: String,
        #[command(flatten)]
        listing: TaskListArgs,
    },
    /// Remove stacks
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

pub async fn run(host: &Host, command: StackCommand) -> anyhow::Result<ExitCode> {
    match command {
        StackCommand::Deploy {
            compose_files,
            prune,
            with_registry_auth,
            wait,
            name,
        } => {
            let options = DeployOptions {
                prune,
                with_registry_auth,
                wait,
            };
            deploy(host, &compose_files, options, &name).await
        }
        StackCommand::Ls { quiet, format } => {
            let view = view(host).await?;
            let mut stacks: BTreeMap<&str, usize> = BTreeMap::new();
            for object in &view.services {
                if let Some(stack) = object.origin.stack.as_deref() {
                    *stacks.entry(stack).or_default() += 1;
                }
            }
            if format == ListFormat::Json {
                let listed: Vec<serde_json::Value> = stacks
                    .iter()
                    .map(|(name, count)| serde_json::json!({"name": name, "services": count}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&listed)?);
                return Ok(ExitCode::SUCCESS);
            }
            if quiet {
                for name in stacks.keys() {
                    println!("{name}");
                }
                return Ok(ExitCode::SUCCESS);
            }
            let rows = Rows {
                header: ["NAME", "SERVICES"],
                rows: stacks
                    .iter()
                    .map(|(name, count)| [name.to_string(), count.to_string()])
                    .collect(),
            };
            print!("{}", rows.render(&format)?);
            Ok(ExitCode::SUCCESS)
        }
        StackCommand::Services {
            name,
            filter,
            quiet,
            no_trunc,
            format,
        } => {
            let filter = crate::filter::ServiceFilter::parse(&filter)?;
            let mut view = view(host).await?;
            view.services
                .retain(|s| s.origin.stack.as_deref() == Some(name.as_str()));
            if view.services.is_empty() {
                bail!("nothing found in stack {name}: `swarm stack ls` lists the stacks");
            }
            view.services.retain(|s| filter.matches(s));
            if view.services.is_empty() {
                // As Docker: nothing matched is said, and is no error.
                eprintln!("Nothing found in stack: {name}");
                return Ok(ExitCode::SUCCESS);
            }
            print_services(&view, quiet, &format, no_trunc)?;
            Ok(ExitCode::SUCCESS)
        }
        StackCommand::Ps { name, listing } => {
            let view = view(host).await?;
            let services: Vec<String> = view
                .services
                .iter()
                .filter(|s| s.origin.stack.as_deref() == Some(name.as_str()))
                .map(|s| s.spec.name.clone())
                .collect();
            if services.is_empty() {
                bail!("nothing found in stack {name}: `swarm stack ls` lists the stacks");
            }
            let filter = listing.filter()?;
            let tasks = view
                .tasks
                .iter()
                .filter(|t| services.contains(&t.service_name))
                .filter(|t| filter.matches(t, hostname(&view, t)))
                .collect();
            print_tasks(&view, tasks, &listing)?;
            Ok(ExitCode::SUCCESS)
        }
        StackCommand::Rm { names } => {
            let plan = deploy::plan_removal(&names, &plans::cluster_state(host).await?)?;
            plans::apply(host, &plan, Sending::default()).await?;
            for name in &names {
                println!("Removing stack {name}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// How `stack deploy` goes about it.
struct DeployOptions {
    /// Remove the services the file dropped.
    prune: bool,
    /// Send every service of the stack the credentials of its image's registry.
    with_registry_auth: bool,
    /// How to wait for each changed service.
    wait: crate::converge::Wait,
}

async fn deploy(
    host: &Host,
    files: &[PathBuf],
    options: DeployOptions,
    name: &str,
) -> anyhow::Result<ExitCode> {
    let env = |variable: &str| std::env::var(variable).ok();
    let loaded = deploy::load_stack(&WorkingCopy::default(), files, name, &env);
    print_diagnostics(&loaded.diagnostics);
    let Some(desired) = loaded.stack else {
        let displays: Vec<String> = files
            .iter()
            .map(|f| f.to_string_lossy().into_owned())
            .collect();
        bail!("{} is invalid; nothing was deployed", displays.join(" + "));
    };
    let current = plans::cluster_state(host).await?;
    let plan = deploy::plan_stack(&desired, &current, options.prune)?;
    let registry_auth = if options.with_registry_auth {
        let images = desired
            .services
            .iter()
            .map(|s| (s.name.as_str(), s.task.container.image.as_str()));
        plans::registry_auth(images)?
    } else {
        BTreeMap::new()
    };
    // Fresh credentials are worth sending to unchanged services too (Docker's rule).
    if !plan.has_changes() && !options.with_registry_auth {
        println!("Stack {name} is up to date.");
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", render::text(&plan, false));
    let sending = Sending {
        registry_auth,
        force: false,
        file_contents: swarm_controller::plan::contents(&plan, std::slice::from_ref(&desired)),
    };
    plans::apply(host, &plan, sending).await?;
    let changed = plans::changed_services(&plan)
        .into_iter()
        .map(|(name, _)| name);
    plans::wait_for(host, &options.wait, changed).await?;
    Ok(ExitCode::SUCCESS)
}
