//! `inspect --format`: Docker's Go templates over each inspected object's JSON, through
//! gtmpl (a port of Go's text/template), with the functions Docker's CLI adds that scripts
//! use most: `json`, `join`, `lower`, `upper`, `title`, `split`. A JSON object is a Go map
//! here: a field the object lacks prints `<no value>`, as a map's missing key does in Go.

use std::collections::HashMap;

use anyhow::Context as _;
use gtmpl::{Context, FuncError, Template, Value};

/// `template` run over each of `objects`, a line each (Docker's inspect output).
pub fn render_each(template: &str, objects: &[serde_json::Value]) -> anyhow::Result<String> {
    let mut parsed = Template::default();
    parsed.add_funcs(&[
        ("json", json as gtmpl::Func),
        ("join", join),
        ("lower", lower),
        ("upper", upper),
        ("title", title),
        ("split", split),
    ]);
    parsed
        .parse(template)
        .map_err(|error| anyhow::anyhow!("invalid --format {template:?}: {error}"))?;
    let mut out = String::new();
    for object in objects {
        let text = parsed
            .render(&Context::from(to_template(object)))
            .with_context(|| format!("--format {template:?}"))?;
        out.push_str(&text);
        out.push('\n');
    }
    Ok(out)
}

fn to_template(value: &serde_json::Value) -> Value {
    match value {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Value::from(u),
            (None, Some(i)) => Value::from(i),
            _ => Value::from(n.as_f64().unwrap_or_default()),
        },
        serde_json::Value::String(s) => Value::String(s.clone()),
        serde_json::Value::Array(items) => Value::Array(items.iter().map(to_template).collect()),
        serde_json::Value::Object(fields) => Value::Map(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), to_template(v)))
                .collect::<HashMap<_, _>>(),
        ),
    }
}

fn to_json(value: &Value) -> serde_json::Value {
    match value {
        Value::NoValue | Value::Nil | Value::Function(_) => serde_json::Value::Null,
        Value::Bool(b) => (*b).into(),
        Value::String(s) => s.clone().into(),
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => u.into(),
            (None, Some(i), _) => i.into(),
            (None, None, Some(f)) => f.into(),
            _ => serde_json::Value::Null,
        },
        Value::Array(items) => items.iter().map(to_json).collect(),
        Value::Object(fields) | Value::Map(fields) => {
            // Sorted, as Go's encoding/json writes a map.
            let sorted: std::collections::BTreeMap<&String, serde_json::Value> =
                fields.iter().map(|(k, v)| (k, to_json(v))).collect();
            serde_json::to_value(sorted).unwrap_or_default()
        }
    }
}

fn one<'a>(name: &str, args: &'a [Value]) -> Result<&'a Value, FuncError> {
    match args {
        [value] => Ok(value),
        _ => Err(FuncError::ExactlyXArgs(name.to_owned(), 1)),
    }
}

fn text<'a>(name: &str, value: &'a Value) -> Result<&'a str, FuncError> {
    match value {
        Value::String(s) => Ok(s),
        _ => Err(FuncError::Generic(format!("{name} takes a string"))),
    }
}

/// `{{json .Spec}}`: the value as compact JSON.
fn json(args: &[Value]) -> Result<Value, FuncError> {
    let value = one("json", args)?;
    Ok(Value::String(to_json(value).to_string()))
}

/// `{{join .Args ","}}`: a list's items joined by a separator.
fn join(args: &[Value]) -> Result<Value, FuncError> {
    let [Value::Array(items), separator] = args else {
        return Err(FuncError::Generic(
            "join takes a list and a separator".to_owned(),
        ));
    };
    let separator = text("join", separator)?;
    let items: Vec<String> = items.iter().map(ToString::to_string).collect();
    Ok(Value::String(items.join(separator)))
}

fn lower(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(
        text("lower", one("lower", args)?)?.to_lowercase(),
    ))
}

fn upper(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(
        text("upper", one("upper", args)?)?.to_uppercase(),
    ))
}

/// Each word's first letter in upper case.
fn title(args: &[Value]) -> Result<Value, FuncError> {
    let words = text("title", one("title", args)?)?;
    let mut out = String::with_capacity(words.len());
    let mut start = true;
    for c in words.chars() {
        if start {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = c.is_whitespace();
    }
    Ok(Value::String(out))
}

/// `{{split .Image ":"}}`: a string's parts.
fn split(args: &[Value]) -> Result<Value, FuncError> {
    let [value, separator] = args else {
        return Err(FuncError::ExactlyXArgs("split".to_owned(), 2));
    };
    let (value, separator) = (text("split", value)?, text("split", separator)?);
    Ok(Value::Array(
        value
            .split(separator)
            .map(|part| Value::String(part.to_owned()))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> serde_json::Value {
        serde_json::json!({
            "ID": "abc",
            "Spec": {
                "Name": "web",
                "Labels": { "com.example.tier": "front" },
                "Mode": { "Replicated": { "Replicas": 3 } },
                "TaskTemplate": { "ContainerSpec": { "Args": ["-p", "80"] } }
            },
            "Endpoint": { "VirtualIPs": [
                { "NetworkID": "n1", "Addr": "10.0.0.2/24" },
                { "NetworkID": "n2", "Addr": "10.0.1.2/24" }
            ] }
        })
    }

    fn render(template: &str) -> String {
        render_each(template, &[service()]).unwrap()
    }

    #[test]
    fn docker_scripts_templates_print_what_they_ask() {
        assert_eq!(render("{{.Spec.Name}}"), "web\n");
        assert_eq!(render("{{.Spec.Mode.Replicated.Replicas}}"), "3\n");
        assert_eq!(
            render("{{index .Spec.Labels \"com.example.tier\"}}"),
            "front\n"
        );
        assert_eq!(
            render("{{range .Endpoint.VirtualIPs}}{{.Addr}} {{end}}"),
            "10.0.0.2/24 10.0.1.2/24 \n"
        );
        assert_eq!(
            render("{{json .Spec.Mode}}"),
            "{\"Replicated\":{\"Replicas\":3}}\n"
        );
        assert_eq!(
            render("{{join .Spec.TaskTemplate.ContainerSpec.Args \",\"}}"),
            "-p,80\n"
        );
        assert_eq!(
            render("{{upper .Spec.Name}} {{title \"a b\"}}"),
            "WEB A B\n"
        );
        assert_eq!(render("{{len .Endpoint.VirtualIPs}}"), "2\n");
        assert_eq!(
            render("{{if .UpdateStatus}}updating{{else}}idle{{end}}"),
            "idle\n"
        );
        // A field the object lacks, as a Go map's missing key.
        assert_eq!(render("{{.UpdateStatus}}"), "<no value>\n");
        // One line per object.
        let two = render_each("{{.ID}}", &[service(), service()]).unwrap();
        assert_eq!(two, "abc\nabc\n");
    }

    #[test]
    fn a_bad_template_is_named() {
        let error = render_each("{{.Spec.Name", &[service()]).unwrap_err();
        assert!(error.to_string().contains("invalid --format"), "{error}");
        let error = render_each("{{nosuch .ID}}", &[service()]).unwrap_err();
        assert!(error.to_string().contains("nosuch"), "{error:#}");
    }
}
