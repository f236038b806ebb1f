//! Stack files → validated, normalised specs. Pure apart from the `SourceTree` it reads the
//! stack file and the files it names from.
//!
//! The flow: bytes → YAML tree with positions and interpolated values (`yaml`) → checked
//! against the JSON Schema of the format (`decode`) → the format's types
//! (`swarm_api::stackfile`) → normalised specs (`convert`). Every stage reports all it
//! finds, each finding with file:line:column and the field path.

pub(crate) mod convert;
mod decode;
pub mod diagnostic;
pub mod dotenv;
pub mod interpolate;
pub mod merge;
pub mod yaml;

use std::path::Path;
use std::sync::OnceLock;

use swarm_api::plan::Kind;
use swarm_api::spec::{FileObjectSpec, NetworkSpec, ServiceSpec};
use swarm_api::stackfile::StackFile;
use swarm_api::state::{ClusterState, Object, Origin};

pub use diagnostic::{Diagnostic, Diagnostics, Severity, Span};

use crate::source::SourceTree;

/// A stack as the cluster runs it: every object fully named and normalised.
#[derive(Debug, Clone, PartialEq)]
pub struct Stack {
    pub name: String,
    /// The stack file, as named to the loader.
    pub source: String,
    /// Sorted by name, as every list here.
    pub services: Vec<ServiceSpec>,
    pub networks: Vec<NetworkSpec>,
    pub configs: Vec<FileObjectSpec>,
    pub secrets: Vec<FileObjectSpec>,
    /// The objects declared `external: true` that its services use: they must exist in the
    /// cluster (sorted).
    pub externals: Vec<(Kind, String)>,
    /// The contents of its configs and secrets, by digest: what a plan deploying it carries
    /// beside its actions.
    pub contents: swarm_api::files::FileContents,
}

impl Stack {
    pub fn origin(&self) -> Origin {
        Origin {
            stack: Some(self.name.clone()),
            source: Some(self.source.clone()),
        }
    }
}

/// The state a cluster holds once `stacks` are applied to an empty one.
pub fn as_state(stacks: &[Stack]) -> ClusterState {
    fn objects<S: Clone>(stack: &Stack, specs: &[S]) -> impl Iterator<Item = Object<S>> {
        specs.iter().map(|spec| Object {
            id: None,
            origin: stack.origin(),
            spec: spec.clone(),
        })
    }
    let mut state = ClusterState::empty();
    for stack in stacks {
        state.services.extend(objects(stack, &stack.services));
        state.networks.extend(objects(stack, &stack.networks));
        state.configs.extend(objects(stack, &stack.configs));
        state.secrets.extend(objects(stack, &stack.secrets));
    }
    state
}

