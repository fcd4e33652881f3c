//! The catalogue through the real binary: creation and its validation and
//! authorisation, restocking, quotes, the streamed listing, stock watching and
//! the demo catalogue.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{as_admin, as_user, assert_failed, eur, line, new_product, start, start_with};
use futures::StreamExt;
use futures::future::join_all;
use proto::ferrishop::inventory::v1 as pb;
use tonic::{Code, Request};
use tonic_types::StatusExt;
use uuid::Uuid;

/// The fields named by an INVALID_ARGUMENT's BadRequest detail, sorted.
fn bad_fields(status: &tonic::Status) -> Vec<String> {
    let mut fields: Vec<_> = status
        .get_details_bad_request()
        .expect("BadRequest detail")
        .field_violations
        .into_iter()
        .map(|violation| violation.field)
        .collect();
    fields.sort();
    fields
}

#[tokio::test]
async fn an_admin_creates_a_product_and_anyone_reads_it() {
    let harness = start().await;
    let mut request = new_product(" kb-0042 ", 12_999, 7);
    request.name = "  Mechanical Keyboard ".into();
    request.category = pb::Category::Electronics.into();

    let created = harness.create(request).await;

    assert_eq!(created.sku, "KB-0042", "SKUs are trimmed and upper-cased");
    assert_eq!(created.name, "Mechanical Keyboard");
    assert_eq!(created.price, eur(12_999));
    assert_eq!(created.category(), pb::Category::Electronics);
    assert!(created.active);
    assert_eq!(
        (created.on_hand, created.reserved, created.available),
        (7, 0, 7)
    );
    assert!(Uuid::try_parse(&created.id).is_ok());
    assert_eq!(harness.product(&created.id).await, created);
    harness.assert_invariants().await;
}

#[tokio::test]
async fn creating_and_restocking_are_for_admins_only() {
    let harness = start().await;
    let mut client = harness.client.clone();

    let anonymous = client
        .create_product(Request::new(new_product("A-1", 100, 1)))
        .await;
    assert_failed(anonymous, Code::Unauthenticated, "UNAUTHENTICATED");
    let customer = client
        .create_product(as_user(new_product("A-1", 100, 1), "customer"))
        .await;
    assert_failed(customer, Code::PermissionDenied, "FORBIDDEN");
    // A role list is parsed, not substring-matched.
    let sneaky = client
        .create_product(as_user(
            new_product("A-1", 100, 1),
            "administrator, customer",
        ))
        .await;
    assert_failed(sneaky, Code::PermissionDenied, "FORBIDDEN");
    client
        .create_product(as_user(new_product("A-1", 100, 1), "customer, admin"))
        .await
        .unwrap();

    let product = harness.stocked(1).await;
    let restock = pb::RestockRequest {
        product_id: product.id.clone(),
        quantity: 5,
    };
    assert_failed(
        client.restock(as_user(restock.clone(), "customer")).await,
        Code::PermissionDenied,
        "FORBIDDEN",
    );
    assert_eq!(harness.stock(&product.id).await, (1, 0, 1));
    let restocked = client
        .restock(as_admin(restock))
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    assert_eq!((restocked.on_hand, restocked.available), (6, 6));
    harness.assert_invariants().await;
}

