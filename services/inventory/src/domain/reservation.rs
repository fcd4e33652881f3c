//! Stock reservations: units held for an order saga, then sold or given back.
//!
//! ```text
//!            commit             release (goods returned)
//!   HELD ───────────▶ COMMITTED ───────────▶ RELEASED
//!    │ │
//!    │ └─ release ─────────────────────────▶ RELEASED
//!    └─── TTL passed (sweeper, or the next call that touches it) ─▶ EXPIRED
//! ```
//!
//! A reservation is created whole — every line held, or nothing at all — and
//! is keyed by a caller-chosen id (the order saga's id), which makes
//! `ReserveStock` idempotent. Every later call is a [`ReservationAction`] whose
//! effect follows from the current status alone ([`decide`]): the table below
//! is the whole state machine, with the stock effect each transition applies
//! to every line. Repeating a call is always safe: a second commit or release
//! finds the transition already made and changes nothing.
//!
//! Expiry is decided from the status and whether the TTL has passed, not by
//! when the sweeper happens to run: a HELD reservation past its deadline is
//! expired by whichever comes first, the sweeper or a commit/release that
//! touches it. A late commit therefore fails (`EXPIRED`) even if the sweeper
//! is behind.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::product::{Price, ProductId, ProductName};
use super::stock::{Quantity, QuantityError, Stock, StockError};

/// The caller-chosen id of a reservation (the order saga uses its saga id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReservationId(Uuid);

/// Why a reservation id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be a UUID, got {0:?}")]
pub struct ReservationIdError(pub String);

impl ReservationId {
    pub fn parse(text: &str) -> Result<Self, ReservationIdError> {
        Uuid::try_parse(text)
            .map(Self)
            .map_err(|_| ReservationIdError(text.to_owned()))
    }

    pub const fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    pub const fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl fmt::Display for ReservationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.as_hyphenated().fmt(f)
    }
}

impl serde::Serialize for ReservationId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// What a reservation asks for: a quantity per product, at least one product.
///
/// Lines naming the same product add up, and products are kept in id order —
/// the order in which their stock rows are locked, so two reservations can
/// never wait on each other's locks (no deadlock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationLines(BTreeMap<ProductId, Quantity>);

/// Why reservation lines were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReservationLinesError {
    #[error("must contain at least one line")]
    Empty,
    #[error("must contain at most {max} distinct products, got {0}", max = ReservationLines::MAX_PRODUCTS)]
    TooMany(usize),
    #[error("quantities of product {0} add up to more than a reservation can hold")]
    QuantityOverflow(ProductId),
}

impl ReservationLines {
    /// Upper bound on the products of one reservation: one transaction locks
    /// them all, and an order of more distinct products is not a shop order.
    pub const MAX_PRODUCTS: usize = 100;

    pub fn new(
        lines: impl IntoIterator<Item = (ProductId, Quantity)>,
    ) -> Result<Self, ReservationLinesError> {
        let mut merged: BTreeMap<ProductId, Quantity> = BTreeMap::new();
        for (product_id, quantity) in lines {
            let total = match merged.get(&product_id) {
                Some(held) => held.checked_add(quantity).map_err(|_: QuantityError| {
                    ReservationLinesError::QuantityOverflow(product_id)
                })?,
                None => quantity,
            };
            merged.insert(product_id, total);
        }
        if merged.is_empty() {
            return Err(ReservationLinesError::Empty);
        }
        if merged.len() > Self::MAX_PRODUCTS {
            return Err(ReservationLinesError::TooMany(merged.len()));
        }
        Ok(Self(merged))
    }

    /// Products in id order, each once, with their summed quantity.
    pub fn iter(&self) -> impl Iterator<Item = (ProductId, Quantity)> + '_ {
        self.0.iter().map(|(id, quantity)| (*id, *quantity))
    }

    pub fn product_ids(&self) -> Vec<ProductId> {
        self.0.keys().copied().collect()
    }
}

