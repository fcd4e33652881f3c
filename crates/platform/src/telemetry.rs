//! Logs and traces.
//!
//! Every span has OpenTelemetry ids, whether or not traces are exported:
//! incoming `traceparent` headers are continued, outgoing calls carry one, and
//! every JSON log line names the `trace_id`/`span_id` it was written under, so
//! logs and traces join up even on a laptop with no collector running.
//! Traces are exported over OTLP/gRPC to `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (`http://127.0.0.1:4317` unless set, as the SDK specification has it),
//! where tracing-opentelemetry builds each span for the exporter;
//! `OTEL_TRACES_EXPORTER=none` switches exporting off, and spans then get
//! their ids alone (the `ids` module). Code reads and continues a span's
//! trace through [`SpanTrace`], the same either way.
//!
//! `RUST_LOG` says which events are written (and become span events), not
//! which spans exist: spans at `info` and above are traced whatever it says
//! (`Verbosity`), so quieting the logs (`RUST_LOG=warn`) neither switches
//! tracing off nor takes the trace ids off the lines that remain.

use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::sync::OnceLock;
use std::time::Duration;

use clap::{Args, ValueEnum};
use opentelemetry::Context as TraceContext;
use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry::trace::{SpanContext, TraceContextExt, TracerProvider as _};
use opentelemetry::{KeyValue, global};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::BaggagePropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use serde_json::{Map, Value};
use tracing::dispatcher::WeakDispatch;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Dispatch, Event, Level, Metadata, Subscriber};
use tracing_opentelemetry::{OpenTelemetrySpanExt, SetParentError};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Filter, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

pub(crate) mod ids;

/// Logging and tracing settings. The `OTEL_*` names are the OpenTelemetry
/// SDK's standard variables.
#[derive(Debug, Clone, Args)]
pub struct TelemetryArgs {
    /// Log filter directives (tracing-subscriber `EnvFilter` syntax): which
    /// events are logged. Spans at `info` and above are traced whatever it
    /// says; it can add more verbose ones.
    #[arg(
        long = "log-filter",
        env = "RUST_LOG",
        default_value = "info,sqlx=warn",
        value_parser = log_filter
    )]
    pub log_filter: String,

    /// `json` (one JSON object per line) or `pretty` (for humans).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,

    /// OTLP/gRPC collector endpoint traces are exported to.
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_ENDPOINT",
        default_value = "http://127.0.0.1:4317",
        value_parser = otlp_endpoint
    )]
    pub otlp_endpoint: String,

    /// `otlp` exports traces to the endpoint; `none` does not (spans still
    /// get trace ids, which log lines and outgoing calls carry).
    #[arg(long, env = "OTEL_TRACES_EXPORTER", value_enum, default_value_t = TracesExporter::Otlp)]
    pub traces_exporter: TracesExporter,

    /// Overrides the `service.name` resource attribute (default: the binary).
    #[arg(long, env = "OTEL_SERVICE_NAME")]
    pub service_name: Option<String>,

    /// Sampler, as in the OpenTelemetry SDK specification.
    #[arg(long, env = "OTEL_TRACES_SAMPLER", value_enum, default_value_t = SamplerKind::ParentbasedAlwaysOn)]
    pub sampler: SamplerKind,

    /// Ratio for the `traceidratio` samplers (0.0..=1.0).
    #[arg(long, env = "OTEL_TRACES_SAMPLER_ARG", default_value_t = 1.0, value_parser = ratio)]
    pub sampler_arg: f64,
}

/// `RUST_LOG`, read as [`init`] reads it, so that a bad directive stops
/// the binary with the configuration's exit code.
fn log_filter(text: &str) -> Result<String, String> {
    EnvFilter::try_new(text)
        .map(|_| text.to_owned())
        .map_err(|error| error.to_string())
}

