//! Money: whole minor units of one currency, never negative, never a float.
//!
//! # Why money is a shared kernel
//!
//! Every Ferrishop service is its own bounded context with its own model, and
//! shares types with the others only through contracts (protobuf, events).
//! Money is the exception, on purpose: it crosses every boundary. An inventory
//! price becomes an order line's unit price, an order's total becomes a
//! payment charge, a charge becomes a wallet balance, and all of them travel as
//! `ferrishop.common.v1.Money`. Were each context to define money for itself,
//! the definitions would drift apart — one would accept `eur`, one would allow
//! a negative amount, one would wrap on overflow — and a value valid on one
//! side of a boundary could be refused, or silently changed, on the other.
//!
//! So this crate is a *shared kernel*: a deliberately small model that every
//! context uses and that changes only with all of them in mind. It holds
//! exactly the rules every context must agree on:
//!
//! - **minor units**: an amount is an `i64` count of the currency's minor units
//!   (cents for EUR), never a float and never negative (a balance cannot be
//!   below zero, and a price, a total or a charge is not a debt);
//! - **currency codes**: ISO 4217 alphabetic, exactly three ASCII upper-case
//!   letters, parsed once into a [`Currency`] ("parse, don't validate"): a
//!   [`Currency`] or a [`Money`] that exists is valid, in memory and in JSON;
//! - **arithmetic**: amounts of different currencies never combine (an error,
//!   never a conversion), overflow is an error and never a wrap-around, and a
//!   subtraction that would go below zero is refused.
//!
//! Everything else stays in the contexts, built on top of these types: the
//! payment service's strictly positive `Amount` and its wallet rules, the
//! inventory's prices, rates, bulk discounts, tax and half-even rounding, the
//! order's line totals. A rule belongs here only when every context must hold
//! it. The crate does no I/O and depends on no framework (serde and thiserror
//! only), so any layer may use it, domain code included.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An ISO 4217 alphabetic currency code: exactly three ASCII upper-case
/// letters, e.g. `EUR`. Its JSON form is the code as a string.
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

    /// Parses a code such as `EUR`. Lower case is refused rather than fixed:
    /// the contract (`common.proto`) says upper case, and a client sending
    /// `eur` is more likely confused about the field than about case.
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

impl std::str::FromStr for Currency {
    type Err = CurrencyError;
    fn from_str(code: &str) -> Result<Self, Self::Err> {
        Self::parse(code)
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("amount must not be negative, got {0}")]
    Negative(i64),
    #[error("cannot combine {left} and {right} amounts")]
    CurrencyMismatch { left: Currency, right: Currency },
    /// A subtraction whose result would be negative.
    #[error("{available} is less than {requested}")]
    Insufficient { available: Money, requested: Money },
    #[error("amount out of range")]
    Overflow,
}

