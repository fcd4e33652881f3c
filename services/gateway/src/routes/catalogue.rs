//! The catalogue routes, served by the inventory service over gRPC.
//!
//! The inventory has no REST API of its own: its catalogue is protobuf
//! (`ferrishop.inventory.v1`), so the gateway is where the public JSON shapes
//! of products and quotes are defined, and where the REST conventions meet
//! the RPCs:
//!
//! - `ListProducts` is a server stream with no page size of its own; the
//!   gateway asks for one product more than the page and stops reading there,
//!   so `next_cursor` (the last listed product's stream cursor) is only set
//!   when another page exists.
//! - The quote's `tax_rate` is a decimal (`0.2`) at REST and integer basis
//!   points at gRPC; it is converted exactly, without floating point.
//! - Request-field paths in the inventory's validation errors (`product_id`,
//!   `tax_rate_bps`, `page.cursor`) are renamed to the REST names (`id`,
//!   `tax_rate`, `cursor`).
//!
//! Reads are anonymous; `POST` routes need the `admin` role (checked here and
//! again by the inventory from the forwarded caller).

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use http::{HeaderValue, StatusCode, header};
use platform::pagination::PageSize;
use platform::problem::{JsonBody, PathParams, QueryParams};
use platform::validation::Violations;
use proto::ferrishop::inventory::v1 as pb;
use serde::{Deserialize, Serialize};
use tower_http::request_id::RequestId;
use utoipa::{IntoParams, ToSchema};

use super::translation::{self, Money, ProblemDocument, id_of, parse_id, path_id};
use super::{AppState, upstream_request};
use crate::auth::Admin;
use crate::error::ApiError;

/// Where a product lives in the API.
pub const PRODUCTS: &str = "/api/v1/products";

/// Inventory request-field paths → REST names.
const RENAMES: &[(&str, &str)] = &[
    ("product_id", "id"),
    ("page.cursor", "cursor"),
    ("tax_rate_bps", "tax_rate"),
];

/// A product category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Category {
    Electronics,
    Clothing,
    Books,
    HomeGarden,
    Sports,
}

impl Category {
    /// A filter value, case-insensitive (`books`, `HOME_GARDEN`).
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        pb::Category::from_str_name(&format!("CATEGORY_{}", text.trim().to_ascii_uppercase()))
            .and_then(|category| Self::try_from(category).ok())
            .ok_or("must be one of ELECTRONICS, CLOTHING, BOOKS, HOME_GARDEN, SPORTS")
    }
}

impl TryFrom<pb::Category> for Category {
    type Error = ApiError;

    fn try_from(category: pb::Category) -> Result<Self, Self::Error> {
        Ok(match category {
            pb::Category::Electronics => Self::Electronics,
            pb::Category::Clothing => Self::Clothing,
            pb::Category::Books => Self::Books,
            pb::Category::HomeGarden => Self::HomeGarden,
            pb::Category::Sports => Self::Sports,
            pb::Category::Unspecified => {
                return Err(ApiError::Internal(
                    "the inventory sent a product without a category".into(),
                ));
            }
        })
    }
}

impl From<Category> for pb::Category {
    fn from(category: Category) -> Self {
        match category {
            Category::Electronics => Self::Electronics,
            Category::Clothing => Self::Clothing,
            Category::Books => Self::Books,
            Category::HomeGarden => Self::HomeGarden,
            Category::Sports => Self::Sports,
        }
    }
}

/// When a product needs reordering: once `available` falls below
/// `avg_daily_demand × lead_time_days + safety_stock`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReorderPolicy {
    #[serde(default)]
    pub avg_daily_demand: u32,
    #[serde(default)]
    pub lead_time_days: u32,
    #[serde(default)]
    pub safety_stock: u32,
    /// The resulting reorder point (output only; ignored in requests).
    #[serde(default)]
    #[schema(read_only)]
    pub reorder_point: i64,
}

/// A catalogue product with its current stock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = Product)]
pub struct ProductBody {
    #[schema(format = Uuid)]
    pub id: String,
    /// Stock keeping unit, unique.
    #[schema(example = "KB-0042")]
    pub sku: String,
    pub name: String,
    pub description: String,
    /// Unit price before discount and tax.
    pub price: Money,
    pub category: Category,
    /// Whether the product can be ordered.
    pub active: bool,
    /// Units that can still be ordered.
    pub available: i64,
    /// Units held for orders being placed.
    pub reserved: i64,
    /// Units in stock: available + reserved.
    pub on_hand: i64,
    /// Set when the product has a reorder policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reorder_policy: Option<ReorderPolicy>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl TryFrom<pb::Product> for ProductBody {
    type Error = ApiError;

