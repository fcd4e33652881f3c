//! Broker adapters: what goes out through the outbox ([`outbox`], with the
//! wire types in [`contract`]), the payment service's replies coming in
//! ([`replies`], RabbitMQ), and the integration events the `product_sales`
//! read model is built from ([`sales`], Kafka).
//!
//! Consumers decide how each kind of failure is settled with the broker: a
//! message that can never be processed (it does not parse) is dead-lettered
//! at once; a failure that may pass (the database is down, a race kept
//! losing) is requeued until the subscription's attempts run out.

pub mod contract;
pub mod outbox;
pub mod replies;
pub mod sales;

use integration::subscribe;
