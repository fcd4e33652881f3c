//! Login, access tokens checked by the gateway's verifier against the
//! published JWKS, refresh-token rotation with theft detection, and
//! per-account login throttling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use auth::{InvalidToken, KeySet, SigningKey, Verifier, VerifyError};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{PASSWORD, start, start_on, start_with};

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn part(token: &str, index: usize) -> Value {
    let segment = token.split('.').nth(index).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).unwrap()).unwrap()
}

fn encode(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

#[tokio::test]
async fn login_issues_an_access_token_the_gateway_can_verify() {
    let service = start_with(|spawn| spawn.env("ADMIN_EMAILS", "Root@Example.com")).await;
    let ann = service.registered("ann@example.com").await;
    let root = service.registered("root@example.com").await;

    let login = service.login("ANN@example.com", PASSWORD).await;
    assert_eq!(login.status, StatusCode::OK, "{login:?}");
    assert_eq!(login.text("token_type"), "Bearer");
    assert_eq!(login.body["expires_in"], 900);
    assert_eq!(login.headers["cache-control"], "no-store");
    let access = login.text("access_token");
    assert!(!login.text("refresh_token").is_empty());

    let jwks = service.jwks().await;
    assert_eq!(jwks.keys.len(), 1);
    let header = part(access, 0);
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(
        header["kid"].as_str(),
        jwks.keys[0].common.key_id.as_deref(),
        "the token names the published key"
    );

    let claims = service.verifier().await.verify(access).unwrap();
    assert_eq!(claims.sub.to_string(), ann);
    assert!(claims.roles.is_empty());
    assert_eq!(claims.iss, auth::DEFAULT_ISSUER);
    assert_eq!(claims.aud, auth::DEFAULT_AUDIENCE);
    assert_eq!(claims.exp - claims.iat, 900);
    assert!((claims.iat - now()).abs() < 60);

    let admin = service.login("root@example.com", PASSWORD).await;
    let claims = service
        .verifier()
        .await
        .verify(admin.text("access_token"))
        .unwrap();
    assert_eq!(claims.sub.to_string(), root);
    assert_eq!(claims.roles, ["admin"]);
    assert_eq!(service.me(&root).await.body["roles"], json!(["admin"]));
}

#[tokio::test]
async fn wrong_password_and_unknown_address_get_the_same_answer() {
    let service = start().await;
    service.registered("ann@example.com").await;

    let wrong_password = service.login("ann@example.com", "not the password").await;
    let unknown = service.login("nobody@example.com", PASSWORD).await;
    let malformed = service.login("nobody", PASSWORD).await;
    for answer in [&wrong_password, &unknown, &malformed] {
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{answer:?}");
        assert_eq!(answer.body, wrong_password.body);
        assert_eq!(answer.headers["content-type"], "application/problem+json");
        assert_eq!(answer.headers["www-authenticate"], "Bearer", "{answer:?}");
    }
    assert_eq!(wrong_password.text("code"), "INVALID_CREDENTIALS");
}

#[tokio::test]
async fn an_unknown_address_costs_as_much_time_as_a_wrong_password() {
    let service = start_with(|spawn| spawn.env("LOGIN_ATTEMPTS_PER_MINUTE", "100")).await;
    service.registered("ann@example.com").await;
    // Warm up (connections, code paths), then compare medians.
    service.login("ann@example.com", "warm up password").await;
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for round in 0..5 {
        let started = std::time::Instant::now();
        service.login("ann@example.com", "not the password").await;
        known.push(started.elapsed());
        let started = std::time::Instant::now();
        service
            .login(&format!("nobody{round}@example.com"), "not the password")
            .await;
        unknown.push(started.elapsed());
    }
    known.sort();
    unknown.sort();
    let (known, unknown) = (known[2].as_secs_f64(), unknown[2].as_secs_f64());
    // Without the dummy hash an unknown address answers many times faster
    // than a password check; with it the two are within noise.
    assert!(
        unknown > known * 0.5 && unknown < known * 2.0,
        "median wrong password {known:.4}s vs unknown address {unknown:.4}s"
    );
}

#[tokio::test]
async fn forged_and_foreign_tokens_are_refused_by_the_gateway_verifier() {
    let service = start().await;
    service.registered("ann@example.com").await;
    let login = service.login("ann@example.com", PASSWORD).await;
    let token = login.text("access_token");
    let verifier = service.verifier().await;
    let parts: Vec<&str> = token.split('.').collect();

    // alg "none", same kid, no signature.
    let mut header = part(token, 0);
    header["alg"] = json!("none");
    let unsigned = format!("{}.{}.", encode(&header), parts[1]);
    assert_eq!(
        verifier.verify(&unsigned),
        Err(VerifyError::Invalid(InvalidToken::AlgorithmNotAllowed(
            "none".into()
        )))
    );

    // A payload promoted to admin, the original signature kept.
    let mut claims = part(token, 1);
    claims["roles"] = json!(["admin"]);
    let tampered = format!("{}.{}.{}", parts[0], encode(&claims), parts[2]);
    assert_eq!(
        verifier.verify(&tampered),
        Err(VerifyError::Invalid(InvalidToken::BadSignature))
    );

    // Genuine tokens for another audience or from another issuer.
    let keys = KeySet::from_jwks(&service.jwks().await);
    let other_audience = Verifier::new(keys.clone(), auth::DEFAULT_ISSUER, "another-shop");
    assert_eq!(
        other_audience.verify(token),
        Err(VerifyError::Invalid(InvalidToken::WrongAudience))
    );
    let other_issuer = Verifier::new(keys, "https://issuer.example", auth::DEFAULT_AUDIENCE);
    assert_eq!(
        other_issuer.verify(token),
        Err(VerifyError::Invalid(InvalidToken::WrongIssuer))
    );

    // A well-formed token signed by a key the service never published.
    let impostor = SigningKey::generate().unwrap();
    let forged = impostor.sign(&verifier.verify(token).unwrap()).unwrap();
    assert!(verifier.verify(&forged).unwrap_err().is_unknown_key());
}

#[tokio::test]
async fn access_tokens_expire() {
    let service = start_with(|spawn| spawn.env("ACCESS_TOKEN_TTL", "1s")).await;
    service.registered("ann@example.com").await;
    let login = service.login("ann@example.com", PASSWORD).await;
    assert_eq!(login.body["expires_in"], 1);
    let verifier = service.verifier().await.with_leeway(Duration::ZERO);
    let token = login.text("access_token");
    assert!(verifier.verify(token).is_ok());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(verifier.verify(token), Err(VerifyError::Expired));
}

#[tokio::test]
async fn a_refresh_token_works_once_and_its_reuse_revokes_the_session() {
    let service = start().await;
    let ann = service.registered("ann@example.com").await;
    let first = service.login("ann@example.com", PASSWORD).await;
    let first_refresh = first.text("refresh_token").to_owned();

    let second = service.refresh(&first_refresh).await;
    assert_eq!(second.status, StatusCode::OK, "{second:?}");
    assert_eq!(second.headers["cache-control"], "no-store");
    let second_refresh = second.text("refresh_token").to_owned();
    assert_ne!(second_refresh, first_refresh);
    let claims = service
        .verifier()
        .await
        .verify(second.text("access_token"))
        .unwrap();
    assert_eq!(claims.sub.to_string(), ann);

    let third = service.refresh(&second_refresh).await;
    assert_eq!(third.status, StatusCode::OK, "the new token works once");
    let third_refresh = third.text("refresh_token").to_owned();

    // The first token comes back: someone copied it.
    let replay = service.refresh(&first_refresh).await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED, "{replay:?}");
    assert_eq!(replay.text("code"), "INVALID_REFRESH_TOKEN");
    assert_eq!(replay.headers["www-authenticate"], "Bearer");
    // ...so the whole session is gone, including its newest token.
    let newest = service.refresh(&third_refresh).await;
    assert_eq!(newest.status, StatusCode::UNAUTHORIZED, "{newest:?}");
    assert_eq!(newest.body, replay.body);

    // Another login is another session, unaffected.
    let again = service.login("ann@example.com", PASSWORD).await;
    let fresh = service.refresh(again.text("refresh_token")).await;
    assert_eq!(fresh.status, StatusCode::OK);

    for garbage in ["", "nope", &"A".repeat(43)] {
        let answer = service.refresh(garbage).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{garbage:?}");
    }
    let revoked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM refresh_token_families WHERE revoked_at IS NOT NULL",
    )
    .fetch_one(&service.database.pool)
    .await
    .unwrap();
    assert_eq!(revoked, 1);
}

