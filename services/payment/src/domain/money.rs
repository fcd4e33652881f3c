//! Money as a wallet sees it: the platform's shared [`money`] kernel
//! — whole minor units of one currency, never negative, never a float — and
//! the payment service's own rule on top, [`Amount`].
//!
//! A wallet's balance can only be `>= 0`, so the type that holds it, the
//! kernel's [`Money`], cannot represent anything else: subtracting more than
//! there is is an error ([`MoneyError::Insufficient`]) rather than a negative
//! number some later check has to catch. Combining different currencies is an
//! error, never a conversion, and so is overflow. Those rules are the kernel's,
//! shared with every service, so a balance, a charge and an order's total mean
//! the same everywhere.
//!
//! What moves money — a deposit, a charge, a refund — must move *some*, so
//! those carry an [`Amount`], which is a `Money` known to be positive. That
//! rule is this service's alone.

use std::fmt;

use serde::{Deserialize, Serialize};

pub use ::money::{Currency, Money, MoneyError};

/// Money that moves: strictly positive. Its JSON form is [`Money`]'s; an
/// `amount` of zero or less does not deserialise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Money", into = "Money")]
pub struct Amount(Money);

/// Why an [`Amount`] was refused: it was not greater than zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("amount must be greater than zero, got {0}")]
pub struct AmountError(pub i64);

impl Amount {
    pub fn new(amount: i64, currency: Currency) -> Result<Self, AmountError> {
        Self::try_from(Money::new(amount, currency).map_err(|_| AmountError(amount))?)
    }

    pub const fn money(&self) -> Money {
        self.0
    }

    pub const fn minor_units(&self) -> i64 {
        self.0.amount()
    }

    pub const fn currency(&self) -> Currency {
        self.0.currency()
    }
}

impl TryFrom<Money> for Amount {
    type Error = AmountError;
    fn try_from(money: Money) -> Result<Self, Self::Error> {
        if money.is_zero() {
            return Err(AmountError(0));
        }
        Ok(Self(money))
    }
}

impl From<Amount> for Money {
    fn from(amount: Amount) -> Self {
        amount.0
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    #[test]
    fn amounts_are_positive() {
        assert_eq!(Amount::new(0, Currency::EUR), Err(AmountError(0)));
        assert_eq!(Amount::new(-5, Currency::EUR), Err(AmountError(-5)));
        assert_eq!(
            AmountError(-5).to_string(),
            "amount must be greater than zero, got -5"
        );
        assert_eq!(
            Amount::new(5, Currency::EUR).map(|a| a.minor_units()),
            Ok(5)
        );
        assert_eq!(
            Amount::try_from(Money::zero(Currency::EUR)),
            Err(AmountError(0))
        );
    }

    #[test]
    fn json_is_moneys_and_zero_is_refused() {
        let wire = json!({"amount": 1999, "currency": "EUR"});
        let amount: Amount = serde_json::from_value(wire.clone()).unwrap();
        assert_eq!(serde_json::to_value(amount).unwrap(), wire);
        assert_eq!(amount.to_string(), "1999 EUR");
        assert!(serde_json::from_value::<Amount>(json!({"amount": 0, "currency": "EUR"})).is_err());
        assert!(
            serde_json::from_value::<Amount>(json!({"amount": -1, "currency": "EUR"})).is_err()
        );
    }

    proptest! {
        #[test]
        fn exactly_the_positive_amounts_exist(amount in any::<i64>()) {
            match Amount::new(amount, Currency::EUR) {
                Ok(positive) => prop_assert!(amount > 0 && positive.money().amount() == amount),
                Err(error) => prop_assert!(amount <= 0 && error == AmountError(amount)),
            }
        }
    }
}
