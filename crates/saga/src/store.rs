//! The engine's SQL: claiming due sagas under a lease, fenced state writes,
//! the step log, recorded replies.
//!
//! Every statement here is static; times are computed by Postgres (`now()`
//! plus a delay in milliseconds), never by the engine's clock, so replicas
//! with skewed clocks agree on what is due and when a lease has expired.

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::command::{Correlation, Reply};
use crate::engine::IgnoredReply;
use crate::status::{FailureKind, Phase, SagaStatus};
use crate::transition::{LogEntry, Progress, StepFailure, Transition};

/// Channel a `NOTIFY` goes out on when a saga becomes due (started, or a
/// reply recorded), after the transaction that made it due committed
/// ([`crate::SagaEngine::announce`]); the payload is the saga type.
pub const NOTIFY_CHANNEL: &str = "saga_due";

/// The columns the engine works with, plus whether the awaited reply is
/// late (evaluated by Postgres).
macro_rules! instance_columns {
    () => {
        "id, status, data, step_index, attempt, awaiting_reply, \
         (reply_deadline IS NOT NULL AND reply_deadline <= now()) AS reply_overdue, \
         current_step, reply_payload, reply_headers, failure_step, failure_kind, failure_code, \
         failure_message, compensation_failures, last_error, lease_token, version, \
         traceparent, tracestate"
    };
}

/// A saga instance row as the engine reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct InstanceRow {
    pub id: Uuid,
    #[sqlx(try_from = "String")]
    pub status: SagaStatus,
    pub data: serde_json::Value,
    pub step_index: i32,
    pub attempt: i32,
    pub awaiting_reply: bool,
    pub reply_overdue: bool,
    pub current_step: Option<String>,
    pub reply_payload: Option<Vec<u8>>,
    pub reply_headers: Option<serde_json::Value>,
    pub failure_step: Option<String>,
    pub failure_kind: Option<String>,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub compensation_failures: i32,
    pub last_error: Option<String>,
    pub lease_token: i64,
    pub version: i64,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

/// A row that does not make sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("saga {id} has a corrupt row: {reason}")]
pub struct CorruptRow {
    pub id: Uuid,
    pub reason: String,
}

impl InstanceRow {
    pub fn progress(&self) -> Result<Progress, CorruptRow> {
        let corrupt = |reason: String| CorruptRow {
            id: self.id,
            reason,
        };
        let failure = match (&self.failure_step, &self.failure_kind) {
            (Some(step), Some(kind)) => Some(StepFailure {
                step: step.clone(),
                kind: kind
                    .parse::<FailureKind>()
                    .map_err(|error| corrupt(error.to_string()))?,
                code: self.failure_code.clone(),
                message: self.failure_message.clone().unwrap_or_default(),
            }),
            _ => None,
        };
        Ok(Progress {
            status: self.status,
            step_index: self.step_index,
            attempt: u32::try_from(self.attempt)
                .map_err(|_| corrupt(format!("negative attempt {}", self.attempt)))?,
            awaiting_reply: self.awaiting_reply,
            failure,
            compensation_failures: u32::try_from(self.compensation_failures).unwrap_or(0),
            last_error: self.last_error.clone(),
        })
    }

    /// The recorded reply, if any.
    pub fn reply(&self) -> Result<Option<Reply>, CorruptRow> {
        let Some(payload) = &self.reply_payload else {
            return Ok(None);
        };
        let headers: BTreeMap<String, String> = match &self.reply_headers {
            Some(headers) => {
                serde_json::from_value(headers.clone()).map_err(|error| CorruptRow {
                    id: self.id,
                    reason: format!("reply headers: {error}"),
                })?
            }
            None => BTreeMap::new(),
        };
        let step = self.current_step.clone().unwrap_or_default();
        Ok(Some(Reply {
            correlation: Correlation::new(self.id, step, self.status.phase()),
            headers,
            payload: payload.clone(),
        }))
    }
}

/// A saga to insert.
pub(crate) struct NewInstance<'a> {
    pub id: Uuid,
    pub saga_type: &'a str,
    pub data: serde_json::Value,
    pub first_step: &'a str,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

