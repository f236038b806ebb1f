//! Schema-directed decoding: walks a YAML tree beside the stack file's JSON Schema (generated
//! from `swarm_api::stackfile`), reports every mismatch at its line and column, and builds the
//! JSON value that deserialises into the stack file types. Scalars are typed by what the
//! schema expects, as Compose casts them: `FOO: 1` is the string "1" where a string is
//! expected, and `${REPLICAS}` becomes a number where a number is.

use serde_json::{Map, Number, Value as Json};

use super::diagnostic::{Diagnostics, did_you_mean};
use super::yaml::{Node, Scalar, Typed, Value, resolve_plain};
use swarm_api::stackfile::UNSUPPORTED_KEYWORD;
use swarm_api::units::{UNIT_KEYWORD, check_unit};

/// Decodes `node` as an instance of `root` (a schema with `$defs`), reporting every error.
/// What fails is left out where the format lets it be (an optional key, a list item; a map
/// entry that may be null becomes null), so the rest can still be converted and its findings
/// reported in the same run; `None` only when nothing is left to convert.
pub fn decode(node: &Node, root: &Json, diags: &mut Diagnostics) -> Option<Json> {
    let mut decoder = Decoder {
        root,
        diags,
        path: Vec::new(),
    };
    decoder.decode(node, root)
}

/// The schema that admits anything.
const ANY: &Json = &Json::Bool(true);

/// The schema of the values of a documented enum.
static STRING: std::sync::LazyLock<Json> =
    std::sync::LazyLock::new(|| serde_json::json!({"type": "string"}));

struct Decoder<'a> {
    root: &'a Json,
    diags: &'a mut Diagnostics,
    path: Vec<String>,
}

/// The kinds of value a schema admits, as read from its `type`.
#[derive(Debug, Default, Clone, Copy)]
struct Admits {
    null: bool,
    boolean: bool,
    integer: bool,
    number: bool,
    string: bool,
    array: bool,
    object: bool,
}

impl Admits {
    fn of(schema: &Json) -> Admits {
        let mut admits = Admits::default();
        let mut add = |name: &str| match name {
            "null" => admits.null = true,
            "boolean" => admits.boolean = true,
            "integer" => admits.integer = true,
            "number" => admits.number = true,
            "string" => admits.string = true,
            "array" => admits.array = true,
            "object" => admits.object = true,
            _ => {}
        };
        match schema.get("type") {
            Some(Json::String(name)) => add(name),
            Some(Json::Array(names)) => names.iter().filter_map(Json::as_str).for_each(add),
            _ => {
                // No `type`: anything goes (only `true`-like schemas here).
                admits = Admits {
                    null: true,
                    boolean: true,
                    integer: true,
                    number: true,
                    string: true,
                    array: true,
                    object: true,
                };
            }
        }
        admits
    }

    fn describe(self) -> String {
        let mut kinds = Vec::new();
        if self.object {
            kinds.push("a mapping");
        }
        if self.array {
            kinds.push("a list");
        }
        if self.string {
            kinds.push("a string");
        }
        if self.integer {
            kinds.push("an integer");
        } else if self.number {
            kinds.push("a number");
        }
        if self.boolean {
            kinds.push("true or false");
        }
        match kinds.len() {
            0 => "nothing".to_owned(),
            1 => kinds[0].to_owned(),
            n => format!("{} or {}", kinds[..n - 1].join(", "), kinds[n - 1]),
        }
    }

    fn union(self, other: Admits) -> Admits {
        Admits {
            null: self.null || other.null,
            boolean: self.boolean || other.boolean,
            integer: self.integer || other.integer,
            number: self.number || other.number,
            string: self.string || other.string,
            array: self.array || other.array,
            object: self.object || other.object,
        }
    }
}

impl<'a> Decoder<'a> {
    fn path(&self) -> String {
        let mut out = String::new();
        for segment in &self.path {
            if !segment.starts_with('[') && !out.is_empty() {
                out.push('.');
            }
            out.push_str(segment);
        }
        out
    }

