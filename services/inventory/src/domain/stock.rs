//! Stock levels and the arithmetic that keeps them honest.
//!
//! A product's stock is two counters: `on_hand`, the units physically in the
//! warehouse, and `reserved`, the units held for orders that are not sold yet.
//! `available = on_hand − reserved` is what can still be promised. [`Stock`]
//! can only hold `0 ≤ reserved ≤ on_hand`, so `available ≥ 0` — nothing is
//! ever oversold — is a property of the type: every operation returns a new
//! `Stock` or an error, never a level that breaks it.
//!
//! | operation  | on_hand | reserved | available | when |
//! |------------|---------|----------|-----------|------|
//! | restock    | + q     |          | + q       | goods arrive |
//! | reserve    |         | + q      | − q       | an order saga holds units |
//! | release    |         | − q      | + q       | a hold is cancelled or expires |
//! | commit     | − q     | − q      |           | held units are sold |
//! | return     | + q     |          | + q       | sold units come back (cancelled order) |

use std::num::NonZeroU32;

use chrono::{DateTime, Utc};

use super::product::ProductId;

/// A number of units to move: at least one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Quantity(NonZeroU32);

/// Why a quantity was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("must be greater than 0")]
    Zero,
    #[error("is too large")]
    TooLarge,
}

impl Quantity {
    pub fn new(units: u32) -> Result<Self, QuantityError> {
        NonZeroU32::new(units).map(Self).ok_or(QuantityError::Zero)
    }

    /// A quantity read back from storage, where it is a `bigint`.
    pub fn from_stored(units: i64) -> Result<Self, QuantityError> {
        let units = u32::try_from(units).map_err(|_| QuantityError::TooLarge)?;
        Self::new(units)
    }

    pub const fn get(self) -> u32 {
        self.0.get()
    }

    pub fn checked_add(self, other: Self) -> Result<Self, QuantityError> {
        self.0
            .checked_add(other.get())
            .map(Self)
            .ok_or(QuantityError::TooLarge)
    }

    fn units(self) -> i64 {
        i64::from(self.get())
    }
}

/// Why a stock operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StockError {
    /// Fewer units are available than requested. The one refusal a caller
    /// is expected to see.
    #[error("requested {requested}, available {available}")]
    Insufficient { requested: u32, available: i64 },
    /// The counters cannot represent the result (more than 2⁶³ units).
    #[error("stock counter out of range")]
    Overflow,
    /// Releasing or committing more than is reserved, or counters that
    /// break `0 ≤ reserved ≤ on_hand`: the stored state is inconsistent, a
    /// bug rather than a request error.
    #[error("inconsistent stock: on_hand {on_hand}, reserved {reserved}")]
    Inconsistent { on_hand: i64, reserved: i64 },
}

/// A product's stock counters, with `0 ≤ reserved ≤ on_hand` always.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Stock {
    on_hand: i64,
    reserved: i64,
}

impl Stock {
    pub fn new(on_hand: i64, reserved: i64) -> Result<Self, StockError> {
        if 0 <= reserved && reserved <= on_hand {
            Ok(Self { on_hand, reserved })
        } else {
            Err(StockError::Inconsistent { on_hand, reserved })
        }
    }

    /// `units` on hand, none reserved.
    #[cfg(test)]
    pub fn with_on_hand(units: u32) -> Self {
        Self {
            on_hand: i64::from(units),
            reserved: 0,
        }
    }

    pub const fn on_hand(&self) -> i64 {
        self.on_hand
    }

    pub const fn reserved(&self) -> i64 {
        self.reserved
    }

    pub const fn available(&self) -> i64 {
        self.on_hand - self.reserved
    }

    pub fn restock(self, quantity: Quantity) -> Result<Self, StockError> {
        let on_hand = self
            .on_hand
            .checked_add(quantity.units())
            .ok_or(StockError::Overflow)?;
        Self::new(on_hand, self.reserved)
    }

