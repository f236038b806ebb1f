//! Swarm's service templates: `{{.Node.Hostname}}`, `{{.Task.Slot}}`, … in a service's
//! hostname, environment values and mount sources and targets, filled on the node that
//! runs the task (as swarmkit's `template.ExpandContainerSpec`). The part of Go's
//! `text/template` that these fields use: field actions, with or without spaces inside
//! the braces, and a quoted string (`{{"{{"}}` writes the braces themselves). Anything
//! else is refused when the stack file is read, with what is known: `.Service.Labels`
//! among them, for a task does not carry its service's labels to the node.

/// What a task's templates are filled with.
#[derive(Debug, Clone, Copy)]
pub struct TaskPlaceholders<'a> {
    pub service_id: &'a str,
    pub service_name: &'a str,
    pub node_id: &'a str,
    pub node_hostname: &'a str,
    pub task_id: &'a str,
    pub task_name: &'a str,
    /// The task's slot; for a global service's task, its node id (as swarmkit fills it).
    pub task_slot: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("`{{{{` is not closed by `}}}}` in {text:?}")]
    Unclosed { text: String },
    #[error("unknown template `{{{{{action}}}}}`: swarm fills {KNOWN}")]
    Unknown { action: String },
}

const KNOWN: &str = ".Service.ID, .Service.Name, .Node.ID, .Node.Hostname, .Node.Platform.OS, \
                     .Node.Platform.Architecture, .Task.ID, .Task.Name, .Task.Slot and \"TEXT\" \
                     (written as it is)";

/// One value a template can ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    Literal(String),
    ServiceId,
    ServiceName,
    NodeId,
    NodeHostname,
    NodeOs,
    NodeArchitecture,
    TaskId,
    TaskName,
    TaskSlot,
}

/// Checks that `text`'s templates are all known, without values: for reading a stack file.
pub fn check(text: &str) -> Result<(), TemplateError> {
    parse(text, |_| {}, |_| {})
}

/// `text` with its templates filled from `values`.
pub fn expand(text: &str, values: &TaskPlaceholders) -> Result<String, TemplateError> {
    if !text.contains("{{") {
        return Ok(text.to_owned());
    }
    let out = std::cell::RefCell::new(String::with_capacity(text.len()));
    parse(
        text,
        |literal| out.borrow_mut().push_str(literal),
        |field| {
            let mut out = out.borrow_mut();
            match field {
                Field::Literal(text) => out.push_str(&text),
                Field::ServiceId => out.push_str(values.service_id),
                Field::ServiceName => out.push_str(values.service_name),
                Field::NodeId => out.push_str(values.node_id),
                Field::NodeHostname => out.push_str(values.node_hostname),
                Field::NodeOs => out.push_str(std::env::consts::OS),
                Field::NodeArchitecture => out.push_str(go_architecture()),
                Field::TaskId => out.push_str(values.task_id),
                Field::TaskName => out.push_str(values.task_name),
                Field::TaskSlot => out.push_str(values.task_slot),
            }
        },
    )?;
    Ok(out.into_inner())
}

/// The machine's architecture as Go (and so Docker's templates) names it.
fn go_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// `literal` without its leading (`start`) and trailing (`end`) white space.
fn trimmed(literal: &str, start: bool, end: bool) -> &str {
    let literal = if start { literal.trim_start() } else { literal };
    if end { literal.trim_end() } else { literal }
}

/// Walks `text`, handing its literal parts to `literal` and its actions to `field`.
fn parse(
    text: &str,
    mut literal: impl FnMut(&str),
    mut field: impl FnMut(Field),
) -> Result<(), TemplateError> {
    let mut rest = text;
    // Go's trim markers: `{{- ` drops the white space before the action, ` -}}` after it.
    let mut trim_next = false;
    while let Some(open) = rest.find("{{") {
        let inner_start = &rest[open + 2..];
        let Some(close) = inner_start.find("}}") else {
            return Err(TemplateError::Unclosed {
                text: text.to_owned(),
            });
        };
        let mut action = &inner_start[..close];
        let trim_before = action.len() > 1
            && action.starts_with('-')
            && action[1..].starts_with(char::is_whitespace);
        if trim_before {
            action = &action[1..];
        }
        let trim_after = action.len() > 1
            && action.ends_with('-')
            && action[..action.len() - 1].ends_with(char::is_whitespace);
        if trim_after {
            action = &action[..action.len() - 1];
        }
        literal(trimmed(&rest[..open], trim_next, trim_before));
        let action = action.trim();
        field(parse_action(action).ok_or_else(|| TemplateError::Unknown {
            action: action.to_owned(),
        })?);
        trim_next = trim_after;
        rest = &inner_start[close + 2..];
    }
    literal(trimmed(rest, trim_next, false));
    Ok(())
}

fn parse_action(action: &str) -> Option<Field> {
    if let Some(quoted) = action.strip_prefix('"').and_then(|a| a.strip_suffix('"')) {
        return (!quoted.contains(['"', '\\'])).then(|| Field::Literal(quoted.to_owned()));
    }
    Some(match action {
        ".Service.ID" => Field::ServiceId,
        ".Service.Name" => Field::ServiceName,
        ".Node.ID" => Field::NodeId,
        ".Node.Hostname" => Field::NodeHostname,
        ".Node.Platform.OS" => Field::NodeOs,
        ".Node.Platform.Architecture" => Field::NodeArchitecture,
        ".Task.ID" => Field::TaskId,
        ".Task.Name" => Field::TaskName,
        ".Task.Slot" => Field::TaskSlot,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> TaskPlaceholders<'static> {
        TaskPlaceholders {
            service_id: "svc1",
            service_name: "web_api",
            node_id: "node7",
            node_hostname: "host-a",
            task_id: "task9",
            task_name: "web_api.2",
            task_slot: "2",
        }
    }

    #[test]
    fn fields_are_filled_with_or_without_spaces() {
        let values = values();
        let cases = [
            ("{{.Service.Name}}-{{.Task.Slot}}", "web_api-2"),
            ("{{ .Node.Hostname }}/{{.Node.ID}}", "host-a/node7"),
            (
                "{{.Task.Name}} {{.Task.ID}} {{.Service.ID}}",
                "web_api.2 task9 svc1",
            ),
            ("{{.Node.Platform.OS}}", std::env::consts::OS),
            ("no template", "no template"),
            ("data-{{.Task.Slot}}", "data-2"),
            ("{{\"{{\"}}.Time}}", "{{.Time}}"),
            ("a  {{- .Task.Slot -}}  b", "a2b"),
        ];
        for (text, expanded) in cases {
            assert_eq!(expand(text, &values).unwrap(), expanded, "{text}");
            check(text).unwrap();
        }
    }

    #[test]
    fn unknown_or_unclosed_templates_are_refused_naming_what_is_known() {
        let error = check("{{.Node.Labels.zone}}").unwrap_err();
        assert_eq!(
            error,
            TemplateError::Unknown {
                action: ".Node.Labels.zone".into()
            }
        );
        assert!(error.to_string().contains(".Task.Slot"), "{error}");
        assert!(
            error
                .to_string()
                .starts_with("unknown template `{{.Node.Labels.zone}}`")
        );
        assert!(matches!(
            check("a-{{.Task.Slot"),
            Err(TemplateError::Unclosed { .. })
        ));
        assert!(check("{{ printf \"%d\" .Task.Slot }}").is_err());
        assert!(check("{{index .Service.Labels \"x\"}}").is_err());
        assert!(check("{{.Service.Labels.tier}}").is_err());
        assert!(check("{{-.Task.Slot}}").is_err());
    }
}
