//! A YAML document as a tree that remembers where each value was written, so every later
//! finding can name its line and column. Built from yaml-rust2's event parser without
//! recursion, with merge keys (`<<: *defaults`) as Compose files use them, interpolation of
//! scalar values, and hard bounds on size, depth and alias expansion (no billion laughs).

use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use super::diagnostic::{Diagnostics, Span};
use super::interpolate::interpolate;

/// Files larger than this are refused before parsing.
pub const MAX_FILE_BYTES: usize = 8 << 20;
/// The most values a document may hold once its aliases are expanded.
pub const MAX_NODES: usize = 250_000;
/// The deepest nesting of sequences and mappings accepted.
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub span: Span,
    /// The number of values in this subtree; an alias costs its anchor's weight.
    weight: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar(Scalar),
    Sequence(Vec<Node>),
    Mapping(Vec<Entry>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_span: Span,
    pub value: Node,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    pub text: String,
    /// Plain (unquoted) scalars are typed by their text: `3` is a number, `true` a boolean.
    pub plain: bool,
    /// Written with a `${VAR}` that was substituted: typed by the result where a number or
    /// boolean is expected, as Compose casts interpolated values.
    pub interpolated: bool,
    /// Its interpolation failed (and was reported): later stages skip it silently.
    pub invalid: bool,
}

/// What a scalar means, by the YAML 1.2 core schema.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Typed<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
}

impl Scalar {
    pub fn typed(&self) -> Typed<'_> {
        if self.plain {
            resolve_plain(&self.text)
        } else {
            Typed::Str(&self.text)
        }
    }
}

/// Types a scalar's text as if it were written plain.
pub fn resolve_plain(text: &str) -> Typed<'_> {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Typed::Null,
        "true" | "True" | "TRUE" => return Typed::Bool(true),
        "false" | "False" | "FALSE" => return Typed::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Typed::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Typed::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Typed::Float(f64::NAN),
        _ => {}
    }
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    if unsigned.is_empty() {
        return Typed::Str(text);
    }
    if let Some(n) = yaml11_int(text, unsigned) {
        return Typed::Int(n);
    }
    if unsigned.bytes().all(|b| b.is_ascii_digit())
        && let Ok(n) = text.parse::<i64>()
    {
        return Typed::Int(n);
    }
    if let Some(hex) = text.strip_prefix("0x")
        && let Ok(n) = i64::from_str_radix(hex, 16)
    {
        return Typed::Int(n);
    }
    if let Some(octal) = text.strip_prefix("0o")
        && let Ok(n) = i64::from_str_radix(octal, 8)
    {
        return Typed::Int(n);
    }
    let float_like = unsigned.bytes().any(|b| b.is_ascii_digit())
        && unsigned
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
        && unsigned.starts_with(|c: char| c.is_ascii_digit() || c == '.');
    if float_like && let Ok(f) = text.parse::<f64>() {
        return Typed::Float(f);
    }
    Typed::Str(text)
}

/// The integers Docker's loader reads where YAML 1.2 reads a decimal or a string: it parses
/// with yaml.v2 (YAML 1.1), where a leading 0 means octal (`mode: 0400` is 256, the
/// permission users mean), `0b` binary, and `_` separates digits (`1_000`).
fn yaml11_int(text: &str, unsigned: &str) -> Option<i64> {
    let negative = text.starts_with('-');
    let digits: String = unsigned.chars().filter(|&c| c != '_').collect();
    let magnitude = if let Some(binary) = digits.strip_prefix("0b") {
        i64::from_str_radix(binary, 2).ok()?
    } else if digits.len() > 1
        && digits.starts_with('0')
        && digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        i64::from_str_radix(&digits, 8).ok()?
    } else if unsigned.contains('_')
        && !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !unsigned.starts_with('_')
    {
        digits.parse().ok()?
    } else {
        return None;
    };
    Some(if negative { -magnitude } else { magnitude })
}

impl Node {
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Mapping(entries) => entries.iter().find(|e| e.key == key).map(|e| &e.value),
            _ => None,
        }
    }

    pub fn entry(&self, key: &str) -> Option<&Entry> {
        match &self.value {
            Value::Mapping(entries) => entries.iter().find(|e| e.key == key),
            _ => None,
        }
    }

    pub fn item(&self, index: usize) -> Option<&Node> {
        match &self.value {
            Value::Sequence(items) => items.get(index),
            _ => None,
        }
    }

    /// What kind of value this is, for messages: "a mapping", "a list", "the string \"x\"".
    pub fn describe(&self) -> String {
        match &self.value {
            Value::Mapping(_) => "a mapping".to_owned(),
            Value::Sequence(_) => "a list".to_owned(),
            Value::Scalar(s) => match s.typed() {
                Typed::Null => "nothing (null)".to_owned(),
                Typed::Bool(b) => format!("the boolean {b}"),
                Typed::Int(_) | Typed::Float(_) => format!("the number {}", s.text),
                Typed::Str(text) => format!("the string {}", quote_short(text)),
            },
        }
    }
}

