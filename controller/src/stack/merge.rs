//! Several stack files read as one (`swarm stack deploy -c base.yaml -c prod.yaml`), as
//! `docker stack deploy` merges them: each file overrides the ones before it. Mappings merge
//! key by key; a scalar, or a value of another kind, is replaced; sequences follow the
//! field: a command is replaced, ports, volumes, tmpfs paths, secrets and configs are merged
//! by what identifies them (a later one with the same published port, target, path or
//! source wins), `KEY=VALUE` lists (environment, labels) merge by key, and other lists are
//! appended without repeating an item. Every value keeps the position of the file it came
//! from.

use super::yaml::{Entry, Node, Value};

/// `over` laid over `base`.
pub fn merge(base: Node, over: Node) -> Node {
    merge_at(base, over, &mut Vec::new())
}

fn merge_at(base: Node, mut over: Node, path: &mut Vec<String>) -> Node {
    let over_value = std::mem::replace(&mut over.value, Value::Sequence(Vec::new()));
    let rule = rule(path);
    over.value = match (base.value, over_value) {
        (Value::Mapping(base_entries), Value::Mapping(over_entries)) => {
            Value::Mapping(merge_entries(base_entries, over_entries, path))
        }
        (Value::Sequence(base_items), Value::Sequence(over_items)) => Value::Sequence(match rule {
            Rule::Replace => over_items,
            Rule::ByKey(key) => merge_by(base_items, over_items, key),
            Rule::KeyValues => merge_by(base_items, over_items, key_of_assignment),
            Rule::Append => merge_by(base_items, over_items, |node| Some(fingerprint(node))),
        }),
        // `environment:` as a list in one file and a mapping in the other.
        (Value::Sequence(base_items), Value::Mapping(over_entries))
            if matches!(rule, Rule::KeyValues) =>
        {
            let base_entries = base_items
                .into_iter()
                .filter_map(assignment_entry)
                .collect();
            Value::Mapping(merge_entries(base_entries, over_entries, path))
        }
        (Value::Mapping(base_entries), Value::Sequence(over_items))
            if matches!(rule, Rule::KeyValues) =>
        {
            let over_entries = over_items
                .into_iter()
                .filter_map(assignment_entry)
                .collect();
            Value::Mapping(merge_entries(base_entries, over_entries, path))
        }
        (_, value) => value,
    };
    over
}

fn merge_entries(mut base: Vec<Entry>, over: Vec<Entry>, path: &mut Vec<String>) -> Vec<Entry> {
    for entry in over {
        match base.iter().position(|e| e.key == entry.key) {
            Some(at) => {
                let old = base.remove(at);
                path.push(entry.key.clone());
                let value = merge_at(old.value, entry.value, path);
                path.pop();
                base.insert(
                    at,
                    Entry {
                        key: entry.key,
                        key_span: entry.key_span,
                        value,
                    },
                );
            }
            None => base.push(entry),
        }
    }
    base
}

#[derive(Clone, Copy)]
enum Rule {
    Replace,
    ByKey(fn(&Node) -> Option<String>),
    KeyValues,
    Append,
}

/// How the sequence at `path` merges.
fn rule(path: &[String]) -> Rule {
    let in_service = path.len() >= 3 && path[0] == "services";
    if !in_service {
        return Rule::Append;
    }
    let field: Vec<&str> = path[2..].iter().map(String::as_str).collect();
    match field.as_slice() {
        ["command"]
        | ["entrypoint"]
        | ["healthcheck", "test"]
        | ["dns"]
        | ["dns_search"]
        | ["env_file"] => Rule::Replace,
        ["ports"] => Rule::ByKey(port_key),
        ["volumes"] => Rule::ByKey(volume_key),
        ["tmpfs"] => Rule::ByKey(tmpfs_key),
        ["secrets"] | ["configs"] => Rule::ByKey(source_key),
        ["environment"] | ["labels"] | ["deploy", "labels"] | ["extra_hosts"] => Rule::KeyValues,
        _ => Rule::Append,
    }
}

