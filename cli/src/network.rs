//! `swarm network create|ls|inspect|rm`: the cluster's networks, their subnets and the
//! addresses their tasks hold.

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use swarm_api::grpc::control::{
    CreateNetworkRequest, InspectNetworkRequest, ListNetworksRequest, RemoveNetworkRequest,
};
use swarm_api::spec::NetworkSpec;
use swarm_node::networks::NetworkView;

use crate::client::{self, Host};
use crate::filter::{NETWORK_KEYS, ObjectFilter};
use crate::output::{Format, ListFormat, Rows, listed_id, print_listing, table};

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Create a network that spans the cluster; its subnet comes from the cluster's pool
    /// unless --subnet gives one
    Create(CreateArgs),
    /// List the networks
    #[command(alias = "list")]
    Ls {
        /// Only the names
        #[arg(long, short)]
        quiet: bool,
        /// Only networks matching KEY=VALUE: id, name (prefixes), label (KEY or KEY=VALUE),
        /// driver; repeat a key for alternatives (labels must all match)
        #[arg(long, short)]
        filter: Vec<String>,
        /// Whole ids
        #[arg(long)]
        no_trunc: bool,
        /// table, json, or a template: `{{.Name}}`, `table {{.ID}}\t{{.Name}}`
        #[arg(long, default_value = "table")]
        format: ListFormat,
    },
    /// Show a network: its subnet, and its tasks' addresses and nodes
    Inspect {
        /// A name, id or unique id prefix
        network: String,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Remove a network no service uses
    #[command(alias = "remove")]
    Rm {
        /// A name, id or unique id prefix
        network: String,
    },
}

/// `swarm network create NAME`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The network's name (letters, digits, '_', '.', '-')
    name: String,
    /// Only overlay: a cluster network spans nodes
    #[arg(long, short, default_value = "overlay")]
    driver: String,
    /// The network's address range, e.g. 10.30.0.0/24
    #[arg(long)]
    subnet: Option<String>,
    /// The subnet's gateway [default: its first address]
    #[arg(long, requires = "subnet")]
    gateway: Option<String>,
    /// Containers started by hand may attach to it
    #[arg(long)]
    attachable: bool,
    /// No route out of the network
    #[arg(long)]
    internal: bool,
    /// A label, key=value (repeatable)
    #[arg(long = "label", value_parser = key_value)]
    labels: Vec<(String, String)>,
}

fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not key=value")),
    }
}

impl CreateArgs {
    fn spec(self) -> NetworkSpec {
        NetworkSpec {
            name: self.name,
            driver: self.driver,
            driver_opts: BTreeMap::new(),
            attachable: self.attachable,
            internal: self.internal,
            labels: self.labels.into_iter().collect(),
            subnets: self.subnet.into_iter().collect(),
            gateway: self.gateway,
        }
    }
}

