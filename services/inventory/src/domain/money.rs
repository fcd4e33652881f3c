//! Money: whole minor units of one currency, never a float.
//!
//! Every amount the service stores, compares or sends is an `i64` count of the
//! currency's minor units (cents for EUR) tagged with its ISO 4217 code. Adding
//! or subtracting amounts of different currencies is an error rather than a
//! silent conversion, and every operation that can overflow says so.
//!
//! Rates (discounts, taxes) are integer basis points, so applying one is an
//! exact rational multiplication followed by **one** explicit rounding step to
//! the minor unit: round half to even ("banker's rounding"). Half-even is used
//! instead of the schoolbook half-away-from-zero because it is unbiased: over
//! many quotes the half-cent cases round up and down equally often, so totals
//! and tax remitted do not drift upwards. (The course material this platform was
//! specified from rounds half away from zero; that bias is why we do not.)

use std::fmt;

/// An ISO 4217 alphabetic currency code: exactly three ASCII upper-case
/// letters, e.g. `EUR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency([u8; 3]);

/// Why a currency code was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be a three-letter upper-case ISO 4217 code such as \"EUR\", got {0:?}")]
pub struct CurrencyError(pub String);

impl Currency {
    /// The euro, for tests (the service's currency is configured).
    #[cfg(test)]
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

/// Why an arithmetic operation on money failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("cannot combine {left} and {right} amounts")]
    CurrencyMismatch { left: Currency, right: Currency },
    #[error("amount out of range")]
    Overflow,
}

/// An amount in minor units of one currency. May be negative (a refund, a
/// difference); types that must be positive, such as a price, wrap it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    amount: i64,
    currency: Currency,
}

impl Money {
    pub const fn new(amount: i64, currency: Currency) -> Self {
        Self { amount, currency }
    }

    /// The amount in minor units.
    pub const fn amount(&self) -> i64 {
        self.amount
    }

    pub const fn currency(&self) -> Currency {
        self.currency
    }

    pub fn checked_add(self, other: Self) -> Result<Self, MoneyError> {
        let currency = self.same_currency(other)?;
        let amount = self
            .amount
            .checked_add(other.amount)
            .ok_or(MoneyError::Overflow)?;
        Ok(Self::new(amount, currency))
    }

    pub fn checked_sub(self, other: Self) -> Result<Self, MoneyError> {
        let currency = self.same_currency(other)?;
        let amount = self
            .amount
            .checked_sub(other.amount)
            .ok_or(MoneyError::Overflow)?;
        Ok(Self::new(amount, currency))
    }

    /// This amount `factor` times, e.g. a unit price times a quantity.
    pub fn checked_mul(self, factor: u32) -> Result<Self, MoneyError> {
        let amount = self
            .amount
            .checked_mul(i64::from(factor))
            .ok_or(MoneyError::Overflow)?;
        Ok(Self::new(amount, self.currency))
    }