/// Inserts a new saga, due at once ([`announce`] it once committed).
/// `false` when a saga with this id exists already.
pub(crate) async fn insert(
    connection: &mut PgConnection,
    saga: NewInstance<'_>,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO saga_instances \
             (id, saga_type, status, data, step_index, current_step, due_at, traceparent, tracestate) \
         VALUES ($1, $2, 'CREATED', $3, 0, $4, now(), $5, $6) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(saga.id)
    .bind(saga.saga_type)
    .bind(&saga.data)
    .bind(saga.first_step)
    .bind(&saga.traceparent)
    .bind(&saga.tracestate)
    .execute(&mut *connection)
    .await?;
    Ok(inserted.rows_affected() > 0)
}

/// Tells every listening engine that a saga of `saga_type` is due, in a
/// statement of its own. Never inside the writing transaction: Postgres
/// serialises the commits of notifying transactions on one lock, held
/// through the commit's WAL flush (see the crate's benchmark).
pub(crate) async fn announce(pool: &PgPool, saga_type: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(NOTIFY_CHANNEL)
        .bind(saga_type)
        .execute(pool)
        .await?;
    Ok(())
}

/// Leases up to `limit` due, unleased (or lease-expired) sagas of
/// `saga_type` to `owner`. `SKIP LOCKED` lets replicas claim side by side
/// without waiting on each other's rows; the new `lease_token` fences out
/// whoever held an expired lease before.
pub(crate) async fn claim(
    pool: &PgPool,
    saga_type: &str,
    owner: &str,
    limit: usize,
    lease_ttl: Duration,
) -> Result<Vec<InstanceRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "WITH due AS ( \
             SELECT id AS due_id FROM saga_instances \
              WHERE saga_type = $1 AND due_at <= now() \
                AND (lease_owner IS NULL OR lease_expires_at < now()) \
              ORDER BY due_at \
              LIMIT $2 \
              FOR UPDATE SKIP LOCKED) \
         UPDATE saga_instances \
            SET lease_owner = $3, lease_token = lease_token + 1, \
                lease_expires_at = now() + $4 * interval '1 millisecond' \
           FROM due WHERE id = due.due_id \
         RETURNING ",
        instance_columns!()
    ))
    .bind(saga_type)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .bind(owner)
    .bind(millis(lease_ttl))
    .fetch_all(pool)
    .await
}

/// Re-reads a saga, e.g. after a fenced write found it changed.
pub(crate) async fn load(pool: &PgPool, id: Uuid) -> Result<Option<InstanceRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        instance_columns!(),
        " FROM saga_instances WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// What a committed write returned.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Written {
    pub version: i64,
    /// Time since the saga was created, by the database's clock.
    pub age: Duration,
}

/// Who may write: the lease holder, on the version it read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fence {
    pub id: Uuid,
    pub version: i64,
    pub lease_token: i64,
}

/// Writes a saga's full new state, if `fence` still holds. `None` when the
/// row changed since it was read (a reply was recorded) or the lease was
/// taken over: the caller re-reads to tell which.
pub(crate) async fn write_state(
    connection: &mut PgConnection,
    fence: Fence,
    transition: &Transition,
    current_step: Option<&str>,
    data: &serde_json::Value,
) -> Result<Option<Written>, sqlx::Error> {
    let progress = &transition.progress;
    let failure = progress.failure.as_ref();
    let row: Option<(i64, f64)> = sqlx::query_as(
        "UPDATE saga_instances SET \
             status = $4, data = $5, step_index = $6, current_step = $7, attempt = $8, \
             awaiting_reply = $9, \
             reply_deadline = now() + $10 * interval '1 millisecond', \
             reply_payload = NULL, reply_headers = NULL, reply_received_at = NULL, \
             due_at = now() + $11 * interval '1 millisecond', \
             failure_step = $12, failure_kind = $13, failure_code = $14, failure_message = $15, \
             compensation_failures = $16, last_error = $17, \
             finished_at = CASE WHEN $18 THEN now() END, \
             version = version + 1, updated_at = now() \
         WHERE id = $1 AND version = $2 AND lease_token = $3 \
         RETURNING version, extract(epoch FROM now() - created_at)::float8",
    )
    .bind(fence.id)
    .bind(fence.version)
    .bind(fence.lease_token)
    .bind(progress.status.as_str())
    .bind(data)
    .bind(progress.step_index)
    .bind(current_step)
    .bind(i32::try_from(progress.attempt).unwrap_or(i32::MAX))
    .bind(progress.awaiting_reply)
    .bind(transition.reply_deadline_in.map(millis))
    .bind(transition.due_in.map(millis))
    .bind(failure.map(|failure| failure.step.as_str()))
    .bind(failure.map(|failure| failure.kind.as_str()))
    .bind(failure.and_then(|failure| failure.code.as_deref()))
    .bind(failure.map(|failure| failure.message.as_str()))
    .bind(i32::try_from(progress.compensation_failures).unwrap_or(i32::MAX))
    .bind(progress.last_error.as_deref())
    .bind(transition.finished.is_some())
    .fetch_optional(connection)
    .await?;
    Ok(row.map(|(version, age)| Written {
        version,
        age: Duration::try_from_secs_f64(age).unwrap_or_default(),
    }))
}

