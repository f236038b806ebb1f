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
/// Where a service mapping built from flags carries the top-level `volumes:` its `--mount`s
/// declare (name, driver, options); taken out before the document is loaded.
pub(super) const VOLUME_DECLARATIONS: &str = "x-swarm-volumes";
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
    let mut service = service;
    let volumes = service
        .as_object_mut()
        .and_then(|s| s.remove(VOLUME_DECLARATIONS));
    let mut document = json!({ "services": { SERVICE: service } });
    if !externals.is_empty() {
        document["networks"] = Value::Object(externals);
    }
    if let Some(volumes) = volumes {
        document["volumes"] = volumes;
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
        ("deploy.endpoint_mode", "--endpoint-mode"),
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
        ("volumes", "--mount"),
        ("cap_add", "--cap-add"),
        ("cap_drop", "--cap-drop"),
        ("sysctls", "--sysctl"),
        ("ulimits", "--ulimit"),
        ("group_add", "--group"),
        ("extra_hosts", "--add-host"),
        ("dns_search", "--dns-search"),
        ("dns_opt", "--dns-option"),
        ("dns", "--dns"),
        ("init", "--init"),
        ("tty", "--tty"),
        ("oom_score_adj", "--oom-score-adj"),
        ("logging.driver", "--log-driver"),
        ("logging", "--log-opt"),
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

/// A `--publish` value as a Compose port: the short form as written, Docker's long
/// `key=value` form as the long syntax.
pub(super) fn port_document(publish: &str) -> Result<Value, FlagError> {
    // The short form is the stack file's (`8080:80/udp`, a range, a host address): the
    // loader reads it, as Docker's --publish reads it with its Compose parser.
    if !publish.contains('=') {
        return Ok(json!(publish));
    }
    let invalid = |reason: String| FlagError::invalid("publish", publish, reason);
    let mut port = Map::new();
    for part in publish.split(',') {
        match part.split_once('=') {
            Some((key @ ("mode" | "protocol"), value)) => {
                port.insert(key.to_owned(), json!(value));
            }
            Some(("proxy-protocol", value)) => {
                port.insert("proxy_protocol".to_owned(), json!(value));
            }
            Some((key @ ("published" | "target"), value)) => {
                let number: u16 = value
                    .parse()
                    .map_err(|_| invalid(format!("{key} must be a port number")))?;
                port.insert(key.to_owned(), json!(number));
            }
            Some((key, _)) => {
                return Err(invalid(format!(
                    "unknown key {key:?} (published, target, mode, protocol, proxy-protocol)"
                )));
            }
            None => {
                return Err(invalid(format!(
                    "{part:?} is not key=value: the long form is published=P,target=T[,protocol=udp][,mode=host]"
                )));
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

/// A `--mount` value in Docker's syntax (`type=volume,source=db,target=/data,readonly`,
/// `type=bind,src=/srv,dst=/srv,bind-propagation=rshared`,
/// `type=tmpfs,dst=/cache,tmpfs-size=64m,tmpfs-mode=1770`): the service's long-syntax
/// `volumes:` entry, and for a named volume its top-level declaration (its name kept as
/// given, with its driver and options).
pub(super) fn mount_document(
    flag: &'static str,
    text: &str,
) -> Result<(Value, Option<(String, Value)>), FlagError> {
    let invalid = |reason: String| FlagError::invalid(flag, text, reason);
    let mut entry = Map::new();
    let mut kind = "volume".to_owned();
    let mut bind = Map::new();
    let mut volume = Map::new();
    let mut tmpfs = Map::new();
    let mut driver = None;
    let mut driver_opts = Map::new();
    let mut labels = Map::new();
    let flag_bool = |key: &str, value: Option<&str>| match value {
        None | Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(other) => Err(invalid(format!("{key}={other}: expected true or false"))),
    };
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let (key, value) = match part.split_once('=') {
            Some((key, value)) => (key, Some(value)),
            None => (part, None),
        };
        let required = || value.ok_or_else(|| invalid(format!("{key} needs a value ({key}=…)")));
        match key {
            "type" => kind = required()?.to_owned(),
            "source" | "src" => drop(entry.insert("source".into(), json!(required()?))),
            "target" | "destination" | "dst" => {
                entry.insert("target".into(), json!(required()?));
            }
            "readonly" | "ro" => {
                entry.insert("read_only".into(), json!(flag_bool(key, value)?));
            }
            "consistency" => drop(entry.insert("consistency".into(), json!(required()?))),
            "bind-propagation" => drop(bind.insert("propagation".into(), json!(required()?))),
            "volume-nocopy" => drop(volume.insert("nocopy".into(), json!(flag_bool(key, value)?))),
            "volume-driver" => driver = Some(required()?.to_owned()),
            "volume-opt" | "volume-label" => {
                let (name, setting) = required()?
                    .split_once('=')
                    .ok_or_else(|| invalid(format!("{key} takes KEY=VALUE")))?;
                let into = if key == "volume-opt" {
                    &mut driver_opts
                } else {
                    &mut labels
                };
                into.insert(name.to_owned(), json!(setting));
            }
            "tmpfs-size" => drop(tmpfs.insert("size".into(), json!(required()?))),
            "tmpfs-mode" => {
                let mode = required()?;
                let mode = crate::stack::convert::octal_mode(mode).ok_or_else(|| {
                    invalid(format!(
                        "tmpfs-mode {mode}: expected an octal mode such as 1770"
                    ))
                })?;
                tmpfs.insert("mode".into(), json!(mode));
            }
            other => {
                return Err(invalid(format!(
                    "unknown key {other:?}: use type, source, target, readonly, bind-propagation, volume-nocopy, volume-driver, volume-opt, volume-label, tmpfs-size, tmpfs-mode"
                )));
            }
        }
    }
    if !matches!(kind.as_str(), "volume" | "bind" | "tmpfs") {
        return Err(invalid(format!("type {kind:?}: use volume, bind or tmpfs")));
    }
    if !entry.contains_key("target") {
        return Err(invalid("the target is missing (target=/path)".into()));
    }
    entry.insert("type".into(), json!(kind));
    for (key, options) in [("bind", bind), ("volume", volume), ("tmpfs", tmpfs)] {
        if !options.is_empty() {
            entry.insert(key.into(), Value::Object(options));
        }
    }
    let named = (kind == "volume")
        .then(|| {
            entry
                .get("source")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .flatten();
    let declaration = named.map(|name| {
        let mut declaration = Map::new();
        declaration.insert("name".into(), json!(name));
        if let Some(driver) = driver {
            declaration.insert("driver".into(), json!(driver));
        }
        if !driver_opts.is_empty() {
            declaration.insert("driver_opts".into(), Value::Object(driver_opts));
        }
        if !labels.is_empty() {
            declaration.insert("labels".into(), Value::Object(labels));
        }
        (name, Value::Object(declaration))
    });
    Ok((Value::Object(entry), declaration))
}

/// The service's `volumes:` entries for `--mount` values, and the top-level declarations
/// of their named volumes under [`VOLUME_DECLARATIONS`].
pub(super) fn mounts_document(
    flag: &'static str,
    texts: &[String],
    service: &mut Map<String, Value>,
) -> Result<(), FlagError> {
    if texts.is_empty() {
        return Ok(());
    }
    let mut entries = Vec::new();
    let mut declarations = Map::new();
    for text in texts {
        let (entry, declaration) = mount_document(flag, text)?;
        entries.push(entry);
        if let Some((name, declaration)) = declaration {
            declarations.insert(name, declaration);
        }
    }
    service.insert("volumes".into(), Value::Array(entries));
    if !declarations.is_empty() {
        service.insert(VOLUME_DECLARATIONS.into(), Value::Object(declarations));
    }
    Ok(())
}

/// The runtime flags of `service create` and `service update`, as the Compose keys they set.
pub(super) struct RuntimeFlags<'a> {
    pub cap_add: &'a [String],
    pub cap_drop: &'a [String],
    /// `KEY=VALUE`.
    pub sysctls: &'a [String],
    /// `NAME=SOFT[:HARD]`, and the flag they came by (for errors).
    pub ulimits: (&'static str, &'a [String]),
    pub read_only: bool,
    pub groups: &'a [String],
    pub log_driver: Option<&'a str>,
    pub log_opt: &'a [String],
    /// `HOST:ADDRESS`.
    pub hosts: &'a [String],
    pub dns: &'a [String],
    pub dns_search: &'a [String],
    pub dns_options: &'a [String],
    pub init: bool,
    pub tty: bool,
    pub oom_score_adj: Option<i64>,
}

impl RuntimeFlags<'_> {
    /// Puts the keys the flags give (`cap_add`, `sysctls`, `ulimits`, `logging`, …) into the
    /// service's mapping; a key no flag gives stays absent.
    pub(super) fn insert_into(&self, service: &mut Map<String, Value>) -> Result<(), FlagError> {
        let list = |values: &[String]| (!values.is_empty()).then(|| json!(values));
        let (ulimit_flag, ulimits) = self.ulimits;
        let keys = section([
            ("cap_add", list(self.cap_add)),
            ("cap_drop", list(self.cap_drop)),
            ("sysctls", list(self.sysctls)),
            ("ulimits", ulimits_document(ulimit_flag, ulimits)?),
            ("read_only", self.read_only.then(|| json!(true))),
            ("group_add", list(self.groups)),
            ("logging", logging_document(self.log_driver, self.log_opt)?),
            ("extra_hosts", list(self.hosts)),
            ("dns", list(self.dns)),
            ("dns_search", list(self.dns_search)),
            ("dns_opt", list(self.dns_options)),
            ("init", self.init.then(|| json!(true))),
            ("tty", self.tty.then(|| json!(true))),
            ("oom_score_adj", self.oom_score_adj.map(|adj| json!(adj))),
        ]);
        if let Some(Value::Object(keys)) = keys {
            service.extend(keys);
        }
        Ok(())
    }
}

/// `--ulimit NAME=SOFT[:HARD]` values as the `ulimits:` mapping; none when there are none.
fn ulimits_document(flag: &'static str, texts: &[String]) -> Result<Option<Value>, FlagError> {
    let mut ulimits = Map::new();
    for text in texts {
        let invalid = || {
            FlagError::invalid(
                flag,
                text,
                "expected NAME=SOFT[:HARD], e.g. nofile=1024:4096",
            )
        };
        let (name, limits) = text.split_once('=').ok_or_else(invalid)?;
        let number = |n: &str| n.parse::<i64>().map_err(|_| invalid());
        let value = match limits.split_once(':') {
            Some((soft, hard)) => json!({ "soft": number(soft)?, "hard": number(hard)? }),
            None => json!(number(limits)?),
        };
        ulimits.insert(name.to_owned(), value);
    }
    Ok((!ulimits.is_empty()).then_some(Value::Object(ulimits)))
}

/// `--log-driver` and `--log-opt KEY=VALUE` as the `logging:` mapping; none without them.
fn logging_document(driver: Option<&str>, options: &[String]) -> Result<Option<Value>, FlagError> {
    if driver.is_none() && options.is_empty() {
        return Ok(None);
    }
    let options = key_values(options, "log-opt")?;
    let mut logging = json!({ "options": options });
    if let Some(driver) = driver {
        logging["driver"] = json!(driver);
    }
    Ok(Some(logging))
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
