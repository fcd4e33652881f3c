//! Read-only views of saga instances for operators, e.g. behind
//! `GET /api/v1/admin/sagas?status=FAILED`.
//!
//! A FAILED saga is one whose compensation gave up: something in the system
//! is inconsistent and a person has to look. The listing therefore carries,
//! for each instance, the failure that started the compensation, the latest
//! error, the saga's data (the context: which order, which amounts) and the
//! step-log entries that went wrong, so the admin page needs no second
//! request to see what happened. [`get`] adds the full step log.
//!
//! Lists are newest first and cursor-paginated like every list in the
//! platform: the cursor is the last id of a page (ids are UUID v7, so id
//! order is creation order).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::status::{FailureKind, Phase, SagaStatus, StepOutcome};
use crate::transition::StepFailure;

/// Largest page [`list`] returns.
pub const MAX_PAGE_SIZE: u32 = 500;

/// Which instances to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SagaFilter {
    pub status: Option<SagaStatus>,
    pub saga_type: Option<String>,
    /// Page size; 0 means 50. Capped at [`MAX_PAGE_SIZE`].
    pub limit: u32,
    /// Continue after this id (the previous page's `next_cursor`).
    pub cursor: Option<Uuid>,
}

impl SagaFilter {
    pub fn with_status(mut self, status: SagaStatus) -> Self {
        self.status = Some(status);
        self
    }

    pub fn with_saga_type(mut self, saga_type: impl Into<String>) -> Self {
        self.saga_type = Some(saga_type.into());
        self
    }

    pub fn with_limit(mut self, limit: u32) -> Self {
        self.limit = limit;
        self
    }

    pub fn after(mut self, cursor: Uuid) -> Self {
        self.cursor = Some(cursor);
        self
    }
}

/// One page of instances.
#[derive(Debug, Clone, Serialize)]
pub struct SagaPage {
    pub items: Vec<SagaInstance>,
    /// Pass as [`SagaFilter::cursor`] for the next page; `None` on the last.
    pub next_cursor: Option<Uuid>,
}

/// A saga instance as operators see it.
#[derive(Debug, Clone, Serialize)]
pub struct SagaInstance {
    pub id: Uuid,
    pub saga_type: String,
    pub status: SagaStatus,
    /// The step being run or compensated; `None` once finished.
    pub current_step: Option<String>,
    /// Attempts made on the current step.
    pub attempt: u32,
    pub awaiting_reply: bool,
    /// The saga's data as stored.
    pub data: serde_json::Value,
    /// What made the saga compensate.
    pub failure: Option<StepFailure>,
    /// Compensations that gave up.
    pub compensation_failures: u32,
    pub last_error: Option<String>,
    /// Step-log entries that failed (rejected, retrying, exhausted).
    pub errors: Vec<StepLogEntry>,
    pub lease_owner: Option<String>,
    pub due_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A saga instance with its whole step log.
#[derive(Debug, Clone, Serialize)]
pub struct SagaDetails {
    #[serde(flatten)]
    pub instance: SagaInstance,
    pub steps: Vec<StepLogEntry>,
}

/// One attempt of one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct StepLogEntry {
    #[serde(skip)]
    pub saga_id: Uuid,
    pub step_index: i32,
    pub step: String,
    #[sqlx(try_from = "String")]
    pub phase: Phase,
    pub attempt: i32,
    #[sqlx(try_from = "String")]
    pub outcome: StepOutcome,
    pub error_code: Option<String>,
    pub error: Option<String>,
    /// The engine instance that ran the attempt.
    pub executed_by: Option<String>,
    pub recorded_at: DateTime<Utc>,
}

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("saga {id} has a corrupt row: {reason}")]
    Corrupt { id: Uuid, reason: String },
}

