//! The store's guard against a client that skips the CLI's checks (issue 10, item 4): specs
//! and plans sent straight to a real daemon's control API, with the generated gRPC client,
//! are refused by the store with the reasons, and nothing of them is stored.

mod common;

// The CLI's own client module: the test reaches the daemon as `swarm` does.
#[allow(dead_code)]
#[path = "../src/client.rs"]
mod client;

use swarm_api::grpc::control::control_client::ControlClient;
use swarm_api::grpc::control::{
    ApplyPlanRequest, CreateServiceRequest, ExportStateRequest, UpdateServiceRequest,
};
use swarm_api::plan::{Basis, Kind, ObjectSpec, PLAN_FORMAT, Plan};
use swarm_api::spec::{PortConfig, Protocol, PublishMode, ServiceSpec};
use swarm_api::state::ClusterState;
use tonic::Code;
use tonic::transport::Channel;

/// A plan for a stack `web` with services `site` and `api` (each publishing nothing), made
/// by the planner against `state`.
fn plan(state: &ClusterState) -> Plan {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("web.yaml");
    std::fs::write(
        &path,
        "services:\n  site:\n    image: busybox\n  api:\n    image: busybox\n",
    )
    .unwrap();
    let stack = swarm_controller::stack::load(
        &swarm_controller::source::WorkTree,
        &path,
        "web.yaml",
        &|_| None,
    )
    .stack
    .unwrap();
    let basis = Basis {
        state_version: Some(state.version),
        ..Basis::default()
    };
    let plan = swarm_controller::plan::plan(&[stack], state, &Default::default(), basis).unwrap();
    assert_eq!(plan.format, PLAN_FORMAT);
    plan
}

fn service_spec<'a>(plan: &'a mut Plan, name: &str) -> &'a mut ServiceSpec {
    let action = plan
        .actions
        .iter_mut()
        .find(|a| a.kind == Kind::Service && a.name == name)
        .unwrap();
    match action.spec.as_mut() {
        Some(ObjectSpec::Service(spec)) => spec,
        _ => panic!("a service action"),
    }
}

async fn export(client: &mut ControlClient<Channel>) -> ClusterState {
    let json = client
        .export_state(ExportStateRequest {})
        .await
        .unwrap()
        .into_inner()
        .json;
    serde_json::from_str(&json).unwrap()
}

fn ingress(published: u16) -> PortConfig {
    PortConfig {
        published: Some(published),
        target: 80,
        protocol: Protocol::Tcp,
        mode: PublishMode::Ingress,
        proxy_protocol: None,
    }
}

#[test]
fn malformed_specs_sent_to_the_control_api_are_refused_by_the_store() {
    let cluster = common::cluster(1, &[]);
    let host = client::Host {
        uri: format!("unix://{}", cluster.socket(0).display()),
        tls_dir: Default::default(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut control = client::connect(&host).await.unwrap();
        let empty = export(&mut control).await;

        // A plan whose service has an invalid image, a relative bind mount, an impossible
        // memory limit and a network nobody created: one refusal, with every reason.
        let mut bad = plan(&empty);
        let spec = service_spec(&mut bad, "web_site");
        spec.task.container.image = "BusyBox:latest".into();
        spec.task.container.mounts.push(swarm_api::spec::Mount {
            kind: swarm_api::spec::MountKind::Bind,
            source: Some("data".into()),
            target: "/data".into(),
            read_only: false,
            volume: None,
            no_copy: false,
            propagation: None,
            tmpfs: None,
        });
        spec.task.resources.limits.memory = Some(swarm_api::units::ByteSize(1000));
        spec.task.networks.push(swarm_api::spec::NetworkAttachment {
            target: "elsewhere".into(),
            aliases: vec![],
        });
        let status = control
            .apply_plan(ApplyPlanRequest {
                file_contents: Default::default(),
                plan_json: serde_json::to_string(&bad).unwrap(),
                registry_auth_json: String::new(),
                force: false,
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        for reason in [
            "service \"web_site\": invalid image reference \"BusyBox:latest\": repository name component \"BusyBox\" must be lower-case",
            "the bind source \"data\" is not an absolute path",
            "below the minimum of 6MiB",
            "network elsewhere does not exist in the cluster",
        ] {
            assert!(status.message().contains(reason), "{reason:?}: {status:?}");
        }
        assert_eq!(export(&mut control).await, empty, "nothing was stored");

        // Two services of one plan publishing the same ingress port: the CLI's and the
        // planner's checks are skipped, the store's is not.
        let mut clash = plan(&empty);
        service_spec(&mut clash, "web_site").endpoint.ports = vec![ingress(8080)];
        service_spec(&mut clash, "web_api").endpoint.ports = vec![ingress(8080)];
        let status = control
            .apply_plan(ApplyPlanRequest {
                file_contents: Default::default(),
                plan_json: serde_json::to_string(&clash).unwrap(),
                registry_auth_json: String::new(),
                force: false,
            })
            .await
            .unwrap_err();
        assert!(
            status
                .message()
                .contains("port 8080/tcp is published by more than one service (web_api, web_site)"),
            "{status:?}"
        );
        assert_eq!(export(&mut control).await, empty, "nothing was stored");

        // A well-formed plan goes through; then a service created and updated through
        // the service calls with a malformed spec is refused too, and the stored spec stays.
        let good = plan(&empty);
        control
            .apply_plan(ApplyPlanRequest {
                file_contents: Default::default(),
                plan_json: serde_json::to_string(&good).unwrap(),
                registry_auth_json: String::new(),
                force: false,
            })
            .await
            .unwrap();
        let stored = export(&mut control).await;
        assert_eq!(stored.services.len(), 2);
        let mut spec = stored.services[0].spec.clone();
        spec.name = "other".into();
        spec.task.container.image = "busybox@sha256:short".into();
        let status = control
            .create_service(CreateServiceRequest {
                spec_json: serde_json::to_string(&spec).unwrap(),
                registry_auth_json: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        assert!(
            status.message().contains("is not sha256 followed by 64 lower-case hex digits"),
            "{status:?}"
        );
        let site = &stored.services[1];
        let mut changed = site.spec.clone();
        changed.endpoint.ports = vec![ingress(0)];
        let status = control
            .update_service(UpdateServiceRequest {
                service: site.id.clone().unwrap(),
                spec_json: serde_json::to_string(&changed).unwrap(),
                version: stored.version,
                base_spec_json: serde_json::to_string(&site.spec).unwrap(),
                registry_auth_json: String::new(),
            })
            .await
            .unwrap_err();
        assert!(
            status.message().contains("a published port cannot be 0"),
            "{status:?}"
        );
        assert_eq!(export(&mut control).await, stored, "nothing was stored");
    });
}
