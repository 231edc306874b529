//! Tool specs and their arguments: reading OpenAI-style function specs, and checking a
//! call's arguments against the tool's JSON Schema (the subset tools use in practice).

use std::collections::HashSet;

use afterimage_core::{StrategyError, ToolCall, ToolSpec};
use serde_json::Value;

/// Checks `arguments` against `schema`; every violation found, as
/// `` `/path`: what is wrong `` lines.
///
/// Supported: `type` (one name or a list), `properties`, `required`,
/// `additionalProperties: false`, `enum`, `items`, `minimum`/`maximum`,
/// `minLength`/`maxLength` (in characters), `minItems`/`maxItems`, at any depth.
/// Other keywords are ignored, so a schema using them checks less, never more.
pub fn validate_arguments(schema: &Value, arguments: &Value) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    check(schema, arguments, "", &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn check(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    let Some(schema) = schema.as_object() else {
        // `true`, `{}` or anything unreadable accepts everything.
        return;
    };
    let shown = if path.is_empty() { "/" } else { path };
    let mut fail = |message: String| errors.push(format!("`{shown}`: {message}"));
    if let Some(expected) = schema.get("type") {
        let names: Vec<&str> = match expected {
            Value::String(name) => vec![name.as_str()],
            Value::Array(names) => names.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !names.is_empty() && !names.iter().any(|name| has_type(value, name)) {
            fail(format!(
                "expected {}, got {}",
                names.join(" or "),
                type_name(value)
            ));
            return;
        }
    }
    if let Some(Value::Array(allowed)) = schema.get("enum")
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
        fail(format!("expected one of [{}], got {value}", list.join(",")));
    }
    match value {
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                && x < min
            {
                fail(format!("{n} is less than the minimum {min}"));
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
                && x > max
            {
                fail(format!("{n} is more than the maximum {max}"));
            }
        }
        Value::String(s) => {
            let len = s.chars().count() as u64;
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && len < min
            {
                fail(format!("{len} characters, fewer than minLength {min}"));
            }
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && len > max
            {
                fail(format!("{len} characters, more than maxLength {max}"));
            }
        }
        Value::Array(items) => {
            let len = items.len() as u64;
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && len < min
            {
                fail(format!("{len} items, fewer than minItems {min}"));
            }
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && len > max
            {
                fail(format!("{len} items, more than maxItems {max}"));
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(item_schema, item, &format!("{path}/{i}"), errors);
                }
            }
        }
        Value::Object(object) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            if let Some(Value::Array(required)) = schema.get("required") {
                for name in required.iter().filter_map(Value::as_str) {
                    if !object.contains_key(name) {
                        fail(format!("missing required property `{name}`"));
                    }
                }
            }
            if schema.get("additionalProperties") == Some(&Value::Bool(false)) {
                for key in object.keys() {
                    if !properties.is_some_and(|p| p.contains_key(key)) {
                        fail(format!("unexpected property `{key}`"));
                    }
                }
            }
            for (key, item) in object {
                let child = format!("{path}/{}", escape(key));
                match properties.and_then(|p| p.get(key)) {
                    Some(property) => check(property, item, &child, errors),
                    None => {
                        if let Some(extra @ Value::Object(_)) = schema.get("additionalProperties") {
                            check(extra, item, &child, errors);
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

/// JSON Pointer escaping of one path segment.
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn has_type(value: &Value, name: &str) -> bool {
    match name {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        "number" => value.is_number(),
        "integer" => match value {
            Value::Number(n) => {
                n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|x| x.fract() == 0.0)
            }
            _ => false,
        },
        // An unknown type name constrains nothing.
        _ => true,
    }
}

fn type_name(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {}", Value::String(s.clone())),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

/// Reads tool specs: a JSON array of OpenAI tools
/// (`{"type": "function", "function": {name, description, parameters}}`) or of bare
/// `{name, description, parameters}` objects.
///
/// Names must match `^[a-zA-Z0-9_-]{1,64}$` (what OpenAI and Gemini accept) and be
/// unique; `parameters`, when given, must be a JSON object.
pub fn parse_tool_specs(value: &Value) -> Result<Vec<ToolSpec>, StrategyError> {
    let bad = |message: String| StrategyError::Config(format!("tools: {message}"));
    let items = value
        .as_array()
        .ok_or_else(|| bad("expected a JSON array of tool specs".to_owned()))?;
    let mut seen = HashSet::new();
    let mut specs = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let spec = match item.get("function") {
            Some(function) if item.get("name").is_none() => function,
            _ => item,
        };
        if let Some(kind) = item.get("type").and_then(Value::as_str)
            && item.get("function").is_some()
            && kind != "function"
        {
            return Err(bad(format!(
                "tool {} has type {kind:?}; only \"function\" tools exist",
                i + 1
            )));
        }
        if !spec.is_object() {
            return Err(bad(format!("tool {} is not a JSON object", i + 1)));
        }
        if let Some(parameters) = spec.get("parameters")
            && !parameters.is_object()
        {
            return Err(bad(format!(
                "tool {}: `parameters` must be a JSON Schema object",
                i + 1
            )));
        }
        let tool: ToolSpec = serde_json::from_value(spec.clone())
            .map_err(|e| bad(format!("tool {}: {e}", i + 1)))?;
        if !valid_name(&tool.name) {
            return Err(bad(format!(
                "tool {}: the name {:?} must be 1 to 64 letters, digits, `_` or `-`",
                i + 1,
                tool.name
            )));
        }
        if !seen.insert(tool.name.clone()) {
            return Err(bad(format!("the name `{}` is used twice", tool.name)));
        }
        specs.push(tool);
    }
    Ok(specs)
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Checks one call against the offered `tools`: the tool exists and its arguments are
/// a JSON object valid for its parameters. Returns the tool and the parsed arguments,
/// or why the call is unusable.
pub fn validate_tool_call<'a>(
    tools: &'a [ToolSpec],
    call: &ToolCall,
) -> Result<(&'a ToolSpec, Value), String> {
    let name = &call.function.name;
    let tool = tools.iter().find(|t| &t.name == name).ok_or_else(|| {
        let offered: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
        format!(
            "unknown tool `{name}` (offered: {})",
            if offered.is_empty() {
                "none".to_owned()
            } else {
                offered.join(", ")
            }
        )
    })?;
    let text = call.function.arguments.trim();
    let arguments: Value = if text.is_empty() {
        Value::Object(serde_json::Map::new())
    } else {
        serde_json::from_str(text)
            .map_err(|e| format!("`{name}`: the arguments are not valid JSON ({e})"))?
    };
    if !arguments.is_object() {
        return Err(format!("`{name}`: the arguments are not a JSON object"));
    }
    validate_arguments(&tool.parameters, &arguments)
        .map_err(|errors| format!("`{name}`: invalid arguments: {}", errors.join("; ")))?;
    Ok((tool, arguments))
}
