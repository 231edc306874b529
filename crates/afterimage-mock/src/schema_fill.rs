//! Make a JSON value that validates against a JSON Schema (or Gemini's OpenAPI subset).
//!
//! The generator is generic: objects get every property (always the required ones),
//! arrays get `minItems..=maxItems` items (3 when free), strings follow `enum`, `const`,
//! `format` and the property's name (an array named `questions` gets distinct questions),
//! numbers sit high inside their bounds (a 0..1 score comes out around 0.8-0.95).
//! `$ref` into `$defs`/`definitions`, `anyOf`/`oneOf` (first non-null branch) and
//! `allOf` (merged) are followed. Recursive schemas stop at a depth limit.

use serde_json::{Map, Number, Value};

use crate::text::{TextGen, contains_ci};

/// Past this depth objects carry only required properties and arrays only `minItems`.
const SOFT_DEPTH: usize = 8;
/// Past this depth the generator gives up with `null` (only reached by recursive schemas).
const HARD_DEPTH: usize = 32;
/// Items in an array whose size the schema leaves free.
const DEFAULT_ITEMS: usize = 3;
/// Guards against absurd `minItems` / `minLength`.
const MAX_ITEMS: usize = 10_000;
const MAX_STRING: usize = 100_000;
/// Arrays up to this size are checked for duplicate items.
const DEDUP_LIMIT: usize = 64;

/// The schema that accepts anything (used for missing `items`).
static ANY: Value = Value::Bool(true);

/// A value valid against `schema`.
pub(crate) fn fill(schema: &Value, text: &mut TextGen<'_>) -> Value {
    Filler {
        root: schema,
        text,
        strings: 0,
    }
    .value(schema, None, 0, 0)
}

/// A value shaped like `example` (same keys and nesting, fresh strings).
pub(crate) fn fill_like(example: &Value, text: &mut TextGen<'_>) -> Value {
    Filler {
        root: example,
        text,
        strings: 0,
    }
    .like(example, None, 0, 0)
}

/// True when `value` reads as a JSON Schema rather than an example document.
pub(crate) fn is_schema_like(value: &Value) -> bool {
    let Some(obj) = value.as_object() else {
        return false;
    };
    if ["$schema", "$defs", "definitions", "anyOf", "oneOf", "allOf"]
        .iter()
        .any(|k| obj.contains_key(*k))
    {
        return true;
    }
    match obj.get("type") {
        Some(Value::String(t)) => type_kind(t).is_some(),
        Some(Value::Array(ts)) => {
            !ts.is_empty() && ts.iter().all(|t| t.as_str().and_then(type_kind).is_some())
        }
        _ => obj
            .get("properties")
            .and_then(Value::as_object)
            .is_some_and(|p| !p.is_empty() && p.values().all(|v| v.is_object())),
    }
}

/// The first JSON object embedded in `text` that is not empty, if any.
pub(crate) fn embedded_object(text: &str) -> Option<Value> {
    // Prompts rarely hold more than a few braces before the real object; the cap keeps a
    // brace-heavy document from costing quadratic time.
    const MAX_ATTEMPTS: usize = 64;
    let mut from = 0;
    for _ in 0..MAX_ATTEMPTS {
        let rest = text.get(from..)?;
        let start = from + rest.find('{')?;
        let mut stream =
            serde_json::Deserializer::from_str(text.get(start..)?).into_iter::<Value>();
        match stream.next() {
            Some(Ok(Value::Object(map))) if !map.is_empty() => return Some(Value::Object(map)),
            Some(Ok(_)) => from = start + stream.byte_offset().max(1),
            _ => from = start + 1,
        }
    }
    None
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Object,
    Array,
    String,
    Integer,
    Number,
    Boolean,
    Null,
}

/// JSON Schema type names; Gemini's OpenAPI subset spells them in upper case.
fn type_kind(name: &str) -> Option<Kind> {
    const NAMES: [(&str, Kind); 7] = [
        ("object", Kind::Object),
        ("array", Kind::Array),
        ("string", Kind::String),
        ("integer", Kind::Integer),
        ("number", Kind::Number),
        ("boolean", Kind::Boolean),
        ("null", Kind::Null),
    ];
    NAMES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, k)| *k)
}

