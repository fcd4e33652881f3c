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

/// A read model of account balances that *accumulates* (balance += amount),
/// so applying an event twice would show, and that refuses events of a
/// stream out of version order. Every applied event is also recorded by its
/// global position, so a double application fails on the primary key.
pub struct BalanceProjection {
    pub name: String,
}

impl BalanceProjection {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
        }
    }

    pub async fn create_tables(pool: &PgPool) {
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS balances (
                 projection text NOT NULL, stream_id text NOT NULL, balance bigint NOT NULL,
                 events bigint NOT NULL, last_version bigint NOT NULL,
                 PRIMARY KEY (projection, stream_id));
             CREATE TABLE IF NOT EXISTS applied_events (
                 projection text NOT NULL, transaction_id text NOT NULL, position bigint NOT NULL,
                 PRIMARY KEY (projection, transaction_id, position));",
        )
        .execute(pool)
        .await
        .unwrap();
    }

    /// `(stream_id, balance, events, last_version)` rows, sorted.
    pub async fn rows(&self, pool: &PgPool) -> Vec<(String, i64, i64, i64)> {
        sqlx::query_as(
            "SELECT stream_id, balance, events, last_version FROM balances \
              WHERE projection = $1 ORDER BY stream_id",
        )
        .bind(&self.name)
        .fetch_all(pool)
        .await
        .unwrap()
    }

    pub async fn applied_count(&self, pool: &PgPool) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM applied_events WHERE projection = $1")
            .bind(&self.name)
            .fetch_one(pool)
            .await
            .unwrap()
    }
}

/// What the read model must contain: the fold of the whole log.
pub fn replay_balances(events: &[eventstore::RecordedEvent]) -> Vec<(String, i64, i64, i64)> {
    let mut rows: std::collections::BTreeMap<String, (i64, i64, i64)> = Default::default();
    for event in events {
        let row = rows.entry(event.stream_id.clone()).or_default();
        row.0 += balance_change(event).unwrap_or(0);
        row.1 += 1;
        row.2 = event.version;
    }
    rows.into_iter()
        .map(|(stream, (balance, events, version))| (stream, balance, events, version))
        .collect()
}

fn balance_change(event: &eventstore::RecordedEvent) -> Result<i64, String> {
    let amount = || {
        event.payload["amount"]
            .as_i64()
            .ok_or_else(|| format!("{} without amount", event.event_type))
    };
    match event.event_type.as_str() {
        "Deposited" => {
            if event.payload.get("currency").is_none() {
                return Err("Deposited without currency (schema version 1?)".to_owned());
            }
            amount()
        }
        "Withdrawn" => Ok(-amount()?),
        _ => Ok(0),
    }
}

#[async_trait::async_trait]
impl eventstore::Projection for BalanceProjection {
    fn name(&self) -> &str {
        &self.name
    }

    async fn apply(
        &self,
        connection: &mut sqlx::PgConnection,
        event: &eventstore::RecordedEvent,
    ) -> Result<(), eventstore::ApplyError> {
        let change =
            balance_change(event).map_err(|reason| eventstore::ApplyError::Other(reason.into()))?;
        sqlx::query("INSERT INTO applied_events VALUES ($1, $2, $3)")
            .bind(&self.name)
            .bind(event.position.transaction_id.to_string())
            .bind(event.position.position)
            .execute(&mut *connection)
            .await?;
        let updated = sqlx::query(
            "UPDATE balances SET balance = balance + $3, events = events + 1, last_version = $4 \
              WHERE projection = $1 AND stream_id = $2 AND last_version = $4 - 1",
        )
        .bind(&self.name)
        .bind(&event.stream_id)
        .bind(change)
        .bind(event.version)
        .execute(&mut *connection)
        .await?;
        if updated.rows_affected() == 0 {
            if event.version != 1 {
                return Err(eventstore::ApplyError::Other(
                    format!("{} version {} out of order", event.stream_id, event.version).into(),
                ));
            }
            sqlx::query("INSERT INTO balances VALUES ($1, $2, $3, 1, 1)")
                .bind(&self.name)
                .bind(&event.stream_id)
                .bind(change)
                .execute(&mut *connection)
                .await?;
        }
        Ok(())
    }