/// A product short of stock for a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shortage {
    pub product_id: ProductId,
    pub requested: u32,
    pub available: i64,
}

/// One line of a reservation that can be made: the product's stock before
/// and after holding `quantity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineHold {
    pub product_id: ProductId,
    pub quantity: Quantity,
    pub before: Stock,
    pub after: Stock,
}

/// Why a reservation cannot be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldError {
    /// The product does not exist or is not for sale.
    UnknownProduct(ProductId),
    /// These products lack stock (at least one, in product id order).
    Insufficient(Vec<Shortage>),
    /// The stored counters of a product are inconsistent.
    Stock(StockError),
}

/// All or nothing: holds every line against the current stock of its product
/// (`stock_of`, `None` for a product that cannot be reserved), or, if any line
/// cannot be held, holds none and reports every short line.
///
/// Every line is checked even after a first shortage, so the caller learns
/// about all of them at once rather than one retry at a time.
pub fn hold_all(
    lines: &ReservationLines,
    stock_of: impl Fn(ProductId) -> Option<Stock>,
) -> Result<Vec<LineHold>, HoldError> {
    let mut holds = Vec::new();
    let mut shortages = Vec::new();
    for (product_id, quantity) in lines.iter() {
        let before = stock_of(product_id).ok_or(HoldError::UnknownProduct(product_id))?;
        match before.reserve(quantity) {
            Ok(after) => holds.push(LineHold {
                product_id,
                quantity,
                before,
                after,
            }),
            Err(StockError::Insufficient {
                requested,
                available,
            }) => shortages.push(Shortage {
                product_id,
                requested,
                available,
            }),
            Err(error) => return Err(HoldError::Stock(error)),
        }
    }
    if shortages.is_empty() {
        Ok(holds)
    } else {
        Err(HoldError::Insufficient(shortages))
    }
}

/// Where a reservation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReservationStatus {
    /// Units are reserved and not yet sold.
    Held,
    /// Units were sold: removed from `on_hand`.
    Committed,
    /// Units were given back: released while held, or returned after a commit.
    Released,
    /// Neither committed nor released within its TTL: units given back.
    Expired,
}

impl ReservationStatus {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Held => "HELD",
            Self::Committed => "COMMITTED",
            Self::Released => "RELEASED",
            Self::Expired => "EXPIRED",
        }
    }

    pub fn from_stored(text: &str) -> Option<Self> {
        [Self::Held, Self::Committed, Self::Released, Self::Expired]
            .into_iter()
            .find(|status| status.as_str() == text)
    }
}

/// One reserved product, with the name and price captured when it was
/// reserved: the order is charged what the customer was shown, even if the
/// catalogue changes before the saga completes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservedLine {
    pub product_id: ProductId,
    pub product_name: ProductName,
    pub quantity: Quantity,
    pub unit_price: Price,
}

/// A stored reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub id: ReservationId,
    pub status: ReservationStatus,
    /// In product id order. Empty only for a reservation released before any
    /// ReserveStock for it arrived (see [`ReservationAction::Release`]).
    pub lines: Vec<ReservedLine>,
    /// When a HELD reservation expires.
    pub expires_at: DateTime<Utc>,
}

impl Reservation {
    /// Whether this reservation is the answer to a repeated request for
    /// `lines`: same products, same quantities. A different request under
    /// the same id is a caller bug, refused rather than silently answered
    /// with a reservation it did not ask for.
    ///
    /// A reservation without lines — released before it was ever made —
    /// answers any request: the release wins, nothing gets reserved.
    pub fn answers(&self, lines: &ReservationLines) -> bool {
        self.lines.is_empty()
            || self
                .lines
                .iter()
                .map(|line| (line.product_id, line.quantity))
                .eq(lines.iter())
    }
}