/// `base` then `over`; an item of `over` whose key an earlier item has takes its place.
fn merge_by(base: Vec<Node>, over: Vec<Node>, key: fn(&Node) -> Option<String>) -> Vec<Node> {
    let mut items: Vec<(Option<String>, Node)> =
        base.into_iter().map(|node| (key(&node), node)).collect();
    for node in over {
        let k = key(&node);
        match k
            .is_some()
            .then(|| items.iter().position(|(other, _)| *other == k))
            .flatten()
        {
            Some(at) => items[at] = (k, node),
            None => items.push((k, node)),
        }
    }
    items.into_iter().map(|(_, node)| node).collect()
}

fn scalar(node: &Node) -> Option<&str> {
    match &node.value {
        Value::Scalar(s) => Some(&s.text),
        _ => None,
    }
}

fn field<'a>(node: &'a Node, key: &str) -> Option<&'a str> {
    node.get(key).and_then(scalar)
}

/// A port by what it publishes: `[ip:]published:target[/protocol]` or the long form's
/// `published` and `protocol`; an unpublished port by its target.
fn port_key(node: &Node) -> Option<String> {
    if let Some(text) = scalar(node) {
        let (ports, protocol) = text.split_once('/').unwrap_or((text, "tcp"));
        let parts: Vec<&str> = ports.split(':').collect();
        let key = match parts.as_slice() {
            [.., published, _target] => format!("published {published}/{protocol}"),
            _ => format!("target {ports}/{protocol}"),
        };
        return Some(key);
    }
    let protocol = field(node, "protocol").unwrap_or("tcp");
    match (field(node, "published"), field(node, "target")) {
        (Some(published), _) => Some(format!("published {published}/{protocol}")),
        (None, Some(target)) => Some(format!("target {target}/{protocol}")),
        (None, None) => None,
    }
}

/// A mount by where it is mounted: `source:target[:mode]`, `target`, or the long form's
/// `target`.
fn volume_key(node: &Node) -> Option<String> {
    match scalar(node) {
        Some(text) => {
            let parts: Vec<&str> = text.split(':').collect();
            Some(parts.get(1).unwrap_or(&parts[0]).to_string())
        }
        None => field(node, "target").map(str::to_owned),
    }
}

/// A tmpfs by its path: `PATH[:OPTIONS]`.
fn tmpfs_key(node: &Node) -> Option<String> {
    scalar(node).map(|text| {
        text.split_once(':')
            .map_or(text, |(path, _)| path)
            .to_owned()
    })
}

/// A secret or config by its name: the short form, or the long form's `source`.
fn source_key(node: &Node) -> Option<String> {
    scalar(node)
        .or_else(|| field(node, "source"))
        .map(str::to_owned)
}

/// `KEY=VALUE` (or `KEY` alone) by its key.
fn key_of_assignment(node: &Node) -> Option<String> {
    let text = scalar(node)?;
    Some(text.split_once('=').map_or(text, |(key, _)| key).to_owned())
}

/// `KEY=VALUE` as a mapping entry (`KEY` alone: a null value, as Compose reads it).
fn assignment_entry(mut node: Node) -> Option<Entry> {
    let Value::Scalar(scalar) = &mut node.value else {
        return None;
    };
    let key = match scalar.text.split_once('=') {
        Some((key, value)) => {
            let key = key.to_owned();
            scalar.text = value.to_owned();
            // A value written after `=` is a string, whatever it looks like.
            scalar.plain = false;
            key
        }
        None => {
            let key = std::mem::take(&mut scalar.text);
            scalar.plain = true;
            key
        }
    };
    Some(Entry {
        key,
        key_span: node.span,
        value: node,
    })
}