/// An `http://` or `https://` URL with a host.
fn otlp_endpoint(text: &str) -> Result<String, String> {
    let uri: http::Uri = text
        .trim()
        .parse()
        .map_err(|error| format!("not a URL: {error}"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(host)) if !host.is_empty() => Ok(text.trim().to_owned()),
        _ => Err(
            "expected an http:// or https:// URL with a host, like http://127.0.0.1:4317"
                .to_owned(),
        ),
    }
}

fn ratio(text: &str) -> Result<f64, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|ratio| (0.0..=1.0).contains(ratio))
        .ok_or_else(|| "expected a number from 0 to 1".to_owned())
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// The `OTEL_TRACES_EXPORTER` values this platform knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TracesExporter {
    Otlp,
    #[value(name = "none")]
    Off,
}

/// The `OTEL_TRACES_SAMPLER` values of the SDK specification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum SamplerKind {
    AlwaysOn,
    AlwaysOff,
    Traceidratio,
    ParentbasedAlwaysOn,
    ParentbasedAlwaysOff,
    ParentbasedTraceidratio,
}

impl SamplerKind {
    fn sampler(self, ratio: f64) -> Sampler {
        match self.root_sampler(ratio) {
            (root, true) => Sampler::ParentBased(Box::new(root)),
            (root, false) => root,
        }
    }

    /// The sampler of a span with no parent, and whether a span with one
    /// takes its parent's decision instead.
    fn root_sampler(self, ratio: f64) -> (Sampler, bool) {
        match self {
            Self::AlwaysOn => (Sampler::AlwaysOn, false),
            Self::AlwaysOff => (Sampler::AlwaysOff, false),
            Self::Traceidratio => (Sampler::TraceIdRatioBased(ratio), false),
            Self::ParentbasedAlwaysOn => (Sampler::AlwaysOn, true),
            Self::ParentbasedAlwaysOff => (Sampler::AlwaysOff, true),
            Self::ParentbasedTraceidratio => (Sampler::TraceIdRatioBased(ratio), true),
        }
    }
}

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("RUST_LOG: {0}")]
    Filter(#[from] tracing_subscriber::filter::ParseError),
    #[error("OTEL_EXPORTER_OTLP_ENDPOINT: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("a global tracing subscriber is already installed: {0}")]
    AlreadyInstalled(#[from] tracing_subscriber::util::TryInitError),
}

/// Owns the tracer provider, when traces are exported;
/// [`Telemetry::shutdown`] flushes pending spans.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Telemetry")
    }
}

/// Installs the global subscriber, tracer provider and W3C propagators.
pub fn init(binary: &'static str, args: &TelemetryArgs) -> Result<Telemetry, TelemetryError> {
    global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
        Box::new(crate::propagation::TraceContext::new()),
        Box::new(BaggagePropagator::new()),
    ]));
    let verbosity = Verbosity::new(&args.log_filter)?;
    let (traces, provider) = match args.traces_exporter {
        TracesExporter::Otlp => {
            let service_name = args
                .service_name
                .clone()
                .unwrap_or_else(|| binary.to_owned());
            let resource = Resource::builder()
                .with_service_name(service_name)
                .with_attributes([
                    KeyValue::new("service.namespace", "ferrishop"),
                    KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
                ])
                .build();
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(args.otlp_endpoint.clone())
                .with_timeout(Duration::from_secs(5))
                .build()?;
            let provider = SdkTracerProvider::builder()
                .with_resource(resource)
                .with_sampler(args.sampler.sampler(args.sampler_arg))
                .with_batch_exporter(exporter)
                .build();
            global::set_tracer_provider(provider.clone());
            // What tracing-opentelemetry adds to a span besides its fields
            // (busy/idle time, a clock read at each enter and exit, and a
            // span is entered at each poll of its future; the thread; the
            // source location) is for the exporter to show. A span's
            // OpenTelemetry context is not made the current one while it is
            // entered (at every poll): everything here asks the span for it
            // ([`SpanTrace`]), and log lines take theirs from the span they
            // are written in ([`JsonLines`]).
            let layer = tracing_opentelemetry::layer()
                .with_tracer(provider.tracer(binary))
                .with_context_activation(false)
                .boxed();
            (layer, Some(provider))
        }
        TracesExporter::Off => (
            ids::SpanIds::new(args.sampler, args.sampler_arg).boxed(),
            None,
        ),
    };
    let logs = match args.log_format {
        LogFormat::Json => JsonLines::new(binary, std::io::stdout).boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer().boxed(),
    };
    tracing_subscriber::registry()
        .with(traces.and_then(logs).with_filter(verbosity))
        .try_init()?;
    Ok(Telemetry { provider })
}

