use std::collections::BTreeMap;
use std::time::Duration;

use saga::{
    Command, Correlation, FailureKind, IgnoredReply, NewSaga, Operation, Phase, Reply,
    ReplyOutcome, SagaDefinition, SagaStatus, Step, StepContext, StepError, StepOutcome,
};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::common::*;

const PAYMENTS: &str = "ferrishop.payment.commands";

#[derive(Debug, Serialize, Deserialize)]
struct ChargeRequest {
    order: u32,
    amount: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct PaymentReply {
    approved: bool,
    charge_id: Option<String>,
    reason: Option<String>,
}

fn approved(charge_id: &str) -> PaymentReply {
    PaymentReply {
        approved: true,
        charge_id: Some(charge_id.to_owned()),
        reason: None,
    }
}

fn build_charge(_: &StepContext, order: &Order) -> Result<Command, StepError> {
    Command::json(
        PAYMENTS,
        &ChargeRequest {
            order: order.number,
            amount: 100,
        },
    )
    .map(|command| command.with_header("ce_type", "ferrishop.payment.charge"))
    .map_err(StepError::transient)
}

fn charge_reply(_: &StepContext, mut order: Order, reply: &Reply) -> Result<Order, StepError> {
    let reply: PaymentReply = reply.decode().map_err(StepError::transient)?;
    if !reply.approved {
        return Err(StepError::rejected(
            reply.reason.unwrap_or_default(),
            "payment declined",
        ));
    }
    order.charge_id = reply.charge_id;
    order.visited.push("charge".into());
    Ok(order)
}

fn build_refund(_: &StepContext, order: &Order) -> Result<Command, StepError> {
    Command::json(PAYMENTS, &serde_json::json!({ "refund": order.charge_id }))
        .map_err(StepError::transient)
}

fn refund_reply(_: &StepContext, mut order: Order, _: &Reply) -> Result<Order, StepError> {
    order.undone.push("charge".into());
    Ok(order)
}

/// reserve (call) → charge (command) → commit (call).
fn payment_saga(
    saga_type: &str,
    fakes: &Fakes,
    timeout: Duration,
    refund: Refund,
) -> SagaDefinition<Order> {
    let refund = match refund {
        Refund::Call => fake_compensation(fakes),
        Refund::Command => Operation::command(build_refund, refund_reply),
    };
    SagaDefinition::new(saga_type)
        .step(call_step(fakes, "reserve"))
        .step(
            Step::command("charge", build_charge, charge_reply)
                .compensate(refund)
                .timeout(timeout)
                .retry(fast_retry()),
        )
        .step(call_step(fakes, "commit"))
}

#[derive(Clone, Copy)]
enum Refund {
    /// A fake call, recorded as `charge`'s compensation.
    Call,
    /// A refund command.
    Command,
}

/// `(message_id, key, headers)` of the commands sent to `destination`, in order.
async fn sent_commands(
    pool: &PgPool,
    destination: &str,
) -> Vec<(Uuid, String, BTreeMap<String, String>)> {
    let rows: Vec<(Uuid, String, serde_json::Value)> = sqlx::query_as(
        "SELECT message_id, message_key, headers FROM outbox WHERE destination = $1 ORDER BY sequence",
    )
    .bind(destination)
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(id, key, headers)| (id, key, serde_json::from_value(headers).unwrap()))
        .collect()
}

fn reply_to(headers: &BTreeMap<String, String>, body: &PaymentReply) -> Reply {
    Reply::json(Correlation::from_headers(headers).unwrap(), body).unwrap()
}

