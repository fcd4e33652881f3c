//! An OTLP/gRPC trace receiver inside the test process, and the span trees
//! tests assert on.
//!
//! [`Collector::start`] serves the collector's `TraceService` (the tonic
//! server of the `opentelemetry-proto` crate) on a free loopback port; a
//! stack started with `OTEL_EXPORTER_OTLP_ENDPOINT` =
//! [`Collector::endpoint`] exports its spans there. Each span is kept with
//! its resource's `service.name`, so a [`Trace`] can be read as the
//! OpenTelemetry demo's trace-based tests read theirs: find spans by
//! (service, kind, name) — a [`Pattern`] — and check parent→child edges
//! between them.
//!
//! ```no_run
//! # async fn example() {
//! use e2e::otlp::{Collector, Kind, Pattern};
//! use e2e::stack::Stack;
//!
//! let collector = Collector::start().await;
//! let stack = Stack::builder()
//!     .env_all("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint())
//!     .env_all("OTEL_BSP_SCHEDULE_DELAY", "100")
//!     .start()
//!     .await;
//! // ... a request with a known trace ...
//! # let trace_id = String::new();
//! let trace = collector
//!     .wait_for_trace(&trace_id, std::time::Duration::from_secs(30), |trace| {
//!         trace.has_edge(
//!             &Pattern::new("gateway", Kind::Client, "PlaceOrder"),
//!             &Pattern::new("order", Kind::Server, "PlaceOrder"),
//!         )
//!     })
//!     .await;
//! # }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{span, status};
use serde_json::Value;
use tokio::sync::oneshot;

/// A span's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Unspecified,
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

impl Kind {
    fn from_proto(kind: i32) -> Self {
        match span::SpanKind::try_from(kind) {
            Ok(span::SpanKind::Internal) => Kind::Internal,
            Ok(span::SpanKind::Server) => Kind::Server,
            Ok(span::SpanKind::Client) => Kind::Client,
            Ok(span::SpanKind::Producer) => Kind::Producer,
            Ok(span::SpanKind::Consumer) => Kind::Consumer,
            _ => Kind::Unspecified,
        }
    }
}

/// A span's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Unset,
    Ok,
    Error(String),
}

/// One link of a span to another span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub trace_id: String,
    pub span_id: String,
}

/// One exported span, ids in lower-case hex.
#[derive(Debug, Clone)]
pub struct Span {
    /// `service.name` of the resource that exported it.
    pub service: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    pub kind: Kind,
    pub attributes: BTreeMap<String, Value>,
    pub status: Status,
    /// Names of the span's events (`exception`, ...).
    pub events: Vec<String>,
    pub links: Vec<Link>,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
}

impl Span {
    /// An attribute as text (strings unquoted), if the span has it.
    pub fn attribute(&self, key: &str) -> Option<String> {
        self.attributes.get(key).map(|value| match value {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        })
    }

    pub fn is_error(&self) -> bool {
        matches!(self.status, Status::Error(_))
    }
}

/// Attributes a tree line shows: what tells apart spans of one name.
const SHOWN_ATTRIBUTES: [&str; 4] = [
    "saga.step",
    "saga.phase",
    "saga.outcome",
    "messaging.system",
];

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?} {:?}", self.service, self.kind, self.name)?;
        for key in SHOWN_ATTRIBUTES {
            if let Some(value) = self.attribute(key) {
                write!(f, " {key}={value}")?;
            }
        }
        if let Status::Error(message) = &self.status {
            write!(f, " ERROR({message})")?;
        }
        if !self.links.is_empty() {
            let links: Vec<String> = self
                .links
                .iter()
                .map(|link| format!("{}/{}", link.trace_id, link.span_id))
                .collect();
            write!(f, " links={links:?}")?;
        }
        Ok(())
    }
}

/// Which spans a check is about: a service, a kind, and a name that contains
/// `name` (span names carry routes and method names: `POST /api/v1/orders`,
/// `ferrishop.inventory.v1.InventoryService/ReserveStock`), optionally with
/// attributes of given values.
#[derive(Debug, Clone)]
pub struct Pattern {
    pub service: String,
    pub kind: Kind,
    pub name: String,
    pub attributes: Vec<(String, String)>,
}

