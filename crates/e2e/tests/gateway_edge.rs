//! The gateway's edge, through the whole stack: what it refuses before any
//! service sees the request — bad tokens (401 with `WWW-Authenticate`),
//! missing roles (403), oversized bodies (413), broken JSON (400), unknown
//! routes (404) and methods (405) — always as `application/problem+json`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use e2e::api::{Api, Reply};
use e2e::stack::{Stack, unix_now};
use reqwest::Method;
use serde_json::json;
use uuid::Uuid;

/// The body limit of DESIGN.md: 1 MiB.
const LIMIT: usize = 1024 * 1024;

#[track_caller]
fn assert_unauthenticated(reply: &Reply, what: &str) {
    assert_eq!(reply.status, 401, "{what}: {reply}");
    reply.assert_problem(401, "UNAUTHENTICATED");
    let challenge = reply.header("www-authenticate");
    assert!(
        challenge.starts_with("Bearer"),
        "{what}: WWW-Authenticate is {challenge:?}"
    );
}

fn encode(json: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(json.to_string())
}

#[tokio::test]
async fn bad_tokens_are_refused_with_401_and_a_bearer_challenge() {
    let stack = Stack::start().await;
    let customer = stack.customer().await;
    let api = stack.api();

    // The genuine token works: every refusal below is about the token alone.
    let me = customer.api.get("/api/v1/users/me").await;
    assert_eq!(me.status, 200, "{me}");
    assert_eq!(me.body["email"], customer.email.as_str());

    let no_token = api.get("/api/v1/users/me").await;
    assert_unauthenticated(&no_token, "no token");

    let not_bearer = api
        .send(
            api.request(Method::GET, "/api/v1/users/me")
                .header("authorization", format!("Basic {}", customer.token)),
        )
        .await;
    assert_unauthenticated(&not_bearer, "Basic instead of Bearer");

    let mut expired = stack.claims(customer.user_id, &[]);
    expired.iat = unix_now() - 7200;
    expired.exp = unix_now() - 3600;
    let reply = api
        .with_token(&stack.sign(&expired))
        .get("/api/v1/users/me")
        .await;
    assert_unauthenticated(&reply, "expired token");

    // Tampered: the payload now claims the admin role, the signature is
    // the original one.
    let mut parts: Vec<String> = customer.token.split('.').map(str::to_owned).collect();
    let mut claims = stack.decode(&customer.token);
    claims.roles = vec!["admin".into()];
    parts[1] = encode(&serde_json::to_value(&claims).unwrap());
    let tampered = parts.join(".");
    let reply = api.with_token(&tampered).get("/api/v1/users/me").await;
    assert_unauthenticated(&reply, "tampered payload");
    let reply = api.with_token(&tampered).get("/api/v1/admin/sagas").await;
    assert_unauthenticated(&reply, "tampered payload on an admin route");

    // `alg: none`, unsigned, with otherwise perfect claims.
    let header = json!({"alg": "none", "typ": "JWT", "kid": stack.signing_key.kid()});
    let claims = serde_json::to_value(stack.claims(customer.user_id, &[])).unwrap();
    let unsigned = format!("{}.{}.", encode(&header), encode(&claims));
    let reply = api.with_token(&unsigned).get("/api/v1/users/me").await;
    assert_unauthenticated(&reply, "alg: none");

    let mut elsewhere = stack.claims(customer.user_id, &[]);
    elsewhere.aud = "another-api".into();
    let reply = api
        .with_token(&stack.sign(&elsewhere))
        .get("/api/v1/users/me")
        .await;
    assert_unauthenticated(&reply, "wrong audience");

    let mut foreign_issuer = stack.claims(customer.user_id, &[]);
    foreign_issuer.iss = "someone-else".into();
    let reply = api
        .with_token(&stack.sign(&foreign_issuer))
        .get("/api/v1/users/me")
        .await;
    assert_unauthenticated(&reply, "wrong issuer");

    // Signed with a key the user service never published (an unknown kid:
    // the gateway refetches the JWKS once, then refuses).
    let stranger = auth::SigningKey::generate().unwrap();
    let forged = stranger
        .sign(&stack.claims(customer.user_id, &["admin"]))
        .unwrap();
    let reply = api.with_token(&forged).get("/api/v1/users/me").await;
    assert_unauthenticated(&reply, "unknown signing key");

    let reply = api.with_token("not-a-jwt").get("/api/v1/users/me").await;
    assert_unauthenticated(&reply, "garbage");

    // A token minted by the test with the user service's key is accepted:
    // the refusals above are about what was wrong with each token.
    let valid = stack.sign(&stack.claims(customer.user_id, &[]));
    let reply = api.with_token(&valid).get("/api/v1/users/me").await;
    assert_eq!(reply.status, 200, "a well-signed token: {reply}");
}

#[tokio::test]
async fn admin_routes_need_the_admin_role() {
    let stack = Stack::start().await;
    let customer = stack.customer().await;

    let reply = customer
        .api
        .post(
            &format!("/api/v1/admin/wallets/{}/freeze", Uuid::now_v7()),
            &json!({"reason": "test"}),
        )
        .await;
    reply.assert_problem(403, "FORBIDDEN");

    // Forged roles in a client header change nothing: the gateway sets
    // `x-user-roles` from the verified token alone.
    let reply = customer
        .api
        .send(
            customer
                .api
                .request(
                    Method::POST,
                    &format!("/api/v1/admin/wallets/{}/freeze", customer.user_id),
                )
                .header("x-user-roles", "admin")
                .header("x-user-id", Uuid::now_v7().to_string())
                .json(&json!({"reason": "test"})),
        )
        .await;
    reply.assert_problem(403, "FORBIDDEN");

    // The admin passes the edge: whatever payment answers, it is not 401/403.
    let admin = stack.admin().await;
    stack.wallet(&customer).await;
    let reply = admin
        .api
        .post(
            &format!("/api/v1/admin/wallets/{}/freeze", customer.user_id),
            &json!({"reason": "test"}),
        )
        .await;
    assert!(reply.status < 300, "the admin freezes a wallet: {reply}");
    let wallet = customer.api.get("/api/v1/wallet").await;
    assert_eq!(wallet.body["status"], "FROZEN", "{wallet}");
}

