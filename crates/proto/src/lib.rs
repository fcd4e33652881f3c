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

    /// The role of administrators, as the user service issues it in tokens
    /// (`auth::ADMIN_ROLE`) and the gateway passes it on in [`USER_ROLES`].
    pub const ADMIN_ROLE: &str = "admin";

    /// The user the gateway vouches for on a call, read the same way on
    /// REST headers and gRPC metadata (`MetadataMap::as_ref`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct VouchedUser {
        /// [`USER_ID`].
        pub id: uuid::Uuid,
        /// Whether [`USER_ROLES`] names [`ADMIN_ROLE`].
        pub is_admin: bool,
    }

    /// [`USER_ID`] is there but is not a UUID: refused, never ignored.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct MalformedUserId;

    impl std::fmt::Display for MalformedUserId {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{USER_ID} is not a UUID")
        }
    }

    impl std::error::Error for MalformedUserId {}

    impl VouchedUser {
        /// The vouched user, or `None` when the call names none (a
        /// service's own call from inside).
        pub fn from_headers(headers: &http::HeaderMap) -> Result<Option<Self>, MalformedUserId> {
            let Some(value) = headers.get(USER_ID) else {
                return Ok(None);
            };
            let id = value
                .to_str()
                .ok()
                .and_then(|id| uuid::Uuid::try_parse(id.trim()).ok())
                .ok_or(MalformedUserId)?;
            Ok(Some(Self {
                id,
                is_admin: has_role(headers, ADMIN_ROLE),
            }))
        }
    }

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

        #[test]
        fn the_vouched_user_is_a_uuid_with_roles() {
            let mut headers = HeaderMap::new();
            assert_eq!(VouchedUser::from_headers(&headers), Ok(None));
            headers.insert(USER_ID, HeaderValue::from_static("not-a-uuid"));
            assert_eq!(VouchedUser::from_headers(&headers), Err(MalformedUserId));
            let id = uuid::Uuid::from_u128(7);
            headers.insert(USER_ID, HeaderValue::from_str(&format!(" {id} ")).unwrap());
            let user = VouchedUser {
                id,
                is_admin: false,
            };
            assert_eq!(VouchedUser::from_headers(&headers), Ok(Some(user)));
            headers.append(USER_ROLES, HeaderValue::from_static("support"));
            headers.append(USER_ROLES, HeaderValue::from_static("admin"));
            let admin = VouchedUser { id, is_admin: true };
            assert_eq!(VouchedUser::from_headers(&headers), Ok(Some(admin)));
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
