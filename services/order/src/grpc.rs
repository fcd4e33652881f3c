//! gRPC adapter: `ferrishop.order.v1.OrderService`.
//!
//! Methods answer `UNIMPLEMENTED` until their use cases are built; the service
//! is registered now so health and reflection describe the binary's contract.

use proto::ferrishop::order::v1::order_service_server::OrderService;
use proto::ferrishop::order::v1::*;
use tonic::{Request, Response, Status};

/// The `OrderService` implementation.
#[derive(Debug, Clone, Default)]
pub struct OrderServiceApi;

fn unimplemented(method: &str) -> Status {
    Status::unimplemented(format!(
        "order.v1.OrderService/{method} is not implemented yet"
    ))
}

#[tonic::async_trait]
impl OrderService for OrderServiceApi {
    async fn place_order(
        &self,
        _: Request<PlaceOrderRequest>,
    ) -> Result<Response<PlaceOrderResponse>, Status> {
        Err(unimplemented("PlaceOrder"))
    }

    async fn get_order(
        &self,
        _: Request<GetOrderRequest>,
    ) -> Result<Response<GetOrderResponse>, Status> {
        Err(unimplemented("GetOrder"))
    }

    async fn list_orders(
        &self,
        _: Request<ListOrdersRequest>,
    ) -> Result<Response<ListOrdersResponse>, Status> {
        Err(unimplemented("ListOrders"))
    }

    async fn cancel_order(
        &self,
        _: Request<CancelOrderRequest>,
    ) -> Result<Response<CancelOrderResponse>, Status> {
        Err(unimplemented("CancelOrder"))
    }

    type WatchOrderStream = futures::stream::Empty<Result<WatchOrderResponse, Status>>;

    async fn watch_order(
        &self,
        _: Request<WatchOrderRequest>,
    ) -> Result<Response<Self::WatchOrderStream>, Status> {
        Err(unimplemented("WatchOrder"))
    }

    async fn list_sagas(
        &self,
        _: Request<ListSagasRequest>,
    ) -> Result<Response<ListSagasResponse>, Status> {
        Err(unimplemented("ListSagas"))
    }
}
