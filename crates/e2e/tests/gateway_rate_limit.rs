//! Rate limits at the gateway, with small limits set through its
//! environment: a burst of logins above the login limit gets 429 with
//! `Retry-After`, a user above their own limit is refused while another is
//! not (over REST and gRPC alike), and clients within their limits never
//! see a 429.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use e2e::api::Reply;
use e2e::stack::{PASSWORD, Service, Stack};
use proto::ferrishop::payment::v1 as payment_pb;
use proto::ferrishop::payment::v1::payment_service_client::PaymentServiceClient;
use reqwest::Method;
use serde_json::json;
use tonic::Code;
use tonic::metadata::MetadataValue;

const LOGIN_PER_MINUTE: u32 = 6;
const LOGIN_BURST: u32 = 3;
const USER_PER_SECOND: u32 = 5;
const USER_BURST: u32 = 10;

async fn limited_stack(user_per_second: u32) -> Stack {
    Stack::builder()
        .env(
            Service::Gateway,
            "RATE_LIMIT_LOGIN_PER_MINUTE",
            LOGIN_PER_MINUTE.to_string(),
        )
        .env(
            Service::Gateway,
            "RATE_LIMIT_LOGIN_BURST",
            LOGIN_BURST.to_string(),
        )
        .env(
            Service::Gateway,
            "RATE_LIMIT_USER_PER_SECOND",
            user_per_second.to_string(),
        )
        .env(
            Service::Gateway,
            "RATE_LIMIT_USER_BURST",
            USER_BURST.to_string(),
        )
        .env(Service::Gateway, "RATE_LIMIT_ANONYMOUS_PER_SECOND", "20")
        .env(Service::Gateway, "RATE_LIMIT_ANONYMOUS_BURST", "40")
        // Each phase below comes from its own client address.
        .env(Service::Gateway, "TRUST_FORWARDED_FOR", "true")
        .start()
        .await
}

/// `Retry-After` in seconds; panics unless the reply is a proper 429.
#[track_caller]
fn retry_after(reply: &Reply) -> u64 {
    reply.assert_problem(429, "RATE_LIMITED");
    let seconds: u64 = reply
        .header("retry-after")
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After is not whole seconds: {reply:?}"));
    assert!(seconds >= 1, "{reply:?}");
    seconds
}

async fn login_from(stack: &Stack, ip: &str, email: &str) -> Reply {
    let api = stack.api();
    api.send(
        api.request(Method::POST, "/api/v1/auth/login")
            .header("x-forwarded-for", ip)
            .json(&json!({"email": email, "password": PASSWORD})),
    )
    .await
}