fn quote_short(text: &str) -> String {
    const LIMIT: usize = 60;
    if text.chars().count() <= LIMIT {
        format!("{text:?}")
    } else {
        let head: String = text.chars().take(LIMIT).collect();
        format!("{head:?}…")
    }
}

/// Parses `text` into a tree. Interpolates scalar values (never keys) with `lookup`; findings
/// go to `diags`. Returns `None` when the document cannot be read at all.
pub fn load(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    diags: &mut Diagnostics,
) -> Option<Node> {
    if text.len() > MAX_FILE_BYTES {
        diags.error(
            None,
            "",
            format!(
                "the file is {} bytes; stack files are limited to {MAX_FILE_BYTES} bytes",
                text.len()
            ),
        );
        return None;
    }
    let mut builder = Builder {
        lines: text.lines().collect(),
        lookup,
        diags,
        stack: Vec::new(),
        anchors: HashMap::new(),
        nodes: 0,
        root: None,
        documents: 0,
    };
    let mut parser = Parser::new_from_str(text);
    loop {
        let (event, mark) = match parser.next_token() {
            Ok(next) => next,
            Err(err) => {
                let mark = err.marker();
                let line = builder.lines.get(mark.line().saturating_sub(1)).copied();
                builder
                    .diags
                    .error(
                        Some(span(builder.diags.current_file(), mark)),
                        "",
                        format!("invalid YAML: {}", err.info()),
                    )
                    .help(syntax_help(err.info(), line.unwrap_or_default()));
                return None;
            }
        };
        match builder.event(event, mark) {
            Ok(true) => break,
            Ok(false) => {}
            Err(()) => return None,
        }
    }
    builder.root
}

/// How to mend a syntax error: for the two that YAML refuses and Docker's lenient reader
/// lets pass, exactly what to change.
fn syntax_help(error: &str, line: &str) -> &'static str {
    let closer = line.trim_start().starts_with([']', '}']);
    if error == "invalid indentation" && closer {
        "indent the closing bracket past the column of its key: YAML wants a flow collection's lines inside it (Docker's reader lets this pass)"
    } else if error.starts_with("':' must be followed by") && line.contains(":\t") {
        "write a space after the ':', not a tab (Docker's reader lets this pass)"
    } else {
        "check the indentation and quoting around this place"
    }
}

fn span(file: u16, mark: &Marker) -> Span {
    Span {
        file,
        line: mark.line() as u32,
        column: mark.col() as u32 + 1,
    }
}

enum Frame {
    Sequence {
        span: Span,
        anchor: usize,
        items: Vec<Node>,
        weight: usize,
    },
    Mapping {
        span: Span,
        anchor: usize,
        entries: Vec<Entry>,
        /// Mappings merged in with `<<`, in order of precedence.
        merges: Vec<Node>,
        key: Option<(String, Span)>,
        weight: usize,
    },
}

struct Builder<'a> {
    /// The document's lines, to place an interpolation error at its `$`.
    lines: Vec<&'a str>,
    lookup: &'a dyn Fn(&str) -> Option<String>,
    diags: &'a mut Diagnostics,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    nodes: usize,
    root: Option<Node>,
    documents: usize,
}

const MERGE_KEY: &str = "<<";

