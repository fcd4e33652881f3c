//! The OpenAPI 3.1 document of the public REST API, served at
//! `GET /api/openapi.json`.
//!
//! The document is generated with utoipa from the handler and body types,
//! so it cannot drift from what the gateway's own handlers take and
//! return: the gRPC-backed routes (catalogue, orders, admin) and the
//! gateway's own (order events, dashboard) carry `#[utoipa::path]`
//! annotations on their handlers.
//!
//! The routes of user and payment are forwarded path for path and never
//! parsed by the gateway (`routes::proxy`), so there is no handler type to
//! derive them from. [`proxied`] describes them instead: body types that
//! mirror the services' REST adapters (`services/user/src/http.rs`,
//! `services/payment/src/http.rs`) field for field, and one annotated
//! function per route that exists only to carry its description. The tests
//! here check those types against sample answers of the services' shape.
//!
//! Every error is `application/problem+json` with the one `Problem` schema;
//! authenticated routes name the `bearer` security scheme (a JWT access
//! token from `POST /api/v1/auth/login`). The document is built once, on
//! first request, and needs nothing at build time but the code: no UI and no
//! external assets are served or fetched.

use std::sync::OnceLock;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{admin, catalogue, dashboard, events, orders};

/// The API's description, for `info.description`.
const DESCRIPTION: &str = "The public REST API of Ferrishop, served by the gateway. \
JSON in and out; errors are RFC 9457 `application/problem+json` with a stable `code`. \
Money is `{\"amount\": <integer minor units>, \"currency\": \"EUR\"}`, ids are UUIDs, \
lists are cursor-paginated (`?limit=&cursor=` → `{items, next_cursor}`). \
Authenticated routes take `Authorization: Bearer <access token>`.";

#[derive(OpenApi)]
#[openapi(
    info(title = "Ferrishop API", description = DESCRIPTION),
    paths(
        proxied::register,
        proxied::login,
        proxied::refresh,
        proxied::me,
        proxied::update_me,
        proxied::wallet,
        proxied::deposit,
        proxied::transactions,
        proxied::set_payout_iban,
        proxied::wallet_admin,
        catalogue::list_products,
        catalogue::get_product,
        catalogue::quote,
        catalogue::create_product,
        catalogue::restock,
        orders::place_order,
        orders::get_order,
        orders::list_orders,
        orders::cancel_order,
        events::follow_order,
        dashboard::dashboard,
        admin::list_sagas,
        admin::put_fault,
        admin::delete_fault,
        document,
    ),
    components(schemas(crate::routes::translation::ProblemDocument)),
    modifiers(&BearerSecurity),
    tags(
        (name = "users", description = "Registration, sign-in and the caller's profile (user service)"),
        (name = "catalogue", description = "Products, stock and quotes (inventory service)"),
        (name = "wallet", description = "The caller's wallet (payment service)"),
        (name = "orders", description = "Orders and their status (order service)"),
        (name = "admin", description = "Operations; the `admin` role only"),
        (name = "meta", description = "This document"),
    )
)]
pub struct ApiDoc;

/// Adds the `bearer` security scheme the routes refer to.
struct BearerSecurity;

impl Modify for BearerSecurity {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut bearer = Http::new(HttpAuthScheme::Bearer);
        bearer.bearer_format = Some("JWT".to_owned());
        bearer.description = Some(
            "An access token from `POST /api/v1/auth/login` or `/api/v1/auth/refresh`.".to_owned(),
        );
        components.add_security_scheme("bearer", SecurityScheme::Http(bearer));
    }
}

/// The document as JSON, built once.
pub fn json() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        ApiDoc::openapi()
            .to_json()
            .unwrap_or_else(|error| format!(r#"{{"error":"{error}"}}"#))
    })
}

