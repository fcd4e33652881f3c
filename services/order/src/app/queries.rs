//! Use cases that read: one order, a customer's orders, a watch on one
//! order's status, and the admin's saga listing.
//!
//! Orders are read from the read models only. Read-your-writes comes in two
//! ways: a caller that holds a consistency token (from PlaceOrder or
//! CancelOrder) gets an answer that reflects at least that write, and
//! GetOrder of an order the view does not show yet — placed a moment ago —
//! waits until the view has caught up with the order's latest event instead
//! of answering NOT_FOUND.
//!
//! Another customer's order answers NOT_FOUND, as an unknown one does, so
//! order ids do not leak; admins may read any order.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use eventstore::{GlobalPosition, wait_for};
use futures::stream::{self, BoxStream, StreamExt};
use platform::pagination::PageSize;
use saga::query::{SagaFilter, StepLogEntry};
use saga::{Phase, SagaStatus, StepOutcome};
use tokio::sync::broadcast;
use uuid::Uuid;

use super::{Caller, Orders};
use crate::domain::ids::OrderId;
use crate::domain::order::OrderStatus;
use crate::error::OrderError;
use crate::feed::FeedEvent;
use crate::projections::orders::{ORDER_HISTORY, ORDER_VIEW, OrderSummary};
use crate::projections::product_sales::{self, DailySales};

/// A watcher re-reads its order at least this often, whether or not a
/// notification arrived (notifications are hints; see [`crate::feed`]).
const WATCH_RESYNC: Duration = Duration::from_secs(5);

/// A page request: size and where the previous page ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Page<C> {
    pub size: PageSize,
    pub after: Option<C>,
}

/// One page of a customer's orders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderPage {
    pub orders: Vec<OrderSummary>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<OrderId>,
}

/// One step of a saga instance, from its step log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepSummary {
    pub name: String,
    pub status: StepStatus,
    pub attempts: u32,
    pub error: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// Where one step of a saga stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
    Compensated,
}

/// A saga instance as the admin listing shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct SagaSummary {
    pub id: Uuid,
    pub saga_type: String,
    pub order_id: Option<OrderId>,
    pub status: SagaStatus,
    pub steps: Vec<StepSummary>,
    pub failure_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One page of sagas.
#[derive(Debug, Clone, PartialEq)]
pub struct SagaPage {
    pub sagas: Vec<SagaSummary>,
    pub next: Option<Uuid>,
}

impl Orders {
    /// One order the caller may see.
    pub async fn get_order(
        &self,
        caller: &Caller,
        order_id: OrderId,
        token: Option<GlobalPosition>,
    ) -> Result<OrderSummary, OrderError> {
        if let Some(token) = token {
            self.catch_up(ORDER_VIEW, token).await?;
        }
        let mut order = self.read_models.order(order_id).await?;
        if order.is_none()
            && let Some(latest) = self.store.last_position(order_id).await?
        {
            // Placed, but not in the view yet.
            self.catch_up(ORDER_VIEW, latest).await?;
            order = self.read_models.order(order_id).await?;
        }
        order
            .filter(|order| caller.is_admin || order.customer_id == caller.user_id)
            .ok_or(OrderError::OrderNotFound(order_id))
    }

    /// The caller's orders, newest first.
    pub async fn list_orders(
        &self,
        caller: &Caller,
        status: Option<OrderStatus>,
        page: Page<OrderId>,
        token: Option<GlobalPosition>,
    ) -> Result<OrderPage, OrderError> {
        if let Some(token) = token {
            self.catch_up(ORDER_HISTORY, token).await?;
        }
        let size = page.size.get();
        let mut orders = self
            .read_models
            .customer_orders(caller.user_id, status, page.after, size + 1)
            .await?;
        let next = if orders.len() > size as usize {
            orders.truncate(size as usize);
            orders.last().map(|order| order.order_id)
        } else {
            None
        };
        Ok(OrderPage { orders, next })
    }

