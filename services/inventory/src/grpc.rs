//! gRPC adapter: `ferrishop.inventory.v1.InventoryService`.
//!
//! Handlers are thin: parse the request into domain values (collecting every
//! bad field, not just the first), call one use case, convert the result. The
//! conversions live at the bottom of this file, and [`InventoryError`] becomes
//! a [`Status`] in exactly one place, [`status`], which sets the gRPC code,
//! the stable `x-error-code` metadata and the rich error details.

use std::collections::HashMap;
use std::fmt::Display;
use std::num::NonZeroU32;

use futures::stream::{BoxStream, StreamExt};
use platform::validation::Violations;
use proto::convert::timestamp;
use proto::ferrishop::inventory::v1 as pb;
use proto::ferrishop::inventory::v1::inventory_service_server::InventoryService;
use proto::metadata::{ADMIN_ROLE, VouchedUser};
use proto::status::ErrorDomain;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Response, Status};
use tonic_types::ErrorDetails;

use crate::app::Inventory;
use crate::domain::money::{Currency, Rate};
use crate::domain::pricing::Quote;
use crate::domain::product::{
    CatalogEntry, CatalogFilter, Category, Description, NewProduct, Price, PriceError, ProductId,
    ProductName, Sku,
};
use crate::domain::reservation::{Reservation, ReservationId, ReservationLines, ReservationStatus};
use crate::domain::stock::{Quantity, ReorderPolicy, StockLevel};
use crate::error::InventoryError;

/// `google.rpc.ErrorInfo.domain` of this service's errors.
pub const ERROR_DOMAIN: ErrorDomain = ErrorDomain::new("inventory.ferrishop.dev");

/// The `InventoryService` implementation.
#[derive(Debug, Clone)]
pub struct InventoryServiceApi {
    inventory: Inventory,
    shop_currency: Currency,
    /// Ends open WatchStock streams when the server shuts down, which would
    /// otherwise hold the graceful shutdown until its deadline.
    shutdown: CancellationToken,
}

impl InventoryServiceApi {
    pub fn new(inventory: Inventory, shop_currency: Currency, shutdown: CancellationToken) -> Self {
        Self {
            inventory,
            shop_currency,
            shutdown,
        }
    }
}

