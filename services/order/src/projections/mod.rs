//! CQRS read models. Queries read these tables and nothing else; only the
//! projections here write them.
//!
//! - [`orders`]: `order_view` (one row per order, for GetOrder and
//!   WatchOrder) and `customer_order_history` (each customer's orders, for
//!   ListOrders), both fed from the order event log by the event store's
//!   projection runner — a checkpoint per read model, advanced in the
//!   transaction that writes the rows, so every event is applied exactly
//!   once and a rebuild (reset + replay) reproduces the same rows.
//! - [`product_sales`]: units and revenue per product and day, fed by the
//!   Kafka integration events (`order.confirmed`, `order.cancelled`) through
//!   an inbox — a cross-service projection that would work the same from
//!   another service's topic.

pub mod orders;
pub mod product_sales;
