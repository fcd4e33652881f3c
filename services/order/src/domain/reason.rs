//! Why an order was rejected (or its cancellation refused): a stable,
//! machine-readable code, the same vocabulary as the REST API's problem
//! `code`s, so a client can switch on it.
//!
//! Most codes come from the participant that refused (`INSUFFICIENT_STOCK`
//! from the inventory, `INSUFFICIENT_FUNDS` / `ACCOUNT_FROZEN` from the
//! payment service) and are kept as they are; the order service adds its own
//! for steps that never got an answer ([`FailureReason::PAYMENT_TIMEOUT`],
//! [`FailureReason::INVENTORY_UNAVAILABLE`]).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A stable reason code: `[A-Z][A-Z0-9_]*`, at most 64 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FailureReason(String);

/// Why a text is not a reason code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be an upper-case code such as INSUFFICIENT_STOCK, got {0:?}")]
pub struct ReasonError(pub String);

impl FailureReason {
    pub const INSUFFICIENT_STOCK: &'static str = "INSUFFICIENT_STOCK";
    pub const PRODUCT_NOT_FOUND: &'static str = "PRODUCT_NOT_FOUND";
    pub const INSUFFICIENT_FUNDS: &'static str = "INSUFFICIENT_FUNDS";
    pub const ACCOUNT_FROZEN: &'static str = "ACCOUNT_FROZEN";
    /// The payment service did not answer within the step's attempts.
    pub const PAYMENT_TIMEOUT: &'static str = "PAYMENT_TIMEOUT";
    /// The inventory did not answer within the step's attempts.
    pub const INVENTORY_UNAVAILABLE: &'static str = "INVENTORY_UNAVAILABLE";
    /// A participant refused for a reason without a code of its own.
    pub const UNKNOWN: &'static str = "UNKNOWN";

    pub fn parse(code: &str) -> Result<Self, ReasonError> {
        let mut bytes = code.bytes();
        let valid = code.len() <= 64
            && bytes.next().is_some_and(|first| first.is_ascii_uppercase())
            && bytes.all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        if valid {
            Ok(Self(code.to_owned()))
        } else {
            Err(ReasonError(code.to_owned()))
        }
    }

    /// The code, or [`FailureReason::UNKNOWN`] when `code` is not one.
    pub fn or_unknown(code: &str) -> Self {
        Self::parse(code).unwrap_or_else(|_| Self(Self::UNKNOWN.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for FailureReason {
    type Error = ReasonError;
    fn try_from(code: String) -> Result<Self, Self::Error> {
        Self::parse(&code)
    }
}

impl From<FailureReason> for String {
    fn from(reason: FailureReason) -> Self {
        reason.0
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn codes_are_upper_case_identifiers() {
        assert_eq!(
            FailureReason::parse("INSUFFICIENT_STOCK").unwrap().as_str(),
            "INSUFFICIENT_STOCK"
        );
        for bad in ["", "insufficient", "_X", "1X", "A-B", &"A".repeat(65)] {
            assert!(FailureReason::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(FailureReason::or_unknown("what?").as_str(), "UNKNOWN");
    }

    proptest! {
        #[test]
        fn whatever_parses_round_trips_through_json(code in "[A-Z][A-Z0-9_]{0,63}") {
            let reason = FailureReason::parse(&code).unwrap();
            let json = serde_json::to_string(&reason).unwrap();
            prop_assert_eq!(serde_json::from_str::<FailureReason>(&json).unwrap(), reason);
        }
    }
}
