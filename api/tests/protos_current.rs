//! The gRPC code in `src/proto/` is generated from `proto/*.proto` (tonic-prost-build, which
//! needs `protoc`) and committed, so building swarm needs no protoc. This test regenerates it
//! and fails when the committed code is stale; `UPDATE_PROTOS=1 cargo test -p swarm-api
//! --test protos_current` rewrites it.

use std::path::PathBuf;

#[test]
fn generated_grpc_code_is_current() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile::tempdir().unwrap();
    tonic_prost_build::configure()
        .out_dir(out.path())
        .emit_rerun_if_changed(false)
        .compile_protos(
            &[
                root.join("proto/control.proto"),
                root.join("proto/dispatcher.proto"),
                root.join("proto/join.proto"),
                root.join("proto/raft.proto"),
            ],
            &[root.join("proto")],
        )
        .expect("protoc compiles the protos (install protobuf-compiler)");
    for entry in std::fs::read_dir(out.path()).unwrap() {
        let generated = entry.unwrap().path();
        let name = generated.file_name().unwrap();
        let committed = root.join("src/proto").join(name);
        let text = std::fs::read_to_string(&generated).unwrap();
        if std::env::var_os("UPDATE_PROTOS").is_some() {
            std::fs::write(&committed, &text).unwrap();
            continue;
        }
        let current = std::fs::read_to_string(&committed).unwrap_or_default();
        assert!(
            current == text,
            "{} is stale: run `UPDATE_PROTOS=1 cargo test -p swarm-api --test protos_current` and commit it",
            committed.display()
        );
    }
}