fn kind_of(schema: &Value) -> Kind {
    match schema.get("type") {
        Some(Value::String(t)) => return type_kind(t).unwrap_or(Kind::String),
        Some(Value::Array(ts)) => {
            let kinds = ts.iter().filter_map(Value::as_str).filter_map(type_kind);
            let mut first = None;
            for k in kinds {
                if k != Kind::Null {
                    return k;
                }
                first.get_or_insert(k);
            }
            if let Some(k) = first {
                return k;
            }
        }
        _ => {}
    }
    let has = |keys: &[&str]| keys.iter().any(|k| schema.get(*k).is_some());
    if has(&[
        "properties",
        "required",
        "additionalProperties",
        "patternProperties",
        "minProperties",
    ]) {
        Kind::Object
    } else if has(&["items", "prefixItems", "minItems", "maxItems", "contains"]) {
        Kind::Array
    } else if has(&[
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
    ]) {
        Kind::Number
    } else {
        Kind::String
    }
}

fn is_null_schema(schema: &Value) -> bool {
    kind_of(schema) == Kind::Null && schema.get("type").is_some()
}

fn get_usize(schema: &Value, key: &str) -> Option<usize> {
    schema
        .get(key)
        .and_then(Value::as_u64)
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
}

/// What a string property's name says it should contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StrKind {
    Id,
    Email,
    Url,
    Question,
    Reason,
    Persona,
    Name,
    Title,
    Keyword,
    Language,
    Date,
    Answer,
    Generic,
}

fn str_kind(name: Option<&str>) -> StrKind {
    let Some(n) = name else {
        return StrKind::Generic;
    };
    let has = |needles: &[&str]| needles.iter().any(|p| contains_ci(n, p));
    let lower_end = |suffix: &str| {
        n.len() >= suffix.len()
            && n.get(n.len() - suffix.len()..)
                .is_some_and(|end| end.eq_ignore_ascii_case(suffix))
    };
    if n.eq_ignore_ascii_case("id") || lower_end("_id") || lower_end("_ids") || n.ends_with("Id") {
        StrKind::Id
    } else if has(&["email"]) {
        StrKind::Email
    } else if has(&["url", "uri", "link", "href"]) {
        StrKind::Url
    } else if has(&[
        "question",
        "instruction",
        "query",
        "queries",
        "prompt",
        "follow",
    ]) {
        StrKind::Question
    } else if has(&[
        "reason",
        "feedback",
        "explanation",
        "rationale",
        "critique",
        "justification",
        "comment",
        "analysis",
        "thought",
    ]) {
        StrKind::Reason
    } else if has(&["persona", "description", "background", "profile", "bio"]) {
        StrKind::Persona
    } else if has(&["name"]) {
        StrKind::Name
    } else if has(&["title", "topic", "subject", "heading"]) {
        StrKind::Title
    } else if has(&["tag", "keyword", "entit", "label", "category"]) {
        StrKind::Keyword
    } else if has(&["lang", "locale"]) {
        StrKind::Language
    } else if has(&["date", "time"]) {
        StrKind::Date
    } else if has(&[
        "answer", "response", "reply", "content", "text", "message", "summary", "body",
    ]) {
        StrKind::Answer
    } else {
        StrKind::Generic
    }
}

struct Filler<'s, 'g, 'a> {
    root: &'s Value,
    text: &'g mut TextGen<'a>,
    /// Strings made so far: sibling fields of the same kind (two criteria's `feedback`)
    /// should not read the same.
    strings: usize,
}

