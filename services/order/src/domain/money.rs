//! Money as an order sees it: the platform's shared [`money`] kernel
//! — whole minor units of one currency, never negative, never a float — with
//! no rule of the order's own on top.
//!
//! An order's amounts are prices, line totals and the total, all `>= 0`,
//! which is exactly what the kernel's [`Money`] can hold. Adding amounts of
//! different currencies and overflowing `i64` are errors, never silent
//! conversions or wrap-arounds: a total that does not fit is a bug the
//! customer must not pay for. Those rules and their tests live in the kernel,
//! shared with the inventory (where prices come from) and the payment service
//! (where totals are charged), so an amount means the same on both sides of
//! every call.

pub use ::money::{Currency, Money, MoneyError};
