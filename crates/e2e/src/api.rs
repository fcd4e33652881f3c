//! A REST client of the gateway as curl would use it, recording every
//! exchange so a test can check the bodies against the OpenAPI document
//! afterwards ([`crate::openapi`]).

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_TYPE, HeaderMap};
use reqwest::{Method, RequestBuilder};
use serde_json::Value;

/// One request and its answer.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub method: Method,
    /// The path, without the query.
    pub path: String,
    pub status: u16,
    /// The response's `Content-Type` without parameters.
    pub content_type: String,
    pub body: Value,
}

/// Where [`Api`] clients write their exchanges.
#[derive(Debug, Clone, Default)]
pub struct Recorder(Arc<Mutex<Vec<Exchange>>>);

impl Recorder {
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.0.lock().expect("recorder poisoned").clone()
    }

    pub fn clear(&self) {
        self.0.lock().expect("recorder poisoned").clear();
    }

    fn push(&self, exchange: Exchange) {
        self.0.lock().expect("recorder poisoned").push(exchange);
    }
}

/// A response as a test looks at it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    /// The body as JSON (`Null` when empty or not JSON).
    pub body: Value,
    /// The body as text.
    pub text: String,
    /// From sending the request to the last byte of the body.
    pub elapsed: Duration,
}

impl Reply {
    /// A header's value as text (empty when missing).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
    }

    /// The `Content-Type` without parameters.
    pub fn content_type(&self) -> &str {
        self.header(CONTENT_TYPE.as_str())
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
    }

    /// Asserts the reply is an RFC 9457 problem with `status` and `code`.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, code: &str) {
        self.assert_problem_status(status);
        assert_eq!(self.body["code"], code, "{self}");
    }

    /// Asserts the reply is an RFC 9457 problem with `status` and a `code`;
    /// returns the code.
    #[track_caller]
    pub fn assert_problem_status(&self, status: u16) -> &str {
        assert_eq!(self.status, status, "{self}");
        assert_eq!(
            self.content_type(),
            "application/problem+json",
            "a problem document: {self}"
        );
        assert_eq!(self.body["status"], status, "{self}");
        for member in ["type", "title", "detail"] {
            assert!(self.body[member].is_string(), "no {member}: {self}");
        }
        let code = self.body["code"].as_str().unwrap_or_default();
        assert!(!code.is_empty(), "no code: {self}");
        code
    }

    /// Asserts the reply is a 404 problem (`NOT_FOUND`, or a more specific
    /// `<THING>_NOT_FOUND`).
    #[track_caller]
    pub fn assert_not_found(&self) {
        let code = self.assert_problem_status(404);
        assert!(code.ends_with("NOT_FOUND"), "{self}");
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.text)
    }
}

/// A client of one base URL, optionally with a bearer token.
#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    recorder: Option<Recorder>,
}

impl Api {
    pub fn new(http: reqwest::Client, base: impl Into<String>) -> Self {
        Self {
            http,
            base: base.into(),
            token: None,
            recorder: None,
        }
    }

    /// The same client, sending `Authorization: Bearer <token>`.
    pub fn with_token(&self, token: &str) -> Self {
        Self {
            token: Some(token.to_owned()),
            ..self.clone()
        }
    }

    /// The same client, sending no token.
    pub fn anonymous(&self) -> Self {
        Self {
            token: None,
            ..self.clone()
        }
    }