impl<'s> Filler<'s, '_, '_> {
    fn value(
        &mut self,
        schema: &'s Value,
        name: Option<&str>,
        variant: usize,
        depth: usize,
    ) -> Value {
        if depth > HARD_DEPTH || matches!(schema, Value::Bool(false)) {
            return Value::Null;
        }
        if let Some(target) = schema
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| self.resolve(r))
        {
            return self.value(target, name, variant, depth + 1);
        }
        if let Some(c) = schema.get("const") {
            return c.clone();
        }
        if let Some(options) = schema
            .get("enum")
            .and_then(Value::as_array)
            .filter(|e| !e.is_empty())
        {
            let non_null: Vec<&Value> = options.iter().filter(|v| !v.is_null()).collect();
            return match non_null.len() {
                0 => Value::Null,
                len => non_null[variant % len].clone(),
            };
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(branches) = schema.get(key).and_then(Value::as_array) {
                let branch = branches
                    .iter()
                    .find(|b| !is_null_schema(b))
                    .or(branches.first());
                if let Some(b) = branch {
                    return self.value(b, name, variant, depth + 1);
                }
            }
        }
        if let Some(parts) = schema
            .get("allOf")
            .and_then(Value::as_array)
            .filter(|p| !p.is_empty())
        {
            return self.all_of(schema, parts, name, variant, depth);
        }
        match kind_of(schema) {
            Kind::Object => self.object(schema, depth),
            Kind::Array => self.array(schema, name, depth),
            Kind::String => Value::String(self.string(schema, name, variant)),
            Kind::Integer => self.number(schema, name, variant, true),
            Kind::Number => self.number(schema, name, variant, false),
            Kind::Boolean => Value::Bool(true),
            Kind::Null => Value::Null,
        }
    }

    fn resolve(&self, reference: &str) -> Option<&'s Value> {
        let root = self.root;
        if reference == "#" {
            return Some(root);
        }
        if let Some(found) = reference.strip_prefix('#').and_then(|p| root.pointer(p)) {
            return Some(found);
        }
        // Refs into places we do not hold ("#/components/schemas/X", "other.json#/..."):
        // try the last segment as a local definition name.
        let last = reference.rsplit('/').next()?;
        ["$defs", "definitions"]
            .iter()
            .find_map(|defs| root.get(*defs).and_then(|d| d.get(last)))
    }

    fn all_of(
        &mut self,
        schema: &'s Value,
        parts: &'s [Value],
        name: Option<&str>,
        variant: usize,
        depth: usize,
    ) -> Value {
        let mut merged: Option<Map<String, Value>> = None;
        let mut other = None;
        for part in parts {
            match self.value(part, name, variant, depth + 1) {
                Value::Object(m) => merged.get_or_insert_with(Map::new).extend(m),
                v => {
                    other.get_or_insert(v);
                }
            }
        }
        // Properties written next to `allOf` belong to the same object.
        if schema.get("properties").is_some()
            && let Value::Object(own) = self.object(schema, depth)
        {
            merged.get_or_insert_with(Map::new).extend(own);
        }
        merged.map(Value::Object).or(other).unwrap_or(Value::Null)
    }

    fn object(&mut self, schema: &'s Value, depth: usize) -> Value {
        let required = schema.get("required").and_then(Value::as_array);
        let is_required = |key: &str| required.is_some_and(|r| r.iter().any(|k| k == key));
        let mut out = Map::new();
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (key, sub) in props {
                if depth >= SOFT_DEPTH && !is_required(key) {
                    continue;
                }
                let v = self.value(sub, Some(key), 0, depth + 1);
                out.insert(key.clone(), v);
            }
        }
        for key in required.into_iter().flatten().filter_map(Value::as_str) {
            if out.contains_key(key) {
                continue;
            }
            let v = match schema.get("additionalProperties") {
                Some(extra @ Value::Object(_)) => self.value(extra, Some(key), 0, depth + 1),
                _ => Value::String(self.string(&ANY, Some(key), 0)),
            };
            out.insert(key.to_string(), v);
        }
        Value::Object(out)
    }

    fn array(&mut self, schema: &'s Value, name: Option<&str>, depth: usize) -> Value {
        let min = get_usize(schema, "minItems").unwrap_or(0);
        let max = get_usize(schema, "maxItems").unwrap_or(usize::MAX);
        let tuple = schema
            .get("prefixItems")
            .or_else(|| schema.get("items").filter(|i| i.is_array()))
            .and_then(Value::as_array);
        let items = schema
            .get("items")
            .filter(|i| !i.is_array())
            .unwrap_or(&ANY);
        let mut n = if depth >= SOFT_DEPTH {
            min
        } else {
            DEFAULT_ITEMS.max(min).min(max)
        };
        if let Some(t) = tuple {
            if depth < SOFT_DEPTH {
                n = n.max(t.len().min(max));
            }
            if matches!(items, Value::Bool(false)) {
                n = n.min(t.len());
            }
        }
        let n = n.max(min).min(MAX_ITEMS);
        let mut out: Vec<Value> = Vec::with_capacity(n);
        for i in 0..n {
            let sub = tuple.and_then(|t| t.get(i)).unwrap_or(items);
            let mut v = self.value(sub, name, i, depth + 1);
            // Repeated items read as a broken generator (and break `uniqueItems`).
            let mut attempt = 1;
            while n <= DEDUP_LIMIT && attempt < 4 && out.contains(&v) {
                v = self.value(sub, name, i + attempt * n, depth + 1);
                attempt += 1;
            }
            out.push(v);
        }
        Value::Array(out)
    }

    fn string(&mut self, schema: &Value, name: Option<&str>, variant: usize) -> String {
        let variant = variant + self.strings;
        self.strings += 1;
        let formatted = schema
            .get("format")
            .and_then(Value::as_str)
            .and_then(|f| self.formatted(f, variant));
        let mut s = formatted.unwrap_or_else(|| self.by_name(name, variant));
        if let Some(min) = get_usize(schema, "minLength").map(|m| m.min(MAX_STRING)) {
            let mut extra = variant;
            while s.chars().count() < min {
                s.push(' ');
                s.push_str(&self.text.sentence(extra));
                extra += 1;
            }
        }
        if let Some(max) = get_usize(schema, "maxLength")
            && let Some((cut, _)) = s.char_indices().nth(max)
        {
            s.truncate(cut);
        }
        s
    }

    fn formatted(&mut self, format: &str, variant: usize) -> Option<String> {
        Some(match format {
            "date-time" => format!("2024-05-{:02}T10:30:00Z", 10 + variant % 18),
            "date" => format!("2024-05-{:02}", 10 + variant % 18),
            "time" => "10:30:00Z".to_string(),
            "email" | "idn-email" => self.email(variant),
            "uri" | "url" | "iri" | "uri-reference" => {
                format!("https://example.com/docs/{}", variant + 1)
            }
            "uuid" => self.text.uuid(),
            "hostname" | "idn-hostname" => "example.com".to_string(),
            "ipv4" => format!("192.0.2.{}", 1 + variant % 250),
            "ipv6" => "2001:db8::1".to_string(),
            "duration" => "PT5M".to_string(),
            _ => return None,
        })
    }

    fn email(&self, variant: usize) -> String {
        let name = self.text.name(variant).to_lowercase().replace(' ', ".");
        format!("{name}@example.com")
    }

    fn by_name(&mut self, name: Option<&str>, variant: usize) -> String {
        match str_kind(name) {
            StrKind::Id => format!("item-{}", variant + 1),
            StrKind::Email => self.email(variant),
            StrKind::Url => format!("https://example.com/docs/{}", variant + 1),
            StrKind::Question => self.text.question(variant),
            StrKind::Reason => self.text.reason(variant),
            StrKind::Persona => self.text.persona(variant),
            StrKind::Name => self.text.name(variant),
            StrKind::Title => self.text.title(variant),
            StrKind::Keyword => self.text.single_keyword(variant),
            StrKind::Language => "en".to_string(),
            StrKind::Date => format!("2024-05-{:02}", 10 + variant % 18),
            StrKind::Answer => self.text.answer(None),
            StrKind::Generic => self.text.sentence(variant),
        }
    }

    fn number(
        &mut self,
        schema: &Value,
        name: Option<&str>,
        variant: usize,
        integer: bool,
    ) -> Value {
        let range = Range::of(schema);
        // High in the range: judges' scores should look like passing scores.
        let f = if self.text.low_scores {
            0.3 + 0.2 * self.text.rng.next_f64()
        } else {
            0.8 + 0.15 * self.text.rng.next_f64()
        };
        let v = range.place(f, default_number(name, integer, f, variant));
        let mut v = if integer {
            range.round_integer(v)
        } else {
            range.round_cents(v)
        };
        if let Some(m) = schema
            .get("multipleOf")
            .and_then(Value::as_f64)
            .filter(|m| *m > 0.0 && m.is_finite())
        {
            v = range.multiple_near(v, m);
        }
        if integer && v.is_finite() {
            // Saturating cast: the schema's bounds already keep it in range.
            Value::from(v as i64)
        } else {
            Number::from_f64(v).map_or(Value::from(0), Value::Number)
        }
    }

    fn like(&mut self, example: &Value, name: Option<&str>, variant: usize, depth: usize) -> Value {
        if depth > HARD_DEPTH {
            return Value::Null;
        }
        match example {
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), self.like(v, Some(k), 0, depth + 1)))
                    .collect(),
            ),
            Value::Array(items) => {
                // One element in an example means "a list of these".
                let n = if items.len() == 1 {
                    DEFAULT_ITEMS
                } else {
                    items.len()
                };
                (0..n)
                    .filter_map(|i| {
                        let template = items.get(i.min(items.len().saturating_sub(1)))?;
                        Some(self.like(template, name, i, depth + 1))
                    })
                    .collect()
            }
            Value::String(_) => Value::String(self.string(&ANY, name, variant)),
            other => other.clone(),
        }
    }
}

