//! The read models: `order_view` and `customer_order_history` equal a full
//! replay of the event log (dropped and rebuilt, they come back identical),
//! and `product_sales`, built from the Kafka integration events, adds up to
//! the CONFIRMED order lines minus the CANCELLED ones. Also the REST face
//! of the same queries.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use proto::ferrishop::order::v1 as pb;
use serde_json::{Value, json};
use support::{PATIENCE, Shop};
use uuid::Uuid;

const VIEW: &str = "SELECT * FROM order_view ORDER BY order_id";
const HISTORY: &str = "SELECT * FROM customer_order_history ORDER BY order_id";

#[tokio::test]
async fn read_models_equal_a_full_replay_and_sales_add_up() {
    let mut shop = Shop::start().await;
    let (a, b) = (shop.product(1_000, 20).await, shop.product(250, 3).await);
    let (ann, bob) = (shop.customer().await, shop.customer().await);

    let kept = shop.order(ann, &[(&a, 2), (&b, 1)]).await;
    let cancelled = shop.order(ann, &[(&a, 1)]).await;
    let also_kept = shop.order(bob, &[(&b, 2)]).await;
    let rejected = shop.order(bob, &[(&b, 5)]).await;
    for (customer, order_id) in [(ann, &kept), (ann, &cancelled), (bob, &also_kept)] {
        shop.wait_for(customer, order_id, pb::OrderStatus::Confirmed, PATIENCE)
            .await;
    }
    shop.cancel(ann, &cancelled).await.expect("cancel");
    shop.wait_for(ann, &cancelled, pb::OrderStatus::Cancelled, PATIENCE)
        .await;
    shop.wait_for(bob, &rejected, pb::OrderStatus::Rejected, PATIENCE)
        .await;

    // product_sales: net units and revenue per product equal the CONFIRMED
    // lines (a: 2 × 1000; b: 1 × 250 + 2 × 250) — the cancelled order's
    // line was sold and then taken back.
    let expected = HashMap::from([(a.clone(), (2, 2_000)), (b.clone(), (3, 750))]);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let rows = shop
            .rows(
                "SELECT product_id::text AS product_id, \
                        sum(units_sold - units_cancelled)::bigint AS units, \
                        sum(revenue - revenue_cancelled)::bigint AS revenue, \
                        sum(units_cancelled)::bigint AS cancelled \
                   FROM product_sales GROUP BY product_id",
            )
            .await;
        let net: HashMap<String, (i64, i64)> = rows
            .iter()
            .map(|row| {
                (
                    row["product_id"].as_str().unwrap().to_owned(),
                    (
                        row["units"].as_i64().unwrap(),
                        row["revenue"].as_i64().unwrap(),
                    ),
                )
            })
            .collect();
        let cancelled_units: i64 = rows
            .iter()
            .map(|row| row["cancelled"].as_i64().unwrap())
            .sum();
        if net == expected && cancelled_units == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "product_sales never added up: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The admin REST route shows the day's figures.
    let day = chrono::Utc::now().date_naive();
    let sales: Value = shop
        .http
        .get(format!(
            "{}/api/v1/admin/sales/{day}",
            shop.order.process.as_ref().unwrap().http_url()
        ))
        .header("x-user-id", Uuid::now_v7().to_string())
        .header("x-user-roles", "admin")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let of_a = sales
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["product_id"] == a.as_str())
        .unwrap_or_else(|| panic!("no sales of {a} today: {sales}"));
    assert_eq!(of_a["units_sold"], 3, "{of_a}");
    assert_eq!(of_a["units_cancelled"], 1, "{of_a}");
    assert_eq!(of_a["revenue"], 3_000, "{of_a}");

    // Ann's history, newest first, one page at a time.
    let page = |cursor: String| {
        let mut orders = shop.orders();
        async move {
            orders
                .list_orders(support::as_user(
                    pb::ListOrdersRequest {
                        status: 0,
                        page: Some(proto::ferrishop::common::v1::PageRequest { limit: 1, cursor }),
                        consistency_token: String::new(),
                    },
                    ann,
                ))
                .await
                .unwrap()
                .into_inner()
        }
    };
    let first = page(String::new()).await;
    assert_eq!(first.orders[0].id, cancelled, "newest first");
    let next = first.page.unwrap().next_cursor;
    assert!(!next.is_empty());
    let second = page(next).await;
    assert_eq!(second.orders[0].id, kept);
    assert_eq!(second.page.unwrap().next_cursor, "");

    // Dropped and rebuilt from the log, the order read models are identical.
    let view = shop.rows(VIEW).await;
    let history = shop.rows(HISTORY).await;
    assert_eq!(view.len(), 4);
    assert_eq!(history.len(), 4);
    shop.kill_order().await;
    shop.start_order(&[("REBUILD_READ_MODELS", "true")]).await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let rebuilt = shop
            .order
            .process
            .as_ref()
            .unwrap()
            .stdout_lines()
            .iter()
            .filter(|line| line.contains("read model rebuilt"))
            .count();
        if rebuilt == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the read models were not rebuilt"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(shop.rows(VIEW).await, view);
    assert_eq!(shop.rows(HISTORY).await, history);
    shop.assert_invariants(&[(&a, 20), (&b, 3)]).await;
}

