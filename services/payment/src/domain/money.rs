//! Money as a wallet sees it: whole minor units of one currency, never
//! negative, never a float.
//!
//! A wallet's balance can only be `>= 0`, so the type that holds it,
//! [`Money`], cannot represent anything else: subtracting more than there is
//! is an error ([`MoneyError::Insufficient`]) rather than a negative number
//! some later check has to catch. What moves money — a deposit, a charge, a
//! refund — must move *some*, so those carry an [`Amount`], which is a
//! `Money` known to be positive. Combining different currencies is an error,
//! never a conversion, and so is overflow.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An ISO 4217 alphabetic currency code: exactly three ASCII upper-case
/// letters, e.g. `EUR`.
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

    /// Parses a code such as `EUR`. Lower case is refused, not fixed: the
    /// contract says upper case, and `eur` more likely means a confused
    /// client than a careless one.
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

/// Why an amount or an operation on amounts was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("amount must not be negative, got {0}")]
    Negative(i64),
    #[error("amount must be greater than zero, got {0}")]
    NotPositive(i64),
    #[error("cannot combine {left} and {right} amounts")]
    CurrencyMismatch { left: Currency, right: Currency },
    #[error("{available} is less than {requested}")]
    Insufficient { available: Money, requested: Money },
    #[error("amount out of range")]
    Overflow,
}

/// A non-negative amount in minor units of one currency. Its JSON form is the
/// platform's `{"amount": 1999, "currency": "EUR"}`; a negative `amount`
/// does not deserialise.
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

    /// The amount in minor units; never negative.
    pub const fn amount(&self) -> i64 {
        self.amount
    }

    pub const fn currency(&self) -> Currency {
        self.currency
    }

    pub const fn is_zero(&self) -> bool {
        self.amount == 0
    }

    pub fn checked_add(self, other: Self) -> Result<Self, MoneyError> {
        let currency = self.same_currency(other)?;
        let amount = self
            .amount
            .checked_add(other.amount)
            .ok_or(MoneyError::Overflow)?;
        Ok(Self { amount, currency })
    }

    /// `self - other`, refused with [`MoneyError::Insufficient`] when `other`
    /// is larger: the result would be negative.
    pub fn checked_sub(self, other: Self) -> Result<Self, MoneyError> {
        let currency = self.same_currency(other)?;
        if other.amount > self.amount {
            return Err(MoneyError::Insufficient {
                available: self,
                requested: other,
            });
        }
        Ok(Self {
            amount: self.amount - other.amount,
            currency,
        })
    }

    fn same_currency(self, other: Self) -> Result<Currency, MoneyError> {
        if self.currency == other.currency {
            Ok(self.currency)
        } else {
            Err(MoneyError::CurrencyMismatch {
                left: self.currency,
                right: other.currency,
            })
        }
    }
}

impl fmt::Display for Money {
    /// `1999 EUR` reads as minor units on purpose: the service never guesses
    /// a currency's number of decimals.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

/// Money that moves: strictly positive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Money", into = "Money")]
pub struct Amount(Money);

impl Amount {
    pub fn new(amount: i64, currency: Currency) -> Result<Self, MoneyError> {
        Self::try_from(Money::new(amount, currency).map_err(|_| MoneyError::NotPositive(amount))?)
    }

    pub const fn money(&self) -> Money {
        self.0
    }

    pub const fn minor_units(&self) -> i64 {
        self.0.amount
    }

    pub const fn currency(&self) -> Currency {
        self.0.currency
    }
}

impl TryFrom<Money> for Amount {
    type Error = MoneyError;
    fn try_from(money: Money) -> Result<Self, Self::Error> {
        if money.amount == 0 {
            return Err(MoneyError::NotPositive(0));
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

    const USD: Currency = Currency(*b"USD");

    fn eur(amount: i64) -> Money {
        Money::new(amount, Currency::EUR).unwrap()
    }

    #[test]
    fn currency_codes_must_be_three_upper_case_letters() {
        assert_eq!(Currency::parse("EUR"), Ok(Currency::EUR));
        for bad in ["", "EU", "EURO", "eur", "E1R", "ÉUR"] {
            assert!(Currency::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn money_is_never_negative() {
        assert_eq!(Money::new(-1, Currency::EUR), Err(MoneyError::Negative(-1)));
        assert_eq!(
            eur(5).checked_sub(eur(6)),
            Err(MoneyError::Insufficient {
                available: eur(5),
                requested: eur(6)
            })
        );
        assert_eq!(eur(5).checked_sub(eur(5)), Ok(eur(0)));
        assert!(serde_json::from_value::<Money>(json!({"amount": -3, "currency": "EUR"})).is_err());
    }

    #[test]
    fn currencies_do_not_mix() {
        let dollars = Money::new(1, USD).unwrap();
        assert_eq!(
            eur(1).checked_add(dollars),
            Err(MoneyError::CurrencyMismatch {
                left: Currency::EUR,
                right: USD
            })
        );
        assert!(eur(1).checked_sub(dollars).is_err());
    }

    #[test]
    fn overflow_is_an_error_not_a_wrap() {
        assert_eq!(eur(i64::MAX).checked_add(eur(1)), Err(MoneyError::Overflow));
    }

    #[test]
    fn amounts_are_positive() {
        assert_eq!(
            Amount::new(0, Currency::EUR),
            Err(MoneyError::NotPositive(0))
        );
        assert_eq!(
            Amount::new(-5, Currency::EUR),
            Err(MoneyError::NotPositive(-5))
        );
        assert_eq!(
            Amount::new(5, Currency::EUR).map(|a| a.minor_units()),
            Ok(5)
        );
        let wire = json!({"amount": 1999, "currency": "EUR"});
        let amount: Amount = serde_json::from_value(wire.clone()).unwrap();
        assert_eq!(serde_json::to_value(amount).unwrap(), wire);
        assert!(serde_json::from_value::<Amount>(json!({"amount": 0, "currency": "EUR"})).is_err());
    }

    proptest! {
        #[test]
        fn add_then_sub_is_identity(a in 0_i64..i64::MAX / 2, b in 0_i64..i64::MAX / 2) {
            prop_assert_eq!(eur(a).checked_add(eur(b)).and_then(|s| s.checked_sub(eur(b))), Ok(eur(a)));
        }

        #[test]
        fn subtraction_never_goes_below_zero(a in 0_i64..1_000_000, b in 0_i64..1_000_000) {
            match eur(a).checked_sub(eur(b)) {
                Ok(rest) => prop_assert!(a >= b && rest.amount() == a - b),
                Err(error) => {
                    let insufficient = matches!(error, MoneyError::Insufficient { .. });
                    prop_assert!(a < b && insufficient);
                }
            }
        }

        #[test]
        fn parsed_money_round_trips_through_json(amount in 0_i64.., code in "[A-Z]{3}") {
            let money = Money::new(amount, Currency::parse(&code).unwrap()).unwrap();
            let back: Money = serde_json::from_value(serde_json::to_value(money).unwrap()).unwrap();
            prop_assert_eq!(back, money);
        }
    }
}
