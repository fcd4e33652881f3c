//! Ferrishop's gRPC contracts as Rust types.
//!
//! The `.proto` files under `proto/ferrishop/<package>/v1/` at the workspace root
//! are the source of truth (linted with buf, see `proto/buf.yaml`). This crate's
//! build script compiles them into:
//!
//! - prost messages and enums, one module per protobuf package, nested the same
//!   way: `ferrishop.order.v1` is [`ferrishop::order::v1`];
//! - tonic clients and servers for every service, e.g.
//!   [`ferrishop::order::v1::order_service_client::OrderServiceClient`] and
//!   [`ferrishop::order::v1::order_service_server::OrderService`] (the trait a
//!   service implements) with its
//!   [`OrderServiceServer`](ferrishop::order::v1::order_service_server::OrderServiceServer)
//!   wrapper;
//! - [`FILE_DESCRIPTOR_SET`], the encoded descriptors of all of them, for
//!   `tonic-reflection`.
//!
//! # Why protox
//!
//! The protos are compiled by [protox](https://docs.rs/protox), a protobuf
//! compiler written in Rust, instead of `protoc`. A fresh machine, a CI runner or
//! a Docker build stage therefore needs nothing but `cargo`: no system `protoc`,
//! no download at build time, and the same compiler version everywhere (it is
//! pinned in `Cargo.lock`). The well-known types (`google/protobuf/timestamp.proto`)
//! are bundled with protox and map to [`prost_types`].
//!
//! # Caller identity and errors
//!
//! User-facing RPCs take the caller from gRPC metadata set by the gateway, never
//! from a request field; failed calls may carry a stable error code. The keys are
//! in [`metadata`]; the rules are documented in `ferrishop/common/v1/common.proto`,
//! and [`status::ErrorDomain`] is how a service's failed call follows them.
//!
//! # Conversions
//!
//! [`convert`] holds the domain → wire conversions every service needs: times
//! to `google.protobuf.Timestamp`, and the shared `money` kernel's amounts to
//! `common.v1.Money`.

pub mod convert;
pub mod status;

/// Encoded `google.protobuf.FileDescriptorSet` of every Ferrishop proto file and
/// its imports (with source info, so comments show in reflection clients).
///
/// Register it with `tonic_reflection::server::Builder::register_encoded_file_descriptor_set`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/ferrishop_descriptor.bin"));

/// gRPC metadata keys shared by the gateway and the services.
pub mod metadata {
    /// UUID of the authenticated caller, set by the gateway on user-facing calls.
    pub const USER_ID: &str = "x-user-id";
    /// The caller's roles, comma-separated (e.g. `admin`), set by the gateway.
    pub const USER_ROLES: &str = "x-user-roles";
    /// Stable machine-readable error code (e.g. `INSUFFICIENT_STOCK`) on a failed
    /// call, copied by the gateway into the problem+json `code`.
    pub const ERROR_CODE: &str = "x-error-code";

    /// Whether [`USER_ROLES`] names `role`, in any of its values, on gRPC
    /// metadata (`MetadataMap::as_ref`) or HTTP headers alike.
    pub fn has_role(headers: &http::HeaderMap, role: &str) -> bool {
        headers
            .get_all(USER_ROLES)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|roles| roles.split(','))
            .any(|candidate| candidate.trim() == role)
    }

    #[cfg(test)]
    mod tests {
        use http::{HeaderMap, HeaderValue};

        use super::*;

        #[test]
        fn roles_are_comma_separated_in_any_value() {
            let mut headers = HeaderMap::new();
            assert!(!has_role(&headers, "admin"));
            headers.append(USER_ROLES, HeaderValue::from_static("customer"));
            assert!(!has_role(&headers, "admin"));
            headers.append(USER_ROLES, HeaderValue::from_static("support, admin"));
            assert!(has_role(&headers, "admin"));
            assert!(!has_role(&headers, "Admin"));
            assert!(!has_role(&headers, "adm"));
        }
    }
}

/// Generated code: the `ferrishop.*` protobuf packages.
pub mod ferrishop {
    /// `ferrishop.common.v1`: types shared by every service (money, pagination).
    pub mod common {
        /// Version 1.
        pub mod v1 {
            #![allow(
                clippy::all,
                clippy::pedantic,
                clippy::nursery,
                clippy::unwrap_used,
                clippy::expect_used,
                missing_docs
            )]
            include!(concat!(env!("OUT_DIR"), "/ferrishop.common.v1.rs"));
        }
    }

    /// `ferrishop.user.v1`: `UserService`.
    pub mod user {
        /// Version 1.
        pub mod v1 {
            #![allow(
                clippy::all,
                clippy::pedantic,
                clippy::nursery,
                clippy::unwrap_used,
                clippy::expect_used,
                missing_docs
            )]
            include!(concat!(env!("OUT_DIR"), "/ferrishop.user.v1.rs"));
        }
    }

    /// `ferrishop.inventory.v1`: `InventoryService`.
    pub mod inventory {
        /// Version 1.
        pub mod v1 {
            #![allow(
                clippy::all,
                clippy::pedantic,
                clippy::nursery,
                clippy::unwrap_used,
                clippy::expect_used,
                missing_docs
            )]
            include!(concat!(env!("OUT_DIR"), "/ferrishop.inventory.v1.rs"));
        }
    }

    /// `ferrishop.payment.v1`: `PaymentService`.
    pub mod payment {
        /// Version 1.
        pub mod v1 {
            #![allow(
                clippy::all,
                clippy::pedantic,
                clippy::nursery,
                clippy::unwrap_used,
                clippy::expect_used,
                missing_docs
            )]
            include!(concat!(env!("OUT_DIR"), "/ferrishop.payment.v1.rs"));
        }
    }

    /// `ferrishop.order.v1`: `OrderService`.
    pub mod order {
        /// Version 1.
        pub mod v1 {
            #![allow(
                clippy::all,
                clippy::pedantic,
                clippy::nursery,
                clippy::unwrap_used,
                clippy::expect_used,
                missing_docs
            )]
            include!(concat!(env!("OUT_DIR"), "/ferrishop.order.v1.rs"));
        }
    }
}

#[cfg(test)]
mod tests;