    fn try_from(product: pb::Product) -> Result<Self, Self::Error> {
        let category = Category::try_from(product.category())?;
        let reorder_policy = product
            .reorder_policy
            .filter(|policy| *policy != pb::ReorderPolicy::default())
            .map(|policy| ReorderPolicy {
                avg_daily_demand: policy.avg_daily_demand,
                lead_time_days: policy.lead_time_days,
                safety_stock: policy.safety_stock,
                reorder_point: policy.reorder_point,
            });
        Ok(Self {
            id: product.id,
            sku: product.sku,
            name: product.name,
            description: product.description,
            price: translation::money(product.price),
            category,
            active: product.active,
            available: product.available,
            reserved: product.reserved,
            on_hand: product.on_hand,
            reorder_policy,
            created_at: translation::timestamp(product.created_at),
            updated_at: translation::timestamp(product.updated_at),
        })
    }
}

/// A product answer of the inventory, which always carries one.
fn product_of(product: Option<pb::Product>) -> Result<ProductBody, ApiError> {
    product
        .ok_or_else(|| ApiError::Internal("the inventory answered without a product".into()))?
        .try_into()
}

/// One page of the catalogue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProductPage {
    pub items: Vec<ProductBody>,
    /// Pass as `cursor` for the next page; null on the last one.
    pub next_cursor: Option<String>,
}

/// `GET /api/v1/products` query.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListProductsQuery {
    /// Only products of this category (ELECTRONICS, CLOTHING, BOOKS,
    /// HOME_GARDEN, SPORTS).
    #[param(value_type = Option<Category>)]
    pub category: Option<String>,
    /// `true`: only products with available stock; `false`: only sold-out
    /// ones; absent: all.
    #[param(value_type = Option<bool>)]
    pub in_stock: Option<String>,
    /// Page size, 1 to 100 (default 20).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
    /// `next_cursor` of the previous page, with the same filters.
    pub cursor: Option<String>,
}

impl ListProductsQuery {
    /// The stream request (asking for one product more than the page) and
    /// the page size.
    fn into_request(self) -> Result<(pb::ListProductsRequest, u32), ApiError> {
        let mut violations = Violations::default();
        let category = match self
            .category
            .as_deref()
            .filter(|text| !text.trim().is_empty())
        {
            None => Some(pb::Category::Unspecified),
            Some(text) => violations.check("category", Category::parse(text).map(Into::into)),
        };
        let in_stock = violations.check("in_stock", parse_bool(self.in_stock.as_deref()));
        let limit = violations.check("limit", PageSize::from_query(self.limit.as_deref()));
        violations.finish()?;
        let limit = limit.unwrap_or_default().get();
        let request = pb::ListProductsRequest {
            category: category.unwrap_or_default().into(),
            in_stock: in_stock.flatten(),
            page: Some(proto::ferrishop::common::v1::PageRequest {
                limit: limit + 1,
                cursor: translation::cursor(self.cursor),
            }),
        };
        Ok((request, limit))
    }
}

fn parse_bool(text: Option<&str>) -> Result<Option<bool>, &'static str> {
    match text.map(str::trim).filter(|text| !text.is_empty()) {
        None => Ok(None),
        Some(text) if text.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(text) if text.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(_) => Err("must be true or false"),
    }
}

/// Reads the catalogue stream until the page is full and one more product
/// shows another page exists; dropping the stream then cancels the call.
async fn collect_page<S>(mut stream: S, limit: u32) -> Result<ProductPage, ApiError>
where
    S: futures::Stream<Item = Result<pb::ListProductsResponse, tonic::Status>> + Unpin,
{
    use futures::StreamExt;

    let limit = limit as usize;
    let mut items = Vec::with_capacity(limit);
    let mut last_cursor = String::new();
    let mut more = false;
    while let Some(message) = stream.next().await {
        let message = message.map_err(|status| translation::upstream_error(status, RENAMES))?;
        if items.len() == limit {
            more = true;
            break;
        }
        items.push(product_of(message.product)?);
        last_cursor = message.cursor;
    }
    Ok(ProductPage {
        items,
        next_cursor: more.then_some(last_cursor).and_then(translation::non_empty),
    })
}

