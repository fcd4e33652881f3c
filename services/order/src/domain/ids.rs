//! Identifiers. Each is a UUID wrapped in its own type so an order id can
//! never be passed where a product id is expected; parsing accepts only the
//! canonical text form clients see everywhere (36 characters, hyphenated).

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A string that is not a UUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be a UUID, got {0:?}")]
pub struct IdError(pub String);

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        // Not every id needs every constructor.
        #[allow(dead_code)]
        impl $name {
            /// Parses the canonical hyphenated form (surrounding blanks are
            /// refused, not trimmed).
            pub fn parse(text: &str) -> Result<Self, IdError> {
                if text.len() != 36 {
                    return Err(IdError(text.to_owned()));
                }
                Uuid::try_parse(text)
                    .map(Self)
                    .map_err(|_| IdError(text.to_owned()))
            }

            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }
    };
}

uuid_id!(
    /// An order; a UUID v7, so ids sort by creation time. The order's
    /// `place_order` saga and its stock reservation share this id.
    OrderId
);
uuid_id!(
    /// The user who places an order (the gateway's `x-user-id`); also the
    /// owner of the wallet that pays.
    CustomerId
);
uuid_id!(
    /// A product of the inventory's catalogue.
    ProductId
);
uuid_id!(
    /// A charge recorded by the payment service.
    PaymentId
);
uuid_id!(
    /// A saga instance (placement or cancellation of an order).
    SagaId
);

impl OrderId {
    /// A fresh v7 id.
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }
}

impl SagaId {
    /// A fresh v7 id.
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn only_the_canonical_form_parses() {
        let id = OrderId::generate();
        assert_eq!(OrderId::parse(&id.to_string()), Ok(id));
        for bad in [
            "",
            "not-a-uuid",
            " 0193a1d2-0000-7000-8000-000000000001",
            "0193a1d200007000800000000000000001",
            "{0193a1d2-0000-7000-8000-000000000001}",
        ] {
            assert!(OrderId::parse(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn display_and_parse_round_trip(bits in any::<u128>()) {
            let id = ProductId::from_uuid(Uuid::from_u128(bits));
            prop_assert_eq!(ProductId::parse(&id.to_string()), Ok(id));
        }
    }
}