/// A call on an existing reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationAction {
    /// Sell the held units (saga step 3).
    Commit,
    /// Give the units back (saga compensation, or a cancelled order).
    Release,
    /// Give the units back if the TTL has passed (the sweeper).
    Expire,
}

/// What a transition does to the stock of each reserved line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StockEffect {
    /// `reserved − q`: held units become available again.
    ReleaseHeld,
    /// `on_hand − q`, `reserved − q`: held units are sold.
    CommitHeld,
    /// `on_hand + q`: sold units come back into stock.
    ReturnCommitted,
}

/// A status change to persist, with its stock effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub to: ReservationStatus,
    pub effect: StockEffect,
}

/// Why an action on a reservation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReservationError {
    #[error("the reservation was released")]
    Released,
    #[error("the reservation expired before it was committed")]
    Expired,
}

/// The outcome of an action: what to persist (if anything) and what to
/// answer. Both can be set at once: committing an overdue reservation
/// persists its expiry *and* answers [`ReservationError::Expired`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub transition: Option<Transition>,
    pub outcome: Result<ReservationStatus, ReservationError>,
}

/// The state machine: what `action` does to a reservation in `status`,
/// `overdue` when its TTL has passed.
pub fn decide(status: ReservationStatus, overdue: bool, action: ReservationAction) -> Decision {
    use ReservationAction as A;
    use ReservationStatus as S;

    let stay = |outcome| Decision {
        transition: None,
        outcome,
    };
    let go = |to, effect, outcome| Decision {
        transition: Some(Transition { to, effect }),
        outcome,
    };
    match (status, action) {
        (S::Held, A::Commit) if overdue => go(
            S::Expired,
            StockEffect::ReleaseHeld,
            Err(ReservationError::Expired),
        ),
        (S::Held, A::Release | A::Expire) if overdue => {
            go(S::Expired, StockEffect::ReleaseHeld, Ok(S::Expired))
        }
        (S::Held, A::Commit) => go(S::Committed, StockEffect::CommitHeld, Ok(S::Committed)),
        (S::Held, A::Release) => go(S::Released, StockEffect::ReleaseHeld, Ok(S::Released)),
        (S::Held, A::Expire) => stay(Ok(S::Held)),
        (S::Committed, A::Release) => {
            go(S::Released, StockEffect::ReturnCommitted, Ok(S::Released))
        }
        (S::Committed, A::Commit | A::Expire) => stay(Ok(S::Committed)),
        (S::Released, A::Commit) => stay(Err(ReservationError::Released)),
        (S::Expired, A::Commit) => stay(Err(ReservationError::Expired)),
        (terminal @ (S::Released | S::Expired), A::Release | A::Expire) => stay(Ok(terminal)),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::domain::money::Currency;

    use ReservationAction as A;
    use ReservationStatus as S;

    const STATUSES: [S; 4] = [S::Held, S::Committed, S::Released, S::Expired];
    const ACTIONS: [A; 3] = [A::Commit, A::Release, A::Expire];

    fn q(units: u32) -> Quantity {
        Quantity::new(units).unwrap()
    }

    fn id(n: u128) -> ProductId {
        ProductId::from_uuid(Uuid::from_u128(n))
    }

    #[test]
    fn lines_for_the_same_product_add_up_in_id_order() {
        let lines = ReservationLines::new([(id(2), q(1)), (id(1), q(2)), (id(2), q(3))]).unwrap();
        assert_eq!(
            lines.iter().collect::<Vec<_>>(),
            [(id(1), q(2)), (id(2), q(4))]
        );
    }

    #[test]
    fn lines_must_be_present_and_bounded() {
        assert_eq!(ReservationLines::new([]), Err(ReservationLinesError::Empty));
        let too_many = (0..=100).map(|n| (id(n), q(1)));
        assert_eq!(
            ReservationLines::new(too_many),
            Err(ReservationLinesError::TooMany(101))
        );
        assert_eq!(
            ReservationLines::new([(id(1), q(u32::MAX)), (id(1), q(1))]),
            Err(ReservationLinesError::QuantityOverflow(id(1)))
        );
    }

    #[test]
    fn the_happy_path_of_a_saga() {
        let held = decide(S::Held, false, A::Commit);
        assert_eq!(
            held.transition,
            Some(Transition {
                to: S::Committed,
                effect: StockEffect::CommitHeld
            })
        );
        assert_eq!(held.outcome, Ok(S::Committed));
        assert_eq!(
            decide(S::Committed, false, A::Commit).transition,
            None,
            "idempotent"
        );
    }

    #[test]
    fn compensation_and_cancellation_give_units_back() {
        let released = decide(S::Held, false, A::Release);
        assert_eq!(
            released.transition.map(|t| t.effect),
            Some(StockEffect::ReleaseHeld)
        );
        let returned = decide(S::Committed, false, A::Release);
        assert_eq!(
            returned.transition,
            Some(Transition {
                to: S::Released,
                effect: StockEffect::ReturnCommitted
            })
        );
        assert_eq!(
            decide(S::Released, false, A::Release).transition,
            None,
            "idempotent"
        );
    }

    #[test]
    fn an_overdue_hold_expires_and_cannot_be_committed() {
        let commit = decide(S::Held, true, A::Commit);
        assert_eq!(
            commit.transition,
            Some(Transition {
                to: S::Expired,
                effect: StockEffect::ReleaseHeld
            }),
            "the expiry is persisted even though the commit fails"
        );
        assert_eq!(commit.outcome, Err(ReservationError::Expired));
        assert_eq!(
            decide(S::Expired, true, A::Commit).outcome,
            Err(ReservationError::Expired)
        );
        assert_eq!(decide(S::Expired, false, A::Commit).transition, None);
        assert_eq!(decide(S::Held, true, A::Expire).outcome, Ok(S::Expired));
        assert_eq!(
            decide(S::Held, false, A::Expire).transition,
            None,
            "not yet due"
        );
    }

    #[test]
    fn a_committed_reservation_never_expires() {
        assert_eq!(decide(S::Committed, true, A::Expire).transition, None);
        assert_eq!(
            decide(S::Released, false, A::Commit).outcome,
            Err(ReservationError::Released)
        );
    }

    #[test]
    fn statuses_round_trip_through_storage() {
        for status in STATUSES {
            assert_eq!(
                ReservationStatus::from_stored(status.as_str()),
                Some(status)
            );
        }
        assert_eq!(ReservationStatus::from_stored("held"), None);
    }

    #[test]
    fn a_repeated_request_must_ask_for_the_same_lines() {
        let price = Price::parse(100, Currency::EUR, Currency::EUR).unwrap();
        let line = |product, units| ReservedLine {
            product_id: id(product),
            product_name: ProductName::parse("Kettle").unwrap(),
            quantity: q(units),
            unit_price: price,
        };
        let reservation = Reservation {
            id: ReservationId::from_uuid(Uuid::from_u128(9)),
            status: S::Held,
            lines: vec![line(1, 2), line(2, 1)],
            expires_at: Utc::now(),
        };
        let same = ReservationLines::new([(id(2), q(1)), (id(1), q(1)), (id(1), q(1))]).unwrap();
        assert!(reservation.answers(&same));
        let other = ReservationLines::new([(id(1), q(2))]).unwrap();
        assert!(!reservation.answers(&other));
        let tombstone = Reservation {
            lines: vec![],
            status: S::Released,
            ..reservation
        };
        assert!(tombstone.answers(&other));
    }

    #[test]
    fn one_short_line_holds_nothing_and_every_short_line_is_named() {
        let lines = ReservationLines::new([(id(1), q(2)), (id(2), q(5)), (id(3), q(9))]).unwrap();
        let stock = |units| Some(Stock::with_on_hand(units));
        let result = hold_all(&lines, |product| match product {
            p if p == id(1) => stock(10),
            p if p == id(2) => stock(4),
            _ => stock(1),
        });
        assert_eq!(
            result,
            Err(HoldError::Insufficient(vec![
                Shortage {
                    product_id: id(2),
                    requested: 5,
                    available: 4
                },
                Shortage {
                    product_id: id(3),
                    requested: 9,
                    available: 1
                },
            ]))
        );
        let unknown = hold_all(&lines, |product| {
            (product != id(2)).then(|| Stock::with_on_hand(99))
        });
        assert_eq!(unknown, Err(HoldError::UnknownProduct(id(2))));
    }

    proptest! {
        /// Either every line is held, each taking exactly its quantity, or
        /// the error names exactly the lines that asked for more than was
        /// available.
        #[test]
        fn holds_are_all_or_nothing(
            wants in prop::collection::vec((0_u128..5, 1_u32..20), 1..8),
            available in prop::collection::vec(0_u32..30, 5),
        ) {
            let lines = ReservationLines::new(wants.iter().map(|(p, n)| (id(*p), q(*n)))).unwrap();
            let stock_of = |product: ProductId| {
                let index = usize::try_from(product.as_uuid().as_u128()).unwrap();
                Some(Stock::with_on_hand(available[index]))
            };
            let short: Vec<ProductId> = lines
                .iter()
                .filter(|(p, n)| i64::from(n.get()) > stock_of(*p).unwrap().available())
                .map(|(p, _)| p)
                .collect();
            match hold_all(&lines, stock_of) {
                Ok(holds) => {
                    prop_assert!(short.is_empty());
                    prop_assert_eq!(holds.len(), lines.iter().count());
                    for hold in holds {
                        prop_assert_eq!(hold.after.reserved() - hold.before.reserved(), i64::from(hold.quantity.get()));
                        prop_assert_eq!(hold.after.on_hand(), hold.before.on_hand());
                    }
                }
                Err(HoldError::Insufficient(shortages)) => {
                    prop_assert_eq!(shortages.iter().map(|s| s.product_id).collect::<Vec<_>>(), short);
                }
                Err(other) => prop_assert!(false, "unexpected {other:?}"),
            }
        }
    }

    fn status() -> impl Strategy<Value = S> {
        prop::sample::select(STATUSES.to_vec())
    }

    fn action() -> impl Strategy<Value = A> {
        prop::sample::select(ACTIONS.to_vec())
    }

    proptest! {
        /// Applying the same action twice changes nothing the second time:
        /// every call is safe to retry.
        #[test]
        fn every_action_is_idempotent(status in status(), overdue: bool, action in action()) {
            let first = decide(status, overdue, action);
            let after = first.transition.map_or(status, |t| t.to);
            let second = decide(after, overdue, action);
            prop_assert_eq!(second.transition, None);
            if first.outcome.is_ok() {
                prop_assert_eq!(second.outcome, first.outcome);
            }
        }

        /// Terminal statuses stay terminal, and units only move out of
        /// states that hold them.
        #[test]
        fn transitions_follow_the_diagram(status in status(), overdue: bool, action in action()) {
            if let Some(Transition { to, effect }) = decide(status, overdue, action).transition {
                let allowed = matches!(
                    (status, to, effect),
                    (S::Held, S::Committed, StockEffect::CommitHeld)
                        | (S::Held, S::Released | S::Expired, StockEffect::ReleaseHeld)
                        | (S::Committed, S::Released, StockEffect::ReturnCommitted)
                );
                prop_assert!(allowed, "{status:?} --{action:?}--> {to:?} ({effect:?})");
            }
        }

        /// An overdue hold can never be sold.
        #[test]
        fn overdue_holds_are_never_committed(action in action()) {
            let decision = decide(S::Held, true, action);
            prop_assert_ne!(decision.outcome, Ok(S::Committed));
            prop_assert_eq!(decision.transition.map(|t| t.to), Some(S::Expired));
        }
    }
}