/// Appends a step-log row.
pub(crate) async fn append_log(
    connection: &mut PgConnection,
    saga_id: Uuid,
    entry: &LogEntry,
    executed_by: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO saga_step_log \
             (saga_id, step_index, step, phase, attempt, outcome, error_code, error, executed_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(saga_id)
    .bind(i32::try_from(entry.step_index).unwrap_or(i32::MAX))
    .bind(&entry.step)
    .bind(entry.phase.as_str())
    .bind(i32::try_from(entry.attempt).unwrap_or(i32::MAX))
    .bind(entry.outcome.as_str())
    .bind(&entry.error_code)
    .bind(&entry.error)
    .bind(executed_by)
    .execute(connection)
    .await?;
    Ok(())
}

/// Notes an error that kept the engine from moving a saga (database,
/// hook, undecodable data) and makes it due again after `retry_in`.
pub(crate) async fn record_engine_error(
    pool: &PgPool,
    id: Uuid,
    lease_token: i64,
    error: &str,
    retry_in: Duration,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE saga_instances \
            SET last_error = $3, due_at = now() + $4 * interval '1 millisecond', \
                version = version + 1, updated_at = now() \
          WHERE id = $1 AND lease_token = $2 AND due_at IS NOT NULL",
    )
    .bind(id)
    .bind(lease_token)
    .bind(error)
    .bind(millis(retry_in))
    .execute(pool)
    .await?;
    Ok(())
}

/// Extends the leases `owner` holds (`(id, lease_token)` pairs). A lease
/// released or taken over meanwhile stays as it is: the owner and token
/// checks keep a renewal that raced with a release from reviving it.
pub(crate) async fn renew_leases(
    pool: &PgPool,
    owner: &str,
    held: &[(Uuid, i64)],
    lease_ttl: Duration,
) -> Result<u64, sqlx::Error> {
    if held.is_empty() {
        return Ok(0);
    }
    let (ids, tokens): (Vec<Uuid>, Vec<i64>) = held.iter().copied().unzip();
    let renewed = sqlx::query(
        "UPDATE saga_instances AS s \
            SET lease_expires_at = now() + $4 * interval '1 millisecond' \
           FROM unnest($1::uuid[], $2::bigint[]) AS held (id, token) \
          WHERE s.id = held.id AND s.lease_token = held.token AND s.lease_owner = $3",
    )
    .bind(&ids)
    .bind(&tokens)
    .bind(owner)
    .bind(millis(lease_ttl))
    .execute(pool)
    .await?;
    Ok(renewed.rows_affected())
}

/// Gives a lease up, so any replica may pick the saga up when it is due.
pub(crate) async fn release(pool: &PgPool, id: Uuid, lease_token: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE saga_instances SET lease_owner = NULL, lease_expires_at = NULL \
          WHERE id = $1 AND lease_token = $2",
    )
    .bind(id)
    .bind(lease_token)
    .execute(pool)
    .await?;
    Ok(())
}

/// Makes every saga of `saga_type` that awaits a reply due now, so its
/// command is sent again (same attempt, same key).
pub(crate) async fn resume_awaiting(pool: &PgPool, saga_type: &str) -> Result<u64, sqlx::Error> {
    let resumed = sqlx::query(
        "UPDATE saga_instances SET due_at = now() \
          WHERE saga_type = $1 AND awaiting_reply AND reply_received_at IS NULL \
            AND due_at IS NOT NULL AND due_at > now()",
    )
    .bind(saga_type)
    .execute(pool)
    .await?;
    Ok(resumed.rows_affected())
}