/// What loading a stack file gave: the stack when it has no errors, and every finding.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub stack: Option<Stack>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Loads the stack file at `path` from `tree`. `env` gives the variables of the environment,
/// which win over those of a `.env` file beside the stack. `display` names the file in findings.
pub fn load(
    tree: &dyn SourceTree,
    path: &Path,
    display: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Loaded {
    load_named(tree, path, display, env, None)
}

/// As [`load`], with the stack named `name` whatever the file says (`swarm stack deploy
/// -c FILE NAME`).
pub fn load_named(
    tree: &dyn SourceTree,
    path: &Path,
    display: &str,
    env: &dyn Fn(&str) -> Option<String>,
    name: Option<&str>,
) -> Loaded {
    load_files(tree, &[(path, display)], env, name)
}

/// One stack from several files (`path`, `display`), each overriding those before it
/// (`swarm stack deploy -c base.yaml -c prod.yaml NAME`, see [`merge`]). Variables and
/// relative paths are those of the first file's directory, as Compose's project directory.
pub fn load_files(
    tree: &dyn SourceTree,
    files: &[(&Path, &str)],
    env: &dyn Fn(&str) -> Option<String>,
    name: Option<&str>,
) -> Loaded {
    let Some(&(_, first_display)) = files.first() else {
        return Loaded {
            stack: None,
            diagnostics: Vec::new(),
        };
    };
    let mut diags = Diagnostics::new(first_display);
    let stack = load_into(tree, files, env, name, &mut diags);
    let has_errors = diags.has_errors();
    Loaded {
        stack: stack.filter(|_| !has_errors),
        diagnostics: diags.into_sorted(),
    }
}

fn load_into(
    tree: &dyn SourceTree,
    files: &[(&Path, &str)],
    env: &dyn Fn(&str) -> Option<String>,
    name: Option<&str>,
    diags: &mut Diagnostics,
) -> Option<Stack> {
    let (path, display) = files[0];
    let dir = path.parent().unwrap_or(Path::new(""));
    let dotenv_vars = read_dotenv(tree, dir, display, diags);
    let lookup = |name: &str| {
        env(name).or_else(|| {
            dotenv_vars
                .iter()
                .rev()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        })
    };
    let mut roots = Vec::new();
    for (i, &(path, display)) in files.iter().enumerate() {
        if i > 0 {
            diags.next_file(display);
        }
        roots.push(read_tree(tree, path, &lookup, diags));
    }
    // Every file is read (and its findings reported) before any is refused.
    let root = roots
        .into_iter()
        .collect::<Option<Vec<yaml::Node>>>()?
        .into_iter()
        .reduce(merge::merge)?;
    // Conversion runs on what the schema check left even after errors, so that one run
    // reports every finding (the stack is refused in the end all the same).
    let json = decode::decode(&root, stack_schema(), diags)?;
    let file: StackFile = match serde_json::from_value(json) {
        Ok(file) => file,
        Err(_) if diags.has_errors() => return None,
        Err(e) => {
            // The schema check admits only what the types read; this is a bug if it happens.
            diags.error(None, "", format!("cannot read the stack file: {e}"));
            return None;
        }
    };
    let given = name;
    let (name, origin) = match (given, &file.name) {
        (Some(name), _) => (name.to_owned(), NameOrigin::Given),
        (None, Some(name)) => (name.clone(), NameOrigin::Key),
        (None, None) => name_from_path(tree, path),
    };
    if !convert::valid_stack_name(&name) {
        let rule = "stack names are letters, digits, '_' and '-', starting with a letter or a \
            digit: Docker refuses others (such as '.' and '+') in the names of services";
        match origin {
            NameOrigin::Given => {
                diags
                    .error(None, "", format!("invalid stack name {name:?}"))
                    .help(rule);
            }
            NameOrigin::Key => {
                let span = root.entry("name").map(|e| e.value.span);
                diags
                    .error(span, "name", format!("invalid stack name {name:?}"))
                    .help(rule);
            }
            NameOrigin::Path(from) => {
                diags
                    .error(
                        None,
                        "",
                        format!("the stack name {name:?} taken from the {from} is not valid"),
                    )
                    .help(format!(
                        "{rule}; set `name:` in the file, or rename the {}",
                        from.trim_end_matches(" name")
                    ));
            }
        }
        return None;
    }
    let mut converter = convert::Converter {
        stack: name,
        dir,
        tree,
        lookup: &lookup,
        diags,
        refused_sections: Default::default(),
    };
    let sources: Vec<&str> = files.iter().map(|&(_, display)| display).collect();
    Some(converter.convert(&file, &root, sources.join(" + ")))
}

/// Where a stack's name came from, for the error when it is not valid.
enum NameOrigin {
    /// The caller's (`swarm stack deploy -c FILE NAME`).
    Given,
    /// The file's `name:`.
    Key,
    /// The file's path: "file name" or "folder name".
    Path(&'static str),
}

/// The name a stack file gives when it says none: its folder's for a Compose default file
/// name (`web/docker-compose.yml` is stack `web`, as Compose names a project), else its
/// file name without the extension.
fn name_from_path(tree: &dyn SourceTree, path: &Path) -> (String, NameOrigin) {
    if crate::source::is_compose_file_name(path) {
        let folder = match path.parent().and_then(Path::file_name) {
            Some(folder) => Some(folder.to_owned()),
            None => tree
                .absolute(path)
                .parent()
                .and_then(Path::file_name)
                .map(ToOwned::to_owned),
        };
        if let Some(folder) = folder {
            return (
                folder.to_string_lossy().into_owned(),
                NameOrigin::Path("folder name"),
            );
        }
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    (stem, NameOrigin::Path("file name"))
}

/// One file's tree, a mapping; `None` (reported) when it cannot be.
fn read_tree(
    tree: &dyn SourceTree,
    path: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
    diags: &mut Diagnostics,
) -> Option<yaml::Node> {
    let bytes = match tree.read(path) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => {
            diags.error(None, "", "no such file");
            return None;
        }
        Err(e) => {
            diags.error(None, "", format!("cannot read the file: {e}"));
            return None;
        }
    };
    let text = match decode_text(bytes) {
        Ok(text) => text,
        Err(reason) => {
            diags.error(None, "", reason);
            return None;
        }
    };
    let Some(root) = yaml::load(&text, lookup, diags) else {
        if !diags.has_errors() {
            diags
                .error(None, "", "the file is empty")
                .help("a stack file is a mapping with `services:` at the top");
        }
        return None;
    };
    if !matches!(root.value, yaml::Value::Mapping(_)) {
        diags.error(
            Some(root.span),
            "",
            format!(
                "expected a mapping with `services:` at the top, found {}",
                root.describe()
            ),
        );
        return None;
    }
    Some(root)
}

/// A stack file's text: UTF-8, or UTF-16 after its byte-order mark, without the mark (which
/// Windows editors write and Docker's YAML reader skips).
fn decode_text(bytes: Vec<u8>) -> Result<String, String> {
    let utf16 = |little: bool| {
        let units = bytes[2..].chunks(2).map(|pair| match (pair, little) {
            ([low, high], true) => Ok(u16::from_le_bytes([*low, *high])),
            ([high, low], false) => Ok(u16::from_be_bytes([*high, *low])),
            _ => Err("the file is UTF-16 text cut in the middle of a character".to_owned()),
        });
        char::decode_utf16(units.collect::<Result<Vec<u16>, String>>()?)
            .collect::<Result<String, _>>()
            .map_err(|_| "the file is not valid UTF-16 text".to_owned())
    };
    match bytes.as_slice() {
        [0xff, 0xfe, ..] => utf16(true),
        [0xfe, 0xff, ..] => utf16(false),
        _ => match String::from_utf8(bytes) {
            Ok(text) => Ok(text
                .strip_prefix('\u{feff}')
                .map(str::to_owned)
                .unwrap_or(text)),
            Err(e) => Err(format!(
                "the file is not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            )),
        },
    }
}

fn read_dotenv(
    tree: &dyn SourceTree,
    dir: &Path,
    display: &str,
    diags: &mut Diagnostics,
) -> Vec<(String, String)> {
    let path = dir.join(".env");
    match tree.read(&path) {
        Ok(Some(bytes)) => match dotenv::parse(&String::from_utf8_lossy(&bytes)) {
            // A `KEY` alone is the environment's, which interpolation asks first anyway.
            Ok(vars) => vars
                .into_iter()
                .filter_map(|(key, value)| Some((key, value?)))
                .collect(),
            Err(e) => {
                diags
                    .error(
                        None,
                        "",
                        format!("{}:{}: {}", path.display(), e.line, e.message),
                    )
                    .help(format!(
                        "the .env beside {display} gives variables for interpolation"
                    ));
                Vec::new()
            }
        },
        Ok(None) => Vec::new(),
        Err(e) => {
            diags.error(None, "", format!("cannot read {}: {e}", path.display()));
            Vec::new()
        }
    }
}

/// The stack file schema as JSON, built once.
fn stack_schema() -> &'static serde_json::Value {
    static SCHEMA: OnceLock<serde_json::Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        serde_json::to_value(swarm_api::stackfile::json_schema()).expect("the schema is JSON")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::WorkTree;
    use swarm_api::spec::{RestartCondition, ServiceMode};

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn load_text(text: &str) -> Loaded {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "app.yaml", text);
        load(&WorkTree, &path, "app.yaml", &|_| None)
    }

    #[test]
    fn two_spellings_of_one_intent_give_equal_specs() {
        let short = load_text(
            "services:\n  web:\n    image: nginx:1.27\n    ports: [\"8080:80\", \"53:53/udp\"]\n    environment: [B=2, A=1]\n    command: nginx -g 'daemon off;'\n    deploy:\n      placement:\n        constraints: [node.labels.zone!=b, node.role==worker]\n      resources:\n        limits: {memory: 512M, cpus: 0.5}\n",
        );
        let long = load_text(
            "version: \"3.8\"\nservices:\n  web:\n    image: nginx:1.27\n    command: [nginx, -g, daemon off;]\n    environment:\n      A: 1\n      B: \"2\"\n    ports:\n      - {target: 53, published: 53, protocol: udp, mode: ingress}\n      - target: 80\n        published: \"8080\"\n    stop_grace_period: 10s\n    deploy:\n      mode: replicated\n      replicas: 1\n      endpoint_mode: vip\n      restart_policy: {condition: any, delay: 5s}\n      update_config: {parallelism: 1, order: stop-first, failure_action: pause, monitor: 5s}\n      placement:\n        constraints:\n          - node.role == worker\n          - node.labels.zone != b\n          - node.role == worker\n      resources:\n        limits: {memory: 0.5g, cpus: \"0.50\"}\nnetworks:\n  default:\n",
        );
        let (short, long) = (short.stack.unwrap(), long.stack.unwrap());
        assert_eq!(short.services, long.services);
        assert_eq!(short.networks, long.networks);
    }

    /// An item that interpolates to nothing is an empty string, as in Docker; a null item is
    /// called null.
    #[test]
    fn an_item_interpolated_to_nothing_is_an_empty_string() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "app.yaml",
            "services:\n  web:\n    image: nginx\n    command: [\"echo\", \"${EMPTY}\", $UNSET]\n",
        );
        let env = |name: &str| (name == "EMPTY").then(String::new);
        let loaded = load(&WorkTree, &path, "app.yaml", &env);
        assert!(loaded.stack.is_some(), "{:?}", loaded.diagnostics);
        let command = &loaded.stack.unwrap().services[0].task.container.command;
        assert_eq!(
            command.as_deref(),
            Some(&["echo".to_owned(), String::new(), String::new()][..])
        );

        let loaded = load_text("services:\n  web:\n    image: nginx\n    command: [echo, ~]\n");
        let messages: Vec<String> = loaded.diagnostics.iter().map(|d| d.to_string()).collect();
        assert!(
            messages.iter().any(|m| m.contains("found nothing (null)")),
            "{messages:?}"
        );
    }

    /// A secret's content may come from a variable (Compose's `environment:`): its value is
    /// the content, kept beside the specs; an unset variable is an error naming it.
    #[test]
    fn a_secret_from_a_variable_holds_its_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "app.yaml",
            "services:\n  web:\n    image: nginx\n    secrets: [token]\nsecrets:\n  token:\n    environment: API_TOKEN\n",
        );
        let env = |name: &str| (name == "API_TOKEN").then(|| "from-the-env".to_owned());
        let loaded = load(&WorkTree, &path, "app.yaml", &env);
        let stack = loaded.stack.expect("valid");
        let digest = swarm_api::files::digest_of(b"from-the-env");
        assert_eq!(stack.secrets[0].digest, digest);
        assert_eq!(stack.contents[&digest].bytes(), b"from-the-env");
        let pinned = &stack.services[0].task.container.secrets[0].digest;
        assert_eq!(pinned.as_deref(), Some(digest.as_str()));

        let loaded = load(&WorkTree, &path, "app.yaml", &|_| None);
        let messages: Vec<String> = loaded.diagnostics.iter().map(|d| d.to_string()).collect();
        assert!(
            messages
                .iter()
                .any(|m| m.contains("secrets.token.environment: the variable API_TOKEN is not set")),
            "{messages:?}"
        );
    }

    /// A service may name the implicit `default` network beside its others, as Docker allows.
    #[test]
    fn the_default_network_may_be_named_explicitly() {
        let loaded = load_text(
            "services:\n  web:\n    image: nginx\n    networks: [default, back]\n  db:\n    image: postgres\n    networks:\n      default:\n        aliases: [database]\nnetworks:\n  back:\n",
        );
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
        let stack = loaded.stack.unwrap();
        let networks: Vec<&str> = stack.networks.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(networks, ["app_back", "app_default"]);
        let targets = |service: usize| -> Vec<String> {
            stack.services[service]
                .task
                .networks
                .iter()
                .map(|n| n.target.clone())
                .collect()
        };
        assert_eq!(targets(0), ["app_default"]);
        assert_eq!(targets(1), ["app_back", "app_default"]);
    }

    /// A config's content may be written inline (the Compose specification's `content`);
    /// a secret's may not, nor may one object take its content from two places.
    #[test]
    fn a_config_takes_inline_content_and_a_secret_does_not() {
        let loaded = load_text(
            "services:\n  web:\n    image: nginx\n    configs: [site]\nconfigs:\n  site:\n    content: |\n      server {}\n",
        );
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
        let stack = loaded.stack.unwrap();
        let digest = &stack.configs[0].digest;
        assert_eq!(stack.contents[digest].bytes(), b"server {}\n");
        let refused = load_text(
            "services:\n  web:\n    image: nginx\n    secrets: [token, other]\n    configs: [site]\nsecrets:\n  token:\n    content: hunter2\n  other:\n    external: true\n    content: hunter3\nconfigs:\n  site:\n    content: x\n    environment: SITE\n",
        );
        let errors: Vec<(&str, &str)> = refused
            .diagnostics
            .iter()
            .map(|d| (d.path.as_str(), d.message.as_str()))
            .collect();
        assert_eq!(
            errors,
            [
                (
                    "secrets.token.content",
                    "a secret's content cannot be written in the stack file: it would be in the repository for anyone who reads it"
                ),
                (
                    "secrets.other.content",
                    "a secret's content cannot be written in the stack file: it would be in the repository for anyone who reads it"
                ),
                (
                    "configs.site",
                    "give one of `file`, `environment` or `content` as the config's content, not several"
                ),
            ]
        );
    }

    /// `mode: 0400` is the permission users mean (octal, as Docker's YAML 1.1 loader reads
    /// it), not decimal 400.
    #[test]
    fn a_file_mode_with_a_leading_zero_is_octal() {
        let loaded = load_text(
            "services:\n  web:\n    image: nginx\n    secrets:\n      - source: token\n        mode: 0400\n    configs:\n      - source: conf\n        mode: 0644\nsecrets:\n  token:\n    external: true\nconfigs:\n  conf:\n    external: true\n",
        );
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
        let task = &loaded.stack.unwrap().services[0].task;
        assert_eq!(task.container.secrets[0].mode, 0o400);
        assert_eq!(task.container.configs[0].mode, 0o644);
    }

    /// A relative bind source is resolved against the stack file's directory, as Docker's
    /// client does, with a warning that it must exist on the nodes; `~` is the home directory.
    #[test]
    fn relative_bind_sources_resolve_against_the_stack_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "app.yaml",
            "services:\n  web:\n    image: nginx\n    volumes:\n      - ./data:/data\n      - ../shared/./conf:/etc/conf:ro\n      - ~/cache:/cache\n      - {type: bind, source: logs, target: /logs}\n",
        );
        let env = |name: &str| (name == "HOME").then(|| "/home/ops".to_owned());
        let loaded = load(&WorkTree, &path, "app.yaml", &env);
        let warnings: Vec<&Diagnostic> = loaded.diagnostics.iter().collect();
        assert_eq!(warnings.len(), 4, "{warnings:?}");
        assert!(warnings.iter().all(|d| d.severity == Severity::Warning));
        assert!(
            warnings[0]
                .help
                .as_deref()
                .unwrap()
                .contains("must exist on every node")
        );
        let mounts = &loaded.stack.unwrap().services[0].task.container.mounts;
        let sources: Vec<(&str, &str)> = mounts
            .iter()
            .map(|m| (m.target.as_str(), m.source.as_deref().unwrap()))
            .collect();
        let parent = dir.path().parent().unwrap();
        let in_dir = |p: &str| dir.path().join(p).to_string_lossy().into_owned();
        assert_eq!(
            sources,
            [
                ("/cache", "/home/ops/cache"),
                ("/data", in_dir("data").as_str()),
                ("/etc/conf", parent.join("shared/conf").to_str().unwrap()),
                ("/logs", in_dir("logs").as_str()),
            ]
        );
    }

    /// A short mount's options are read as Docker reads them: `ro`/`rw`, `nocopy` for a
    /// volume, a propagation for a bind, comma-separated; what Docker ignores (`z`,
    /// `cached`, …) is ignored with a warning.
    #[test]
    fn short_mount_options_are_dockers() {
        let loaded = load_text(
            "services:\n  exporter:\n    image: prom/node-exporter\n    volumes:\n      - /:/host:ro,rslave\n      - data:/data:nocopy\n      - /srv/site:/site:z,rw\n      - /src:/src:cached\nvolumes:\n  data:\n",
        );
        let messages: Vec<&str> = loaded
            .diagnostics
            .iter()
            .map(|d| {
                assert_eq!(d.severity, Severity::Warning, "{d:?}");
                d.message.as_str()
            })
            .collect();
        assert_eq!(
            messages,
            [
                "mount option \"z\" is ignored: SELinux relabelling is not done by swarm",
                "mount option \"cached\" is ignored: a Docker Desktop file-sharing hint, meaningless on a node",
            ]
        );
        let mounts = &loaded.stack.unwrap().services[0].task.container.mounts;
        let host = mounts.iter().find(|m| m.target == "/host").unwrap();
        assert!(host.read_only);
        assert_eq!(host.propagation, Some(swarm_api::spec::Propagation::Rslave));
        let data = mounts.iter().find(|m| m.target == "/data").unwrap();
        assert!(data.no_copy && !data.read_only);
        let site = mounts.iter().find(|m| m.target == "/site").unwrap();
        assert!(!site.read_only && site.propagation.is_none());
    }

    /// An overlay's driver options are not used: each is said, `encrypted` loudest (the
    /// traffic it asked to protect is not).
    #[test]
    fn network_driver_options_are_warned_about() {
        let loaded = load_text(
            "services:\n  web:\n    image: nginx\n    networks: [pay]\nnetworks:\n  pay:\n    driver_opts:\n      encrypted: \"yes\"\n      com.docker.network.driver.mtu: \"1400\"\n",
        );
        let messages: Vec<(Severity, &str)> = loaded
            .diagnostics
            .iter()
            .map(|d| (d.severity, d.path.as_str()))
            .collect();
        assert_eq!(
            messages,
            [
                (Severity::Warning, "networks.pay.driver_opts.encrypted"),
                (
                    Severity::Warning,
                    "networks.pay.driver_opts.com.docker.network.driver.mtu"
                ),
            ]
        );
        assert!(
            loaded.diagnostics[0]
                .message
                .contains("travels unencrypted")
        );
        assert!(loaded.stack.is_some());
    }

    /// Swarm's templates are checked where the node fills them (hostname, environment,
    /// mount source and target): an unknown one is an error at its place, the known ones
    /// are kept as written for the node.
    #[test]
    fn templates_are_checked_where_they_are_filled() {
        let loaded = load_text(
            "services:\n  exporter:\n    image: prom/node-exporter\n    hostname: \"{{.Node.Hostname}}\"\n    environment:\n      - NODE_ID={{.Node.ID}}\n      - ZONE={{.Node.Labels.zone}}\n    volumes:\n      - data-{{.Task.Slot}}:/data\n      - /srv:/srv/{{.Task.Nmae}}\nvolumes:\n  data-{{.Task.Slot}}:\n",
        );
        let errors: Vec<(&str, u32, u32)> = loaded
            .diagnostics
            .iter()
            .map(|d| {
                let span = d.span.unwrap();
                (d.path.as_str(), span.line, span.column)
            })
            .collect();
        assert_eq!(
            errors,
            [
                ("services.exporter.environment[1]", 7, 9),
                ("services.exporter.volumes[1]", 10, 9)
            ]
        );
        assert!(
            loaded.diagnostics[0]
                .message
                .starts_with("ZONE: unknown template `{{.Node.Labels.zone}}`"),
            "{:?}",
            loaded.diagnostics[0]
        );
        let fixed = load_text(
            "services:\n  exporter:\n    image: prom/node-exporter\n    hostname: \"{{.Node.Hostname}}\"\n    environment: [\"NODE_ID={{.Node.ID}}\"]\n    volumes: [\"data-{{.Task.Slot}}:/data\"]\nvolumes:\n  data-{{.Task.Slot}}:\n",
        );
        assert!(fixed.diagnostics.is_empty(), "{:?}", fixed.diagnostics);
        let container = &fixed.stack.unwrap().services[0].task.container;
        assert_eq!(container.env["NODE_ID"], "{{.Node.ID}}");
        assert_eq!(
            container.mounts[0].source.as_deref(),
            Some("app_data-{{.Task.Slot}}")
        );
    }

    /// Templates are also checked in a volume's `name:` and in variables from an env file,
    /// the error naming the file and the variable; a variable that `environment:` overrides
    /// is judged by the value that wins.
    #[test]
    fn templates_in_volume_names_and_env_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "app.env",
            "ZONE={{.Node.Labels.zone}}\nSLOT={{.Task.Slot}}\nOVER={{.Bad}}\n",
        );
        let path = write(
            dir.path(),
            "app.yaml",
            "services:\n  web:\n    image: nginx\n    env_file: app.env\n    environment:\n      OVER: fine\n    volumes: [data:/data]\nvolumes:\n  data:\n    name: \"data-{{.Task.Slto}}\"\n",
        );
        let loaded = load(&WorkTree, &path, "app.yaml", &|_| None);
        let errors: Vec<(&str, &str)> = loaded
            .diagnostics
            .iter()
            .map(|d| (d.path.as_str(), d.message.as_str()))
            .collect();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(errors[0].0, "services.web.env_file");
        assert!(
            errors[0]
                .1
                .starts_with("app.env: ZONE: unknown template `{{.Node.Labels.zone}}`"),
            "{errors:?}"
        );
        assert_eq!(errors[1].0, "volumes.data.name");
        assert!(
            errors[1].1.starts_with("unknown template `{{.Task.Slto}}`"),
            "{errors:?}"
        );
    }

    /// A short mount with an empty section or a Windows path is refused as Docker refuses
    /// it, and said plainly; an empty option (`ro,`) is ignored, as Docker ignores it.
    #[test]
    fn odd_short_mounts_are_said_plainly() {
        let loaded = load_text(
            "services:\n  web:\n    image: nginx\n    volumes:\n      - \"/a:/b:\"\n      - /a::/c\n      - 'C:\\data:/data'\n      - /srv:/srv:ro,\n",
        );
        let messages: Vec<(Severity, &str)> = loaded
            .diagnostics
            .iter()
            .map(|d| (d.severity, d.message.as_str()))
            .collect();
        assert_eq!(
            messages,
            [
                (
                    Severity::Error,
                    "invalid mount \"/a:/b:\": an empty section between colons"
                ),
                (
                    Severity::Error,
                    "invalid mount \"/a::/c\": an empty section between colons"
                ),
                (
                    Severity::Error,
                    "\"C:\\\\data:/data\" is a Windows path: swarm's nodes are Linux, where it cannot be mounted"
                ),
            ]
        );
        let fine =
            load_text("services:\n  web:\n    image: nginx\n    volumes: [\"/srv:/srv:ro,\"]\n");
        assert!(fine.diagnostics.is_empty(), "{:?}", fine.diagnostics);
        assert!(fine.stack.unwrap().services[0].task.container.mounts[0].read_only);
    }

    /// The service's `tmpfs` key (a path or a list, `PATH[:OPTIONS]`) gives each task empty
    /// tmpfs mounts, beside its `volumes`; an option a swarm tmpfs does not have is an error
    /// that says which ones it has.
    #[test]
    fn tmpfs_paths_are_tmpfs_mounts() {
        use swarm_api::spec::{self, MountKind};
        let mounts = |text: &str| {
            let loaded = load_text(text);
            assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
            loaded.stack.unwrap().services[0]
                .task
                .container
                .mounts
                .clone()
        };
        let one =
            mounts("services:\n  web:\n    image: nginx\n    read_only: true\n    tmpfs: /run\n");
        assert_eq!(one.len(), 1);
        assert_eq!(
            (
                one[0].kind,
                one[0].target.as_str(),
                one[0].read_only,
                one[0].tmpfs
            ),
            (MountKind::Tmpfs, "/run", false, None)
        );
        let many = mounts(
            "services:\n  web:\n    image: nginx\n    tmpfs:\n      - /tmp:size=64m,mode=1700,noexec,\n      - /cache:ro,exec\n    volumes: [\"/srv:/srv\"]\n",
        );
        let got: Vec<(&str, MountKind, bool, Option<spec::TmpfsOptions>)> = many
            .iter()
            .map(|m| (m.target.as_str(), m.kind, m.read_only, m.tmpfs))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "/cache",
                    MountKind::Tmpfs,
                    true,
                    Some(spec::TmpfsOptions {
                        exec: true,
                        ..Default::default()
                    })
                ),
                ("/srv", MountKind::Bind, false, None),
                (
                    "/tmp",
                    MountKind::Tmpfs,
                    false,
                    Some(spec::TmpfsOptions {
                        size_bytes: Some(64 << 20),
                        mode: Some(0o1700),
                        exec: false,
                    })
                ),
            ]
        );

        let refused = load_text(
            "services:\n  web:\n    image: nginx\n    tmpfs:\n      - /tmp:suid\n      - run\n      - /a:size=lots\n      - /b:mode=999\n      - /srv\n    volumes: [\"/srv:/srv\"]\n",
        );
        assert!(refused.stack.is_none());
        let messages: Vec<String> = refused.diagnostics.iter().map(|d| d.to_string()).collect();
        let expected = [
            "5:9: error: services.web.tmpfs[0]: tmpfs option \"suid\" is not supported by swarm",
            "6:9: error: services.web.tmpfs[1]: the tmpfs target \"run\" is not an absolute path",
            "7:9: error: services.web.tmpfs[2]: invalid size \"lots\"",
            "8:9: error: services.web.tmpfs[3]: tmpfs mode \"999\" is not an octal file mode",
            "9:9: error: services.web.tmpfs[4]: two mounts target /srv",
        ];
        assert_eq!(messages.len(), expected.len(), "{messages:#?}");
        for (message, expected) in messages.iter().zip(expected) {
            assert!(message.contains(expected), "{message}\nwanted {expected}");
        }
        assert!(
            messages[0].contains("a swarm tmpfs takes size=, mode=, ro, rw, exec and noexec"),
            "{}",
            messages[0]
        );
    }

    /// A top-level volume's driver, options, labels and `external` are part of the specs of
    /// the services that mount it: a changed driver is a changed service.
    #[test]
    fn volume_declarations_are_kept_in_the_mounts() {
        let with = |volume: &str| {
            load_text(&format!(
                "services:\n  db:\n    image: postgres\n    volumes: [data:/var/lib/data]\nvolumes:\n  data:{volume}\n"
            ))
        };
        let mount =
            |loaded: Loaded| loaded.stack.unwrap().services[0].task.container.mounts[0].clone();
        let plain = mount(with(""));
        assert_eq!(
            (plain.source.as_deref(), &plain.volume),
            (Some("app_data"), &None)
        );
        let local = mount(with(
            "\n    driver: local\n    driver_opts: {type: nfs, o: \"addr=10.0.0.1\"}\n    labels: [backup=daily]",
        ));
        let options = local.volume.clone().unwrap();
        assert_eq!(options.driver.as_deref(), Some("local"));
        assert_eq!(options.driver_opts["o"], "addr=10.0.0.1");
        assert_eq!(options.labels["backup"], "daily");
        assert!(!options.external);
        let other = mount(with(
            "\n    driver: rexray\n    driver_opts: {type: nfs, o: \"addr=10.0.0.1\"}\n    labels: [backup=daily]",
        ));
        assert_ne!(local, other);
        let external = mount(with("\n    external: true\n    name: pgdata"));
        assert_eq!(external.source.as_deref(), Some("pgdata"));
        assert!(external.volume.unwrap().external);

        let refused = with("\n    external: true\n    driver: local");
        assert!(refused.stack.is_none());
        assert!(
            refused.diagnostics[0]
                .message
                .contains("cannot be used with an external volume"),
            "{:?}",
            refused.diagnostics
        );
    }

    /// Every key of Docker's compose 3.x schemas is known: implemented, or a warning.
    #[test]
    fn every_key_of_dockers_schemas_is_known() {
        let loaded = load_text(
            "version: \"3.14\"\nservices:\n  web:\n    image: nginx\n    build: {context: .}\n    cap_add: [NET_ADMIN]\n    cap_drop: [ALL]\n    cgroupns_mode: host\n    cgroup_parent: p\n    container_name: web\n    credential_spec: {file: x}\n    depends_on: [db]\n    devices: [/dev/fuse]\n    dns: 1.1.1.1\n    dns_search: example.com\n    domainname: example.com\n    expose: [80]\n    external_links: [db]\n    extra_hosts: [\"a:10.0.0.1\"]\n    init: true\n    ipc: host\n    isolation: default\n    links: [db]\n    logging: {driver: json-file, options: {max-size: 10m}}\n    mac_address: 02:42:ac:11:00:02\n    network_mode: host\n    networks:\n      default:\n        aliases: [w]\n        driver_opts: {a: b}\n        ipv4_address: 10.0.0.9\n        ipv6_address: fd00::9\n    oom_score_adj: 100\n    pid: host\n    privileged: true\n    read_only: true\n    restart: always\n    security_opt: [no-new-privileges]\n    shm_size: 64m\n    stdin_open: true\n    sysctls: {net.core.somaxconn: 1024}\n    tmpfs: /run\n    tty: true\n    ulimits: {nofile: {soft: 1024, hard: 2048}}\n    userns_mode: host\n    volumes:\n      - type: volume\n        source: data\n        target: /data\n        consistency: cached\n        volume: {nocopy: true}\n    deploy:\n      resources:\n        memory_swap: 0\n        memory_swappiness: 0\n        reservations:\n          generic_resources: [{discrete_resource_spec: {kind: gpu, value: 1}}]\n  db:\n    image: postgres\nvolumes:\n  data:\n    x-cluster-spec: {group: g}\nsecrets:\n  s:\n    file: app.yaml\n    driver: d\n    driver_opts: {a: b}\n    template_driver: golang\nconfigs:\n  c:\n    file: app.yaml\n    template_driver: golang\n",
        );
        let errors: Vec<&Diagnostic> = loaded
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .collect();
        assert!(errors.is_empty(), "{errors:?}");
        let warned = |key: &str| {
            loaded
                .diagnostics
                .iter()
                .any(|d| d.message.starts_with(&format!("`{key}` is not supported")))
        };
        for key in ["cgroupns_mode", "driver_opts", "memory_swap", "privileged"] {
            assert!(warned(key), "{key}: {:?}", loaded.diagnostics);
        }
        // The runtime keys swarm honours are not warned about.
        for key in [
            "logging",
            "cap_add",
            "sysctls",
            "ulimits",
            "read_only",
            "tmpfs",
            "oom_score_adj",
        ] {
            assert!(!warned(key), "{key}: {:?}", loaded.diagnostics);
        }
    }

    /// A stack is named by `name:`, else by its file's name when that is a valid stack name,
    /// else by its folder for a Compose default file name; a name Docker refuses is an error
    /// that says how to fix it.
    #[test]
    fn stack_names_come_from_name_the_file_or_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let web = dir.path().join("web");
        std::fs::create_dir(&web).unwrap();
        let service = "services:\n  site:\n    image: nginx\n";
        let name_of = |path: &Path| {
            let loaded = load(&WorkTree, path, "f", &|_| None);
            match loaded.stack {
                Some(stack) => Ok(stack.name),
                None => Err(loaded.diagnostics[0].to_string()),
            }
        };
        let folder = write(&web, "docker-compose.yml", service);
        assert_eq!(name_of(&folder).as_deref(), Ok("web"));
        let plain = write(dir.path(), "shop.yaml", service);
        assert_eq!(name_of(&plain).as_deref(), Ok("shop"));
        let dotted = write(dir.path(), "web.prod.yaml", service);
        let error = name_of(&dotted).unwrap_err();
        assert!(
            error.contains("the stack name \"web.prod\" taken from the file name is not valid"),
            "{error}"
        );
        assert!(
            error.contains("set `name:` in the file, or rename the file"),
            "{error}"
        );
        let plus = write(dir.path(), "c++.yaml", &format!("name: cpp\n{service}"));
        assert_eq!(name_of(&plus).as_deref(), Ok("cpp"), "`name:` wins");
        let bad_key = write(dir.path(), "bad.yaml", &format!("name: my.app\n{service}"));
        let error = name_of(&bad_key).unwrap_err();
        assert!(
            error.starts_with("f:1:7: error: name: invalid stack name \"my.app\""),
            "{error}"
        );
    }

    /// Equivalent spellings give equal specs: short and long references to configs and
    /// secrets, short and long ports, list and map labels and environment.
    #[test]
    fn equivalent_forms_give_equal_specs() {
        let short = load_text(
            "services:\n  web:\n    image: nginx\n    secrets: [token]\n    configs: [site]\n    ports: [\"8080:80\", \"53:53/udp\"]\n    labels: [tier=front, flag]\n    environment: [A=1, B=]\n    deploy:\n      labels: [team=web]\nsecrets:\n  token:\n    external: true\nconfigs:\n  site:\n    external: true\n",
        );
        let long = load_text(
            "services:\n  web:\n    image: nginx\n    secrets:\n      - {source: token, target: token, uid: \"0\", gid: \"0\", mode: 0444}\n    configs:\n      - {source: site, target: /site}\n    ports:\n      - {target: 80, published: 8080, protocol: tcp, mode: ingress}\n      - {target: 53, published: \"53\", protocol: udp}\n    labels: {tier: front, flag: }\n    environment: {A: 1, B: \"\"}\n    deploy:\n      labels: {team: web}\nsecrets:\n  token:\n    external: true\nconfigs:\n  site:\n    external: true\n",
        );
        assert!(short.diagnostics.is_empty(), "{:?}", short.diagnostics);
        assert!(long.diagnostics.is_empty(), "{:?}", long.diagnostics);
        let (short, long) = (short.stack.unwrap(), long.stack.unwrap());
        assert_eq!(short.services, long.services);
        let container = &short.services[0].task.container;
        assert_eq!(container.secrets[0].target, "/run/secrets/token");
        assert_eq!(container.configs[0].target, "/site");
    }

    /// The planner reads `image` with the node's grammar: what it accepts, a node pulls.
    #[test]
    fn images_are_checked_with_the_grammar_nodes_pull_with() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let upper = format!("web@sha256:{}", "A".repeat(64));
        for (image, accepted) in [
            ("nginx:1.27", true),
            ("[::1]:5000/web:1", true),
            (&*format!("web@{digest}"), true),
            ("web:a/b", false),
            ("host:0/web", false),
            ("app.", false),
            (&*upper, false),
        ] {
            let loaded = load_text(&format!("services:\n  web:\n    image: \"{image}\"\n"));
            let node = swarm_api::image::ImageRef::parse(image);
            assert_eq!(
                loaded.stack.is_some(),
                accepted,
                "{image}: {:?}",
                loaded.diagnostics
            );
            assert_eq!(node.is_ok(), accepted, "{image}");
            if let Err(reason) = node {
                let message = &loaded.diagnostics[0].message;
                assert!(message.ends_with(&reason.to_string()), "{message}");
            }
        }
        let upper = load_text("services:\n  web:\n    image: Nginx\n");
        assert_eq!(
            upper.diagnostics[0].message,
            "invalid image reference \"Nginx\": repository names are lowercase"
        );
    }

    #[test]
    fn variables_come_from_the_environment_then_the_dotenv_file() {
        let dir = tempfile::tempdir().unwrap();
        // A `KEY` alone and a quoted value over two lines, as Compose's .env files have.
        write(
            dir.path(),
            ".env",
            "TAG=1.25\nREPLICAS=4\nZONE=b\nCOMPOSE_PROFILES\nMOTD=\"two\nlines\"\n",
        );
        write(
            dir.path(),
            "common.env",
            "LOG_LEVEL=info\nZONE=from-file\nHOST_KEY\nNOT_SET\nKEPT=1\nKEPT\n",
        );
        let path = write(
            dir.path(),
            "app.yaml",
            "services:\n  web:\n    image: nginx:${TAG}\n    env_file: common.env\n    environment:\n      ZONE: ${ZONE}\n      FROM_SHELL:\n    deploy:\n      replicas: ${REPLICAS}\n",
        );
        let env = |name: &str| match name {
            "TAG" => Some("1.27".to_owned()),
            "FROM_SHELL" => Some("yes".to_owned()),
            "HOST_KEY" => Some("k".to_owned()),
            _ => None,
        };
        let loaded = load(&WorkTree, &path, "app.yaml", &env);
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
        let web = &loaded.stack.unwrap().services[0];
        assert_eq!(
            web.task.container.image, "nginx:1.27",
            "the environment wins over .env"
        );
        assert_eq!(
            web.replicas(),
            Some(4),
            "an interpolated number is a number"
        );
        let env: Vec<(&str, &str)> = web
            .task
            .container
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            env,
            [
                ("FROM_SHELL", "yes"),
                ("HOST_KEY", "k"),
                ("KEPT", "1"),
                ("LOG_LEVEL", "info"),
                ("ZONE", "b")
            ],
            "an env file's KEY alone is the environment's, skipped when unset there"
        );
    }

    /// Keys of `docker compose` that stack files do not have say what to write instead.
    #[test]
    fn compose_only_keys_say_what_to_write_instead() {
        let loaded = load_text(
            "services:\n  web:\n    image: nginx\n    pids_limit: 100\n    volumes_from: [db]\n    deploy:\n      scale: 2\n",
        );
        let found: Vec<(&str, &str)> = loaded
            .diagnostics
            .iter()
            .map(|d| (d.path.as_str(), d.help.as_deref().unwrap_or_default()))
            .collect();
        assert_eq!(found.len(), 3, "{found:#?}");
        assert_eq!(found[0].0, "services.web");
        assert!(
            found[0].1.contains("deploy.resources.limits.pids"),
            "{found:#?}"
        );
        assert!(found[1].1.contains("declare a volume"), "{found:#?}");
        // Elsewhere than a service's own keys, the usual help.
        assert_eq!(found[2].0, "services.web.deploy");
        assert!(found[2].1.starts_with("expected one of"), "{found:#?}");
    }

    /// A published range onto one target, Docker's way; one published port leads to one
    /// target; a host address that means every one says nothing.
    #[test]
    fn published_ports_read_as_dockers() {
        let loaded = load_text(
            "services:\n  web:\n    image: nginx\n    ports:\n      - 9000-9002:80\n      - 9001:81\n      - 0.0.0.0:8080:80\n      - \"[::]:8080:80\"\n      - 127.0.0.1:8081:80\n",
        );
        let found: Vec<String> = loaded.diagnostics.iter().map(|d| d.to_string()).collect();
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(
            found[0].starts_with("app.yaml:6:9: error: services.web.ports[1]: port 9001/tcp is already published to target 80 (line 5)"),
            "{found:#?}"
        );
        assert!(
            found[1].starts_with("app.yaml:9:9: warning: services.web.ports[4]: the host address 127.0.0.1 is ignored"),
            "{found:#?}"
        );
    }

    /// Compose's `restart` is the restart policy when `deploy.restart_policy` is absent, as
    /// Docker converts it; a spread over what is no label is Docker's no-op, said.
    #[test]
    fn restart_and_spread_read_as_docker_converts_them() {
        let loaded = load_text(
            "services:\n  a:\n    image: nginx\n    restart: on-failure:3\n    deploy:\n      placement:\n        preferences: [{spread: node.id}, {spread: Node.Labels.zone}]\n  b:\n    image: nginx\n    restart: \"no\"\n  c:\n    image: nginx\n    restart: always\n    deploy:\n      restart_policy: {condition: none}\n  d:\n    image: nginx\n    restart: on-failure\n",
        );
        let found: Vec<(Severity, &str)> = loaded
            .diagnostics
            .iter()
            .map(|d| (d.severity, d.path.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                (
                    Severity::Warning,
                    "services.a.deploy.placement.preferences[0].spread"
                ),
                (Severity::Warning, "services.b.restart"),
            ]
        );
        let stack = loaded.stack.unwrap();
        let task = |i: usize| &stack.services[i].task;
        assert_eq!(
            (task(0).restart.condition, task(0).restart.max_attempts),
            (RestartCondition::OnFailure, 3)
        );
        let spreads: Vec<(&str, Option<&str>)> = task(0)
            .placement
            .preferences
            .iter()
            .map(|p| (p.spread.as_str(), p.label()))
            .collect();
        assert_eq!(
            spreads,
            [("node.id", None), ("Node.Labels.zone", Some("zone"))],
            "kept as written, as Docker keeps them"
        );
        assert_eq!(task(1).restart.condition, RestartCondition::Any);
        assert_eq!(task(2).restart.condition, RestartCondition::None);
        assert_eq!(
            (task(3).restart.condition, task(3).restart.max_attempts),
            (RestartCondition::OnFailure, 0)
        );
        // Docker's edges: empty is no policy, an empty count is 0, a count after always.
        for (restart, condition, max_attempts) in [
            ("\"\"", RestartCondition::Any, 0),
            ("\"on-failure:\"", RestartCondition::OnFailure, 0),
            ("\"always:3\"", RestartCondition::Any, 0),
        ] {
            let loaded = load_text(&format!(
                "services:\n  a:\n    image: nginx\n    restart: {restart}\n"
            ));
            assert!(
                loaded.diagnostics.is_empty(),
                "{restart}: {:?}",
                loaded.diagnostics
            );
            let policy = &loaded.stack.unwrap().services[0].task.restart;
            assert_eq!(
                (policy.condition, policy.max_attempts),
                (condition, max_attempts)
            );
        }
        for (restart, reason) in [
            ("sometimes", "unknown restart policy \"sometimes\""),
            ("on-failure:abc", "the maximum retry count \"abc\""),
            ("on-failure:-1", "the maximum retry count \"-1\""),
        ] {
            let refused = load_text(&format!(
                "services:\n  a:\n    image: nginx\n    restart: {restart}\n"
            ));
            assert!(refused.stack.is_none());
            assert!(
                refused.diagnostics[0].message.contains(reason),
                "{restart}: {:?}",
                refused.diagnostics
            );
        }
        // A job keeps restarting on failure only.
        let job = load_text(
            "services:\n  a:\n    image: nginx\n    restart: always\n    deploy: {mode: replicated-job}\n",
        );
        let job = job.stack.unwrap();
        assert_eq!(
            job.services[0].task.restart.condition,
            RestartCondition::OnFailure
        );
    }

    #[test]
    fn job_modes_load_as_dockers_loader_reads_them() {
        let loaded = load_text(
            "services:\n  migrate:\n    image: busybox\n    deploy:\n      mode: replicated-job\n      replicas: 3\n  once:\n    image: busybox\n    deploy:\n      mode: replicated-job\n      restart_policy:\n        condition: any\n  everywhere:\n    image: busybox\n    deploy:\n      mode: global-job\n",
        );
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
        let stack = loaded.stack.unwrap();
        let mode = |name: &str| {
            let service = stack.services.iter().find(|s| s.name == name).unwrap();
            (service.mode, service.task.restart.condition)
        };
        assert_eq!(
            mode("app_migrate"),
            (
                ServiceMode::ReplicatedJob {
                    max_concurrent: 3,
                    total_completions: 3
                },
                RestartCondition::OnFailure
            )
        );
        assert_eq!(
            mode("app_once"),
            (
                ServiceMode::ReplicatedJob {
                    max_concurrent: 1,
                    total_completions: 1
                },
                RestartCondition::Any
            ),
            "a condition written is kept"
        );
        assert_eq!(
            mode("app_everywhere"),
            (ServiceMode::GlobalJob, RestartCondition::OnFailure)
        );
        let refused = load_text(
            "services:\n  a:\n    image: busybox\n    deploy:\n      mode: global-job\n      replicas: 2\n  b:\n    image: busybox\n    deploy:\n      mode: replicated-job\n      update_config:\n        parallelism: 2\n      rollback_config:\n        parallelism: 2\n",
        );
        let messages: Vec<String> = refused.diagnostics.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            messages,
            [
                "app.yaml:6:17: error: services.a.deploy.replicas: `replicas` cannot be used with mode: global-job\n  help: a global service runs one task on every eligible node; remove `replicas`",
                "app.yaml:11:7: error: services.b.deploy.update_config: `update_config` cannot be used with mode: replicated-job\n  help: a changed job runs again from the start; remove it",
                "app.yaml:13:7: error: services.b.deploy.rollback_config: `rollback_config` cannot be used with mode: replicated-job\n  help: a changed job runs again from the start; remove it",
            ]
        );
    }

    #[test]
    fn names_and_defaults_follow_docker_stack_deploy() {
        let loaded = load_text(
            "services:\n  web:\n    image: nginx\n    networks: [front]\nnetworks:\n  front:\n  outside:\n    external: true\n",
        );
        let stack = loaded.stack.unwrap();
        assert_eq!(stack.name, "app");
        let web = &stack.services[0];
        assert_eq!(web.name, "app_web");
        assert_eq!(web.replicas(), Some(1));
        assert_eq!(web.task.container.stop_grace_period.to_string(), "10s");
        assert_eq!(web.task.restart.delay.to_string(), "5s");
        assert_eq!(web.task.networks[0].target, "app_front");
        assert_eq!(web.task.networks[0].aliases, ["web"]);
        // External networks are not the stack's to create; unused defaults are not created.
        let names: Vec<&str> = stack.networks.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["app_front"]);
    }

    #[test]
    fn several_files_make_one_stack_and_findings_name_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let base = write(
            dir.path(),
            "web.yaml",
            "services:\n  web:\n    image: web:1\n    environment: [MODE=base]\n    deploy:\n      replicas: 2\n",
        );
        let prod = write(
            dir.path(),
            "web.prod.yaml",
            "services:\n  web:\n    image: web:2\n    environment: {MODE: prod}\n",
        );
        let files = [
            (base.as_path(), "web.yaml"),
            (prod.as_path(), "web.prod.yaml"),
        ];
        let loaded = load_files(&WorkTree, &files, &|_| None, Some("shop"));
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
        let stack = loaded.stack.unwrap();
        assert_eq!(stack.source, "web.yaml + web.prod.yaml");
        let web = &stack.services[0];
        assert_eq!(web.name, "shop_web");
        assert_eq!(web.task.container.image, "web:2");
        assert_eq!(web.replicas(), Some(2));
        assert_eq!(web.task.container.env["MODE"], "prod");

        let broken = write(
            dir.path(),
            "broken.yaml",
            "services:\n  web:\n    deploy:\n      replicas: many\n",
        );
        let files = [
            (base.as_path(), "web.yaml"),
            (broken.as_path(), "broken.yaml"),
        ];
        let loaded = load_files(&WorkTree, &files, &|_| None, None);
        assert!(loaded.stack.is_none());
        let printed = loaded.diagnostics[0].to_string();
        assert!(
            printed.starts_with("broken.yaml:4:17: error: services.web.deploy.replicas"),
            "{printed}"
        );
    }

    #[test]
    fn empty_and_non_utf8_files_are_refused_with_a_reason() {
        let loaded = load_text("# nothing here\n");
        assert!(loaded.stack.is_none());
        assert_eq!(loaded.diagnostics[0].message, "the file is empty");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bin.yaml");
        std::fs::write(&path, b"services:\n  \xff\xfe: {}\n").unwrap();
        let loaded = load(&WorkTree, &path, "bin.yaml", &|_| None);
        assert!(
            loaded.diagnostics[0].message.contains("not UTF-8"),
            "{:?}",
            loaded.diagnostics
        );
    }

    /// A byte-order mark, UTF-8's or UTF-16's in either order, is read past as Docker's
    /// YAML reader reads past it.
    #[test]
    fn a_byte_order_mark_is_no_part_of_the_file() {
        let text = "services:\n  web:\n    image: nginx\n";
        let utf16 = |little: bool| -> Vec<u8> {
            let mark: &[u8] = if little { &[0xff, 0xfe] } else { &[0xfe, 0xff] };
            let units = text.encode_utf16().flat_map(|unit| {
                if little {
                    unit.to_le_bytes()
                } else {
                    unit.to_be_bytes()
                }
            });
            mark.iter().copied().chain(units).collect()
        };
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in [
            (
                "utf8.yaml",
                [&[0xef, 0xbb, 0xbf][..], text.as_bytes()].concat(),
            ),
            ("le.yaml", utf16(true)),
            ("be.yaml", utf16(false)),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            let loaded = load(&WorkTree, &path, name, &|_| None);
            assert!(
                loaded.diagnostics.is_empty(),
                "{name}: {:?}",
                loaded.diagnostics
            );
            assert_eq!(
                loaded.stack.unwrap().services[0].task.container.image,
                "nginx"
            );
        }
        let cut = dir.path().join("cut.yaml");
        std::fs::write(&cut, [&utf16(true)[..], &[0x41]].concat()).unwrap();
        let loaded = load(&WorkTree, &cut, "cut.yaml", &|_| None);
        assert!(
            loaded.diagnostics[0].message.contains("cut in the middle"),
            "{:?}",
            loaded.diagnostics
        );
    }

    /// The runtime keys become the spec's runtime options in Docker's spelling: capabilities
    /// as CAP_NAME, a single ulimit for both limits, groups by name or number, the log
    /// driver's rotation options.
    #[test]
    fn runtime_keys_reach_the_spec() {
        let loaded = load_text(
            "services:\n  db:\n    image: postgres:16\n    cap_add: [net_admin, CAP_SYS_PTRACE]\n    cap_drop: [ALL]\n    sysctls: [net.core.somaxconn=1024]\n    ulimits:\n      nproc: 65535\n      nofile: {soft: 20000, hard: 40000}\n    read_only: true\n    group_add: [audio, 42]\n    logging:\n      driver: json-file\n      options: {max-size: 5m, max-file: 2}\n",
        );
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
        let stack = loaded.stack.unwrap();
        let runtime = &stack.services[0].task.container.runtime;
        assert_eq!(runtime.capability_add, ["CAP_NET_ADMIN", "CAP_SYS_PTRACE"]);
        assert_eq!(runtime.capability_drop, ["ALL"]);
        assert_eq!(runtime.sysctls["net.core.somaxconn"], "1024");
        assert_eq!(
            (runtime.ulimits["nproc"].soft, runtime.ulimits["nproc"].hard),
            (65535, 65535)
        );
        assert_eq!(
            (
                runtime.ulimits["nofile"].soft,
                runtime.ulimits["nofile"].hard
            ),
            (20000, 40000)
        );
        assert!(runtime.read_only);
        assert_eq!(runtime.groups, ["audio", "42"]);
        let driver = runtime.log_driver.as_ref().unwrap();
        assert_eq!(
            (
                driver.name.as_str(),
                driver.options["max-size"].as_str(),
                driver.options["max-file"].as_str()
            ),
            ("json-file", "5m", "2")
        );
        // A service without them keeps the default, which its JSON does not show.
        let plain = load_text("services:\n  web:\n    image: nginx:1.27\n");
        let spec = &plain.stack.unwrap().services[0];
        assert!(spec.task.container.runtime.is_default());
        assert!(!serde_json::to_string(spec).unwrap().contains("runtime"));
    }

    /// `extra_hosts` (list or map, `host-gateway` kept for the node to resolve), `dns`,
    /// `dns_search`, `dns_opt` and `init` reach the spec in the order given; a single string
    /// is a list of one.
    #[test]
    fn resolver_keys_and_init_reach_the_spec() {
        let loaded = load_text(
            "services:\n  web:\n    image: nginx:1.27\n    extra_hosts: [\"db:10.0.0.5\", \"cache=[2001:db8::7]\", \"api:10.0.0.4\", \"host.docker.internal:host-gateway\"]\n    dns: [10.0.0.53, 10.0.0.54]\n    dns_search: corp.example\n    dns_opt: [ndots:2, edns0]\n    init: true\n    tty: true\n    stdin_open: true\n  api:\n    image: nginx:1.27\n    extra_hosts: {db: 10.0.0.5}\n    dns: 10.0.0.53\n    dns_search: \"\"\n",
        );
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
        let stack = loaded.stack.unwrap();
        let runtime = |name: &str| {
            let service = stack.services.iter().find(|s| s.name.ends_with(name));
            service.unwrap().task.container.runtime.clone()
        };
        let web = runtime("web");
        let hosts: Vec<String> = web
            .extra_hosts
            .iter()
            .map(|h| format!("{} {}", h.address, h.name))
            .collect();
        assert_eq!(
            hosts,
            [
                "10.0.0.5 db",
                "2001:db8::7 cache",
                "10.0.0.4 api",
                "host-gateway host.docker.internal"
            ]
        );
        let servers: Vec<String> = web.dns.nameservers.iter().map(|s| s.to_string()).collect();
        assert_eq!(servers, ["10.0.0.53", "10.0.0.54"]);
        assert_eq!(web.dns.search, ["corp.example"]);
        assert_eq!(web.dns.options, ["ndots:2", "edns0"]);
        assert!(web.init);
        assert!(web.tty && web.stdin_open);
        let api = runtime("api");
        assert_eq!(api.extra_hosts[0].name, "db");
        assert_eq!(api.dns.nameservers[0].to_string(), "10.0.0.53");
        assert_eq!(
            api.dns.search,
            ["."],
            "an empty search domain is none, as `.`"
        );
        assert!(!api.init && !api.tty);
    }

    /// `service_completed_successfully` on a job is kept: the service waits for the job's
    /// run to complete.
    #[test]
    fn a_dependency_on_a_jobs_completion_is_kept() {
        use swarm_api::spec::{Dependency, DependencyCondition};
        let loaded = load_text(
            "services:\n  web:\n    image: nginx:1.27\n    depends_on:\n      migrate: {condition: service_completed_successfully}\n  migrate:\n    image: app:1\n    deploy: {mode: replicated-job}\n",
        );
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
        let stack = loaded.stack.unwrap();
        let web = stack.services.iter().find(|s| s.name.ends_with("web"));
        assert_eq!(
            web.unwrap().depends_on,
            [Dependency {
                service: "app_migrate".into(),
                condition: DependencyCondition::ServiceCompletedSuccessfully,
            }]
        );
    }

    /// `depends_on` in either form names services of the same stack, by full name, with
    /// their condition (`service_started` by default), sorted.
    #[test]
    fn depends_on_names_the_stacks_services() {
        use swarm_api::spec::{Dependency, DependencyCondition};
        let loaded = load_text(
            "services:\n  web:\n    image: nginx:1.27\n    depends_on: [cache, api]\n  api:\n    image: nginx:1.27\n    depends_on:\n      db: {condition: service_healthy}\n  db:\n    image: postgres:16\n  cache:\n    image: redis:7\n",
        );
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
        let stack = loaded.stack.unwrap();
        let depends_on = |name: &str| {
            let service = stack.services.iter().find(|s| s.name.ends_with(name));
            service.unwrap().depends_on.clone()
        };
        let dependency = |service: &str, condition| Dependency {
            service: format!("{}_{service}", stack.name),
            condition,
        };
        assert_eq!(
            depends_on("web"),
            [
                dependency("api", DependencyCondition::ServiceStarted),
                dependency("cache", DependencyCondition::ServiceStarted),
            ]
        );
        assert_eq!(
            depends_on("api"),
            [dependency("db", DependencyCondition::ServiceHealthy)]
        );
        assert!(depends_on("db").is_empty());
    }
}
