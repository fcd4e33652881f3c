//! Pricing: what `quantity` units of a product cost, discount and tax included.
//!
//! A pure function of the unit price, the quantity and the tax rate:
//!
//! 1. `subtotal = unit_price × quantity` (exact);
//! 2. `discount = subtotal × tier(quantity)`, rounded half to even to the minor
//!    unit, where the bulk tiers are 0–9 units → 0 %, 10–49 → 5 %,
//!    50–99 → 10 %, 100 and more → 15 %;
//! 3. `tax = (subtotal − discount) × tax_rate`, rounded half to even;
//! 4. `total = subtotal − discount + tax` (exact).
//!
//! Each amount is rounded once, from its exact value, and the total is
//! assembled from the rounded parts, so the parts always add up to the total a
//! customer sees (rounding the total separately could be a cent off the sum of
//! its lines). See [`super::money`] for why half-even.
//!
//! Worked example: 100.00 EUR × 20 at 8 % → subtotal 200000, discount 5 % =
//! 10000, tax 8 % of 190000 = 15200, total 205200 (minor units).

use super::money::{Money, MoneyError, Rate};
use super::product::Price;
use super::stock::Quantity;

/// Bulk discount tiers: the highest tier whose threshold `quantity` reaches
/// applies. Ordered by descending threshold.
const BULK_TIERS: [(u32, Rate); 3] = [
    (100, Rate::from_const(1_500)),
    (50, Rate::from_const(1_000)),
    (10, Rate::from_const(500)),
];

/// The bulk discount rate for buying `quantity` units at once.
pub fn bulk_discount(quantity: Quantity) -> Rate {
    BULK_TIERS
        .iter()
        .find(|(threshold, _)| quantity.get() >= *threshold)
        .map_or(Rate::ZERO, |(_, rate)| *rate)
}

/// A priced quantity of one product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quote {
    pub unit_price: Money,
    pub quantity: Quantity,
    pub subtotal: Money,
    pub discount_rate: Rate,
    /// Subtracted from the subtotal; never negative, never above it.
    pub discount: Money,
    pub tax: Money,
    pub total: Money,
}

/// Prices `quantity` units at `unit_price` with `tax_rate`.
///
/// Fails only when an amount leaves the `i64` range (a price and quantity
/// whose product exceeds about 92 quadrillion minor units).
pub fn quote(unit_price: Price, quantity: Quantity, tax_rate: Rate) -> Result<Quote, MoneyError> {
    let unit_price = unit_price.money();
    let subtotal = unit_price.checked_mul(quantity.get())?;
    let discount_rate = bulk_discount(quantity);
    let discount = discount_rate.apply_to(subtotal)?;
    let taxable = subtotal.checked_sub(discount)?;
    let tax = tax_rate.apply_to(taxable)?;
    let total = taxable.checked_add(tax)?;
    Ok(Quote {
        unit_price,
        quantity,
        subtotal,
        discount_rate,
        discount,
        tax,
        total,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::domain::money::Currency;

    fn price(amount: i64) -> Price {
        Price::parse(amount, Currency::EUR, Currency::EUR).unwrap()
    }

    fn q(units: u32) -> Quantity {
        Quantity::new(units).unwrap()
    }

    fn rate(bp: u32) -> Rate {
        Rate::from_basis_points(bp).unwrap()
    }

    #[test]
    fn the_worked_example() {
        let quote = quote(price(10_000), q(20), rate(800)).unwrap();
        assert_eq!(quote.subtotal.amount(), 200_000);
        assert_eq!(quote.discount_rate.basis_points(), 500);
        assert_eq!(quote.discount.amount(), 10_000);
        assert_eq!(quote.tax.amount(), 15_200);
        assert_eq!(quote.total.amount(), 205_200);
        assert_eq!(quote.total.currency(), Currency::EUR);
    }

    #[test]
    fn tier_boundaries() {
        for (quantity, expected_bp) in [
            (1, 0),
            (9, 0),
            (10, 500),
            (49, 500),
            (50, 1_000),
            (99, 1_000),
            (100, 1_500),
            (u32::MAX, 1_500),
        ] {
            assert_eq!(
                bulk_discount(q(quantity)).basis_points(),
                expected_bp,
                "{quantity} units"
            );
        }
    }

    #[test]
    fn tier_boundaries_in_amounts() {
        // 1.00 EUR units, tax-free: the discount is visible in whole cents.
        let discount = |units| {
            quote(price(100), q(units), Rate::ZERO)
                .unwrap()
                .discount
                .amount()
        };
        assert_eq!(discount(9), 0);
        assert_eq!(discount(10), 50);
        assert_eq!(discount(49), 245);
        assert_eq!(discount(50), 500);
        assert_eq!(discount(99), 990);
        assert_eq!(discount(100), 1_500);
    }

    #[test]
    fn half_cents_round_to_even() {
        // 10 × 0.05 EUR = 50 cents, 5 % → 2.5 cents → 2 (even).
        let quote_a = quote(price(5), q(10), Rate::ZERO).unwrap();
        assert_eq!(quote_a.discount.amount(), 2);
        // 10 × 0.07 EUR = 70 cents, 5 % → 3.5 cents → 4 (even).
        let quote_b = quote(price(7), q(10), Rate::ZERO).unwrap();
        assert_eq!(quote_b.discount.amount(), 4);
        // Tax: 1 unit of 0.25 EUR at 10 % → 2.5 cents → 2.
        let quote_c = quote(price(25), q(1), rate(1_000)).unwrap();
        assert_eq!(quote_c.tax.amount(), 2);
        assert_eq!(quote_c.total.amount(), 27);
    }

    #[test]
    fn a_subtotal_out_of_range_is_an_error() {
        assert_eq!(
            quote(price(i64::MAX), q(2), Rate::ZERO),
            Err(MoneyError::Overflow)
        );
    }

    proptest! {
        #[test]
        fn the_parts_add_up(
            amount in 1_i64..=10_000_000,
            units in 1_u32..=100_000,
            tax_bp in 0_u32..=10_000,
        ) {
            let quote = quote(price(amount), q(units), rate(tax_bp)).unwrap();
            let (subtotal, discount, tax, total) = (
                quote.subtotal.amount(),
                quote.discount.amount(),
                quote.tax.amount(),
                quote.total.amount(),
            );
            prop_assert_eq!(subtotal, amount * i64::from(units));
            prop_assert_eq!(total, subtotal - discount + tax);
            prop_assert!(0 <= discount && discount <= subtotal);
            prop_assert!(0 <= tax && tax <= subtotal - discount);
            prop_assert!(total > 0);
        }

        #[test]
        fn more_units_never_get_a_smaller_discount_rate(a in 1_u32..1_000, b in 1_u32..1_000) {
            let (low, high) = (a.min(b), a.max(b));
            prop_assert!(bulk_discount(q(low)) <= bulk_discount(q(high)));
        }

        #[test]
        fn quoting_never_panics(amount in 1_i64.., units in 1_u32.., tax_bp in 0_u32..=10_000) {
            // Either a consistent quote or an overflow error, whatever the inputs.
            if let Ok(quote) = quote(price(amount), q(units), rate(tax_bp)) {
                prop_assert_eq!(
                    i128::from(quote.total.amount()),
                    i128::from(quote.subtotal.amount()) - i128::from(quote.discount.amount())
                        + i128::from(quote.tax.amount())
                );
            }
        }
    }
}