pub async fn run(host: &Host, command: NetworkCommand) -> anyhow::Result<ExitCode> {
    let mut client = client::connect(host).await?;
    match command {
        NetworkCommand::Create(args) => {
            let spec_json = serde_json::to_string(&args.spec())?;
            let id = client
                .create_network(CreateNetworkRequest { spec_json })
                .await
                .map_err(client::explain)?
                .into_inner()
                .id;
            println!("{id}");
        }
        NetworkCommand::Ls {
            quiet,
            filter,
            no_trunc,
            format,
        } => {
            let filter = ObjectFilter::parse(NETWORK_KEYS, &filter)?;
            let json = client
                .list_networks(ListNetworksRequest {})
                .await
                .map_err(client::explain)?
                .into_inner()
                .json;
            let mut networks: Vec<NetworkView> = serde_json::from_str(&json)?;
            networks.retain(|n| filter.matches(&n.id, &n.name, &n.labels, Some(&n.driver)));
            print_listing(
                &networks,
                &format,
                quiet,
                |n| n.name.as_str(),
                |networks| networks_table(networks, no_trunc),
            )?;
        }
        NetworkCommand::Inspect { network, format } => {
            let json = client
                .inspect_network(InspectNetworkRequest { network })
                .await
                .map_err(client::explain)?
                .into_inner()
                .json;
            let view: NetworkView = serde_json::from_str(&json)?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&view)?),
                Format::Table => print!("{}", describe(&view)),
            }
        }
        NetworkCommand::Rm { network } => {
            client
                .remove_network(RemoveNetworkRequest {
                    network: network.clone(),
                })
                .await
                .map_err(client::explain)?;
            println!("{network}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn networks_table(networks: &[NetworkView], no_trunc: bool) -> Rows<5> {
    let rows: Vec<[String; 5]> = networks
        .iter()
        .map(|n| {
            [
                listed_id(&n.id, no_trunc),
                n.name.clone(),
                n.driver.clone(),
                n.scope.clone(),
                n.subnet.clone().unwrap_or_default(),
            ]
        })
        .collect();
    Rows {
        header: ["ID", "NAME", "DRIVER", "SCOPE", "SUBNET"],
        rows,
    }
}

/// A network as `inspect` prints it: its settings, then a table of its tasks.
fn describe(view: &NetworkView) -> String {
    let mut out = String::new();
    let mut line = |key: &str, value: &str| out.push_str(&format!("{key:<12}{value}\n"));
    line("ID:", &view.id);
    line("Name:", &view.name);
    line("Driver:", &view.driver);
    line("Scope:", &view.scope);
    line(
        "Subnet:",
        view.subnet.as_deref().unwrap_or("(not allocated)"),
    );
    line("Gateway:", view.gateway.as_deref().unwrap_or(""));
    line("Attachable:", &view.attachable.to_string());
    line("Internal:", &view.internal.to_string());
    if let Some(stack) = &view.stack {
        line("Stack:", stack);
    }
    for (key, value) in &view.labels {
        line("Label:", &format!("{key}={value}"));
    }
    let rows: Vec<[String; 4]> = view
        .tasks
        .iter()
        .map(|t| {
            [
                t.name.clone(),
                t.address.clone(),
                t.node.clone(),
                t.state.clone(),
            ]
        })
        .collect();
    if rows.is_empty() {
        out.push_str("Tasks:      none\n");
    } else {
        out.push_str("Tasks:\n");
        out.push_str(&table(["TASK", "ADDRESS", "NODE", "STATE"], &rows));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use swarm_node::networks::NetworkTask;

    #[test]
    fn inspect_shows_the_subnet_and_each_tasks_address_and_node() {
        let view = NetworkView {
            id: "0123456789abcdef".into(),
            name: "back".into(),
            driver: "overlay".into(),
            scope: "swarm".into(),
            attachable: false,
            internal: true,
            labels: [("team".to_owned(), "a".to_owned())].into(),
            stack: None,
            subnet: Some("10.0.0.0/20".into()),
            gateway: Some("10.0.0.1".into()),
            tasks: vec![NetworkTask {
                id: "t1".into(),
                name: "web.1".into(),
                service: "web".into(),
                address: "10.0.0.2".into(),
                node: "host-a".into(),
                state: "running".into(),
            }],
        };
        let text = describe(&view);
        assert!(text.contains("Subnet:     10.0.0.0/20\n"), "{text}");
        assert!(text.contains("Label:      team=a\n"), "{text}");
        assert!(
            text.contains(
                "TASK    ADDRESS    NODE     STATE\nweb.1   10.0.0.2   host-a   running\n"
            ),
            "{text}"
        );
        let table = networks_table(&[view], false).table();
        assert!(table.starts_with("ID"), "{table}");
        assert!(
            table.contains("back   overlay   swarm   10.0.0.0/20"),
            "{table}"
        );
    }

    #[test]
    fn labels_are_key_value() {
        assert_eq!(key_value("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(key_value("=x").is_err());
        assert!(key_value("x").is_err());
    }
}