/// The range a number schema allows: each end its bound and whether the bound itself
/// is excluded.
#[derive(Debug, Clone, Copy)]
struct Range {
    lo: Option<(f64, bool)>,
    hi: Option<(f64, bool)>,
}

impl Range {
    /// `minimum`, `maximum` and their `exclusive*` forms.
    fn of(schema: &Value) -> Range {
        let num = |k: &str| schema.get(k).and_then(Value::as_f64);
        Range {
            lo: with_exclusive(num("minimum"), schema.get("exclusiveMinimum"), |x, l| {
                x >= l
            }),
            hi: with_exclusive(num("maximum"), schema.get("exclusiveMaximum"), |x, h| {
                x <= h
            }),
        }
    }

    fn contains(&self, v: f64) -> bool {
        self.lo
            .is_none_or(|(l, ex)| if ex { v > l } else { v >= l })
            && self
                .hi
                .is_none_or(|(h, ex)| if ex { v < h } else { v <= h })
    }

    /// The fraction `f` of the way through a closed range; otherwise `default`, moved
    /// just inside the one bound it breaks.
    fn place(&self, f: f64, default: f64) -> f64 {
        match (self.lo, self.hi) {
            (Some((l, _)), Some((h, _))) => l + (h - l) * f,
            (Some((l, _)), None) if !self.contains(default) => l + 1.0,
            (None, Some((h, _))) if !self.contains(default) => h - 1.0,
            _ => default,
        }
    }