/// Lists the catalogue (active products), oldest first.
#[utoipa::path(
    get,
    path = "/api/v1/products",
    tag = "catalogue",
    params(ListProductsQuery),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "One page of products", body = ProductPage),
        (status = 422, description = "A bad filter, limit or cursor", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "The inventory is unavailable", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn list_products(
    State(state): State<AppState>,
    request_id: Option<axum::Extension<RequestId>>,
    QueryParams(query): QueryParams<ListProductsQuery>,
) -> Result<Json<ProductPage>, ApiError> {
    let (request, limit) = query.into_request()?;
    let stream = state
        .services
        .inventory
        .clone()
        .list_products(upstream_request(request, None, id_of(&request_id)))
        .await
        .map_err(|status| translation::upstream_error(status, RENAMES))?
        .into_inner();
    Ok(Json(collect_page(stream, limit).await?))
}

/// One product with its current stock (inactive ones too).
#[utoipa::path(
    get,
    path = "/api/v1/products/{id}",
    tag = "catalogue",
    params(("id" = uuid::Uuid, Path, description = "Product id")),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The product", body = ProductBody),
        (status = 404, description = "No such product (PRODUCT_NOT_FOUND)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "The id is not a UUID", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn get_product(
    State(state): State<AppState>,
    request_id: Option<axum::Extension<RequestId>>,
    PathParams(id): PathParams<String>,
) -> Result<Json<ProductBody>, ApiError> {
    let request = pb::GetProductRequest {
        product_id: path_id("id", &id)?,
    };
    let response = state
        .services
        .inventory
        .clone()
        .get_product(upstream_request(request, None, id_of(&request_id)))
        .await
        .map_err(|status| translation::upstream_error(status, RENAMES))?;
    Ok(Json(product_of(response.into_inner().product)?))
}

/// `GET /api/v1/products/{id}/quote` query.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QuoteQuery {
    /// Units to price, at least 1.
    #[param(value_type = u32, minimum = 1)]
    pub quantity: Option<String>,
    /// Tax rate as a decimal fraction from 0 to 1 with at most 4 decimal
    /// places (`0.2` is 20 %); default 0.
    #[param(value_type = Option<String>, example = "0.2")]
    pub tax_rate: Option<String>,
}

impl QuoteQuery {
    fn into_request(self, id: &str) -> Result<pb::QuoteRequest, ApiError> {
        let mut violations = Violations::default();
        let product_id = violations.check("id", parse_id(id));
        let quantity = violations.check("quantity", parse_quantity(self.quantity.as_deref()));
        let tax_rate_bps = violations.check("tax_rate", parse_tax_rate(self.tax_rate.as_deref()));
        violations.finish()?;
        Ok(pb::QuoteRequest {
            product_id: product_id.unwrap_or_default(),
            quantity: quantity.unwrap_or_default(),
            tax_rate_bps: tax_rate_bps.unwrap_or_default(),
        })
    }
}

fn parse_quantity(text: Option<&str>) -> Result<u32, &'static str> {
    match text.map(str::trim).filter(|text| !text.is_empty()) {
        None => Err("is required"),
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|quantity| *quantity >= 1)
            .ok_or("must be a whole number of at least 1"),
    }
}

/// A decimal rate (`0.08`) as basis points (800), exactly: at most four
/// decimal places, from 0 to 1.
fn parse_tax_rate(text: Option<&str>) -> Result<u32, &'static str> {
    const INVALID: &str = "must be a decimal from 0 to 1 with at most 4 decimal places, e.g. 0.2";
    let Some(text) = text.map(str::trim).filter(|text| !text.is_empty()) else {
        return Ok(0);
    };
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty())
        || !digits(whole)
        || !digits(fraction)
        || fraction.len() > 4
        || whole.len() > 4
    {
        return Err(INVALID);
    }
    let whole: u32 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| INVALID)?
    };
    let fraction: u32 = format!("{fraction:0<4}").parse().map_err(|_| INVALID)?;
    let bps = whole * 10_000 + fraction;
    if bps > 10_000 {
        return Err(INVALID);
    }
    Ok(bps)
}

