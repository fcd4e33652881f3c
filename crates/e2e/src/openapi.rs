//! Checking real responses against the gateway's OpenAPI 3.1 document.
//!
//! For each recorded [`Exchange`], the operation is found by method and path
//! (the template with the most literal segments wins: `/users/me` before
//! `/users/{id}`), then its response by status (`200`, else `2XX`, else
//! `default`) and content type. The response's schema is validated as JSON
//! Schema 2020-12, with the document's `components` copied next to it so
//! every `$ref: "#/components/schemas/…"` resolves.

use reqwest::Method;
use serde_json::{Map, Value};

use crate::api::Exchange;

/// The OpenAPI document.
#[derive(Debug, Clone)]
pub struct OpenApi {
    pub document: Value,
}

impl OpenApi {
    pub fn new(document: Value) -> Self {
        assert!(
            document["openapi"]
                .as_str()
                .is_some_and(|version| version.starts_with("3.1")),
            "not an OpenAPI 3.1 document: {}",
            document["openapi"]
        );
        Self { document }
    }

    /// The path template of the document matching `path`, if any.
    pub fn template(&self, path: &str) -> Option<String> {
        let paths = self.document["paths"].as_object()?;
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
        paths
            .keys()
            .filter_map(|template| {
                let parts: Vec<&str> = template.trim_end_matches('/').split('/').collect();
                if parts.len() != segments.len() {
                    return None;
                }
                let mut literal = 0;
                for (part, segment) in parts.iter().zip(&segments) {
                    if part.starts_with('{') && part.ends_with('}') {
                        if segment.is_empty() {
                            return None;
                        }
                    } else if part == segment {
                        literal += 1;
                    } else {
                        return None;
                    }
                }
                Some((literal, template.clone()))
            })
            .max_by_key(|(literal, _)| *literal)
            .map(|(_, template)| template)
    }

    /// The operation object of `method` on the template matching `path`.
    pub fn operation(&self, method: &Method, path: &str) -> Option<&Value> {
        let template = self.template(path)?;
        let operation = &self.document["paths"][&template][method.as_str().to_lowercase()];
        (!operation.is_null()).then_some(operation)
    }

    /// The schema documented for a response, `Ok(None)` when the response
    /// is documented without content.
    pub fn response_schema(
        &self,
        method: &Method,
        path: &str,
        status: u16,
        content_type: &str,
    ) -> Result<Option<Value>, String> {
        let operation = self
            .operation(method, path)
            .ok_or_else(|| format!("{method} {path} is not in the document"))?;
        let responses = &operation["responses"];
        let class = format!("{}XX", status / 100);
        let response = [status.to_string(), class, "default".to_owned()]
            .iter()
            .map(|key| &responses[key])
            .find(|response| !response.is_null())
            .ok_or_else(|| format!("{method} {path}: status {status} is not documented"))?;
        let response = self.resolve(response);
        let Some(content) = response["content"].as_object() else {
            return Ok(None);
        };
        let media = content
            .get(content_type)
            .or_else(|| content.get("application/json"))
            .or_else(|| content.values().next())
            .ok_or_else(|| format!("{method} {path} {status}: no content"))?;
        Ok(Some(media["schema"].clone()))
    }

    /// Follows a `$ref` to another part of the document (responses may be
    /// references to `components/responses`).
    fn resolve<'a>(&'a self, value: &'a Value) -> &'a Value {
        match value["$ref"].as_str() {
            Some(reference) if reference.starts_with("#/") => self
                .document
                .pointer(&reference[1..])
                .map_or(value, |target| self.resolve(target)),
            _ => value,
        }
    }