#[tokio::test]
async fn a_command_goes_out_through_the_outbox_and_its_reply_moves_the_saga_on() {
    let database = migrated_database().await;
    let pool = &database.pool;
    let fakes = Fakes::new();
    let engine = engine(
        pool,
        payment_saga(
            &unique_saga_type("command"),
            &fakes,
            Duration::from_secs(30),
            Refund::Call,
        ),
    );

    let id = engine.start(NewSaga::new(Order::number(42))).await.unwrap();
    engine.process_due().await.unwrap();

    let sent = sent_commands(pool, PAYMENTS).await;
    assert_eq!(sent.len(), 1);
    let (_, key, headers) = &sent[0];
    assert_eq!(
        key,
        &id.to_string(),
        "a saga's commands share a key, so they stay in order"
    );
    assert_eq!(headers["idempotency-key"], format!("{id}:charge"));
    assert_eq!(headers["saga-id"], id.to_string());
    assert_eq!(headers["saga-step"], "charge");
    assert_eq!(headers["saga-phase"], "action");
    assert_eq!(
        headers["ce_type"], "ferrishop.payment.charge",
        "the command's own headers are kept"
    );
    let waiting = saga::query::get(pool, id).await.unwrap().unwrap().instance;
    assert_eq!(waiting.status, SagaStatus::Running);
    assert_eq!(waiting.current_step.as_deref(), Some("charge"));
    assert!(waiting.awaiting_reply);
    assert_eq!(
        waiting.lease_owner, None,
        "nobody holds a saga that waits for a reply"
    );

    let reply = reply_to(headers, &approved("ch_1"));
    assert_eq!(
        engine.on_reply(&reply).await.unwrap(),
        ReplyOutcome::Recorded
    );
    assert_eq!(
        engine.on_reply(&reply).await.unwrap(),
        ReplyOutcome::Ignored(IgnoredReply::AlreadyRecorded),
        "a duplicate delivery before handling is dropped"
    );
    engine.process_due().await.unwrap();

    let details = wait_for_status(pool, id, SagaStatus::Completed, Duration::from_secs(1)).await;
    let order: Order = serde_json::from_value(details.instance.data.clone()).unwrap();
    assert_eq!(
        order.charge_id.as_deref(),
        Some("ch_1"),
        "the reply's output is merged"
    );
    assert_eq!(order.visited, ["reserve", "charge", "commit"]);
    assert_eq!(
        log_summary(&details),
        [
            (
                "reserve".to_owned(),
                Phase::Action,
                1,
                StepOutcome::Succeeded
            ),
            ("charge".to_owned(), Phase::Action, 1, StepOutcome::Sent),
            (
                "charge".to_owned(),
                Phase::Action,
                1,
                StepOutcome::Succeeded
            ),
            (
                "commit".to_owned(),
                Phase::Action,
                1,
                StepOutcome::Succeeded
            ),
        ]
    );
    assert_eq!(
        engine.on_reply(&reply).await.unwrap(),
        ReplyOutcome::Ignored(IgnoredReply::Finished {
            status: SagaStatus::Completed
        }),
        "a late reply after completion is ignored"
    );
    let unknown = Reply::new(
        Correlation::new(Uuid::now_v7(), "charge", Phase::Action),
        vec![],
    );
    assert_eq!(
        engine.on_reply(&unknown).await.unwrap(),
        ReplyOutcome::Ignored(IgnoredReply::UnknownSaga)
    );
    assert_eq!(finish_records(pool, id).await.len(), 1);
}

