//! W3C trace context carriers for each broker's native headers.
//!
//! A trace has to continue across every hop — order service → Kafka →
//! payment service — or the waterfall in Jaeger breaks at the first broker.
//! OpenTelemetry propagators write and read text maps through the
//! [`Injector`]/[`Extractor`] traits; this module implements them for AMQP
//! header tables, Kafka record headers, NATS header maps and the crate's own
//! [`Headers`], mirroring `platform::propagation` for HTTP. The propagator
//! itself is the process-global one installed by `platform::telemetry`
//! (W3C trace context + baggage), so nothing here decides the format.

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use opentelemetry::Context;
use opentelemetry::global;
use opentelemetry::propagation::{Extractor, Injector};
use rdkafka::message::{BorrowedHeaders, Header, Headers as _, OwnedHeaders};

use crate::message::Headers;

/// Writes `context` through `injector` with the global propagator.
pub fn inject(context: &Context, injector: &mut dyn Injector) {
    global::get_text_map_propagator(|propagator| propagator.inject_context(context, injector));
}

/// Reads the remote parent context through `extractor` with the global propagator.
pub fn extract(extractor: &dyn Extractor) -> Context {
    global::get_text_map_propagator(|propagator| propagator.extract(extractor))
}

/// Reads trace context from the crate's broker-neutral headers.
pub struct HeadersExtractor<'a>(pub &'a Headers);

impl Extractor for HeadersExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k).collect()
    }
}

/// Writes trace context into the crate's broker-neutral headers.
pub struct HeadersInjector<'a>(pub &'a mut Headers);

impl Injector for HeadersInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value);
    }
}

/// Reads trace context from an AMQP header table (long or short string values).
pub struct AmqpHeaderExtractor<'a>(pub &'a FieldTable);

impl Extractor for AmqpHeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.inner().get(key).and_then(amqp_text)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.inner().keys().map(ShortString::as_str).collect()
    }
}

/// Writes trace context into an AMQP header table as long strings.
pub struct AmqpHeaderInjector<'a>(pub &'a mut FieldTable);

impl Injector for AmqpHeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(
            ShortString::from(key),
            AMQPValue::LongString(LongString::from(value)),
        );
    }
}

/// The text of an AMQP header value, if it is a (valid UTF-8) string.
pub(crate) fn amqp_text(value: &AMQPValue) -> Option<&str> {
    match value {
        AMQPValue::LongString(text) => std::str::from_utf8(text.as_bytes()).ok(),
        AMQPValue::ShortString(text) => Some(text.as_str()),
        _ => None,
    }
}

/// Reads trace context from Kafka record headers (UTF-8 values).
pub struct KafkaHeaderExtractor<'a>(pub &'a BorrowedHeaders);

impl Extractor for KafkaHeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .filter(|header| header.key == key)
            .filter_map(|header| header.value.and_then(|v| std::str::from_utf8(v).ok()))
            .last()
    }
    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|header| header.key).collect()
    }
}

/// Appends trace context to Kafka record headers. Kafka headers are a list,
/// not a map: inject into headers that carry no `traceparent` yet.
pub struct KafkaHeaderInjector<'a>(pub &'a mut OwnedHeaders);

impl Injector for KafkaHeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        let headers = std::mem::take(self.0);
        *self.0 = headers.insert(Header {
            key,
            value: Some(value.as_bytes()),
        });
    }
}

/// Reads trace context from NATS message headers.
pub struct NatsHeaderExtractor<'a>(pub &'a async_nats::HeaderMap);

impl Extractor for NatsHeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        if !is_valid_header_name(key) {
            return None;
        }
        self.0.get(key).map(async_nats::HeaderValue::as_str)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_ref()).collect()
    }
}

/// Writes trace context into NATS message headers.
pub struct NatsHeaderInjector<'a>(pub &'a mut async_nats::HeaderMap);

impl Injector for NatsHeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // async-nats panics on names or values it cannot encode; skip those.
        if is_valid_header_name(key) && is_valid_header_value(&value) {
            self.0.insert(key, value);
        }
    }
}

/// Header names every broker can carry: printable ASCII, no `:` or spaces.
pub(crate) fn is_valid_header_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 255 && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

/// Header values every broker can carry: no line breaks.
pub(crate) fn is_valid_header_value(value: &str) -> bool {
    // Bytes, not chars (`\r` and `\n` never occur inside a UTF-8 sequence):
    // the byte search scans a word at a time.
    let bytes = value.as_bytes();
    !bytes.contains(&b'\n') && !bytes.contains(&b'\r')
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{TraceContextExt, TraceId};
    use opentelemetry_sdk::propagation::TraceContextPropagator;

    use super::*;

    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn trace_id(context: &Context) -> TraceId {
        context.span().span_context().trace_id()
    }

    #[test]
    fn every_carrier_round_trips_a_traceparent() {
        global::set_text_map_propagator(TraceContextPropagator::new());
        let headers: Headers = [("traceparent", TRACEPARENT)].into_iter().collect();
        let context = extract(&HeadersExtractor(&headers));
        assert_eq!(
            trace_id(&context).to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );

        let mut amqp = FieldTable::default();
        inject(&context, &mut AmqpHeaderInjector(&mut amqp));
        assert_eq!(
            AmqpHeaderExtractor(&amqp).get("traceparent"),
            Some(TRACEPARENT)
        );
        assert_eq!(
            trace_id(&extract(&AmqpHeaderExtractor(&amqp))),
            trace_id(&context)
        );

        let mut kafka = OwnedHeaders::new();
        inject(&context, &mut KafkaHeaderInjector(&mut kafka));
        assert_eq!(
            KafkaHeaderExtractor(kafka.as_borrowed()).get("traceparent"),
            Some(TRACEPARENT)
        );

        let mut nats = async_nats::HeaderMap::new();
        inject(&context, &mut NatsHeaderInjector(&mut nats));
        assert_eq!(
            NatsHeaderExtractor(&nats).get("traceparent"),
            Some(TRACEPARENT)
        );

        let mut neutral = Headers::new();
        inject(&context, &mut HeadersInjector(&mut neutral));
        assert_eq!(neutral.get("traceparent"), Some(TRACEPARENT));
    }

    #[test]
    fn header_validation_matches_what_brokers_accept() {
        assert!(is_valid_header_name("ce_id"));
        assert!(is_valid_header_name("content-type"));
        assert!(!is_valid_header_name("bad name"));
        assert!(!is_valid_header_name("bad:name"));
        assert!(!is_valid_header_name("é"));
        assert!(is_valid_header_value("anything: at all"));
        assert!(!is_valid_header_value("two\nlines"));
        assert!(!is_valid_header_value("a carriage\rreturn"));
        assert!(is_valid_header_value("é ü ✓"));
    }
}
