//! RFC 9457 problem details: the one error body of every HTTP surface.
//!
//! `{type, title, status, detail, code, errors?}` where `code` is a stable,
//! machine-readable string clients switch on (`INSUFFICIENT_STOCK`,
//! `VALIDATION_FAILED`, ...) and `errors` maps field names to messages.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The media type of a problem document.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// `Retry-After` in whole seconds: rounded up and at least 1 (the header
/// has second resolution, and 0 would invite an immediate retry).
pub fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// An RFC 9457 problem document with Ferrishop's `code` and `errors`
/// extensions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    pub code: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub errors: BTreeMap<String, String>,
}

impl Problem {
    /// A problem with `type` derived from the code
    /// (`https://ferrishop.dev/problems/insufficient-stock`).
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!(
                "https://ferrishop.dev/problems/{}",
                code.to_ascii_lowercase().replace('_', "-")
            ),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            code: code.to_owned(),
            errors: BTreeMap::new(),
        }
    }

    /// 422 `VALIDATION_FAILED` with one message per field.
    pub fn validation(errors: BTreeMap<String, String>) -> Self {
        Self {
            errors,
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "VALIDATION_FAILED",
                "the request has invalid fields",
            )
        }
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, axum::Json(self)).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        response
    }
}

/// A JSON request body whose rejections are problem documents like every
/// other error: 400 `MALFORMED_JSON` for broken JSON, 413
/// `PAYLOAD_TOO_LARGE` over the body limit, 415 `UNSUPPORTED_MEDIA_TYPE`
/// without a JSON content type, 422 `VALIDATION_FAILED` for JSON of the
/// wrong shape.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Problem> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(Problem::from(&rejection)),
        }
    }
}

/// Path parameters whose rejections are problem documents: 400
/// `BAD_REQUEST` for a segment that does not decode (invalid UTF-8 after
/// percent-decoding) or does not parse as `T`.
#[derive(Debug, Clone, Copy, Default)]
pub struct PathParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParams<T> {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &S,
    ) -> Result<Self, Problem> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(Problem::from(&rejection)),
        }
    }
}

/// Query parameters whose rejections are problem documents: 400
/// `BAD_REQUEST` for a query string that does not deserialise as `T` (a
/// parameter given twice, say). Handlers that want every bad value named in
/// a 422 read the parameters as strings and parse them themselves.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut http::request::Parts, _: &S) -> Result<Self, Problem> {
        match axum::extract::Query::<T>::try_from_uri(&parts.uri) {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(Problem::from(&rejection)),
        }
    }
}

impl From<&QueryRejection> for Problem {
    fn from(rejection: &QueryRejection) -> Self {
        Problem::new(rejection.status(), "BAD_REQUEST", rejection.body_text())
    }
}

impl From<&PathRejection> for Problem {
    fn from(rejection: &PathRejection) -> Self {
        Problem::new(rejection.status(), "BAD_REQUEST", rejection.body_text())
    }
}

impl From<&JsonRejection> for Problem {
    fn from(rejection: &JsonRejection) -> Self {
        let status = rejection.status();
        let code = match rejection {
            JsonRejection::JsonDataError(_) => "VALIDATION_FAILED",
            JsonRejection::JsonSyntaxError(_) => "MALFORMED_JSON",
            JsonRejection::MissingJsonContentType(_) => "UNSUPPORTED_MEDIA_TYPE",
            _ if status == StatusCode::PAYLOAD_TOO_LARGE => "PAYLOAD_TOO_LARGE",
            _ => "BAD_REQUEST",
        };
        Problem::new(status, code, rejection.body_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(12)), 12);
        assert_eq!(retry_after_secs(Duration::from_millis(11_001)), 12);
    }

    #[test]
    fn serializes_with_type_and_without_empty_errors() {
        let problem = Problem::new(StatusCode::CONFLICT, "EMAIL_TAKEN", "taken");
        let json = serde_json::to_value(&problem)
            .map_err(|e| e.to_string())
            .unwrap();
        assert_eq!(json["type"], "https://ferrishop.dev/problems/email-taken");
        assert_eq!(json["status"], 409);
        assert_eq!(json["title"], "Conflict");
        assert!(json.get("errors").is_none());
    }

    async fn body(content_type: &str, body: &'static str) -> Result<serde_json::Value, Problem> {
        let request = Request::post("/")
            .header(header::CONTENT_TYPE, content_type)
            .body(axum::body::Body::from(body))
            .map_err(|e| e.to_string())
            .unwrap();
        JsonBody::<serde_json::Value>::from_request(request, &())
            .await
            .map(|JsonBody(value)| value)
    }

    #[tokio::test]
    async fn json_body_rejections_are_problems_with_codes() {
        let broken = body("application/json", "{\"a\":").await.unwrap_err();
        assert_eq!(
            (broken.status, broken.code.as_str()),
            (400, "MALFORMED_JSON")
        );
        let untyped = body("text/plain", "{}").await.unwrap_err();
        assert_eq!(
            (untyped.status, untyped.code.as_str()),
            (415, "UNSUPPORTED_MEDIA_TYPE")
        );
        assert_eq!(body("application/json", "{\"a\":1}").await.unwrap()["a"], 1);
    }

    #[tokio::test]
    async fn path_rejections_are_problems() {
        let app = axum::Router::new().route(
            "/products/{id}",
            axum::routing::get(|PathParams(id): PathParams<String>| async move { id }),
        );
        let get = |uri: &'static str| {
            let app = app.clone();
            async move {
                let request = Request::get(uri)
                    .body(axum::body::Body::empty())
                    .map_err(|e| e.to_string())
                    .unwrap();
                tower::ServiceExt::oneshot(app, request)
                    .await
                    .map_err(|e| e.to_string())
                    .unwrap()
            }
        };
        let undecodable = get("/products/%FF").await;
        assert_eq!(undecodable.status(), StatusCode::BAD_REQUEST);
        assert_eq!(undecodable.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
        assert_eq!(get("/products/42").await.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn query_rejections_are_problems() {
        #[derive(serde::Deserialize)]
        struct Page {
            limit: Option<String>,
        }
        let read = |uri: &'static str| async move {
            let (mut parts, ()) = Request::get(uri)
                .body(())
                .map_err(|e| e.to_string())
                .unwrap()
                .into_parts();
            QueryParams::<Page>::from_request_parts(&mut parts, &())
                .await
                .map(|QueryParams(page)| page.limit)
        };
        let twice = read("/items?limit=5&limit=6").await.unwrap_err();
        assert_eq!((twice.status, twice.code.as_str()), (400, "BAD_REQUEST"));
        assert!(twice.detail.contains("limit"), "{twice:?}");
        assert_eq!(read("/items?limit=5").await.unwrap().as_deref(), Some("5"));
        assert_eq!(read("/items").await.unwrap(), None);
    }

    #[test]
    fn response_has_problem_content_type() {
        let response =
            Problem::validation(BTreeMap::from([("email".into(), "bad".into())])).into_response();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(response.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
    }
}
