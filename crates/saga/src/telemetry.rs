//! Traces that follow a saga across time, processes and replicas.
//!
//! A saga outlives the request that started it: its steps may run seconds
//! later, on another replica, after a restart. So the W3C trace context of
//! the span that called `start` is stored with the instance, and every
//! `saga.step` span takes it as its parent — wherever and whenever the step
//! runs, it shows up in the trace of the request that placed the order; so
//! does the `saga.finish` span of its final transaction, under which the
//! hooks' writes (and the events they publish) happen.
//! Commands carry the step span's context onward in their headers, so the
//! participant's consumer span joins the same trace.

use std::collections::HashMap;

use opentelemetry::global;
use opentelemetry::trace::Status;
use platform::telemetry::SpanTrace;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use uuid::Uuid;

use crate::command::headers;
use crate::status::Phase;
use crate::transition::SagaOutcome;

/// A stored W3C trace context.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TraceContext {
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// The current span's context, through the globally installed
    /// propagator; empty when tracing is off.
    pub fn current() -> Self {
        Self::of(&Span::current())
    }

    /// `span`'s context.
    pub fn of(span: &Span) -> Self {
        let context = span.trace_context();
        let mut carrier = HashMap::new();
        global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&context, &mut carrier);
        });
        Self {
            traceparent: carrier.remove(headers::TRACEPARENT),
            tracestate: carrier
                .remove(headers::TRACESTATE)
                .filter(|state| !state.is_empty()),
        }
    }

    /// Makes this context the parent of `span` (no-op when empty).
    fn adopt_by(&self, span: &Span) {
        let Some(traceparent) = &self.traceparent else {
            return;
        };
        let mut carrier = HashMap::from([(headers::TRACEPARENT.to_owned(), traceparent.clone())]);
        if let Some(tracestate) = &self.tracestate {
            carrier.insert(headers::TRACESTATE.to_owned(), tracestate.clone());
        }
        let parent = global::get_text_map_propagator(|propagator| propagator.extract(&carrier));
        if let Err(error) = span.continue_trace(parent) {
            tracing::debug!(%error, "cannot parent the saga step span");
        }
    }

    /// Writes the context into message headers.
    pub fn write_to(&self, headers: &mut std::collections::BTreeMap<String, String>) {
        if let Some(traceparent) = &self.traceparent {
            headers.insert(headers::TRACEPARENT.to_owned(), traceparent.clone());
        }
        if let Some(tracestate) = &self.tracestate {
            headers.insert(headers::TRACESTATE.to_owned(), tracestate.clone());
        }
    }
}

/// What a `saga.step` span covers.
#[derive(Debug, Clone, Copy)]
pub(crate) enum StepWork {
    /// Awaiting a call.
    Call,
    /// Writing a command to the outbox.
    Send,
    /// Interpreting a recorded reply, or noting that none came.
    Reply,
}

impl StepWork {
    fn as_str(self) -> &'static str {
        match self {
            Self::Call => "call",
            Self::Send => "send",
            Self::Reply => "reply",
        }
    }
}

/// The span of one attempt of one step, child of the saga's start.
pub(crate) struct StepSpanFields<'a> {
    pub saga_id: Uuid,
    pub saga_type: &'a str,
    pub step: &'a str,
    pub phase: Phase,
    pub attempt: u32,
    pub work: StepWork,
    pub started_by: &'a TraceContext,
}

pub(crate) fn step_span(fields: StepSpanFields<'_>) -> Span {
    let span = tracing::info_span!(
        "saga.step",
        otel.kind = "internal",
        saga.id = %fields.saga_id,
        "saga.type" = fields.saga_type,
        saga.step = fields.step,
        saga.phase = fields.phase.as_str(),
        saga.attempt = fields.attempt,
        saga.work = fields.work.as_str(),
        saga.outcome = tracing::field::Empty,
    );
    fields.started_by.adopt_by(&span);
    span
}

/// The span of a saga's final transaction (its hooks run in it), child of
/// the saga's start like the steps: what the hooks publish continues the
/// trace. A saga that FAILED (a compensation gave up) ends in error; one
/// that compensated handled its failure.
pub(crate) fn finish_span(
    saga_id: Uuid,
    saga_type: &str,
    outcome: SagaOutcome,
    started_by: &TraceContext,
) -> Span {
    let span = tracing::info_span!(
        "saga.finish",
        otel.kind = "internal",
        saga.id = %saga_id,
        "saga.type" = saga_type,
        saga.outcome = outcome.as_str(),
    );
    started_by.adopt_by(&span);
    if outcome == SagaOutcome::Failed {
        span.set_status(Status::error("a compensation gave up"));
    }
    span
}

/// Records how the attempt ended; failures set the span's error status.
pub(crate) fn record_outcome(span: &Span, outcome: &str, error: Option<&str>) {
    span.record("saga.outcome", outcome);
    match error {
        Some(message) => span.set_status(Status::error(message.to_owned())),
        None => span.set_status(Status::Ok),
    }
}