/// What the telemetry layers see: every span at `info` or above, and the
/// spans and events `RUST_LOG` enables. A filter of the layers rather than a
/// global one, and spans kept apart from events, so that a quieter log does
/// not turn tracing off.
struct Verbosity {
    log: EnvFilter,
    /// Whether the log filter has span-scoped directives
    /// (`[span{field=value}]=level`), the only ones that follow spans as
    /// they open, record, enter, exit and close: each of those is a lock and
    /// a lookup in the filter, several times per request.
    follows_spans: bool,
}

/// The least severe level of the spans traced whatever the log filter says.
const TRACED_SPANS: Level = Level::INFO;

impl Verbosity {
    /// The filter of the log directives `directives` (`RUST_LOG`).
    fn new(directives: &str) -> Result<Self, tracing_subscriber::filter::ParseError> {
        Ok(Self {
            log: EnvFilter::try_new(directives)?,
            // A span scope is written in brackets, and nothing else is.
            follows_spans: directives.contains('['),
        })
    }

    fn always_traced(metadata: &Metadata<'_>) -> bool {
        metadata.is_span() && *metadata.level() <= TRACED_SPANS
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Filter<S> for Verbosity {
    fn enabled(&self, metadata: &Metadata<'_>, cx: &Context<'_, S>) -> bool {
        Self::always_traced(metadata) || Filter::enabled(&self.log, metadata, cx)
    }

    fn callsite_enabled(&self, metadata: &'static Metadata<'static>) -> Interest {
        // The log filter is asked about every callsite, even a span traced
        // anyway: asking is how it learns the spans its span-scoped
        // directives name.
        let log = Filter::<S>::callsite_enabled(&self.log, metadata);
        if log.is_never() && !Self::always_traced(metadata) {
            return log;
        }
        // Never `always`: tracing-subscriber hands a per-layer filter's
        // verdict to the layer through a thread-local that `enabled`
        // refreshes, and a callsite cached as `always` skips `enabled`, so
        // the layer reads whatever was asked last (sqlx's `log_enabled!`
        // leaves a "no") and drops the event (tokio-rs/tracing#2519).
        Interest::sometimes()
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        let log = Filter::<S>::max_level_hint(&self.log)?;
        Some(log.max(LevelFilter::from_level(TRACED_SPANS)))
    }

    // The log filter's span-scoped directives (`[span{field=value}]`)
    // follow the spans through these.
    fn on_new_span(&self, attributes: &Attributes<'_>, id: &Id, cx: Context<'_, S>) {
        if self.follows_spans {
            Filter::on_new_span(&self.log, attributes, id, cx);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, cx: Context<'_, S>) {
        if self.follows_spans {
            Filter::on_record(&self.log, id, values, cx);
        }
    }

    fn on_enter(&self, id: &Id, cx: Context<'_, S>) {
        if self.follows_spans {
            Filter::on_enter(&self.log, id, cx);
        }
    }

    fn on_exit(&self, id: &Id, cx: Context<'_, S>) {
        if self.follows_spans {
            Filter::on_exit(&self.log, id, cx);
        }
    }

    fn on_close(&self, id: Id, cx: Context<'_, S>) {
        if self.follows_spans {
            Filter::<S>::on_close(&self.log, id, cx);
        }
    }
}

impl Telemetry {
    /// Flushes and stops the exporter; spans ended after this are dropped.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            eprintln!("telemetry shutdown: {error}");
        }
    }
}

/// The JSON log lines: one object per event, written to `writer` — time,
/// level, target, message and fields, the fields of the enclosing spans
/// (request id, user id, ...) and the OpenTelemetry ids of the innermost
/// span.
///
/// A layer of its own rather than a format for tracing-subscriber's fmt
/// layer, whose JSON formatter keeps each span's fields as a JSON string:
/// formatted when the span opens, parsed and formatted again at each
/// `span.record`, whether or not a line is ever written in the span (and a
/// request's spans record their status, the caller, the request id...).
/// Here a span's fields are kept as values ([`FieldValues`]), and only a
/// line being written turns them into JSON.
struct JsonLines<W> {
    service: &'static str,
    writer: W,
    /// The subscriber this layer is part of, to ask the OpenTelemetry layer
    /// for a span's context.
    dispatch: OnceLock<WeakDispatch>,
}

impl<W> JsonLines<W> {
    fn new(service: &'static str, writer: W) -> Self {
        Self {
            service,
            writer,
            dispatch: OnceLock::new(),
        }
    }

