//! Configuration from the environment, and the factory that turns it into
//! one broker handle per messaging channel.
//!
//! Services think in *channels* — integration events, saga commands, status
//! notifications — not in brokers. DESIGN.md assigns Kafka to integration
//! events (replayable, partitioned by aggregate), RabbitMQ to saga commands
//! and replies (per-message acks, request/reply, delayed retries) and NATS to
//! notifications (cheap fan-out) and the fault-flag KV. Keeping that mapping
//! in configuration (`MESSAGING_*_BROKER`) rather than in code is what lets
//! the same contract-tested API be benchmarked or demoed on another broker
//! without touching a service.

use clap::{Args, ValueEnum};
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::error::Result;
use crate::kafka::{Kafka, KafkaConfig};
use crate::kv::{self, KeyValue};
use crate::nats::{Nats, NatsConfig};
use crate::rabbitmq::{RabbitMq, RabbitMqConfig};

pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const DEFAULT_KAFKA_BROKERS: &str = "127.0.0.1:9092";
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// A broker a channel can be carried by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum BrokerKind {
    Rabbitmq,
    Kafka,
    Nats,
}

/// What a message is for; each kind is carried by one configured broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Integration events from the outbox (`ferrishop.<svc>.events`).
    Events,
    /// Saga commands and their replies.
    Commands,
    /// Status notifications (`ferrishop.orders.<id>.status`).
    Notifications,
}

/// Broker endpoints and channel assignment; `#[command(flatten)]` it into a
/// service's configuration.
#[derive(Debug, Clone, Args)]
pub struct MessagingArgs {
    /// RabbitMQ URL.
    #[arg(long, env = "AMQP_URL", default_value = DEFAULT_AMQP_URL)]
    pub amqp_url: String,

    /// Kafka bootstrap servers, `host:port[,host:port...]`.
    #[arg(long, env = "KAFKA_BROKERS", default_value = DEFAULT_KAFKA_BROKERS)]
    pub kafka_brokers: String,

    /// NATS URL (JetStream enabled).
    #[arg(long, env = "NATS_URL", default_value = DEFAULT_NATS_URL)]
    pub nats_url: String,

    /// Broker carrying integration events.
    #[arg(long, env = "MESSAGING_EVENTS_BROKER", value_enum, default_value_t = BrokerKind::Kafka)]
    pub events_broker: BrokerKind,

    /// Broker carrying saga commands and replies.
    #[arg(long, env = "MESSAGING_COMMANDS_BROKER", value_enum, default_value_t = BrokerKind::Rabbitmq)]
    pub commands_broker: BrokerKind,

    /// Broker carrying status notifications.
    #[arg(long, env = "MESSAGING_NOTIFICATIONS_BROKER", value_enum, default_value_t = BrokerKind::Nats)]
    pub notifications_broker: BrokerKind,
}

impl Default for MessagingArgs {
    fn default() -> Self {
        Self {
            amqp_url: DEFAULT_AMQP_URL.to_owned(),
            kafka_brokers: DEFAULT_KAFKA_BROKERS.to_owned(),
            nats_url: DEFAULT_NATS_URL.to_owned(),
            events_broker: BrokerKind::Kafka,
            commands_broker: BrokerKind::Rabbitmq,
            notifications_broker: BrokerKind::Nats,
        }
    }
}

/// Every broker handle a service needs, built from [`MessagingArgs`].
///
/// Nothing connects here: RabbitMQ and NATS connect on first use and
/// reconnect by themselves, Kafka clients connect in the background, so a
/// service starts even while a broker is still coming up (its `/readyz`
/// reports it through [`Messaging::check`]).
#[derive(Debug, Clone)]
pub struct Messaging {
    rabbitmq: Broker,
    kafka: Broker,
    nats_broker: Broker,
    nats: Nats,
    args: MessagingArgs,
}

