//! Command/reply steps: the messages a saga sends, the replies it gets, and
//! how the two are tied together.
//!
//! A command step does not wait on a connection: the engine writes the
//! [`Command`] to the transactional outbox in the same transaction that
//! records "sent", and the saga then sleeps until the service feeds the
//! [`Reply`] in through [`crate::SagaEngine::on_reply`]. Nothing is lost
//! when the process dies in between: the outbox row and the waiting saga
//! are both committed, and whichever replica gets the reply moves the saga
//! on.
//!
//! # One idempotency key per step, not per attempt
//!
//! When no reply comes in time the engine sends the command again. The
//! first command may well have been executed (only its reply got lost), so
//! the participant must recognise the second as the same request. Every
//! send of a step therefore carries the same key, `{saga_id}:{step}`
//! (compensations: `{saga_id}:{step}:compensation`), in the
//! [`headers::IDEMPOTENCY_KEY`] header; participants deduplicate by it and
//! answer a repeat with the original result. Each send is nevertheless a
//! new outbox *message* with its own message id: a broker-level inbox that
//! deduplicates by message id would otherwise swallow the re-send and the
//! saga would never hear back.
//!
//! The participant echoes the key on its reply (as the reply's correlation
//! id, or in the same header), and the service turns it back into a
//! [`Correlation`] with [`Correlation::from_idempotency_key`]. Because the
//! key does not depend on the attempt, a reply to an earlier send is as good
//! as a reply to the latest one.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::status::Phase;

/// Header names the engine sets on every command it sends.
pub mod headers {
    /// `{saga_id}:{step}` (or `{saga_id}:{step}:compensation`): the same on
    /// every send of a step; participants deduplicate by it.
    pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
    pub const SAGA_ID: &str = "saga-id";
    pub const SAGA_TYPE: &str = "saga-type";
    pub const SAGA_STEP: &str = "saga-step";
    /// `action` or `compensation`.
    pub const SAGA_PHASE: &str = "saga-phase";
    /// The attempt that sent this message (1-based), for diagnostics only.
    pub const SAGA_ATTEMPT: &str = "saga-attempt";
    pub const TRACEPARENT: &str = "traceparent";
    pub const TRACESTATE: &str = "tracestate";
}

/// A message a command step sends to a participant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// Exchange, topic or subject, e.g. `"ferrishop.payment.commands"`.
    pub destination: String,
    /// Extra broker headers (message type, content type, ...); the engine
    /// adds the saga's correlation and trace headers.
    pub headers: BTreeMap<String, String>,
    pub payload: Vec<u8>,
}

impl Command {
    pub fn new(destination: impl Into<String>, payload: Vec<u8>) -> Self {
        Self {
            destination: destination.into(),
            headers: BTreeMap::new(),
            payload,
        }
    }

    /// A command whose payload is `body` as JSON, with
    /// `content-type: application/json`.
    pub fn json<T: Serialize>(
        destination: impl Into<String>,
        body: &T,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self::new(destination, serde_json::to_vec(body)?)
            .with_header("content-type", "application/json"))
    }

    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }
}

/// Which saga, step and phase a reply answers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Correlation {
    pub saga_id: Uuid,
    pub step: String,
    pub phase: Phase,
}

/// Suffix of a compensation's idempotency key.
const COMPENSATION_SUFFIX: &str = "compensation";

/// A string that is not an idempotency key this crate issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key:?} is not a saga idempotency key ({reason})")]
pub struct CorrelationError {
    pub key: String,
    pub reason: &'static str,
}

impl Correlation {
    pub fn new(saga_id: Uuid, step: impl Into<String>, phase: Phase) -> Self {
        Self {
            saga_id,
            step: step.into(),
            phase,
        }
    }

    /// `{saga_id}:{step}` for an action, `{saga_id}:{step}:compensation`
    /// for a compensation.
    pub fn idempotency_key(&self) -> String {
        match self.phase {
            Phase::Action => format!("{}:{}", self.saga_id, self.step),
            Phase::Compensation => {
                format!("{}:{}:{COMPENSATION_SUFFIX}", self.saga_id, self.step)
            }
        }
    }

    /// Parses a key made by [`Correlation::idempotency_key`].
    pub fn from_idempotency_key(key: &str) -> Result<Self, CorrelationError> {
        let invalid = |reason| CorrelationError {
            key: key.to_owned(),
            reason,
        };
        let mut parts = key.split(':');
        let saga_id = parts
            .next()
            .and_then(|id| Uuid::parse_str(id).ok())
            .ok_or_else(|| invalid("no saga id"))?;
        let step = parts
            .next()
            .filter(|step| !step.is_empty())
            .ok_or_else(|| invalid("no step"))?;
        let phase = match parts.next() {
            None => Phase::Action,
            Some(COMPENSATION_SUFFIX) => Phase::Compensation,
            Some(_) => return Err(invalid("unknown phase suffix")),
        };
        if parts.next().is_some() {
            return Err(invalid("too many parts"));
        }
        Ok(Self::new(saga_id, step, phase))
    }

    /// Reads the [`headers::IDEMPOTENCY_KEY`] header.
    pub fn from_headers(headers: &BTreeMap<String, String>) -> Result<Self, CorrelationError> {
        let key = headers
            .get(headers::IDEMPOTENCY_KEY)
            .ok_or_else(|| CorrelationError {
                key: String::new(),
                reason: "no idempotency-key header",
            })?;
        Self::from_idempotency_key(key)
    }
}

impl fmt::Display for Correlation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.idempotency_key())
    }
}

/// A participant's answer to a command, fed to the engine by the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub correlation: Correlation,
    pub headers: BTreeMap<String, String>,
    pub payload: Vec<u8>,
}

impl Reply {
    pub fn new(correlation: Correlation, payload: Vec<u8>) -> Self {
        Self {
            correlation,
            headers: BTreeMap::new(),
            payload,
        }
    }

    /// A reply whose payload is `body` as JSON.
    pub fn json<T: Serialize>(
        correlation: Correlation,
        body: &T,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self::new(correlation, serde_json::to_vec(body)?))
    }

    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// The payload as JSON.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_do_not_depend_on_the_attempt() {
        let saga_id = Uuid::now_v7();
        for phase in [Phase::Action, Phase::Compensation] {
            let correlation = Correlation::new(saga_id, "charge_payment", phase);
            let key = correlation.idempotency_key();
            assert_eq!(Correlation::from_idempotency_key(&key), Ok(correlation));
        }
        assert_eq!(
            Correlation::new(saga_id, "charge_payment", Phase::Action).idempotency_key(),
            format!("{saga_id}:charge_payment")
        );
    }

    #[test]
    fn foreign_keys_are_refused() {
        for key in [
            "",
            "not-a-uuid:step",
            &format!("{}", Uuid::now_v7()),
            &format!("{}:", Uuid::now_v7()),
            &format!("{}:step:undo", Uuid::now_v7()),
            &format!("{}:step:compensation:x", Uuid::now_v7()),
        ] {
            assert!(Correlation::from_idempotency_key(key).is_err(), "{key}");
        }
    }

    #[test]
    fn correlation_is_read_from_headers() {
        let correlation = Correlation::new(Uuid::now_v7(), "refund", Phase::Compensation);
        let headers = BTreeMap::from([(
            headers::IDEMPOTENCY_KEY.to_owned(),
            correlation.idempotency_key(),
        )]);
        assert_eq!(Correlation::from_headers(&headers), Ok(correlation));
        assert!(Correlation::from_headers(&BTreeMap::new()).is_err());
    }
}
