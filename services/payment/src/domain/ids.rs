//! Identifiers and the short strings requests carry, each its own type so a
//! user id cannot be passed where an order id belongs, and each parsed once,
//! at the edge, into something known to be valid.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why an identifier or key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must be a UUID, got {0:?}")]
    NotAUuid(String),
    #[error("must be 1 to {max} printable ASCII characters")]
    BadKey { max: usize },
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        // Not every id needs every constructor.
        #[allow(dead_code)]
        impl $name {
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// A new time-ordered (v7) id.
            pub fn generate() -> Self {
                Self(Uuid::now_v7())
            }

            pub fn parse(text: &str) -> Result<Self, IdError> {
                Uuid::parse_str(text)
                    .map(Self)
                    .map_err(|_| IdError::NotAUuid(text.to_owned()))
            }

            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

uuid_id!(
    /// A user of the shop, as issued by the user service; owns one wallet.
    UserId
);
uuid_id!(
    /// A wallet, as shown to its owner.
    AccountId
);
uuid_id!(
    /// An order of the order service.
    OrderId
);
uuid_id!(
    /// One movement of money: a deposit, a charge (the payment id), a refund.
    TransactionId
);

/// Checks a key of printable ASCII (no spaces at the ends, no control
/// characters) of 1 to `max` characters.
fn key(text: &str, max: usize) -> Result<String, IdError> {
    let ok = !text.is_empty()
        && text.len() <= max
        && text.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
        && text.trim() == text;
    if ok {
        Ok(text.to_owned())
    } else {
        Err(IdError::BadKey { max })
    }
}

/// Identifies a saga command across its retries (see the contract crate):
/// the saga's `{saga_id}:{step}` or a UUID.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CommandId(String);

impl CommandId {
    pub const MAX_LEN: usize = 200;

    pub fn parse(text: &str) -> Result<Self, IdError> {
        key(text, Self::MAX_LEN).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for CommandId {
    type Error = IdError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse(&text)
    }
}

impl From<CommandId> for String {
    fn from(id: CommandId) -> Self {
        id.0
    }
}

/// A client's `Idempotency-Key` for a deposit: 1 to 255 printable ASCII
/// characters (a UUID is a good choice).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub const MAX_LEN: usize = 255;

    pub fn parse(text: &str) -> Result<Self, IdError> {
        key(text, Self::MAX_LEN).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for IdempotencyKey {
    type Error = IdError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse(&text)
    }
}

impl From<IdempotencyKey> for String {
    fn from(key: IdempotencyKey) -> Self {
        key.0
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn uuids_parse_and_print_canonically() {
        let id = OrderId::parse("0193A0B2-0000-7000-8000-000000000001").unwrap();
        assert_eq!(id.to_string(), "0193a0b2-0000-7000-8000-000000000001");
        assert!(UserId::parse("user-1").is_err());
    }

    #[test]
    fn keys_are_bounded_printable_ascii() {
        assert!(CommandId::parse("0193a0b2-0000-7000-8000-000000000001:charge_payment").is_ok());
        for bad in ["", " padded", "tab\tin", "é", &"x".repeat(201)] {
            assert!(CommandId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(IdempotencyKey::parse(&"k".repeat(255)).is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(256)).is_err());
    }

    proptest! {
        #[test]
        fn accepted_keys_round_trip_through_json(text in "[!-~]([ -~]{0,100}[!-~])?") {
            let key = IdempotencyKey::parse(&text).unwrap();
            let back: IdempotencyKey = serde_json::from_value(serde_json::to_value(&key).unwrap()).unwrap();
            prop_assert_eq!(back, key);
        }
    }
}