#[tokio::test]
async fn a_missing_reply_is_resent_under_the_same_key_then_compensated() {
    let database = migrated_database().await;
    let pool = &database.pool;
    let fakes = Fakes::new();
    let engine = engine(
        pool,
        payment_saga(
            &unique_saga_type("silent"),
            &fakes,
            Duration::from_millis(150),
            Refund::Call,
        ),
    );
    let running = RunningEngine::spawn(&engine);

    let id = engine.start(NewSaga::new(Order::number(1))).await.unwrap();
    let details = wait_for_status(pool, id, SagaStatus::Compensated, Duration::from_secs(10)).await;
    running.stop().await;

    let sent = sent_commands(pool, PAYMENTS).await;
    assert_eq!(sent.len(), 3, "one send per attempt");
    let keys: Vec<_> = sent
        .iter()
        .map(|(_, _, headers)| headers["idempotency-key"].clone())
        .collect();
    assert_eq!(
        keys,
        vec![format!("{id}:charge"); 3],
        "the same key on every send"
    );
    let attempts: Vec<_> = sent
        .iter()
        .map(|(_, _, headers)| headers["saga-attempt"].clone())
        .collect();
    assert_eq!(attempts, ["1", "2", "3"]);
    let message_ids: std::collections::HashSet<_> = sent.iter().map(|(id, ..)| *id).collect();
    assert_eq!(message_ids.len(), 3, "but a new message id each time");

    let charge_log: Vec<_> = log_summary(&details)
        .into_iter()
        .filter(|(step, phase, ..)| step == "charge" && *phase == Phase::Action)
        .map(|(_, _, attempt, outcome)| (attempt, outcome))
        .collect();
    assert_eq!(
        charge_log,
        [
            (1, StepOutcome::Sent),
            (1, StepOutcome::Retrying),
            (2, StepOutcome::Sent),
            (2, StepOutcome::Retrying),
            (3, StepOutcome::Sent),
            (3, StepOutcome::Exhausted),
        ]
    );
    assert_eq!(
        details.instance.errors[0].error.as_deref(),
        Some("no reply within 150ms")
    );
    // The charge may have happened, so it is refunded; then the stock.
    assert_eq!(
        fakes.calls_of(id),
        [
            action("reserve", 1),
            compensation("charge", 1),
            compensation("reserve", 1)
        ]
    );
    assert_eq!(
        details.instance.failure.unwrap().kind,
        FailureKind::Exhausted
    );
}

#[tokio::test]
async fn a_reply_to_an_earlier_send_is_as_good_as_one_to_the_latest() {
    let database = migrated_database().await;
    let pool = &database.pool;
    let fakes = Fakes::new();
    let definition = payment_saga(
        &unique_saga_type("late"),
        &fakes,
        Duration::from_millis(150),
        Refund::Call,
    );
    let engine = engine(pool, definition);
    let running = RunningEngine::spawn(&engine);

    let id = engine.start(NewSaga::new(Order::number(1))).await.unwrap();
    eventually("a re-send", Duration::from_secs(5), || async {
        sent_commands(pool, PAYMENTS).await.len() >= 2
    })
    .await;
    let first = &sent_commands(pool, PAYMENTS).await[0];
    let outcome = engine
        .on_reply(&reply_to(&first.2, &approved("ch_7")))
        .await
        .unwrap();
    assert_eq!(outcome, ReplyOutcome::Recorded);

    let details = wait_for_status(pool, id, SagaStatus::Completed, Duration::from_secs(5)).await;
    running.stop().await;
    let order: Order = serde_json::from_value(details.instance.data).unwrap();
    assert_eq!(order.charge_id.as_deref(), Some("ch_7"));
}

#[tokio::test]
async fn a_declined_payment_compensates_what_came_before_it() {
    let database = migrated_database().await;
    let pool = &database.pool;
    let fakes = Fakes::new();
    let engine = engine(
        pool,
        payment_saga(
            &unique_saga_type("declined"),
            &fakes,
            Duration::from_secs(30),
            Refund::Call,
        ),
    );
    let running = RunningEngine::spawn(&engine);

    let id = engine.start(NewSaga::new(Order::number(1))).await.unwrap();
    eventually("the charge command", Duration::from_secs(5), || async {
        !sent_commands(pool, PAYMENTS).await.is_empty()
    })
    .await;
    let (_, _, headers) = &sent_commands(pool, PAYMENTS).await[0];
    let declined = PaymentReply {
        approved: false,
        charge_id: None,
        reason: Some("INSUFFICIENT_FUNDS".into()),
    };
    engine
        .on_reply(&reply_to(headers, &declined))
        .await
        .unwrap();

    let details = wait_for_status(pool, id, SagaStatus::Compensated, Duration::from_secs(5)).await;
    running.stop().await;
    let failure = details.instance.failure.unwrap();
    assert_eq!(failure.code.as_deref(), Some("INSUFFICIENT_FUNDS"));
    assert_eq!(failure.kind, FailureKind::Rejected);
    assert_eq!(
        fakes.calls_of(id),
        [action("reserve", 1), compensation("reserve", 1)],
        "nothing was charged, so nothing is refunded"
    );
    assert_eq!(
        finish_records(pool, id).await,
        [(
            "compensated".to_owned(),
            Some("charge".to_owned()),
            Some("INSUFFICIENT_FUNDS".to_owned())
        )]
    );
}

