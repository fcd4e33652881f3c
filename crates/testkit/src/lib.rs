//! Real infrastructure for tests.
//!
//! Ferrishop's tests talk to a real Postgres, RabbitMQ, Kafka-compatible
//! broker and NATS: the behaviour under test (transactions, confirms,
//! redelivery, consumer groups) is the brokers' and the database's as much as
//! ours, and a mock would test our assumptions about them instead. To let the
//! suite run in parallel, every test gets its own database ([`postgres`]) and
//! its own exchange/topic/subject names ([`brokers::unique_name`]).
//!
//! Endpoints come from the environment with the platform's defaults
//! (`TEST_DATABASE_URL` or `DATABASE_URL` pointing at the server,
//! `AMQP_URL`, `KAFKA_BROKERS`, `NATS_URL`). With the `containers` feature and
//! a Docker engine, a dependency that is neither configured nor listening on
//! its default port is started with testcontainers instead. An unreachable
//! dependency fails the test with one message naming it and how to start it:
//! `make infra-up`.
//!
//! [`process`] spawns the real service binaries on free ports and waits for
//! them to become ready, for end-to-end tests.
//!
//! Panicking is this crate's error handling: it only runs inside tests, where
//! a panic with a clear message is the failure report.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

pub mod bench;
pub mod brokers;
#[cfg(feature = "containers")]
pub mod containers;
pub mod grpc;
pub mod net;
pub mod postgres;
pub mod process;

pub use postgres::TestDatabase;
pub use process::ServiceProcess;
