//! A decoded stack file → the normalised specs of its services, networks, configs and
//! secrets, named as `docker stack deploy` names them (`<stack>_<name>`), with every default
//! filled in and every semantic rule checked: ports, references between sections,
//! constraints, resources and the combinations Docker refuses.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use swarm_api::files::FileContent;
use swarm_api::image::{ImageRef, ImageRefError};
use swarm_api::plan::Kind;
use swarm_api::spec::{
    self, Constraint, ContainerSpec, EndpointSpec, FileObjectSpec, MountKind, NetworkAttachment,
    NetworkSpec, PortConfig, Protocol, PublishMode, ServiceMode, ServiceSpec, SpreadOver, TaskSpec,
    UpdatePolicy,
};
use swarm_api::stackfile::{self as file, External, ListOrMap, StackFile, StringOrList};
use swarm_api::units::GoDuration;

pub(crate) mod depends;
pub(crate) mod runtime;

use super::Stack;
use super::diagnostic::{Diagnostics, Span};
use super::dotenv;
use super::yaml::Node;
use crate::source::SourceTree;

/// A place in the stack file: its field path, and the node written there when there is one.
#[derive(Clone)]
struct Loc<'n> {
    node: Option<&'n Node>,
    /// The span of the key when this place was reached through one (for unknown names).
    key_span: Option<Span>,
    path: String,
}

impl<'n> Loc<'n> {
    fn root(node: &'n Node) -> Self {
        Loc {
            node: Some(node),
            key_span: None,
            path: String::new(),
        }
    }

    fn key(&self, key: &str) -> Loc<'n> {
        let entry = self.node.and_then(|n| n.entry(key));
        let path = if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        };
        Loc {
            node: entry.map(|e| &e.value),
            key_span: entry.map(|e| e.key_span),
            path,
        }
    }

    fn index(&self, index: usize) -> Loc<'n> {
        Loc {
            node: self.node.and_then(|n| n.item(index)),
            key_span: None,
            path: format!("{}[{index}]", self.path),
        }
    }

    fn span(&self) -> Option<Span> {
        self.node.map(|n| n.span).or(self.key_span)
    }
}

pub(super) struct Converter<'a> {
    pub stack: String,
    /// The directory of the stack file, for files it names (env_file, configs, secrets).
    pub dir: &'a Path,
    pub tree: &'a dyn SourceTree,
    pub lookup: &'a dyn Fn(&str) -> Option<String>,
    pub diags: &'a mut Diagnostics,
    /// Top-level sections the schema check refused as a whole (`networks: [a]`): a name
    /// not found in them was already reported there.
    pub refused_sections: BTreeSet<&'static str>,
}

/// The kind-specific options of one mount, as [`Converter::kind_options`] read them.
#[derive(Default)]
struct KindOptions {
    no_copy: bool,
    propagation: Option<spec::Propagation>,
    tmpfs: Option<spec::TmpfsOptions>,
}

/// Names a top-level object has in the cluster, by its key in the stack file.
#[derive(Default)]
struct Names {
    networks: BTreeMap<String, String>,
    /// The name in the cluster, and how the volume is made (Docker's `VolumeOptions`).
    volumes: BTreeMap<String, (String, Option<spec::VolumeOptions>)>,
    configs: BTreeMap<String, String>,
    secrets: BTreeMap<String, String>,
    /// The content digest of each config and secret the stack declares, by cluster name:
    /// what its services' references pin.
    digests: BTreeMap<String, String>,
}

const DEFAULT_NETWORK: &str = "default";

/// Docker's lower bound for a memory limit.
pub(crate) const MIN_MEMORY_LIMIT: u64 = 6 << 20;

