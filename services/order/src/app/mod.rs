//! Use cases: [`commands`] change orders (placing, cancelling), [`queries`]
//! read them (one order, a customer's orders, a watch on one order, the
//! admin's saga listing).
//!
//! Commands decide on the write model (the order's events) and record their
//! outcome with the saga that carries it out in one transaction; they never
//! write a read model. Queries read only read models — and, for
//! read-your-writes, wait until the read model has caught up with the write
//! the caller made (its consistency token).

pub mod commands;
pub mod queries;

use std::time::Duration;

use proto::metadata::{ADMIN_ROLE, VouchedUser};

use crate::domain::ids::CustomerId;
use crate::error::OrderError;
use crate::feed::StatusFeed;
use crate::inventory::Inventory;
use crate::projections::orders::OrderReadModels;
use crate::saga::Sagas;
use crate::store::Store;

/// Who is calling, as the gateway vouched for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub user_id: CustomerId,
    pub is_admin: bool,
}

impl Caller {
    /// The caller the gateway vouched for, from the same headers on REST and
    /// gRPC (whose metadata is a header map): a UUID `x-user-id`, and the
    /// roles of the comma-separated `x-user-roles`.
    pub fn from_headers(headers: &http::HeaderMap) -> Result<Self, OrderError> {
        let user = VouchedUser::from_headers(headers)
            .ok()
            .flatten()
            .ok_or(OrderError::Unauthenticated)?;
        Ok(Self {
            user_id: CustomerId::from_uuid(user.id),
            is_admin: user.is_admin,
        })
    }

    /// Refuses callers without the admin role.
    pub fn require_admin(&self) -> Result<(), OrderError> {
        if self.is_admin {
            Ok(())
        } else {
            Err(OrderError::Forbidden(ADMIN_ROLE))
        }
    }
}

/// The order service's use cases. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Orders {
    store: Store,
    read_models: OrderReadModels,
    inventory: Inventory,
    sagas: Sagas,
    feed: StatusFeed,
    /// How long a query waits for its read model to reach a consistency
    /// token.
    consistency_wait: Duration,
}

impl Orders {
    pub fn new(
        store: Store,
        read_models: OrderReadModels,
        inventory: Inventory,
        sagas: Sagas,
        feed: StatusFeed,
        consistency_wait: Duration,
    ) -> Self {
        Self {
            store,
            read_models,
            inventory,
            sagas,
            feed,
            consistency_wait,
        }
    }
}