#[derive(sqlx::FromRow)]
struct InstanceListRow {
    id: Uuid,
    saga_type: String,
    #[sqlx(try_from = "String")]
    status: SagaStatus,
    current_step: Option<String>,
    attempt: i32,
    awaiting_reply: bool,
    data: serde_json::Value,
    failure_step: Option<String>,
    failure_kind: Option<String>,
    failure_code: Option<String>,
    failure_message: Option<String>,
    compensation_failures: i32,
    last_error: Option<String>,
    lease_owner: Option<String>,
    due_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

impl InstanceListRow {
    fn into_instance(self, errors: Vec<StepLogEntry>) -> Result<SagaInstance, QueryError> {
        let failure = match (self.failure_step, self.failure_kind) {
            (Some(step), Some(kind)) => Some(StepFailure {
                step,
                kind: kind
                    .parse::<FailureKind>()
                    .map_err(|error| QueryError::Corrupt {
                        id: self.id,
                        reason: error.to_string(),
                    })?,
                code: self.failure_code,
                message: self.failure_message.unwrap_or_default(),
            }),
            _ => None,
        };
        Ok(SagaInstance {
            id: self.id,
            saga_type: self.saga_type,
            status: self.status,
            current_step: self.current_step.filter(|_| !self.status.is_finished()),
            attempt: u32::try_from(self.attempt).unwrap_or(0),
            awaiting_reply: self.awaiting_reply,
            data: self.data,
            failure,
            compensation_failures: u32::try_from(self.compensation_failures).unwrap_or(0),
            last_error: self.last_error,
            errors,
            lease_owner: self.lease_owner,
            due_at: self.due_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
            finished_at: self.finished_at,
        })
    }
}

macro_rules! list_columns {
    () => {
        "id, saga_type, status, current_step, attempt, awaiting_reply, data, failure_step, \
         failure_kind, failure_code, failure_message, compensation_failures, last_error, \
         lease_owner, due_at, created_at, updated_at, finished_at"
    };
}

macro_rules! log_columns {
    () => {
        "saga_id, step_index, step, phase, attempt, outcome, error_code, error, executed_by, \
         recorded_at"
    };
}

/// Lists instances, newest first.
pub async fn list(pool: &PgPool, filter: &SagaFilter) -> Result<SagaPage, QueryError> {
    let limit = match filter.limit {
        0 => 50,
        limit => limit.min(MAX_PAGE_SIZE),
    };
    let mut rows: Vec<InstanceListRow> = sqlx::query_as(concat!(
        "SELECT ",
        list_columns!(),
        " FROM saga_instances \
          WHERE ($1::text IS NULL OR status = $1) \
            AND ($2::text IS NULL OR saga_type = $2) \
            AND ($3::uuid IS NULL OR id < $3) \
          ORDER BY id DESC \
          LIMIT $4"
    ))
    .bind(filter.status.map(SagaStatus::as_str))
    .bind(filter.saga_type.as_deref())
    .bind(filter.cursor)
    .bind(i64::from(limit) + 1)
    .fetch_all(pool)
    .await?;
    let has_more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor = if has_more {
        rows.last().map(|row| row.id)
    } else {
        None
    };

    let ids: Vec<Uuid> = rows.iter().map(|row| row.id).collect();
    let errors: Vec<StepLogEntry> = sqlx::query_as(concat!(
        "SELECT ",
        log_columns!(),
        " FROM saga_step_log \
          WHERE saga_id = ANY($1) AND outcome IN ('rejected', 'retrying', 'exhausted') \
          ORDER BY saga_id, id"
    ))
    .bind(&ids)
    .fetch_all(pool)
    .await?;

    let mut errors_by_saga: HashMap<Uuid, Vec<StepLogEntry>> = HashMap::new();
    for entry in errors {
        errors_by_saga.entry(entry.saga_id).or_default().push(entry);
    }
    let items = rows
        .into_iter()
        .map(|row| {
            let errors = errors_by_saga.remove(&row.id).unwrap_or_default();
            row.into_instance(errors)
        })
        .collect::<Result<_, _>>()?;
    Ok(SagaPage { items, next_cursor })
}

/// One instance with its full step log, oldest entry first.
pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<SagaDetails>, QueryError> {
    let row: Option<InstanceListRow> = sqlx::query_as(concat!(
        "SELECT ",
        list_columns!(),
        " FROM saga_instances WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let steps = step_log(pool, id).await?;
    let errors = steps
        .iter()
        .filter(|entry| entry.outcome.is_error())
        .cloned()
        .collect();
    Ok(Some(SagaDetails {
        instance: row.into_instance(errors)?,
        steps,
    }))
}

/// A saga's step log, oldest entry first.
pub async fn step_log(pool: &PgPool, id: Uuid) -> Result<Vec<StepLogEntry>, QueryError> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        log_columns!(),
        " FROM saga_step_log WHERE saga_id = $1 ORDER BY id"
    ))
    .bind(id)
    .fetch_all(pool)
    .await?)
}

/// The step logs of several instances in one query (a page of
/// [`list`]), each in order; an instance without entries has none.
pub async fn step_logs(
    pool: &PgPool,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, Vec<StepLogEntry>>, QueryError> {
    let entries: Vec<StepLogEntry> = sqlx::query_as(concat!(
        "SELECT ",
        log_columns!(),
        " FROM saga_step_log WHERE saga_id = ANY($1) ORDER BY saga_id, id"
    ))
    .bind(ids)
    .fetch_all(pool)
    .await?;
    let mut logs: HashMap<Uuid, Vec<StepLogEntry>> = HashMap::new();
    for entry in entries {
        logs.entry(entry.saga_id).or_default().push(entry);
    }
    Ok(logs)
}

/// How many instances are in each status (for a dashboard or a gauge).
pub async fn count_by_status(pool: &PgPool) -> Result<Vec<StatusCount>, QueryError> {
    Ok(sqlx::query_as(
        "SELECT status, count(*) AS count FROM saga_instances GROUP BY status ORDER BY status",
    )
    .fetch_all(pool)
    .await?)
}

/// Instances in one status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct StatusCount {
    #[sqlx(try_from = "String")]
    pub status: SagaStatus,
    pub count: i64,
}