/// Deletes up to `limit` sagas of `saga_type` that completed or were
/// compensated more than `retention` ago, their step logs with them;
/// returns how many went. FAILED sagas are never deleted: each is an
/// inconsistency an operator has to resolve.
pub(crate) async fn purge_finished(
    pool: &PgPool,
    saga_type: &str,
    retention: Duration,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let purged = sqlx::query(
        "DELETE FROM saga_instances WHERE id IN ( \
             SELECT id FROM saga_instances \
              WHERE saga_type = $1 AND status IN ('COMPLETED', 'COMPENSATED') \
                AND finished_at < now() - $2 * interval '1 millisecond' \
              LIMIT $3)",
    )
    .bind(saga_type)
    .bind(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX))
    .bind(limit)
    .execute(pool)
    .await?;
    Ok(purged.rows_affected())
}

/// How long until the next saga of `saga_type` can be claimed, if any is
/// waiting (zero when one is claimable now).
pub(crate) async fn next_due_in(
    pool: &PgPool,
    saga_type: &str,
) -> Result<Option<Duration>, sqlx::Error> {
    let seconds: Option<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM min( \
                    CASE WHEN lease_owner IS NULL THEN due_at \
                         ELSE greatest(due_at, lease_expires_at) END) - now())::float8 \
           FROM saga_instances WHERE saga_type = $1 AND due_at IS NOT NULL",
    )
    .bind(saga_type)
    .fetch_one(pool)
    .await?;
    Ok(seconds.map(|seconds| Duration::try_from_secs_f64(seconds).unwrap_or(Duration::ZERO)))
}

/// Records `reply` for its saga if the saga awaits exactly that step and
/// phase and has no reply yet, and makes the saga due. Returns the saga type
/// when recorded.
pub(crate) async fn record_reply(
    connection: &mut PgConnection,
    reply: &Reply,
) -> Result<Result<String, IgnoredReply>, sqlx::Error> {
    let correlation = &reply.correlation;
    let status = match correlation.phase {
        Phase::Action => SagaStatus::Running,
        Phase::Compensation => SagaStatus::Compensating,
    };
    let headers = serde_json::to_value(&reply.headers).unwrap_or_default();
    let saga_type: Option<String> = sqlx::query_scalar(
        "UPDATE saga_instances \
            SET reply_payload = $4, reply_headers = $5, reply_received_at = now(), due_at = now(), \
                version = version + 1, updated_at = now() \
          WHERE id = $1 AND current_step = $2 AND status = $3 \
            AND awaiting_reply AND reply_received_at IS NULL \
         RETURNING saga_type",
    )
    .bind(correlation.saga_id)
    .bind(&correlation.step)
    .bind(status.as_str())
    .bind(&reply.payload)
    .bind(&headers)
    .fetch_optional(&mut *connection)
    .await?;
    if let Some(saga_type) = saga_type {
        return Ok(Ok(saga_type));
    }
    let found: Option<(String, Option<String>, bool, bool)> = sqlx::query_as(
        "SELECT status, current_step, awaiting_reply, reply_received_at IS NOT NULL \
           FROM saga_instances WHERE id = $1",
    )
    .bind(correlation.saga_id)
    .fetch_optional(connection)
    .await?;
    let Some((status, current_step, awaiting_reply, recorded)) = found else {
        return Ok(Err(IgnoredReply::UnknownSaga));
    };
    let status = SagaStatus::try_from(status).map_err(|error| sqlx::Error::Decode(error.into()))?;
    Ok(Err(if status.is_finished() {
        IgnoredReply::Finished { status }
    } else if recorded && current_step.as_deref() == Some(correlation.step.as_str()) {
        IgnoredReply::AlreadyRecorded
    } else {
        IgnoredReply::NotAwaited {
            status,
            current_step,
            awaiting_reply,
        }
    }))
}

/// A duration in whole milliseconds, for `now() + $n * interval '1 millisecond'`.
fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
