//! The JSON Schemas in `schemas/` are generated from the types; this test fails when a
//! committed file is stale. Regenerate them with `UPDATE_SCHEMAS=1 cargo test -p swarm-api`.

use std::path::PathBuf;

fn check(file: &str, schema: schemars::Schema) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../schemas")
        .join(file);
    let generated = serde_json::to_string_pretty(&schema).unwrap() + "\n";
    if std::env::var_os("UPDATE_SCHEMAS").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    assert!(
        committed == generated,
        "{} is stale: run `UPDATE_SCHEMAS=1 cargo test -p swarm-api` and commit the result",
        path.display()
    );
}

#[test]
fn stack_schema_is_current() {
    check("stack.schema.json", swarm_api::stackfile::json_schema());
}

#[test]
fn state_schema_is_current() {
    check(
        "state.schema.json",
        schemars::schema_for!(swarm_api::state::ClusterState),
    );
}

#[test]
fn plan_schema_is_current() {
    check(
        "plan.schema.json",
        schemars::schema_for!(swarm_api::plan::Plan),
    );
}