    /// Holds `quantity` units, if that many are available.
    pub fn reserve(self, quantity: Quantity) -> Result<Self, StockError> {
        if quantity.units() > self.available() {
            return Err(StockError::Insufficient {
                requested: quantity.get(),
                available: self.available(),
            });
        }
        Self::new(self.on_hand, self.reserved + quantity.units())
    }

    /// Gives `quantity` held units back to `available`.
    pub fn release(self, quantity: Quantity) -> Result<Self, StockError> {
        Self::new(self.on_hand, self.reserved - quantity.units())
    }

    /// Sells `quantity` held units: they leave both `reserved` and `on_hand`.
    pub fn commit(self, quantity: Quantity) -> Result<Self, StockError> {
        if quantity.units() > self.reserved {
            return Err(StockError::Inconsistent {
                on_hand: self.on_hand,
                reserved: self.reserved,
            });
        }
        Self::new(
            self.on_hand - quantity.units(),
            self.reserved - quantity.units(),
        )
    }
}

/// A product's stock at one moment, as stored and as watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StockLevel {
    pub product_id: ProductId,
    pub stock: Stock,
    /// Grows by one with every change: a watcher orders levels by it and
    /// drops one it has already seen.
    pub version: i64,
    pub updated_at: DateTime<Utc>,
}

/// When to reorder a product: once `available` falls below
/// `average daily demand × lead time in days + safety stock`, the stock left
/// may not cover the demand until a new delivery arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ReorderPolicy {
    /// Units sold on an average day.
    pub avg_daily_demand: u32,
    /// Days between ordering and receiving goods.
    pub lead_time_days: u32,
    /// Extra units kept against demand spikes and late deliveries.
    pub safety_stock: u32,
}

impl ReorderPolicy {
    /// `avg_daily_demand × lead_time_days + safety_stock`, computed exactly
    /// and saturating at `i64::MAX` (a policy that large calls every level
    /// low, which is what it asks for).
    pub fn reorder_point(&self) -> i64 {
        let point = i128::from(self.avg_daily_demand) * i128::from(self.lead_time_days)
            + i128::from(self.safety_stock);
        i64::try_from(point).unwrap_or(i64::MAX)
    }

    /// Whether `stock` is below the reorder point.
    pub fn is_low(&self, stock: Stock) -> bool {
        stock.available() < self.reorder_point()
    }