    /// The order's current status, then each status it reaches, until it
    /// reaches one no other can follow (REJECTED, CANCELLED).
    pub async fn watch_order(
        &self,
        caller: &Caller,
        order_id: OrderId,
    ) -> Result<BoxStream<'static, Result<OrderSummary, OrderError>>, OrderError> {
        // Subscribe before the first read, so no change slips in between.
        let feed = self.feed.subscribe();
        let first = self.get_order(caller, order_id, None).await?;
        let read_models = self.read_models.clone();
        let watch = Watch {
            feed,
            last: first.status,
            done: first.status.is_final(),
        };
        let changes = stream::unfold(watch, move |mut watch| {
            let read_models = read_models.clone();
            async move {
                loop {
                    if watch.done {
                        return None;
                    }
                    let reread = match tokio::time::timeout(WATCH_RESYNC, watch.feed.recv()).await {
                        Ok(Ok(FeedEvent::Changed(id))) => id == order_id,
                        Ok(Ok(FeedEvent::Resync) | Err(broadcast::error::RecvError::Lagged(_))) => {
                            true
                        }
                        Ok(Err(broadcast::error::RecvError::Closed)) => return None,
                        Err(_elapsed) => true,
                    };
                    if !reread {
                        continue;
                    }
                    match read_models.order(order_id).await {
                        Ok(Some(order)) if order.status != watch.last => {
                            watch.last = order.status;
                            watch.done = order.status.is_final();
                            return Some((Ok(order), watch));
                        }
                        Ok(_) => {}
                        Err(error) => {
                            watch.done = true;
                            return Some((Err(error), watch));
                        }
                    }
                }
            }
        });
        Ok(stream::once(async { Ok(first) }).chain(changes).boxed())
    }

    /// Saga instances, newest first. Admin only.
    pub async fn list_sagas(
        &self,
        caller: &Caller,
        status: Option<SagaStatus>,
        page: Page<Uuid>,
    ) -> Result<SagaPage, OrderError> {
        caller.require_admin()?;
        let filter = SagaFilter {
            status,
            saga_type: None,
            limit: page.size.get(),
            cursor: page.after,
        };
        let pool = self.store.pool();
        let listed = saga::query::list(pool, &filter).await?;
        let ids: Vec<_> = listed.items.iter().map(|instance| instance.id).collect();
        let mut logs = saga::query::step_logs(pool, &ids).await?;
        let sagas = listed
            .items
            .into_iter()
            .map(|instance| {
                let log = logs.remove(&instance.id).unwrap_or_default();
                let steps = self
                    .sagas
                    .step_names(&instance.saga_type)
                    .into_iter()
                    .map(|name| step_summary(name, &log))
                    .collect();
                let failure_reason = instance
                    .failure
                    .as_ref()
                    .map(|failure| crate::saga::failure_reason(Some(failure)).to_string());
                SagaSummary {
                    id: instance.id,
                    order_id: instance
                        .data
                        .get("order_id")
                        .and_then(|id| id.as_str())
                        .and_then(|id| OrderId::parse(id).ok()),
                    saga_type: instance.saga_type,
                    status: instance.status,
                    steps,
                    failure_reason,
                    created_at: instance.created_at,
                    updated_at: instance.updated_at,
                }
            })
            .collect();
        Ok(SagaPage {
            sagas,
            next: listed.next_cursor,
        })
    }

    /// The `product_sales` figures of one day. Admin only.
    pub async fn sales_of_day(
        &self,
        caller: &Caller,
        day: NaiveDate,
    ) -> Result<Vec<DailySales>, OrderError> {
        caller.require_admin()?;
        Ok(product_sales::of_day(self.read_models.pool(), day).await?)
    }

    /// Waits until `projection` has applied every event up to `token`.
    async fn catch_up(&self, projection: &str, token: GlobalPosition) -> Result<(), OrderError> {
        wait_for(
            self.read_models.pool(),
            projection,
            token,
            self.consistency_wait,
        )
        .await?;
        Ok(())
    }
}