    /// The same effect as `apply` per event, in four statements per batch.
    async fn apply_batch(
        &self,
        connection: &mut sqlx::PgConnection,
        events: &[eventstore::RecordedEvent],
    ) -> Result<(), eventstore::ApplyError> {
        let out_of_order = |stream: &str, version: i64| {
            eventstore::ApplyError::Other(format!("{stream} version {version} out of order").into())
        };
        let transaction_ids: Vec<String> = events
            .iter()
            .map(|event| event.position.transaction_id.to_string())
            .collect();
        let positions: Vec<i64> = events.iter().map(|event| event.position.position).collect();
        sqlx::query(
            "INSERT INTO applied_events SELECT $1, t, p FROM UNNEST($2::text[], $3::int8[]) AS u(t, p)",
        )
        .bind(&self.name)
        .bind(&transaction_ids)
        .bind(&positions)
        .execute(&mut *connection)
        .await?;

        // stream -> (first version, last version, balance change, events)
        let mut folded: std::collections::BTreeMap<&str, (i64, i64, i64, i64)> = Default::default();
        for event in events {
            let change = balance_change(event)
                .map_err(|reason| eventstore::ApplyError::Other(reason.into()).at(event))?;
            match folded.get_mut(event.stream_id.as_str()) {
                None => {
                    folded.insert(&event.stream_id, (event.version, event.version, change, 1));
                }
                Some(row) => {
                    if event.version != row.1 + 1 {
                        return Err(out_of_order(&event.stream_id, event.version));
                    }
                    row.1 = event.version;
                    row.2 += change;
                    row.3 += 1;
                }
            }
        }
        let streams: Vec<&str> = folded.keys().copied().collect();
        let current: std::collections::HashMap<String, i64> = sqlx::query_as(
            "SELECT stream_id, last_version FROM balances \
              WHERE projection = $1 AND stream_id = ANY($2) FOR UPDATE",
        )
        .bind(&self.name)
        .bind(&streams)
        .fetch_all(&mut *connection)
        .await?
        .into_iter()
        .collect();
        for (stream, (first, ..)) in &folded {
            let expected_first = current.get(*stream).map_or(1, |last| last + 1);
            if *first != expected_first {
                return Err(out_of_order(stream, *first));
            }
        }
        let changes: Vec<i64> = folded.values().map(|row| row.2).collect();
        let counts: Vec<i64> = folded.values().map(|row| row.3).collect();
        let versions: Vec<i64> = folded.values().map(|row| row.1).collect();
        sqlx::query(
            "INSERT INTO balances \
             SELECT $1, s, b, e, v FROM UNNEST($2::text[], $3::int8[], $4::int8[], $5::int8[]) AS u(s, b, e, v) \
             ON CONFLICT (projection, stream_id) DO UPDATE \
                SET balance = balances.balance + EXCLUDED.balance, \
                    events = balances.events + EXCLUDED.events, \
                    last_version = EXCLUDED.last_version",
        )
        .bind(&self.name)
        .bind(&streams)
        .bind(&changes)
        .bind(&counts)
        .bind(&versions)
        .execute(&mut *connection)
        .await?;
        Ok(())
    }

    async fn reset(
        &self,
        connection: &mut sqlx::PgConnection,
    ) -> Result<(), eventstore::ApplyError> {
        sqlx::query("DELETE FROM balances WHERE projection = $1")
            .bind(&self.name)
            .execute(&mut *connection)
            .await?;
        sqlx::query("DELETE FROM applied_events WHERE projection = $1")
            .bind(&self.name)
            .execute(&mut *connection)
            .await?;
        Ok(())
    }
}

/// Every event in the log, in global order (waits for visibility).
pub async fn full_log(store: &eventstore::EventStore) -> Vec<eventstore::RecordedEvent> {
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM es_events")
        .fetch_one(store.pool())
        .await
        .unwrap();
    let total = usize::try_from(total).unwrap();
    let mut events: Vec<eventstore::RecordedEvent> = Vec::with_capacity(total);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while events.len() < total {
        let after = events.last().map(|e| e.position).unwrap_or_default();
        let batch = store.read_all(after, 5000).await.unwrap();
        if batch.is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "log not visible in time"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        events.extend(batch);
    }
    events
}