#[tokio::test]
async fn oversized_broken_and_unknown_requests_get_problem_documents() {
    let stack = Stack::start().await;
    let customer = stack.customer().await;

    // The gateway refuses an oversized body without reading it and then
    // closes the connection, saying so (`Connection: close`): each of these
    // requests gets a connection of its own, as a client that saw the 413
    // would open.
    let api = Api::new(
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap(),
        stack.gateway_url(),
    );

    // Over the limit, with a Content-Length the gateway can refuse up front.
    let padding = "x".repeat(LIMIT + 1);
    let huge = json!({"email": "big@example.com", "password": padding, "name": "Big"});
    let reply = api.post("/api/v1/users", &huge).await;
    reply.assert_problem(413, "PAYLOAD_TOO_LARGE");
    assert_eq!(reply.header("connection"), "close", "{reply}");

    // Over the limit as a chunked stream (no Content-Length): cut off while
    // reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..20).map(|_| Ok(vec![b' '; 64 * 1024])).collect();
    let reply = api
        .send(
            api.request(Method::POST, "/api/v1/users")
                .header("content-type", "application/json")
                .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks))),
        )
        .await;
    reply.assert_problem(413, "PAYLOAD_TOO_LARGE");
    assert_eq!(reply.header("connection"), "close", "{reply}");

    // Just under the limit is read (and refused by the user service for
    // what it says, not for its size).
    let fits =
        json!({"email": "fits@example.com", "password": "x".repeat(LIMIT - 200), "name": "F"});
    let reply = api.post("/api/v1/users", &fits).await;
    assert_ne!(reply.status, 413, "{}", reply.status);

    let reply = api
        .send(
            api.request(Method::POST, "/api/v1/users")
                .header("content-type", "application/json")
                .body(r#"{"email": "broken@example.com", "password": "#),
        )
        .await;
    reply.assert_problem(400, "MALFORMED_JSON");
    // One code for broken JSON, whether a service or the gateway reads it.
    for (path, body) in [
        ("/api/v1/wallet/deposits", "{\"amount\": {\"amount\": 1,"),
        ("/api/v1/orders", "{\"items\": ["),
    ] {
        let reply = customer
            .api
            .send(
                customer
                    .api
                    .request(Method::POST, path)
                    .header("content-type", "application/json")
                    .header("idempotency-key", Uuid::now_v7().to_string())
                    .body(body),
            )
            .await;
        reply.assert_problem(400, "MALFORMED_JSON");
    }

    // A query string that does not read (a parameter given twice), on a
    // route the gateway answers and on one a service answers.
    for path in [
        "/api/v1/products?limit=1&limit=2",
        "/api/v1/wallet/transactions?limit=5&limit=6",
    ] {
        let reply = customer.api.get(path).await;
        reply.assert_problem(400, "BAD_REQUEST");
    }
    for path in [
        "/api/v1/products?limit=0",
        "/api/v1/wallet/transactions?limit=0",
        "/api/v1/wallet/transactions?limit=101",
    ] {
        let reply = customer.api.get(path).await;
        reply.assert_problem(422, "VALIDATION_FAILED");
        assert!(reply.body["errors"]["limit"].is_string(), "{reply}");
    }

    for path in ["/api/v1/nothing-here", "/api/v2/users", "/"] {
        let reply = api.get(path).await;
        reply.assert_problem(404, "NOT_FOUND");
    }
    let reply = customer.api.get("/api/v1/nothing-here").await;
    reply.assert_problem(404, "NOT_FOUND");
    // A path segment that is no text at all once decoded.
    for path in ["/api/v1/products/%FF", "/api/v1/orders/%C3%28"] {
        let reply = customer.api.get(path).await;
        reply.assert_problem(400, "BAD_REQUEST");
    }

    let reply = api.send(api.request(Method::DELETE, "/api/v1/users")).await;
    assert_eq!(reply.status, 405, "{reply}");
    assert_eq!(reply.content_type(), "application/problem+json", "{reply}");
}

#[tokio::test]
async fn request_ids_are_echoed_and_generated() {
    let stack = Stack::start().await;
    let api = stack.api();

    let reply = api
        .send(
            api.request(Method::GET, "/api/v1/users/me")
                .header("x-request-id", "e2e-request-42"),
        )
        .await;
    assert_eq!(reply.header("x-request-id"), "e2e-request-42");

    // One that would bloat every log line of the request is replaced.
    let bloated = "x".repeat(129);
    let reply = api
        .send(
            api.request(Method::GET, "/api/v1/products")
                .header("x-request-id", &bloated),
        )
        .await;
    let replaced = reply.header("x-request-id");
    assert!(!replaced.is_empty() && replaced != bloated, "{replaced:?}");

    let first = api.get("/api/v1/nothing").await;
    let second = api.get("/api/v1/nothing").await;
    let (a, b) = (first.header("x-request-id"), second.header("x-request-id"));
    assert!(!a.is_empty() && a != b, "generated ids: {a:?}, {b:?}");
}
