//! Names of the metrics this crate records through the `metrics` facade.
//!
//! Both are part of the platform's public contract (dashboards and
//! black-box checks read them), so they live in one place.

/// Counter: sagas that ended, labels `saga` (the saga type) and `outcome`
/// (`completed` | `compensated` | `failed`).
pub const SAGA_TOTAL: &str = "ferrishop_saga_total";
/// Histogram: time from a saga's start to its end, label `saga`.
pub const SAGA_DURATION: &str = "ferrishop_saga_duration_seconds";