    /// The trace and span ids of `span` (the OpenTelemetry layer's), if it
    /// has valid ones.
    fn ids(&self, span: &Id) -> Option<(String, String)> {
        let dispatch = self.dispatch.get()?.upgrade()?;
        let span_context = span_context(span, &dispatch)?;
        span_context.is_valid().then(|| {
            (
                span_context.trace_id().to_string(),
                span_context.span_id().to_string(),
            )
        })
    }
}

/// The OpenTelemetry span context of the tracing span `id` of `dispatch`,
/// if it is traced.
pub(crate) fn span_context(id: &Id, dispatch: &Dispatch) -> Option<SpanContext> {
    if let Some(ids) = ids::of(id, dispatch) {
        return Some(ids);
    }
    let context = tracing_opentelemetry::get_otel_context(id, dispatch)?;
    Some(context.span().span_context().clone())
}

/// A span's place in its trace, whichever layer gave it its ids: the
/// OpenTelemetry layer when traces are exported, the `ids` module's when not.
pub trait SpanTrace {
    /// The span's OpenTelemetry context, to propagate (`traceparent`) or
    /// link to; one with no valid span when the span is not traced.
    fn trace_context(&self) -> TraceContext;

    /// Continues `parent`'s trace (a caller's context, extracted from a
    /// request or a message): the span becomes its child, or a root when
    /// `parent` holds no valid span. Call it before the span's context is
    /// read or a child span opened.
    fn continue_trace(&self, parent: TraceContext) -> Result<(), SetParentError>;
}

impl SpanTrace for tracing::Span {
    fn trace_context(&self) -> TraceContext {
        match self
            .with_subscriber(|(id, dispatch)| ids::of(id, dispatch))
            .flatten()
        {
            Some(ids) => TraceContext::new().with_remote_span_context(ids),
            None => OpenTelemetrySpanExt::context(self),
        }
    }

    fn continue_trace(&self, parent: TraceContext) -> Result<(), SetParentError> {
        let continued = self
            .with_subscriber(|(id, dispatch)| ids::continue_trace(id, dispatch, &parent))
            .flatten();
        match continued {
            Some(()) => Ok(()),
            None => OpenTelemetrySpanExt::set_parent(self, parent),
        }
    }
}

/// `parts` one after the other, in a string of just their length: for the
/// span fields made on every request (names, URLs), where `format!` costs
/// more than the copies.
pub(crate) fn concat(parts: &[&str]) -> String {
    let mut text = String::with_capacity(parts.iter().map(|part| part.len()).sum());
    for part in parts {
        text.push_str(part);
    }
    text
}

/// The fields of one span, as [`JsonLines`] keeps them: numbers and flags
/// as values, the text of every other field in one buffer the span owns (a
/// request's span opens with some ten fields, most of them text: one
/// allocation for them all rather than one each).
#[derive(Debug, Default)]
struct FieldValues {
    /// Each field's index in its span's field set (unique within the span,
    /// and cheaper to compare than its name), name and value.
    fields: Vec<(usize, &'static str, FieldValue)>,
    text: String,
}

/// One field's value: a value, or a slice of [`FieldValues::text`].
#[derive(Debug)]
enum FieldValue {
    Value(Value),
    Text { start: usize, end: usize },
}

impl FieldValues {
    /// Room for every field a span declares: its values are pushed as it
    /// opens, and set as it records (once each, mostly).
    fn with_capacity(fields: usize) -> Self {
        Self {
            fields: Vec::with_capacity(fields),
            text: String::with_capacity(TEXT_PER_FIELD * fields),
        }
    }

