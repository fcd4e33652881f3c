//! Shared fixtures: a migrated database per test and a sample aggregate.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use eventstore::{Aggregate, DomainEvent, EventDecodeError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use testkit::postgres::TestDatabase;

/// A fresh database with the crate's schema installed.
pub async fn migrated_database() -> TestDatabase {
    let database = testkit::postgres::fresh_database().await;
    eventstore::migrate(&database.pool)
        .await
        .expect("eventstore migrations");
    database
}

/// A larger pool on the same database, for tests with many concurrent tasks.
pub async fn pool_with(database: &TestDatabase, connections: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(connections)
        .connect(&database.url)
        .await
        .expect("connect")
}

/// A sample aggregate: a wallet-like account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub status: Status,
    pub owner: String,
    pub balance: i64,
    pub currency: String,
    pub deposits: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    #[default]
    New,
    Active,
    Frozen,
    Closed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountEvent {
    Opened {
        owner: String,
    },
    /// Schema version 2; version 1 had no currency (it was always EUR).
    Deposited {
        amount: i64,
        currency: String,
    },
    Withdrawn {
        amount: i64,
    },
    Frozen,
    Unfrozen,
    Closed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountCommand {
    Open { owner: String },
    Deposit { amount: i64 },
    Withdraw { amount: i64 },
    Freeze,
    Unfreeze,
    Close,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    #[error("account is {0:?}")]
    WrongStatus(Status),
    #[error("amount must be positive")]
    NotPositive,
    #[error("insufficient funds")]
    InsufficientFunds,
}

impl DomainEvent for AccountEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::Opened { .. } => "Opened",
            Self::Deposited { .. } => "Deposited",
            Self::Withdrawn { .. } => "Withdrawn",
            Self::Frozen => "Frozen",
            Self::Unfrozen => "Unfrozen",
            Self::Closed => "Closed",
        }
    }

    fn schema_version(&self) -> i32 {
        match self {
            Self::Deposited { .. } => 2,
            _ => 1,
        }
    }

    fn to_payload(&self) -> Result<Value, serde_json::Error> {
        Ok(match self {
            Self::Opened { owner } => json!({ "owner": owner }),
            Self::Deposited { amount, currency } => {
                json!({ "amount": amount, "currency": currency })
            }
            Self::Withdrawn { amount } => json!({ "amount": amount }),
            Self::Frozen | Self::Unfrozen | Self::Closed => json!({}),
        })
    }

    fn from_payload(
        event_type: &str,
        schema_version: i32,
        payload: Value,
    ) -> Result<Self, EventDecodeError> {
        #[derive(Deserialize)]
        struct Opened {
            owner: String,
        }
        #[derive(Deserialize)]
        struct Deposited {
            amount: i64,
            currency: String,
        }
        #[derive(Deserialize)]
        struct Withdrawn {
            amount: i64,
        }
        Ok(match (event_type, schema_version) {
            ("Opened", 1) => {
                let Opened { owner } = serde_json::from_value(payload)?;
                Self::Opened { owner }
            }
            ("Deposited", 2) => {
                let Deposited { amount, currency } = serde_json::from_value(payload)?;
                Self::Deposited { amount, currency }
            }
            ("Withdrawn", 1) => {
                let Withdrawn { amount } = serde_json::from_value(payload)?;
                Self::Withdrawn { amount }
            }
            ("Frozen", 1) => Self::Frozen,
            ("Unfrozen", 1) => Self::Unfrozen,
            ("Closed", 1) => Self::Closed,
            ("Opened" | "Deposited" | "Withdrawn" | "Frozen" | "Unfrozen" | "Closed", _) => {
                return Err(EventDecodeError::UnsupportedSchemaVersion {
                    event_type: event_type.to_owned(),
                    schema_version,
                });
            }
            (other, _) => return Err(EventDecodeError::UnknownType(other.to_owned())),
        })
    }
}

impl Aggregate for Account {
    const CATEGORY: &'static str = "account";
    type Event = AccountEvent;
    type Command = AccountCommand;
    type Error = AccountError;

    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Opened { owner } => {
                self.status = Status::Active;
                self.owner = owner.clone();
                self.currency = "EUR".to_owned();
            }
            AccountEvent::Deposited { amount, currency } => {
                self.balance += amount;
                self.currency = currency.clone();
                self.deposits += 1;
            }
            AccountEvent::Withdrawn { amount } => self.balance -= amount,
            AccountEvent::Frozen => self.status = Status::Frozen,
            AccountEvent::Unfrozen => self.status = Status::Active,
            AccountEvent::Closed => self.status = Status::Closed,
        }
    }

    fn handle(&self, command: AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
        let require = |status: Status| {
            if self.status == status {
                Ok(())
            } else {
                Err(AccountError::WrongStatus(self.status))
            }
        };
        match command {
            AccountCommand::Open { owner } => {
                require(Status::New)?;
                Ok(vec![AccountEvent::Opened { owner }])
            }
            AccountCommand::Deposit { amount } => {
                require(Status::Active)?;
                if amount <= 0 {
                    return Err(AccountError::NotPositive);
                }
                Ok(vec![AccountEvent::Deposited {
                    amount,
                    currency: "EUR".to_owned(),
                }])
            }
            AccountCommand::Withdraw { amount } => {
                require(Status::Active)?;
                if amount <= 0 {
                    return Err(AccountError::NotPositive);
                }
                if amount > self.balance {
                    return Err(AccountError::InsufficientFunds);
                }
                Ok(vec![AccountEvent::Withdrawn { amount }])
            }
            AccountCommand::Freeze => {
                require(Status::Active)?;
                Ok(vec![AccountEvent::Frozen])
            }
            AccountCommand::Unfreeze => {
                require(Status::Frozen)?;
                Ok(vec![AccountEvent::Unfrozen])
            }
            AccountCommand::Close => {
                if self.status == Status::Closed || self.status == Status::New {
                    return Err(AccountError::WrongStatus(self.status));
                }
                // Closing pays out what is left: two events in one command.
                let mut events = Vec::new();
                if self.balance > 0 {
                    events.push(AccountEvent::Withdrawn {
                        amount: self.balance,
                    });
                }
                events.push(AccountEvent::Closed);
                Ok(events)
            }
        }
    }
}

/// The upcaster that reads version-1 `Deposited` events (no currency: EUR).
pub fn account_upcasters() -> eventstore::Upcasters {
    eventstore::Upcasters::new().register("Deposited", 1, |mut payload| {
        let object = payload.as_object_mut().ok_or("payload is not an object")?;
        if !object.contains_key("amount") {
            return Err("no amount".to_owned());
        }
        object.insert("currency".to_owned(), json!("EUR"));
        Ok(payload)
    })
}

/// Reads the global order from `after` until at least `count` events are
/// visible (other transactions on the server delay visibility) or 10 s pass.
pub async fn read_all_eventually(
    store: &eventstore::EventStore,
    after: eventstore::GlobalPosition,
    count: usize,
) -> Vec<eventstore::RecordedEvent> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let events = store.read_all(after, count.max(1) * 2).await.unwrap();
        if events.len() >= count || std::time::Instant::now() >= deadline {
            return events;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
