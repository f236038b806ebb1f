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
    let json = decode::decode(&root, stack_schema(), diags)?;
    let file: StackFile = match serde_json::from_value(json) {
        Ok(file) => file,
        Err(e) => {
            // The schema check admits only what the types read; this is a bug if it happens.
            diags.error(None, "", format!("cannot read the stack file: {e}"));
            return None;
        }
    };
    let given = name;
    let name = match (given, &file.name) {
        (Some(name), _) => name.to_owned(),
        (None, Some(name)) => name.clone(),
        (None, None) => path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    if !convert::valid_name(&name) {
        let span = given
            .is_none()
            .then(|| root.entry("name").map(|e| e.value.span))
            .flatten();
        diags
            .error(span, "name", format!("invalid stack name {name:?}"))
            .help("name the stack with letters, digits, '_', '.' and '-' (set `name:` or rename the file)");
        return None;
    }
    let mut converter = convert::Converter {
        stack: name,
        dir,
        tree,
        lookup: &lookup,
        diags,
    };
    let sources: Vec<&str> = files.iter().map(|&(_, display)| display).collect();
    Some(converter.convert(&file, &root, sources.join(" + ")))
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
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            diags.error(
                None,
                "",
                format!(
                    "the file is not UTF-8 text (invalid byte at offset {})",
                    e.utf8_error().valid_up_to()
                ),
            );
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

fn read_dotenv(
    tree: &dyn SourceTree,
    dir: &Path,
    display: &str,
    diags: &mut Diagnostics,
) -> Vec<(String, String)> {
    let path = dir.join(".env");
    match tree.read(&path) {
        Ok(Some(bytes)) => match dotenv::parse(&String::from_utf8_lossy(&bytes)) {
            Ok(vars) => vars,
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
        write(dir.path(), ".env", "TAG=1.25\nREPLICAS=4\nZONE=b\n");
        write(dir.path(), "common.env", "LOG_LEVEL=info\nZONE=from-file\n");
        let path = write(
            dir.path(),
            "app.yaml",
            "services:\n  web:\n    image: nginx:${TAG}\n    env_file: common.env\n    environment:\n      ZONE: ${ZONE}\n      FROM_SHELL:\n    deploy:\n      replicas: ${REPLICAS}\n",
        );
        let env = |name: &str| match name {
            "TAG" => Some("1.27".to_owned()),
            "FROM_SHELL" => Some("yes".to_owned()),
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
            [("FROM_SHELL", "yes"), ("LOG_LEVEL", "info"), ("ZONE", "b")]
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
}