type ApiResult<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl InventoryService for InventoryServiceApi {
    async fn get_product(
        &self,
        request: Request<pb::GetProductRequest>,
    ) -> ApiResult<pb::GetProductResponse> {
        let id = field(
            "product_id",
            ProductId::parse(&request.get_ref().product_id),
        )?;
        let entry = self.inventory.product(id).await?;
        Ok(Response::new(pb::GetProductResponse {
            product: Some(product(&entry)),
        }))
    }

    type ListProductsStream = BoxStream<'static, Result<pb::ListProductsResponse, Status>>;

    async fn list_products(
        &self,
        request: Request<pb::ListProductsRequest>,
    ) -> ApiResult<Self::ListProductsStream> {
        let request = request.into_inner();
        let mut violations = Violations::default();
        let category = violations.check("category", category_filter(request.category));
        let page = request.page.unwrap_or_default();
        let after = violations.check("page.cursor", cursor(&page.cursor));
        let (Some(category), Some(after)) = (category, after) else {
            return Err(InventoryError::from(violations).into());
        };
        let filter = CatalogFilter {
            category,
            in_stock: request.in_stock,
        };
        let products = self
            .inventory
            .list_products(filter, after, NonZeroU32::new(page.limit))
            .map(|entry| {
                entry.map_err(status).map(|entry| pb::ListProductsResponse {
                    cursor: entry.product.id.to_string(),
                    product: Some(product(&entry)),
                })
            });
        Ok(Response::new(products.boxed()))
    }

    async fn create_product(
        &self,
        request: Request<pb::CreateProductRequest>,
    ) -> ApiResult<pb::CreateProductResponse> {
        require_admin(request.metadata())?;
        let new = self.new_product(request.into_inner())?;
        let entry = self.inventory.create_product(new).await?;
        Ok(Response::new(pb::CreateProductResponse {
            product: Some(product(&entry)),
        }))
    }

    async fn restock(
        &self,
        request: Request<pb::RestockRequest>,
    ) -> ApiResult<pb::RestockResponse> {
        require_admin(request.metadata())?;
        let request = request.into_inner();
        let mut violations = Violations::default();
        let id = violations.check("product_id", ProductId::parse(&request.product_id));
        let quantity = violations.check("quantity", Quantity::new(request.quantity));
        let (Some(id), Some(quantity)) = (id, quantity) else {
            return Err(InventoryError::from(violations).into());
        };
        let entry = self.inventory.restock(id, quantity).await?;
        Ok(Response::new(pb::RestockResponse {
            product: Some(product(&entry)),
        }))
    }

    async fn quote(&self, request: Request<pb::QuoteRequest>) -> ApiResult<pb::QuoteResponse> {
        let request = request.into_inner();
        let mut violations = Violations::default();
        let id = violations.check("product_id", ProductId::parse(&request.product_id));
        let quantity = violations.check("quantity", Quantity::new(request.quantity));
        let tax_rate = violations.check(
            "tax_rate_bps",
            Rate::from_basis_points(request.tax_rate_bps),
        );
        let (Some(id), Some(quantity), Some(tax_rate)) = (id, quantity, tax_rate) else {
            return Err(InventoryError::from(violations).into());
        };
        let quote = self.inventory.quote(id, quantity, tax_rate).await?;
        Ok(Response::new(quote_response(id, &quote)))
    }

    async fn reserve_stock(
        &self,
        request: Request<pb::ReserveStockRequest>,
    ) -> ApiResult<pb::ReserveStockResponse> {
        let request = request.into_inner();
        let mut violations = Violations::default();
        let id = violations.check(
            "reservation_id",
            ReservationId::parse(&request.reservation_id),
        );
        let mut lines = Vec::with_capacity(request.lines.len());
        for (index, line) in request.lines.iter().enumerate() {
            let product_id = violations.check(
                format!("lines[{index}].product_id"),
                ProductId::parse(&line.product_id),
            );
            let quantity = violations.check(
                format!("lines[{index}].quantity"),
                Quantity::new(line.quantity),
            );
            if let (Some(product_id), Some(quantity)) = (product_id, quantity) {
                lines.push((product_id, quantity));
            }
        }
        let lines = if violations.is_empty() {
            violations.check("lines", ReservationLines::new(lines))
        } else {
            None
        };
        let (Some(id), Some(lines)) = (id, lines) else {
            return Err(InventoryError::from(violations).into());
        };
        let reservation = self.inventory.reserve(id, lines).await?;
        Ok(Response::new(reserve_response(&reservation)))
    }

    async fn commit_reservation(
        &self,
        request: Request<pb::CommitReservationRequest>,
    ) -> ApiResult<pb::CommitReservationResponse> {
        let id = field(
            "reservation_id",
            ReservationId::parse(&request.get_ref().reservation_id),
        )?;
        let status = self.inventory.commit(id).await?;
        Ok(Response::new(pb::CommitReservationResponse {
            reservation_id: id.to_string(),
            status: reservation_status(status).into(),
        }))
    }

    async fn release_reservation(
        &self,
        request: Request<pb::ReleaseReservationRequest>,
    ) -> ApiResult<pb::ReleaseReservationResponse> {
        let id = field(
            "reservation_id",
            ReservationId::parse(&request.get_ref().reservation_id),
        )?;
        let status = self.inventory.release(id).await?;
        Ok(Response::new(pb::ReleaseReservationResponse {
            reservation_id: id.to_string(),
            status: reservation_status(status).into(),
        }))
    }

    type WatchStockStream = BoxStream<'static, Result<pb::WatchStockResponse, Status>>;

    async fn watch_stock(
        &self,
        request: Request<pb::WatchStockRequest>,
    ) -> ApiResult<Self::WatchStockStream> {
        let id = field(
            "product_id",
            ProductId::parse(&request.get_ref().product_id),
        )?;
        let levels = self.inventory.watch_stock(id).await?;
        let responses = levels
            .map(|level| {
                level.map_err(status).map(|level| pb::WatchStockResponse {
                    stock: Some(stock_level(&level)),
                })
            })
            .take_until(self.shutdown.clone().cancelled_owned());
        Ok(Response::new(responses.boxed()))
    }
}