    fn set(&mut self, field: &Field, value: FieldValue) {
        let index = field.index();
        match self.fields.iter_mut().find(|(kept, _, _)| *kept == index) {
            Some((_, _, current)) => *current = value,
            None => self.fields.push((index, field_name(field), value)),
        }
    }

    /// Sets `field` to the text `write` appends to the buffer. A value it
    /// replaces stays in the buffer, unread, until the span closes.
    fn set_text(&mut self, field: &Field, write: impl FnOnce(&mut String)) {
        let start = self.text.len();
        write(&mut self.text);
        let end = self.text.len();
        self.set(field, FieldValue::Text { start, end });
    }

    /// Each field with its value, as a log line shows it.
    fn json(&self) -> impl Iterator<Item = (String, Value)> + '_ {
        self.fields.iter().map(|(_, name, value)| {
            let value = match value {
                FieldValue::Value(value) => value.clone(),
                FieldValue::Text { start, end } => {
                    Value::String(self.text.get(*start..*end).unwrap_or_default().to_owned())
                }
            };
            ((*name).to_owned(), value)
        })
    }
}

/// Bytes of text [`FieldValues`] makes room for per declared field, as
/// the span opens: enough for a request's span (its method, route, URL,
/// address...) without growing.
const TEXT_PER_FIELD: usize = 16;

impl<S, W> Layer<S> for JsonLines<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        let _ = self.dispatch.set(subscriber.downgrade());
    }

    fn on_new_span(&self, attributes: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut values = FieldValues::with_capacity(attributes.fields().len());
            attributes.record(&mut SpanFieldVisitor(&mut values));
            span.extensions_mut().insert(values);
        }
    }

    fn on_record(&self, id: &Id, record: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(values) = span.extensions_mut().get_mut::<FieldValues>()
        {
            record.record(&mut SpanFieldVisitor(values));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let metadata = event.metadata();
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .into(),
        );
        line.insert("level".into(), metadata.level().as_str().into());
        line.insert("service".into(), self.service.into());
        line.insert("target".into(), metadata.target().into());

        let mut span_fields = Map::new();
        let mut innermost = None;
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(values) = span.extensions().get::<FieldValues>() {
                    span_fields.extend(values.json());
                }
                innermost = Some((span.id(), span.name()));
            }
        }
        if let Some((id, name)) = innermost {
            line.insert("span".into(), name.into());
            // No span's extensions are borrowed here: the OpenTelemetry
            // layer locks them.
            if let Some((trace_id, span_id)) = self.ids(&id) {
                line.insert("trace_id".into(), trace_id.into());
                line.insert("span_id".into(), span_id.into());
            }
        }
        line.extend(span_fields);
        event.record(&mut JsonVisitor(&mut line));
        let mut text = Value::Object(line).to_string();
        text.push('\n');
        let _ = self
            .writer
            .make_writer_for(metadata)
            .write_all(text.as_bytes());
    }
}

/// A span field's value as tracing-subscriber's JSON formatter renders it.
struct SpanFieldVisitor<'a>(&'a mut FieldValues);

impl Visit for SpanFieldVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.set_text(field, |text| {
            // Writing to a String fails only if `Debug` does.
            let _ = write!(text, "{value:?}");
        });
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.set_text(field, |text| text.push_str(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.set(field, FieldValue::Value(value.into()));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.set(field, FieldValue::Value(value.into()));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.set(field, FieldValue::Value(value.into()));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.set(field, FieldValue::Value(value.into()));
    }
    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        self.0.set(field, FieldValue::Value(value.into()));
    }
}