/// `GET /api/openapi.json`.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "meta",
    operation_id = "openapi",
    summary = "This OpenAPI 3.1 document",
    responses((status = 200, description = "The document", content_type = "application/json", body = Object))
)]
pub async fn document() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        json(),
    )
        .into_response()
}

/// The routes of user and payment, which the gateway forwards unparsed:
/// their bodies as those services write them, and one function per route
/// that exists only to carry its description.
pub mod proxied {
    #![allow(dead_code, reason = "describes forwarded routes; nothing calls it")]

    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Serialize};
    use utoipa::ToSchema;
    use uuid::Uuid;

    use crate::routes::translation::{Money, ProblemDocument};

    // ------------------------------------------------------------ user

    /// `POST /api/v1/users`.
    #[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
    pub struct RegisterRequest {
        /// Unique (case-insensitively) e-mail address.
        #[schema(example = "ada@example.com")]
        pub email: String,
        /// At least 8 characters.
        #[schema(example = "correct horse battery staple")]
        pub password: String,
        /// Display name.
        #[schema(example = "Ada Lovelace")]
        pub name: String,
    }

    /// `POST /api/v1/auth/login`.
    #[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
    pub struct LoginRequest {
        #[schema(example = "ada@example.com")]
        pub email: String,
        pub password: String,
    }

    /// `POST /api/v1/auth/refresh`.
    #[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
    pub struct RefreshRequest {
        /// The refresh token of the last pair; it is used up by this call
        /// (presenting it again revokes its whole family).
        pub refresh_token: String,
    }

    /// `PATCH /api/v1/users/me`: the fields to change; any other member is
    /// refused with 422.
    #[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
    #[serde(deny_unknown_fields)]
    pub struct ProfilePatch {
        /// New display name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub name: Option<String>,
    }

    /// A user's profile.
    #[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
    pub struct User {
        pub id: Uuid,
        #[schema(example = "ada@example.com")]
        pub email: String,
        #[schema(example = "Ada Lovelace")]
        pub name: String,
        /// Role names; `admin` for the addresses in the user service's
        /// `ADMIN_EMAILS`.
        pub roles: Vec<String>,
        pub created_at: DateTime<Utc>,
    }

    /// An access token and the refresh token that renews it (RFC 6749 §5.1).
    #[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
    pub struct TokenPair {
        /// A JWT for `Authorization: Bearer`.
        pub access_token: String,
        /// Always `Bearer`.
        #[schema(example = "Bearer")]
        pub token_type: String,
        /// Seconds until the access token expires.
        #[schema(example = 900)]
        pub expires_in: u64,
        /// Single-use token for `POST /api/v1/auth/refresh`.
        pub refresh_token: String,
    }

    // ------------------------------------------------------------ wallet

    /// The state of a wallet.
    #[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
    #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
    pub enum WalletStatus {
        Active,
        /// No deposits or charges until unfrozen.
        Frozen,
        /// Paid out and closed for good.
        Closed,
    }

    /// The caller's wallet.
    #[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
    pub struct Wallet {
        pub account_id: Uuid,
        /// The user the wallet belongs to.
        pub owner_id: Uuid,
        pub balance: Money,
        pub status: WalletStatus,
        /// Why a FROZEN wallet was frozen.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub frozen_reason: Option<String>,
        /// Where the balance goes when the wallet is closed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub payout_iban: Option<String>,
        pub created_at: DateTime<Utc>,
        pub updated_at: DateTime<Utc>,
    }

    /// `POST /api/v1/wallet/deposits`.
    #[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
    #[serde(deny_unknown_fields)]
    pub struct DepositRequest {
        /// A positive amount in the wallet's currency.
        pub amount: Money,
    }

    /// `PUT /api/v1/wallet/payout-iban`.
    #[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
    #[serde(deny_unknown_fields)]
    pub struct PayoutIbanRequest {
        #[schema(example = "DE89370400440532013000")]
        pub iban: String,
    }

    /// `POST /api/v1/admin/wallets/{user_id}/freeze` (optional body).
    #[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
    #[serde(deny_unknown_fields)]
    pub struct FreezeRequest {
        /// Shown to the owner; at most 500 characters.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub reason: Option<String>,
    }

    /// What moved money in or out of a wallet.
    #[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
    #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
    pub enum TransactionKind {
        Deposit,
        /// An order's payment.
        Charge,
        /// A cancelled order's payment returned.
        Refund,
        /// The balance paid out when the wallet was closed.
        Payout,
    }

    /// One movement of money.
    #[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
    pub struct Transaction {
        pub id: Uuid,
        pub account_id: Uuid,
        pub kind: TransactionKind,
        /// What moved (positive).
        pub amount: Money,
        /// The balance right after.
        pub balance_after: Money,
        /// The order a CHARGE or REFUND belongs to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub order_id: Option<Uuid>,
        /// The `Idempotency-Key` of a DEPOSIT.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub idempotency_key: Option<String>,
        pub created_at: DateTime<Utc>,
    }

    /// A page of transactions, newest first.
    #[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
    pub struct TransactionPage {
        pub items: Vec<Transaction>,
        /// Pass as `cursor` for the next page; `null` on the last one.
        pub next_cursor: Option<String>,
    }

    /// What an administrator does to a wallet.
    #[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
    #[serde(rename_all = "lowercase")]
    pub enum WalletAction {
        /// Stops deposits and charges (body: optional `{reason}`).
        Freeze,
        Unfreeze,
        /// Pays the balance out to the payout IBAN and closes the wallet.
        Close,
    }

    // ------------------------------------------------------------ routes

    #[utoipa::path(
        post,
        path = "/api/v1/users",
        tag = "users",
        operation_id = "register",
        summary = "Register",
        request_body = RegisterRequest,
        responses(
            (status = 201, description = "Registered", body = User),
            (status = 400, description = "Malformed JSON", body = ProblemDocument, content_type = "application/problem+json"),
            (status = 409, description = "`EMAIL_TAKEN`", body = ProblemDocument, content_type = "application/problem+json"),
            (status = 422, description = "`VALIDATION_FAILED`, with `errors` per field", body = ProblemDocument, content_type = "application/problem+json"),
            (status = 429, description = "`RATE_LIMITED`", body = ProblemDocument, content_type = "application/problem+json"),
        )
    )]
    pub fn register() {}

    #[utoipa::path(
        post,
        path = "/api/v1/auth/login",
        tag = "users",
        operation_id = "login",
        summary = "Sign in: a token pair",
        request_body = LoginRequest,
        responses(
            (status = 200, description = "Signed in", body = TokenPair),
            (status = 400, description = "Malformed JSON", body = ProblemDocument, content_type = "application/problem+json"),
            (status = 401, description = "`INVALID_CREDENTIALS`", body = ProblemDocument, content_type = "application/problem+json"),
            (status = 429, description = "`RATE_LIMITED` (stricter on this route), with `Retry-After`", body = ProblemDocument, content_type = "application/problem+json"),
        )
    )]
    pub fn login() {}

    #[utoipa::path(
        post,
        path = "/api/v1/auth/refresh",
        tag = "users",
        operation_id = "refresh",
        summary = "Renew a token pair (rotation)",
        request_body = RefreshRequest,
        responses(
            (status = 200, description = "A new pair; the presented refresh token is used up", body = TokenPair),
            (status = 400, description = "Malformed JSON", body = ProblemDocument, content_type = "application/problem+json"),
            (status = 401, description = "`INVALID_REFRESH_TOKEN` (unknown, expired, or reused: reuse revokes the family)", body = ProblemDocument, content_type = "application/problem+json"),
        )
    )]
    pub fn refresh() {}

    #[utoipa::path(
        get,
        path = "/api/v1/users/me",
        tag = "users",
        operation_id = "get_me",
        summary = "The caller's profile",
        security(("bearer" = [])),
        responses(
            (status = 200, description = "The profile", body = User),
            (status = 401, description = "`UNAUTHENTICATED`", body = ProblemDocument, content_type = "application/problem+json"),
            (status = 404, description = "`USER_NOT_FOUND`", body = ProblemDocument, content_type = "application/problem+json"),
            (status = 503, description = "`UPSTREAM_UNAVAILABLE`", body = ProblemDocument, content_type = "application/problem+json"),
        )
    )]
    pub fn me() {}

    #[utoipa::path(
        patch,
        path = "/api/v1/users/me",
        tag = "users",
        operation_id = "update_me",
        summary = "Change the caller's profile",
        security(("bearer" = [])),
        request_body = ProfilePatch,
        responses(
            (status = 200, description = "The changed profile", body = User),
            (status = 400, description = "Malformed JSON", body = ProblemDocument, content_type = "application/problem+json"),
            (status = 401, description = "`UNAUTHENTICATED`", body = ProblemDocument, content_type = "application/problem+json"),
            (status = 422, description = "`VALIDATION_FAILED`", body = ProblemDocument, content_type = "application/problem+json"),
        )
    )]
    pub fn update_me() {}

    #[utoipa::path(
        get,
        path = "/api/v1/wallet",
        tag = "wallet",
        operation_id = "get_wallet",
        summary = "The caller's wallet",
        security(("bearer" = [])),
        responses(
            (status = 200, description = "The wallet", body = Wallet),
            (status = 401, description = "`UNAUTHENTICATED`", body = ProblemDocument, content_type = "application/problem+json"),
            (status = 404, description = "`ACCOUNT_NOT_FOUND` (the wallet opens shortly after registration)", body = ProblemDocument, content_type = "application/problem+json"),
            (status = 503, description = "`UPSTREAM_UNAVAILABLE`", body = ProblemDocument, content_type = "application/problem+json"),
        )
    )]
    pub fn wallet() {}

    #[utoipa::path(
        post,
        path = "/api/v1/wallet/deposits",
        tag = "wallet",
        operation_id = "deposit",
        summary = "Deposit money (idempotent by key)",
        security(("bearer" = [])),
        params(("Idempotency-Key" = String, Header, description = "Required; repeating a deposit with the same key and amount answers as the first time (with `Idempotent-Replayed: true`) and moves no money")),
        request_body = DepositRequest,
        responses(
            (status = 201, description = "Deposited", body = Transaction),
            (status = 400, description = "Malformed JSON", body = ProblemDocument, content_type = "application/problem+json"),
            (status = 401, description = "`UNAUTHENTICATED`", body = ProblemDocument, content_type = "application/problem+json"),
            (status = 404, description = "`ACCOUNT_NOT_FOUND`", body = ProblemDocument, content_type = "application/problem+json"),
            (status = 409, description = "`ACCOUNT_FROZEN` or `ACCOUNT_CLOSED`", body = ProblemDocument, content_type = "application/problem+json"),
            (status = 422, description = "`VALIDATION_FAILED` (amount, currency, missing key) or `IDEMPOTENCY_KEY_REUSED`", body = ProblemDocument, content_type = "application/problem+json"),
        )
    )]
    pub fn deposit() {}

    #[utoipa::path(
        get,
        path = "/api/v1/wallet/transactions",
        tag = "wallet",
        operation_id = "list_transactions",
        summary = "The caller's transactions, newest first",
        security(("bearer" = [])),
        params(
            ("limit" = Option<u32>, Query, description = "Page size, 1 to 100"),
            ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
            ("kind" = Option<TransactionKind>, Query, description = "Only this kind"),
        ),
        responses(
            (status = 200, description = "A page", body = TransactionPage),
            (status = 401, description = "`UNAUTHENTICATED`", body = ProblemDocument, content_type = "application/problem+json"),
            (status = 422, description = "`VALIDATION_FAILED` (limit, cursor, kind)", body = ProblemDocument, content_type = "application/problem+json"),
        )
    )]
    pub fn transactions() {}

    #[utoipa::path(
        put,
        path = "/api/v1/wallet/payout-iban",
        tag = "wallet",
        operation_id = "set_payout_iban",
        summary = "Set where the balance is paid out on closing",
        security(("bearer" = [])),
        request_body = PayoutIbanRequest,
        responses(
            (status = 200, description = "The wallet", body = Wallet),
            (status = 400, description = "Malformed JSON", body = ProblemDocument, content_type = "application/problem+json"),
            (status = 401, description = "`UNAUTHENTICATED`", body = ProblemDocument, content_type = "application/problem+json"),
            (status = 422, description = "`VALIDATION_FAILED` (not a valid IBAN)", body = ProblemDocument, content_type = "application/problem+json"),
        )
    )]
    pub fn set_payout_iban() {}

    #[utoipa::path(
        post,
        path = "/api/v1/admin/wallets/{user_id}/{action}",
        tag = "admin",
        operation_id = "wallet_admin",
        summary = "Freeze, unfreeze or close a user's wallet",
        security(("bearer" = [])),
        params(
            ("user_id" = Uuid, Path, description = "The wallet's owner"),
            ("action" = WalletAction, Path, description = "What to do"),
        ),
        request_body(content = Option<FreezeRequest>, description = "For `freeze` only, optional"),
        responses(
            (status = 200, description = "The wallet", body = Wallet),
            (status = 401, description = "`UNAUTHENTICATED`", body = ProblemDocument, content_type = "application/problem+json"),
            (status = 403, description = "`FORBIDDEN`: not an admin", body = ProblemDocument, content_type = "application/problem+json"),
            (status = 404, description = "`ACCOUNT_NOT_FOUND`", body = ProblemDocument, content_type = "application/problem+json"),
            (status = 409, description = "`PAYOUT_IBAN_REQUIRED` (close) or `ACCOUNT_CLOSED`", body = ProblemDocument, content_type = "application/problem+json"),
        )
    )]
    pub fn wallet_admin() {}
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::{Value, json};

    use super::*;

    fn document() -> Value {
        serde_json::from_str(json()).unwrap()
    }

    /// DESIGN.md's route table: every route must be in the document.
    const DESIGN_ROUTES: &[(&str, &str)] = &[
        ("post", "/api/v1/users"),
        ("post", "/api/v1/auth/login"),
        ("post", "/api/v1/auth/refresh"),
        ("get", "/api/v1/users/me"),
        ("get", "/api/v1/products"),
        ("get", "/api/v1/products/{id}"),
        ("get", "/api/v1/products/{id}/quote"),
        ("post", "/api/v1/products"),
        ("post", "/api/v1/products/{id}/restock"),
        ("get", "/api/v1/wallet"),
        ("post", "/api/v1/wallet/deposits"),
        ("get", "/api/v1/wallet/transactions"),
        ("post", "/api/v1/orders"),
        ("get", "/api/v1/orders/{id}"),
        ("get", "/api/v1/orders"),
        ("post", "/api/v1/orders/{id}/cancel"),
        ("get", "/api/v1/orders/{id}/events"),
        ("get", "/api/v1/admin/sagas"),
        ("put", "/api/v1/admin/faults/{name}"),
        ("get", "/api/openapi.json"),
    ];

    #[test]
    fn is_openapi_3_1() {
        let document = document();
        let version = document["openapi"].as_str().unwrap();
        assert!(version.starts_with("3.1"), "{version}");
        assert_eq!(document["info"]["title"], "Ferrishop API");
    }

    #[test]
    fn lists_every_route_of_the_design_with_its_method() {
        let document = document();
        let paths = document["paths"].as_object().unwrap();
        let missing: Vec<String> = DESIGN_ROUTES
            .iter()
            .filter(|(method, path)| {
                paths
                    .get(*path)
                    .and_then(|item| item.get(*method))
                    .is_none()
            })
            .map(|(method, path)| format!("{} {path}", method.to_uppercase()))
            .collect();
        assert!(missing.is_empty(), "missing from the document: {missing:?}");
    }

    #[test]
    fn every_operation_is_documented_with_problem_errors() {
        let document = document();
        let problem_ref = json!({"$ref": "#/components/schemas/Problem"});
        for (path, item) in document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let responses = operation["responses"].as_object().unwrap();
                assert!(
                    responses.keys().any(|status| status.starts_with('2')),
                    "{method} {path} has no success response"
                );
                for (status, response) in responses {
                    if status.starts_with('4') || status.starts_with('5') {
                        assert_eq!(
                            response["content"]["application/problem+json"]["schema"], problem_ref,
                            "{method} {path} {status}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn authenticated_routes_name_the_bearer_scheme() {
        let document = document();
        assert_eq!(
            document["components"]["securitySchemes"]["bearer"],
            json!({
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "An access token from `POST /api/v1/auth/login` or `/api/v1/auth/refresh`."
            })
        );
        for (method, path) in [
            ("get", "/api/v1/users/me"),
            ("get", "/api/v1/wallet"),
            ("get", "/api/v1/orders/{id}/events"),
            ("get", "/api/v1/me/dashboard"),
        ] {
            assert_eq!(
                document["paths"][path][method]["security"],
                json!([{"bearer": []}]),
                "{method} {path}"
            );
        }
        assert!(document["paths"]["/api/v1/auth/login"]["post"]["security"].is_null());
    }

    #[test]
    fn the_event_stream_is_text_event_stream() {
        let document = document();
        let content =
            &document["paths"]["/api/v1/orders/{id}/events"]["get"]["responses"]["200"]["content"];
        assert_eq!(
            content["text/event-stream"]["schema"],
            json!({"$ref": "#/components/schemas/OrderStatusEvent"})
        );
    }

    /// Each component schema compiled as a JSON Schema (2020-12, the
    /// dialect of OpenAPI 3.1), with the components alongside so its
    /// `$ref`s resolve.
    fn validators(document: &Value) -> Vec<(String, jsonschema::Validator)> {
        let schemas = document["components"]["schemas"].as_object().unwrap();
        schemas
            .iter()
            .map(|(name, schema)| {
                let mut root = schema.clone();
                let root_object = root.as_object_mut().unwrap();
                root_object.insert(
                    "$schema".into(),
                    json!("https://json-schema.org/draft/2020-12/schema"),
                );
                root_object.insert("components".into(), json!({"schemas": schemas}));
                let validator = jsonschema::draft202012::options()
                    .should_validate_formats(true)
                    .build(&root)
                    .unwrap_or_else(|error| panic!("schema {name} is not valid: {error}"));
                (name.clone(), validator)
            })
            .collect()
    }

    fn validator(document: &Value, name: &str) -> jsonschema::Validator {
        validators(document)
            .into_iter()
            .find(|(found, _)| found == name)
            .unwrap_or_else(|| panic!("no schema {name}"))
            .1
    }

    #[track_caller]
    fn assert_valid(document: &Value, schema: &str, instance: &Value) {
        let validator = validator(document, schema);
        let errors: Vec<String> = validator
            .iter_errors(instance)
            .map(|error| format!("{}: {error}", error.instance_path))
            .collect();
        assert!(errors.is_empty(), "{schema}: {errors:?}\n{instance:#}");
    }

    #[test]
    fn component_schemas_are_valid_json_schema() {
        let document = document();
        let names: BTreeSet<String> = validators(&document)
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        for expected in [
            "Problem",
            "Money",
            "User",
            "TokenPair",
            "Wallet",
            "Transaction",
            "TransactionPage",
            "OrderStatusEvent",
            "Dashboard",
        ] {
            assert!(names.contains(expected), "no schema {expected}: {names:?}");
        }
    }

    #[test]
    fn user_answers_match_their_schemas() {
        let document = document();
        assert_valid(
            &document,
            "User",
            &json!({
                "id": "0193a0e0-0000-7000-8000-000000000001",
                "email": "ada@example.com",
                "name": "Ada",
                "roles": [],
                "created_at": "2025-01-01T00:00:00Z"
            }),
        );
        assert_valid(
            &document,
            "TokenPair",
            &json!({"access_token": "a.b.c", "token_type": "Bearer", "expires_in": 900, "refresh_token": "r"}),
        );
    }

    #[test]
    fn payment_answers_match_their_schemas() {
        let document = document();
        assert_valid(
            &document,
            "Wallet",
            &json!({
                "account_id": "0193a0e0-0000-7000-8000-000000000001",
                "owner_id": "0193a0e0-0000-7000-8000-000000000002",
                "balance": {"amount": 10000, "currency": "EUR"},
                "status": "ACTIVE",
                "created_at": "2025-01-01T00:00:00Z",
                "updated_at": "2025-01-01T00:00:00.123456Z"
            }),
        );
        let deposit = json!({
            "id": "0193a0e0-0000-7000-8000-000000000003",
            "account_id": "0193a0e0-0000-7000-8000-000000000001",
            "kind": "DEPOSIT",
            "amount": {"amount": 500, "currency": "EUR"},
            "balance_after": {"amount": 10500, "currency": "EUR"},
            "idempotency_key": "k-1",
            "created_at": "2025-01-01T00:00:00Z"
        });
        assert_valid(&document, "Transaction", &deposit);
        assert_valid(
            &document,
            "TransactionPage",
            &json!({"items": [deposit], "next_cursor": null}),
        );
        let mut wrong = deposit;
        wrong["kind"] = json!("GIFT");
        assert!(!validator(&document, "Transaction").is_valid(&wrong));
    }

    #[test]
    fn problems_match_the_problem_schema() {
        let document = document();
        let problem = platform::problem::Problem::validation(
            [("email".to_owned(), "is taken".to_owned())].into(),
        );
        assert_valid(
            &document,
            "Problem",
            &serde_json::to_value(problem).unwrap(),
        );
    }

    #[test]
    fn gateway_bodies_match_their_schemas() {
        let document = document();
        let event = events::OrderStatusEvent {
            id: uuid::Uuid::now_v7(),
            status: crate::routes::orders::OrderStatus::Rejected,
            failure_reason: Some("INSUFFICIENT_FUNDS".into()),
            cancellation_pending: false,
            occurred_at: Some(chrono::Utc::now()),
        };
        assert_valid(
            &document,
            "OrderStatusEvent",
            &serde_json::to_value(event).unwrap(),
        );
        let dashboard = dashboard::compose(
            Ok(json!({"id": "x"})),
            Err(dashboard::PartFailure {
                status: 503,
                code: "UPSTREAM_UNAVAILABLE".into(),
                detail: "payment is down".into(),
            }),
            Ok(vec![]),
        );
        let dashboard = serde_json::to_value(dashboard).unwrap();
        let schema = &document["components"]["schemas"]["Dashboard"];
        assert_eq!(
            schema["required"],
            json!(["profile", "wallet", "orders", "errors"]),
            "every part is always there, null when it failed"
        );
        let validator = validator(&document, "Dashboard");
        // The profile is passed through as the user service wrote it; only
        // the envelope is checked here.
        let errors: Vec<String> = validator
            .iter_errors(&dashboard)
            .filter(|error| !error.instance_path.to_string().starts_with("/profile"))
            .map(|error| error.to_string())
            .collect();
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn served_as_json() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let response = runtime.block_on(super::document());
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    }
}