impl InventoryServiceApi {
    fn new_product(&self, request: pb::CreateProductRequest) -> Result<NewProduct, InventoryError> {
        let mut violations = Violations::default();
        let sku = violations.check("sku", Sku::parse(&request.sku));
        let name = violations.check("name", ProductName::parse(&request.name));
        let description = violations.check("description", Description::parse(&request.description));
        let price = match request.price {
            None => violations.reject("price", "is required"),
            Some(money) => match Currency::parse(&money.currency) {
                Err(error) => violations.reject("price.currency", error),
                Ok(currency) => match Price::parse(money.amount, currency, self.shop_currency) {
                    Ok(price) => Some(price),
                    Err(error @ PriceError::NotPositive(_)) => {
                        violations.reject("price.amount", error)
                    }
                    Err(error @ PriceError::WrongCurrency { .. }) => {
                        violations.reject("price.currency", error)
                    }
                },
            },
        };
        let category = match violations.check("category", category_filter(request.category)) {
            Some(None) => violations.reject("category", "is required"),
            category => category.flatten(),
        };
        let (Some(sku), Some(name), Some(description), Some(price), Some(category)) =
            (sku, name, description, price, category)
        else {
            return Err(violations.into());
        };
        let policy = request.reorder_policy.unwrap_or_default();
        Ok(NewProduct {
            sku,
            name,
            description,
            price,
            category,
            initial_stock: request.initial_stock,
            reorder_policy: ReorderPolicy {
                avg_daily_demand: policy.avg_daily_demand,
                lead_time_days: policy.lead_time_days,
                safety_stock: policy.safety_stock,
            },
        })
    }
}

/// Checks the caller metadata the gateway sets: a UUID `x-user-id` and the
/// `admin` role among the comma-separated `x-user-roles`.
fn require_admin(metadata: &MetadataMap) -> Result<(), InventoryError> {
    match VouchedUser::from_headers(metadata.as_ref()) {
        Ok(Some(user)) if user.is_admin => Ok(()),
        Ok(Some(_)) => Err(InventoryError::Forbidden(ADMIN_ROLE)),
        Ok(None) | Err(_) => Err(InventoryError::Unauthenticated),
    }
}

/// A single field's value, or `INVALID_ARGUMENT` naming it.
fn field<T, E: Display>(name: &str, result: Result<T, E>) -> Result<T, InventoryError> {
    result.map_err(|error| InventoryError::invalid(name, error))
}

/// `CATEGORY_UNSPECIFIED` is `None`; values the proto does not define are
/// refused.
fn category_filter(value: i32) -> Result<Option<Category>, String> {
    match pb::Category::try_from(value) {
        Ok(pb::Category::Unspecified) => Ok(None),
        Ok(pb::Category::Electronics) => Ok(Some(Category::Electronics)),
        Ok(pb::Category::Clothing) => Ok(Some(Category::Clothing)),
        Ok(pb::Category::Books) => Ok(Some(Category::Books)),
        Ok(pb::Category::HomeGarden) => Ok(Some(Category::HomeGarden)),
        Ok(pb::Category::Sports) => Ok(Some(Category::Sports)),
        Err(_) => Err(format!("unknown category value {value}")),
    }
}

/// The ListProducts cursor is the id of the last product sent. Clients
/// treat it as opaque, so its form may change.
fn cursor(text: &str) -> Result<Option<ProductId>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    ProductId::parse(text)
        .map(Some)
        .map_err(|_| "is not a cursor this service issued".to_owned())
}

/// The one translation of an [`InventoryError`] into a gRPC status.
pub fn status(error: InventoryError) -> Status {
    let code = match &error {
        InventoryError::InvalidArgument(_) => Code::InvalidArgument,
        InventoryError::Unauthenticated => Code::Unauthenticated,
        InventoryError::Forbidden(_) => Code::PermissionDenied,
        InventoryError::ProductNotFound(_) | InventoryError::ReservationNotFound(_) => {
            Code::NotFound
        }
        InventoryError::SkuTaken(_) | InventoryError::ReservationMismatch(_) => Code::AlreadyExists,
        InventoryError::InsufficientStock(_) | InventoryError::Reservation { .. } => {
            Code::FailedPrecondition
        }
        InventoryError::Unavailable(_) => Code::Unavailable,
        InventoryError::Internal(_) => Code::Internal,
    };

    let mut details = ErrorDetails::new();
    let mut info = HashMap::new();
    match &error {
        InventoryError::InvalidArgument(violations) => {
            for violation in violations {
                details.add_bad_request_violation(&violation.field, &violation.description);
            }
        }
        InventoryError::InsufficientStock(shortages) => {
            for shortage in shortages {
                details.add_precondition_failure_violation(
                    error.code(),
                    shortage.product_id.to_string(),
                    format!(
                        "requested {}, available {}",
                        shortage.requested, shortage.available
                    ),
                );
            }
            if let Some(first) = shortages.first() {
                info.insert("product_id".to_owned(), first.product_id.to_string());
                info.insert("requested".to_owned(), first.requested.to_string());
                info.insert("available".to_owned(), first.available.to_string());
            }
        }
        InventoryError::ProductNotFound(id) => {
            info.insert("product_id".to_owned(), id.to_string());
        }
        InventoryError::ReservationNotFound(id)
        | InventoryError::ReservationMismatch(id)
        | InventoryError::Reservation { id, .. } => {
            info.insert("reservation_id".to_owned(), id.to_string());
        }
        InventoryError::SkuTaken(sku) => {
            info.insert("sku".to_owned(), sku.to_string());
        }
        InventoryError::Unauthenticated
        | InventoryError::Forbidden(_)
        | InventoryError::Unavailable(_)
        | InventoryError::Internal(_) => {}
    }
    match &error {
        InventoryError::Internal(detail) => tracing::error!(error = %detail, "internal error"),
        InventoryError::Unavailable(detail) => tracing::warn!(error = %detail, "unavailable"),
        _ => {}
    }
    ERROR_DOMAIN.status_with(code, error.code(), error.to_string(), info, details)
}

