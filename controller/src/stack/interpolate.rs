//! Variable interpolation as Compose does it: `$VAR`, `${VAR}`, `${VAR:-default}`,
//! `${VAR-default}`, `${VAR:?error}`, `${VAR?error}`, `${VAR:+other}`, `${VAR+other}` and `$$`
//! for a literal dollar. Defaults may themselves hold `${…}` variables; any other `$` in a
//! default is literal, as in Docker's template (`${HASH:-$2y$05$abc}` is a bcrypt hash, not
//! variables `$2y`, `$05`, `$abc`). `{{…}}` Go templates are left alone: the node fills them
//! when it starts a task.

/// The text after interpolation, and the variables that were not set and had no default
/// (Compose replaces them with an empty string and warns).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Interpolated {
    pub text: String,
    pub unset: Vec<String>,
    /// Whether anything was substituted; a substituted plain scalar is typed again.
    pub substituted: bool,
}

/// Why a template cannot be interpolated, and where: the byte offset in the text of the `$`
/// that starts the variable at fault.
#[derive(Debug, PartialEq, Eq)]
pub struct InterpolationError {
    pub message: String,
    pub offset: usize,
}

/// Interpolates `text` with `lookup`; the error says what is wrong with the template or
/// carries the message of a `${VAR:?message}` whose variable is unset.
pub fn interpolate(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Interpolated, InterpolationError> {
    let mut out = Interpolated::default();
    if !text.contains('$') {
        out.text = text.to_owned();
        return Ok(out);
    }
    let mut rest = text;
    // Each top-level `$` on its own, so that an error knows which one it is.
    while let Some(dollar) = rest.find('$') {
        out.text.push_str(&rest[..dollar]);
        let offset = text.len() - rest.len() + dollar;
        let end = top_level_end(&rest[dollar..]);
        expand(
            &rest[dollar..dollar + end],
            text,
            lookup,
            &mut out,
            0,
            false,
        )
        .map_err(|message| InterpolationError { message, offset })?;
        rest = &rest[dollar + end..];
    }
    out.text.push_str(rest);
    Ok(out)
}

/// The length of the variable reference (or `$$`) at the start of `text`, which starts with
/// `$`: what `expand` takes in one step. An unclosed `${` takes the rest.
fn top_level_end(text: &str) -> usize {
    let after = &text[1..];
    if after.starts_with('$') {
        2
    } else if let Some(body) = after.strip_prefix('{') {
        matching_brace(body).map_or(text.len(), |close| close + 3)
    } else {
        1 + variable_name_len(after)
    }
}

/// Nested defaults deeper than this are refused, so a hostile template cannot recurse forever.
const MAX_NESTING: usize = 16;

/// Expands `text`, a part of `whole` (which messages quote); in an operator's argument
/// (`in_argument`), only `${…}` is a variable.
fn expand(
    text: &str,
    whole: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    out: &mut Interpolated,
    depth: usize,
    in_argument: bool,
) -> Result<(), String> {
    if depth > MAX_NESTING {
        return Err("variables nested too deeply".to_owned());
    }
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.text.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if in_argument && !after.starts_with('{') {
            out.text.push('$');
            rest = after;
        } else if let Some(tail) = after.strip_prefix('$') {
            out.text.push('$');
            rest = tail;
        } else if let Some(body_and_tail) = after.strip_prefix('{') {
            let close = matching_brace(body_and_tail).ok_or_else(|| {
                format!("unclosed \"${{\" in {whole:?}: add the closing \"}}\", or write \"$$\" for a literal \"$\"")
            })?;
            substitute_braced(&body_and_tail[..close], whole, lookup, out, depth)?;
            rest = &body_and_tail[close + 1..];
        } else {
            let name_len = variable_name_len(after);
            if name_len == 0 {
                return Err(format!(
                    "invalid interpolation in {whole:?}: \"$\" must start a variable such as $NAME or ${{NAME}}; write \"$$\" for a literal \"$\""
                ));
            }
            let name = &after[..name_len];
            substitute_value(name, lookup(name), out);
            rest = &after[name_len..];
        }
    }
    out.text.push_str(rest);
    Ok(())
}

fn substitute_value(name: &str, value: Option<String>, out: &mut Interpolated) {
    out.substituted = true;
    match value {
        Some(value) => out.text.push_str(&value),
        None => {
            if !out.unset.iter().any(|n| n == name) {
                out.unset.push(name.to_owned());
            }
        }
    }
}