#[tokio::test]
async fn invalid_products_are_refused_naming_each_field() {
    let harness = start().await;
    let mut client = harness.client.clone();
    let cases: Vec<(&str, pb::CreateProductRequest)> = vec![
        (
            "name",
            pb::CreateProductRequest {
                name: String::new(),
                ..new_product("V-1", 100, 1)
            },
        ),
        (
            "name",
            pb::CreateProductRequest {
                name: "   ".into(),
                ..new_product("V-1", 100, 1)
            },
        ),
        (
            "name",
            pb::CreateProductRequest {
                name: "x".repeat(201),
                ..new_product("V-1", 100, 1)
            },
        ),
        ("price.amount", new_product("V-1", 0, 1)),
        ("price.amount", new_product("V-1", -100, 1)),
        (
            "price",
            pb::CreateProductRequest {
                price: None,
                ..new_product("V-1", 100, 1)
            },
        ),
        (
            "price.currency",
            pb::CreateProductRequest {
                price: Some(proto::ferrishop::common::v1::Money {
                    amount: 100,
                    currency: "USD".into(),
                }),
                ..new_product("V-1", 100, 1)
            },
        ),
        (
            "category",
            pb::CreateProductRequest {
                category: 99,
                ..new_product("V-1", 100, 1)
            },
        ),
        (
            "category",
            pb::CreateProductRequest {
                category: pb::Category::Unspecified.into(),
                ..new_product("V-1", 100, 1)
            },
        ),
        ("sku", new_product("", 100, 1)),
        ("sku", new_product("NO SPACES", 100, 1)),
    ];
    for (field, request) in cases {
        let status = assert_failed(
            client.create_product(as_admin(request)).await,
            Code::InvalidArgument,
            "VALIDATION_FAILED",
        );
        assert_eq!(bad_fields(&status), [field], "{status:?}");
        assert!(status.message().contains(field), "{}", status.message());
    }

    // Every bad field at once, not one per round trip.
    let status = assert_failed(
        client
            .create_product(as_admin(pb::CreateProductRequest {
                sku: String::new(),
                name: "x".repeat(201),
                description: String::new(),
                price: eur(0),
                category: 42,
                initial_stock: 0,
                reorder_policy: None,
            }))
            .await,
        Code::InvalidArgument,
        "VALIDATION_FAILED",
    );
    assert_eq!(
        bad_fields(&status),
        ["category", "name", "price.amount", "sku"]
    );

    // The boundary itself is fine: 200 characters, counted as characters.
    harness
        .create(pb::CreateProductRequest {
            name: "é".repeat(200),
            ..new_product("V-200", 1, 0)
        })
        .await;
    let listed = harness
        .client
        .clone()
        .list_products(pb::ListProductsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .collect::<Vec<_>>()
        .await;
    assert_eq!(listed.len(), 1, "only the valid product was created");
    harness.assert_invariants().await;
}

#[tokio::test]
async fn a_sku_belongs_to_one_product_whatever_its_case() {
    let harness = start().await;
    harness.create(new_product("DUP-1", 100, 1)).await;

    let status = assert_failed(
        harness
            .client
            .clone()
            .create_product(as_admin(new_product("dup-1", 200, 1)))
            .await,
        Code::AlreadyExists,
        "SKU_TAKEN",
    );
    assert_eq!(
        status.get_details_error_info().unwrap().metadata["sku"],
        "DUP-1"
    );
    harness.assert_invariants().await;
}

#[tokio::test]
async fn unknown_and_malformed_product_ids() {
    let harness = start().await;
    let mut client = harness.client.clone();
    let unknown = Uuid::now_v7().to_string();

    assert_failed(
        client
            .get_product(pb::GetProductRequest {
                product_id: unknown.clone(),
            })
            .await,
        Code::NotFound,
        "PRODUCT_NOT_FOUND",
    );
    let status = assert_failed(
        client
            .get_product(pb::GetProductRequest {
                product_id: "42".into(),
            })
            .await,
        Code::InvalidArgument,
        "VALIDATION_FAILED",
    );
    assert_eq!(bad_fields(&status), ["product_id"]);
    assert_failed(
        client
            .restock(as_admin(pb::RestockRequest {
                product_id: unknown.clone(),
                quantity: 1,
            }))
            .await,
        Code::NotFound,
        "PRODUCT_NOT_FOUND",
    );
    let status = assert_failed(
        client
            .restock(as_admin(pb::RestockRequest {
                product_id: unknown.clone(),
                quantity: 0,
            }))
            .await,
        Code::InvalidArgument,
        "VALIDATION_FAILED",
    );
    assert_eq!(bad_fields(&status), ["quantity"]);
    let watch = client
        .watch_stock(pb::WatchStockRequest {
            product_id: unknown,
        })
        .await;
    assert_failed(watch, Code::NotFound, "PRODUCT_NOT_FOUND");
    harness.assert_invariants().await;
}

#[tokio::test]
async fn quotes_apply_the_bulk_tiers_then_tax() {
    let harness = start().await;
    let product = harness.create(new_product("Q-1", 10_000, 0)).await;
    let mut client = harness.client.clone();
    let quote = |quantity, tax_rate_bps| {
        let request = pb::QuoteRequest {
            product_id: product.id.clone(),
            quantity,
            tax_rate_bps,
        };
        let mut client = client.clone();
        async move { client.quote(request).await }
    };

    // The worked example: 100.00 × 20 at 8 %.
    let example = quote(20, 800).await.unwrap().into_inner();
    assert_eq!(example.unit_price, eur(10_000));
    assert_eq!(example.subtotal, eur(200_000));
    assert_eq!(example.discount_rate_bps, 500);
    assert_eq!(example.discount, eur(10_000));
    assert_eq!(example.tax, eur(15_200));
    assert_eq!(example.total, eur(205_200));

    for (quantity, rate) in [
        (9, 0),
        (10, 500),
        (49, 500),
        (50, 1_000),
        (99, 1_000),
        (100, 1_500),
    ] {
        let response = quote(quantity, 0).await.unwrap().into_inner();
        assert_eq!(response.discount_rate_bps, rate, "{quantity} units");
    }

    let status = assert_failed(
        quote(0, 10_001).await,
        Code::InvalidArgument,
        "VALIDATION_FAILED",
    );
    assert_eq!(bad_fields(&status), ["quantity", "tax_rate_bps"]);
    assert_failed(
        client
            .quote(pb::QuoteRequest {
                product_id: Uuid::now_v7().to_string(),
                quantity: 1,
                tax_rate_bps: 0,
            })
            .await,
        Code::NotFound,
        "PRODUCT_NOT_FOUND",
    );
    harness.assert_invariants().await;
}

/// Creates `count` products, `parallel` at a time; returns their ids.
async fn create_many(
    harness: &common::Harness,
    count: usize,
    stock_of: impl Fn(usize) -> u32,
) -> Vec<String> {
    let mut ids = Vec::with_capacity(count);
    let requests: Vec<_> = (0..count)
        .map(|n| {
            let mut request = new_product(&format!("BULK-{n:05}"), 100 + n as i64, stock_of(n));
            request.category = if n % 2 == 0 {
                pb::Category::Books.into()
            } else {
                pb::Category::Sports.into()
            };
            request
        })
        .collect();
    for chunk in requests.chunks(25) {
        let created = join_all(chunk.iter().cloned().map(|request| harness.create(request))).await;
        ids.extend(created.into_iter().map(|product| product.id));
    }
    ids
}

#[tokio::test]
async fn list_products_streams_a_thousand_products_page_by_page() {
    let harness = start().await;
    let mut ids = create_many(&harness, 1_000, |n| u32::from(n % 3 != 0)).await;
    ids.sort();
    let mut client = harness.client.clone();

    let mut stream = client
        .list_products(pb::ListProductsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.unwrap().unwrap();
    // Created while the stream is open: had the server read the whole
    // catalogue up front, this product could not be in the stream.
    let late = harness.create(new_product("LATE-1", 100, 1)).await;
    let mut streamed = vec![first];
    while let Some(message) = stream.next().await {
        streamed.push(message.unwrap());
    }
    let streamed_ids: Vec<_> = streamed
        .iter()
        .map(|message| message.product.as_ref().unwrap().id.clone())
        .collect();
    let mut expected = ids.clone();
    expected.push(late.id.clone());
    assert_eq!(streamed_ids, expected, "every product once, in id order");
    assert!(
        streamed
            .iter()
            .all(|m| m.cursor == m.product.as_ref().unwrap().id)
    );

    // A limit and a cursor page through the same order.
    let page = |cursor: String| pb::ListProductsRequest {
        page: Some(proto::ferrishop::common::v1::PageRequest { limit: 300, cursor }),
        ..Default::default()
    };
    let mut resumed = Vec::new();
    let mut cursor = String::new();
    loop {
        let batch: Vec<_> = client
            .list_products(page(cursor.clone()))
            .await
            .unwrap()
            .into_inner()
            .map(|message| message.unwrap())
            .collect()
            .await;
        assert!(batch.len() <= 300);
        let Some(last) = batch.last() else { break };
        cursor = last.cursor.clone();
        resumed.extend(batch.into_iter().map(|m| m.product.unwrap().id));
    }
    assert_eq!(resumed, expected);

    // Filters: category and stock, combined.
    let filtered: Vec<_> = client
        .list_products(pb::ListProductsRequest {
            category: pb::Category::Books.into(),
            in_stock: Some(false),
            page: None,
        })
        .await
        .unwrap()
        .into_inner()
        .map(|message| message.unwrap().product.unwrap())
        .collect()
        .await;
    // Books are the even n; out of stock are the multiples of 3: n % 6 == 0.
    assert_eq!(filtered.len(), (0..1_000).filter(|n| n % 6 == 0).count());
    assert!(
        filtered
            .iter()
            .all(|p| p.category() == pb::Category::Books && p.available == 0)
    );
    let in_stock = client
        .list_products(pb::ListProductsRequest {
            in_stock: Some(true),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .count()
        .await;
    assert_eq!(in_stock, (0..1_000).filter(|n| n % 3 != 0).count() + 1);

    let status = assert_failed(
        client
            .list_products(page("garbage".into()))
            .await
            .map(|_| ()),
        Code::InvalidArgument,
        "VALIDATION_FAILED",
    );
    assert_eq!(bad_fields(&status), ["page.cursor"]);
    harness.assert_invariants().await;
}

/// The next level on a WatchStock stream, within 10 s.
async fn next_level(stream: &mut tonic::Streaming<pb::WatchStockResponse>) -> pb::StockLevel {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("no stock update within 10 s")
        .unwrap()
        .unwrap()
        .stock
        .unwrap()
}

#[tokio::test]
async fn watch_stock_sends_the_level_then_every_change() {
    let harness = start().await;
    let watched = harness.stocked(10).await;
    let other = harness.stocked(10).await;
    let mut stream = harness
        .client
        .clone()
        .watch_stock(pb::WatchStockRequest {
            product_id: watched.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let current = next_level(&mut stream).await;
    assert_eq!(
        (current.on_hand, current.reserved, current.available),
        (10, 0, 10)
    );

    // A change to another product is not sent; this reservation is.
    let reservation_id = Uuid::now_v7().to_string();
    harness
        .reserve(&Uuid::now_v7().to_string(), vec![line(&other.id, 1)])
        .await
        .unwrap();
    harness
        .reserve(&reservation_id, vec![line(&watched.id, 4)])
        .await
        .unwrap();
    let reserved = next_level(&mut stream).await;
    assert_eq!(reserved.product_id, watched.id);
    assert_eq!(
        (reserved.on_hand, reserved.reserved, reserved.available),
        (10, 4, 6)
    );
    assert!(reserved.version > current.version);

    harness.commit(&reservation_id).await.unwrap();
    let sold = next_level(&mut stream).await;
    assert_eq!((sold.on_hand, sold.reserved, sold.available), (6, 0, 6));

    // A refused reservation changes nothing and sends nothing.
    harness
        .reserve(&Uuid::now_v7().to_string(), vec![line(&watched.id, 100)])
        .await
        .unwrap_err();
    harness
        .client
        .clone()
        .restock(as_admin(pb::RestockRequest {
            product_id: watched.id.clone(),
            quantity: 4,
        }))
        .await
        .unwrap();
    let restocked = next_level(&mut stream).await;
    assert_eq!((restocked.on_hand, restocked.available), (10, 10));
    assert_eq!(restocked.version, sold.version + 1, "no level in between");
    harness.assert_invariants().await;
}

#[tokio::test]
async fn a_watcher_sees_changes_made_by_another_replica() {
    let harness = start().await;
    let product = harness.stocked(3).await;
    let replica = common::spawn(&harness.db, &[]).await;
    let mut replica_client =
        proto::ferrishop::inventory::v1::inventory_service_client::InventoryServiceClient::new(
            testkit::grpc::channel(&replica.grpc_url()).await,
        );
    let mut stream = harness
        .client
        .clone()
        .watch_stock(pb::WatchStockRequest {
            product_id: product.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    stream.next().await.unwrap().unwrap();

    replica_client
        .reserve_stock(pb::ReserveStockRequest {
            reservation_id: Uuid::now_v7().to_string(),
            lines: vec![line(&product.id, 2)],
        })
        .await
        .unwrap();

    let level = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("the other replica's change never arrived")
        .unwrap()
        .unwrap()
        .stock
        .unwrap();
    assert_eq!((level.reserved, level.available), (2, 1));
    harness.assert_invariants().await;
}

#[tokio::test]
async fn the_demo_catalogue_is_seeded_once() {
    let harness = start_with(&[("SEED_CATALOG", "true")]).await;
    let list = |client: &common::Client| {
        let mut client = client.clone();
        async move {
            client
                .list_products(pb::ListProductsRequest::default())
                .await
                .unwrap()
                .into_inner()
                .map(|message| message.unwrap().product.unwrap())
                .collect::<Vec<_>>()
                .await
        }
    };
    let mut products = list(&harness.client).await;
    for _ in 0..100 {
        if products.len() == 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        products = list(&harness.client).await;
    }
    assert_eq!(products.len(), 20);
    for category in [
        pb::Category::Electronics,
        pb::Category::Clothing,
        pb::Category::Books,
        pb::Category::HomeGarden,
        pb::Category::Sports,
    ] {
        assert!(
            products.iter().any(|p| p.category() == category),
            "{category:?}"
        );
    }
    assert!(
        products.iter().filter(|p| p.available > 0).count() >= 15,
        "orderable"
    );

    // A second start on the same database adds nothing.
    let again = common::spawn(&harness.db, &[("SEED_CATALOG", "true")]).await;
    again
        .wait_for_line(
            &["demo catalogue seeded", r#""added":0"#],
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(list(&harness.client).await.len(), 20);
    harness.assert_invariants().await;
}

#[tokio::test]
async fn help_lists_every_setting_and_bad_ones_exit_2() {
    let binary = testkit::process::binary_path("inventory");
    let help = std::process::Command::new(&binary)
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    for variable in [
        "HTTP_ADDR",
        "GRPC_ADDR",
        "DATABASE_URL",
        "RESERVATION_TTL",
        "RESERVATION_SWEEP_INTERVAL",
        "SHOP_CURRENCY",
        "SEED_CATALOG",
    ] {
        assert!(
            help.contains(variable),
            "{variable} missing from --help:\n{help}"
        );
    }

    for (variable, value) in [
        ("RESERVATION_TTL", "0s"),
        ("SHOP_CURRENCY", "euro"),
        ("SEED_CATALOG", "perhaps"),
    ] {
        let mut process = testkit::process::Spawn::new("inventory")
            .env(variable, value)
            .no_wait()
            .start()
            .await;
        let status = process.wait(Duration::from_secs(10)).await;
        assert_eq!(status.code(), Some(2), "{variable}={value}");
        let stderr = process.stderr_lines();
        assert_eq!(stderr.len(), 1, "{stderr:?}");
        assert!(stderr[0].contains(variable), "{stderr:?}");
    }
}
