//! Black-box tests of the Ferrishop binaries.
//!
//! The tests under `tests/` start the real binaries as child processes (see
//! `testkit::process`) against the real Postgres and brokers, and check them
//! only through their public surface: HTTP, gRPC, exit codes and log lines.
//! `cargo nextest run --workspace --all-targets` builds the binaries first.