impl Converter<'_> {
    pub fn convert(&mut self, file: &StackFile, root: &Node, source: String) -> Stack {
        let top = Loc::root(root);
        for section in ["networks", "volumes", "configs", "secrets"] {
            let refused = root
                .get(section)
                .is_some_and(|n| !matches!(n.value, super::yaml::Value::Mapping(_)));
            if refused {
                self.refused_sections.insert(section);
            }
        }
        self.check_version(file, &top);
        // After errors, `services` may be empty because the schema check left it out.
        if file.services.is_empty() && !self.diags.has_errors() {
            self.diags.warning(
                top.key("services").span(),
                "services",
                "the stack has no services",
            );
        }
        let mut names = Names::default();
        let mut stack = Stack {
            name: self.stack.clone(),
            source,
            services: Vec::new(),
            networks: Vec::new(),
            configs: Vec::new(),
            secrets: Vec::new(),
            externals: Vec::new(),
            contents: Default::default(),
        };
        // Docker's implicit `<stack>_default`: for services that name no network, and for
        // those that name `default` among theirs without declaring it.
        let uses_default_network = file.services.values().any(|s| match &s.networks {
            None => true,
            Some(file::ServiceNetworks::List(list)) => list.iter().any(|n| n == DEFAULT_NETWORK),
            Some(file::ServiceNetworks::Map(map)) => map.contains_key(DEFAULT_NETWORK),
        });
        let mut networks = file.networks.clone();
        if uses_default_network {
            networks.entry(DEFAULT_NETWORK.to_owned()).or_insert(None);
        }
        for (key, network) in &networks {
            let loc = top.key("networks").key(key);
            if let Some(spec) = self.network(key, network.as_ref(), &loc, &mut names) {
                stack.networks.push(spec);
            }
        }
        for (key, volume) in &file.volumes {
            let volume = volume.clone().unwrap_or_default();
            let name = self.object_name(key, volume.name.as_deref(), volume.external.as_ref());
            let loc = top.key("volumes").key(key);
            // A volume's name may hold templates (`'{{.Service.Name}}-{{.Task.Slot}}'`, the
            // way Docker users name a volume per task): the node fills them.
            // (A name from the key is checked where a mount names it.)
            let named_at = match &volume.external {
                Some(file::External::Named(_)) => Some(loc.key("external").key("name")),
                _ => volume.name.is_some().then(|| loc.key("name")),
            };
            if let Some(at) = named_at {
                self.template(&name, &at, None);
            }
            let options = self.volume_options(&volume, &loc);
            names.volumes.insert(key.clone(), (name, options));
        }
        for (key, config) in &file.configs {
            let loc = top.key("configs").key(key);
            if let Some((spec, content)) =
                self.file_object("config", key, config.as_ref(), &loc, &mut names.configs)
            {
                names.digests.insert(spec.name.clone(), spec.digest.clone());
                stack.contents.insert(spec.digest.clone(), content);
                stack.configs.push(spec);
            }
        }
        for (key, secret) in &file.secrets {
            let loc = top.key("secrets").key(key);
            if let Some((spec, content)) =
                self.file_object("secret", key, secret.as_ref(), &loc, &mut names.secrets)
            {
                names.digests.insert(spec.name.clone(), spec.digest.clone());
                stack.contents.insert(spec.digest.clone(), content);
                stack.secrets.push(spec);
            }
        }
        let mut published = BTreeMap::new();
        for (key, service) in &file.services {
            let loc = top.key("services").key(key);
            let depends_on =
                self.dependencies(key, service, &file.services, &loc.key("depends_on"));
            if let Some(mut spec) = self.service(key, service, &loc, &names, &mut published) {
                spec.depends_on = depends_on;
                stack.services.push(spec);
            }
        }
        self.dependency_cycles(&file.services, &top);
        stack.externals = used_externals(file, &stack.services, &names);
        stack
    }

    fn check_version(&mut self, file: &StackFile, top: &Loc) {
        let Some(version) = &file.version else { return };
        let major = version.split('.').next().unwrap_or_default();
        let minor_ok = version.split_once('.').is_none_or(|(_, minor)| {
            !minor.is_empty() && minor.bytes().all(|b| b.is_ascii_digit())
        });
        let loc = top.key("version");
        if major != "3" || !minor_ok {
            let message = if matches!(major, "1" | "2") {
                format!("version {version} files are not supported by stacks")
            } else {
                format!("unknown version {version:?}")
            };
            self.diags
                .error(loc.span(), &loc.path, message)
                .help("use version \"3.8\", or remove `version` to use the Compose specification");
        }
    }

    /// `<stack>_<key>`, or the explicit or external name.
    fn object_name(&self, key: &str, name: Option<&str>, external: Option<&External>) -> String {
        match external {
            Some(External::Named(named)) => named.name.clone(),
            Some(External::Flag(true)) => name.unwrap_or(key).to_owned(),
            _ => name
                .map(str::to_owned)
                .unwrap_or_else(|| format!("{}_{key}", self.stack)),
        }
    }

    fn network(
        &mut self,
        key: &str,
        network: Option<&file::Network>,
        loc: &Loc,
        names: &mut Names,
    ) -> Option<NetworkSpec> {
        let network = network.cloned().unwrap_or_default();
        let name = self.object_name(key, network.name.as_deref(), network.external.as_ref());
        names.networks.insert(key.to_owned(), name.clone());
        if is_external(network.external.as_ref()) {
            return None;
        }
        let driver = network
            .driver
            .clone()
            .unwrap_or_else(|| "overlay".to_owned());
        if driver != "overlay" {
            let at = loc.key("driver");
            self.diags
                .error(
                    at.span(),
                    &at.path,
                    format!("stacks create overlay networks, not `{driver}` networks"),
                )
                .help("remove `driver`, or declare the network as `external: true`");
        }
        for key in network.driver_opts.iter().flat_map(|opts| opts.keys()) {
            let at = loc.key("driver_opts").key(key);
            if key == "encrypted" {
                // Said, not refused (Docker's own sample stacks ask for it), but never
                // silently: the user asked for encryption and does not get it.
                self.diags
                    .warning(
                        at.span(),
                        &at.path,
                        "encrypted overlay networks are not supported yet: this network's traffic between nodes travels unencrypted",
                    )
                    .help("keep the services that need it on one node (a placement constraint), or carry the traffic between nodes over an encrypted link (WireGuard, IPsec); remove `encrypted` once you accept this");
            } else {
                self.diags
                    .warning(
                        at.span(),
                        &at.path,
                        format!("driver option {key:?} is ignored: swarm's overlay takes no driver options"),
                    )
                    .help("remove it; swarm sets the overlay's VXLAN id and MTU itself");
            }
        }
        let mut subnets = Vec::new();
        for (i, pool) in network
            .ipam
            .iter()
            .flat_map(|i| i.config.iter().flatten())
            .enumerate()
        {
            let Some(subnet) = &pool.subnet else { continue };
            if valid_cidr(subnet) {
                subnets.push(subnet.clone());
            } else {
                let at = loc.key("ipam").key("config").index(i).key("subnet");
                self.diags
                    .error(at.span(), &at.path, format!("invalid subnet {subnet:?}"))
                    .help("write an address range in CIDR form, such as 10.10.0.0/24");
            }
        }
        Some(NetworkSpec {
            name,
            driver,
            driver_opts: network.driver_opts.clone().unwrap_or_default(),
            attachable: network.attachable.unwrap_or(false),
            internal: network.internal.unwrap_or(false),
            labels: self.labels(network.labels.as_ref(), &loc.key("labels")),
            subnets,
            gateway: None,
        })
    }

    /// What a mount of the volume carries besides its name; `None` when nothing is declared.
    fn volume_options(&mut self, volume: &file::Volume, loc: &Loc) -> Option<spec::VolumeOptions> {
        let external = is_external(volume.external.as_ref());
        if external {
            // Docker uses an external volume as it is: what else is declared would be ignored.
            for key in ["driver", "driver_opts", "labels"] {
                let at = loc.key(key);
                if at.node.is_some() {
                    self.diags
                        .error(at.span(), &at.path, format!("`{key}` cannot be used with an external volume"))
                        .help("an external volume is created outside the stack: remove it, or remove `external`");
                }
            }
        }
        if let Some(driver) = volume
            .driver
            .as_deref()
            .filter(|d| !d.is_empty() && *d != "local")
        {
            let at = loc.key("driver");
            self.diags
                .warning(
                    at.span(),
                    &at.path,
                    format!("volume driver {driver:?} is not available on swarm nodes: tasks mounting this volume will fail"),
                )
                .help("swarm nodes have the local driver only: remove `driver:`, or use `driver_opts` (type, device, o) to mount NFS or a device with it");
        }
        let options = spec::VolumeOptions {
            external,
            driver: volume.driver.clone().filter(|d| !d.is_empty()),
            driver_opts: volume.driver_opts.clone().unwrap_or_default(),
            labels: self.labels(volume.labels.as_ref(), &loc.key("labels")),
        };
        (options != spec::VolumeOptions::default()).then_some(options)
    }

    /// A top-level config or secret (`kind`): its content from `file`, `environment` or,
    /// for a config, `content` (the Compose specification's inline form).
    fn file_object(
        &mut self,
        kind: &str,
        key: &str,
        object: Option<&file::ConfigOrSecret>,
        loc: &Loc,
        names: &mut BTreeMap<String, String>,
    ) -> Option<(FileObjectSpec, FileContent)> {
        let object = object.cloned().unwrap_or_default();
        let name = self.object_name(key, object.name.as_deref(), object.external.as_ref());
        names.insert(key.to_owned(), name.clone());
        let takes_content = kind == "config";
        // Refused even beside `external: true`, which would ignore it: the point is to keep
        // the material out of the repository.
        if !takes_content && object.content.is_some() {
            let at = loc.key("content");
            self.diags
                .error(at.span(), &at.path, "a secret's content cannot be written in the stack file: it would be in the repository for anyone who reads it")
                .help("use `file` (kept out of the repository) or `environment` (a variable of the deploying environment)");
            return None;
        }
        if is_external(object.external.as_ref()) {
            return None;
        }
        let content = match (&object.file, &object.environment, &object.content) {
            (Some(relative), None, None) => {
                FileContent::new(self.read_relative(relative, &loc.key("file"))?)
            }
            (None, Some(variable), None) => {
                let Some(value) = (self.lookup)(variable) else {
                    let at = loc.key("environment");
                    self.diags.error(
                        at.span(),
                        &at.path,
                        format!("the variable {variable} is not set: set it in the environment or in a .env file beside the stack"),
                    );
                    return None;
                };
                FileContent::new(value.into_bytes())
            }
            (None, None, Some(inline)) => FileContent::new(inline.clone().into_bytes()),
            (None, None, None) => {
                let inline = if takes_content {
                    ", `content` (the content itself)"
                } else {
                    ""
                };
                self.diags.error(
                    loc.span(),
                    &loc.path,
                    format!("expected `file` (its content), `environment` (a variable holding it){inline} or `external: true`"),
                );
                return None;
            }
            _ => {
                self.diags.error(
                    loc.span(),
                    &loc.path,
                    format!(
                        "give one of `file`, `environment`{} as the {kind}'s content, not several",
                        if takes_content { " or `content`" } else { "" }
                    ),
                );
                return None;
            }
        };
        let spec = FileObjectSpec {
            name,
            labels: self.labels(object.labels.as_ref(), &loc.key("labels")),
            digest: content.digest(),
        };
        Some((spec, content))
    }

    fn read_relative(&mut self, relative: &str, at: &Loc) -> Option<Vec<u8>> {
        let relative: std::path::PathBuf = Path::new(relative)
            .components()
            .filter(|c| *c != std::path::Component::CurDir)
            .collect();
        let path = self.dir.join(relative);
        match self.tree.read(&path) {
            Ok(Some(content)) => Some(content),
            Ok(None) => {
                self.diags
                    .error(
                        at.span(),
                        &at.path,
                        format!("file {} does not exist", path.display()),
                    )
                    .help("paths are relative to the directory of the stack file");
                None
            }
            Err(e) => {
                self.diags.error(
                    at.span(),
                    &at.path,
                    format!("cannot read {}: {e}", path.display()),
                );
                None
            }
        }
    }

    /// A relative bind source as Docker's client resolves it: `~` is the home directory,
    /// other paths are from the stack file's directory, made absolute on this machine.
    fn host_path(&self, source: &str) -> String {
        let path = match source.strip_prefix('~') {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => {
                let home = (self.lookup)("HOME").unwrap_or_else(|| "/".to_owned());
                Path::new(&home).join(rest.trim_start_matches('/'))
            }
            _ => self.tree.absolute(&self.dir.join(source)),
        };
        lexically_normal(&path).to_string_lossy().into_owned()
    }

    fn service(
        &mut self,
        key: &str,
        service: &file::Service,
        loc: &Loc,
        names: &Names,
        published: &mut BTreeMap<(u16, Protocol), (String, Option<Span>)>,
    ) -> Option<ServiceSpec> {
        let name = format!("{}_{key}", self.stack);
        if !valid_name(key) {
            self.diags
                .error(
                    loc.key_span,
                    &loc.path,
                    format!("invalid service name {key:?}"),
                )
                .help("use letters, digits, '_', '.' and '-', starting with a letter or digit");
        } else if name.len() > 63 {
            self.diags
                .error(
                    loc.key_span,
                    &loc.path,
                    format!("the service name {name:?} is longer than 63 characters"),
                )
                .help("shorten the stack or service name: the name is also a DNS label");
        }
        let image = self.image(service, loc);
        let errors_before = self.diags.has_errors();
        let deploy = service.deploy.clone().unwrap_or_default();
        let deploy_loc = loc.key("deploy");
        let mode = self.mode(&deploy, &deploy_loc);
        let job = deploy.mode.is_some_and(mode_is_job);
        let container = ContainerSpec {
            image: image.clone().unwrap_or_default(),
            entrypoint: self.argv(service.entrypoint.as_ref(), &loc.key("entrypoint")),
            command: self.argv(service.command.as_ref(), &loc.key("command")),
            env: self.environment(service, loc),
            labels: self.labels(service.labels.as_ref(), &loc.key("labels")),
            user: service.user.clone(),
            working_dir: service.working_dir.clone(),
            hostname: service.hostname.clone().inspect(|hostname| {
                self.template(hostname, &loc.key("hostname"), None);
            }),
            stop_signal: self.stop_signal(service.stop_signal.as_deref(), &loc.key("stop_signal")),
            stop_grace_period: service
                .stop_grace_period
                .unwrap_or(GoDuration::from_secs(10)),
            healthcheck: self.healthcheck(service.healthcheck.as_ref(), &loc.key("healthcheck")),
            mounts: self.service_mounts(service, loc, names),
            configs: self.file_references(
                service.configs.as_deref().unwrap_or_default(),
                &loc.key("configs"),
                &names.configs,
                &names.digests,
                "config",
                "/",
            ),
            secrets: self.file_references(
                service.secrets.as_deref().unwrap_or_default(),
                &loc.key("secrets"),
                &names.secrets,
                &names.digests,
                "secret",
                "/run/secrets/",
            ),
            runtime: self.runtime_options(service, loc),
        };
        for clash in spec::mount_target_clashes(&container) {
            let at = loc.key(if clash.starts_with("config") {
                "configs"
            } else {
                "secrets"
            });
            self.diags.error(at.span(), &at.path, clash);
        }
        let task = TaskSpec {
            container,
            resources: self.resources(deploy.resources.as_ref(), &deploy_loc.key("resources")),
            restart: match &deploy.restart_policy {
                Some(policy) => restart_policy(Some(policy), job),
                None => self.compose_restart(service.restart.as_deref(), job, &loc.key("restart")),
            },
            placement: self.placement(&deploy, &deploy_loc),
            networks: self.attachments(key, service.networks.as_ref(), &loc.key("networks"), names),
            force_update: 0,
            job_iteration: 0,
        };
        let endpoint = self.endpoint(&name, service, &deploy, loc, published);
        if image.is_none() || (self.diags.has_errors() && !errors_before) {
            // Conversion goes on after a finding so that every finding is reported; a service
            // with errors yields no spec.
            return None;
        }
        Some(ServiceSpec {
            name,
            mode,
            labels: self.labels(deploy.labels.as_ref(), &deploy_loc.key("labels")),
            task,
            update: update_policy(deploy.update_config.as_ref()),
            rollback: update_policy(deploy.rollback_config.as_ref()),
            endpoint,
            // Set by the caller, which knows the stack's other services.
            depends_on: Vec::new(),
        })
    }

    fn image(&mut self, service: &file::Service, loc: &Loc) -> Option<String> {
        let Some(image) = &service.image else {
            if loc.key("image").node.is_some() {
                // Written, but refused by the schema check, which said why.
                return None;
            }
            let diag = self.diags.error(
                loc.key_span,
                &loc.path,
                "missing `image`: a stack runs images from a registry",
            );
            if loc.key("build").node.is_some() {
                diag.help(
                    "swarm does not build images: build and push it, then name it in `image`",
                );
            } else {
                diag.help("add `image: NAME:TAG`");
            }
            return None;
        };
        let at = loc.key("image");
        if let Err(error) = ImageRef::parse(image) {
            let reason = match error {
                // The planner's words since its first release: golden files and users' CI
                // logs hold them (a node names the component instead).
                ImageRefError::Uppercase(_) => "repository names are lowercase".to_owned(),
                other => other.to_string(),
            };
            self.diags
                .error(
                    at.span(),
                    &at.path,
                    format!("invalid image reference {image:?}: {reason}"),
                )
                .help("write the image as name:tag, name@sha256:<digest> or host:port/name:tag");
            return None;
        }
        Some(image.clone())
    }

    fn mode(&mut self, deploy: &file::Deploy, loc: &Loc) -> ServiceMode {
        let mode = deploy.mode.unwrap_or(file::DeployMode::Replicated);
        let name = match mode {
            file::DeployMode::Replicated => "replicated",
            file::DeployMode::Global => "global",
            file::DeployMode::ReplicatedJob => "replicated-job",
            file::DeployMode::GlobalJob => "global-job",
        };
        let global = matches!(mode, file::DeployMode::Global | file::DeployMode::GlobalJob);
        if global && deploy.replicas.is_some() {
            let at = loc.key("replicas");
            self.diags
                .error(
                    at.span(),
                    &at.path,
                    format!("`replicas` cannot be used with mode: {name}"),
                )
                .help("a global service runs one task on every eligible node; remove `replicas`");
        }
        let max = deploy
            .placement
            .as_ref()
            .and_then(|p| p.max_replicas_per_node);
        if global && max.is_some() {
            let at = loc.key("placement").key("max_replicas_per_node");
            self.diags.error(
                at.span(),
                &at.path,
                "`max_replicas_per_node` can only be used with mode: replicated or replicated-job",
            );
        }
        if mode_is_job(mode) {
            // Docker refuses them for jobs: a job's tasks are not rolled out, they run again.
            for key in ["update_config", "rollback_config"] {
                let at = loc.key(key);
                if at.node.is_some() {
                    self.diags
                        .error(
                            at.key_span,
                            &at.path,
                            format!("`{key}` cannot be used with mode: {name}"),
                        )
                        .help("a changed job runs again from the start; remove it");
                }
            }
        }
        match mode {
            file::DeployMode::Replicated => ServiceMode::Replicated {
                replicas: deploy.replicas.unwrap_or(1),
            },
            file::DeployMode::Global => ServiceMode::Global,
            // Docker's loader sets both from `replicas`, and the engine both to 1 without it.
            file::DeployMode::ReplicatedJob => ServiceMode::ReplicatedJob {
                max_concurrent: deploy.replicas.unwrap_or(1),
                total_completions: deploy.replicas.unwrap_or(1),
            },
            file::DeployMode::GlobalJob => ServiceMode::GlobalJob,
        }
    }

    fn argv(&mut self, value: Option<&StringOrList>, loc: &Loc) -> Option<Vec<String>> {
        match value? {
            StringOrList::List(items) => Some(items.clone()),
            StringOrList::String(text) => match shlex::split(text) {
                Some(words) => Some(words),
                None => {
                    self.diags
                        .error(loc.span(), &loc.path, "unbalanced quotes in the command")
                        .help("close the quote, or write the command as a list of arguments");
                    None
                }
            },
        }
    }

    fn environment(&mut self, service: &file::Service, loc: &Loc) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        // Where each variable's value came from, and how to name it: its templates are
        // checked once the value that wins is known.
        let mut origins: BTreeMap<String, (Loc, String)> = BTreeMap::new();
        let env_files = match &service.env_file {
            None => Vec::new(),
            Some(StringOrList::String(one)) => vec![one.clone()],
            Some(StringOrList::List(many)) => many.clone(),
        };
        for (i, relative) in env_files.iter().enumerate() {
            let at = match service.env_file {
                Some(StringOrList::List(_)) => loc.key("env_file").index(i),
                _ => loc.key("env_file"),
            };
            let Some(content) = self.read_relative(relative, &at) else {
                continue;
            };
            match dotenv::parse(&String::from_utf8_lossy(&content)) {
                Ok(vars) => {
                    for (key, value) in vars {
                        // A `KEY` alone takes its value from the environment of `swarm`,
                        // as Docker's and Compose's env files do; unset there, the line is
                        // skipped (an earlier value stays).
                        let origin = match value {
                            Some(_) => format!("{relative}: {key}"),
                            None => format!("{relative}: {key} (from the environment of swarm)"),
                        };
                        if let Some(value) = value.or_else(|| (self.lookup)(&key)) {
                            origins.insert(key.clone(), (at.clone(), origin));
                            env.insert(key, value);
                        }
                    }
                }
                Err(e) => {
                    self.diags.error(
                        at.span(),
                        &at.path,
                        format!("{relative}:{}: {}", e.line, e.message),
                    );
                }
            }
        }
        let at = loc.key("environment");
        for (i, (key, value)) in key_values(service.environment.as_ref())
            .into_iter()
            .enumerate()
        {
            let item = match service.environment {
                Some(ListOrMap::List(_)) => at.index(i),
                _ => at.key(&key),
            };
            if key.is_empty() || key.contains(char::is_whitespace) {
                self.diags.error(
                    item.span(),
                    &item.path,
                    format!("invalid environment variable name {key:?}"),
                );
                continue;
            }
            // A variable without a value takes its value from the environment of `swarm`,
            // as Compose does; unset there, it is left out.
            let origin = match value {
                Some(_) => key.clone(),
                None => format!("{key} (from the environment of swarm)"),
            };
            match value.or_else(|| (self.lookup)(&key)) {
                Some(value) => {
                    origins.insert(key.clone(), (item, origin));
                    env.insert(key, value);
                }
                None => {
                    env.remove(&key);
                }
            }
        }
        for (key, value) in &env {
            if let Some((at, what)) = origins.get(key) {
                self.template(value, at, Some(what));
            }
        }
        env
    }

    fn labels(&mut self, labels: Option<&ListOrMap>, loc: &Loc) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (i, (key, value)) in key_values(labels).into_iter().enumerate() {
            if key.is_empty() {
                let item = match labels {
                    Some(ListOrMap::List(_)) => loc.index(i),
                    _ => loc.clone(),
                };
                self.diags
                    .error(item.span(), &item.path, "a label needs a name");
                continue;
            }
            out.insert(key, value.unwrap_or_default());
        }
        out
    }

    fn stop_signal(&mut self, signal: Option<&str>, loc: &Loc) -> Option<String> {
        const SIGNALS: [&str; 12] = [
            "SIGTERM", "SIGINT", "SIGQUIT", "SIGKILL", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGWINCH",
            "SIGSTOP", "SIGABRT", "SIGALRM", "SIGPWR",
        ];
        let text = signal?;
        let upper = text.trim().to_ascii_uppercase();
        let name = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        if SIGNALS.contains(&name.as_str()) {
            return Some(name);
        }
        if let Ok(number) = text.trim().parse::<u8>()
            && (1..=64).contains(&number)
        {
            return Some(number.to_string());
        }
        self.diags
            .error(loc.span(), &loc.path, format!("unknown signal {text:?}"))
            .help(format!(
                "use a signal name such as {}",
                SIGNALS[..4].join(", ")
            ));
        None
    }

    fn healthcheck(
        &mut self,
        check: Option<&file::Healthcheck>,
        loc: &Loc,
    ) -> Option<spec::Healthcheck> {
        let check = check?;
        let test = if check.disable == Some(true) {
            vec!["NONE".to_owned()]
        } else {
            match &check.test {
                // Only timings: the image's test with new timings.
                None => Vec::new(),
                Some(StringOrList::String(command)) => {
                    vec!["CMD-SHELL".to_owned(), command.clone()]
                }
                Some(StringOrList::List(items)) => {
                    let at = loc.key("test");
                    match items.first().map(String::as_str) {
                        Some("CMD" | "CMD-SHELL") if items.len() > 1 => items.clone(),
                        Some("NONE") => vec!["NONE".to_owned()],
                        _ => {
                            self.diags
                                .error(at.span(), &at.path, "a healthcheck test list starts with CMD, CMD-SHELL or NONE, followed by the command")
                                .help("e.g. [\"CMD\", \"wget\", \"-q\", \"-O-\", \"http://localhost/\"] or [\"CMD-SHELL\", \"curl -f localhost\"]");
                            return None;
                        }
                    }
                }
            }
        };
        Some(spec::Healthcheck {
            test,
            interval: check.interval.unwrap_or(GoDuration::from_secs(30)),
            timeout: check.timeout.unwrap_or(GoDuration::from_secs(30)),
            retries: check.retries.unwrap_or(3),
            start_period: check.start_period.unwrap_or_default(),
            start_interval: check.start_interval.unwrap_or(GoDuration::from_secs(5)),
        })
    }

    /// A service's `volumes` and `tmpfs` mounts, by target, no two on one target.
    fn service_mounts(
        &mut self,
        service: &file::Service,
        loc: &Loc,
        names: &Names,
    ) -> Vec<spec::Mount> {
        let volumes = loc.key("volumes");
        let mut mounts = self.mounts(
            service.volumes.as_deref().unwrap_or_default(),
            &volumes,
            names,
        );
        self.no_duplicate_targets(mounts.iter().map(|m| m.target.as_str()), &volumes, "mount");
        for (tmpfs, at) in self.tmpfs_mounts(service.tmpfs.as_ref(), &loc.key("tmpfs")) {
            if mounts.iter().any(|m| m.target == tmpfs.target) {
                self.diags
                    .error(
                        at.span(),
                        &at.path,
                        format!("two mounts target {}", tmpfs.target),
                    )
                    .help("a target takes one mount: drop this tmpfs or the other mount");
            } else {
                mounts.push(tmpfs);
            }
        }
        mounts.sort_by(|a, b| a.target.cmp(&b.target));
        mounts
    }

    /// The service's `tmpfs` key, as Compose reads it: `PATH[:OPTIONS]`, the options those
    /// of Docker's `--tmpfs` that a swarm tmpfs mount has (`size`, `mode`, `ro`, `rw`,
    /// `exec`, `noexec`, and `nosuid`, `nodev`, which it always is).
    fn tmpfs_mounts<'n>(
        &mut self,
        value: Option<&StringOrList>,
        loc: &Loc<'n>,
    ) -> Vec<(spec::Mount, Loc<'n>)> {
        let entries: Vec<(&String, Loc)> = match value {
            None => return Vec::new(),
            Some(StringOrList::String(one)) => vec![(one, loc.clone())],
            Some(StringOrList::List(many)) => many
                .iter()
                .enumerate()
                .map(|(i, entry)| (entry, loc.index(i)))
                .collect(),
        };
        let mut out = Vec::new();
        for (entry, at) in entries {
            let (target, options) = match entry.split_once(':') {
                Some((target, options)) => (target, Some(options)),
                None => (entry.as_str(), None),
            };
            if !target.starts_with('/') {
                self.diags
                    .error(
                        at.span(),
                        &at.path,
                        format!("the tmpfs target {target:?} is not an absolute path"),
                    )
                    .help("write PATH[:OPTIONS], such as /run or /tmp:size=64m,mode=1777");
                continue;
            }
            if !self.template(target, &at, None) {
                continue;
            }
            let mut tmpfs = spec::TmpfsOptions::default();
            let mut read_only = false;
            let mut ok = true;
            let options = options.into_iter().flat_map(|o| o.split(','));
            for option in options.filter(|option| !option.is_empty()) {
                if let Err((reason, help)) = tmpfs_option(option, &mut tmpfs, &mut read_only) {
                    self.diags.error(at.span(), &at.path, reason).help(help);
                    ok = false;
                }
            }
            if ok {
                let mount = spec::Mount {
                    kind: MountKind::Tmpfs,
                    source: None,
                    target: target.to_owned(),
                    read_only,
                    volume: None,
                    no_copy: false,
                    propagation: None,
                    tmpfs: (tmpfs != spec::TmpfsOptions::default()).then_some(tmpfs),
                };
                out.push((mount, at));
            }
        }
        out
    }

    fn mounts(&mut self, mounts: &[file::Mount], loc: &Loc, names: &Names) -> Vec<spec::Mount> {
        let mut out = Vec::new();
        for (i, mount) in mounts.iter().enumerate() {
            let at = loc.index(i);
            let mut options = KindOptions::default();
            let (kind, source, target, read_only) = match mount {
                file::Mount::Long(long) => {
                    let kind = match long.kind {
                        file::MountKind::Volume => MountKind::Volume,
                        file::MountKind::Bind => MountKind::Bind,
                        file::MountKind::Tmpfs => MountKind::Tmpfs,
                    };
                    match self.kind_options(long, kind, &at) {
                        Some(found) => options = found,
                        None => continue,
                    }
                    (
                        kind,
                        long.source.clone(),
                        long.target.clone(),
                        long.read_only.unwrap_or(false),
                    )
                }
                file::Mount::Short(text) => {
                    let bytes = text.as_bytes();
                    if bytes.len() > 2
                        && bytes[0].is_ascii_alphabetic()
                        && bytes[1] == b':'
                        && matches!(bytes[2], b'\\' | b'/')
                    {
                        self.diags
                            .error(at.span(), &at.path, format!("{text:?} is a Windows path: swarm's nodes are Linux, where it cannot be mounted"))
                            .help("mount a path of the nodes, such as /srv/data:/data");
                        continue;
                    }
                    let parts: Vec<&str> = text.split(':').collect();
                    if parts.len() > 1 && parts.iter().any(|part| part.is_empty()) {
                        self.diags
                            .error(
                                at.span(),
                                &at.path,
                                format!("invalid mount {text:?}: an empty section between colons"),
                            )
                            .help(
                                "write SOURCE:TARGET[:OPTIONS], or TARGET for an anonymous volume",
                            );
                        continue;
                    }
                    let (source, target, mode) = match parts.as_slice() {
                        [target] => (None, *target, None),
                        [source, target] => (Some(*source), *target, None),
                        [source, target, mode] => (Some(*source), *target, Some(*mode)),
                        _ => {
                            self.diags
                                .error(at.span(), &at.path, format!("invalid mount {text:?}"))
                                .help(
                                    "write SOURCE:TARGET[:ro], or TARGET for an anonymous volume",
                                );
                            continue;
                        }
                    };
                    let kind = match source {
                        Some(s) if s.starts_with(['/', '.', '~']) => MountKind::Bind,
                        _ => MountKind::Volume,
                    };
                    let mut read_only = false;
                    if let Some(mode) = mode {
                        match self.short_mode(mode, kind, &at) {
                            Some((ro, found)) => (read_only, options) = (ro, found),
                            None => continue,
                        }
                    }
                    (
                        kind,
                        source.map(str::to_owned),
                        target.to_owned(),
                        read_only,
                    )
                }
            };
            let templates_known = [source.as_deref(), Some(target.as_str())]
                .into_iter()
                .flatten()
                .all(|text| self.template(text, &at, None));
            if !templates_known {
                continue;
            }
            if !target.starts_with('/') {
                self.diags.error(
                    at.span(),
                    &at.path,
                    format!("the mount target {target:?} is not an absolute path"),
                );
                continue;
            }
            let mut volume_options = None;
            let source = match (kind, source) {
                (MountKind::Bind, Some(path)) if !path.starts_with('/') => {
                    let resolved = self.host_path(&path);
                    self.diags
                        .warning(
                            at.span(),
                            &at.path,
                            format!("the bind source {path:?} is {resolved} on the nodes"),
                        )
                        .help("relative paths are resolved against the directory of the stack file, as `docker stack deploy` does: the path must exist on every node a task may run on");
                    Some(resolved)
                }
                (MountKind::Bind, None) => {
                    self.diags
                        .error(at.span(), &at.path, "a bind mount needs a source path");
                    continue;
                }
                (MountKind::Volume, Some(volume)) => match names.volumes.get(&volume) {
                    Some((name, options)) => {
                        volume_options = options.clone();
                        Some(name.clone())
                    }
                    None => {
                        self.undefined(&at, "volume", &volume, names.volumes.keys());
                        continue;
                    }
                },
                (_, source) => source,
            };
            if kind == MountKind::Tmpfs && source.is_some() {
                self.diags
                    .error(at.span(), &at.path, "a tmpfs mount takes no source")
                    .help("remove `source`: each task gets its own empty tmpfs");
                continue;
            }
            out.push(spec::Mount {
                kind,
                source,
                target,
                read_only,
                volume: volume_options,
                no_copy: options.no_copy,
                propagation: options.propagation,
                tmpfs: options.tmpfs,
            });
        }
        out
    }

    /// The options after a short mount's second colon (`ro`, `rw`, `nocopy`, a bind
    /// propagation, comma-separated), read as `docker stack deploy` reads them: what it
    /// ignores (SELinux labels, Docker Desktop's sharing hints, anything else) is warned
    /// about and ignored; an option of the other mount type is an error, as in Docker.
    fn short_mode(&mut self, mode: &str, kind: MountKind, at: &Loc) -> Option<(bool, KindOptions)> {
        let (mut read_only, mut options) = (false, KindOptions::default());
        // An empty option (`ro,`) is ignored, as Docker ignores it.
        for option in mode.split(',').filter(|option| !option.is_empty()) {
            let wrong_kind = |own: MountKind| {
                format!(
                    "mount option {option:?} applies to {} mounts only, and this is a {} mount",
                    own.as_str(),
                    kind.as_str()
                )
            };
            match option {
                "ro" => read_only = true,
                "rw" => read_only = false,
                "nocopy" if kind == MountKind::Volume => options.no_copy = true,
                "nocopy" => {
                    self.diags
                        .error(at.span(), &at.path, wrong_kind(MountKind::Volume))
                        .help("remove `nocopy`: a bind mount shows the host's files, there is nothing to copy");
                    return None;
                }
                _ => match option.parse::<spec::Propagation>() {
                    Ok(propagation) if kind == MountKind::Bind => {
                        options.propagation = Some(propagation);
                    }
                    Ok(_) => {
                        self.diags
                            .error(at.span(), &at.path, wrong_kind(MountKind::Bind))
                            .help("remove it, or mount a host path (a source starting with /, . or ~)");
                        return None;
                    }
                    Err(_) => {
                        let why = match option {
                            "z" | "Z" => "SELinux relabelling is not done by swarm",
                            "cached" | "delegated" | "consistent" => {
                                "a Docker Desktop file-sharing hint, meaningless on a node"
                            }
                            _ => "not a mount option swarm knows (Docker ignores it too)",
                        };
                        self.diags
                            .warning(
                                at.span(),
                                &at.path,
                                format!("mount option {option:?} is ignored: {why}"),
                            )
                            .help(format!(
                                "options are ro, rw, nocopy (volumes) and a propagation for binds: {}",
                                spec::Propagation::SPELLINGS
                            ));
                    }
                },
            }
        }
        Some((read_only, options))
    }

    /// Whether `text`'s Swarm templates (`{{.Task.Slot}}`, …) are all known; an error at
    /// `at` when not (swarmkit would fail every task at its start), naming `what` holds
    /// the text when `at` alone does not say.
    fn template(&mut self, text: &str, at: &Loc, what: Option<&str>) -> bool {
        match swarm_api::template::check(text) {
            Ok(()) => true,
            Err(error) => {
                let message = match what {
                    Some(what) => format!("{what}: {error}"),
                    None => error.to_string(),
                };
                self.diags
                    .error(at.span(), &at.path, message)
                    .help("templates are filled on the node that runs the task; write {{\"{{\"}} for braces meant literally");
                false
            }
        }
    }

    /// The `bind:`, `volume:` and `tmpfs:` options of a long-syntax mount, each allowed only
    /// with its own kind (Docker refuses the others too); `None` after an error.
    fn kind_options(
        &mut self,
        long: &file::MountLong,
        kind: MountKind,
        at: &Loc,
    ) -> Option<KindOptions> {
        let mut options = KindOptions::default();
        let given = [
            ("bind", long.bind.is_some(), MountKind::Bind),
            ("volume", long.volume.is_some(), MountKind::Volume),
            ("tmpfs", long.tmpfs.is_some(), MountKind::Tmpfs),
        ];
        let mut ok = true;
        for (key, present, own) in given {
            if present && own != kind {
                let field = at.key(key);
                self.diags
                    .error(
                        field.span(),
                        &field.path,
                        format!("`{key}` options on a mount of type {}", kind.as_str()),
                    )
                    .help(format!(
                        "`{key}` applies to type {key} mounts only: remove it or change the type"
                    ));
                ok = false;
            }
        }
        if !ok {
            return None;
        }
        if let Some(bind) = &long.bind
            && let Some(text) = &bind.propagation
        {
            match text.parse::<spec::Propagation>() {
                Ok(propagation) => options.propagation = Some(propagation),
                Err(reason) => {
                    let field = at.key("bind").key("propagation");
                    self.diags.error(field.span(), &field.path, reason);
                    return None;
                }
            }
        }
        if let Some(volume) = &long.volume {
            options.no_copy = volume.nocopy.unwrap_or(false);
        }
        if let Some(tmpfs) = &long.tmpfs {
            if let Some(mode) = tmpfs.mode
                && mode > 0o7777
            {
                let field = at.key("tmpfs").key("mode");
                self.diags
                    .error(
                        field.span(),
                        &field.path,
                        format!("tmpfs mode {mode:o} is not a file mode"),
                    )
                    .help("write an octal mode such as 1777 or 0700");
                return None;
            }
            options.tmpfs = Some(spec::TmpfsOptions {
                size_bytes: tmpfs.size.map(|size| size.0),
                mode: tmpfs.mode,
                exec: false,
            });
        }
        Some(options)
    }

    fn no_duplicate_targets<'t>(
        &mut self,
        targets: impl Iterator<Item = &'t str>,
        loc: &Loc,
        what: &str,
    ) {
        let mut seen = BTreeSet::new();
        for target in targets {
            if !seen.insert(target) {
                self.diags.error(
                    loc.span(),
                    &loc.path,
                    format!("two {what}s target {target}"),
                );
            }
        }
    }

    fn undefined<'k>(
        &mut self,
        at: &Loc,
        what: &str,
        name: &str,
        known: impl Iterator<Item = &'k String>,
    ) {
        if self
            .refused_sections
            .iter()
            .any(|section| section.strip_suffix('s') == Some(what))
        {
            return;
        }
        let known: Vec<&str> = known.map(String::as_str).collect();
        let diag = self.diags.error(
            at.span(),
            &at.path,
            format!("{what} `{name}` is not defined in the top-level `{what}s` section"),
        );
        match super::diagnostic::did_you_mean(name, known.iter().copied()) {
            Some(suggestion) => diag.help(format!("did you mean `{suggestion}`?")),
            None => diag.help(format!(
                "declare it under `{what}s:` at the top of the file"
            )),
        };
    }

    fn file_references(
        &mut self,
        references: &[file::FileReference],
        loc: &Loc,
        names: &BTreeMap<String, String>,
        digests: &BTreeMap<String, String>,
        what: &str,
        directory: &str,
    ) -> Vec<spec::FileReference> {
        let mut out = Vec::new();
        for (i, reference) in references.iter().enumerate() {
            let at = loc.index(i);
            let long = match reference {
                file::FileReference::Short(source) => file::FileReferenceLong {
                    source: source.clone(),
                    target: None,
                    uid: None,
                    gid: None,
                    mode: None,
                },
                file::FileReference::Long(long) => long.clone(),
            };
            let Some(name) = names.get(&long.source) else {
                self.undefined(&at, what, &long.source, names.keys());
                continue;
            };
            // As the engine places them: a relative target (the source when none is given)
            // is a file in the kind's directory, so `[s]` and `{source: s, target: s}` agree.
            let target = long.target.unwrap_or_else(|| long.source.clone());
            let target = if target.starts_with('/') {
                target
            } else {
                format!("{directory}{target}")
            };
            let reference = spec::FileReference {
                source: name.clone(),
                target,
                uid: long.uid.unwrap_or_else(|| "0".to_owned()),
                gid: long.gid.unwrap_or_else(|| "0".to_owned()),
                mode: long.mode.unwrap_or(0o444),
                digest: digests.get(name).cloned(),
            };
            if let Some(problem) = reference.target_problem() {
                self.diags.error(at.span(), &at.path, problem);
                continue;
            }
            let mode = reference.mode;
            if mode > 0o777 {
                self.diags.error(
                    at.key("mode").span(),
                    &at.key("mode").path,
                    format!("file mode {mode:o} is more than 0777"),
                );
                continue;
            }
            out.push(reference);
        }
        out.sort_by(|a, b| a.target.cmp(&b.target));
        self.no_duplicate_targets(out.iter().map(|r| r.target.as_str()), loc, what);
        out
    }

    fn resources(&mut self, resources: Option<&file::Resources>, loc: &Loc) -> spec::Resources {
        let resources = resources.cloned().unwrap_or_default();
        let limits = resources.limits.unwrap_or_default();
        let reservations = resources.reservations.unwrap_or_default();
        let limits_loc = loc.key("limits");
        let out = spec::Resources {
            limits: spec::ResourceLimits {
                cpus: limits.cpus.map(|c| c.0),
                memory: limits.memory,
                // 0 is Docker's "no limit", as for `--limit-pids 0`.
                pids: limits.pids.filter(|&pids| pids > 0),
            },
            reservations: spec::ResourceReservations {
                cpus: reservations.cpus.map(|c| c.0),
                memory: reservations.memory,
            },
        };
        if let Some(cpus) = out.limits.cpus.filter(|c| c.0 == 0) {
            let at = limits_loc.key("cpus");
            self.diags
                .error(
                    at.span(),
                    &at.path,
                    format!("a CPU limit of {cpus} would stop the task from running"),
                )
                .help("give a positive number of CPUs, or remove the limit");
        }
        if let Some(memory) = out.limits.memory.filter(|m| m.0 < MIN_MEMORY_LIMIT) {
            let at = limits_loc.key("memory");
            self.diags.error(
                at.span(),
                &at.path,
                format!("a memory limit of {memory} is below the minimum of 6MiB"),
            );
        }
        let over = |limit: Option<u64>, reservation: Option<u64>| matches!((limit, reservation), (Some(l), Some(r)) if r > l);
        if over(
            out.limits.cpus.map(|c| c.0),
            out.reservations.cpus.map(|c| c.0),
        ) {
            let at = loc.key("reservations").key("cpus");
            self.diags.error(
                at.span(),
                &at.path,
                "the CPU reservation is more than the CPU limit",
            );
        }
        if over(
            out.limits.memory.map(|m| m.0),
            out.reservations.memory.map(|m| m.0),
        ) {
            let at = loc.key("reservations").key("memory");
            self.diags.error(
                at.span(),
                &at.path,
                "the memory reservation is more than the memory limit",
            );
        }
        out
    }

    /// Compose's `restart`, which Docker turns into the restart policy when the service
    /// has no `deploy.restart_policy` (docker/cli's ParseRestartPolicy: `NAME[:COUNT]`).
    fn compose_restart(
        &mut self,
        restart: Option<&str>,
        job: bool,
        loc: &Loc,
    ) -> spec::RestartPolicy {
        let defaults = restart_policy(None, job);
        // Empty, as `${RESTART}` unset gives: no policy, as in Docker.
        let Some(text) = restart.filter(|text| !text.is_empty()) else {
            return defaults;
        };
        let (name, count) = text.split_once(':').unwrap_or((text, ""));
        let max_attempts = match count {
            "" => 0,
            count => match count.strip_prefix('+').unwrap_or(count).parse::<u64>() {
                Ok(count) => count,
                Err(_) => {
                    self.diags
                        .error(
                            loc.span(),
                            &loc.path,
                            format!("the maximum retry count {count:?} in restart {text:?} is not a whole number"),
                        )
                        .help("write on-failure:N, N the most times a failed task is restarted");
                    return defaults;
                }
            },
        };
        match name {
            "on-failure" => spec::RestartPolicy {
                condition: spec::RestartCondition::OnFailure,
                max_attempts,
                ..defaults
            },
            // A job keeps its default (on failure): restarted at any exit, it would never
            // complete.
            "always" | "unless-stopped" if job => defaults,
            "always" | "unless-stopped" => spec::RestartPolicy {
                condition: spec::RestartCondition::Any,
                ..defaults
            },
            "no" => {
                self.diags
                    .warning(
                        loc.span(),
                        &loc.path,
                        "`restart: no` is ignored, as Docker ignores it: the service's default restart policy applies",
                    )
                    .help("to never restart the tasks, set deploy.restart_policy.condition: none");
                defaults
            }
            _ => {
                self.diags
                    .error(loc.span(), &loc.path, format!("unknown restart policy {text:?}"))
                    .help("use no, always, unless-stopped or on-failure[:MAX_ATTEMPTS], or deploy.restart_policy");
                defaults
            }
        }
    }

    fn placement(&mut self, deploy: &file::Deploy, loc: &Loc) -> spec::Placement {
        let placement = deploy.placement.clone().unwrap_or_default();
        let loc = loc.key("placement");
        let mut constraints: Vec<Constraint> = Vec::new();
        for (i, text) in placement.constraints.iter().flatten().enumerate() {
            match text.parse::<Constraint>() {
                Ok(constraint) => constraints.push(constraint),
                Err(e) => {
                    let at = loc.key("constraints").index(i);
                    self.diags.error(at.span(), &at.path, e.to_string());
                }
            }
        }
        constraints.sort();
        constraints.dedup();
        let mut preferences = Vec::new();
        for (i, preference) in placement.preferences.iter().flatten().enumerate() {
            // Kept as written, as Docker keeps it: the scheduler skips what is no label.
            let spread = SpreadOver {
                spread: preference.spread.trim().to_owned(),
            };
            if spread.label().is_none() {
                let at = loc.key("preferences").index(i).key("spread");
                self.diags
                    .warning(
                        at.span(),
                        &at.path,
                        format!("spreading over {:?} has no effect: only node and engine labels are spread over, and tasks are spread over nodes already", spread.spread),
                    )
                    .help("remove it, or spread over a node label: node.labels.<name>");
            }
            preferences.push(spread);
        }
        spec::Placement {
            constraints,
            preferences,
            max_replicas_per_node: placement.max_replicas_per_node.unwrap_or(0),
        }
    }

    fn attachments(
        &mut self,
        service_key: &str,
        networks: Option<&file::ServiceNetworks>,
        loc: &Loc,
        names: &Names,
    ) -> Vec<NetworkAttachment> {
        let requested: Vec<(String, Vec<String>, Loc)> = match networks {
            None => vec![(DEFAULT_NETWORK.to_owned(), Vec::new(), loc.clone())],
            Some(file::ServiceNetworks::List(list)) => list
                .iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), Vec::new(), loc.index(i)))
                .collect(),
            Some(file::ServiceNetworks::Map(map)) => map
                .iter()
                .map(|(n, attachment)| {
                    let aliases = attachment
                        .as_ref()
                        .and_then(|a| a.aliases.clone())
                        .unwrap_or_default();
                    (n.clone(), aliases, loc.key(n))
                })
                .collect(),
        };
        let mut out = Vec::new();
        for (network, mut aliases, at) in requested {
            let Some(target) = names.networks.get(&network) else {
                self.undefined(&at, "network", &network, names.networks.keys());
                continue;
            };
            // `docker stack deploy` lets other services reach this one by its short name.
            aliases.push(service_key.to_owned());
            aliases.sort();
            aliases.dedup();
            out.push(NetworkAttachment {
                target: target.clone(),
                aliases,
            });
        }
        out.sort_by(|a, b| a.target.cmp(&b.target));
        out
    }

    fn endpoint(
        &mut self,
        service_name: &str,
        service: &file::Service,
        deploy: &file::Deploy,
        loc: &Loc,
        published: &mut BTreeMap<(u16, Protocol), (String, Option<Span>)>,
    ) -> EndpointSpec {
        let mode = match deploy.endpoint_mode {
            Some(file::EndpointMode::Dnsrr) => spec::EndpointMode::Dnsrr,
            _ => spec::EndpointMode::Vip,
        };
        let mut ports = Vec::new();
        // This service's published ports: where each is, and its target.
        let mut own: BTreeMap<(u16, Protocol), (u16, Option<Span>)> = BTreeMap::new();
        let ports_loc = loc.key("ports");
        for (i, port) in service.ports.iter().flatten().enumerate() {
            let at = ports_loc.index(i);
            match parse_port(port) {
                Ok((parsed, host_ip)) => {
                    // Docker says nothing of an address that means every one.
                    let unspecified = |ip: &str| {
                        ip.parse::<std::net::IpAddr>()
                            .is_ok_and(|ip| ip.is_unspecified())
                    };
                    if let Some(ip) = host_ip.filter(|ip| !unspecified(ip)) {
                        self.diags
                            .warning(at.span(), &at.path, format!("the host address {ip} is ignored: the routing mesh publishes on every address of every node"));
                    }
                    for port in parsed {
                        self.check_published(service_name, &port, &at, mode, published);
                        self.check_published_once(&port, &at, &mut own);
                        ports.push(port);
                    }
                }
                Err(reason) => {
                    self.diags
                        .error(at.span(), &at.path, reason)
                        .help("write \"PUBLISHED:TARGET[/udp]\", \"TARGET\", or the long form with target, published, protocol and mode");
                }
            }
        }
        ports.sort();
        ports.dedup();
        EndpointSpec { mode, ports }
    }

    /// One published port of a service goes to one target (the same port written twice
    /// is one).
    fn check_published_once(
        &mut self,
        port: &PortConfig,
        at: &Loc,
        own: &mut BTreeMap<(u16, Protocol), (u16, Option<Span>)>,
    ) {
        let Some(number) = port.published else { return };
        match own.get(&(number, port.protocol)) {
            Some((target, first)) if *target != port.target => self.published_twice(
                at,
                format!(
                    "port {number}/{} is already published to target {target}",
                    port.protocol
                ),
                *first,
                "a published port leads to one target port: pick another published port",
            ),
            Some(_) => {}
            None => {
                own.insert((number, port.protocol), (port.target, at.span()));
            }
        }
    }

    /// A port published where it was already: the error at `at`, naming the line of the
    /// first.
    fn published_twice(&mut self, at: &Loc, message: String, first: Option<Span>, help: &str) {
        let line = first
            .map(|s| format!(" (line {})", s.line))
            .unwrap_or_default();
        self.diags
            .error(at.span(), &at.path, format!("{message}{line}"))
            .help(help);
    }

    fn check_published(
        &mut self,
        service_name: &str,
        port: &PortConfig,
        at: &Loc,
        mode: spec::EndpointMode,
        published: &mut BTreeMap<(u16, Protocol), (String, Option<Span>)>,
    ) {
        if port.mode != PublishMode::Ingress {
            return;
        }
        if mode == spec::EndpointMode::Dnsrr {
            self.diags
                .error(
                    at.span(),
                    &at.path,
                    "a port published in ingress mode cannot be used with endpoint_mode: dnsrr",
                )
                .help("publish it with mode: host, or use endpoint_mode: vip");
        }
        let Some(number) = port.published else { return };
        let key = (number, port.protocol);
        match published.get(&key) {
            Some((other, first)) if other != service_name => self.published_twice(
                at,
                format!(
                    "port {number}/{} is already published by service {other}",
                    port.protocol
                ),
                *first,
                "every node listens on an ingress port once: pick another published port",
            ),
            Some(_) => {}
            None => {
                published.insert(key, (service_name.to_owned(), at.span()));
            }
        }
    }
}

