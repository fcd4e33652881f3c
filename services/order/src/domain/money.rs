//! Money as an order sees it: whole minor units of one currency, never
//! negative, never a float.
//!
//! An order's amounts are prices, line totals and the total — all `>= 0` —
//! so [`Money`] cannot hold anything else. Adding amounts of different
//! currencies and overflowing `i64` are errors, never silent conversions or
//! wrap-arounds: a total that does not fit is a bug the customer must not
//! pay for.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An ISO 4217 alphabetic code: exactly three ASCII upper-case letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

/// Why a currency code was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be a three-letter upper-case ISO 4217 code such as \"EUR\", got {0:?}")]
pub struct CurrencyError(pub String);

impl Currency {
    /// The euro.
    pub const EUR: Self = Self(*b"EUR");

    pub fn parse(code: &str) -> Result<Self, CurrencyError> {
        match code.as_bytes() {
            &[a, b, c] if [a, b, c].iter().all(u8::is_ascii_uppercase) => Ok(Self([a, b, c])),
            _ => Err(CurrencyError(code.to_owned())),
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII letters are ever stored, so this never falls back.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for Currency {
    type Error = CurrencyError;
    fn try_from(code: String) -> Result<Self, Self::Error> {
        Self::parse(&code)
    }
}

impl From<Currency> for String {
    fn from(currency: Currency) -> Self {
        currency.as_str().to_owned()
    }
}

/// Why an amount or a sum was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("amount must not be negative, got {0}")]
    Negative(i64),
    #[error("cannot add {left} and {right} amounts")]
    CurrencyMismatch { left: Currency, right: Currency },
    #[error("amount out of range")]
    Overflow,
}

/// A non-negative amount in minor units. JSON: `{"amount": 1999, "currency":
/// "EUR"}`; a negative amount does not deserialise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawMoney", into = "RawMoney")]
pub struct Money {
    amount: i64,
    currency: Currency,
}

/// The unchecked wire shape of [`Money`].
#[derive(Serialize, Deserialize)]
struct RawMoney {
    amount: i64,
    currency: Currency,
}

impl TryFrom<RawMoney> for Money {
    type Error = MoneyError;
    fn try_from(raw: RawMoney) -> Result<Self, Self::Error> {
        Self::new(raw.amount, raw.currency)
    }
}

impl From<Money> for RawMoney {
    fn from(money: Money) -> Self {
        Self {
            amount: money.amount,
            currency: money.currency,
        }
    }
}

impl Money {
    pub fn new(amount: i64, currency: Currency) -> Result<Self, MoneyError> {
        if amount < 0 {
            return Err(MoneyError::Negative(amount));
        }
        Ok(Self { amount, currency })
    }

    pub const fn zero(currency: Currency) -> Self {
        Self {
            amount: 0,
            currency,
        }
    }

    pub const fn amount(&self) -> i64 {
        self.amount
    }

    pub const fn currency(&self) -> Currency {
        self.currency
    }

    /// `self + other`, same currency only.
    pub fn checked_add(self, other: Self) -> Result<Self, MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch {
                left: self.currency,
                right: other.currency,
            });
        }
        let amount = self
            .amount
            .checked_add(other.amount)
            .ok_or(MoneyError::Overflow)?;
        Ok(Self { amount, ..self })
    }

    /// `self × factor`.
    pub fn checked_mul(self, factor: u32) -> Result<Self, MoneyError> {
        let amount = self
            .amount
            .checked_mul(i64::from(factor))
            .ok_or(MoneyError::Overflow)?;
        Ok(Self { amount, ..self })
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn negative_amounts_and_mixed_currencies_are_refused() {
        assert_eq!(Money::new(-1, Currency::EUR), Err(MoneyError::Negative(-1)));
        let usd = Currency::parse("USD").unwrap();
        assert!(matches!(
            Money::zero(Currency::EUR).checked_add(Money::zero(usd)),
            Err(MoneyError::CurrencyMismatch { .. })
        ));
        assert!(serde_json::from_str::<Money>(r#"{"amount":-5,"currency":"EUR"}"#).is_err());
        for bad in ["eur", "EU", "EURO", "E1R"] {
            assert!(Currency::parse(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn sums_are_exact_or_refused(a in 0..i64::MAX, b in 0..i64::MAX, n in any::<u32>()) {
            let a = Money::new(a, Currency::EUR).unwrap();
            let b = Money::new(b, Currency::EUR).unwrap();
            match a.checked_add(b) {
                Ok(sum) => prop_assert_eq!(i128::from(sum.amount()), i128::from(a.amount()) + i128::from(b.amount())),
                Err(error) => prop_assert_eq!(error, MoneyError::Overflow),
            }
            match a.checked_mul(n) {
                Ok(product) => prop_assert_eq!(i128::from(product.amount()), i128::from(a.amount()) * i128::from(n)),
                Err(error) => prop_assert_eq!(error, MoneyError::Overflow),
            }
        }

        #[test]
        fn json_round_trips(amount in 0..i64::MAX) {
            let money = Money::new(amount, Currency::EUR).unwrap();
            let json = serde_json::to_string(&money).unwrap();
            prop_assert_eq!(serde_json::from_str::<Money>(&json).unwrap(), money);
        }
    }
}
