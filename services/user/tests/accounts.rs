//! Registration and the signed-in user's profile, through the REST API the
//! gateway forwards to, against the real binary and a real database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use reqwest::StatusCode;
use serde_json::json;
use support::{PASSWORD, start};

#[tokio::test]
async fn registration_creates_a_user_once_per_address_in_any_case() {
    let service = start().await;

    let created = service
        .register("  Ann.Lee@Example.COM ", PASSWORD, "  Ann Lee ")
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    assert_eq!(created.text("email"), "ann.lee@example.com");
    assert_eq!(created.text("name"), "Ann Lee");
    assert_eq!(created.body["roles"], json!([]));
    let id = uuid::Uuid::parse_str(created.text("id")).unwrap();
    assert_eq!(id.get_version_num(), 7);
    assert!(created.body.get("password").is_none() && created.body.get("password_hash").is_none());

    for again in ["ann.lee@example.com", "ANN.LEE@EXAMPLE.COM"] {
        let conflict = service
            .register(again, "another password!", "Impostor")
            .await;
        assert_eq!(conflict.status, StatusCode::CONFLICT, "{conflict:?}");
        assert_eq!(conflict.text("code"), "EMAIL_TAKEN");
        assert_eq!(conflict.headers["content-type"], "application/problem+json");
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&service.database.pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
}

#[tokio::test]
async fn invalid_fields_are_all_reported_in_one_422() {
    let service = start().await;

    let invalid = service.register("not-an-email", "short", "   ").await;
    assert_eq!(
        invalid.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{invalid:?}"
    );
    assert_eq!(invalid.text("code"), "VALIDATION_FAILED");
    let errors = invalid.body["errors"].as_object().unwrap();
    assert_eq!(
        errors.keys().collect::<Vec<_>>(),
        ["email", "name", "password"],
        "{errors:?}"
    );
    assert!(errors["password"].as_str().unwrap().contains("12"));

    let missing = service.post("/api/v1/users", json!({})).await;
    assert_eq!(missing.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(missing.body["errors"].as_object().unwrap().len(), 3);

    let only_name = service
        .register("ok@example.com", PASSWORD, &"x".repeat(101))
        .await;
    assert_eq!(only_name.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        only_name.body["errors"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["name"]
    );

    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&service.database.pool)
        .await
        .unwrap();
    assert_eq!(count, 0, "nothing is stored for an invalid request");
}

#[tokio::test]
async fn bodies_that_are_not_json_objects_are_problems_too() {
    let service = start().await;
    let http = reqwest::Client::new();

    let broken = service
        .send(
            http.post(service.url("/api/v1/users"))
                .header("content-type", "application/json")
                .body("{\"email\":"),
        )
        .await;
    assert_eq!(broken.status, StatusCode::BAD_REQUEST, "{broken:?}");
    assert_eq!(broken.text("code"), "MALFORMED_JSON");

    let not_json = service
        .send(http.post(service.url("/api/v1/users")).body("email=a"))
        .await;
    assert_eq!(not_json.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(not_json.headers["content-type"], "application/problem+json");

    let wrong_type = service
        .post(
            "/api/v1/users",
            json!({"email": 42, "password": PASSWORD, "name": "A"}),
        )
        .await;
    assert_eq!(wrong_type.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn password_hashes_are_argon2id_phc_strings() {
    let service = start().await;
    service.registered("ann@example.com").await;
    service.registered("bob@example.com").await;

    let hashes: Vec<String> = sqlx::query_scalar("SELECT password_hash FROM users ORDER BY email")
        .fetch_all(&service.database.pool)
        .await
        .unwrap();
    assert_eq!(hashes.len(), 2);
    for hash in &hashes {
        let parts: Vec<&str> = hash.split('$').collect();
        // "", "argon2id", "v=19", params, salt, hash
        assert_eq!(parts.len(), 6, "{hash}");
        assert_eq!(
            &parts[1..4],
            ["argon2id", "v=19", "m=19456,t=2,p=1"],
            "{hash}"
        );
        assert!(parts[4].len() >= 22 && parts[5].len() >= 43, "{hash}");
        assert!(!hash.contains(PASSWORD));
    }
    assert_ne!(hashes[0], hashes[1], "same password, different salts");
}

#[tokio::test]
async fn the_profile_belongs_to_the_caller_the_gateway_names() {
    let service = start().await;
    let id = service.registered("ann@example.com").await;
    let http = reqwest::Client::new();

    let me = service.me(&id).await;
    assert_eq!(me.status, StatusCode::OK, "{me:?}");
    assert_eq!(me.text("id"), id);
    assert_eq!(me.text("email"), "ann@example.com");

    let anonymous = service
        .send(http.get(service.url("/api/v1/users/me")))
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.text("code"), "UNAUTHENTICATED");
    assert_eq!(
        service.me("not-a-uuid").await.status,
        StatusCode::UNAUTHORIZED
    );

    let stranger = service.me(&uuid::Uuid::now_v7().to_string()).await;
    assert_eq!(stranger.status, StatusCode::NOT_FOUND);
    assert_eq!(stranger.text("code"), "USER_NOT_FOUND");
}

#[tokio::test]
async fn the_owner_can_rename_but_nothing_else() {
    let service = start().await;
    let id = service.registered("ann@example.com").await;
    let http = reqwest::Client::new();
    let patch = |body: serde_json::Value| {
        http.patch(service.url("/api/v1/users/me"))
            .header("x-user-id", &id)
            .json(&body)
    };

    let renamed = service.send(patch(json!({"name": "  Annie  "}))).await;
    assert_eq!(renamed.status, StatusCode::OK, "{renamed:?}");
    assert_eq!(renamed.text("name"), "Annie");
    assert_eq!(service.me(&id).await.text("name"), "Annie");

    let empty = service.send(patch(json!({"name": ""}))).await;
    assert_eq!(empty.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(empty.body["errors"]["name"].is_string(), "{empty:?}");

    let email = service
        .send(patch(json!({"email": "evil@example.com"})))
        .await;
    assert_eq!(email.status, StatusCode::UNPROCESSABLE_ENTITY, "{email:?}");
    assert_eq!(service.me(&id).await.text("email"), "ann@example.com");

    let nothing = service.send(patch(json!({}))).await;
    assert_eq!(nothing.status, StatusCode::OK);
    assert_eq!(nothing.text("name"), "Annie");

    let anonymous = service
        .send(
            http.patch(service.url("/api/v1/users/me"))
                .json(&json!({"name": "X"})),
        )
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}