/// The external networks, configs and secrets the services use, by their cluster names.
/// The networks Docker has on every node (`host`, `bridge`, `none`) are not checked, as
/// `docker stack deploy` does not.
fn used_externals(
    file: &StackFile,
    services: &[ServiceSpec],
    names: &Names,
) -> Vec<(Kind, String)> {
    fn external_names<T>(
        declared: &BTreeMap<String, Option<T>>,
        external: fn(&T) -> Option<&External>,
        cluster: &BTreeMap<String, String>,
    ) -> BTreeSet<String> {
        declared
            .iter()
            .filter(|(_, object)| is_external(object.as_ref().and_then(external)))
            .filter_map(|(key, _)| cluster.get(key).cloned())
            .collect()
    }
    let networks = external_names(&file.networks, |n| n.external.as_ref(), &names.networks);
    let configs = external_names(&file.configs, |c| c.external.as_ref(), &names.configs);
    let secrets = external_names(&file.secrets, |s| s.external.as_ref(), &names.secrets);
    let mut used = BTreeSet::new();
    for service in services {
        let container = &service.task.container;
        for attachment in &service.task.networks {
            if networks.contains(&attachment.target)
                && !matches!(attachment.target.as_str(), "host" | "bridge" | "none")
            {
                used.insert((Kind::Network, attachment.target.clone()));
            }
        }
        for reference in &container.configs {
            if configs.contains(&reference.source) {
                used.insert((Kind::Config, reference.source.clone()));
            }
        }
        for reference in &container.secrets {
            if secrets.contains(&reference.source) {
                used.insert((Kind::Secret, reference.source.clone()));
            }
        }
    }
    used.into_iter().collect()
}