    /// Validates one exchange; `Err` says what is wrong.
    pub fn check(&self, exchange: &Exchange) -> Result<(), String> {
        let schema = self.response_schema(
            &exchange.method,
            &exchange.path,
            exchange.status,
            &exchange.content_type,
        )?;
        let what = format!("{} {} {}", exchange.method, exchange.path, exchange.status);
        let Some(schema) = schema else {
            return if exchange.body.is_null() {
                Ok(())
            } else {
                Err(format!(
                    "{what}: a body is returned but none is documented: {}",
                    exchange.body
                ))
            };
        };
        let mut root = match schema {
            Value::Object(map) => map,
            Value::Bool(true) => Map::new(),
            other => return Err(format!("{what}: unusable schema {other}")),
        };
        root.insert("components".to_owned(), self.document["components"].clone());
        let root = Value::Object(root);
        let validator = jsonschema::draft202012::new(&root)
            .map_err(|error| format!("{what}: the documented schema is invalid: {error}"))?;
        let errors: Vec<String> = validator
            .iter_errors(&exchange.body)
            .map(|error| format!("{} at {}", error, error.instance_path))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{what}: the body does not match the document: {}\nbody: {}",
                errors.join("; "),
                exchange.body
            ))
        }
    }

    /// Validates every exchange; panics listing every mismatch.
    #[track_caller]
    pub fn assert_all(&self, exchanges: &[Exchange]) {
        let failures: Vec<String> = exchanges
            .iter()
            .filter_map(|exchange| self.check(exchange).err())
            .collect();
        assert!(
            failures.is_empty(),
            "{} of {} responses do not match /api/openapi.json:\n{}",
            failures.len(),
            exchanges.len(),
            failures.join("\n")
        );
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn document() -> OpenApi {
        OpenApi::new(json!({
            "openapi": "3.1.0",
            "paths": {
                "/api/v1/users/me": {"get": {"responses": {
                    "200": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/User"}}}},
                    "401": {"$ref": "#/components/responses/Problem"}
                }}},
                "/api/v1/users/{id}": {"get": {"responses": {"200": {"content": {"application/json": {"schema": {"type": "string"}}}}}}},
                "/api/v1/orders/{id}/cancel": {"post": {"responses": {"202": {"description": "accepted"}}}}
            },
            "components": {
                "schemas": {
                    "User": {"type": "object", "required": ["id", "email"], "properties": {
                        "id": {"type": "string"}, "email": {"type": "string"},
                        "money": {"$ref": "#/components/schemas/Money"}}},
                    "Money": {"type": "object", "required": ["amount"], "properties": {"amount": {"type": "integer"}}},
                    "Problem": {"type": "object", "required": ["code"]}
                },
                "responses": {"Problem": {"description": "a problem", "content": {
                    "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}}
            }
        }))
    }

    fn exchange(method: Method, path: &str, status: u16, body: Value) -> Exchange {
        Exchange {
            method,
            path: path.to_owned(),
            status,
            content_type: "application/json".to_owned(),
            body,
        }
    }

    #[test]
    fn literal_segments_win_over_parameters() {
        let doc = document();
        assert_eq!(
            doc.template("/api/v1/users/me").as_deref(),
            Some("/api/v1/users/me")
        );
        assert_eq!(
            doc.template("/api/v1/users/42").as_deref(),
            Some("/api/v1/users/{id}")
        );
        assert_eq!(doc.template("/api/v1/nope"), None);
    }

    #[test]
    fn nested_references_resolve_and_mismatches_are_reported() {
        let doc = document();
        let good = json!({"id": "1", "email": "a@b.c", "money": {"amount": 5}});
        assert_eq!(
            doc.check(&exchange(Method::GET, "/api/v1/users/me", 200, good)),
            Ok(())
        );
        let bad = json!({"id": "1", "email": "a@b.c", "money": {"amount": "5"}});
        let error = doc
            .check(&exchange(Method::GET, "/api/v1/users/me", 200, bad))
            .unwrap_err();
        assert!(error.contains("/money/amount"), "{error}");
        let problem = Exchange {
            content_type: "application/problem+json".into(),
            ..exchange(Method::GET, "/api/v1/users/me", 401, json!({"title": "x"}))
        };
        assert!(doc.check(&problem).unwrap_err().contains("code"));
    }

    #[test]
    fn undocumented_statuses_and_bodies_fail() {
        let doc = document();
        let teapot = exchange(Method::GET, "/api/v1/users/me", 418, json!({}));
        assert!(doc.check(&teapot).is_err());
        let empty = exchange(Method::POST, "/api/v1/orders/1/cancel", 202, Value::Null);
        assert_eq!(doc.check(&empty), Ok(()));
        let body = exchange(
            Method::POST,
            "/api/v1/orders/1/cancel",
            202,
            json!({"a": 1}),
        );
        assert!(doc.check(&body).is_err());
    }
}
