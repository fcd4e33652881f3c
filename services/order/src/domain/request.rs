//! Safe retries of PlaceOrder: the idempotency key and the request's
//! fingerprint.
//!
//! A client that did not see the answer to PlaceOrder sends it again with the
//! same `idempotency_key`; the service must answer with the order the first
//! request created rather than place a second one. Keys are scoped per
//! customer (two customers may pick the same key). A key used again for a
//! *different* order is a client bug, refused rather than silently answered
//! with an unrelated order — so each key is stored with the fingerprint of
//! what was ordered, and a repeat must match it.
//!
//! "The same order" means the same products in the same quantities once
//! duplicates are merged: `[A×1, B×2]` and `[B×2, A×1]` would place the same
//! order, so they share a fingerprint. The prices are not part of it (they
//! are the server's, looked up at placement).

use std::fmt;

use super::items::OrderItems;

/// Longest idempotency key accepted.
pub const MAX_KEY_LEN: usize = 255;

/// A client-chosen key: 1 to 255 characters, printable, no surrounding
/// blanks.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

/// Why an idempotency key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("is required")]
    Missing,
    #[error("must be at most {MAX_KEY_LEN} characters")]
    TooLong,
    #[error("must not contain control characters or surrounding blanks")]
    Malformed,
}

impl IdempotencyKey {
    pub fn parse(key: &str) -> Result<Self, KeyError> {
        if key.is_empty() {
            return Err(KeyError::Missing);
        }
        if key.chars().count() > MAX_KEY_LEN {
            return Err(KeyError::TooLong);
        }
        if key.trim() != key || key.chars().any(char::is_control) {
            return Err(KeyError::Malformed);
        }
        Ok(Self(key.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a request ordered, in a canonical text form:
/// `<product>x<units>` per product, sorted by product id, comma-separated.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestFingerprint(String);

impl RequestFingerprint {
    pub fn of(items: &OrderItems) -> Self {
        let mut entries: Vec<_> = items
            .as_slice()
            .iter()
            .map(|item| (item.product_id, item.quantity))
            .collect();
        entries.sort();
        let text = entries
            .iter()
            .map(|(product, quantity)| format!("{product}x{quantity}"))
            .collect::<Vec<_>>()
            .join(",");
        Self(text)
    }

    /// A fingerprint as stored.
    pub fn from_stored(text: String) -> Self {
        Self(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;
    use crate::domain::items::tests::item;
    use crate::domain::items::{OrderItem, Quantity};

    #[test]
    fn keys_are_checked() {
        assert_eq!(IdempotencyKey::parse(""), Err(KeyError::Missing));
        assert_eq!(
            IdempotencyKey::parse(&"k".repeat(256)),
            Err(KeyError::TooLong)
        );
        assert!(IdempotencyKey::parse(&"é".repeat(255)).is_ok());
        assert_eq!(IdempotencyKey::parse(" k"), Err(KeyError::Malformed));
        assert_eq!(IdempotencyKey::parse("a\nb"), Err(KeyError::Malformed));
        assert_eq!(
            IdempotencyKey::parse("order-1").unwrap().as_str(),
            "order-1"
        );
    }

    proptest! {
        #[test]
        fn order_and_splitting_of_items_do_not_change_the_fingerprint(
            items in vec(item(), 1..40),
            split in any::<prop::sample::Index>(),
        ) {
            let original = OrderItems::parse(items.clone()).unwrap();
            // The same items reversed, with one of them split in two.
            let mut other: Vec<OrderItem> = items.iter().rev().copied().collect();
            let at = split.index(other.len());
            let units = other[at].quantity.get();
            if units > 1 {
                other[at].quantity = Quantity::new(units - 1).unwrap();
                other.push(OrderItem { product_id: other[at].product_id, quantity: Quantity::new(1).unwrap() });
            }
            let other = OrderItems::parse(other).unwrap();
            prop_assert_eq!(RequestFingerprint::of(&original), RequestFingerprint::of(&other));
        }

        #[test]
        fn a_different_quantity_changes_the_fingerprint(items in vec(item(), 1..40)) {
            let original = OrderItems::parse(items.clone()).unwrap();
            let mut more = items;
            more.push(OrderItem { product_id: more[0].product_id, quantity: Quantity::new(1).unwrap() });
            let more = OrderItems::parse(more).unwrap();
            prop_assert_ne!(RequestFingerprint::of(&original), RequestFingerprint::of(&more));
        }
    }
}