#[tokio::test]
async fn a_compensation_can_be_a_command_too() {
    let database = migrated_database().await;
    let pool = &database.pool;
    let fakes = Fakes::new();
    fakes.always("commit", Phase::Action, Behaviour::Reject("GONE"));
    let engine = engine(
        pool,
        payment_saga(
            &unique_saga_type("refund"),
            &fakes,
            Duration::from_secs(30),
            Refund::Command,
        ),
    );

    let id = engine.start(NewSaga::new(Order::number(1))).await.unwrap();
    engine.process_due().await.unwrap();
    let charge = sent_commands(pool, PAYMENTS).await.remove(0);
    let charge_reply = reply_to(&charge.2, &approved("ch_9"));
    engine.on_reply(&charge_reply).await.unwrap();
    engine.process_due().await.unwrap();

    let sent = sent_commands(pool, PAYMENTS).await;
    assert_eq!(sent.len(), 2);
    let refund = &sent[1].2;
    assert_eq!(
        refund["idempotency-key"],
        format!("{id}:charge:compensation")
    );
    assert_eq!(refund["saga-phase"], "compensation");
    assert_eq!(
        engine.on_reply(&charge_reply).await.unwrap(),
        ReplyOutcome::Ignored(IgnoredReply::NotAwaited {
            status: SagaStatus::Compensating,
            current_step: Some("charge".into()),
            awaiting_reply: true,
        }),
        "a repeated reply to the charge is not mistaken for the refund's"
    );

    let refunded = Reply::new(Correlation::from_headers(refund).unwrap(), b"{}".to_vec());
    assert_eq!(
        engine.on_reply(&refunded).await.unwrap(),
        ReplyOutcome::Recorded
    );
    engine.process_due().await.unwrap();

    let details = wait_for_status(pool, id, SagaStatus::Compensated, Duration::from_secs(1)).await;
    let order: Order = serde_json::from_value(details.instance.data).unwrap();
    assert_eq!(order.undone, ["charge", "reserve"]);
}

#[tokio::test]
async fn a_restarted_engine_resends_in_flight_commands_under_the_same_key() {
    let database = migrated_database().await;
    let pool = &database.pool;
    let fakes = Fakes::new();
    let saga_type = unique_saga_type("resume");
    let before = engine(
        pool,
        payment_saga(&saga_type, &fakes, Duration::from_secs(30), Refund::Call),
    );
    let id = before.start(NewSaga::new(Order::number(1))).await.unwrap();
    before.process_due().await.unwrap();
    drop(before);

    let after = engine(
        pool,
        payment_saga(&saga_type, &fakes, Duration::from_secs(30), Refund::Call),
    );
    let running = RunningEngine::spawn(&after);
    eventually("the re-send", Duration::from_secs(5), || async {
        sent_commands(pool, PAYMENTS).await.len() == 2
    })
    .await;
    let sent = sent_commands(pool, PAYMENTS).await;
    assert_eq!(sent[0].2["idempotency-key"], sent[1].2["idempotency-key"]);
    assert_eq!(
        sent[1].2["saga-attempt"], "1",
        "a re-send uses up no attempt"
    );

    after
        .on_reply(&reply_to(&sent[1].2, &approved("ch_2")))
        .await
        .unwrap();
    let details = wait_for_status(pool, id, SagaStatus::Completed, Duration::from_secs(5)).await;
    running.stop().await;
    let charge_log: Vec<_> = log_summary(&details)
        .into_iter()
        .filter(|(step, ..)| step == "charge")
        .map(|(_, _, attempt, outcome)| (attempt, outcome))
        .collect();
    assert_eq!(
        charge_log,
        [
            (1, StepOutcome::Sent),
            (1, StepOutcome::Resent),
            (1, StepOutcome::Succeeded)
        ]
    );
    assert_eq!(
        fakes.calls_of(id),
        [action("reserve", 1), action("commit", 1)]
    );
}
