//! Plans for people: coloured text for terminals and markdown for pull request comments.
//! Changed fields are shown as unified diffs of their YAML form (similar), so a changed list
//! shows only the lines that changed. (`--format json` is the plan's serde form.)

use std::fmt::Write;

use serde_json::Value;
use similar::{ChangeTag, TextDiff};
use swarm_api::plan::{Basis, FieldChange, Kind, ObjectSpec, Op, Plan};
use swarm_api::spec::ServiceMode;

const GREEN: &str = "\x1b[32m";
const RED: &str = "\x1b[31m";
const YELLOW: &str = "\x1b[33m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

/// The plan as text; with `color`, ANSI colours mark additions, removals and changes.
pub fn text(plan: &Plan, color: bool) -> String {
    let paint = |code: &str, text: &str| {
        if color {
            format!("{code}{text}{RESET}")
        } else {
            text.to_owned()
        }
    };
    let mut out = String::new();
    if let Some(basis) = describe_basis(&plan.basis) {
        let _ = writeln!(out, "{basis}\n");
    }
    if !plan.has_changes() {
        out.push_str("No changes: the cluster already matches the stacks.\n");
        return out;
    }
    for action in &plan.actions {
        let (mark, code) = match action.op {
            Op::Create => ("+", GREEN),
            Op::Remove => ("-", RED),
            Op::Update | Op::Scale => ("~", YELLOW),
        };
        let head = format!(
            "{mark} {} {} {}",
            verb(action.op),
            action.kind.as_str(),
            action.name
        );
        let _ = write!(out, "{}", paint(&format!("{code}{BOLD}"), &head));
        if let Some(stack) = &action.origin.stack {
            let _ = write!(out, "  (stack {stack})");
        }
        out.push('\n');
        match action.op {
            Op::Create => {
                if let Some(summary) = action.spec.as_ref().map(|s| summarise(action.kind, s)) {
                    let _ = writeln!(out, "    {summary}");
                }
            }
            Op::Scale => {
                let change = &action.changes[0];
                let _ = writeln!(
                    out,
                    "    replicas: {} → {}",
                    scalar(change.before.as_ref()),
                    scalar(change.after.as_ref())
                );
            }
            Op::Update => {
                for change in &action.changes {
                    let _ = writeln!(out, "    {}:", change.path);
                    for (sign, line) in diff_lines(change) {
                        let code = match sign {
                            '-' => RED,
                            '+' => GREEN,
                            _ => "",
                        };
                        let line = format!("      {sign} {line}");
                        let line = if code.is_empty() {
                            line
                        } else {
                            paint(code, &line)
                        };
                        let _ = writeln!(out, "{line}");
                    }
                }
            }
            Op::Remove => {}
        }
    }
    let _ = writeln!(out, "\nPlan: {}.", summary(plan));
    out
}

/// The plan as a markdown comment for a pull request.
pub fn markdown(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### swarm plan: {}\n", summary(plan));
    if let Some(basis) = describe_basis(&plan.basis) {
        let _ = writeln!(out, "{basis}\n");
    }
    if !plan.has_changes() {
        out.push_str("No changes: the cluster already matches the stacks.\n");
        return out;
    }
    out.push_str("| Action | Kind | Name | Stack | Details |\n|---|---|---|---|---|\n");
    for action in &plan.actions {
        let details = match action.op {
            Op::Create => action
                .spec
                .as_ref()
                .map(|s| summarise(action.kind, s))
                .unwrap_or_default(),
            Op::Scale => {
                let change = &action.changes[0];
                format!(
                    "replicas {} → {}",
                    scalar(change.before.as_ref()),
                    scalar(change.after.as_ref())
                )
            }
            Op::Update => {
                let fields: Vec<String> = action
                    .changes
                    .iter()
                    .map(|c| format!("`{}`", c.path))
                    .collect();
                fields.join(", ")
            }
            Op::Remove => String::new(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | `{}` | {} | {} |",
            verb(action.op),
            action.kind.as_str(),
            action.name,
            action.origin.stack.as_deref().unwrap_or(""),
            details.replace('|', "\\|")
        );
    }
    for action in plan.actions.iter().filter(|a| a.op == Op::Update) {
        let _ = writeln!(
            out,
            "\n<details><summary>{} <code>{}</code></summary>\n",
            action.kind.as_str(),
            action.name
        );
        out.push_str("```diff\n");
        for change in &action.changes {
            let _ = writeln!(out, "@@ {} @@", change.path);
            for (sign, line) in diff_lines(change) {
                let _ = writeln!(out, "{sign} {line}");
            }
        }
        out.push_str("```\n\n</details>\n");
    }
    out
}

fn verb(op: Op) -> &'static str {
    match op {
        Op::Create => "create",
        Op::Update => "update",
        Op::Scale => "scale",
        Op::Remove => "remove",
    }
}