#[tokio::test]
async fn an_expired_refresh_token_is_refused() {
    let service = start_with(|spawn| spawn.env("REFRESH_TOKEN_TTL", "1s")).await;
    service.registered("ann@example.com").await;
    let login = service.login("ann@example.com", PASSWORD).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let expired = service.refresh(login.text("refresh_token")).await;
    assert_eq!(expired.status, StatusCode::UNAUTHORIZED, "{expired:?}");
    assert_eq!(expired.text("code"), "INVALID_REFRESH_TOKEN");
}

#[tokio::test]
async fn refresh_tokens_are_stored_only_as_hashes() {
    let service = start().await;
    service.registered("ann@example.com").await;
    let login = service.login("ann@example.com", PASSWORD).await;
    let refresh = login.text("refresh_token");
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT token_hash FROM refresh_tokens")
        .fetch_all(&service.database.pool)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_ne!(stored[0], refresh.as_bytes());
    let matches: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM refresh_tokens WHERE token_hash = sha256(convert_to($1, 'UTF8'))",
    )
    .bind(refresh)
    .fetch_one(&service.database.pool)
    .await
    .unwrap();
    assert_eq!(matches, 1, "the row holds the token's SHA-256");
}

#[tokio::test]
async fn concurrent_refreshes_of_one_token_let_at_most_one_through() {
    let service = start().await;
    service.registered("ann@example.com").await;
    let login = service.login("ann@example.com", PASSWORD).await;
    let refresh = login.text("refresh_token").to_owned();
    let answers = futures::future::join_all((0..4).map(|_| service.refresh(&refresh))).await;
    let succeeded: Vec<_> = answers
        .iter()
        .filter(|answer| answer.status == StatusCode::OK)
        .collect();
    assert_eq!(succeeded.len(), 1, "{answers:?}");
    // The others presented a spent token: the session is revoked, the
    // winner's new token with it.
    let after = service.refresh(succeeded[0].text("refresh_token")).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn login_attempts_are_throttled_per_account() {
    let service = start().await;
    service.registered("ann@example.com").await;
    service.registered("bob@example.com").await;

    // Six attempts at once: the throttle decides before any password is
    // hashed, so exactly the burst of five gets through whatever the timing.
    let attempts = futures::future::join_all(
        (0..6).map(|_| service.login("ann@example.com", "wrong password!")),
    )
    .await;
    let statuses: Vec<_> = attempts.iter().map(|answer| answer.status).collect();
    let throttled: Vec<_> = attempts
        .iter()
        .filter(|answer| answer.status == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert_eq!(throttled.len(), 1, "{statuses:?}");
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::UNAUTHORIZED)
            .count(),
        5
    );
    let throttled = throttled[0];
    assert_eq!(throttled.text("code"), "RATE_LIMITED");
    let retry_after: u64 = throttled.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=12).contains(&retry_after), "Retry-After {retry_after}");

    let bob = service.login("bob@example.com", PASSWORD).await;
    assert_eq!(
        bob.status,
        StatusCode::OK,
        "other accounts are not affected"
    );

    let metrics = reqwest::get(service.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"ferrishop_rate_limited_total{limiter="login"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_throttled_account_is_refused_even_with_the_right_password() {
    let service = start_with(|spawn| spawn.env("LOGIN_ATTEMPTS_PER_MINUTE", "1")).await;
    service.registered("ann@example.com").await;
    let wrong = service.login("ann@example.com", "wrong password!").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    // Any letter case is the same account.
    let right = service.login("ANN@example.com", PASSWORD).await;
    assert_eq!(right.status, StatusCode::TOO_MANY_REQUESTS, "{right:?}");
    let retry_after: u64 = right.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
}

