//! Work the service does in the same transaction as a saga's end.
//!
//! When a saga ends, the service usually has something to record about it:
//! the order saga appends `OrderConfirmed` or `OrderRejected` to the order's
//! event stream. Doing that in a separate transaction after the saga
//! committed leaves a window where the saga says COMPLETED and the order
//! still says PENDING — forever, if the process dies in it. So the engine
//! calls [`SagaHooks::on_finished`] on the very transaction that writes the
//! saga's final status: both commit or neither does. A hook that fails rolls
//! the end back; the engine records the error and tries again later (the
//! hook must therefore be idempotent, like every step).
//!
//! The same holds at the other end: [`crate::SagaEngine::start_in`] writes
//! the new saga on the caller's transaction, next to the aggregate it is
//! for.

use async_trait::async_trait;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::definition::SagaData;
use crate::transition::{SagaOutcome, StepFailure};

/// What a failing hook returns; any error type converts into it.
pub type HookError = Box<dyn std::error::Error + Send + Sync>;

/// A saga at its end, as handed to [`SagaHooks::on_finished`].
#[derive(Debug, Clone)]
pub struct FinishedSaga<D> {
    pub id: Uuid,
    pub saga_type: String,
    pub outcome: SagaOutcome,
    pub data: D,
    /// What made the saga compensate; `None` when it completed.
    pub failure: Option<StepFailure>,
}

/// Callbacks run inside the engine's transactions.
#[async_trait]
pub trait SagaHooks<D: SagaData>: Send + Sync {
    /// Runs on the transaction that records the saga's end (COMPLETED,
    /// COMPENSATED or FAILED). Write with `connection`; an error rolls the
    /// end back and it is retried later.
    async fn on_finished(
        &self,
        connection: &mut PgConnection,
        saga: &FinishedSaga<D>,
    ) -> Result<(), HookError>;
}
