//! Infrastructure in Docker, for machines that have a Docker engine but not
//! the services themselves (feature `containers`).
//!
//! The first test in a process that needs a dependency which is neither
//! configured nor listening on its default port starts one container per
//! dependency and keeps it for the rest of the process. Under nextest every
//! test is its own process, so every test pays a container start: prefer
//! `make infra-up`, which starts the services once.

use std::sync::OnceLock;

use testcontainers_modules::kafka::apache::{KAFKA_PORT, Kafka};
use testcontainers_modules::nats::{Nats, NatsServerCmd};
use testcontainers_modules::postgres::Postgres;
use testcontainers_modules::rabbitmq::RabbitMq;
use testcontainers_modules::testcontainers::core::ContainerPort;
use testcontainers_modules::testcontainers::runners::AsyncRunner;
use testcontainers_modules::testcontainers::{ContainerAsync, Image, ImageExt};
use tokio::sync::OnceCell;

use crate::brokers::Dependency;

/// Whether a Docker engine looks reachable (`DOCKER_HOST` or the default
/// socket).
pub fn docker_available() -> bool {
    std::env::var_os("DOCKER_HOST").is_some()
        || std::path::Path::new("/var/run/docker.sock").exists()
}

/// The endpoint of a container running `dependency`, started on first use.
pub async fn endpoint(dependency: Dependency) -> String {
    static POSTGRES: OnceCell<String> = OnceCell::const_new();
    static RABBITMQ: OnceCell<String> = OnceCell::const_new();
    static KAFKA: OnceCell<String> = OnceCell::const_new();
    static NATS: OnceCell<String> = OnceCell::const_new();
    match dependency {
        Dependency::Postgres => POSTGRES
            .get_or_init(|| async {
                let port = start(Postgres::default().with_host_auth(), 5432).await;
                format!("postgres://postgres@127.0.0.1:{port}/postgres")
            })
            .await
            .clone(),
        Dependency::RabbitMq => RABBITMQ
            .get_or_init(|| async {
                let port = start(RabbitMq::default(), 5672).await;
                format!("amqp://guest:guest@127.0.0.1:{port}/%2f")
            })
            .await
            .clone(),
        Dependency::Kafka => KAFKA
            .get_or_init(|| async {
                let ContainerPort::Tcp(internal) = KAFKA_PORT else {
                    panic!("the Kafka module's port is not TCP")
                };
                let port = start(Kafka::default(), internal).await;
                format!("127.0.0.1:{port}")
            })
            .await
            .clone(),
        Dependency::Nats => NATS
            .get_or_init(|| async {
                let command = NatsServerCmd::default().with_jetstream();
                let port = start(Nats::default().with_cmd(&command), 4222).await;
                format!("nats://127.0.0.1:{port}")
            })
            .await
            .clone(),
    }
}

/// Starts `image`, keeps the container for the life of the process, and
/// returns the host port mapped to `internal_port`.
async fn start<I>(
    image: impl Into<testcontainers_modules::testcontainers::ContainerRequest<I>> + AsyncRunner<I>,
    internal_port: u16,
) -> u16
where
    I: Image + 'static,
{
    static KEEP: OnceLock<std::sync::Mutex<Vec<Box<dyn std::any::Any + Send>>>> = OnceLock::new();
    let container: ContainerAsync<I> = image
        .start()
        .await
        .unwrap_or_else(|e| panic!("cannot start a test container: {e}"));
    let port = container
        .get_host_port_ipv4(internal_port)
        .await
        .unwrap_or_else(|e| panic!("test container has no port {internal_port}: {e}"));
    KEEP.get_or_init(Default::default)
        .lock()
        .expect("container registry poisoned")
        .push(Box::new(container));
    port
}
