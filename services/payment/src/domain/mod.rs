//! The payment domain: money, wallets and the rules for moving money between
//! them, with no I/O.
//!
//! Everything here is plain data and pure functions: a command is decided
//! against a wallet's state and yields events, and the state is the fold of
//! those events. Ids and timestamps are handed in, so a decision can be
//! replayed and tested without a database, a broker or a clock. The
//! adapters ([`crate::store`], [`crate::messaging`], [`crate::http`],
//! [`crate::grpc`]) parse the outside world into these types — which can
//! only hold valid values (a [`money::Money`] is never negative, an
//! [`iban::Iban`] always has a valid checksum) — and translate the results
//! back.

pub mod events;
pub mod iban;
pub mod ids;
pub mod money;
pub mod wallet;