#[tokio::test]
async fn configured_keys_rotate_without_invalidating_live_tokens() {
    let old_key = SigningKey::generate().unwrap();
    let new_key = SigningKey::generate().unwrap();

    let before = start_with(|spawn| spawn.env("JWT_SIGNING_KEY", old_key.to_pkcs8_pem())).await;
    before.registered("ann@example.com").await;
    let login = before.login("ann@example.com", PASSWORD).await;
    let old_token = login.text("access_token").to_owned();
    let old_refresh = login.text("refresh_token").to_owned();
    assert_eq!(part(&old_token, 0)["kid"], old_key.kid());
    let support::UserService {
        process, database, ..
    } = before;
    drop(process);

    // Restart on the same database with the new key; the old one stays published.
    let old_public = std::env::temp_dir().join(format!("old-{}.pem", uuid::Uuid::now_v7()));
    std::fs::write(&old_public, old_key.to_pkcs8_pem()).unwrap();
    let after = start_on(database, |spawn| {
        spawn
            .env("JWT_SIGNING_KEY", new_key.to_pkcs8_pem())
            .env("JWT_PREVIOUS_KEY_FILE", old_public.to_str().unwrap())
    })
    .await;
    std::fs::remove_file(&old_public).ok();

    let kids: Vec<_> = after
        .jwks()
        .await
        .keys
        .iter()
        .map(|key| key.common.key_id.clone().unwrap())
        .collect();
    assert_eq!(kids, [new_key.kid(), old_key.kid()], "current key first");
    let verifier = after.verifier().await;
    assert!(
        verifier.verify(&old_token).is_ok(),
        "tokens of the old key still verify"
    );

    // A refresh token from before the restart now yields a token of the new key.
    let refreshed = after.refresh(&old_refresh).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{refreshed:?}");
    let new_token = refreshed.text("access_token");
    assert_eq!(part(new_token, 0)["kid"], new_key.kid());
    assert!(verifier.verify(new_token).is_ok());
}
