//! `KEY=value` files: the `.env` beside a stack (variables for interpolation) and the files
//! a service names in `env_file`. The format is Compose's: `#` comments, blank lines,
//! an optional `export `, single quotes taken literally, double quotes with `\n`-style
//! escapes, and ` #` starting a comment after an unquoted value.

/// A line that could not be read: its number (1-based) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DotenvError {
    pub line: u32,
    pub message: String,
}

/// The variables of a file, in file order; a later line wins over an earlier one.
pub fn parse(text: &str) -> Result<Vec<(String, String)>, DotenvError> {
    let mut vars = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line_number = index as u32 + 1;
        let error = |message: String| DotenvError {
            line: line_number,
            message,
        };
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((key, value)) = line.split_once('=') else {
            return Err(error(format!("expected KEY=value, found {line:?}")));
        };
        let key = key.trim();
        let valid_key = !key.is_empty()
            && !key.starts_with(|c: char| c.is_ascii_digit())
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !valid_key {
            return Err(error(format!(
                "invalid variable name {key:?}: use letters, digits and _"
            )));
        }
        let value = parse_value(value.trim_start()).map_err(error)?;
        vars.push((key.to_owned(), value));
    }
    Ok(vars)
}

fn parse_value(value: &str) -> Result<String, String> {
    if let Some(body) = value.strip_prefix('\'') {
        let end = body
            .find('\'')
            .ok_or_else(|| "unclosed single quote".to_owned())?;
        return Ok(body[..end].to_owned());
    }
    if let Some(body) = value.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = body.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => return Ok(out),
                '\\' => match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('r') => out.push('\r'),
                    Some(other) => out.push(other),
                    None => break,
                },
                c => out.push(c),
            }
        }
        return Err("unclosed double quote".to_owned());
    }
    let value = match value.find(" #") {
        Some(comment) => &value[..comment],
        None => value,
    };
    Ok(value.trim_end().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_compose_env_files() {
        let text = "# comment\n\nTAG=1.27\nexport ZONE = eu-west \nQUOTED='a # b'\nESCAPED=\"line\\nnext\"\nTRAILING=value # note\nEMPTY=\n";
        let vars = parse(text).unwrap();
        let expected = [
            ("TAG", "1.27"),
            ("ZONE", "eu-west"),
            ("QUOTED", "a # b"),
            ("ESCAPED", "line\nnext"),
            ("TRAILING", "value"),
            ("EMPTY", ""),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(vars, expected);
    }

    #[test]
    fn bad_lines_name_their_number() {
        let cases = [
            ("A=1\njust words\n", 2, "expected KEY=value"),
            ("1A=x", 1, "invalid variable name"),
            ("A='open", 1, "unclosed single quote"),
            ("\n\nA=\"open", 3, "unclosed double quote"),
        ];
        for (text, line, reason) in cases {
            let err = parse(text).unwrap_err();
            assert_eq!(err.line, line, "{text}");
            assert!(err.message.contains(reason), "{text}: {}", err.message);
        }
    }
}