impl Builder<'_> {
    /// Takes one event; `Ok(true)` at the end of the stream, `Err` after a fatal finding.
    fn event(&mut self, event: Event, mark: Marker) -> Result<bool, ()> {
        let at = span(self.diags.current_file(), &mark);
        match event {
            Event::StreamEnd => return Ok(true),
            Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents > 1 {
                    self.diags
                        .error(
                            Some(at),
                            "",
                            "a stack file holds one YAML document, and this is a second one",
                        )
                        .help("split the documents into separate stack files");
                    return Err(());
                }
            }
            Event::Alias(id) => {
                let Some(node) = self.anchors.get(&id) else {
                    self.diags.error(Some(at), "", "alias to an unknown anchor");
                    return Err(());
                };
                let node = node.clone();
                self.count(node.weight, at)?;
                self.complete(node, 0)?;
            }
            Event::Scalar(text, style, anchor, tag) => {
                self.count(1, at)?;
                let forced_string = tag.is_some_and(|t| t.suffix == "str");
                let mut scalar = Scalar {
                    plain: style == TScalarStyle::Plain && !forced_string,
                    text,
                    interpolated: false,
                    invalid: false,
                };
                // Keys are never interpolated, as in Compose.
                if !self.expecting_key() {
                    self.interpolate(&mut scalar, at);
                }
                let node = Node {
                    value: Value::Scalar(scalar),
                    span: at,
                    weight: 1,
                };
                self.complete(node, anchor)?;
            }
            Event::SequenceStart(anchor, _) => {
                self.open(at)?;
                self.stack.push(Frame::Sequence {
                    span: at,
                    anchor,
                    items: Vec::new(),
                    weight: 1,
                });
            }
            Event::MappingStart(anchor, _) => {
                self.open(at)?;
                self.stack.push(Frame::Mapping {
                    span: at,
                    anchor,
                    entries: Vec::new(),
                    merges: Vec::new(),
                    key: None,
                    weight: 1,
                });
            }
            Event::SequenceEnd => {
                let Some(Frame::Sequence {
                    span,
                    anchor,
                    items,
                    weight,
                }) = self.stack.pop()
                else {
                    unreachable!("the parser closes only the sequence it opened")
                };
                let node = Node {
                    value: Value::Sequence(items),
                    span,
                    weight,
                };
                self.complete(node, anchor)?;
            }
            Event::MappingEnd => {
                let Some(Frame::Mapping {
                    span,
                    anchor,
                    mut entries,
                    merges,
                    weight,
                    ..
                }) = self.stack.pop()
                else {
                    unreachable!("the parser closes only the mapping it opened")
                };
                // Explicit keys win over merged ones; earlier merges win over later ones.
                for merged in merges {
                    if let Value::Mapping(merged_entries) = merged.value {
                        for entry in merged_entries {
                            if !entries.iter().any(|e| e.key == entry.key) {
                                entries.push(entry);
                            }
                        }
                    }
                }
                let node = Node {
                    value: Value::Mapping(entries),
                    span,
                    weight,
                };
                self.complete(node, anchor)?;
            }
        }
        Ok(false)
    }

    fn expecting_key(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Mapping { key: None, .. }))
    }

    fn open(&mut self, at: Span) -> Result<(), ()> {
        self.count(1, at)?;
        if self.stack.len() >= MAX_DEPTH {
            self.diags.error(
                Some(at),
                "",
                format!("values are nested more than {MAX_DEPTH} levels deep"),
            );
            return Err(());
        }
        Ok(())
    }

    fn count(&mut self, weight: usize, at: Span) -> Result<(), ()> {
        self.nodes = self.nodes.saturating_add(weight);
        if self.nodes > MAX_NODES {
            self.diags
                .error(
                    Some(at),
                    "",
                    format!("the document holds more than {MAX_NODES} values once its aliases are expanded"),
                )
                .help("aliases that refer to aliases multiply; write the values out or split the stack");
            return Err(());
        }
        Ok(())
    }

    fn interpolate(&mut self, scalar: &mut Scalar, at: Span) {
        match interpolate(&scalar.text, self.lookup) {
            Ok(result) => {
                for name in &result.unset {
                    self.diags
                        .warning(Some(at), "", format!("variable {name} is not set; using an empty string"))
                        .help(format!("set {name} in the environment or in a .env file beside the stack, or give a default: ${{{name}:-value}}"));
                }
                scalar.interpolated = result.substituted;
                scalar.text = result.text;
            }
            Err(error) => {
                let at = self.at_offset(at, &scalar.text, error.offset);
                self.diags.error(Some(at), "", error.message);
                scalar.invalid = true;
            }
        }
    }

    /// Where byte `offset` of a scalar's `text` that starts at `at` is in the source: found
    /// when the source shows the text up to there as it is (one line, no escapes; after an
    /// opening quote), else the scalar's start.
    fn at_offset(&self, at: Span, text: &str, offset: usize) -> Span {
        let Some(line) = (at.line as usize)
            .checked_sub(1)
            .and_then(|i| self.lines.get(i))
        else {
            return at;
        };
        let Some(start) = line
            .char_indices()
            .nth(at.column as usize - 1)
            .map(|(i, _)| i)
        else {
            return at;
        };
        let source = &line[start..];
        let (quote, source) = match source.strip_prefix(['"', '\'']) {
            Some(unquoted) => (1, unquoted),
            None => (0, source),
        };
        let before = &text[..offset];
        if !source.starts_with(before) {
            return at;
        }
        Span {
            column: at.column + quote + before.chars().count() as u32,
            ..at
        }
    }

    /// Attaches a finished node to its parent (or makes it the root) and records its anchor.
    fn complete(&mut self, node: Node, anchor: usize) -> Result<(), ()> {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Sequence { items, weight, .. }) => {
                *weight += node.weight;
                items.push(node);
            }
            Some(Frame::Mapping {
                entries,
                merges,
                key,
                weight,
                ..
            }) => match key.take() {
                None => {
                    let Value::Scalar(scalar) = node.value else {
                        self.diags.error(
                            Some(node.span),
                            "",
                            "a mapping key must be a plain string, not a list or mapping",
                        );
                        return Err(());
                    };
                    *key = Some((scalar.text, node.span));
                }
                Some((name, key_span)) => {
                    *weight += node.weight;
                    if name == MERGE_KEY {
                        let sources = match node.value {
                            Value::Sequence(items) => items,
                            _ => vec![node],
                        };
                        for source in sources {
                            if !matches!(source.value, Value::Mapping(_)) {
                                self.diags.error(
                                    Some(source.span),
                                    "",
                                    format!(
                                        "`<<` merges mappings, but this is {}",
                                        source.describe()
                                    ),
                                );
                                continue;
                            }
                            merges.push(source);
                        }
                    } else if entries.iter().any(|e| e.key == name) {
                        self.diags
                            .error(Some(key_span), "", format!("duplicate key `{name}`"))
                            .help("each key may appear once in a mapping; remove one of them");
                    } else {
                        entries.push(Entry {
                            key: name,
                            key_span,
                            value: node,
                        });
                    }
                }
            },
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::diagnostic::Diagnostic;

    fn no_vars(_: &str) -> Option<String> {
        None
    }

    fn parse(text: &str) -> (Option<Node>, Vec<Diagnostic>) {
        let mut diags = Diagnostics::new("t.yaml");
        let node = load(text, &no_vars, &mut diags);
        (node, diags.into_sorted())
    }

    fn scalar_text(node: &Node) -> &str {
        match &node.value {
            Value::Scalar(s) => &s.text,
            other => panic!("not a scalar: {other:?}"),
        }
    }

    #[test]
    fn remembers_lines_and_columns() {
        let (root, diags) =
            parse("services:\n  web:\n    image: nginx\n    ports:\n      - \"80:80\"\n");
        assert!(diags.is_empty(), "{diags:?}");
        let root = root.unwrap();
        let web = root.get("services").unwrap().get("web").unwrap();
        let image = web.entry("image").unwrap();
        assert_eq!(image.key_span, Span::at(3, 5));
        assert_eq!(image.value.span, Span::at(3, 12));
        let port = web.get("ports").unwrap().item(0).unwrap();
        assert_eq!(port.span, Span::at(5, 9));
        assert_eq!(scalar_text(port), "80:80");
    }

    /// The two syntax errors Docker's reader lets pass say exactly what to change.
    #[test]
    fn syntax_errors_docker_lets_pass_say_how_to_mend_them() {
        let cases = [
            (
                "services:\n  web:\n    command: [\n      \"nginx\"\n    ]\n",
                (5, 5),
                "indent the closing bracket past the column of its key",
            ),
            (
                "services:\n  web:\n    image:\tnginx\n",
                (3, 12),
                "write a space after the ':', not a tab",
            ),
            ("a: [b\n", (2, 1), "check the indentation and quoting"),
        ];
        for (text, (line, column), help) in cases {
            let (root, diags) = parse(text);
            assert!(root.is_none(), "{text}");
            let found = diags[0].span.unwrap();
            assert_eq!((found.line, found.column), (line, column), "{text}");
            let said = diags[0].help.as_deref().unwrap_or_default();
            assert!(said.starts_with(help), "{text}: {said}");
        }
    }

    #[test]
    fn types_plain_scalars_only() {
        let (root, _) =
            parse("a: 3\nb: '3'\nc: true\nd: ~\ne: 1.5\nf: 0x1F\ng: 80:80\nh: !!str 7\ni: -4\n");
        let root = root.unwrap();
        let typed = |k: &str| match &root.get(k).unwrap().value {
            Value::Scalar(s) => format!("{:?}", s.typed()),
            _ => unreachable!(),
        };
        assert_eq!(typed("a"), "Int(3)");
        assert_eq!(typed("b"), "Str(\"3\")");
        assert_eq!(typed("c"), "Bool(true)");
        assert_eq!(typed("d"), "Null");
        assert_eq!(typed("e"), "Float(1.5)");
        assert_eq!(typed("f"), "Int(31)");
        assert_eq!(typed("g"), "Str(\"80:80\")");
        assert_eq!(typed("h"), "Str(\"7\")");
        assert_eq!(typed("i"), "Int(-4)");
    }

    #[test]
    fn integers_read_as_docker_reads_them_yaml_1_1() {
        let typed = |text: &str| format!("{:?}", resolve_plain(text));
        assert_eq!(typed("0400"), "Int(256)");
        assert_eq!(typed("0644"), "Int(420)");
        assert_eq!(typed("-010"), "Int(-8)");
        assert_eq!(typed("0b101"), "Int(5)");
        assert_eq!(typed("1_000"), "Int(1000)");
        assert_eq!(typed("0"), "Int(0)");
        // Not octal: a decimal, as before.
        assert_eq!(typed("0900"), "Int(900)");
        assert_eq!(typed("_1"), "Str(\"_1\")");
        assert_eq!(typed("0o17"), "Int(15)");
    }

    #[test]
    fn merge_keys_fill_in_without_overriding() {
        let text =
            "x-base: &base\n  replicas: 2\n  mode: replicated\nsvc:\n  <<: *base\n  replicas: 5\n";
        let (root, diags) = parse(text);
        assert!(diags.is_empty(), "{diags:?}");
        let svc = root.unwrap().get("svc").unwrap().clone();
        assert_eq!(scalar_text(svc.get("replicas").unwrap()), "5");
        assert_eq!(scalar_text(svc.get("mode").unwrap()), "replicated");
        // A merged value keeps the place where it was written.
        assert_eq!(svc.get("mode").unwrap().span.line, 3);
    }

    #[test]
    fn interpolates_values_but_not_keys() {
        let lookup = |name: &str| (name == "TAG").then(|| "1.27".to_owned());
        let mut diags = Diagnostics::new("t.yaml");
        let root = load("${TAG}: nginx:${TAG}\nn: ${TAG}\n", &lookup, &mut diags).unwrap();
        let entry = root.entry("${TAG}").unwrap();
        assert_eq!(scalar_text(&entry.value), "nginx:1.27");
        let Value::Scalar(n) = &root.get("n").unwrap().value else {
            unreachable!()
        };
        assert!(n.interpolated);
        assert_eq!(n.typed(), Typed::Float(1.27));
    }

    #[test]
    fn reports_yaml_errors_with_position() {
        let (root, diags) = parse("services:\n  web:\n    image: [unclosed\n");
        assert!(root.is_none());
        assert_eq!(diags.len(), 1);
        assert!(
            diags[0]
                .to_string()
                .starts_with("t.yaml:4:1: error: invalid YAML"),
            "{}",
            diags[0]
        );
    }

    #[test]
    fn refuses_duplicate_keys_and_second_documents() {
        let (_, diags) = parse("a: 1\nb: 2\na: 3\n");
        assert_eq!(
            diags[0].to_string(),
            "t.yaml:3:1: error: duplicate key `a`\n  help: each key may appear once in a mapping; remove one of them"
        );
        let (root, diags) = parse("a: 1\n---\nb: 2\n");
        assert!(root.is_none());
        assert!(diags[0].message.contains("second one"));
    }

    #[test]
    fn billion_laughs_is_refused_quickly() {
        let mut text = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for i in 1..10 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        let started = std::time::Instant::now();
        let (root, diags) = parse(&text);
        assert!(root.is_none());
        assert!(
            diags[0].message.contains("once its aliases are expanded"),
            "{}",
            diags[0]
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn deep_nesting_is_refused_without_recursion() {
        let text = "[".repeat(100) + &"]".repeat(100);
        let (root, diags) = parse(&text);
        assert!(root.is_none());
        assert!(
            diags[0].message.contains("nested more than 64 levels"),
            "{}",
            diags[0]
        );
        // Far deeper input stops in the scanner, which bounds its own recursion.
        let text = "[".repeat(100_000) + &"]".repeat(100_000);
        let (root, diags) = parse(&text);
        assert!(root.is_none());
        assert!(diags[0].message.contains("recursion limit"), "{}", diags[0]);
    }

    #[test]
    fn empty_documents_have_no_root_value() {
        let (root, diags) = parse("");
        assert!(root.is_none());
        assert!(diags.is_empty());
        let (root, _) = parse("# only a comment\n");
        assert!(root.is_none());
    }
}