    /// Whether a change from `before` to `after` crossed the reorder point
    /// downwards: the moment to announce low stock once, rather than on
    /// every sale while it stays low.
    pub fn crossed_below(&self, before: Stock, after: Stock) -> bool {
        !self.is_low(before) && self.is_low(after)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn q(units: u32) -> Quantity {
        Quantity::new(units).unwrap()
    }

    #[test]
    fn quantities_are_positive() {
        assert_eq!(Quantity::new(0), Err(QuantityError::Zero));
        assert_eq!(Quantity::from_stored(-1), Err(QuantityError::TooLarge));
        assert_eq!(q(u32::MAX).checked_add(q(1)), Err(QuantityError::TooLarge));
        assert_eq!(q(2).checked_add(q(3)), Ok(q(5)));
    }

    #[test]
    fn inconsistent_counters_are_refused() {
        assert!(Stock::new(5, 6).is_err());
        assert!(Stock::new(-1, 0).is_err());
        assert!(Stock::new(5, -1).is_err());
        assert_eq!(Stock::new(5, 5).map(|s| s.available()), Ok(0));
    }

    #[test]
    fn the_lifecycle_of_a_held_unit() {
        let stock = Stock::with_on_hand(10);
        let held = stock.reserve(q(3)).unwrap();
        assert_eq!(
            (held.on_hand(), held.reserved(), held.available()),
            (10, 3, 7)
        );
        let sold = held.commit(q(3)).unwrap();
        assert_eq!(
            (sold.on_hand(), sold.reserved(), sold.available()),
            (7, 0, 7)
        );
        let returned = sold.restock(q(3)).unwrap();
        assert_eq!(returned, stock);
        let released = held.release(q(3)).unwrap();
        assert_eq!(released, stock);
    }

    #[test]
    fn reserving_more_than_available_is_refused_with_the_numbers() {
        let stock = Stock::new(10, 8).unwrap();
        assert_eq!(
            stock.reserve(q(3)),
            Err(StockError::Insufficient {
                requested: 3,
                available: 2
            })
        );
        assert!(stock.reserve(q(2)).is_ok(), "exactly what is available");
    }

    #[test]
    fn releasing_or_committing_more_than_reserved_is_inconsistent() {
        let stock = Stock::new(10, 2).unwrap();
        assert!(matches!(
            stock.release(q(3)),
            Err(StockError::Inconsistent { .. })
        ));
        assert!(matches!(
            stock.commit(q(3)),
            Err(StockError::Inconsistent { .. })
        ));
    }

    #[test]
    fn restock_overflow_is_an_error() {
        let stock = Stock::new(i64::MAX, 0).unwrap();
        assert_eq!(stock.restock(q(1)), Err(StockError::Overflow));
    }

    #[test]
    fn reorder_point_is_demand_times_lead_time_plus_safety_stock() {
        let policy = ReorderPolicy {
            avg_daily_demand: 4,
            lead_time_days: 5,
            safety_stock: 10,
        };
        assert_eq!(policy.reorder_point(), 30);
        assert!(
            !policy.is_low(Stock::with_on_hand(30)),
            "at the point is not below it"
        );
        assert!(policy.is_low(Stock::with_on_hand(29)));
        let at = Stock::with_on_hand(30);
        let below = at.reserve(q(1)).unwrap();
        assert!(policy.crossed_below(at, below));
        assert!(!policy.crossed_below(below, below.reserve(q(1)).unwrap()));
        assert!(!ReorderPolicy::default().is_low(Stock::default()));
        let huge = ReorderPolicy {
            avg_daily_demand: u32::MAX,
            lead_time_days: u32::MAX,
            safety_stock: u32::MAX,
        };
        assert_eq!(huge.reorder_point(), i64::MAX);
    }

    #[derive(Debug, Clone, Copy)]
    enum Op {
        Restock(u32),
        Reserve(u32),
        Release(u32),
        Commit(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1_u32..50).prop_map(Op::Restock),
            (1_u32..50).prop_map(Op::Reserve),
            (1_u32..50).prop_map(Op::Release),
            (1_u32..50).prop_map(Op::Commit),
        ]
    }

    proptest! {
        /// Whatever sequence of operations is attempted, every accepted one
        /// keeps `on_hand = available + reserved` with nothing negative, and a
        /// refused one leaves the stock as it was (the caller keeps the old
        /// value).
        #[test]
        fn no_sequence_of_operations_breaks_the_invariant(ops in prop::collection::vec(op(), 0..200)) {
            let mut stock = Stock::default();
            for op in ops {
                let next = match op {
                    Op::Restock(n) => stock.restock(q(n)),
                    Op::Reserve(n) => stock.reserve(q(n)),
                    Op::Release(n) => stock.release(q(n)),
                    Op::Commit(n) => stock.commit(q(n)),
                };
                if let Ok(next) = next {
                    stock = next;
                }
                prop_assert_eq!(stock.on_hand(), stock.available() + stock.reserved());
                prop_assert!(stock.available() >= 0 && stock.reserved() >= 0);
            }
        }

        #[test]
        fn reserve_succeeds_exactly_when_enough_is_available(on_hand in 0_u32..1000, reserved in 0_u32..1000, want in 1_u32..1000) {
            let reserved = reserved.min(on_hand);
            let stock = Stock::new(i64::from(on_hand), i64::from(reserved)).unwrap();
            prop_assert_eq!(stock.reserve(q(want)).is_ok(), i64::from(want) <= stock.available());
        }
    }
}
