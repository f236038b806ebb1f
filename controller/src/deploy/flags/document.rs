//! The one-service Compose document: flag values in Compose's spelling, loaded by the
//! stack loader into a normalised spec.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value, json};
use swarm_api::spec::ServiceSpec;

use super::FlagError;
use crate::source::SourceTree;
use crate::stack::{self, Severity};

/// The name the one-service document is loaded under: every object is named
/// `<stack>_<service>`, and the service is then given its own name back.
const STACK: &str = "cli";
const FILE: &str = "cli.yaml";
/// The key the service has in the document.
const SERVICE: &str = "service";
/// Docker's longest service name.
const MAX_NAME: usize = 63;

/// The spec of a one-service Compose document built from flags (`service`: the service's
/// mapping), checked and completed by the stack loader; errors name the flags.
pub fn load_service_document(name: &str, service: Value) -> Result<ServiceSpec, FlagError> {
    // The name is the user's, not a stack's `<stack>_<service>`: checked here against the
    // flag, and the document loaded under a placeholder key.
    if !crate::stack::convert::valid_name(name) {
        return Err(FlagError::invalid(
            "name",
            name,
            "use letters, digits, '_', '.' and '-', starting with a letter or digit",
        ));
    }
    if name.len() > MAX_NAME {
        return Err(FlagError::invalid(
            "name",
            name,
            format!("a service name has at most {MAX_NAME} characters"),
        ));
    }
    // The networks a service names are cluster networks: declared external, so that the
    // loader keeps their names (not `<stack>_<name>`).
    let externals: Map<String, Value> = service
        .get("networks")
        .and_then(Value::as_object)
        .map(|networks| {
            networks
                .keys()
                .map(|network| (network.clone(), json!({ "external": true })))
                .collect()
        })
        .unwrap_or_default();
    let mut document = json!({ "services": { SERVICE: service } });
    if !externals.is_empty() {
        document["networks"] = Value::Object(externals);
    }
    // Flags are taken as written (the shell has expanded what it meant to): a `$` is not
    // the stack file's interpolation.
    escape_dollars(&mut document);
    let tree = OneFile(document.to_string().into_bytes());
    let loaded = stack::load(&tree, Path::new(FILE), "command line", &|_| None);
    let errors: Vec<String> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| {
            let field = d.path.trim_start_matches(&format!("services.{SERVICE}."));
            format!("{}: {}", flag_of(field), d.message)
        })
        .collect();
    let Some(mut stack) = loaded.stack.filter(|_| errors.is_empty()) else {
        return Err(FlagError::Service { errors });
    };
    let mut spec = stack.services.remove(0);
    spec.name = name.to_owned();
    // The loader gave each network the document's key as an alias: the name is the one.
    for network in &mut spec.task.networks {
        for alias in &mut network.aliases {
            if alias == SERVICE {
                *alias = name.to_owned();
            }
        }
        network.aliases.sort();
        network.aliases.dedup();
    }
    // The loader attaches a stack's services to the stack's default network, which an
    // imperative service does not have.
    spec.task
        .networks
        .retain(|n| n.target != format!("{STACK}_default"));
    Ok(spec)
}

/// Every `$` of the document's strings written `$$`, which the loader reads as a `$`.
fn escape_dollars(value: &mut Value) {
    match value {
        Value::String(text) => *text = text.replace('$', "$$"),
        Value::Array(items) => items.iter_mut().for_each(escape_dollars),
        Value::Object(entries) => entries.values_mut().for_each(escape_dollars),
        _ => {}
    }
}

/// The flag that sets a field of the one-service document, for error messages.
fn flag_of(field: &str) -> String {
    const FLAGS: &[(&str, &str)] = &[
        ("deploy.replicas", "--replicas"),
        ("deploy.mode", "--mode"),
        ("deploy.labels", "--label"),
        ("deploy.placement.constraints", "--constraint"),
        ("deploy.placement.preferences", "--placement-pref"),
        (
            "deploy.placement.max_replicas_per_node",
            "--replicas-max-per-node",
        ),
        ("deploy.resources.limits.cpus", "--limit-cpu"),
        ("deploy.resources.limits.memory", "--limit-memory"),
        ("deploy.resources.reservations.cpus", "--reserve-cpu"),
        ("deploy.resources.reservations.memory", "--reserve-memory"),
        ("deploy.restart_policy", "--restart-"),
        ("deploy.update_config", "--update-"),
        ("deploy.rollback_config", "--rollback-"),
        ("healthcheck", "--health-"),
        ("ports", "--publish"),
        ("networks", "--network"),
        ("environment", "--env"),
        ("labels", "--container-label"),
        ("image", "IMAGE"),
        ("command", "COMMAND"),
        ("entrypoint", "--entrypoint"),
        ("stop_grace_period", "--stop-grace-period"),
        ("stop_signal", "--stop-signal"),
        ("working_dir", "--workdir"),
        ("user", "--user"),
        ("hostname", "--hostname"),
    ];
    for (prefix, flag) in FLAGS {
        if let Some(rest) = field.strip_prefix(prefix) {
            // `--restart-` + `condition` → `--restart-condition`.
            return match flag.strip_suffix('-') {
                Some(_) => format!("{flag}{}", rest.trim_start_matches('.').replace('_', "-")),
                None => (*flag).to_owned(),
            };
        }
    }
    field.to_owned()
}

