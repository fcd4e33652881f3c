//! The saga engine against a real Postgres: each test gets its own database.

// Fixtures and helpers outside `#[test]` functions report failure the way
// tests do, by panicking with a message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod commands;
mod common;
mod compensation;
mod crash_resume;
mod failed_compensation;
mod happy_path;
mod observability;
mod replicas;
mod retention;
mod retries;