fn is_external(external: Option<&External>) -> bool {
    matches!(external, Some(External::Flag(true) | External::Named(_)))
}

/// The `KEY=value` pairs of a list or map; `None` where no value is given.
fn key_values(value: Option<&ListOrMap>) -> Vec<(String, Option<String>)> {
    match value {
        None => Vec::new(),
        Some(ListOrMap::Map(map)) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        Some(ListOrMap::List(list)) => list
            .iter()
            .map(|item| match item.split_once('=') {
                Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                None => (item.clone(), None),
            })
            .collect(),
    }
}

fn mode_is_job(mode: file::DeployMode) -> bool {
    matches!(
        mode,
        file::DeployMode::ReplicatedJob | file::DeployMode::GlobalJob
    )
}

/// A job's tasks are restarted on failure only by default, as Docker's: one that
/// completed is done.
fn restart_policy(policy: Option<&file::RestartPolicy>, job: bool) -> spec::RestartPolicy {
    let mut defaults = spec::RestartPolicy::default();
    if job {
        defaults.condition = spec::RestartCondition::OnFailure;
    }
    let Some(policy) = policy else {
        return defaults;
    };
    spec::RestartPolicy {
        condition: match policy.condition {
            Some(file::RestartCondition::None) => spec::RestartCondition::None,
            Some(file::RestartCondition::OnFailure) => spec::RestartCondition::OnFailure,
            Some(file::RestartCondition::Any) => spec::RestartCondition::Any,
            None => defaults.condition,
        },
        delay: policy.delay.unwrap_or(defaults.delay),
        max_attempts: policy.max_attempts.unwrap_or(defaults.max_attempts),
        window: policy.window.unwrap_or(defaults.window),
    }
}

