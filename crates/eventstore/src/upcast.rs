//! Upcasting: reading old event shapes as the current one.
//!
//! Events are immutable, but the code that reads them changes. Rewriting
//! history in place is off the table (the log is append-only and other
//! services may have consumed it), so every stored event keeps the
//! `schema_version` it was written with, and readers convert old payloads
//! step by step — version 1 → 2 → 3 … — just before decoding. A step is a
//! plain function on JSON registered per `(event_type, from_version)`; chains
//! stop at the first version with no registered step, which is the shape
//! the decoder must understand.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use crate::store::RecordedEvent;

/// Why an old payload could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot upcast {event_type} from schema version {from_version}: {reason}")]
pub struct UpcastError {
    pub event_type: String,
    pub from_version: i32,
    pub reason: String,
}

type UpcastStep = dyn Fn(Value) -> Result<Value, String> + Send + Sync;

/// The registered conversion steps. Cheap to clone.
#[derive(Clone, Default)]
pub struct Upcasters {
    steps: HashMap<(String, i32), Arc<UpcastStep>>,
}

impl fmt::Debug for Upcasters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<_> = self.steps.keys().collect();
        keys.sort();
        f.debug_struct("Upcasters").field("steps", &keys).finish()
    }
}

impl Upcasters {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the step turning an `event_type` payload of schema version
    /// `from_version` into version `from_version + 1`. The step returns a
    /// reason when the payload does not have the shape it expects.
    pub fn register(
        mut self,
        event_type: impl Into<String>,
        from_version: i32,
        step: impl Fn(Value) -> Result<Value, String> + Send + Sync + 'static,
    ) -> Self {
        self.steps
            .insert((event_type.into(), from_version), Arc::new(step));
        self
    }

    /// Applies every registered step from `schema_version` on; returns the
    /// version reached and the converted payload.
    pub fn upcast(
        &self,
        event_type: &str,
        schema_version: i32,
        payload: Value,
    ) -> Result<(i32, Value), UpcastError> {
        let mut version = schema_version;
        let mut payload = payload;
        while let Some(step) = self.steps.get(&(event_type.to_owned(), version)) {
            payload = step(payload).map_err(|reason| UpcastError {
                event_type: event_type.to_owned(),
                from_version: version,
                reason,
            })?;
            version += 1;
        }
        Ok((version, payload))
    }

    /// [`upcast`](Self::upcast) applied to a stored event.
    pub fn upcast_event(&self, mut event: RecordedEvent) -> Result<RecordedEvent, UpcastError> {
        let payload = std::mem::take(&mut event.payload);
        let (version, payload) = self.upcast(&event.event_type, event.schema_version, payload)?;
        event.schema_version = version;
        event.payload = payload;
        Ok(event)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn steps_chain_until_no_step_is_registered() {
        let upcasters = Upcasters::new()
            .register("Renamed", 1, |mut payload| {
                let name = payload
                    .as_object_mut()
                    .and_then(|object| object.remove("name"))
                    .ok_or("no name")?;
                Ok(json!({ "full_name": name }))
            })
            .register("Renamed", 2, |mut payload| {
                payload["locale"] = json!("en");
                Ok(payload)
            });
        assert_eq!(
            upcasters.upcast("Renamed", 1, json!({"name": "Ada"})),
            Ok((3, json!({"full_name": "Ada", "locale": "en"})))
        );
        assert_eq!(
            upcasters.upcast("Renamed", 3, json!({"x": 1})),
            Ok((3, json!({"x": 1})))
        );
        assert_eq!(
            upcasters.upcast("Other", 1, json!({"name": "Ada"})),
            Ok((1, json!({"name": "Ada"})))
        );
    }

    #[test]
    fn a_failing_step_names_the_event_and_version() {
        let upcasters = Upcasters::new().register("Renamed", 1, |_| Err("bad shape".to_owned()));
        let error = upcasters
            .upcast("Renamed", 1, json!({}))
            .err()
            .map(|error| (error.event_type, error.from_version, error.reason));
        assert_eq!(error, Some(("Renamed".into(), 1, "bad shape".into())));
    }
}
