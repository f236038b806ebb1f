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
    // A byte-order mark, as Windows editors write one, is no part of the first key.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.lines().zip(1u32..);
    while let Some((raw, first_line)) = lines.next() {
        // Only the start is trimmed: a quoted value keeps the spaces before its line's end.
        let line = raw.trim_start();
        if line.trim_end().is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let (key, value) = match line.split_once('=') {
            Some((key, value)) => (key.trim(), Some(value.trim_start())),
            None => (line.trim_end(), None),
        };
        let valid_key = !key.is_empty()
            && !key.starts_with(|c: char| c.is_ascii_digit())
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !valid_key {
            return Err(DotenvError {
                line: first_line,
                message: match value {
                    Some(_) => format!("invalid variable name {key:?}: use letters, digits and _"),
                    None => format!(
                        "expected KEY=value or a KEY alone, found {:?}",
                        line.trim_end()
                    ),
                },
            });
        }
        let Some(value) = value else {
            vars.push((key.to_owned(), None));
            continue;
        };
        // A quoted value may go on over the next lines, until its closing quote.
        let mut value = value.to_owned();
        let mut last_line = first_line;
        let parsed = loop {
            match parse_value(&value) {
                Err(Unclosed(quote)) => match lines.next() {
                    Some((next, number)) => {
                        value.push('\n');
                        value.push_str(next);
                        last_line = number;
                    }
                    None => {
                        return Err(DotenvError {
                            line: first_line,
                            message: format!("unclosed {quote} quote"),
                        });
                    }
                },
                Ok(Parsed { value, after }) => {
                    let after = after.trim();
                    if !after.is_empty() && !after.starts_with('#') {
                        // A stray quote would otherwise swallow the lines after it.
                        return Err(DotenvError {
                            line: last_line,
                            message: format!(
                                "unexpected {after:?} after the closing quote of {key}'s value"
                            ),
                        });
                    }
                    break value;
                }
            }
        };
        vars.push((key.to_owned(), Some(parsed)));
    }
    Ok(vars)
}

/// A value read, and what follows its closing quote on its last line.
struct Parsed<'a> {
    value: String,
    after: &'a str,
}

/// A quoted value without its closing quote (`single` or `double`).
struct Unclosed(&'static str);

fn parse_value(value: &str) -> Result<Parsed<'_>, Unclosed> {
    if let Some(body) = value.strip_prefix('\'') {
        let end = body.find('\'').ok_or(Unclosed("single"))?;
        return Ok(Parsed {
            value: body[..end].to_owned(),
            after: &body[end + 1..],
        });
    }
    if let Some(body) = value.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = body.char_indices();
        while let Some((at, c)) = chars.next() {
            match c {
                '"' => {
                    return Ok(Parsed {
                        value: out,
                        after: &body[at + 1..],
                    });
                }
                '\\' => match chars.next() {
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, 't')) => out.push('\t'),
                    Some((_, 'r')) => out.push('\r'),
                    Some((_, other)) => out.push(other),
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
    Ok(Parsed {
        value: value.trim_end().to_owned(),
        after: "",
    })
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
            (
                "A='abc\nB=1\nC='x'\n",
                3,
                "unexpected \"x'\" after the closing quote of A's",
            ),
            ("A=\"x\" junk", 1, "unexpected \"junk\""),
        ];
        for (text, line, reason) in cases {
            let err = parse(text).unwrap_err();
            assert_eq!(err.line, line, "{text}");
            assert!(err.message.contains(reason), "{text}: {}", err.message);
        }
    }

    #[test]
    fn a_key_alone_and_quoted_values_over_several_lines_read_as_composes() {
        let text = "\u{feff}HOME\nexport PATH\nCERT=\"-----BEGIN  \nabc\\tdef\n-----END\" # a comment\nNOTE='one\n# not a comment\ntwo'\nNEXT=1\n";
        let vars = parse(text).unwrap();
        let expected = [
            ("HOME", None),
            ("PATH", None),
            ("CERT", Some("-----BEGIN  \nabc\tdef\n-----END")),
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