impl From<InventoryError> for Status {
    fn from(error: InventoryError) -> Self {
        status(error)
    }
}

// Domain → proto.

fn category(category: Category) -> pb::Category {
    match category {
        Category::Electronics => pb::Category::Electronics,
        Category::Clothing => pb::Category::Clothing,
        Category::Books => pb::Category::Books,
        Category::HomeGarden => pb::Category::HomeGarden,
        Category::Sports => pb::Category::Sports,
    }
}

fn reservation_status(status: ReservationStatus) -> pb::ReservationStatus {
    match status {
        ReservationStatus::Held => pb::ReservationStatus::Held,
        ReservationStatus::Committed => pb::ReservationStatus::Committed,
        ReservationStatus::Released => pb::ReservationStatus::Released,
        ReservationStatus::Expired => pb::ReservationStatus::Expired,
    }
}

fn product(entry: &CatalogEntry) -> pb::Product {
    let product = &entry.product;
    let stock = entry.level.stock;
    let policy = product.reorder_policy;
    pb::Product {
        id: product.id.to_string(),
        sku: product.sku.to_string(),
        name: product.name.as_str().to_owned(),
        description: product.description.as_str().to_owned(),
        price: Some(product.price.money().into()),
        category: category(product.category).into(),
        active: product.active,
        on_hand: stock.on_hand(),
        reserved: stock.reserved(),
        available: stock.available(),
        created_at: Some(timestamp(product.created_at)),
        updated_at: Some(timestamp(entry.updated_at())),
        reorder_policy: Some(pb::ReorderPolicy {
            avg_daily_demand: policy.avg_daily_demand,
            lead_time_days: policy.lead_time_days,
            safety_stock: policy.safety_stock,
            reorder_point: policy.reorder_point(),
        }),
    }
}

fn stock_level(level: &StockLevel) -> pb::StockLevel {
    pb::StockLevel {
        product_id: level.product_id.to_string(),
        on_hand: level.stock.on_hand(),
        reserved: level.stock.reserved(),
        available: level.stock.available(),
        updated_at: Some(timestamp(level.updated_at)),
        version: level.version,
    }
}

fn quote_response(id: ProductId, quote: &Quote) -> pb::QuoteResponse {
    pb::QuoteResponse {
        product_id: id.to_string(),
        quantity: quote.quantity.get(),
        unit_price: Some(quote.unit_price.into()),
        subtotal: Some(quote.subtotal.into()),
        discount_rate_bps: u32::from(quote.discount_rate.basis_points()),
        discount: Some(quote.discount.into()),
        tax: Some(quote.tax.into()),
        total: Some(quote.total.into()),
    }
}

fn reserve_response(reservation: &Reservation) -> pb::ReserveStockResponse {
    pb::ReserveStockResponse {
        reservation_id: reservation.id.to_string(),
        status: reservation_status(reservation.status).into(),
        lines: reservation
            .lines
            .iter()
            .map(|line| pb::ReservedLine {
                product_id: line.product_id.to_string(),
                product_name: line.product_name.as_str().to_owned(),
                quantity: line.quantity.get(),
                unit_price: Some(line.unit_price.money().into()),
            })
            .collect(),
        expires_at: Some(timestamp(reservation.expires_at)),
    }
}

#[cfg(test)]
mod tests {
    use tonic::metadata::MetadataValue;
    use tonic_types::StatusExt;
    use uuid::Uuid;

    use super::*;
    use crate::domain::reservation::{ReservationError, Shortage};

    fn product_id(n: u128) -> ProductId {
        ProductId::from_uuid(Uuid::from_u128(n))
    }