impl Pattern {
    pub fn new(service: &str, kind: Kind, name: &str) -> Self {
        Self {
            service: service.to_owned(),
            kind,
            name: name.to_owned(),
            attributes: Vec::new(),
        }
    }

    /// Also requires `key` = `value`.
    pub fn with(mut self, key: &str, value: &str) -> Self {
        self.attributes.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn matches(&self, span: &Span) -> bool {
        span.service == self.service
            && span.kind == self.kind
            && span.name.contains(&self.name)
            && self
                .attributes
                .iter()
                .all(|(key, value)| span.attribute(key).as_deref() == Some(value.as_str()))
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?} *{}*", self.service, self.kind, self.name)?;
        for (key, value) in &self.attributes {
            write!(f, " {key}={value}")?;
        }
        Ok(())
    }
}

/// The spans of one trace.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    pub trace_id: String,
    pub spans: Vec<Span>,
}

impl Trace {
    /// The spans `pattern` matches.
    pub fn find(&self, pattern: &Pattern) -> Vec<&Span> {
        self.spans
            .iter()
            .filter(|span| pattern.matches(span))
            .collect()
    }

    /// The span with this id.
    pub fn span(&self, span_id: &str) -> Option<&Span> {
        self.spans.iter().find(|span| span.span_id == span_id)
    }

    /// `span`'s parent, if it is in the trace.
    pub fn parent(&self, span: &Span) -> Option<&Span> {
        self.span(&span.parent_span_id)
    }

    /// `span`'s children.
    pub fn children(&self, span: &Span) -> Vec<&Span> {
        self.spans
            .iter()
            .filter(|child| child.parent_span_id == span.span_id)
            .collect()
    }

    /// Whether a span matching `child` has a parent matching `parent`.
    pub fn has_edge(&self, parent: &Pattern, child: &Pattern) -> bool {
        self.edges(parent, child).next().is_some()
    }

    /// Every (parent, child) pair matching the patterns.
    pub fn edges<'a>(
        &'a self,
        parent: &'a Pattern,
        child: &'a Pattern,
    ) -> impl Iterator<Item = (&'a Span, &'a Span)> + 'a {
        self.spans
            .iter()
            .filter(|span| child.matches(span))
            .filter_map(|span| Some((self.parent(span)?, span)))
            .filter(|(up, _)| parent.matches(up))
    }

    /// Whether a span matching `descendant` sits anywhere below one matching
    /// `ancestor`.
    pub fn has_descendant(&self, ancestor: &Pattern, descendant: &Pattern) -> bool {
        self.spans
            .iter()
            .filter(|span| descendant.matches(span))
            .any(|span| self.ancestors(span).any(|up| ancestor.matches(up)))
    }

    /// `span`'s parent, its parent's parent, ... as far as the trace has
    /// them.
    pub fn ancestors<'a>(&'a self, span: &'a Span) -> impl Iterator<Item = &'a Span> + 'a {
        let mut next = self.parent(span);
        let mut seen = 0;
        std::iter::from_fn(move || {
            let current = next?;
            seen += 1;
            // A malformed trace could loop; no real one is this deep.
            next = if seen < 1_000 {
                self.parent(current)
            } else {
                None
            };
            Some(current)
        })
    }

    /// The trace as an indented tree, roots first, for failure messages.
    /// Spans whose parent was not exported show as roots marked `^`.
    pub fn tree(&self) -> String {
        let mut spans: Vec<&Span> = self.spans.iter().collect();
        spans.sort_by_key(|span| span.start_unix_nano);
        let mut out = String::new();
        for root in spans
            .iter()
            .filter(|span| self.parent(span).is_none())
            .copied()
        {
            let marker = if root.parent_span_id.is_empty() {
                ""
            } else {
                "^"
            };
            self.write_tree(&mut out, root, 0, marker, &spans);
        }
        out
    }

    fn write_tree(&self, out: &mut String, span: &Span, depth: usize, marker: &str, all: &[&Span]) {
        out.push_str(&format!("{}{marker}{span}\n", "  ".repeat(depth)));
        if depth > 64 {
            return;
        }
        for child in all.iter().filter(|c| c.parent_span_id == span.span_id) {
            self.write_tree(out, child, depth + 1, "", all);
        }
    }
}