fn update_policy(config: Option<&file::UpdateConfig>) -> UpdatePolicy {
    let defaults = UpdatePolicy::default();
    let Some(config) = config else {
        return defaults;
    };
    UpdatePolicy {
        parallelism: config.parallelism.unwrap_or(defaults.parallelism),
        delay: config.delay.unwrap_or(defaults.delay),
        failure_action: match config.failure_action {
            Some(file::FailureAction::Continue) => spec::FailureAction::Continue,
            Some(file::FailureAction::Rollback) => spec::FailureAction::Rollback,
            Some(file::FailureAction::Pause) | None => spec::FailureAction::Pause,
        },
        monitor: config.monitor.unwrap_or(defaults.monitor),
        max_failure_ratio: config
            .max_failure_ratio
            .unwrap_or(defaults.max_failure_ratio),
        order: match config.order {
            Some(file::UpdateOrder::StartFirst) => spec::UpdateOrder::StartFirst,
            Some(file::UpdateOrder::StopFirst) | None => spec::UpdateOrder::StopFirst,
        },
    }
}

/// One option of a `tmpfs` entry (`size=64m`, `mode=1777`, `ro`, `rw`, `exec`, `noexec`,
/// and `nosuid`, `nodev`, which a swarm tmpfs always is) into `tmpfs` and `read_only`; a
/// refused one: why, and how to write it.
fn tmpfs_option(
    option: &str,
    tmpfs: &mut spec::TmpfsOptions,
    read_only: &mut bool,
) -> Result<(), (String, &'static str)> {
    match option.split_once('=') {
        None if matches!(option, "ro" | "rw") => *read_only = option == "ro",
        None if matches!(option, "exec" | "noexec") => tmpfs.exec = option == "exec",
        None if matches!(option, "nosuid" | "nodev") => {}
        Some(("size", size)) => match size.parse::<swarm_api::units::ByteSize>() {
            Ok(size) => tmpfs.size_bytes = Some(size.0),
            Err(reason) => return Err((reason.to_string(), "write a size such as size=64m")),
        },
        Some(("mode", mode)) => match octal_mode(mode).filter(|value| *value <= 0o7777) {
            Some(value) => tmpfs.mode = Some(value),
            None => {
                return Err((
                    format!("tmpfs mode {mode:?} is not an octal file mode"),
                    "write an octal mode such as mode=1777 or mode=0700",
                ));
            }
        },
        _ => {
            return Err((
                format!("tmpfs option {option:?} is not supported by swarm"),
                "a swarm tmpfs takes size=, mode=, ro, rw, exec and noexec (it is always nosuid and nodev)",
            ));
        }
    }
    Ok(())
}