/// What an item is, whatever file and place it was written at: equal items are one.
fn fingerprint(node: &Node) -> String {
    match &node.value {
        Value::Scalar(s) => format!("{:?}", s.text),
        Value::Sequence(items) => {
            let inner: Vec<String> = items.iter().map(fingerprint).collect();
            format!("[{}]", inner.join(","))
        }
        Value::Mapping(entries) => {
            let inner: Vec<String> = entries
                .iter()
                .map(|e| format!("{:?}:{}", e.key, fingerprint(&e.value)))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::diagnostic::Diagnostics;
    use crate::stack::yaml;

    /// The merged document, printed back as compact YAML-ish text for comparison.
    fn merged(texts: &[&str]) -> (Node, Diagnostics) {
        let mut diags = Diagnostics::new("0.yaml");
        let mut roots = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            if i > 0 {
                diags.next_file(format!("{i}.yaml"));
            }
            roots.push(yaml::load(text, &|_| None, &mut diags).unwrap());
        }
        let root = roots.into_iter().reduce(merge).unwrap();
        (root, diags)
    }

    fn show(node: &Node) -> String {
        match &node.value {
            Value::Scalar(s) if s.plain && s.text.is_empty() => "~".to_owned(),
            Value::Scalar(s) => s.text.clone(),
            Value::Sequence(items) => {
                format!(
                    "[{}]",
                    items.iter().map(show).collect::<Vec<_>>().join(", ")
                )
            }
            Value::Mapping(entries) => format!(
                "{{{}}}",
                entries
                    .iter()
                    .map(|e| format!("{}: {}", e.key, show(&e.value)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    #[test]
    fn later_files_override_field_by_field() {
        let base = "services:\n  web:\n    image: web:1\n    command: [httpd, -f]\n    environment: [A=1, B=2]\n    ports: [\"8080:80\", \"9090:90\"]\n    deploy:\n      replicas: 2\n      placement: {constraints: [node.role==worker]}\n  db:\n    image: db:1\n";
        let prod = "services:\n  web:\n    image: web:2\n    command: [httpd, -v]\n    environment: {B: \"3\", C: \"4\"}\n    ports: [\"127.0.0.1:8080:8000\", {target: 443, published: 443}]\n    deploy:\n      placement: {constraints: [node.labels.zone==a, node.role==worker]}\n";
        let (root, diags) = merged(&[base, prod]);
        assert!(diags.clone().into_sorted().is_empty());
        let web = root.get("services").unwrap().get("web").unwrap();
        assert_eq!(show(web.get("image").unwrap()), "web:2");
        assert_eq!(show(web.get("command").unwrap()), "[httpd, -v]");
        assert_eq!(show(web.get("environment").unwrap()), "{A: 1, B: 3, C: 4}");
        assert_eq!(
            show(web.get("ports").unwrap()),
            "[127.0.0.1:8080:8000, 9090:90, {target: 443, published: 443}]"
        );
        assert_eq!(
            show(web.get("deploy").unwrap()),
            "{replicas: 2, placement: {constraints: [node.role==worker, node.labels.zone==a]}}"
        );
        let db = root.get("services").unwrap().get("db").unwrap();
        assert_eq!(show(db), "{image: db:1}");
    }

    #[test]
    fn values_keep_the_position_of_their_file() {
        let (root, _) = merged(&[
            "services:\n  web:\n    image: web:1\n    user: nobody\n",
            "\nservices:\n  web:\n    image: web:2\n",
        ]);
        let web = root.get("services").unwrap().get("web").unwrap();
        let image = web.entry("image").unwrap();
        assert_eq!((image.value.span.file, image.value.span.line), (1, 4));
        let user = web.entry("user").unwrap();
        assert_eq!((user.value.span.file, user.value.span.line), (0, 4));
    }

    #[test]
    fn keyed_lists_merge_by_what_identifies_an_item() {
        let cases: &[(&str, &str, &str, &str)] = &[
            (
                "volumes",
                "[\"/a:/data\", \"/b:/logs:ro\"]",
                "[\"/c:/data\"]",
                "[/c:/data, /b:/logs:ro]",
            ),
            (
                "secrets",
                "[db_password, {source: api_key, target: key}]",
                "[{source: api_key, target: other}]",
                "[db_password, {source: api_key, target: other}]",
            ),
            ("labels", "[a=1]", "[a=2, b=1]", "[a=2, b=1]"),
            (
                "networks",
                "[front, back]",
                "[back, admin]",
                "[front, back, admin]",
            ),
            ("entrypoint", "[sh, -c]", "[bash]", "[bash]"),
            (
                "tmpfs",
                "[/run, \"/tmp:size=1m\"]",
                "[\"/tmp:size=64m\", /cache]",
                "[/run, /tmp:size=64m, /cache]",
            ),
        ];
        for (field, base, over, want) in cases {
            let (root, _) = merged(&[
                &format!("services:\n  s:\n    {field}: {base}\n"),
                &format!("services:\n  s:\n    {field}: {over}\n"),
            ]);
            let got = root
                .get("services")
                .unwrap()
                .get("s")
                .unwrap()
                .get(field)
                .unwrap();
            assert_eq!(show(got), *want, "{field}");
        }
    }
}