    /// The same client, recording its exchanges in `recorder`.
    pub fn recording(self, recorder: Recorder) -> Self {
        Self {
            recorder: Some(recorder),
            ..self
        }
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A request to `path` (with the token, if any), to be finished by the
    /// caller and sent with [`Api::send`].
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        request
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.request(Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    /// POST with an `Idempotency-Key`.
    pub async fn post_idempotent(&self, path: &str, body: &Value, key: &str) -> Reply {
        self.send(
            self.request(Method::POST, path)
                .header("idempotency-key", key)
                .json(body),
        )
        .await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Reply {
        self.send(self.request(Method::PUT, path).json(body)).await
    }

    /// Sends a request and reads the whole answer.
    pub async fn send(&self, request: RequestBuilder) -> Reply {
        let request = request.build().expect("a valid request");
        let (method, path) = (request.method().clone(), request.url().path().to_owned());
        let started = Instant::now();
        let response = self
            .http
            .execute(request)
            .await
            .unwrap_or_else(|error| panic!("{method} {path}: {error}"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response
            .text()
            .await
            .unwrap_or_else(|error| panic!("{method} {path}: body: {error}"));
        let elapsed = started.elapsed();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        let reply = Reply {
            status,
            headers,
            body,
            text,
            elapsed,
        };
        if let Some(recorder) = &self.recorder {
            recorder.push(Exchange {
                method,
                path,
                status,
                content_type: reply.content_type().to_owned(),
                body: reply.body.clone(),
            });
        }
        reply
    }
}

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerEvent {
    /// The `event:` name (`message` when none is given).
    pub event: String,
    /// The `data:` lines, joined with newlines, as JSON (`Null` if not JSON).
    pub data: Value,
    /// When it arrived, counted from the request.
    pub at: Duration,
}

/// What a client following an event stream saw.
#[derive(Debug, Clone)]
pub struct EventStream {
    pub status: u16,
    pub content_type: String,
    pub events: Vec<ServerEvent>,
    /// Comment lines (`: ...`), e.g. heartbeats.
    pub comments: Vec<String>,
    /// The body of a non-stream answer (a problem document).
    pub body: Value,
    /// Whether the server ended the stream (rather than `within` passing).
    pub ended: bool,
}

impl Api {
    /// GETs `path` as an event stream and reads it until the server ends it
    /// or `within` passes, or `until` returns true for an event.
    pub async fn follow(
        &self,
        path: &str,
        within: Duration,
        until: impl Fn(&ServerEvent) -> bool,
    ) -> EventStream {
        use futures::StreamExt;

        let started = Instant::now();
        let response = self
            .request(Method::GET, path)
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap_or_else(|error| panic!("GET {path}: {error}"));
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned();
        let mut stream = EventStream {
            status,
            content_type,
            events: Vec::new(),
            comments: Vec::new(),
            body: Value::Null,
            ended: false,
        };
        if stream.content_type != "text/event-stream" {
            let text = response.text().await.unwrap_or_default();
            stream.body = serde_json::from_str(&text).unwrap_or(Value::Null);
            stream.ended = true;
            return stream;
        }
        let mut bytes = response.bytes_stream();
        let mut buffer = String::new();
        let deadline = started + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = match tokio::time::timeout(left, bytes.next()).await {
                Err(_) => return stream,
                Ok(None) => {
                    stream.ended = true;
                    return stream;
                }
                Ok(Some(Err(error))) => panic!("GET {path}: stream failed: {error}"),
                Ok(Some(Ok(chunk))) => chunk,
            };
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            let normalized = buffer.replace("\r\n", "\n");
            buffer = normalized;
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let mut event = "message".to_owned();
                let mut data = Vec::new();
                for line in block.lines() {
                    if let Some(comment) = line.strip_prefix(':') {
                        stream.comments.push(comment.trim().to_owned());
                    } else if let Some(name) = line.strip_prefix("event:") {
                        event = name.trim().to_owned();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push(value.strip_prefix(' ').unwrap_or(value).to_owned());
                    }
                }
                if data.is_empty() {
                    continue;
                }
                let event = ServerEvent {
                    event,
                    data: serde_json::from_str(&data.join("\n")).unwrap_or(Value::Null),
                    at: started.elapsed(),
                };
                let done = until(&event);
                stream.events.push(event);
                if done {
                    return stream;
                }
            }
        }
    }
}
