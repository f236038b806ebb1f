//! `swarm volume ls|inspect|rm|prune`: the volumes of the node asked, as `docker volume` shows
//! one engine's.

use std::process::ExitCode;

use clap::Subcommand;
use swarm_api::grpc::control::{
    InspectVolumeRequest, ListVolumesRequest, PruneVolumesRequest, RemoveVolumeRequest,
};
use swarm_api::units::ByteSize;
use swarm_api::volume::VolumeInfo;

use crate::client::{self, Host};
use crate::output::{ListFormat, Rows, print_listing};

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// List this node's volumes
    #[command(alias = "list")]
    Ls {
        /// Only the names
        #[arg(long, short)]
        quiet: bool,
        /// table, json, or a template: `{{.Name}}`, `table {{.ID}}\t{{.Name}}`
        #[arg(long, default_value = "table")]
        format: ListFormat,
    },
    /// Show volumes: where their data is, their options and the containers using them
    Inspect {
        #[arg(required = true)]
        volumes: Vec<String>,
    },
    /// Remove volumes no container uses, with their data
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        volumes: Vec<String>,
    },
    /// Remove every volume no container uses
    Prune,
}

pub async fn run(host: &Host, command: VolumeCommand) -> anyhow::Result<ExitCode> {
    let mut client = client::connect(host).await?;
    match command {
        VolumeCommand::Ls { quiet, format } => {
            let json = client
                .list_volumes(ListVolumesRequest {})
                .await
                .map_err(client::explain)?
                .into_inner()
                .json;
            let volumes: Vec<VolumeInfo> = serde_json::from_str(&json)?;
            print_listing(&volumes, &format, quiet, |v| v.name.as_str(), volumes_table)?;
        }
        VolumeCommand::Inspect { volumes } => {
            let mut found = Vec::new();
            for name in volumes {
                let json = client
                    .inspect_volume(InspectVolumeRequest { name })
                    .await
                    .map_err(client::explain)?
                    .into_inner()
                    .json;
                found.push(serde_json::from_str::<VolumeInfo>(&json)?);
            }
            println!("{}", serde_json::to_string_pretty(&found)?);
        }
        VolumeCommand::Rm { volumes } => {
            for name in volumes {
                client
                    .remove_volume(RemoveVolumeRequest { name: name.clone() })
                    .await
                    .map_err(client::explain)?;
                println!("{name}");
            }
        }
        VolumeCommand::Prune => {
            let pruned = client
                .prune_volumes(PruneVolumesRequest {})
                .await
                .map_err(client::explain)?
                .into_inner();
            if !pruned.removed.is_empty() {
                println!("Deleted Volumes:");
                for name in &pruned.removed {
                    println!("{name}");
                }
                println!();
            }
            println!(
                "Total reclaimed space: {}",
                ByteSize(pruned.reclaimed_bytes)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn volumes_table(volumes: &[VolumeInfo]) -> Rows<4> {
    let rows: Vec<[String; 4]> = volumes
        .iter()
        .map(|v| {
            [
                v.driver.clone(),
                v.name.clone(),
                ByteSize(v.size_bytes).to_string(),
                v.used_by.len().to_string(),
            ]
        })
        .collect();
    Rows {
        header: ["DRIVER", "VOLUME NAME", "SIZE", "CONTAINERS"],
        rows,
    }
}