impl Messaging {
    /// `service` names the connections (`ferrishop-<service>`) and is the
    /// default CloudEvents source (`/ferrishop/<service>`).
    pub fn new(args: &MessagingArgs, service: &str) -> Result<Self> {
        let client_name = format!("ferrishop-{service}");
        let source = format!("/ferrishop/{service}");
        let nats = Nats::new(NatsConfig::new(&args.nats_url, &client_name));
        Ok(Self {
            rabbitmq: RabbitMq::new(RabbitMqConfig::new(&args.amqp_url, &client_name))
                .into_broker(&source),
            kafka: Kafka::new(KafkaConfig::new(&args.kafka_brokers, &client_name))?
                .into_broker(&source),
            nats_broker: nats.clone().into_broker(&source),
            nats,
            args: args.clone(),
        })
    }

    /// The broker configured for `channel`.
    pub fn broker(&self, channel: Channel) -> &Broker {
        let kind = match channel {
            Channel::Events => self.args.events_broker,
            Channel::Commands => self.args.commands_broker,
            Channel::Notifications => self.args.notifications_broker,
        };
        self.of_kind(kind)
    }

    pub fn events(&self) -> &Broker {
        self.broker(Channel::Events)
    }

    pub fn commands(&self) -> &Broker {
        self.broker(Channel::Commands)
    }

    pub fn notifications(&self) -> &Broker {
        self.broker(Channel::Notifications)
    }

    pub fn of_kind(&self, kind: BrokerKind) -> &Broker {
        match kind {
            BrokerKind::Rabbitmq => &self.rabbitmq,
            BrokerKind::Kafka => &self.kafka,
            BrokerKind::Nats => &self.nats_broker,
        }
    }

    /// The NATS client, for KV buckets.
    pub fn nats(&self) -> &Nats {
        &self.nats
    }

    /// Watches the `ferrishop-faults` bucket until `cancel`, arming and
    /// disarming fault points; fails only if the bucket cannot be opened.
    pub async fn watch_faults(&self, cancel: CancellationToken) -> Result<()> {
        let bucket: KeyValue = self.nats.key_value(kv::FAULTS_BUCKET).await?;
        kv::watch_faults(&bucket, cancel).await;
        Ok(())
    }

    /// Checks every broker a channel is assigned to (for `/readyz`).
    pub async fn check(&self) -> Result<()> {
        let mut kinds = vec![
            self.args.events_broker,
            self.args.commands_broker,
            self.args.notifications_broker,
        ];
        kinds.sort();
        kinds.dedup();
        for kind in kinds {
            self.of_kind(kind).check().await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Service {
        #[command(flatten)]
        messaging: MessagingArgs,
    }

    #[test]
    fn defaults_follow_the_design() {
        let service = Service::try_parse_from(["service"]).map_err(|e| e.to_string());
        let Ok(service) = service else {
            panic!("{service:?}");
        };
        let args = service.messaging;
        assert_eq!(args.amqp_url, DEFAULT_AMQP_URL);
        assert_eq!(args.kafka_brokers, DEFAULT_KAFKA_BROKERS);
        assert_eq!(args.nats_url, DEFAULT_NATS_URL);
        assert_eq!(args.events_broker, BrokerKind::Kafka);
        assert_eq!(args.commands_broker, BrokerKind::Rabbitmq);
        assert_eq!(args.notifications_broker, BrokerKind::Nats);
    }

    #[test]
    fn channels_follow_configuration() {
        let args = MessagingArgs {
            notifications_broker: BrokerKind::Rabbitmq,
            ..MessagingArgs::default()
        };
        let messaging = Messaging::new(&args, "test").map_err(|e| e.to_string());
        let Ok(messaging) = messaging else {
            panic!("{messaging:?}");
        };
        use crate::error::MessagingSystem;
        assert_eq!(messaging.events().system(), MessagingSystem::Kafka);
        assert_eq!(messaging.commands().system(), MessagingSystem::RabbitMq);
        assert_eq!(
            messaging.notifications().system(),
            MessagingSystem::RabbitMq
        );
    }
}