/// `body` is what stands between `${` and its `}`.
fn substitute_braced(
    body: &str,
    whole: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    out: &mut Interpolated,
    depth: usize,
) -> Result<(), String> {
    let name_len = variable_name_len(body);
    let (name, operator) = body.split_at(name_len);
    if name.is_empty() {
        return Err(format!(
            "invalid interpolation \"${{{body}}}\": expected a variable name (letters, digits, _)"
        ));
    }
    let value = lookup(name);
    let (colon, operator) = match operator.strip_prefix(':') {
        Some(op) => (true, op),
        None => (false, operator),
    };
    // With a colon, an empty value counts as unset (`${VAR:-x}`); without, only unset does.
    let is_set = match &value {
        Some(v) => !(colon && v.is_empty()),
        None => false,
    };
    let mut chars = operator.chars();
    let Some(op) = chars.next() else {
        if colon {
            return Err(format!(
                "invalid interpolation \"${{{body}}}\": expected -, ?, or + after \":\""
            ));
        }
        substitute_value(name, value, out);
        return Ok(());
    };
    let argument = chars.as_str();
    out.substituted = true;
    match op {
        '-' if is_set => out.text.push_str(&value.unwrap_or_default()),
        '-' => expand(argument, whole, lookup, out, depth + 1, true)?,
        '+' if is_set => expand(argument, whole, lookup, out, depth + 1, true)?,
        '+' => {}
        '?' if is_set => out.text.push_str(&value.unwrap_or_default()),
        '?' => {
            let mut message = Interpolated::default();
            expand(argument, whole, lookup, &mut message, depth + 1, true)?;
            let message = if message.text.is_empty() {
                format!("{name} is required")
            } else {
                message.text
            };
            return Err(format!("required variable {name} is not set: {message}"));
        }
        _ => {
            return Err(format!(
                "invalid interpolation \"${{{body}}}\": unknown operator {op:?} (use :-, -, :?, ?, :+ or +)"
            ));
        }
    }
    Ok(())
}

fn variable_name_len(text: &str) -> usize {
    let mut len = 0;
    for (i, c) in text.char_indices() {
        let ok = c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit());
        if !ok {
            break;
        }
        len = i + c.len_utf8();
    }
    len
}

/// The index of the `}` that closes a `${`, counting nested `${…}` in defaults.
fn matching_brace(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'$') => i += 1,
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TAG" => Some("1.27".into()),
            "EMPTY" => Some(String::new()),
            "REPLICAS" => Some("3".into()),
            _ => None,
        }
    }

    fn run(text: &str) -> Result<String, String> {
        interpolate(text, &env)
            .map(|i| i.text)
            .map_err(|e| e.message)
    }

    #[test]
    fn substitutes_like_compose() {
        let cases = [
            ("nginx:${TAG}", "nginx:1.27"),
            ("nginx:$TAG", "nginx:1.27"),
            ("$TAG-suffix", "1.27-suffix"),
            ("${MISSING:-1.25}", "1.25"),
            ("${EMPTY:-fallback}", "fallback"),
            ("${EMPTY-fallback}", ""),
            ("${MISSING-fallback}", "fallback"),
            ("${TAG:+set}", "set"),
            ("${EMPTY:+set}", ""),
            ("${EMPTY+set}", "set"),
            ("${MISSING:-${TAG}}", "1.27"),
            ("${MISSING:-${ALSO_MISSING:-deep}}", "deep"),
            ("$$HOME and $${TAG}", "$HOME and ${TAG}"),
            ("{{.Node.Hostname}}-${TAG}", "{{.Node.Hostname}}-1.27"),
            ("no dollars", "no dollars"),
            ("${TAG?}", "1.27"),
            // Docker's template: a `$` in a default is literal unless it opens `${`.
            ("${MISSING:-$2y$05$abc}", "$2y$05$abc"),
            ("${MISSING:-$TAG}", "$TAG"),
            ("${TAG:+a$b}", "a$b"),
        ];
        for (text, expected) in cases {
            assert_eq!(run(text).as_deref(), Ok(expected), "{text}");
        }
    }

    #[test]
    fn reports_unset_variables() {
        let result = interpolate("${A}-$B-${A}", &env).unwrap();
        assert_eq!(result.text, "--");
        assert_eq!(result.unset, vec!["A".to_owned(), "B".to_owned()]);
        assert!(result.substituted);
        assert!(!interpolate("plain", &env).unwrap().substituted);
    }

    #[test]
    fn refuses_bad_templates_with_a_reason() {
        let cases = [
            (
                "${MISSING:?set MISSING to the zone}",
                "set MISSING to the zone",
            ),
            ("${MISSING?}", "MISSING is required"),
            ("${EMPTY:?}", "EMPTY is required"),
            ("${TAG", "unclosed"),
            ("${}", "expected a variable name"),
            ("${TAG:}", "expected -, ?, or +"),
            ("${TAG%x}", "unknown operator"),
            ("price: 5$", "write \"$$\""),
            ("$1", "write \"$$\""),
        ];
        for (text, reason) in cases {
            let err = run(text).unwrap_err();
            assert!(err.contains(reason), "{text}: {err}");
        }
    }

    #[test]
    fn an_error_names_the_offset_of_its_dollar() {
        let error = interpolate("abc ${TAG} $1", &env).unwrap_err();
        assert_eq!(error.offset, 11);
        let error = interpolate("x ${MISSING:?needed}", &env).unwrap_err();
        assert_eq!(error.offset, 2);
        assert_eq!(interpolate("a$$b ${TAG}", &env).unwrap().text, "a$b 1.27");
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let text = "${A:-".repeat(100) + &"}".repeat(100);
        assert!(run(&text).unwrap_err().contains("nested too deeply"));
    }
}
