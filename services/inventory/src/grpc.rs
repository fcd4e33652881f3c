//! gRPC adapter: `ferrishop.inventory.v1.InventoryService`.
//!
//! Methods answer `UNIMPLEMENTED` until their use cases are built; the service
//! is registered now so health and reflection describe the binary's contract.

use proto::ferrishop::inventory::v1::inventory_service_server::InventoryService;
use proto::ferrishop::inventory::v1::*;
use tonic::{Request, Response, Status};

/// The `InventoryService` implementation.
#[derive(Debug, Clone, Default)]
pub struct InventoryServiceApi;

fn unimplemented(method: &str) -> Status {
    Status::unimplemented(format!(
        "inventory.v1.InventoryService/{method} is not implemented yet"
    ))
}

#[tonic::async_trait]
impl InventoryService for InventoryServiceApi {
    async fn get_product(
        &self,
        _: Request<GetProductRequest>,
    ) -> Result<Response<GetProductResponse>, Status> {
        Err(unimplemented("GetProduct"))
    }

    type ListProductsStream = futures::stream::Empty<Result<ListProductsResponse, Status>>;

    async fn list_products(
        &self,
        _: Request<ListProductsRequest>,
    ) -> Result<Response<Self::ListProductsStream>, Status> {
        Err(unimplemented("ListProducts"))
    }

    async fn create_product(
        &self,
        _: Request<CreateProductRequest>,
    ) -> Result<Response<CreateProductResponse>, Status> {
        Err(unimplemented("CreateProduct"))
    }

    async fn restock(
        &self,
        _: Request<RestockRequest>,
    ) -> Result<Response<RestockResponse>, Status> {
        Err(unimplemented("Restock"))
    }

    async fn quote(&self, _: Request<QuoteRequest>) -> Result<Response<QuoteResponse>, Status> {
        Err(unimplemented("Quote"))
    }

    async fn reserve_stock(
        &self,
        _: Request<ReserveStockRequest>,
    ) -> Result<Response<ReserveStockResponse>, Status> {
        Err(unimplemented("ReserveStock"))
    }

    async fn commit_reservation(
        &self,
        _: Request<CommitReservationRequest>,
    ) -> Result<Response<CommitReservationResponse>, Status> {
        Err(unimplemented("CommitReservation"))
    }

    async fn release_reservation(
        &self,
        _: Request<ReleaseReservationRequest>,
    ) -> Result<Response<ReleaseReservationResponse>, Status> {
        Err(unimplemented("ReleaseReservation"))
    }

    type WatchStockStream = futures::stream::Empty<Result<WatchStockResponse, Status>>;

    async fn watch_stock(
        &self,
        _: Request<WatchStockRequest>,
    ) -> Result<Response<Self::WatchStockStream>, Status> {
        Err(unimplemented("WatchStock"))
    }
}
