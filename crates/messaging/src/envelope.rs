//! CloudEvents 1.0 in binary mode: one broker header per attribute.
//!
//! Binary mode leaves the payload untouched (a consumer that does not care
//! about CloudEvents still gets plain JSON bytes) and lets brokers and tools
//! route or filter on headers without parsing bodies. The header names follow
//! the CloudEvents *Kafka* binding (`ce_id`, `ce_type`, ..., `content-type`)
//! on all three brokers rather than each binding's own spelling
//! (`cloudEvents:id` for AMQP, `ce-id` elsewhere): one spelling means a
//! message relayed from one broker to another, or a consumer moved between
//! them, sees the same headers, and the DESIGN contract names exactly these.

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};

use crate::message::Headers;

pub const ID: &str = "ce_id";
pub const TYPE: &str = "ce_type";
pub const SOURCE: &str = "ce_source";
pub const SUBJECT: &str = "ce_subject";
pub const TIME: &str = "ce_time";
pub const SPEC_VERSION: &str = "ce_specversion";
/// The Kafka binding maps `datacontenttype` to the `content-type` header.
pub const CONTENT_TYPE: &str = "content-type";
/// The CloudEvents partitioning extension: the ordering key.
pub const PARTITION_KEY: &str = "ce_partitionkey";

/// W3C trace context header names.
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// Set on messages moved to a dead-letter destination: why processing gave up.
pub const FAILURE_REASON: &str = "x-failure-reason";
/// Set on dead-lettered messages: how many times processing was attempted.
pub const FAILURE_ATTEMPTS: &str = "x-failure-attempts";
/// Set on dead-lettered messages: where the message was originally published.
pub const ORIGINAL_DESTINATION: &str = "x-original-destination";

pub const SPEC_VERSION_1_0: &str = "1.0";

/// The CloudEvents context attributes of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudEvent {
    pub id: String,
    /// Reverse-DNS event type, e.g. `ferrishop.order.placed`.
    pub event_type: String,
    /// URI-reference of the producer, e.g. `/ferrishop/order`.
    pub source: String,
    /// What the event is about within the source, e.g. the order id.
    pub subject: Option<String>,
    pub time: Option<DateTime<Utc>>,
    pub content_type: Option<String>,
}

impl CloudEvent {
    /// A new event with a fresh UUIDv7 id and the current time.
    pub fn new(event_type: impl Into<String>, source: impl Into<String>) -> Self {
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            event_type: event_type.into(),
            source: source.into(),
            subject: None,
            // What survives the RFC 3339 text on the wire, so an event
            // compares equal to itself after a round trip.
            time: Some(Utc::now().trunc_subsecs(6)),
            content_type: Some("application/json".to_owned()),
        }
    }

    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    pub fn with_subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    pub fn with_content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }

    /// Writes the attributes as headers (binary mode).
    pub fn write_to(&self, headers: &mut Headers) {
        headers.insert(SPEC_VERSION, SPEC_VERSION_1_0);
        headers.insert(ID, self.id.clone());
        headers.insert(TYPE, self.event_type.clone());
        headers.insert(SOURCE, self.source.clone());
        if let Some(subject) = &self.subject {
            headers.insert(SUBJECT, subject.clone());
        }
        if let Some(time) = self.time {
            headers.insert(TIME, format_time(time));
        }
        if let Some(content_type) = &self.content_type {
            headers.insert(CONTENT_TYPE, content_type.clone());
        }
    }

    /// Reads the attributes back; `None` unless `ce_id`, `ce_type` and
    /// `ce_source` are all present.
    pub fn from_headers(headers: &Headers) -> Option<Self> {
        Some(Self {
            id: headers.get(ID)?.to_owned(),
            event_type: headers.get(TYPE)?.to_owned(),
            source: headers.get(SOURCE)?.to_owned(),
            subject: headers.get(SUBJECT).map(str::to_owned),
            time: headers
                .get(TIME)
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc)),
            content_type: headers.get(CONTENT_TYPE).map(str::to_owned),
        })
    }
}

/// RFC 3339 with microseconds, as CloudEvents' `time` requires.
pub fn format_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Fills the required CloudEvents attributes a caller left out, so every
/// message on every broker is a valid CloudEvent: a UUIDv7 `ce_id`,
/// `ce_specversion` 1.0, `ce_time` now, `ce_source` of this client, and
/// `ce_type` defaulting to the destination name. A key becomes
/// `ce_partitionkey`. Attributes the caller did set are never changed.
pub(crate) fn complete(headers: &mut Headers, source: &str, destination: &str, key: Option<&str>) {
    headers.insert_if_absent(ID, || uuid::Uuid::now_v7().to_string());
    headers.insert_if_absent(SPEC_VERSION, || SPEC_VERSION_1_0.to_owned());
    headers.insert_if_absent(SOURCE, || source.to_owned());
    headers.insert_if_absent(TYPE, || destination.to_owned());
    headers.insert_if_absent(TIME, || format_time(Utc::now()));
    if let Some(key) = key {
        headers.insert_if_absent(PARTITION_KEY, || key.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip_through_headers() {
        let event =
            CloudEvent::new("ferrishop.order.placed", "/ferrishop/order").with_subject("order-42");
        let mut headers = Headers::new();
        event.write_to(&mut headers);
        assert_eq!(headers.get(SPEC_VERSION), Some("1.0"));
        assert_eq!(CloudEvent::from_headers(&headers), Some(event));
    }

    #[test]
    fn complete_fills_only_what_is_missing() {
        let mut headers: Headers = [(TYPE, "custom.type")].into_iter().collect();
        complete(&mut headers, "/ferrishop/test", "dest", Some("k1"));
        assert_eq!(headers.get(TYPE), Some("custom.type"));
        assert_eq!(headers.get(SOURCE), Some("/ferrishop/test"));
        assert_eq!(headers.get(PARTITION_KEY), Some("k1"));
        assert_eq!(headers.get(SPEC_VERSION), Some("1.0"));
        assert!(
            headers
                .get(ID)
                .is_some_and(|id| uuid::Uuid::parse_str(id).is_ok())
        );
        assert!(headers.get(TIME).is_some());
        let id = headers.get(ID).map(str::to_owned);
        complete(&mut headers, "/other", "other", None);
        assert_eq!(headers.get(ID).map(str::to_owned), id);
    }
}