/// `KEY=VALUE` items of `--flag`.
pub(super) fn key_values(
    items: &[String],
    flag: &'static str,
) -> Result<BTreeMap<String, String>, FlagError> {
    items
        .iter()
        .map(|item| match item.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
            _ => Err(FlagError::invalid(flag, item, "expected KEY=VALUE")),
        })
        .collect()
}

/// A `--publish` value as a Compose long-syntax port.
pub(super) fn port_document(publish: &str) -> Result<Value, FlagError> {
    let invalid = |reason: String| FlagError::invalid("publish", publish, reason);
    let mut port = Map::new();
    for part in publish.split(',') {
        match part.split_once('=') {
            Some((key @ ("mode" | "protocol"), value)) => {
                port.insert(key.to_owned(), json!(value));
            }
            Some((key @ ("published" | "target"), value)) => {
                let number: u16 = value
                    .parse()
                    .map_err(|_| invalid(format!("{key} must be a port number")))?;
                port.insert(key.to_owned(), json!(number));
            }
            Some((key, _)) => {
                return Err(invalid(format!(
                    "unknown key {key:?} (published, target, mode, protocol)"
                )));
            }
            None => {
                let (ports, protocol) = match part.split_once('/') {
                    Some((ports, protocol)) => (ports, Some(protocol)),
                    None => (part, None),
                };
                let (published, target) = match ports.split_once(':') {
                    Some((published, target)) => (Some(published), target),
                    None => (None, ports),
                };
                let number = |text: &str| -> Result<u16, FlagError> {
                    text.parse()
                        .map_err(|_| invalid(format!("{text:?} is not a port number")))
                };
                port.insert("target".into(), json!(number(target)?));
                if let Some(published) = published {
                    port.insert("published".into(), json!(number(published)?));
                }
                if let Some(protocol) = protocol {
                    port.insert("protocol".into(), json!(protocol));
                }
            }
        }
    }
    if !port.contains_key("target") {
        return Err(invalid("the target port is missing".into()));
    }
    Ok(Value::Object(port))
}

/// A `--network` value, `NAME` or Docker's long syntax `name=NAME,alias=A[,alias=B]`: the
/// network's name and its Compose attachment.
pub(super) fn network_document(
    flag: &'static str,
    text: &str,
) -> Result<(String, Value), FlagError> {
    let invalid = |reason: &str| FlagError::invalid(flag, text, reason);
    if !text.contains('=') {
        return Ok((text.to_owned(), json!({})));
    }
    let mut name = None;
    let mut aliases = Vec::new();
    for part in text.split(',') {
        match part.split_once('=') {
            Some(("name", value)) => name = Some(value.to_owned()),
            Some(("alias", value)) => aliases.push(value.to_owned()),
            _ => return Err(invalid("expected NAME or name=NAME,alias=ALIAS")),
        }
    }
    let name = name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| invalid("the network's name is missing"))?;
    Ok((name, json!({ "aliases": aliases })))
}

/// A mapping of the entries that have a value; none when no entry has one.
pub(super) fn section<'a>(
    entries: impl IntoIterator<Item = (&'a str, Option<Value>)>,
) -> Option<Value> {
    let map: Map<String, Value> = entries
        .into_iter()
        .filter_map(|(key, value)| Some((key.to_owned(), value?)))
        .collect();
    (!map.is_empty()).then_some(Value::Object(map))
}

/// The one-service document, as the loader reads files.
struct OneFile(Vec<u8>);

impl SourceTree for OneFile {
    fn read(&self, path: &Path) -> std::io::Result<Option<Vec<u8>>> {
        Ok((path == Path::new(FILE)).then(|| self.0.clone()))
    }

    fn list(&self, _dir: &Path) -> std::io::Result<Option<Vec<String>>> {
        Ok(None)
    }
}
