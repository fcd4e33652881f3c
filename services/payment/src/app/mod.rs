//! Use cases: what the service does, independent of how it is asked.
//!
//! [`Payments`] is called by every adapter — REST and gRPC for the owner and
//! administrators, the RabbitMQ consumer for the saga's commands, the Kafka
//! consumer for `user.registered` — and each use case reads the same way:
//! parse nothing (the adapters hand in domain values), load the wallet,
//! let the domain decide, then store the events, the outbox messages that
//! announce them and the idempotency record in one transaction
//! ([`crate::store`]).
//!
//! Writes use optimistic concurrency: when another writer changed the wallet
//! between load and append, the whole use case runs again on the new state
//! ([`Retry`]), so two charges racing on one wallet are decided one after the
//! other and neither is lost. Commands ([`commands`]) change wallets, queries
//! ([`queries`]) only read.

pub mod commands;
pub mod queries;

use std::time::Duration;

use eventstore::EventMetadata;
use platform::db::now;
use uuid::Uuid;

use crate::domain::ids::UserId;
use crate::domain::money::{Amount, Currency};
use crate::error::PaymentError;
use crate::messaging::outbox::Announcements;
use crate::store::Store;

/// How wallets are opened.
#[derive(Debug, Clone)]
pub struct WalletPolicy {
    /// Every wallet's currency.
    pub currency: Currency,
    /// Credited when a wallet opens, if any.
    pub welcome_credit: Option<Amount>,
}

/// The service's use cases.
#[derive(Debug, Clone)]
pub struct Payments {
    store: Store,
    policy: WalletPolicy,
    announcements: Announcements,
}

impl Payments {
    pub fn new(store: Store, policy: WalletPolicy, announcements: Announcements) -> Self {
        Self {
            store,
            policy,
            announcements,
        }
    }
}

/// Who asked, for the events' metadata (and through it, the audit trail).
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// The authenticated user, or the customer a command is for.
    pub user_id: Option<UserId>,
    /// Ties everything done for one business request together (the saga id).
    pub correlation_id: Option<Uuid>,
    /// The message that caused the change.
    pub causation_id: Option<Uuid>,
}

impl RequestContext {
    pub fn user(user: UserId) -> Self {
        Self {
            user_id: Some(user),
            ..Self::default()
        }
    }

    /// Event metadata carrying this context and the current trace.
    fn metadata(&self) -> EventMetadata {
        let mut metadata = EventMetadata::default().with_current_trace_context();
        metadata.user_id = self.user_id.map(|user| user.to_string());
        metadata.correlation_id = self.correlation_id;
        metadata.causation_id = self.causation_id;
        metadata
    }
}

/// Paces the re-runs of a use case that lost a write race.
///
/// Contention on one wallet is short-lived (a transaction takes
/// milliseconds), so the first retries come quickly; the jitter keeps
/// writers that collided from colliding again in lockstep. After
/// [`Retry::ATTEMPTS`] the request fails as `UNAVAILABLE`, which a consumer
/// retries later and an HTTP client may retry.
#[derive(Debug, Default)]
pub struct Retry {
    attempt: u32,
}

impl Retry {
    pub const ATTEMPTS: u32 = 30;
    const INITIAL: Duration = Duration::from_millis(2);
    const MAX: Duration = Duration::from_millis(200);

    pub fn new() -> Self {
        Self::default()
    }

    /// Waits before the next run, or fails when runs are used up.
    pub async fn wait(&mut self) -> Result<(), PaymentError> {
        self.attempt += 1;
        if self.attempt >= Self::ATTEMPTS {
            return Err(PaymentError::Unavailable(format!(
                "the wallet kept changing under {} attempts",
                self.attempt
            )));
        }
        let exponent = self.attempt.min(16);
        let ceiling = Self::INITIAL.saturating_mul(1 << exponent).min(Self::MAX);
        tokio::time::sleep(ceiling.mul_f64(rand::random_range(0.5..1.0))).await;
        Ok(())
    }
}