#[tokio::test]
async fn a_login_burst_above_the_limit_gets_429_with_retry_after() {
    let stack = limited_stack(USER_PER_SECOND).await;
    let customer = stack.customer().await;

    // A burst of logins from one address: the first LOGIN_BURST pass, the
    // next is refused (one more is refilled only after 60/6 = 10 s).
    let started = Instant::now();
    for attempt in 1..=LOGIN_BURST {
        let reply = login_from(&stack, "203.0.113.10", &customer.email).await;
        assert_eq!(reply.status, 200, "login {attempt} of the burst: {reply}");
        let policy = reply.header("ratelimit-policy");
        assert!(
            policy.contains("\"login\"") && policy.contains(&format!("q={LOGIN_BURST}")),
            "RateLimit-Policy: {policy:?}"
        );
    }
    let refused = login_from(&stack, "203.0.113.10", &customer.email).await;
    let wait = retry_after(&refused);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the burst took {:?}: the limit may have refilled meanwhile",
        started.elapsed()
    );
    assert!(
        wait <= u64::from(60 / LOGIN_PER_MINUTE),
        "Retry-After {wait} s for a limit of {LOGIN_PER_MINUTE}/min"
    );
    assert!(
        refused.header("ratelimit").contains("r=0"),
        "RateLimit: {:?}",
        refused.header("ratelimit")
    );

    // Another address is not affected; nor are other routes.
    let elsewhere = login_from(&stack, "203.0.113.11", &customer.email).await;
    assert_eq!(elsewhere.status, 200, "{elsewhere}");
    let me = customer.api.get("/api/v1/users/me").await;
    assert_eq!(me.status, 200, "{me}");

    // After Retry-After, the address may log in again.
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let later = login_from(&stack, "203.0.113.10", &customer.email).await;
    assert_eq!(later.status, 200, "after Retry-After: {later}");

    let metrics = stack.metrics(Service::Gateway).await;
    assert!(
        metrics
            .lines()
            .any(|line| line.starts_with("ferrishop_rate_limited_total{")
                && line.contains("/api/v1/auth/login")
                && !line.ends_with(" 0")),
        "ferrishop_rate_limited_total counts the refusal:\n{}",
        metrics
            .lines()
            .filter(|line| line.contains("rate_limited"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test]
async fn each_user_has_a_budget_of_their_own_over_rest_and_grpc() {
    // One request a second: the bucket refills slowly enough for the calls
    // after a burst to find it still (nearly) empty on a busy machine.
    const SLOW: u32 = 1;
    let stack = limited_stack(SLOW).await;
    let greedy = stack.customer().await;
    let modest = stack.customer().await;
    stack.wallet(&greedy).await;
    stack.wallet(&modest).await;
    // Let the buckets the set-up used fill up again.
    tokio::time::sleep(Duration::from_secs(u64::from(USER_BURST / SLOW) + 1)).await;

    // Requests at once: the burst passes, then refusals.
    let started = Instant::now();
    let replies =
        futures::future::join_all((0..USER_BURST * 3).map(|_| greedy.api.get("/api/v1/orders")))
            .await;
    let refilled = || (started.elapsed().as_secs() + 1) * u64::from(SLOW);
    let passed = replies.iter().filter(|reply| reply.status == 200).count() as u64;
    let refused: Vec<&Reply> = replies.iter().filter(|reply| reply.status == 429).collect();
    assert_eq!(
        passed as usize + refused.len(),
        replies.len(),
        "only 200 or 429: {:?}",
        replies.iter().map(|reply| reply.status).collect::<Vec<_>>()
    );
    assert!(
        passed >= u64::from(USER_BURST) && passed <= u64::from(USER_BURST) + refilled(),
        "{passed} passed for a burst of {USER_BURST}"
    );
    assert!(!refused.is_empty());
    for reply in &refused {
        retry_after(reply);
    }

    // gRPC counts against the same budget: of a burst as large as the whole
    // quota, only what refilled since passes.
    let channel = testkit::grpc::channel(&stack.gateway_grpc_url()).await;
    let payments = PaymentServiceClient::new(channel);
    let calls = futures::future::join_all((0..USER_BURST).map(|_| {
        let mut payments = payments.clone();
        let mut request = tonic::Request::new(payment_pb::GetAccountRequest::default());
        request.metadata_mut().insert(
            "authorization",
            MetadataValue::try_from(format!("Bearer {}", greedy.token)).unwrap(),
        );
        async move { payments.get_account(request).await }
    }))
    .await;
    let granted = calls.iter().filter(|call| call.is_ok()).count() as u64;
    let refilled = refilled();
    assert!(
        granted <= refilled && granted < u64::from(USER_BURST),
        "{granted} gRPC calls passed after the REST burst emptied the bucket ({refilled} refilled)"
    );
    for status in calls.iter().filter_map(|call| call.as_ref().err()) {
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert_eq!(
            status
                .metadata()
                .get("x-error-code")
                .and_then(|value| value.to_str().ok()),
            Some("RATE_LIMITED"),
            "{status:?}"
        );
    }

    // Someone else is served meanwhile.
    let other = modest.api.get("/api/v1/orders").await;
    assert_eq!(other.status, 200, "{other}");
}

#[tokio::test]
async fn clients_within_their_limits_never_see_a_429() {
    let stack = limited_stack(USER_PER_SECOND).await;
    let customer = stack.customer().await;
    tokio::time::sleep(Duration::from_secs(
        u64::from(USER_BURST / USER_PER_SECOND) + 1,
    ))
    .await;

    // Half the sustained rate, for longer than the burst would last.
    let pace = Duration::from_secs(1) / (USER_PER_SECOND / 2).max(1);
    let api = stack.api();
    let mut statuses = Vec::new();
    for _ in 0..(USER_BURST * 2) {
        let reply = customer.api.get("/api/v1/orders").await;
        statuses.push(reply.status);
        let anonymous = api
            .send(
                api.request(Method::GET, "/api/v1/products")
                    .header("x-forwarded-for", "198.51.100.20"),
            )
            .await;
        statuses.push(anonymous.status);
        tokio::time::sleep(pace).await;
    }
    assert!(
        statuses.iter().all(|status| *status == 200),
        "paced requests: {statuses:?}"
    );

    // Logins within the login limit.
    for _ in 0..LOGIN_BURST {
        let reply = login_from(&stack, "198.51.100.21", &customer.email).await;
        assert_eq!(reply.status, 200, "{reply}");
    }
}

#[tokio::test]
async fn made_up_tokens_meet_the_address_limit_before_a_signature_check() {
    let stack = limited_stack(USER_PER_SECOND).await;
    let customer = stack.customer().await;
    let api = stack.api();
    let from = |token: &str| {
        api.request(Method::GET, "/api/v1/products")
            .header("x-forwarded-for", "192.0.2.50")
            .header("authorization", format!("Bearer {token}"))
    };
    // The customer's token is verified once, from the address under attack.
    let verified = api.send(from(&customer.token)).await;
    assert_eq!(verified.status, 200, "{verified}");

    // Twice the address's anonymous burst (40) of forged tokens, at once:
    // each costs a check, so the address's limit refuses the excess.
    let forged =
        futures::future::join_all((0..80).map(|n| api.send(from(&format!("x.y.{n}"))))).await;
    let unauthorized = forged.iter().filter(|reply| reply.status == 401).count();
    let refused: Vec<&Reply> = forged.iter().filter(|reply| reply.status == 429).collect();
    assert_eq!(
        unauthorized + refused.len(),
        forged.len(),
        "only 401 or 429: {:?}",
        forged.iter().map(|reply| reply.status).collect::<Vec<_>>()
    );
    assert!(
        unauthorized < 60,
        "{unauthorized} forged tokens were checked"
    );
    for reply in &refused {
        retry_after(reply);
        assert!(
            reply.header("ratelimit-policy").contains("\"anonymous\""),
            "{reply:?}"
        );
    }

    // A token verified already is not a check: it passes on its user's budget.
    let again = api.send(from(&customer.token)).await;
    assert_eq!(again.status, 200, "{again}");
}
