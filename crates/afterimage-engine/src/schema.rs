//! Checking an output schema before a run spends anything on it: the keywords the
//! output check (`validate_arguments`) reads must be well formed, since a misspelt
//! type or a `required` naming no property would silently check less.

use serde_json::{Map, Value};

/// What is wrong with an output schema, and where (a JSON Pointer into it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{path}`: {message}")]
pub struct SchemaProblem {
    /// Where in the schema (`/properties/age/type`; `/` for the root).
    pub path: String,
    /// What is wrong and what would be right.
    pub message: String,
}

const TYPES: [&str; 7] = [
    "object", "array", "string", "number", "integer", "boolean", "null",
];

/// Checks that `schema` can constrain structured outputs: an object schema at the
/// root (what JSON schema modes accept), known `type` names, `properties` holding
/// schemas, `required` listing declared properties, `items` a schema, `enum` a
/// non-empty list, and bounds that are non-negative numbers where counts are meant.
///
/// ```
/// use afterimage_engine::check_output_schema;
///
/// let good = serde_json::json!({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]});
/// assert!(check_output_schema(&good).is_ok());
/// let typo = serde_json::json!({"type": "object", "properties": {"a": {"type": "strng"}}});
/// assert_eq!(check_output_schema(&typo).unwrap_err().path, "/properties/a/type");
/// ```
pub fn check_output_schema(schema: &Value) -> Result<(), SchemaProblem> {
    let problem = |path: &str, message: String| SchemaProblem {
        path: path.to_owned(),
        message,
    };
    let Some(root) = schema.as_object() else {
        return Err(problem(
            "/",
            format!("the schema must be a JSON object, got {}", kind(schema)),
        ));
    };
    match root.get("type") {
        Some(Value::String(t)) if t == "object" => {}
        None if root.contains_key("properties") => {}
        _ => {
            return Err(problem(
                "/",
                "the root must be an object schema (`type: object` with `properties`): JSON schema modes and the row's `output` take an object".to_owned(),
            ));
        }
    }
    check(root, "").map_err(|(path, message)| problem(&path, message))
}

type Found = (String, String);

fn check(schema: &Map<String, Value>, path: &str) -> Result<(), Found> {
    check_type(schema, path)?;
    let properties = match schema.get("properties") {
        None => None,
        Some(Value::Object(properties)) => Some(properties),
        Some(other) => {
            return Err(at(
                path,
                "properties",
                format!("must map names to schemas, got {}", kind(other)),
            ));
        }
    };
    for (name, property) in properties.into_iter().flatten() {
        let child = format!(
            "{path}/properties/{}",
            name.replace('~', "~0").replace('/', "~1")
        );
        sub_schema(property, &child)?;
    }
    check_required(schema, properties, path)?;
    if let Some(items) = schema.get("items") {
        sub_schema(items, &format!("{path}/items"))?;
    }
    if let Some(Value::Object(extra)) = schema.get("additionalProperties") {
        check(extra, &format!("{path}/additionalProperties"))?;
    }
    check_enum_and_bounds(schema, path)
}

fn sub_schema(schema: &Value, path: &str) -> Result<(), Found> {
    match schema {
        Value::Object(inner) => check(inner, path),
        Value::Bool(_) => Ok(()),
        other => Err((
            path.to_owned(),
            format!("must be a schema (a JSON object), got {}", kind(other)),
        )),
    }
}

fn check_type(schema: &Map<String, Value>, path: &str) -> Result<(), Found> {
    let names: Vec<&Value> = match schema.get("type") {
        None => return Ok(()),
        Some(Value::Array(names)) => names.iter().collect(),
        Some(one) => vec![one],
    };
    for name in names {
        match name.as_str() {
            Some(n) if TYPES.contains(&n) => {}
            _ => {
                return Err(at(
                    path,
                    "type",
                    format!("unknown type {name} (expected one of {})", TYPES.join(", ")),
                ));
            }
        }
    }
    Ok(())
}

fn check_required(
    schema: &Map<String, Value>,
    properties: Option<&Map<String, Value>>,
    path: &str,
) -> Result<(), Found> {
    let Some(required) = schema.get("required") else {
        return Ok(());
    };
    let Some(names) = required.as_array() else {
        return Err(at(
            path,
            "required",
            format!("must be a list of property names, got {}", kind(required)),
        ));
    };
    for name in names {
        let Some(name) = name.as_str() else {
            return Err(at(
                path,
                "required",
                format!("must hold property names, got {name}"),
            ));
        };
        if properties.is_some_and(|p| !p.contains_key(name)) {
            return Err(at(
                path,
                "required",
                format!("names `{name}`, which `properties` does not declare"),
            ));
        }
    }
    Ok(())
}

fn check_enum_and_bounds(schema: &Map<String, Value>, path: &str) -> Result<(), Found> {
    if let Some(values) = schema.get("enum")
        && values.as_array().is_none_or(Vec::is_empty)
    {
        return Err(at(path, "enum", "must be a non-empty list".to_owned()));
    }
    for key in ["minLength", "maxLength", "minItems", "maxItems"] {
        if let Some(bound) = schema.get(key)
            && bound.as_u64().is_none()
        {
            return Err(at(
                path,
                key,
                format!("must be a non-negative integer, got {bound}"),
            ));
        }
    }
    for key in ["minimum", "maximum"] {
        if let Some(bound) = schema.get(key)
            && !bound.is_number()
        {
            return Err(at(path, key, format!("must be a number, got {bound}")));
        }
    }
    Ok(())
}

fn at(path: &str, key: &str, message: String) -> Found {
    (format!("{path}/{key}"), message)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn path_of(schema: Value) -> String {
        check_output_schema(&schema).unwrap_err().path
    }

    #[test]
    fn broken_schemas_are_named_where_they_break() {
        assert_eq!(path_of(json!([1])), "/");
        assert_eq!(path_of(json!({"type": "string"})), "/");
        assert_eq!(
            path_of(json!({"type": "object", "properties": []})),
            "/properties"
        );
        assert_eq!(
            path_of(
                json!({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["b"]})
            ),
            "/required"
        );
        assert_eq!(
            path_of(
                json!({"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "txt"}}}})
            ),
            "/properties/tags/items/type"
        );
        assert_eq!(
            path_of(
                json!({"type": "object", "properties": {"n": {"type": "string", "maxLength": -1}}})
            ),
            "/properties/n/maxLength"
        );
        assert_eq!(
            path_of(json!({"type": "object", "properties": {"n": {"enum": []}}})),
            "/properties/n/enum"
        );
    }

    #[test]
    fn usual_schemas_pass() {
        let schema = json!({
            "type": "object",
            "properties": {
                "title": {"type": "string", "minLength": 1},
                "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
                "level": {"enum": ["easy", "hard"]},
                "score": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
            },
            "required": ["title", "tags"],
            "additionalProperties": false,
        });
        assert_eq!(check_output_schema(&schema), Ok(()));
    }
}
