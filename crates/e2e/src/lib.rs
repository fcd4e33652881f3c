//! Black-box tests of the Ferrishop binaries.
//!
//! The tests under `tests/` start the real binaries as child processes (see
//! `testkit::process`) against the real Postgres and brokers, and check them
//! only through their public surface: HTTP, gRPC, exit codes and log lines.
//! Build the binaries first: `cargo build --workspace --bins` (as `make test`
//! does; `loadgen` has no test target of its own that would build it).
//!
//! The library is what those tests share:
//!
//! - [`stack`]: the five services started as processes, the gateway last,
//!   each stack with its own databases and broker names;
//! - [`api`]: a REST client of the gateway that records every exchange;
//! - [`openapi`]: checks recorded responses against `/api/openapi.json`.
//! - [`otlp`]: an OTLP/gRPC trace receiver, and span trees to assert on.
//!
//! Like `testkit`, this crate runs only inside tests, where a panic with a
//! clear message is the failure report.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

pub mod api;
pub mod openapi;
pub mod otlp;
pub mod stack;
