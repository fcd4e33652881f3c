//! placeholder docs
pub mod broker;
pub mod delivery;
pub mod envelope;
pub mod error;
pub mod message;
pub mod propagation;
pub mod rabbitmq;
pub mod subscription;
mod telemetry;