/// The receiver; stops serving when dropped.
#[derive(Debug)]
pub struct Collector {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Span>>>,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Collector {
    /// Serves OTLP/gRPC on a free loopback port.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the OTLP receiver");
        let addr = listener.local_addr().expect("the receiver's address");
        let spans = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = oneshot::channel::<()>();
        let service = TraceServiceServer::new(Receiver {
            spans: spans.clone(),
        })
        // Batches of a busy service can be large.
        .max_decoding_message_size(64 * 1024 * 1024);
        tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener),
                    async {
                        let _ = stopped.await;
                    },
                )
                .await;
            if let Err(error) = served {
                eprintln!("OTLP receiver: {error}");
            }
        });
        Self {
            addr,
            spans,
            stop: Some(stop),
        }
    }

    /// `http://127.0.0.1:<port>`, for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.spans.lock().expect("span list").clone()
    }

    /// The spans of `trace_id` received so far.
    pub fn trace(&self, trace_id: &str) -> Trace {
        Trace {
            trace_id: trace_id.to_owned(),
            spans: self
                .spans
                .lock()
                .expect("span list")
                .iter()
                .filter(|span| span.trace_id == trace_id)
                .cloned()
                .collect(),
        }
    }

    /// Polls until `found` returns something from the spans received;
    /// panics after `within` with what did arrive.
    pub async fn wait_for<T>(
        &self,
        within: Duration,
        what: &str,
        mut found: impl FnMut(&[Span]) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + within;
        loop {
            let spans = self.spans();
            if let Some(found) = found(&spans) {
                return found;
            }
            if Instant::now() >= deadline {
                let all = Trace {
                    trace_id: String::new(),
                    spans,
                };
                panic!(
                    "no {what} among the spans received within {within:?}:\n{}",
                    all.tree()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls the spans of `trace_id` until `complete` says the trace is;
    /// panics after `within` with the tree that did arrive.
    pub async fn wait_for_trace(
        &self,
        trace_id: &str,
        within: Duration,
        mut complete: impl FnMut(&Trace) -> bool,
    ) -> Trace {
        let deadline = Instant::now() + within;
        loop {
            let trace = self.trace(trace_id);
            if complete(&trace) {
                return trace;
            }
            if Instant::now() >= deadline {
                panic!(
                    "trace {trace_id} incomplete after {within:?}:\n{}",
                    trace.tree()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let resource = resource_spans
                .resource
                .map(|resource| attributes(&resource.attributes))
                .unwrap_or_default();
            let service = resource
                .get("service.name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            for scope_spans in resource_spans.scope_spans {
                for span in scope_spans.spans {
                    received.push(convert(&service, span));
                }
            }
        }
        self.spans
            .lock()
            .map_err(|_| tonic::Status::internal("span list poisoned"))?
            .extend(received);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn convert(service: &str, span: opentelemetry_proto::tonic::trace::v1::Span) -> Span {
    let status = match span.status {
        Some(status) => match status::StatusCode::try_from(status.code) {
            Ok(status::StatusCode::Error) => Status::Error(status.message),
            Ok(status::StatusCode::Ok) => Status::Ok,
            _ => Status::Unset,
        },
        None => Status::Unset,
    };
    Span {
        service: service.to_owned(),
        trace_id: hex(&span.trace_id),
        span_id: hex(&span.span_id),
        parent_span_id: hex(&span.parent_span_id),
        name: span.name,
        kind: Kind::from_proto(span.kind),
        attributes: attributes(&span.attributes),
        status,
        events: span.events.into_iter().map(|event| event.name).collect(),
        links: span
            .links
            .into_iter()
            .map(|link| Link {
                trace_id: hex(&link.trace_id),
                span_id: hex(&link.span_id),
            })
            .collect(),
        start_unix_nano: span.start_time_unix_nano,
        end_unix_nano: span.end_time_unix_nano,
    }
}

fn attributes(pairs: &[KeyValue]) -> BTreeMap<String, Value> {
    pairs
        .iter()
        .map(|pair| (pair.key.clone(), value(pair.value.as_ref())))
        .collect()
}

fn value(any: Option<&AnyValue>) -> Value {
    match any.and_then(|any| any.value.as_ref()) {
        None => Value::Null,
        Some(any_value::Value::StringValue(text)) => Value::String(text.clone()),
        Some(any_value::Value::BoolValue(flag)) => Value::Bool(*flag),
        Some(any_value::Value::IntValue(number)) => Value::from(*number),
        Some(any_value::Value::DoubleValue(number)) => Value::from(*number),
        Some(any_value::Value::BytesValue(bytes)) => Value::String(hex(bytes)),
        Some(any_value::Value::ArrayValue(array)) => {
            Value::Array(array.values.iter().map(|item| value(Some(item))).collect())
        }
        Some(any_value::Value::KvlistValue(list)) => {
            Value::Object(attributes(&list.values).into_iter().collect())
        }
        #[allow(unreachable_patterns)]
        Some(_) => Value::Null,
    }
}

/// Lower-case hex, as W3C `traceparent` writes ids.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(service: &str, id: &str, parent: &str, kind: Kind, name: &str) -> Span {
        Span {
            service: service.into(),
            trace_id: "t".into(),
            span_id: id.into(),
            parent_span_id: parent.into(),
            name: name.into(),
            kind,
            attributes: BTreeMap::new(),
            status: Status::Unset,
            events: Vec::new(),
            links: Vec::new(),
            start_unix_nano: 0,
            end_unix_nano: 0,
        }
    }

    #[test]
    fn edges_and_descendants_follow_parent_ids() {
        let trace = Trace {
            trace_id: "t".into(),
            spans: vec![
                span("gateway", "a", "", Kind::Server, "POST /api/v1/orders"),
                span("gateway", "b", "a", Kind::Client, "OrderService/PlaceOrder"),
                span("order", "c", "b", Kind::Server, "OrderService/PlaceOrder"),
                span("order", "d", "c", Kind::Internal, "saga.step"),
                span("order", "e", "gone", Kind::Internal, "orphan"),
            ],
        };
        let gateway = Pattern::new("gateway", Kind::Client, "PlaceOrder");
        let order = Pattern::new("order", Kind::Server, "PlaceOrder");
        assert!(trace.has_edge(&gateway, &order));
        assert!(!trace.has_edge(&order, &gateway));
        let step = Pattern::new("order", Kind::Internal, "saga.step");
        let edge = Pattern::new("gateway", Kind::Server, "POST");
        assert!(trace.has_descendant(&edge, &step));
        assert!(!trace.has_edge(&edge, &step));
        let tree = trace.tree();
        assert!(tree.starts_with("gateway Server \"POST /api/v1/orders\"\n  gateway Client"));
        assert!(tree.contains("^order Internal \"orphan\""), "{tree}");
    }

    #[test]
    fn ids_are_lower_case_hex() {
        assert_eq!(hex(&[0x0a, 0xff, 0x00]), "0aff00");
    }

    #[tokio::test]
    async fn exported_spans_arrive_with_their_service() {
        use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
        use opentelemetry_proto::tonic::resource::v1::Resource;
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};

        let collector = Collector::start().await;
        let mut client = TraceServiceClient::connect(collector.endpoint())
            .await
            .unwrap();
        let string = |key: &str, text: &str| KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(text.into())),
            }),
            ..Default::default()
        };
        let exported = opentelemetry_proto::tonic::trace::v1::Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            name: "GET /x".into(),
            kind: span::SpanKind::Server as i32,
            attributes: vec![string("http.route", "/x")],
            status: Some(opentelemetry_proto::tonic::trace::v1::Status {
                message: "boom".into(),
                code: status::StatusCode::Error as i32,
            }),
            ..Default::default()
        };
        client
            .export(ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![string("service.name", "user")],
                        ..Default::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        spans: vec![exported],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            })
            .await
            .unwrap();
        let trace = collector.trace(&"01".repeat(16));
        assert_eq!(trace.spans.len(), 1);
        let received = &trace.spans[0];
        assert_eq!(received.service, "user");
        assert_eq!(received.span_id, "0202020202020202");
        assert_eq!(received.parent_span_id, "");
        assert_eq!(received.kind, Kind::Server);
        assert_eq!(received.attribute("http.route").as_deref(), Some("/x"));
        assert_eq!(received.status, Status::Error("boom".into()));
    }
}
