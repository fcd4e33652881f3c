//! The inventory as this service needs it: prices at placement, and the
//! saga's stock reservation calls — over gRPC, behind the platform's
//! resilience stack.
//!
//! Every call goes through `resilience` (per-instance circuit breakers,
//! budgeted retries with backoff, a bulkhead, a timeout per attempt and per
//! call) on a traced channel (`platform::grpc`), so a sick inventory costs a
//! caller at most `INVENTORY_TIMEOUT` and is not hammered while it recovers.
//! Every InventoryService method may be retried: reads are reads, and
//! reservations are idempotent by reservation id (the order id).
//!
//! # Bursts wait, they are not shed
//!
//! The stack's bulkhead fails a call at once when every in-flight slot is
//! taken — right for a gateway multiplexing many users, wrong for a burst of
//! PlaceOrders that each price a few products: two hundred orders at once
//! would be turned away although the inventory is healthy. So calls first
//! wait for one of this client's own slots (as many as the bulkhead has),
//! for at most the call timeout: a burst is smoothed into the bulkhead, and
//! only a backlog that cannot clear in time is refused as unavailable.
//!
//! Answers are sorted into the two kinds a caller acts on differently
//! ([`InventoryError`]): the inventory *refused* (insufficient stock, no such
//! product — trying again will not help; the code is the inventory's
//! `x-error-code`), or it could not *answer* (unreachable, timed out,
//! overloaded, internal error — worth trying again later).

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use proto::ferrishop::inventory::v1 as pb;
use proto::ferrishop::inventory::v1::inventory_service_client::InventoryServiceClient;
use resilience::grpc::{GrpcChannel, Replayable, replayable};
use resilience::{Grpc, Resilient, RouteConfig, Upstream, UpstreamConfig};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{Code, Status};

use crate::domain::ids::{OrderId, ProductId};
use crate::domain::items::{OrderItem, ProductOffer};
use crate::domain::money::{Currency, Money};

type Channel = GrpcChannel<Resilient<Replayable<platform::grpc::ClientChannel>, Grpc>>;

/// Product lookups one order runs at once (an order lists up to 100).
const OFFER_LOOKUPS_IN_FLIGHT: usize = 8;

/// The gRPC service every method of which may be retried.
const SERVICE: &str = "ferrishop.inventory.v1.InventoryService";

/// Why an inventory call did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InventoryError {
    /// The inventory answered no; `code` is its stable `x-error-code`
    /// (`INSUFFICIENT_STOCK`, `PRODUCT_NOT_FOUND`, `RESERVATION_EXPIRED`, ...).
    #[error("inventory refused ({code}): {message}")]
    Refused { code: String, message: String },
    /// No usable answer; trying again later may succeed.
    #[error("inventory unavailable: {0}")]
    Unavailable(String),
}

/// A client of the inventory. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Inventory {
    client: InventoryServiceClient<Channel>,
    /// Calls in flight, waited for (see the module docs).
    slots: Arc<Semaphore>,
    timeout: Duration,
}

impl Inventory {
    /// A client of the inventory at `urls` (comma-separated), at most
    /// `max_in_flight` calls at once, each bounded by `timeout` (retries
    /// included). Connects lazily.
    pub fn new(
        urls: &str,
        timeout: Duration,
        max_in_flight: usize,
    ) -> Result<Self, resilience::ConfigError> {
        let route = RouteConfig {
            attempt_timeout: (timeout / 2).max(Duration::from_millis(100)).min(timeout),
            timeout,
            ..RouteConfig::default()
        };
        let upstream = Upstream::builder("inventory", urls)?
            .config(UpstreamConfig {
                route,
                max_in_flight,
                ..UpstreamConfig::default()
            })
            .build(|endpoint| {
                let channel = platform::grpc::channel(&endpoint.to_string())?;
                Ok(replayable(channel))
            })?;
        let protocol = Grpc::new().idempotent_service(SERVICE);
        let channel = GrpcChannel::new(upstream.service(protocol));
        Ok(Self {
            client: InventoryServiceClient::new(channel),
            slots: Arc::new(Semaphore::new(max_in_flight)),
            timeout,
        })
    }

    /// The client, once one of its call slots is free.
    async fn slot(
        &self,
    ) -> Result<(InventoryServiceClient<Channel>, OwnedSemaphorePermit), InventoryError> {
        let permit = tokio::time::timeout(self.timeout, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| {
                InventoryError::Unavailable(format!(
                    "no inventory call slot freed up within {:?}",
                    self.timeout
                ))
            })?
            .map_err(|_| InventoryError::Unavailable("the inventory client is closed".into()))?;
        Ok((self.client.clone(), permit))
    }

    /// What each product costs and is called now. Products the inventory
    /// does not know are left out.
    pub async fn offers(&self, ids: &[ProductId]) -> Result<Vec<ProductOffer>, InventoryError> {
        let lookups = ids.iter().copied().map(|id| async move {
            let (mut client, _slot) = self.slot().await?;
            let request = pb::GetProductRequest {
                product_id: id.to_string(),
            };
            match client.get_product(request).await {
                Ok(response) => response
                    .into_inner()
                    .product
                    .map(|product| offer(id, product))
                    .transpose(),
                Err(status) if status.code() == Code::NotFound => Ok(None),
                Err(status) => Err(classify(status)),
            }
        });
        // A large order may not take every call slot: the sagas' reserve,
        // commit and release calls need some too.
        let offers: Vec<Option<ProductOffer>> = futures::stream::iter(lookups)
            .buffered(OFFER_LOOKUPS_IN_FLIGHT)
            .try_collect()
            .await?;
        Ok(offers.into_iter().flatten().collect())
    }

