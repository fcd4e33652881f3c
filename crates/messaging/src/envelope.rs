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

use std::borrow::Cow;
use std::sync::Arc;

use chrono::{DateTime, Datelike, SecondsFormat, SubsecRound, Timelike, Utc};

use crate::message::{Headers, OutgoingMessage};

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

/// RFC 3339 with microseconds, as CloudEvents' `time` requires, e.g.
/// `2026-11-22T16:43:01.123456Z`.
pub fn format_time(time: DateTime<Utc>) -> String {
    // Every message without a `ce_time` gets one: digits written directly
    // cost a fraction of the general formatter's. Years outside 0..=9999 and
    // leap seconds take the general path.
    let micros = time.timestamp_subsec_micros();
    let time = time.naive_utc();
    let year = time.year();
    if !(0..=9999).contains(&year) || micros >= 1_000_000 {
        return time.and_utc().to_rfc3339_opts(SecondsFormat::Micros, true);
    }
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    let mut digits = |at: usize, width: usize, mut value: u32| {
        for slot in text[at..at + width].iter_mut().rev() {
            // A remainder of 10 is below 10: the cast cannot truncate.
            *slot = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    digits(0, 4, year.unsigned_abs());
    digits(5, 2, time.month());
    digits(8, 2, time.day());
    digits(11, 2, time.hour());
    digits(14, 2, time.minute());
    digits(17, 2, time.second());
    digits(20, 6, micros);
    // ASCII digits and separators only, so this never takes the fallback.
    std::str::from_utf8(&text).map_or_else(
        |_| time.and_utc().to_rfc3339_opts(SecondsFormat::Micros, true),
        str::to_owned,
    )
}

/// A fresh UUIDv7 in its hyphenated form.
fn new_id() -> String {
    let mut text = uuid::Uuid::encode_buffer();
    uuid::Uuid::now_v7()
        .hyphenated()
        .encode_lower(&mut text)
        .to_owned()
}

/// The CloudEvents attributes [`complete`] found missing from a message and
/// supplies: generated values (`ce_id`, `ce_time`) owned, the rest copied
/// from the message or the client when the broker's headers are written.
///
/// They are kept apart from the caller's [`Headers`] rather than inserted into
/// them: each transport writes both straight into its own header format, so
/// a bare message — the common case — costs no header map of its own (six
/// name strings, a tree node, its searches and its teardown per publish).
#[derive(Debug, Default)]
pub(crate) struct Added {
    id: Option<String>,
    time: Option<String>,
    spec_version: bool,
    source: Option<Arc<str>>,
    type_from_destination: bool,
    partition_key_from_key: bool,
}

impl Added {
    /// `ce_id` as it goes on the wire: the caller's or the generated one.
    pub(crate) fn message_id<'a>(&'a self, headers: &'a Headers) -> Option<&'a str> {
        headers.get(ID).or(self.id.as_deref())
    }

    /// The added attributes as header name and value; `message` is the one
    /// [`complete`] was given.
    pub(crate) fn iter<'a>(
        &'a self,
        message: &'a OutgoingMessage,
    ) -> impl Iterator<Item = (&'static str, &'a str)> + 'a {
        [
            (ID, self.id.as_deref()),
            (
                PARTITION_KEY,
                message
                    .key
                    .as_deref()
                    .filter(|_| self.partition_key_from_key),
            ),
            (SOURCE, self.source.as_deref()),
            (SPEC_VERSION, self.spec_version.then_some(SPEC_VERSION_1_0)),
            (TIME, self.time.as_deref()),
            (
                TYPE,
                self.type_from_destination
                    .then_some(message.destination.as_str()),
            ),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.map(|value| (name, value)))
    }

    /// Like [`Self::iter`], handing over the generated values instead of
    /// borrowing them, for header formats that own their strings.
    pub(crate) fn into_iter(
        self,
        message: &OutgoingMessage,
    ) -> impl Iterator<Item = (&'static str, Cow<'_, str>)> {
        [
            (ID, self.id.map(Cow::Owned)),
            (
                PARTITION_KEY,
                message
                    .key
                    .as_deref()
                    .filter(|_| self.partition_key_from_key)
                    .map(Cow::Borrowed),
            ),
            (
                SOURCE,
                self.source.map(|source| Cow::Owned(source.to_string())),
            ),
            (
                SPEC_VERSION,
                self.spec_version.then_some(Cow::Borrowed(SPEC_VERSION_1_0)),
            ),
            (TIME, self.time.map(Cow::Owned)),
            (
                TYPE,
                self.type_from_destination
                    .then_some(Cow::Borrowed(message.destination.as_str())),
            ),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.map(|value| (name, value)))
    }

    /// Bytes the added attributes take on the wire, roughly (names plus values).
    pub(crate) fn encoded_len(&self, message: &OutgoingMessage) -> usize {
        self.iter(message).map(|(k, v)| k.len() + v.len()).sum()
    }
}

