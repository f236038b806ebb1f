//! `KEY=value` files: the `.env` beside a stack (variables for interpolation) and the files
//! a service names in `env_file`. The format is Compose's: `#` comments, blank lines,
//! an optional `export `, single quotes taken literally, double quotes with `\n`-style
//! escapes, quoted values that go on over several lines, ` #` starting a comment after an
//! unquoted value, and a `KEY` alone, whose value is the environment's.

/// A line that could not be read: its number (1-based) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DotenvError {
    pub line: u32,
    pub message: String,
}

/// The variables of a file, in file order; a later line wins over an earlier one. A `KEY`
/// written alone has no value here: the caller takes it from the environment.
pub fn parse(text: &str) -> Result<Vec<(String, Option<String>)>, DotenvError> {
    let mut vars = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((index, raw)) = lines.next() {
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
        let (key, value) = match line.split_once('=') {
            Some((key, value)) => (key.trim(), Some(value.trim_start())),
            None => (line, None),
        };
        let valid_key = !key.is_empty()
            && !key.starts_with(|c: char| c.is_ascii_digit())
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !valid_key {
            return Err(error(match value {
                Some(_) => format!("invalid variable name {key:?}: use letters, digits and _"),
                None => format!("expected KEY=value or a KEY alone, found {line:?}"),
            }));
        }
        let Some(value) = value else {
            vars.push((key.to_owned(), None));
            continue;
        };
        // A quoted value may go on over the next lines, until its closing quote.
        let mut value = value.to_owned();
        let parsed = loop {
            match parse_value(&value) {
                Err(Unclosed(quote)) => match lines.next() {
                    Some((_, next)) => {
                        value.push('\n');
                        value.push_str(next);
                    }
                    None => break Err(error(format!("unclosed {quote} quote"))),
                },
                Ok(parsed) => break Ok(parsed),
            }
        }?;
        vars.push((key.to_owned(), Some(parsed)));
    }
    Ok(vars)
}

/// A quoted value without its closing quote (`single` or `double`).
struct Unclosed(&'static str);

fn parse_value(value: &str) -> Result<String, Unclosed> {
    if let Some(body) = value.strip_prefix('\'') {
        let end = body.find('\'').ok_or(Unclosed("single"))?;
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
        return Err(Unclosed("double"));
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
        let expected: Vec<(String, Option<String>)> = expected
            .iter()
            .map(|(k, v)| (k.to_string(), Some(v.to_string())))
            .collect();
        assert_eq!(vars, expected);
    }

    #[test]
    fn bad_lines_name_their_number() {
        let cases = [
            ("A=1\njust words\n", 2, "expected KEY=value or a KEY alone"),
            ("1A=x", 1, "invalid variable name"),
            ("A='open", 1, "unclosed single quote"),
            ("\n\nA=\"open\nB=1\n", 3, "unclosed double quote"),
        ];
        for (text, line, reason) in cases {
            let err = parse(text).unwrap_err();
            assert_eq!(err.line, line, "{text}");
            assert!(err.message.contains(reason), "{text}: {}", err.message);
        }
    }

    #[test]
    fn a_key_alone_and_quoted_values_over_several_lines_read_as_composes() {
        let text = "HOME\nexport PATH\nCERT=\"-----BEGIN\nabc\\tdef\n-----END\"\nNOTE='one\n# not a comment\ntwo'\nNEXT=1\n";
        let vars = parse(text).unwrap();
        let expected = [
            ("HOME", None),
            ("PATH", None),
            ("CERT", Some("-----BEGIN\nabc\tdef\n-----END")),
            ("NOTE", Some("one\n# not a comment\ntwo")),
            ("NEXT", Some("1")),
        ];
        let expected: Vec<(String, Option<String>)> = expected
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(str::to_owned)))
            .collect();
        assert_eq!(vars, expected);
    }
}