/// "2 to create, 1 to update, 1 to remove", or "no changes".
pub fn summary(plan: &Plan) -> String {
    if !plan.has_changes() {
        return "no changes".to_owned();
    }
    let count = |op: Op| plan.actions.iter().filter(|a| a.op == op).count();
    let parts: Vec<String> = [Op::Create, Op::Update, Op::Scale, Op::Remove]
        .into_iter()
        .filter(|op| count(*op) > 0)
        .map(|op| format!("{} to {}", count(op), verb(op)))
        .collect();
    parts.join(", ")
}

fn describe_basis(basis: &Basis) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(commit) = &basis.base_commit {
        parts.push(format!("current: commit {}", short(commit)));
    }
    if let Some(version) = basis.state_version {
        parts.push(format!("current: state version {version}"));
    }
    if let Some(commit) = &basis.head_commit {
        parts.push(format!("desired: commit {}", short(commit)));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

/// One line about a new object: what a reviewer checks first.
fn summarise(kind: Kind, spec: &ObjectSpec) -> String {
    match spec {
        ObjectSpec::Service(service) => {
            let mode = match service.mode {
                ServiceMode::Replicated { replicas: 1 } => "1 replica".to_owned(),
                ServiceMode::Replicated { replicas } => format!("{replicas} replicas"),
                ServiceMode::Global => "global".to_owned(),
                ServiceMode::ReplicatedJob {
                    max_concurrent,
                    total_completions,
                } => format!(
                    "replicated job of {total_completions} completion{}, {max_concurrent} at once",
                    if total_completions == 1 { "" } else { "s" }
                ),
                ServiceMode::GlobalJob => "global job".to_owned(),
            };
            let mut summary = format!("{}, {mode}", service.task.container.image);
            if !service.endpoint.ports.is_empty() {
                let ports: Vec<String> = service
                    .endpoint
                    .ports
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                let _ = write!(summary, ", ports {}", ports.join(" "));
            }
            summary
        }
        ObjectSpec::Network(network) => format!("{} network", network.driver),
        ObjectSpec::File(file) => format!("{} {}", kind.as_str(), short_digest(&file.digest)),
    }
}

fn short_digest(digest: &str) -> &str {
    &digest[..digest.len().min("sha256:".len() + 12)]
}

fn scalar(value: Option<&Value>) -> String {
    match value {
        None => "(unset)".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// The lines of a change as a diff of the YAML form of its two values.
/// Each line with its sign: `-` removed, `+` added, ` ` unchanged context.
fn diff_lines(change: &FieldChange) -> Vec<(char, String)> {
    let before = change.before.as_ref().map(yaml).unwrap_or_default();
    let after = change.after.as_ref().map(yaml).unwrap_or_default();
    let diff = TextDiff::from_lines(&before, &after);
    diff.iter_all_changes()
        .map(|c| {
            let sign = match c.tag() {
                ChangeTag::Delete => '-',
                ChangeTag::Insert => '+',
                ChangeTag::Equal => ' ',
            };
            (sign, c.value().trim_end_matches('\n').to_owned())
        })
        .collect()
}

/// A JSON value as block YAML, the way stack files are written.
pub fn yaml(value: &Value) -> String {
    let mut out = String::new();
    write_yaml(value, 0, &mut out);
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

fn write_yaml(value: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, item) in map {
                let _ = write!(out, "{pad}{}:", yaml_scalar(&Value::String(key.clone())));
                write_nested(item, indent, out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for item in items {
                let _ = write!(out, "{pad}-");
                match item {
                    Value::Object(map) if !map.is_empty() => {
                        // The first key sits on the dash line, the rest align under it.
                        let mut nested = String::new();
                        write_yaml(item, indent + 2, &mut nested);
                        let _ = write!(out, " {}", &nested[indent + 2..]);
                    }
                    _ => write_nested(item, indent, out),
                }
            }
        }
        scalar => {
            let _ = writeln!(out, "{pad}{}", yaml_scalar(scalar));
        }
    }
}

fn write_nested(value: &Value, indent: usize, out: &mut String) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            write_yaml(value, indent + 2, out);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            write_yaml(value, indent + 2, out);
        }
        scalar => {
            let _ = writeln!(out, " {}", yaml_scalar(scalar));
        }
    }
}