/// A non-negative amount in minor units of one currency. Its JSON form is the
/// platform's `{"amount": 1999, "currency": "EUR"}`; a negative `amount` or a
/// malformed `currency` does not deserialise.
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
    /// `amount` minor units of `currency`; refused when negative.
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

    /// `self + other`, same currency only.
    pub fn checked_add(self, other: Self) -> Result<Self, MoneyError> {
        let currency = self.same_currency(other)?;
        let amount = self
            .amount
            .checked_add(other.amount)
            .ok_or(MoneyError::Overflow)?;
        Ok(Self { amount, currency })
    }

    /// `self - other`, same currency only, refused with
    /// [`MoneyError::Insufficient`] when `other` is larger: the result would
    /// be negative.
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

    /// This amount `factor` times, e.g. a unit price times a quantity.
    pub fn checked_mul(self, factor: u32) -> Result<Self, MoneyError> {
        let amount = self
            .amount
            .checked_mul(i64::from(factor))
            .ok_or(MoneyError::Overflow)?;
        Ok(Self { amount, ..self })
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
    /// `1999 EUR` reads as minor units on purpose: no service guesses a
    /// currency's number of decimals.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn usd() -> Currency {
        Currency::parse("USD").unwrap()
    }

    fn eur(amount: i64) -> Money {
        Money::new(amount, Currency::EUR).unwrap()
    }

    #[test]
    fn currency_codes_must_be_three_upper_case_letters() {
        assert_eq!(Currency::parse("EUR"), Ok(Currency::EUR));
        for bad in ["", "EU", "EURO", "eur", "E1R", "ÉUR", " EUR"] {
            assert_eq!(
                Currency::parse(bad),
                Err(CurrencyError(bad.to_owned())),
                "{bad:?} should be refused"
            );
        }
        assert_eq!(Currency::EUR.to_string(), "EUR");
        assert_eq!("EUR".parse::<Currency>(), Ok(Currency::EUR));
        assert!("eur".parse::<Currency>().is_err());
        assert_eq!(
            CurrencyError("eur".into()).to_string(),
            "must be a three-letter upper-case ISO 4217 code such as \"EUR\", got \"eur\""
        );
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
        assert_eq!(eur(5).checked_sub(eur(5)), Ok(Money::zero(Currency::EUR)));
        assert!(eur(0).is_zero() && !eur(1).is_zero());
    }

    #[test]
    fn currencies_do_not_mix() {
        let dollars = Money::new(1, usd()).unwrap();
        let mismatch = MoneyError::CurrencyMismatch {
            left: Currency::EUR,
            right: usd(),
        };
        assert_eq!(eur(1).checked_add(dollars), Err(mismatch));
        assert_eq!(eur(1).checked_sub(dollars), Err(mismatch));
        assert_eq!(mismatch.to_string(), "cannot combine EUR and USD amounts");
    }

    #[test]
    fn overflow_is_an_error_not_a_wrap() {
        let max = eur(i64::MAX);
        assert_eq!(max.checked_add(eur(1)), Err(MoneyError::Overflow));
        assert_eq!(max.checked_mul(2), Err(MoneyError::Overflow));
        assert_eq!(max.checked_mul(1), Ok(max), "× 1 is exact at the edge");
    }

    #[test]
    fn json_is_the_platform_form_and_is_checked() {
        assert_eq!(
            serde_json::to_value(eur(1999)).unwrap(),
            json!({"amount": 1999, "currency": "EUR"})
        );
        assert_eq!(eur(1999).to_string(), "1999 EUR");
        for bad in [
            json!({"amount": -3, "currency": "EUR"}),
            json!({"amount": 3, "currency": "eur"}),
            json!({"amount": 3}),
            json!({"amount": 1.5, "currency": "EUR"}),
        ] {
            assert!(
                serde_json::from_value::<Money>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }

    proptest! {
        #[test]
        fn any_three_upper_case_letters_parse_and_round_trip(code in "[A-Z]{3}") {
            let currency = Currency::parse(&code).unwrap();
            prop_assert_eq!(currency.as_str(), code.as_str());
            let json = serde_json::to_string(&currency).unwrap();
            prop_assert_eq!(serde_json::from_str::<Currency>(&json).unwrap(), currency);
        }

        #[test]
        fn anything_else_is_refused(code in "\\PC{0,5}") {
            let valid = code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase());
            prop_assert_eq!(Currency::parse(&code).is_ok(), valid);
        }

        #[test]
        fn only_non_negative_amounts_exist(amount in any::<i64>()) {
            match Money::new(amount, Currency::EUR) {
                Ok(money) => prop_assert!(amount >= 0 && money.amount() == amount),
                Err(error) => prop_assert!(amount < 0 && error == MoneyError::Negative(amount)),
            }
        }

        #[test]
        fn sums_and_products_are_exact_or_refused(
            // Small amounts too, or nearly every product would overflow.
            a in prop_oneof![0..=i64::MAX, 0..=1_000_000_000_i64],
            b in 0..=i64::MAX,
            n in any::<u32>(),
        ) {
            let (a, b) = (eur(a), eur(b));
            let exact_sum = i128::from(a.amount()) + i128::from(b.amount());
            match a.checked_add(b) {
                Ok(sum) => prop_assert_eq!(i128::from(sum.amount()), exact_sum),
                Err(error) => prop_assert!(error == MoneyError::Overflow && exact_sum > i128::from(i64::MAX)),
            }
            let exact_product = i128::from(a.amount()) * i128::from(n);
            match a.checked_mul(n) {
                Ok(product) => prop_assert_eq!(i128::from(product.amount()), exact_product),
                Err(error) => prop_assert!(error == MoneyError::Overflow && exact_product > i128::from(i64::MAX)),
            }
        }

        #[test]
        fn subtraction_never_goes_below_zero(a in 0..=i64::MAX, b in 0..=i64::MAX) {
            match eur(a).checked_sub(eur(b)) {
                Ok(rest) => prop_assert!(a >= b && rest.amount() == a - b),
                Err(error) => {
                    let insufficient = matches!(error, MoneyError::Insufficient { .. });
                    prop_assert!(a < b && insufficient);
                }
            }
        }

        #[test]
        fn add_then_sub_is_identity(a in 0..i64::MAX / 2, b in 0..i64::MAX / 2) {
            prop_assert_eq!(eur(a).checked_add(eur(b)).and_then(|s| s.checked_sub(eur(b))), Ok(eur(a)));
        }

        #[test]
        fn mismatched_currencies_are_always_refused(a in 0..=i64::MAX, b in 0..=i64::MAX, code in "[A-Z]{3}") {
            let other = Currency::parse(&code).unwrap();
            prop_assume!(other != Currency::EUR);
            let theirs = Money::new(b, other).unwrap();
            let mismatch = MoneyError::CurrencyMismatch { left: Currency::EUR, right: other };
            prop_assert_eq!(eur(a).checked_add(theirs), Err(mismatch));
            prop_assert_eq!(eur(a).checked_sub(theirs), Err(mismatch));
        }

        #[test]
        fn json_round_trips(amount in 0..=i64::MAX, code in "[A-Z]{3}") {
            let money = Money::new(amount, Currency::parse(&code).unwrap()).unwrap();
            let back: Money = serde_json::from_value(serde_json::to_value(money).unwrap()).unwrap();
            prop_assert_eq!(back, money);
        }
    }
}
