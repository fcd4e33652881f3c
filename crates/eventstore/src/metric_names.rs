//! Names of the metrics this crate records through the `metrics` facade.
//!
//! The `ferrishop_*` names are part of the platform's public contract
//! (dashboards and black-box checks read them), so they live in one place.

/// Histogram: time to append one batch of events, label `outcome`
/// (`ok` | `conflict` | `error`).
pub const APPEND_DURATION: &str = "ferrishop_eventstore_append_duration_seconds";
/// Gauge: outbox rows not yet published.
pub const OUTBOX_PENDING: &str = "ferrishop_outbox_pending";
/// Histogram: time the relay's publisher took per message, label `outcome`.
pub const OUTBOX_PUBLISH_DURATION: &str = "ferrishop_outbox_publish_duration_seconds";
/// Histogram: time from writing an outbox row to its publication.
pub const OUTBOX_DELIVERY_DELAY: &str = "ferrishop_outbox_delivery_delay_seconds";
/// Gauge: events in the global order that a projection has not applied yet,
/// label `projection`.
pub const PROJECTION_LAG: &str = "ferrishop_projection_lag_events";
/// Counter: events a projection applied, label `projection`.
pub const PROJECTION_EVENTS_APPLIED: &str = "ferrishop_projection_events_applied_total";
