//! Money: the platform's shared [`money`] kernel, plus the
//! inventory's own rates and rounding.
//!
//! Every amount the service stores, compares or sends is a kernel [`Money`]:
//! a non-negative `i64` count of the currency's minor units (cents for EUR)
//! tagged with its ISO 4217 code. Combining amounts of different currencies is
//! an error rather than a silent conversion, and every operation that can
//! overflow says so. Those rules are shared with the order and payment
//! services, so a price means the same here as on the order that pays it.
//!
//! What is the inventory's own is pricing arithmetic: rates (discounts, taxes)
//! are integer basis points, so applying one is an exact rational
//! multiplication followed by **one** explicit rounding step to the minor
//! unit: round half to even ("banker's rounding"). Half-even is used instead
//! of the schoolbook half-away-from-zero because it is unbiased: over many
//! quotes the half-cent cases round up and down equally often, so totals and
//! tax remitted do not drift upwards. (The course material this platform was
//! specified from rounds half away from zero; that bias is why we do not.)

pub use ::money::{Currency, Money, MoneyError};

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

    /// `money × self`, rounded half to even to the minor unit.
    ///
    /// The product is computed exactly in 128 bits; since a rate is at most
    /// 100 %, the result never exceeds `money`.
    pub fn apply_to(self, money: Money) -> Result<Money, MoneyError> {
        let exact = i128::from(money.amount()) * i128::from(self.0);
        let rounded = div_round_half_even(exact, i128::from(Self::ONE_HUNDRED_PERCENT));
        let amount = i64::try_from(rounded).map_err(|_| MoneyError::Overflow)?;
        Money::new(amount, money.currency())
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

    fn eur(amount: i64) -> Money {
        Money::new(amount, Currency::EUR).unwrap()
    }

    fn rate(basis_points: u32) -> Rate {
        Rate::from_basis_points(basis_points).unwrap()
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
        // 50 × 5 % = 2.5 → 2 (even); 70 × 5 % = 3.5 → 4 (even).
        assert_eq!(rate(500).apply_to(eur(50)), Ok(eur(2)));
        assert_eq!(rate(500).apply_to(eur(70)), Ok(eur(4)));
        assert_eq!(rate(10_000).apply_to(eur(i64::MAX)), Ok(eur(i64::MAX)));
        assert_eq!(Rate::ZERO.apply_to(eur(i64::MAX)), Ok(eur(0)));
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
        fn a_rate_never_grows_an_amount(amount in 0..=i64::MAX, bp in 0_u32..=10_000) {
            let applied = rate(bp).apply_to(eur(amount)).unwrap();
            prop_assert!(applied.amount() <= amount);
            prop_assert_eq!(applied.currency(), Currency::EUR);
        }
    }
}