/// A mode written in octal digits alone (`1777`, `0700`; not `+755`).
pub(crate) fn octal_mode(text: &str) -> Option<u32> {
    u32::from_str_radix(text, 8)
        .ok()
        .filter(|_| text.bytes().all(|b| b.is_ascii_digit()))
}

/// Names of stacks, services and other objects: Docker's rule.
pub(crate) fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// `path` without `.` and with each `..` taking away the component before it, as Go's
/// `filepath.Clean` (Docker's client) does.
fn lexically_normal(path: &Path) -> std::path::PathBuf {
    use std::path::Component;
    let mut out = std::path::PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push(component);
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// Stack names: the first part of every service's name, which swarmkit checks as a DNS
/// label part (no '.', no '+').
pub(crate) fn valid_stack_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
}

pub(crate) fn valid_cidr(text: &str) -> bool {
    let Some((address, prefix)) = text.split_once('/') else {
        return false;
    };
    match address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => prefix.parse::<u8>().is_ok_and(|p| p <= 32),
        Ok(std::net::IpAddr::V6(_)) => prefix.parse::<u8>().is_ok_and(|p| p <= 128),
        Err(_) => false,
    }
}

/// A port entry → the ports it publishes (a range publishes several), and the ignored host address.
fn parse_port(port: &file::Port) -> Result<(Vec<PortConfig>, Option<String>), String> {
    let number = |text: &str| -> Result<u16, String> {
        match text.parse::<u32>() {
            Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
            _ => Err(format!(
                "invalid port {text:?}: ports are numbers from 1 to 65535"
            )),
        }
    };
    match port {
        file::Port::Number(target) => Ok((
            vec![PortConfig {
                published: None,
                target: number(&target.to_string())?,
                protocol: Protocol::Tcp,
                mode: PublishMode::Ingress,
                proxy_protocol: None,
            }],
            None,
        )),
        file::Port::Long(long) => {
            let published = match &long.published {
                None => None,
                Some(file::StringOrNumber::Number(n)) => Some(number(&n.to_string())?),
                Some(file::StringOrNumber::String(s)) => Some(number(s)?),
            };
            let config = PortConfig {
                published,
                target: number(&long.target.to_string())?,
                protocol: match long.protocol {
                    Some(file::PortProtocol::Udp) => Protocol::Udp,
                    Some(file::PortProtocol::Sctp) => Protocol::Sctp,
                    _ => Protocol::Tcp,
                },
                mode: match long.mode {
                    Some(file::PortMode::Host) => PublishMode::Host,
                    _ => PublishMode::Ingress,
                },
                proxy_protocol: long.proxy_protocol,
            };
            if let Some(problem) = config.proxy_protocol_problem() {
                return Err(problem.to_owned());
            }
            Ok((vec![config], long.host_ip.clone()))
        }
        file::Port::Short(text) => {
            let (rest, protocol) = match text.rsplit_once('/') {
                Some((rest, "tcp")) => (rest, Protocol::Tcp),
                Some((rest, "udp")) => (rest, Protocol::Udp),
                Some((rest, "sctp")) => (rest, Protocol::Sctp),
                Some((_, other)) => {
                    return Err(format!(
                        "unknown protocol {other:?} in {text:?}: use tcp, udp or sctp"
                    ));
                }
                None => (text.as_str(), Protocol::Tcp),
            };
            // An IPv6 host address is bracketed: [::1]:8080:80.
            let (host_ip, rest) = match rest.strip_prefix('[') {
                Some(bracketed) => {
                    let (ip, after) = bracketed
                        .split_once("]:")
                        .ok_or_else(|| format!("invalid port {text:?}: unclosed '['"))?;
                    (Some(ip.to_owned()), after)
                }
                None => (None, rest),
            };
            let parts: Vec<&str> = rest.split(':').collect();
            let (host_ip, published, target) = match parts.as_slice() {
                [target] => (host_ip, None, *target),
                [published, target] => (host_ip, Some(*published), *target),
                [ip, published, target] if host_ip.is_none() => {
                    (Some((*ip).to_owned()), Some(*published), *target)
                }
                _ => return Err(format!("invalid port {text:?}")),
            };
            let range = |text: &str| -> Result<(u16, u16), String> {
                match text.split_once('-') {
                    Some((low, high)) => {
                        let (low, high) = (number(low)?, number(high)?);
                        if low > high {
                            return Err(format!(
                                "invalid port range {text:?}: the first port is above the last"
                            ));
                        }
                        Ok((low, high))
                    }
                    None => number(text).map(|n| (n, n)),
                }
            };
            let targets = range(target)?;
            let published = match published {
                // `:80` (empty published part) lets the cluster pick, like `80`.
                Some("") | None => None,
                Some(p) => Some(range(p)?),
            };
            // A range published onto one target publishes each of its ports there, as
            // Docker's ConvertPortToPortConfig does; otherwise the ranges pair up.
            let onto_one = targets.0 == targets.1;
            if let Some(p) = published
                && p.1 - p.0 != targets.1 - targets.0
                && !onto_one
            {
                return Err(format!(
                    "invalid port {text:?}: the published and target ranges differ in size"
                ));
            }
            let count = published.map_or(targets.1 - targets.0, |p| p.1 - p.0);
            let ports = (0..=count)
                .map(|offset| PortConfig {
                    published: published.map(|p| p.0 + offset),
                    target: if onto_one {
                        targets.0
                    } else {
                        targets.0 + offset
                    },
                    protocol,
                    mode: PublishMode::Ingress,
                    proxy_protocol: None,
                })
                .collect();
            Ok((ports, host_ip.filter(|ip| !ip.is_empty())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ports_read_like_docker() {
        let cases = [
            ("80", vec![(None, 80, Protocol::Tcp)]),
            ("8080:80", vec![(Some(8080), 80, Protocol::Tcp)]),
            ("8080:80/udp", vec![(Some(8080), 80, Protocol::Udp)]),
            ("127.0.0.1:8080:80", vec![(Some(8080), 80, Protocol::Tcp)]),
            ("[::1]:53:53/udp", vec![(Some(53), 53, Protocol::Udp)]),
            (
                "9000-9001:8000-8001",
                vec![
                    (Some(9000), 8000, Protocol::Tcp),
                    (Some(9001), 8001, Protocol::Tcp),
                ],
            ),
            (
                "9000-9002:9000",
                vec![
                    (Some(9000), 9000, Protocol::Tcp),
                    (Some(9001), 9000, Protocol::Tcp),
                    (Some(9002), 9000, Protocol::Tcp),
                ],
            ),
        ];
        for (text, expected) in cases {
            let (ports, _) = parse_port(&file::Port::Short(text.to_owned())).unwrap();
            let got: Vec<_> = ports
                .iter()
                .map(|p| (p.published, p.target, p.protocol))
                .collect();
            assert_eq!(got, expected, "{text}");
        }
    }

    #[test]
    fn bad_ports_say_why() {
        let cases = [
            ("0", "1 to 65535"),
            ("70000:80", "1 to 65535"),
            ("80/icmp", "unknown protocol"),
            ("a:b:c:d", "invalid port"),
            ("9000-9002:8000-8001", "ranges differ"),
            ("90-80", "first port is above"),
            ("http", "1 to 65535"),
        ];
        for (text, reason) in cases {
            let err = parse_port(&file::Port::Short(text.to_owned())).unwrap_err();
            assert!(err.contains(reason), "{text}: {err}");
        }
    }

    #[test]
    fn names_follow_docker() {
        assert!(valid_name("web"));
        assert!(valid_name("web-1.a_b"));
        assert!(!valid_name("-web"));
        assert!(!valid_name(""));
        assert!(!valid_name("we b"));
    }
}
