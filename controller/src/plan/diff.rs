//! Field-level differences between two specs of one kind. Specs are compared as their JSON
//! form: mappings are descended key by key (so one changed environment variable is one
//! change, `task.container.env.LOG_LEVEL`), lists and scalars are compared whole.

use serde::Serialize;
use serde_json::Value;
use swarm_api::plan::FieldChange;

/// The changed fields from `before` to `after`, in the order of the spec's fields.
pub fn field_changes<S: Serialize>(before: &S, after: &S) -> Vec<FieldChange> {
    let before = serde_json::to_value(before).expect("specs serialise to JSON");
    let after = serde_json::to_value(after).expect("specs serialise to JSON");
    let mut changes = Vec::new();
    walk(String::new(), Some(&before), Some(&after), &mut changes);
    changes
}

/// A change of where an object comes from, shown beside its field changes.
pub fn origin_change(field: &str, before: &Option<String>, after: &Option<String>) -> FieldChange {
    FieldChange {
        path: field.to_owned(),
        before: before.clone().map(Value::String),
        after: after.clone().map(Value::String),
    }
}

fn walk(
    path: String,
    before: Option<&Value>,
    after: Option<&Value>,
    changes: &mut Vec<FieldChange>,
) {
    if before == after {
        return;
    }
    if let (Some(Value::Object(b)), Some(Value::Object(a))) = (before, after) {
        let join = |key: &str| {
            if path.is_empty() {
                key.to_owned()
            } else {
                format!("{path}.{key}")
            }
        };
        for (key, after_value) in a {
            walk(join(key), b.get(key), Some(after_value), changes);
        }
        for (key, before_value) in b {
            if !a.contains_key(key) {
                walk(join(key), Some(before_value), None, changes);
            }
        }
        return;
    }
    changes.push(FieldChange {
        path,
        before: before.cloned(),
        after: after.cloned(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn descends_mappings_and_compares_lists_whole() {
        let before = json!({"name": "web", "replicas": 1, "task": {"env": {"A": "1", "B": "2"}, "ports": [80]}});
        let after = json!({"name": "web", "replicas": 3, "task": {"env": {"A": "1", "C": "3"}, "ports": [80, 443]}});
        let changes = field_changes(&before, &after);
        let summary: Vec<(String, Option<Value>, Option<Value>)> = changes
            .into_iter()
            .map(|c| (c.path, c.before, c.after))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("replicas".into(), Some(json!(1)), Some(json!(3))),
                ("task.env.C".into(), None, Some(json!("3"))),
                ("task.env.B".into(), Some(json!("2")), None),
                (
                    "task.ports".into(),
                    Some(json!([80])),
                    Some(json!([80, 443]))
                ),
            ]
        );
    }

    #[test]
    fn equal_specs_have_no_changes() {
        let spec = json!({"a": {"b": [1, 2]}});
        assert!(field_changes(&spec, &spec).is_empty());
    }
}