fn yaml_scalar(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let needs_quotes = s.is_empty()
                || !matches!(
                    crate::stack::yaml::resolve_plain(s),
                    crate::stack::yaml::Typed::Str(_)
                )
                || s.starts_with(|c: char| " -?:,[]{}#&*!|>'\"%@`".contains(c))
                || s.ends_with(' ')
                || s.contains(": ")
                || s.contains(" #")
                || s.contains(['\n', '\t']);
            if needs_quotes {
                serde_json::to_string(s).expect("strings serialise")
            } else {
                s.clone()
            }
        }
        Value::Array(_) => "[]".to_owned(),
        Value::Object(_) => "{}".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_reads_like_a_stack_file() {
        let value = json!({
            "image": "nginx:1.27",
            "replicas": 3,
            "env": {"A": "1", "EMPTY": ""},
            "ports": [{"published": 80, "target": 80}],
            "constraints": ["node.role == manager"],
            "none": []
        });
        assert_eq!(
            yaml(&value),
            "image: nginx:1.27\nreplicas: 3\nenv:\n  A: \"1\"\n  EMPTY: \"\"\nports:\n  - published: 80\n    target: 80\nconstraints:\n  - node.role == manager\nnone: []\n"
        );
    }

    /// A port published in host mode is shown as such: it is not on every node.
    #[test]
    fn host_mode_ports_are_shown_as_such() {
        use swarm_api::spec::{PortConfig, Protocol, PublishMode};
        let port = |mode| PortConfig {
            published: Some(8080),
            target: 80,
            protocol: Protocol::Tcp,
            mode,
            proxy_protocol: None,
        };
        assert_eq!(port(PublishMode::Ingress).to_string(), "*:8080->80/tcp");
        assert_eq!(port(PublishMode::Host).to_string(), "*:8080->80/tcp (host)");
    }

    #[test]
    fn changed_lists_show_only_changed_lines() {
        let change = FieldChange {
            path: "endpoint.ports".into(),
            before: Some(
                json!([{"published": 80, "target": 80}, {"published": 443, "target": 443}]),
            ),
            after: Some(
                json!([{"published": 80, "target": 8080}, {"published": 443, "target": 443}]),
            ),
        };
        let lines: Vec<String> = diff_lines(&change)
            .into_iter()
            .map(|(sign, line)| format!("{sign}{line}"))
            .collect();
        assert_eq!(
            lines,
            [
                " - published: 80",
                "-  target: 80",
                "+  target: 8080",
                " - published: 443",
                "   target: 443"
            ]
        );
    }
}