    fn resolve(&self, mut schema: &'a Json) -> &'a Json {
        // References point into the root's `$defs`; a chain of them is followed to the end.
        for _ in 0..16 {
            let Some(reference) = schema.get("$ref").and_then(Json::as_str) else {
                break;
            };
            let name = reference.trim_start_matches("#/$defs/");
            match self.root.get("$defs").and_then(|defs| defs.get(name)) {
                Some(target) => schema = target,
                None => break,
            }
        }
        schema
    }

    fn decode(&mut self, node: &Node, schema: &'a Json) -> Option<Json> {
        let schema = self.resolve(schema);
        if let Some(branches) = schema
            .get("anyOf")
            .or_else(|| schema.get("oneOf"))
            .and_then(Json::as_array)
        {
            return self.decode_union(node, branches);
        }
        let admits = Admits::of(schema);
        let value = match &node.value {
            Value::Mapping(_) if admits.object => self.decode_object(node, schema),
            Value::Sequence(items) if admits.array => {
                let items_schema = schema.get("items").unwrap_or(ANY);
                let mut out = Vec::with_capacity(items.len());
                for (index, item) in items.iter().enumerate() {
                    self.path.push(format!("[{index}]"));
                    // A failed item is reported and left out.
                    if let Some(value) = self.decode(item, items_schema) {
                        out.push(value);
                    }
                    self.path.pop();
                }
                Some(Json::Array(out))
            }
            // Its interpolation failed and was reported: nothing more to say about it.
            Value::Scalar(scalar) if scalar.invalid => None,
            Value::Scalar(scalar) => match self.scalar(scalar, admits) {
                Some(value) => Some(value),
                None => {
                    self.mismatch(node, admits);
                    None
                }
            },
            _ => {
                self.mismatch(node, admits);
                None
            }
        }?;
        self.check_constraints(node, schema, &value)
            .then_some(value)
    }

    /// Picks the branch of an `anyOf` that fits the node's kind, so errors come from inside
    /// the branch the user meant (a mapping goes to the long form, a string to the short one).
    fn decode_union(&mut self, node: &Node, branches: &'a [Json]) -> Option<Json> {
        let resolved: Vec<&'a Json> = branches.iter().map(|b| self.resolve(b)).collect();
        // An enum whose variants are documented is a `oneOf` of constants.
        let constants: Vec<&Json> = resolved.iter().filter_map(|b| b.get("const")).collect();
        if !constants.is_empty() && constants.len() == resolved.len() {
            let value = self.decode(node, resolved[0].get("type").map_or(ANY, |_| &*STRING))?;
            let allowed: Vec<Json> = constants.into_iter().cloned().collect();
            return self.check_enum(node, &allowed, &value).then_some(value);
        }
        let fits = |branch: &Json, strict: bool| {
            let admits = Admits::of(branch);
            match &node.value {
                Value::Mapping(_) => admits.object,
                Value::Sequence(_) => admits.array,
                Value::Scalar(scalar) => {
                    let typed = scalar_type(scalar);
                    match typed {
                        Typed::Null => admits.null,
                        Typed::Bool(_) if strict => admits.boolean,
                        Typed::Int(_) if strict => admits.integer || admits.number,
                        Typed::Float(_) if strict => admits.number,
                        Typed::Str(_) if strict => admits.string,
                        _ => admits.string,
                    }
                }
            }
        };
        let chosen = resolved
            .iter()
            .find(|b| fits(b, true))
            .or_else(|| resolved.iter().find(|b| fits(b, false)));
        match chosen {
            Some(branch) => self.decode(node, branch),
            None => {
                let admits = resolved
                    .iter()
                    .fold(Admits::default(), |all, b| all.union(Admits::of(b)));
                self.mismatch(node, admits);
                None
            }
        }
    }

    fn admits_null(&self, schema: &'a Json) -> bool {
        let schema = self.resolve(schema);
        match schema
            .get("anyOf")
            .or_else(|| schema.get("oneOf"))
            .and_then(Json::as_array)
        {
            Some(branches) => branches.iter().any(|b| self.admits_null(b)),
            None => Admits::of(schema).null,
        }
    }

    fn decode_object(&mut self, node: &Node, schema: &'a Json) -> Option<Json> {
        let Value::Mapping(entries) = &node.value else {
            unreachable!("decode_object takes mappings")
        };
        let properties = schema.get("properties").and_then(Json::as_object);
        let extension_prefixes: Vec<&str> = schema
            .get("patternProperties")
            .and_then(Json::as_object)
            .map(|patterns| {
                patterns
                    .keys()
                    .filter_map(|p| p.strip_prefix('^'))
                    .collect()
            })
            .unwrap_or_default();
        let additional = schema.get("additionalProperties");
        let required: Vec<&str> = schema
            .get("required")
            .and_then(Json::as_array)
            .map(|names| names.iter().filter_map(Json::as_str).collect())
            .unwrap_or_default();
        let mut out = Map::new();
        let mut ok = true;
        for entry in entries {
            if extension_prefixes.iter().any(|p| entry.key.starts_with(p)) {
                continue;
            }
            let property = properties.and_then(|p| p.get(&entry.key));
            let value_schema = match (property, additional) {
                (Some(property), _) => property,
                (None, Some(Json::Bool(false))) => {
                    self.unknown_key(
                        entry.key.as_str(),
                        entry.key_span,
                        properties,
                        &extension_prefixes,
                    );
                    continue;
                }
                (None, Some(schema)) => schema,
                (None, None) => ANY,
            };
            self.path.push(entry.key.clone());
            if value_schema.get(UNSUPPORTED_KEYWORD).is_some() {
                let path = self.path();
                self.diags.warning(
                    Some(entry.key_span),
                    &path,
                    format!(
                        "`{}` is not supported by swarm yet and is ignored",
                        entry.key
                    ),
                );
            } else {
                match self.decode(&entry.value, value_schema) {
                    Some(value) => {
                        out.insert(entry.key.clone(), value);
                    }
                    // A failed entry of a map whose values may be null (a network, a
                    // volume…) stays declared, so references to it are not reported too.
                    None if property.is_none() && self.admits_null(value_schema) => {
                        out.insert(entry.key.clone(), Json::Null);
                    }
                    // Reported: a key the types require fails its object, others are left out.
                    None => ok &= !required.contains(&entry.key.as_str()),
                }
            }
            self.path.pop();
        }
        for name in &required {
            if !entries.iter().any(|e| e.key == *name) {
                let path = self.path();
                self.diags.error(
                    Some(node.span),
                    &path,
                    format!("missing required key `{name}`"),
                );
                ok = false;
            }
        }
        ok.then_some(Json::Object(out))
    }

    fn unknown_key(
        &mut self,
        key: &str,
        span: super::diagnostic::Span,
        properties: Option<&Map<String, Json>>,
        extension_prefixes: &[&str],
    ) {
        let path = self.path();
        let known: Vec<&str> = properties
            .map(|p| p.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let supported: Vec<&str> = properties
            .map(|p| {
                p.iter()
                    .filter(|(_, schema)| schema.get(UNSUPPORTED_KEYWORD).is_none())
                    .map(|(key, _)| key.as_str())
                    .collect()
            })
            .unwrap_or_default();
        let where_ = if path.is_empty() {
            "at the top level".to_owned()
        } else {
            format!("in `{path}`")
        };
        let diag = self
            .diags
            .error(Some(span), &path, format!("unknown key `{key}` {where_}"));
        let in_a_service = path.starts_with("services.") && path.matches('.').count() == 1;
        if let Some(advice) = compose_advice(key).filter(|_| in_a_service) {
            diag.help(advice);
        } else if let Some(suggestion) = did_you_mean(key, known.iter().copied()) {
            diag.help(format!("did you mean `{suggestion}`?"));
        } else if !supported.is_empty() {
            let mut help = format!("expected one of: {}", supported.join(", "));
            if !extension_prefixes.is_empty() {
                help.push_str("; extension keys start with x-");
            }
            diag.help(help);
        }
    }

    /// A scalar as the JSON value of a kind the schema admits, or `None` if none fits.
    fn scalar(&self, scalar: &Scalar, admits: Admits) -> Option<Json> {
        match scalar_type(scalar) {
            Typed::Null if admits.null => return Some(Json::Null),
            Typed::Bool(b) if admits.boolean => return Some(Json::Bool(b)),
            Typed::Int(n) if admits.integer || admits.number => {
                return Some(Json::Number(n.into()));
            }
            Typed::Float(f) if admits.number => return Number::from_f64(f).map(Json::Number),
            _ => {}
        }
        // Any scalar but null reads as a string where a string is expected, in its written form.
        if admits.string && scalar_type(scalar) != Typed::Null {
            return Some(Json::String(scalar.text.clone()));
        }
        None
    }

    fn mismatch(&mut self, node: &Node, admits: Admits) {
        let path = self.path();
        let diag = self.diags.error(
            Some(node.span),
            &path,
            format!("expected {}, found {}", admits.describe(), node.describe()),
        );
        if let Value::Scalar(scalar) = &node.value {
            let as_plain = resolve_plain(&scalar.text);
            let quoted_number = !scalar.plain
                && matches!(as_plain, Typed::Int(_) | Typed::Float(_) | Typed::Bool(_))
                && (admits.integer || admits.number || admits.boolean);
            if quoted_number {
                diag.help("remove the quotes");
            } else if admits.array && !admits.string && !admits.object {
                diag.help(format!("write it as a list: [{:?}]", scalar.text));
            }
        }
    }

    fn check_enum(&mut self, node: &Node, allowed: &[Json], value: &Json) -> bool {
        if allowed.contains(value) {
            return true;
        }
        let path = self.path();
        let names: Vec<&str> = allowed.iter().filter_map(Json::as_str).collect();
        let found = value
            .as_str()
            .map_or_else(|| value.to_string(), |s| format!("{s:?}"));
        let diag = self.diags.error(
            Some(node.span),
            &path,
            format!("expected one of {}, found {found}", names.join(", ")),
        );
        if let Some(suggestion) = value
            .as_str()
            .and_then(|s| did_you_mean(s, names.iter().copied()))
        {
            diag.help(format!("did you mean `{suggestion}`?"));
        }
        false
    }

    /// `enum`, units, `minimum` and `maximum`: checked on the decoded value.
    fn check_constraints(&mut self, node: &Node, schema: &Json, value: &Json) -> bool {
        let path = self.path();
        if let Some(allowed) = schema.get("enum").and_then(Json::as_array)
            && !self.check_enum(node, allowed, value)
        {
            return false;
        }
        if let (Some(unit), Some(text)) = (
            schema.get(UNIT_KEYWORD).and_then(Json::as_str),
            value.as_str(),
        ) && let Err(e) = check_unit(unit, text)
        {
            self.diags.error(Some(node.span), &path, e.to_string());
            return false;
        }
        if let Some(number) = value.as_f64() {
            let bound = |key: &str| schema.get(key).and_then(Json::as_f64);
            if let Some(minimum) = bound("minimum").filter(|m| number < *m) {
                self.diags.error(
                    Some(node.span),
                    &path,
                    format!("{value} is less than the minimum {minimum}"),
                );
                return false;
            }
            if let Some(maximum) = bound("maximum").filter(|m| number > *m) {
                self.diags.error(
                    Some(node.span),
                    &path,
                    format!("{value} is more than the maximum {maximum}"),
                );
                return false;
            }
        }
        true
    }
}

/// How a scalar types: plain scalars and substituted ones by their text, quoted ones as
/// strings. A substitution that gave nothing is the empty string, not null: Compose casts an
/// interpolated value to a number or a boolean where one is expected, never to null.
fn scalar_type(scalar: &Scalar) -> Typed<'_> {
    if scalar.interpolated && scalar.text.is_empty() {
        Typed::Str("")
    } else if scalar.interpolated {
        resolve_plain(&scalar.text)
    } else {
        scalar.typed()
    }
}

/// What to write instead of a service key of `docker compose` that stack files (Docker's
/// as swarm's) do not have, for the keys users bring from Compose files.
fn compose_advice(key: &str) -> Option<&'static str> {
    Some(match key {
        "pids_limit" => "a service's process limit is deploy.resources.limits.pids",
        "scale" => "a service's number of tasks is deploy.replicas",
        "mem_reservation" => {
            "a service's memory reservation is deploy.resources.reservations.memory"
        }
        "memswap_limit" | "mem_swappiness" => {
            "swap is not limited per service in a swarm; deploy.resources.limits.memory limits memory"
        }
        "cpu_shares" | "cpu_quota" | "cpu_period" | "cpuset" | "cpu_count" | "cpu_percent" => {
            "a service's CPU limit is deploy.resources.limits.cpus (a reservation: deploy.resources.reservations.cpus)"
        }
        "volumes_from" => {
            "services do not share their containers' volumes in a swarm: declare a volume at the top level and mount it in each service"
        }
        "extends" => {
            "stack files have no extends: give several files (`-c base.yml -c override.yml`) or share settings with YAML anchors and x- keys"
        }
        "runtime" => "every task runs under runc: remove it",
        _ => return None,
    })
}