    #[test]
    fn every_error_has_its_code_and_x_error_code() {
        let reservation = ReservationId::from_uuid(Uuid::from_u128(9));
        let cases = [
            (
                InventoryError::invalid("name", "must not be empty"),
                Code::InvalidArgument,
                "VALIDATION_FAILED",
            ),
            (
                InventoryError::Unauthenticated,
                Code::Unauthenticated,
                "UNAUTHENTICATED",
            ),
            (
                InventoryError::Forbidden(ADMIN_ROLE),
                Code::PermissionDenied,
                "FORBIDDEN",
            ),
            (
                InventoryError::ProductNotFound(product_id(1)),
                Code::NotFound,
                "PRODUCT_NOT_FOUND",
            ),
            (
                InventoryError::ReservationNotFound(reservation),
                Code::NotFound,
                "RESERVATION_NOT_FOUND",
            ),
            (
                InventoryError::SkuTaken(Sku::parse("A-1").unwrap()),
                Code::AlreadyExists,
                "SKU_TAKEN",
            ),
            (
                InventoryError::ReservationMismatch(reservation),
                Code::AlreadyExists,
                "RESERVATION_MISMATCH",
            ),
            (
                InventoryError::Reservation {
                    id: reservation,
                    reason: ReservationError::Expired,
                },
                Code::FailedPrecondition,
                "RESERVATION_EXPIRED",
            ),
            (
                InventoryError::Reservation {
                    id: reservation,
                    reason: ReservationError::Released,
                },
                Code::FailedPrecondition,
                "RESERVATION_RELEASED",
            ),
            (
                InventoryError::Unavailable("db down".into()),
                Code::Unavailable,
                "UNAVAILABLE",
            ),
            (
                InventoryError::Internal("corrupt row".into()),
                Code::Internal,
                "INTERNAL",
            ),
        ];
        for (error, code, x_error_code) in cases {
            let status = status(error);
            assert_eq!(status.code(), code, "{status:?}");
            assert_eq!(status.metadata().get("x-error-code").unwrap(), x_error_code);
            let info = status.get_details_error_info().unwrap();
            assert_eq!(
                (info.reason.as_str(), info.domain.as_str()),
                (x_error_code, ERROR_DOMAIN.as_str())
            );
        }
    }

    #[test]
    fn internal_details_are_not_sent() {
        let status = status(InventoryError::Internal(
            "corrupt product 42: price -1".into(),
        ));
        assert_eq!(status.message(), "internal error");
    }

    #[test]
    fn insufficient_stock_names_every_short_product() {
        let shortages = vec![
            Shortage {
                product_id: product_id(1),
                requested: 5,
                available: 2,
            },
            Shortage {
                product_id: product_id(2),
                requested: 1,
                available: 0,
            },
        ];
        let status = status(InventoryError::InsufficientStock(shortages));
        let violations = status
            .get_details_precondition_failure()
            .unwrap()
            .violations;
        assert_eq!(violations.len(), 2);
        assert_eq!(violations[0].r#type, "INSUFFICIENT_STOCK");
        assert_eq!(violations[0].subject, product_id(1).to_string());
        assert_eq!(violations[0].description, "requested 5, available 2");
        let info = status.get_details_error_info().unwrap();
        assert_eq!(info.metadata["product_id"], product_id(1).to_string());
        assert_eq!(info.metadata["requested"], "5");
        assert_eq!(info.metadata["available"], "2");
        assert!(status.message().contains(&product_id(2).to_string()));
    }

    #[test]
    fn admin_calls_need_an_identity_and_the_admin_role() {
        let metadata = |user_id: Option<&'static str>, roles: Option<&'static str>| {
            let mut metadata = MetadataMap::new();
            if let Some(user_id) = user_id {
                metadata.insert(
                    proto::metadata::USER_ID,
                    MetadataValue::from_static(user_id),
                );
            }
            if let Some(roles) = roles {
                metadata.insert(
                    proto::metadata::USER_ROLES,
                    MetadataValue::from_static(roles),
                );
            }
            metadata
        };
        let user = Some("0192f0c1-8c7e-7c3a-9a52-3c1e2a9b8f10");
        assert!(require_admin(&metadata(user, Some("admin"))).is_ok());
        assert!(require_admin(&metadata(user, Some("customer, admin"))).is_ok());
        assert!(matches!(
            require_admin(&metadata(None, Some("admin"))),
            Err(InventoryError::Unauthenticated)
        ));
        assert!(matches!(
            require_admin(&metadata(Some("not-a-uuid"), Some("admin"))),
            Err(InventoryError::Unauthenticated)
        ));
        for roles in [
            None,
            Some(""),
            Some("customer"),
            Some("administrator"),
            Some("Admin"),
        ] {
            assert!(
                matches!(
                    require_admin(&metadata(user, roles)),
                    Err(InventoryError::Forbidden(_))
                ),
                "{roles:?}"
            );
        }
    }
}