    /// Reserves `items` under reservation id `order_id`, all or nothing.
    /// Idempotent: repeating it returns the existing reservation.
    pub async fn reserve(
        &self,
        order_id: OrderId,
        items: &[OrderItem],
    ) -> Result<(), InventoryError> {
        let request = pb::ReserveStockRequest {
            reservation_id: order_id.to_string(),
            lines: items
                .iter()
                .map(|item| pb::ReservationLine {
                    product_id: item.product_id.to_string(),
                    quantity: item.quantity.get(),
                })
                .collect(),
        };
        let (mut client, _slot) = self.slot().await?;
        let response = client
            .reserve_stock(request)
            .await
            .map_err(classify)?
            .into_inner();
        // A reservation released (or expired) before this request arrived
        // holds nothing: as good as a refusal.
        match pb::ReservationStatus::try_from(response.status) {
            Ok(pb::ReservationStatus::Held | pb::ReservationStatus::Committed) => Ok(()),
            Ok(pb::ReservationStatus::Released) => Err(refused(
                "RESERVATION_RELEASED",
                "the reservation was released before it was made",
            )),
            Ok(pb::ReservationStatus::Expired) => {
                Err(refused("RESERVATION_EXPIRED", "the reservation expired"))
            }
            _ => Err(InventoryError::Unavailable(format!(
                "unexpected reservation status {}",
                response.status
            ))),
        }
    }

    /// Turns the reservation into a sale. Idempotent.
    pub async fn commit(&self, order_id: OrderId) -> Result<(), InventoryError> {
        let request = pb::CommitReservationRequest {
            reservation_id: order_id.to_string(),
        };
        let (mut client, _slot) = self.slot().await?;
        client
            .commit_reservation(request)
            .await
            .map(drop)
            .map_err(classify)
    }

    /// Gives the reservation's units back — held ones to `available`,
    /// committed ones to stock. Idempotent, and fine for a reservation that
    /// was never made.
    pub async fn release(&self, order_id: OrderId) -> Result<(), InventoryError> {
        let request = pb::ReleaseReservationRequest {
            reservation_id: order_id.to_string(),
        };
        let (mut client, _slot) = self.slot().await?;
        client
            .release_reservation(request)
            .await
            .map(drop)
            .map_err(classify)
    }
}

fn refused(code: &str, message: &str) -> InventoryError {
    InventoryError::Refused {
        code: code.to_owned(),
        message: message.to_owned(),
    }
}

/// A refusal when the inventory answered a request it judged; anything
/// that says "no answer" (or "my fault") is worth another try.
fn classify(status: Status) -> InventoryError {
    match status.code() {
        Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::PermissionDenied
        | Code::Unauthenticated => InventoryError::Refused {
            code: status
                .metadata()
                .get(proto::metadata::ERROR_CODE)
                .and_then(|value| value.to_str().ok())
                .map_or_else(
                    || format!("{:?}", status.code()).to_uppercase(),
                    str::to_owned,
                ),
            message: status.message().to_owned(),
        },
        _ => InventoryError::Unavailable(format!("{:?}: {}", status.code(), status.message())),
    }
}

/// A product as an offer; a price that does not parse is the inventory's
/// bug, reported as unavailability rather than guessed at.
fn offer(id: ProductId, product: pb::Product) -> Result<ProductOffer, InventoryError> {
    let price = product
        .price
        .ok_or_else(|| InventoryError::Unavailable(format!("product {id} has no price")))?;
    let currency = Currency::parse(&price.currency)
        .map_err(|error| InventoryError::Unavailable(format!("product {id}: {error}")))?;
    let unit_price = Money::new(price.amount, currency)
        .map_err(|error| InventoryError::Unavailable(format!("product {id}: {error}")))?;
    Ok(ProductOffer {
        product_id: id,
        name: product.name,
        unit_price,
        for_sale: product.active,
    })
}

#[cfg(test)]
mod tests {
    use tonic::metadata::MetadataValue;

    use super::*;

    #[test]
    fn refusals_keep_the_inventorys_code() {
        let mut status = Status::failed_precondition("short");
        status.metadata_mut().insert(
            proto::metadata::ERROR_CODE,
            MetadataValue::from_static("INSUFFICIENT_STOCK"),
        );
        assert_eq!(
            classify(status),
            InventoryError::Refused {
                code: "INSUFFICIENT_STOCK".into(),
                message: "short".into()
            }
        );
        assert!(matches!(
            classify(Status::unavailable("down")),
            InventoryError::Unavailable(_)
        ));
        assert!(matches!(
            classify(Status::deadline_exceeded("slow")),
            InventoryError::Unavailable(_)
        ));
        assert!(matches!(
            classify(Status::internal("bug")),
            InventoryError::Unavailable(_)
        ));
    }
}