    /// `v` rounded to an integer, moved back inside a bound the rounding crossed.
    fn round_integer(&self, v: f64) -> f64 {
        let mut v = v.round();
        if let Some((l, ex)) = self.lo
            && !self.contains(v)
            && v <= l
        {
            v = if ex { l.floor() + 1.0 } else { l.ceil() };
        }
        if let Some((h, ex)) = self.hi
            && !self.contains(v)
            && v >= h
        {
            v = if ex { h.ceil() - 1.0 } else { h.floor() };
        }
        v
    }

    /// `v` to two decimals, unless that leaves the range.
    fn round_cents(&self, v: f64) -> f64 {
        let rounded = (v * 100.0).round() / 100.0;
        if self.contains(rounded) { rounded } else { v }
    }

    /// A multiple of `m` near `v` inside the range, else the nearest one.
    fn multiple_near(&self, v: f64, m: f64) -> f64 {
        let k = (v / m).round();
        [k, k + 1.0, k - 1.0, k + 2.0]
            .into_iter()
            .map(|k| k * m)
            .find(|c| self.contains(*c))
            .unwrap_or(k * m)
    }
}

/// A bound with its `exclusive*` keyword applied. Draft 4 spells exclusivity as a
/// boolean next to the bound; later drafts give the exclusive bound as a number, which
/// counts when it is at least as `tight` as the inclusive one.
fn with_exclusive(
    bound: Option<f64>,
    exclusive: Option<&Value>,
    tight: fn(f64, f64) -> bool,
) -> Option<(f64, bool)> {
    let bound = bound.map(|v| (v, false));
    match exclusive {
        Some(Value::Bool(true)) => bound.map(|(v, _)| (v, true)),
        Some(v) => match v.as_f64() {
            Some(x) if bound.is_none_or(|(b, _)| tight(x, b)) => Some((x, true)),
            _ => bound,
        },
        None => bound,
    }
}