/// Finds the required CloudEvents attributes a caller left out, so every
/// message on every broker is a valid CloudEvent: a UUIDv7 `ce_id`,
/// `ce_specversion` 1.0, `ce_time` now, `ce_source` of this client, and
/// `ce_type` defaulting to the destination name. A key becomes
/// `ce_partitionkey`. Attributes the caller did set are never changed.
pub(crate) fn complete(message: &OutgoingMessage, source: &Arc<str>) -> Added {
    let missing = |name| !message.headers.contains(name);
    Added {
        id: missing(ID).then(new_id),
        time: missing(TIME).then(|| format_time(Utc::now())),
        spec_version: missing(SPEC_VERSION),
        source: missing(SOURCE).then(|| source.clone()),
        type_from_destination: missing(TYPE),
        partition_key_from_key: message.key.is_some() && missing(PARTITION_KEY),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `message`'s headers with the attributes [`complete`] adds, as a
    /// receiver sees them.
    fn completed(message: &OutgoingMessage, source: &str) -> Headers {
        let added = complete(message, &Arc::from(source));
        let mut headers = message.headers.clone();
        for (name, value) in added.iter(message) {
            headers.insert(name, value);
        }
        headers
    }

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
    fn times_are_formatted_as_rfc3339_with_microseconds() {
        let general = |time: DateTime<Utc>| time.to_rfc3339_opts(SecondsFormat::Micros, true);
        let mut seconds = -62_167_219_200_i64; // 0000-01-01T00:00:00Z
        while seconds < 253_402_300_800 {
            // 9999-12-31T23:59:59Z and past
            for nanos in [0, 1_000, 999_999_000, 123_456_789] {
                let time = DateTime::from_timestamp(seconds, nanos).unwrap_or_default();
                assert_eq!(format_time(time), general(time), "{seconds} {nanos}");
            }
            seconds += 7_777_777;
        }
        // A leap second and a year past 9999 take the general path.
        let leap = DateTime::from_timestamp(1_483_228_799, 1_500_000_000).unwrap_or_default();
        assert_eq!(format_time(leap), general(leap));
        let far = DateTime::from_timestamp(300_000_000_000, 0).unwrap_or_default();
        assert_eq!(format_time(far), general(far));
        assert_eq!(
            format_time(DateTime::from_timestamp(1_795_365_781, 123_456_000).unwrap_or_default()),
            "2026-11-22T16:43:01.123456Z"
        );
    }

    #[test]
    fn complete_fills_only_what_is_missing() {
        let message = OutgoingMessage::new("dest", "{}")
            .with_key("k1")
            .with_header(TYPE, "custom.type");
        let headers = completed(&message, "/ferrishop/test");
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
        // A completed message is left as it is.
        let again = OutgoingMessage {
            headers: headers.clone(),
            ..OutgoingMessage::new("other", "{}")
        };
        let added = complete(&again, &Arc::from("/other"));
        assert_eq!(added.iter(&again).count(), 0);
        assert_eq!(added.message_id(&again.headers), headers.get(ID));
        assert_eq!(completed(&again, "/other"), headers);
    }

    #[test]
    fn a_bare_message_gets_every_attribute() {
        for key in [Some("k1"), None] {
            let mut message = OutgoingMessage::new("dest", "{}");
            message.key = key.map(str::to_owned);
            let added = complete(&message, &Arc::from("/ferrishop/test"));
            let mut headers = Headers::new();
            for (name, value) in added.iter(&message) {
                headers.insert(name, value);
            }
            assert_eq!(added.encoded_len(&message), headers.encoded_len());
            assert_eq!(added.message_id(&message.headers), headers.get(ID));
            let owned: Vec<_> = added
                .into_iter(&message)
                .map(|(name, value)| (name, value.into_owned()))
                .collect();
            assert_eq!(owned.len(), headers.len());
            assert!(
                owned
                    .iter()
                    .all(|(name, value)| headers.get(name) == Some(value))
            );
            assert_eq!(headers.get(PARTITION_KEY), key);
            assert_eq!(headers.len(), if key.is_some() { 6 } else { 5 });
            assert_eq!(headers.get(TYPE), Some("dest"));
            assert!(headers.get(ID).is_some_and(|id| {
                uuid::Uuid::parse_str(id).is_ok_and(|uuid| {
                    uuid.get_version_num() == 7 && uuid.hyphenated().to_string() == id
                })
            }));
            assert!(
                headers
                    .get(TIME)
                    .is_some_and(|t| DateTime::parse_from_rfc3339(t).is_ok())
            );
        }
    }
}
