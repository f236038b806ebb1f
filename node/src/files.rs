//! Configs and secrets on the control API: created and removed as one-action plans (the
//! `ApplyPlan` command services and GitOps use, the content beside the action), and read
//! without their content: no answer here carries a byte of it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use swarm_api::files::{FileContent, MAX_CONFIG_BYTES, MAX_SECRET_BYTES};
use swarm_api::grpc::control::FileKind;
use swarm_api::plan::{Action, Kind, ObjectSpec, Op};
use swarm_api::spec::FileObjectSpec;
use swarm_api::state::{Object, Origin};
use swarm_api::store::{Command, StoreData};
use tonic::Status;

use super::store_status;
use swarm_controller::store::Store;
use swarm_controller::store::client::{StoreClient, StoreError};

/// What `config|secret ls|inspect` show of one: never its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileObjectView {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// `sha256:<hex>` of the content (what a plan shows too).
    pub digest: String,
    /// The stack that declares it, if one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
    /// The services that use it, by name.
    #[serde(default)]
    pub services: Vec<String>,
}

/// The kind a request names.
pub fn kind(kind: i32) -> Result<Kind, Status> {
    match FileKind::try_from(kind) {
        Ok(FileKind::Config) => Ok(Kind::Config),
        Ok(FileKind::Secret) => Ok(Kind::Secret),
        _ => Err(Status::invalid_argument(
            "the request names no kind: config or secret",
        )),
    }
}

fn objects(data: &StoreData, kind: Kind) -> &[Object<FileObjectSpec>] {
    match kind {
        Kind::Secret => &data.objects.secrets,
        _ => &data.objects.configs,
    }
}

fn view_of(data: &StoreData, kind: Kind, object: &Object<FileObjectSpec>) -> FileObjectView {
    let name = &object.spec.name;
    let services = data
        .objects
        .services
        .iter()
        .filter(|service| {
            let container = &service.spec.task.container;
            let references = match kind {
                Kind::Secret => &container.secrets,
                _ => &container.configs,
            };
            references.iter().any(|r| &r.source == name)
        })
        .map(|service| service.spec.name.clone())
        .collect();
    FileObjectView {
        id: object.id.clone().unwrap_or_default(),
        name: name.clone(),
        labels: object.spec.labels.clone(),
        digest: object.spec.digest.clone(),
        stack: object.origin.stack.clone(),
        services,
    }
}

/// The object `reference` names (a name, an id or a unique id prefix), or why none.
fn find<'a>(
    list: &'a [Object<FileObjectSpec>],
    kind: Kind,
    reference: &str,
) -> Result<&'a Object<FileObjectSpec>, Status> {
    if let Some(object) = list
        .iter()
        .find(|o| o.spec.name == reference || o.id.as_deref() == Some(reference))
    {
        return Ok(object);
    }
    let matches: Vec<_> = list
        .iter()
        .filter(|o| o.id.as_deref().is_some_and(|id| id.starts_with(reference)))
        .collect();
    let what = kind.as_str();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(Status::not_found(format!(
            "{what} {reference} not found: `swarm {what} ls` lists them"
        ))),
        _ => Err(Status::invalid_argument(format!(
            "{what} {reference} is ambiguous ({} {what}s have ids starting with it): give more of the id",
            matches.len()
        ))),
    }
}

pub async fn list(store: &StoreClient, kind: Kind) -> Result<Vec<FileObjectView>, Status> {
    store
        .read(move |store: &Store| {
            let data = store.data();
            objects(data, kind)
                .iter()
                .map(|o| view_of(data, kind, o))
                .collect()
        })
        .await
        .map_err(store_status)
}

pub async fn inspect(
    store: &StoreClient,
    kind: Kind,
    reference: String,
) -> Result<FileObjectView, Status> {
    store
        .read(move |store: &Store| {
            let data = store.data();
            find(objects(data, kind), kind, &reference).map(|o| view_of(data, kind, o))
        })
        .await
        .map_err(store_status)?
}

