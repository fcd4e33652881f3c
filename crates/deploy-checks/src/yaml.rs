//! YAML documents as `serde_json::Value`, with merge keys (`<<: *anchor`)
//! applied as Compose applies them.

use std::path::Path;

use serde::Deserialize as _;
use serde_json::Value;

/// Parses one YAML document, applying merge keys.
pub fn parse(text: &str, origin: &str) -> Value {
    let mut value: serde_norway::Value = serde_norway::from_str(text)
        .unwrap_or_else(|error| panic!("{origin} is not valid YAML: {error}"));
    value
        .apply_merge()
        .unwrap_or_else(|error| panic!("{origin}: bad merge key: {error}"));
    serde_json::to_value(&value)
        .unwrap_or_else(|error| panic!("{origin}: not representable as JSON: {error}"))
}

/// Parses every document of a multi-document YAML stream (`---`), skipping
/// empty ones.
pub fn parse_all(text: &str, origin: &str) -> Vec<Value> {
    let mut documents = Vec::new();
    for document in serde_norway::Deserializer::from_str(text) {
        let mut value = serde_norway::Value::deserialize(document)
            .unwrap_or_else(|error| panic!("{origin} is not valid YAML: {error}"));
        value
            .apply_merge()
            .unwrap_or_else(|error| panic!("{origin}: bad merge key: {error}"));
        if value.is_null() {
            continue;
        }
        documents.push(
            serde_json::to_value(&value)
                .unwrap_or_else(|error| panic!("{origin}: not representable as JSON: {error}")),
        );
    }
    documents
}

/// Parses a YAML file below the repository root.
pub fn load(path: impl AsRef<Path>) -> Value {
    let path = path.as_ref();
    parse(&crate::read(path), &path.display().to_string())
}

/// A string at a JSON pointer, or `None`.
pub fn str_at<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

/// The entries of an object (none when `value` is not one).
pub fn entries(value: Option<&Value>) -> Vec<(&String, &Value)> {
    value
        .and_then(Value::as_object)
        .map(|map| map.iter().collect())
        .unwrap_or_default()
}

/// The items of an array (none when `value` is not one).
pub fn items(value: Option<&Value>) -> &[Value] {
    value.and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// A scalar as text: strings as they are, numbers and booleans printed.
pub fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        Value::Null => Some(String::new()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keys_apply() {
        let value = parse(
            "base: &base {a: 1, b: 2}\nderived:\n  <<: *base\n  b: 3\n",
            "test",
        );
        assert_eq!(value["derived"]["a"], 1);
        assert_eq!(value["derived"]["b"], 3);
    }

    #[test]
    fn merge_keys_take_a_list_of_anchors() {
        let value = parse(
            "a: &a {x: 1}\nb: &b {y: 2}\nc: {<<: [*a, *b], z: 3}\n",
            "test",
        );
        assert_eq!(value["c"]["x"], 1);
        assert_eq!(value["c"]["y"], 2);
        assert_eq!(value["c"]["z"], 3);
    }

    #[test]
    fn streams_split_into_documents() {
        let documents = parse_all("a: 1\n---\n---\nb: 2\n", "test");
        assert_eq!(documents.len(), 2);
        assert_eq!(documents[1]["b"], 2);
    }
}