fn default_number(name: Option<&str>, integer: bool, f: f64, variant: usize) -> f64 {
    let n = name.unwrap_or("");
    let has = |p: &str| contains_ci(n, p);
    if integer {
        if n.eq_ignore_ascii_case("age") || has("_age") {
            34.0
        } else if has("year") {
            2024.0
        } else if has("score") || has("rating") {
            8.0
        } else if has("percent") {
            85.0
        } else {
            1.0 + variant as f64
        }
    } else if has("price") || has("cost") || has("amount") {
        19.99
    } else if has("temperature") {
        0.7
    } else if has("percent") {
        85.0
    } else {
        f
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::text::Rng;

    fn textgen() -> TextGen<'static> {
        TextGen::new(
            vec!["refunds", "invoices", "payouts"],
            Rng::for_request(7, 1),
            1,
        )
    }

    #[test]
    fn numbers_respect_exclusive_and_inclusive_bounds() {
        let mut g = textgen();
        for schema in [
            json!({"type": "integer", "minimum": 1, "maximum": 10}),
            json!({"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 2}),
            json!({"type": "number", "minimum": 0, "maximum": 1}),
            json!({"type": "number", "minimum": 5, "exclusiveMaximum": 5.01}),
            json!({"type": "integer", "minimum": 100}),
            json!({"type": "integer", "maximum": -3}),
            json!({"type": "integer", "minimum": 0, "maximum": 100, "multipleOf": 7}),
        ] {
            let v = fill(&schema, &mut g);
            let x = v.as_f64().unwrap();
            if let Some(m) = schema.get("minimum").and_then(Value::as_f64) {
                assert!(x >= m, "{schema} -> {v}");
            }
            if let Some(m) = schema.get("maximum").and_then(Value::as_f64) {
                assert!(x <= m, "{schema} -> {v}");
            }
            if let Some(m) = schema.get("exclusiveMinimum").and_then(Value::as_f64) {
                assert!(x > m, "{schema} -> {v}");
            }
            if let Some(m) = schema.get("exclusiveMaximum").and_then(Value::as_f64) {
                assert!(x < m, "{schema} -> {v}");
            }
            if schema["type"] == "integer" {
                assert!(v.is_i64(), "{schema} -> {v}");
            }
            if schema.get("multipleOf").is_some() {
                assert_eq!(v.as_i64().unwrap() % 7, 0, "{v}");
            }
        }
    }

    #[test]
    fn recursive_schemas_terminate() {
        let schema = json!({
            "$ref": "#/$defs/node",
            "$defs": {"node": {"type": "object", "required": ["children"], "properties": {
                "label": {"type": "string"},
                "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}
            }}}
        });
        let v = fill(&schema, &mut textgen());
        assert!(v["children"].is_array());
    }

    #[test]
    fn gemini_upper_case_types_and_nullable_type_arrays() {
        let schema = json!({"type": "OBJECT", "properties": {
            "count": {"type": "INTEGER"},
            "maybe": {"type": ["null", "string"]},
        }});
        let v = fill(&schema, &mut textgen());
        assert!(v["count"].is_i64());
        assert!(v["maybe"].is_string());
    }

    #[test]
    fn examples_are_told_apart_from_schemas() {
        assert!(is_schema_like(&json!({"type": "object"})));
        assert!(is_schema_like(
            &json!({"properties": {"a": {"type": "string"}}})
        ));
        assert!(!is_schema_like(
            &json!({"type": "billing", "question": "x"})
        ));
        let found =
            embedded_object("Use {} or {name}. Answer like {\"a\": [\"x\"]} please").unwrap();
        assert_eq!(found, json!({"a": ["x"]}));
        let like = fill_like(&found, &mut textgen());
        assert_eq!(like["a"].as_array().unwrap().len(), 3);
    }
}