/// A field's name as a log line shows it: a raw identifier without its `r#`.
fn field_name(field: &Field) -> &'static str {
    let name = field.name();
    name.strip_prefix("r#").unwrap_or(name)
}

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Log lines written to memory.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Lines {
        fn json(&self) -> Vec<Value> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect()
        }
    }

    #[test]
    fn lines_carry_the_fields_of_their_spans_as_recorded_by_then() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber =
            tracing_subscriber::registry().with(JsonLines::new("test", move || writer.clone()));
        // Longer than the room a span's text is given as it opens.
        let url = format!("http://user:8082/{}", "a".repeat(200));
        tracing::subscriber::with_default(subscriber, || {
            let request = tracing::info_span!(
                "request",
                method = "GET",
                url = url.as_str(),
                status = tracing::field::Empty,
                user_id = tracing::field::Empty,
                attempt = 1_u64,
            );
            let _request = request.enter();
            tracing::info!("before");
            request.record("user_id", tracing::field::display("u-7"));
            request.record("method", "POST");
            request.record("status", 200_i64);
            request.record("attempt", 2_u64);
            let call = tracing::info_span!("call", upstream = "user", attempt = 3_u64);
            let _call = call.enter();
            tracing::info!(r#type = "late", ok = true, "inside");
        });
        let lines = lines.json();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[0]["message"], "before");
        assert_eq!(lines[0]["method"], "GET");
        assert_eq!(lines[0]["attempt"], 1);
        assert!(lines[0].get("status").is_none(), "{}", lines[0]);
        assert!(lines[0].get("user_id").is_none(), "{}", lines[0]);
        let inside = &lines[1];
        assert_eq!(inside["message"], "inside");
        assert_eq!(inside["service"], "test");
        assert_eq!(inside["span"], "call");
        assert_eq!(inside["method"], "POST");
        assert_eq!(inside["url"], url);
        assert_eq!(inside["user_id"], "u-7");
        assert_eq!(inside["status"], 200);
        // The innermost span's value wins, the event's own fields over all.
        assert_eq!(inside["attempt"], 3);
        assert_eq!(inside["upstream"], "user");
        assert_eq!(inside["ok"], true);
    }

    /// With traces exported (the OpenTelemetry layer) or not ([`ids`]):
    /// [`crate::test_support::trace_layers`].
    #[test]
    fn lines_name_the_trace_and_span_they_were_written_in() {
        for traces in crate::test_support::trace_layers() {
            let lines = Lines::default();
            let writer = lines.clone();
            let subscriber = tracing_subscriber::registry()
                .with(traces.and_then(JsonLines::new("test", move || writer.clone())));
            let (outer_ids, inner_ids) = tracing::subscriber::with_default(subscriber, || {
                let outer = tracing::info_span!("outer");
                let _outer = outer.enter();
                tracing::info!("in outer");
                let inner = tracing::info_span!("inner");
                let ids = |span: &tracing::Span| {
                    let context = span.trace_context();
                    let otel_span = context.span();
                    let span_context = otel_span.span_context();
                    (
                        span_context.trace_id().to_string(),
                        span_context.span_id().to_string(),
                    )
                };
                {
                    let _inner = inner.enter();
                    tracing::info!("in inner");
                }
                tracing::info!("back in outer");
                (ids(&outer), ids(&inner))
            });
            let lines = lines.json();
            assert_eq!(lines.len(), 3, "{lines:?}");
            assert_eq!(lines[0]["trace_id"], outer_ids.0.as_str());
            assert_eq!(lines[0]["span_id"], outer_ids.1.as_str());
            assert_eq!(lines[1]["span"], "inner");
            assert_eq!(lines[1]["trace_id"], outer_ids.0.as_str());
            assert_eq!(lines[1]["span_id"], inner_ids.1.as_str());
            assert_eq!(lines[2]["span_id"], outer_ids.1.as_str());
            assert_eq!(outer_ids.0.len(), 32);
            assert_eq!(outer_ids.1.len(), 16);
            assert_ne!(outer_ids.1, inner_ids.1);
            assert_ne!(outer_ids.0, "0".repeat(32));
        }
    }

    #[test]
    fn quiet_logs_keep_spans_traced_and_their_ids_on_the_lines_left() {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;

        let run = |log_filter: &str| {
            let lines = Lines::default();
            let writer = lines.clone();
            let provider = SdkTracerProvider::builder().build();
            let layers = tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("test"))
                .with_context_activation(false)
                .and_then(JsonLines::new("test", move || writer.clone()))
                .with_filter(Verbosity::new(log_filter).unwrap());
            let subscriber = tracing_subscriber::registry().with(layers);
            let traces = tracing::subscriber::with_default(subscriber, || {
                let request = tracing::info_span!("request", request_id = "r-1");
                let _request = request.enter();
                let detail = tracing::debug_span!("detail");
                tracing::info!("served");
                tracing::warn!("slow");
                let trace_id = |span: &tracing::Span| {
                    let context = span.context();
                    let otel_span = context.span();
                    let span_context = otel_span.span_context();
                    span_context
                        .is_valid()
                        .then(|| span_context.trace_id().to_string())
                };
                (trace_id(&request), trace_id(&detail))
            });
            (lines.json(), traces)
        };

        let (lines, (request, detail)) = run("warn");
        let request = request.expect("an info span is traced at RUST_LOG=warn");
        assert_eq!(detail, None, "a debug span is not traced at RUST_LOG=warn");
        assert_eq!(lines.len(), 1, "only the warning is logged: {lines:?}");
        assert_eq!(lines[0]["message"], "slow");
        assert_eq!(lines[0]["trace_id"], request.as_str());
        assert_eq!(lines[0]["request_id"], "r-1");

        let (lines, (request, detail)) = run("debug");
        assert!(request.is_some());
        assert_eq!(detail, request, "RUST_LOG=debug traces debug spans too");
        assert_eq!(lines.len(), 2, "{lines:?}");
    }

    /// A span-scoped directive follows its spans: a debug line is written
    /// inside the span it names (and its children), and nowhere else.
    #[test]
    fn span_scoped_directives_follow_their_spans() {
        let lines = Lines::default();
        let writer = lines.clone();
        let layers = JsonLines::new("test", move || writer.clone())
            .with_filter(Verbosity::new("warn,[checkout{user=alice}]=debug").unwrap());
        let subscriber = tracing_subscriber::registry().with(layers);
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!("before");
            for user in ["bob", "alice"] {
                let checkout = tracing::info_span!("checkout", user);
                let _checkout = checkout.enter();
                tracing::debug!(user, "inside");
                let step = tracing::info_span!("step");
                let _step = step.enter();
                tracing::debug!(user, "nested");
            }
            tracing::debug!("after");
        });
        let written: Vec<(String, String)> = lines
            .json()
            .iter()
            .map(|line| {
                (
                    line["message"].as_str().unwrap_or_default().to_owned(),
                    line["user"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            written,
            [
                ("inside".to_owned(), "alice".to_owned()),
                ("nested".to_owned(), "alice".to_owned()),
            ]
        );
    }

    /// tokio-rs/tracing#2519: a per-layer filter must not let a callsite be
    /// cached as `always`, or the layers miss its events after a dynamic
    /// `enabled` call (sqlx's `log_enabled!`) said "no" to something else.
    #[test]
    fn no_callsite_is_cached_as_always() {
        let verbosity = Verbosity::new("info,sqlx=warn").unwrap();
        let subscriber = tracing_subscriber::registry();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request");
            let metadata = span.metadata().expect("a span of the registry");
            let interest =
                Filter::<tracing_subscriber::Registry>::callsite_enabled(&verbosity, metadata);
            assert!(interest.is_sometimes(), "{interest:?}");
        });
    }
}