/// The state of one WatchOrder stream.
struct Watch {
    feed: broadcast::Receiver<FeedEvent>,
    last: OrderStatus,
    done: bool,
}

/// A step's standing, from its entries in the step log (oldest first).
fn step_summary(name: String, log: &[StepLogEntry]) -> StepSummary {
    let entries: Vec<&StepLogEntry> = log.iter().filter(|entry| entry.step == name).collect();
    let action: Vec<&&StepLogEntry> = entries
        .iter()
        .filter(|entry| entry.phase == Phase::Action)
        .collect();
    let compensated = entries
        .iter()
        .any(|entry| entry.phase == Phase::Compensation && entry.outcome == StepOutcome::Succeeded);
    let last = action.last();
    let status = match last.map(|entry| entry.outcome) {
        None => StepStatus::Pending,
        Some(_) if compensated => StepStatus::Compensated,
        Some(StepOutcome::Succeeded) => StepStatus::Succeeded,
        Some(StepOutcome::Rejected | StepOutcome::Exhausted) => StepStatus::Failed,
        Some(_) => StepStatus::Running,
    };
    let finished = matches!(
        status,
        StepStatus::Succeeded | StepStatus::Failed | StepStatus::Compensated
    );
    StepSummary {
        attempts: action
            .iter()
            .map(|entry| u32::try_from(entry.attempt).unwrap_or(0))
            .max()
            .unwrap_or(0),
        error: entries.iter().rev().find_map(|entry| entry.error.clone()),
        started_at: entries.first().map(|entry| entry.recorded_at),
        finished_at: if finished {
            entries.last().map(|entry| entry.recorded_at)
        } else {
            None
        },
        name,
        status,
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn entry(
        step: &str,
        phase: Phase,
        attempt: i32,
        outcome: StepOutcome,
        at: i64,
    ) -> StepLogEntry {
        StepLogEntry {
            saga_id: Uuid::nil(),
            step_index: 0,
            step: step.to_owned(),
            phase,
            attempt,
            outcome,
            error_code: None,
            error: matches!(outcome, StepOutcome::Retrying | StepOutcome::Exhausted)
                .then(|| "no reply".to_owned()),
            executed_by: None,
            recorded_at: Utc.timestamp_opt(1_750_000_000 + at, 0).single().unwrap(),
        }
    }

    #[test]
    fn steps_are_summarised_from_the_step_log() {
        use StepOutcome::*;
        let log = vec![
            entry("reserve_stock", Phase::Action, 1, Succeeded, 0),
            entry("charge_payment", Phase::Action, 1, Sent, 1),
            entry("charge_payment", Phase::Action, 1, Retrying, 4),
            entry("charge_payment", Phase::Action, 2, Sent, 5),
            entry("charge_payment", Phase::Action, 2, Exhausted, 8),
            entry("charge_payment", Phase::Compensation, 1, Succeeded, 9),
            entry("reserve_stock", Phase::Compensation, 1, Succeeded, 10),
        ];
        let charge = step_summary("charge_payment".into(), &log);
        assert_eq!(charge.status, StepStatus::Compensated);
        assert_eq!(charge.attempts, 2);
        assert_eq!(charge.error.as_deref(), Some("no reply"));
        assert_eq!(charge.started_at, Some(log[1].recorded_at));
        assert_eq!(charge.finished_at, Some(log[5].recorded_at));
        assert_eq!(
            step_summary("reserve_stock".into(), &log).status,
            StepStatus::Compensated
        );
        let pending = step_summary("commit_reservation".into(), &log);
        assert_eq!(pending.status, StepStatus::Pending);
        assert_eq!((pending.attempts, pending.started_at), (0, None));

        let running = step_summary("charge_payment".into(), &log[..4]);
        assert_eq!(running.status, StepStatus::Running);
        assert_eq!(running.finished_at, None);
        let failed = step_summary("charge_payment".into(), &log[..5]);
        assert_eq!(failed.status, StepStatus::Failed);
    }
}