/// Why `name` and `content` cannot make a `kind`, checked before anything is proposed (the
/// store checks the same in its apply).
fn check(kind: Kind, name: &str, content: &[u8]) -> Result<(), Status> {
    let what = kind.as_str();
    if name.is_empty() {
        return Err(Status::invalid_argument(format!("a {what} needs a name")));
    }
    if name.contains('/') {
        return Err(Status::invalid_argument(format!(
            "{what} {name}: a name cannot contain '/'"
        )));
    }
    let limit = match kind {
        Kind::Secret => MAX_SECRET_BYTES,
        _ => MAX_CONFIG_BYTES,
    };
    if content.len() > limit {
        return Err(Status::invalid_argument(format!(
            "{what} {name} is {} bytes: the limit is {} KiB",
            content.len(),
            limit / 1024
        )));
    }
    Ok(())
}

/// Creates the `kind` `name` with `content`; its id.
pub async fn create(
    store: &StoreClient,
    kind: Kind,
    name: String,
    labels: BTreeMap<String, String>,
    content: Vec<u8>,
) -> Result<String, Status> {
    check(kind, &name, &content)?;
    let content = FileContent::new(content);
    let spec = FileObjectSpec {
        name: name.clone(),
        labels,
        digest: content.digest(),
    };
    let what = kind.as_str();
    let lookup = name.clone();
    let (version, taken) = store
        .read(move |store: &Store| {
            let data = store.data();
            let taken = objects(data, kind).iter().any(|o| o.spec.name == lookup);
            (data.objects.version, taken)
        })
        .await
        .map_err(store_status)?;
    let exists = || Status::already_exists(format!("{what} {name} already exists"));
    if taken {
        return Err(exists());
    }
    let action = Action {
        op: Op::Create,
        kind,
        name: name.clone(),
        origin: Origin::default(),
        changes: Vec::new(),
        spec: Some(ObjectSpec::File(spec.clone())),
    };
    let contents = BTreeMap::from([(spec.digest, content)]);
    match propose(store, version, action, contents).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => return Err(exists()),
        Err(error) => return Err(store_status(error)),
    }
    Ok(inspect(store, kind, name).await?.id)
}

/// Removes the `kind` `reference`; the store refuses while a service uses it. A stack's
/// object goes with its stack.
pub async fn remove(store: &StoreClient, kind: Kind, reference: String) -> Result<(), Status> {
    let (version, object) = store
        .read(move |store: &Store| {
            let data = store.data();
            find(objects(data, kind), kind, &reference).map(|o| (data.objects.version, o.clone()))
        })
        .await
        .map_err(store_status)??;
    let name = object.spec.name;
    if let Some(stack) = object.origin.stack {
        return Err(Status::failed_precondition(format!(
            "{} {name} belongs to stack {stack}: it goes with `swarm stack rm {stack}`",
            kind.as_str()
        )));
    }
    let action = Action {
        op: Op::Remove,
        kind,
        name,
        origin: Origin::default(),
        changes: Vec::new(),
        spec: None,
    };
    propose(store, version, action, BTreeMap::new())
        .await
        .map_err(store_status)
}

async fn propose(
    store: &StoreClient,
    version: u64,
    action: Action,
    file_contents: BTreeMap<String, FileContent>,
) -> Result<(), StoreError> {
    store
        .propose(&Command::ApplyPlan {
            expected_version: Some(version),
            actions: vec![action],
            registry_auth: Default::default(),
            file_contents,
            override_git: false,
        })
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_sizes_are_checked_before_anything_is_proposed() {
        assert!(check(Kind::Secret, "db", b"pw").is_ok());
        let error = check(Kind::Secret, "a/b", b"pw").unwrap_err();
        assert_eq!(error.message(), "secret a/b: a name cannot contain '/'");
        let error = check(Kind::Secret, "big", &vec![0; MAX_SECRET_BYTES + 1]).unwrap_err();
        assert_eq!(
            error.message(),
            "secret big is 512001 bytes: the limit is 500 KiB"
        );
        assert!(check(Kind::Config, "big", &vec![0; MAX_SECRET_BYTES + 1]).is_ok());
        assert!(kind(0).is_err());
        assert_eq!(kind(FileKind::Secret as i32).unwrap(), Kind::Secret);
    }
}