#[tokio::test]
async fn the_rest_api_serves_the_same_use_cases() {
    let shop = Shop::start().await;
    let item = shop.product(400, 10).await;
    let customer = shop.customer().await;
    let base = shop.order.process.as_ref().unwrap().http_url();
    let user = customer.to_string();

    let placed = shop
        .http
        .post(format!("{base}/api/v1/orders"))
        .header("x-user-id", &user)
        .header("idempotency-key", "rest-1")
        .json(&json!({"items": [{"product_id": item, "quantity": 2}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(placed.status(), 202);
    let location = placed.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = placed.json().await.unwrap();
    assert_eq!(body["status"], "PENDING");
    assert_eq!(
        location,
        format!("/api/v1/orders/{}", body["id"].as_str().unwrap())
    );

    // The customer's reads.
    let get = |path: String| {
        let (http, base, user) = (shop.http.clone(), base.clone(), user.clone());
        async move {
            http.get(format!("{base}{path}"))
                .header("x-user-id", user)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };

    // Read-your-writes without a token: never 404 right after the 202.
    let order = get(location).await;
    assert_eq!(order["id"], body["id"]);
    assert_eq!(order["total"], json!({"amount": 800, "currency": "EUR"}));
    assert_eq!(order["items"][0]["quantity"], 2);

    let invalid = shop
        .http
        .post(format!("{base}/api/v1/orders"))
        .header("x-user-id", &user)
        .header("idempotency-key", "rest-2")
        .json(&json!({"items": [{"product_id": "nope", "quantity": 0}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(invalid.status(), 422);
    assert_eq!(
        invalid.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = invalid.json().await.unwrap();
    assert_eq!(problem["code"], "VALIDATION_FAILED");
    assert!(
        problem["errors"]["items[0].product_id"].is_string(),
        "{problem}"
    );
    assert!(
        problem["errors"]["items[0].quantity"].is_string(),
        "{problem}"
    );

    let broken = shop
        .http
        .post(format!("{base}/api/v1/orders"))
        .header("x-user-id", &user)
        .header("idempotency-key", "rest-3")
        .header("content-type", "application/json")
        .body("{\"items\": [")
        .send()
        .await
        .unwrap();
    assert_eq!(broken.status(), 400);
    let problem: Value = broken.json().await.unwrap();
    assert_eq!(problem["code"], "MALFORMED_JSON", "{problem}");

    // Query strings: each bad value named, one that does not read refused.
    let order_id = body["id"].as_str().unwrap();
    for (path, status, field) in [
        ("/api/v1/orders?limit=0".to_owned(), 422, Some("limit")),
        ("/api/v1/orders?limit=101".to_owned(), 422, Some("limit")),
        ("/api/v1/orders?limit=1&limit=2".to_owned(), 400, None),
        (
            format!("/api/v1/orders/{order_id}?consistency_token=18446744073709551615.1"),
            422,
            Some("consistency_token"),
        ),
    ] {
        let refused = shop
            .http
            .get(format!("{base}{path}"))
            .header("x-user-id", &user)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), status, "{path}");
        assert_eq!(
            refused.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
        let problem: Value = refused.json().await.unwrap();
        if let Some(field) = field {
            assert!(problem["errors"][field].is_string(), "{path}: {problem}");
        }
    }

    shop.wait_for(customer, order_id, pb::OrderStatus::Confirmed, PATIENCE)
        .await;
    // The listing is another projection: it sees the confirmation when it
    // has caught up, not necessarily when the order view has.
    let deadline = Instant::now() + PATIENCE;
    let listed = loop {
        let listed = get("/api/v1/orders?status=CONFIRMED".to_owned()).await;
        if !listed["items"].as_array().unwrap().is_empty() {
            break listed;
        }
        assert!(
            Instant::now() < deadline,
            "the confirmed order never listed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert_eq!(listed["next_cursor"], Value::Null);

    let cancel = |id: String| {
        let (http, base, user) = (shop.http.clone(), base.clone(), user.clone());
        async move {
            http.post(format!("{base}/api/v1/orders/{id}/cancel"))
                .header("x-user-id", user)
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(cancel(order_id.to_owned()).await.status(), 202);
    shop.wait_for(customer, order_id, pb::OrderStatus::Cancelled, PATIENCE)
        .await;
    let again = cancel(order_id.to_owned()).await;
    assert_eq!(again.status(), 409);
    let problem: Value = again.json().await.unwrap();
    assert_eq!(problem["code"], "ORDER_NOT_CANCELLABLE");

    let sagas = shop
        .http
        .get(format!("{base}/api/v1/admin/sagas?status=COMPLETED"))
        .header("x-user-id", &user)
        .send()
        .await
        .unwrap();
    assert_eq!(sagas.status(), 403);
    let sagas: Value = shop
        .http
        .get(format!(
            "{base}/api/v1/admin/sagas?status=completed&limit=100"
        ))
        .header("x-user-id", &user)
        .header("x-user-roles", "admin")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sagas["items"].as_array().unwrap().len(), 2, "{sagas}");
}
