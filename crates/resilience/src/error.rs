//! Errors.
//!
//! Inside a stack, errors travel as [`BoxError`], as they do through tower's
//! own middleware (`Timeout`, `LoadShed`, `Retry` all box): that is what lets
//! the layers compose. The outermost service of a stack
//! ([`Resilient`](crate::Resilient)) turns them back into the typed [`Error`],
//! so callers match on variants instead of downcasting.

use std::sync::Arc;
use std::time::Duration;

/// A type-erased error, as tower uses between layers.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a call through a resilience stack did not produce a response.
///
/// The first three variants are *fail-fast* rejections: the call never left
/// this process, so the upstream saw nothing and no work is in doubt
/// ([`Error::is_fail_fast`]). How the gateway maps them:
///
/// | variant | REST | gRPC |
/// |---|---|---|
/// | [`CircuitOpen`](Error::CircuitOpen), [`Overloaded`](Error::Overloaded), [`NoHealthyInstance`](Error::NoHealthyInstance) | 503 `UPSTREAM_UNAVAILABLE` | `UNAVAILABLE` |
/// | [`Timeout`](Error::Timeout) | 504 `UPSTREAM_UNAVAILABLE` | `DEADLINE_EXCEEDED` |
/// | [`Upstream`](Error::Upstream) | 502 `UPSTREAM_UNAVAILABLE` | the status inside, else `UNAVAILABLE` |
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The upstream's circuit breaker is open (or half-open with all trial
    /// slots taken): the call was rejected without being sent.
    #[error("circuit breaker for {upstream} is open")]
    CircuitOpen { upstream: Arc<str> },

    /// The upstream's bulkhead is full: as many calls as it allows are already
    /// in flight, and waiting for a slot would only queue latency, so the call
    /// was shed.
    #[error("{upstream} is overloaded: every in-flight slot of its bulkhead is taken")]
    Overloaded { upstream: Arc<str> },

    /// Every instance of the upstream has an open circuit breaker.
    #[error("no healthy instance of {upstream}")]
    NoHealthyInstance { upstream: Arc<str> },

    /// The call (an attempt, or the whole call including its retries) ran out
    /// of time.
    #[error("call to {upstream} timed out")]
    Timeout { upstream: Arc<str> },

    /// The upstream's client failed (connection refused, reset, protocol
    /// error, ...), and retrying did not help or was not allowed.
    #[error("call to {upstream} failed: {source}")]
    Upstream {
        upstream: Arc<str>,
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// Turns an error that came out of a stack's layers into its typed form:
    /// our own errors are unboxed, tower's `Overloaded` and `Elapsed` become
    /// [`Error::Overloaded`] and [`Error::Timeout`], anything else is the
    /// upstream client's own error.
    pub fn from_boxed(upstream: &Arc<str>, error: BoxError) -> Self {
        let error = match error.downcast::<Error>() {
            Ok(ours) => return *ours,
            Err(other) => other,
        };
        if error.is::<tower::load_shed::error::Overloaded>() {
            Error::Overloaded {
                upstream: upstream.clone(),
            }
        } else if error.is::<tower::timeout::error::Elapsed>() {
            Error::Timeout {
                upstream: upstream.clone(),
            }
        } else {
            Error::Upstream {
                upstream: upstream.clone(),
                source: error,
            }
        }
    }

    /// The upstream this error is about.
    pub fn upstream(&self) -> &str {
        match self {
            Error::CircuitOpen { upstream }
            | Error::Overloaded { upstream }
            | Error::NoHealthyInstance { upstream }
            | Error::Timeout { upstream }
            | Error::Upstream { upstream, .. } => upstream,
        }
    }

    /// Whether the call was rejected locally, before anything was sent: safe
    /// to report as "unavailable, try later" and never a cause of duplicate
    /// side effects.
    pub fn is_fail_fast(&self) -> bool {
        matches!(
            self,
            Error::CircuitOpen { .. } | Error::Overloaded { .. } | Error::NoHealthyInstance { .. }
        )
    }
}

/// A configuration value that cannot work.
///
/// Constructors validate instead of panicking (tower's `TpsBudget::new`
/// asserts on its arguments), so a bad environment variable stops a binary
/// with a message rather than a backtrace.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A numeric setting is out of its allowed range.
    #[error("{setting} must be {expected}, got {actual}")]
    OutOfRange {
        setting: &'static str,
        expected: &'static str,
        actual: String,
    },
    /// An upstream instance URL could not be used.
    #[error("invalid upstream URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// An upstream was configured with no instance at all.
    #[error("upstream {upstream} lists no instance")]
    NoInstances { upstream: String },
    /// The factory could not build a client for an instance.
    #[error("cannot build a client for {endpoint}: {reason}")]
    Client { endpoint: String, reason: String },
}

impl ConfigError {
    pub(crate) fn out_of_range(
        setting: &'static str,
        expected: &'static str,
        actual: impl std::fmt::Debug,
    ) -> Self {
        ConfigError::OutOfRange {
            setting,
            expected,
            actual: format!("{actual:?}"),
        }
    }
}

/// Checks `value` lies in `min..=max` (a zero duration is usually a typo for
/// "disabled", which these settings have no notion of).
pub(crate) fn check_duration(
    setting: &'static str,
    value: Duration,
    min: Duration,
    max: Duration,
    expected: &'static str,
) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::out_of_range(setting, expected, value));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name() -> Arc<str> {
        Arc::from("user")
    }

    #[test]
    fn boxed_errors_come_back_typed() {
        let ours: BoxError = Box::new(Error::NoHealthyInstance { upstream: name() });
        assert!(matches!(
            Error::from_boxed(&name(), ours),
            Error::NoHealthyInstance { .. }
        ));

        let shed: BoxError = Box::new(tower::load_shed::error::Overloaded::new());
        let typed = Error::from_boxed(&name(), shed);
        assert!(matches!(typed, Error::Overloaded { .. }));
        assert!(typed.is_fail_fast());

        let elapsed: BoxError = Box::new(tower::timeout::error::Elapsed::new());
        let typed = Error::from_boxed(&name(), elapsed);
        assert!(matches!(typed, Error::Timeout { .. }));
        assert!(!typed.is_fail_fast());

        let other: BoxError = "connection refused".into();
        let typed = Error::from_boxed(&name(), other);
        assert_eq!(typed.upstream(), "user");
        assert_eq!(typed.to_string(), "call to user failed: connection refused");
    }
}
