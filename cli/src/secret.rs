//! `swarm secret|config create|ls|inspect|rm`: the cluster's secrets and configs. The
//! content goes to the managers once, at `create`; nothing here ever prints it.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use swarm_api::grpc::control::{
    CreateFileObjectRequest, FileKind, InspectFileObjectRequest, ListFileObjectsRequest,
    RemoveFileObjectRequest,
};
use swarm_node::files::FileObjectView;

use crate::client::{self, Host};
use crate::filter::{FILE_OBJECT_KEYS, ObjectFilter};
use crate::output::{Format, ListFormat, Rows, listed_id, print_listing};

/// The same commands for secrets and configs (as Docker's).
#[derive(Debug, Subcommand)]
pub enum FileCommand {
    /// Create one from a file, or from stdin with `-`
    Create {
        /// Its name (no '/')
        name: String,
        /// The file that holds its content, or `-` for stdin
        file: PathBuf,
        /// A label, key=value (repeatable)
        #[arg(long = "label", value_parser = key_value)]
        labels: Vec<(String, String)>,
    },
    /// List them
    #[command(alias = "list")]
    Ls {
        /// Only the names
        #[arg(long, short)]
        quiet: bool,
        /// Only those matching KEY=VALUE: id, name (prefixes), label (KEY or KEY=VALUE);
        /// repeat a key for alternatives (labels must all match)
        #[arg(long, short)]
        filter: Vec<String>,
        /// Whole ids
        #[arg(long)]
        no_trunc: bool,
        /// table, json, or a template: `{{.Name}}`, `table {{.ID}}\t{{.Name}}`
        #[arg(long, default_value = "table")]
        format: ListFormat,
    },
    /// Show one (never its content)
    Inspect {
        /// A name, id or unique id prefix
        object: String,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Remove ones no service uses
    #[command(alias = "remove")]
    Rm {
        /// Names, ids or unique id prefixes
        #[arg(required = true)]
        objects: Vec<String>,
    },
}

fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not key=value")),
    }
}

fn read_content(file: &PathBuf) -> anyhow::Result<Vec<u8>> {
    if file.as_os_str() == "-" {
        let mut content = Vec::new();
        std::io::stdin()
            .read_to_end(&mut content)
            .context("cannot read the content from stdin")?;
        return Ok(content);
    }
    std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))
}

pub async fn run(host: &Host, kind: FileKind, command: FileCommand) -> anyhow::Result<ExitCode> {
    let kind_number = kind as i32;
    let mut client = client::connect(host).await?;
    match command {
        FileCommand::Create { name, file, labels } => {
            let content = read_content(&file)?;
            let id = client
                .create_file_object(CreateFileObjectRequest {
                    kind: kind_number,
                    name,
                    labels: labels.into_iter().collect(),
                    content,
                })
                .await
                .map_err(client::explain)?
                .into_inner()
                .id;
            println!("{id}");
        }
        FileCommand::Ls {
            quiet,
            filter,
            no_trunc,
            format,
        } => {
            let filter = ObjectFilter::parse(FILE_OBJECT_KEYS, &filter)?;
            let json = client
                .list_file_objects(ListFileObjectsRequest { kind: kind_number })
                .await
                .map_err(client::explain)?
                .into_inner()
                .json;
            let mut list: Vec<FileObjectView> = serde_json::from_str(&json)?;
            list.retain(|o| filter.matches(&o.id, &o.name, &o.labels, None));
            print_listing(
                &list,
                &format,
                quiet,
                |o| o.name.as_str(),
                |list| list_table(list, no_trunc),
            )?;
        }
        FileCommand::Inspect { object, format } => {
            let json = client
                .inspect_file_object(InspectFileObjectRequest {
                    kind: kind_number,
                    object,
                })
                .await
                .map_err(client::explain)?
                .into_inner()
                .json;
            let view: FileObjectView = serde_json::from_str(&json)?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&view)?),
                Format::Table => print!("{}", describe(&view)),
            }
        }
        FileCommand::Rm { objects } => {
            for object in objects {
                client
                    .remove_file_object(RemoveFileObjectRequest {
                        kind: kind_number,
                        object: object.clone(),
                    })
                    .await
                    .map_err(client::explain)?;
                println!("{object}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn list_table(list: &[FileObjectView], no_trunc: bool) -> Rows<4> {
    let rows: Vec<[String; 4]> = list
        .iter()
        .map(|o| {
            [
                listed_id(&o.id, no_trunc),
                o.name.clone(),
                o.stack.clone().unwrap_or_default(),
                o.services.join(","),
            ]
        })
        .collect();
    Rows {
        header: ["ID", "NAME", "STACK", "SERVICES"],
        rows,
    }
}

fn describe(view: &FileObjectView) -> String {
    let mut out = String::new();
    let mut line = |key: &str, value: &str| out.push_str(&format!("{key:<10}{value}\n"));
    line("ID:", &view.id);
    line("Name:", &view.name);
    line("Digest:", &view.digest);
    if let Some(stack) = &view.stack {
        line("Stack:", stack);
    }
    for (key, value) in &view.labels {
        line("Label:", &format!("{key}={value}"));
    }
    line("Services:", &view.services.join(", "));
    out
}
