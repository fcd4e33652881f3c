//! The inventory domain: pure types and rules, no I/O.
//!
//! Nothing here touches the network, the database or the clock on its own
//! (ids are generated from it, timestamps are given to it): the rules that
//! matter most — no oversell, exact prices, a reservation's life — are plain
//! functions over plain values, tested exhaustively with property tests.
//! The adapters (gRPC, Postgres) translate to and from these types at the
//! edge, and the use cases in [`crate::app`] apply them under a database lock.
//!
//! - [`money`]: amounts in minor units, rates in basis points, half-even rounding.
//! - [`product`]: catalogue values, each parsed into a type that can only hold
//!   an acceptable value.
//! - [`stock`]: stock counters that cannot be oversold, reorder points.
//! - [`pricing`]: bulk discount tiers and tax.
//! - [`reservation`]: the reservation state machine.
//! - [`events`]: the integration events the service publishes.

pub mod events;
pub mod money;
pub mod pricing;
pub mod product;
pub mod reservation;
pub mod stock;
