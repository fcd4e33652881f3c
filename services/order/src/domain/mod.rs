//! The order domain: pure types and rules, no I/O.
//!
//! Nothing here talks to a database, a broker or a clock: ids and times come
//! in with the commands, so every rule — which status may follow which, what
//! an order costs, when two requests are "the same" — is a plain function over
//! plain values, tested with property tests. The adapters translate to and
//! from these types at the edge, and the use cases in [`crate::app`] apply them.
//!
//! - [`ids`]: order, customer, product and payment identifiers.
//! - [`money`]: amounts in minor units of one currency.
//! - [`items`]: what a customer asks for, parsed (1 to 100 products, positive
//!   quantities, duplicates merged) and priced into order lines.
//! - [`request`]: idempotency keys and the fingerprint that tells a retried
//!   request from a different one.
//! - [`order`]: the event-sourced `Order` aggregate and its status machine.
//! - [`events`]: the events it records.
//! - [`reason`]: stable failure codes (`INSUFFICIENT_STOCK`, ...).

pub mod events;
pub mod ids;
pub mod items;
pub mod money;
pub mod order;
pub mod reason;
pub mod request;