    /// `self × rate`, rounded half to even to the minor unit.
    ///
    /// The product is computed exactly in 128 bits; since a [`Rate`] is at
    /// most 100 %, the result's magnitude never exceeds `self`'s.
    pub fn apply_rate(self, rate: Rate) -> Result<Self, MoneyError> {
        let exact = i128::from(self.amount) * i128::from(rate.basis_points());
        let rounded = div_round_half_even(exact, i128::from(Rate::ONE_HUNDRED_PERCENT));
        let amount = i64::try_from(rounded).map_err(|_| MoneyError::Overflow)?;
        Ok(Self::new(amount, self.currency))
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
    /// `1999 EUR` reads as minor units on purpose: the service never guesses a
    /// currency's number of decimals.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

/// A proportion in basis points (1 bp = 0.01 %), from 0 % to 100 %.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rate(u16);

/// Why a rate was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("must be between 0 and 10000 basis points (0 % to 100 %), got {0}")]
pub struct RateError(pub u32);

impl Rate {
    /// 10 000 bp.
    pub const ONE_HUNDRED_PERCENT: u16 = 10_000;
    pub const ZERO: Self = Self(0);

    pub fn from_basis_points(basis_points: u32) -> Result<Self, RateError> {
        u16::try_from(basis_points)
            .ok()
            .filter(|bp| *bp <= Self::ONE_HUNDRED_PERCENT)
            .map(Self)
            .ok_or(RateError(basis_points))
    }

    /// For rates written in code (the discount tiers); must be ≤ 10 000.
    pub(crate) const fn from_const(basis_points: u16) -> Self {
        assert!(basis_points <= Self::ONE_HUNDRED_PERCENT);
        Self(basis_points)
    }

    pub const fn basis_points(self) -> u16 {
        self.0
    }
}

/// `numerator / denominator` rounded to the nearest integer, ties to the even
/// neighbour. Symmetric around zero (`f(-x) = -f(x)`). `denominator` must be
/// positive.
pub fn div_round_half_even(numerator: i128, denominator: i128) -> i128 {
    debug_assert!(denominator > 0);
    let quotient = numerator.div_euclid(denominator);
    // 0 <= remainder < denominator, and quotient is the floor.
    let remainder = numerator.rem_euclid(denominator);
    match (2 * remainder).cmp(&denominator) {
        std::cmp::Ordering::Less => quotient,
        std::cmp::Ordering::Greater => quotient + 1,
        std::cmp::Ordering::Equal if quotient % 2 == 0 => quotient,
        std::cmp::Ordering::Equal => quotient + 1,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const USD: Currency = Currency(*b"USD");

    #[test]
    fn currency_codes_must_be_three_upper_case_letters() {
        assert_eq!(Currency::parse("EUR"), Ok(Currency::EUR));
        for bad in ["", "EU", "EURO", "eur", "E1R", "ÉUR"] {
            assert!(Currency::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(Currency::EUR.to_string(), "EUR");
    }

    #[test]
    fn different_currencies_do_not_add() {
        let error = Money::new(1, Currency::EUR).checked_add(Money::new(1, USD));
        assert_eq!(
            error,
            Err(MoneyError::CurrencyMismatch {
                left: Currency::EUR,
                right: USD
            })
        );
        assert!(
            Money::new(1, Currency::EUR)
                .checked_sub(Money::new(1, USD))
                .is_err()
        );
    }

    #[test]
    fn overflow_is_an_error_not_a_wrap() {
        let max = Money::new(i64::MAX, Currency::EUR);
        assert_eq!(
            max.checked_add(Money::new(1, Currency::EUR)),
            Err(MoneyError::Overflow)
        );
        assert_eq!(max.checked_mul(2), Err(MoneyError::Overflow));
        assert_eq!(
            Money::new(i64::MIN, Currency::EUR).checked_sub(Money::new(1, Currency::EUR)),
            Err(MoneyError::Overflow)
        );
        assert_eq!(
            max.checked_mul(1).map(|m| m.amount()),
            Ok(i64::MAX),
            "multiplying by one is exact even at the edge"
        );
    }

    #[test]
    fn ties_round_to_even() {
        // 2.5 → 2, 3.5 → 4, -2.5 → -2, -3.5 → -4
        assert_eq!(div_round_half_even(25, 10), 2);
        assert_eq!(div_round_half_even(35, 10), 4);
        assert_eq!(div_round_half_even(-25, 10), -2);
        assert_eq!(div_round_half_even(-35, 10), -4);
        // Non-ties go to the nearest integer.
        assert_eq!(div_round_half_even(26, 10), 3);
        assert_eq!(div_round_half_even(24, 10), 2);
        assert_eq!(div_round_half_even(-26, 10), -3);
        assert_eq!(div_round_half_even(-24, 10), -2);
        assert_eq!(div_round_half_even(0, 10), 0);
    }

    #[test]
    fn applying_a_rate_rounds_once_half_even() {
        let rate = |bp| Rate::from_basis_points(bp).unwrap();
        // 50 × 5 % = 2.5 → 2 (even); 70 × 5 % = 3.5 → 4 (even).
        assert_eq!(
            Money::new(50, Currency::EUR)
                .apply_rate(rate(500))
                .unwrap()
                .amount(),
            2
        );
        assert_eq!(
            Money::new(70, Currency::EUR)
                .apply_rate(rate(500))
                .unwrap()
                .amount(),
            4
        );
        assert_eq!(
            Money::new(i64::MAX, Currency::EUR)
                .apply_rate(rate(10_000))
                .unwrap()
                .amount(),
            i64::MAX
        );
    }

    #[test]
    fn rates_above_one_hundred_percent_are_refused() {
        assert_eq!(
            Rate::from_basis_points(10_000).map(Rate::basis_points),
            Ok(10_000)
        );
        assert_eq!(Rate::from_basis_points(10_001), Err(RateError(10_001)));
        assert_eq!(Rate::from_basis_points(u32::MAX), Err(RateError(u32::MAX)));
    }

    proptest! {
        #[test]
        fn rounding_is_within_half_a_unit(n in any::<i64>(), d in 1_i64..=1_000_000) {
            let (n, d) = (i128::from(n), i128::from(d));
            let rounded = div_round_half_even(n, d);
            // |n/d - rounded| <= 1/2  ⇔  |n - rounded·d| · 2 <= d
            prop_assert!((n - rounded * d).abs() * 2 <= d);
        }

        #[test]
        fn rounding_is_symmetric(n in any::<i64>(), d in 1_i64..=1_000_000) {
            let (n, d) = (i128::from(n), i128::from(d));
            prop_assert_eq!(div_round_half_even(-n, d), -div_round_half_even(n, d));
        }

        #[test]
        fn a_rate_never_grows_an_amount(amount in any::<i64>(), bp in 0_u32..=10_000) {
            let rate = Rate::from_basis_points(bp).unwrap();
            let applied = Money::new(amount, Currency::EUR).apply_rate(rate).unwrap();
            prop_assert!(applied.amount().unsigned_abs() <= amount.unsigned_abs());
            prop_assert_eq!(applied.amount().signum() * amount.signum() >= 0, true);
        }

        #[test]
        fn currency_parse_round_trips(code in "[A-Z]{3}") {
            let currency = Currency::parse(&code).unwrap();
            prop_assert_eq!(currency.as_str(), code.as_str());
        }
    }
}