/// A price quote: bulk discount tiers, then tax.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = Quote)]
pub struct QuoteBody {
    #[schema(format = Uuid)]
    pub product_id: String,
    pub quantity: u32,
    /// The product's current unit price.
    pub unit_price: Money,
    /// unit_price × quantity.
    pub subtotal: Money,
    /// Bulk discount rate reached by `quantity`, in basis points (500 = 5 %).
    pub discount_rate_bps: u32,
    /// Subtracted from the subtotal.
    pub discount: Money,
    /// Tax on the discounted amount.
    pub tax: Money,
    /// subtotal − discount + tax.
    pub total: Money,
}

impl From<pb::QuoteResponse> for QuoteBody {
    fn from(quote: pb::QuoteResponse) -> Self {
        Self {
            product_id: quote.product_id,
            quantity: quote.quantity,
            unit_price: translation::money(quote.unit_price),
            subtotal: translation::money(quote.subtotal),
            discount_rate_bps: quote.discount_rate_bps,
            discount: translation::money(quote.discount),
            tax: translation::money(quote.tax),
            total: translation::money(quote.total),
        }
    }
}

/// Prices `quantity` units of a product with the bulk discount and a tax
/// rate. Reserves nothing.
#[utoipa::path(
    get,
    path = "/api/v1/products/{id}/quote",
    tag = "catalogue",
    params(("id" = uuid::Uuid, Path, description = "Product id"), QuoteQuery),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The quote", body = QuoteBody),
        (status = 404, description = "No such product (PRODUCT_NOT_FOUND)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "A bad id, quantity or tax rate", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn quote(
    State(state): State<AppState>,
    request_id: Option<axum::Extension<RequestId>>,
    PathParams(id): PathParams<String>,
    QueryParams(query): QueryParams<QuoteQuery>,
) -> Result<Json<QuoteBody>, ApiError> {
    let request = query.into_request(&id)?;
    let response = state
        .services
        .inventory
        .clone()
        .quote(upstream_request(request, None, id_of(&request_id)))
        .await
        .map_err(|status| translation::upstream_error(status, RENAMES))?;
    Ok(Json(response.into_inner().into()))
}

/// `POST /api/v1/products` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = NewProduct)]
pub struct NewProductBody {
    /// 1 to 64 characters, unique.
    #[schema(example = "KB-0042")]
    pub sku: String,
    /// 1 to 200 characters.
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Unit price: amount > 0, in the shop's currency.
    pub price: Money,
    pub category: Category,
    /// Units in stock at creation.
    #[serde(default)]
    pub initial_stock: u32,
    /// When to reorder; absent disables low-stock events.
    #[serde(default)]
    pub reorder_policy: Option<ReorderPolicy>,
}

impl From<NewProductBody> for pb::CreateProductRequest {
    fn from(body: NewProductBody) -> Self {
        Self {
            sku: body.sku,
            name: body.name,
            description: body.description,
            price: Some(body.price.into()),
            category: pb::Category::from(body.category).into(),
            initial_stock: body.initial_stock,
            reorder_policy: body.reorder_policy.map(|policy| pb::ReorderPolicy {
                avg_daily_demand: policy.avg_daily_demand,
                lead_time_days: policy.lead_time_days,
                safety_stock: policy.safety_stock,
                reorder_point: 0,
            }),
        }
    }
}

/// Adds a product to the catalogue.
#[utoipa::path(
    post,
    path = "/api/v1/products",
    tag = "catalogue",
    request_body = NewProductBody,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = ProductBody,
            headers(("Location" = String, description = "The product's URL"))),
        (status = 400, description = "Broken JSON", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 409, description = "The SKU is taken (SKU_TAKEN)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "A bad field", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn create_product(
    State(state): State<AppState>,
    Admin(caller): Admin,
    request_id: Option<axum::Extension<RequestId>>,
    JsonBody(body): JsonBody<NewProductBody>,
) -> Result<Response, ApiError> {
    let request = pb::CreateProductRequest::from(body);
    let response = state
        .services
        .inventory
        .clone()
        .create_product(upstream_request(request, Some(&caller), id_of(&request_id)))
        .await
        .map_err(|status| translation::upstream_error(status, RENAMES))?;
    let product = product_of(response.into_inner().product)?;
    let mut response = (StatusCode::CREATED, Json(&product)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("{PRODUCTS}/{}", product.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// `POST /api/v1/products/{id}/restock` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = Restock)]
pub struct RestockBody {
    /// Units to add, at least 1.
    #[schema(minimum = 1)]
    pub quantity: u32,
}

/// Adds units to a product's stock.
#[utoipa::path(
    post,
    path = "/api/v1/products/{id}/restock",
    tag = "catalogue",
    params(("id" = uuid::Uuid, Path, description = "Product id")),
    request_body = RestockBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The product after the restock", body = ProductBody),
        (status = 400, description = "Broken JSON", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "No such product (PRODUCT_NOT_FOUND)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "A bad id or quantity", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn restock(
    State(state): State<AppState>,
    Admin(caller): Admin,
    request_id: Option<axum::Extension<RequestId>>,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<RestockBody>,
) -> Result<Json<ProductBody>, ApiError> {
    let request = pb::RestockRequest {
        product_id: path_id("id", &id)?,
        quantity: body.quantity,
    };
    let response = state
        .services
        .inventory
        .clone()
        .restock(upstream_request(request, Some(&caller), id_of(&request_id)))
        .await
        .map_err(|status| translation::upstream_error(status, RENAMES))?;
    Ok(Json(product_of(response.into_inner().product)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;

    fn product(id: &str) -> pb::Product {
        pb::Product {
            id: id.into(),
            sku: format!("SKU-{id}"),
            name: "Keyboard".into(),
            description: String::new(),
            price: Some(proto::ferrishop::common::v1::Money {
                amount: 4999,
                currency: "EUR".into(),
            }),
            category: pb::Category::HomeGarden.into(),
            active: true,
            on_hand: 7,
            reserved: 2,
            available: 5,
            created_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            updated_at: None,
            reorder_policy: Some(pb::ReorderPolicy::default()),
        }
    }

    #[test]
    fn products_become_the_public_json_shape() {
        let json = serde_json::to_value(ProductBody::try_from(product("p1")).unwrap()).unwrap();
        assert_eq!(json["category"], "HOME_GARDEN");
        assert_eq!(
            json["price"],
            serde_json::json!({"amount": 4999, "currency": "EUR"})
        );
        assert_eq!(json["available"], 5);
        assert_eq!(json["created_at"], "2023-11-14T22:13:20Z");
        assert!(
            json.get("reorder_policy").is_none(),
            "all-zero policy is absent"
        );
        let unspecified = pb::Product {
            category: 0,
            ..product("p2")
        };
        assert!(ProductBody::try_from(unspecified).is_err());
    }

    #[test]
    fn category_filters_are_case_insensitive_and_checked() {
        assert_eq!(Category::parse("books"), Ok(Category::Books));
        assert_eq!(Category::parse("HOME_GARDEN"), Ok(Category::HomeGarden));
        assert!(Category::parse("unspecified").is_err());
        assert!(Category::parse("food").is_err());
    }

    #[test]
    fn list_query_becomes_a_stream_request_one_longer_than_the_page() {
        let query = ListProductsQuery {
            category: Some("sports".into()),
            in_stock: Some("true".into()),
            limit: Some("5".into()),
            cursor: Some("abc".into()),
        };
        let (request, limit) = query.into_request().unwrap();
        assert_eq!(limit, 5);
        assert_eq!(request.category(), pb::Category::Sports);
        assert_eq!(request.in_stock, Some(true));
        let page = request.page.unwrap();
        assert_eq!((page.limit, page.cursor.as_str()), (6, "abc"));

        let (all, limit) = ListProductsQuery::default().into_request().unwrap();
        assert_eq!(limit, PageSize::DEFAULT.get());
        assert_eq!(all.category(), pb::Category::Unspecified);
        assert_eq!(all.in_stock, None);
    }

    #[test]
    fn bad_list_query_names_every_field() {
        let query = ListProductsQuery {
            category: Some("food".into()),
            in_stock: Some("yes".into()),
            limit: Some("1000".into()),
            cursor: None,
        };
        let problem = query.into_request().unwrap_err().problem();
        assert_eq!(problem.status, 422);
        let fields: Vec<_> = problem.errors.keys().map(String::as_str).collect();
        assert_eq!(fields, ["category", "in_stock", "limit"]);
    }

    #[tokio::test]
    async fn a_page_has_a_cursor_only_when_more_products_follow() {
        let message = |id: &str| {
            Ok(pb::ListProductsResponse {
                product: Some(product(id)),
                cursor: format!("after-{id}"),
            })
        };
        let full = stream::iter(vec![message("a"), message("b"), message("c")]);
        let page = collect_page(full, 2).await.unwrap();
        assert_eq!(page.items.len(), 2);
        assert_eq!(page.next_cursor.as_deref(), Some("after-b"));

        let last = stream::iter(vec![message("a"), message("b")]);
        let page = collect_page(last, 2).await.unwrap();
        assert_eq!(page.items.len(), 2);
        assert_eq!(page.next_cursor, None);

        let broken = stream::iter(vec![
            message("a"),
            Err(tonic::Status::unavailable("inventory went away")),
        ]);
        let problem = collect_page(broken, 2).await.unwrap_err().problem();
        assert_eq!(problem.status, 503);
    }

    #[test]
    fn tax_rates_convert_to_basis_points_exactly() {
        let cases = [
            (None, 0),
            (Some("0"), 0),
            (Some("0.08"), 800),
            (Some("0.2"), 2000),
            (Some(".5"), 5000),
            (Some("0.0825"), 825),
            (Some("1"), 10_000),
            (Some("1.0000"), 10_000),
        ];
        for (text, bps) in cases {
            assert_eq!(parse_tax_rate(text), Ok(bps), "{text:?}");
        }
        for bad in [
            "1.01", "2", "-0.1", "0.00001", "abc", ".", "0,2", "20%", "99999",
        ] {
            assert!(parse_tax_rate(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn quote_query_is_validated_with_rest_field_names() {
        let id = "0193a0e0-0000-7000-8000-000000000001";
        let request = QuoteQuery {
            quantity: Some("20".into()),
            tax_rate: Some("0.08".into()),
        }
        .into_request(id)
        .unwrap();
        assert_eq!(
            (
                request.product_id.as_str(),
                request.quantity,
                request.tax_rate_bps
            ),
            (id, 20, 800)
        );
        let problem = QuoteQuery {
            quantity: Some("0".into()),
            tax_rate: Some("1.5".into()),
        }
        .into_request("x")
        .unwrap_err()
        .problem();
        let fields: Vec<_> = problem.errors.keys().map(String::as_str).collect();
        assert_eq!(fields, ["id", "quantity", "tax_rate"]);
        let missing = QuoteQuery::default()
            .into_request(id)
            .unwrap_err()
            .problem();
        assert_eq!(missing.errors["quantity"], "is required");
    }

    #[test]
    fn quotes_keep_every_amount() {
        let eur = |amount| {
            Some(proto::ferrishop::common::v1::Money {
                amount,
                currency: "EUR".into(),
            })
        };
        let body = QuoteBody::from(pb::QuoteResponse {
            product_id: "p".into(),
            quantity: 20,
            unit_price: eur(10_000),
            subtotal: eur(200_000),
            discount_rate_bps: 500,
            discount: eur(10_000),
            tax: eur(15_200),
            total: eur(205_200),
        });
        let json = serde_json::to_value(body).unwrap();
        assert_eq!(json["total"]["amount"], 205_200);
        assert_eq!(json["discount"]["amount"], 10_000);
        assert_eq!(json["tax"]["currency"], "EUR");
    }

    #[test]
    fn new_product_body_becomes_a_create_request() {
        let body: NewProductBody = serde_json::from_value(serde_json::json!({
            "sku": "KB-1", "name": "Keyboard",
            "price": {"amount": 4999, "currency": "EUR"},
            "category": "ELECTRONICS", "initial_stock": 3
        }))
        .unwrap();
        let request = pb::CreateProductRequest::from(body);
        assert_eq!(request.category(), pb::Category::Electronics);
        assert_eq!(request.initial_stock, 3);
        assert_eq!(request.description, "");
        assert_eq!(request.price.unwrap().amount, 4999);
        assert!(request.reorder_policy.is_none());
        assert!(
            serde_json::from_value::<NewProductBody>(serde_json::json!({
                "sku": "KB-1", "name": "K", "price": {"amount": 1, "currency": "EUR"},
                "category": "FOOD"
            }))
            .is_err()
        );
    }
}
