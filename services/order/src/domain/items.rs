//! What a customer orders, and what it costs.
//!
//! A request lists items (`product_id`, `quantity`); [`OrderItems::parse`]
//! turns them into a value that can only hold an acceptable order: 1 to
//! [`MAX_ITEMS`] items, every quantity positive, one entry per product (a
//! product listed twice is one line with the quantities summed, kept where it
//! first appeared).
//!
//! Prices never come from the client. At placement the service looks each
//! product up in the inventory ([`ProductOffer`]) and [`OrderItems::price`]
//! turns items and offers into [`OrderLines`]: name and unit price captured
//! at that moment, `line_total = unit_price × quantity`, and the order's
//! total the exact sum of the line totals (one currency, no overflow) — the
//! amount the wallet is charged.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::ids::ProductId;
use super::money::{Money, MoneyError};

/// Most items one order may list.
pub const MAX_ITEMS: usize = 100;

/// A number of units: at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Quantity(u32);

/// Why a quantity was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be greater than zero")]
pub struct QuantityError;

impl Quantity {
    pub fn new(units: u32) -> Result<Self, QuantityError> {
        if units == 0 {
            Err(QuantityError)
        } else {
            Ok(Self(units))
        }
    }

    pub const fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for Quantity {
    type Error = QuantityError;
    fn try_from(units: u32) -> Result<Self, Self::Error> {
        Self::new(units)
    }
}

impl From<Quantity> for u32 {
    fn from(quantity: Quantity) -> Self {
        quantity.0
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One product and how many of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OrderItem {
    pub product_id: ProductId,
    pub quantity: Quantity,
}

/// Why a list of items was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ItemsError {
    #[error("must list at least one item")]
    Empty,
    #[error("must list at most {MAX_ITEMS} items, got {0}")]
    TooMany(usize),
    #[error("product {0} is ordered more than 4294967295 times in total")]
    QuantityOverflow(ProductId),
}

/// The items of one order: 1 to [`MAX_ITEMS`] products, each once, in the
/// order they were first listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderItems(Vec<OrderItem>);

impl OrderItems {
    /// Accepts the request's items, merging repeated products.
    pub fn parse(items: Vec<OrderItem>) -> Result<Self, ItemsError> {
        if items.is_empty() {
            return Err(ItemsError::Empty);
        }
        if items.len() > MAX_ITEMS {
            return Err(ItemsError::TooMany(items.len()));
        }
        let mut merged: Vec<OrderItem> = Vec::with_capacity(items.len());
        let mut index: HashMap<ProductId, usize> = HashMap::new();
        for item in items {
            match index.get(&item.product_id) {
                Some(&at) => {
                    let line = &mut merged[at];
                    let units = line
                        .quantity
                        .get()
                        .checked_add(item.quantity.get())
                        .ok_or(ItemsError::QuantityOverflow(item.product_id))?;
                    line.quantity = Quantity(units);
                }
                None => {
                    index.insert(item.product_id, merged.len());
                    merged.push(item);
                }
            }
        }
        Ok(Self(merged))
    }

    pub fn as_slice(&self) -> &[OrderItem] {
        &self.0
    }

    pub fn product_ids(&self) -> impl Iterator<Item = ProductId> + '_ {
        self.0.iter().map(|item| item.product_id)
    }

    /// Prices every item with its product's offer.
    pub fn price(&self, offers: &[ProductOffer]) -> Result<OrderLines, PricingError> {
        let by_id: HashMap<ProductId, &ProductOffer> = offers
            .iter()
            .map(|offer| (offer.product_id, offer))
            .collect();
        let lines = self
            .0
            .iter()
            .map(|item| {
                let offer = by_id
                    .get(&item.product_id)
                    .filter(|offer| offer.for_sale)
                    .ok_or(PricingError::UnknownProduct(item.product_id))?;
                Ok(OrderLine {
                    product_id: item.product_id,
                    product_name: offer.name.clone(),
                    quantity: item.quantity,
                    unit_price: offer.unit_price,
                })
            })
            .collect::<Result<Vec<_>, PricingError>>()?;
        OrderLines::new(lines).map_err(PricingError::from)
    }
}

/// What the inventory says about a product at placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductOffer {
    pub product_id: ProductId,
    pub name: String,
    pub unit_price: Money,
    /// Inactive products are not sold.
    pub for_sale: bool,
}

/// Why items could not be priced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PricingError {
    #[error("product {0} does not exist or is not for sale")]
    UnknownProduct(ProductId),
    #[error(transparent)]
    Lines(#[from] LinesError),
}

/// One priced line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub product_id: ProductId,
    /// The product's name when the order was placed.
    pub product_name: String,
    pub quantity: Quantity,
    /// The product's price when the order was placed.
    pub unit_price: Money,
}

impl OrderLine {
    /// `unit_price × quantity`. Never fails for a line inside [`OrderLines`],
    /// whose construction checked it.
    pub fn line_total(&self) -> Result<Money, MoneyError> {
        self.unit_price.checked_mul(self.quantity.get())
    }
}

/// Why lines do not make an order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinesError {
    #[error("an order needs at least one line")]
    Empty,
    #[error("product {0} appears on two lines")]
    DuplicateProduct(ProductId),
    #[error("the lines cannot be added up: {0}")]
    Money(#[from] MoneyError),
}

/// The priced lines of an order: non-empty, one per product, all in one
/// currency, with a total that fits. Stored in `OrderPlaced`; re-checked when
/// read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<OrderLine>", into = "Vec<OrderLine>")]
pub struct OrderLines {
    lines: Vec<OrderLine>,
    total: Money,
}

impl OrderLines {
    pub fn new(lines: Vec<OrderLine>) -> Result<Self, LinesError> {
        let first = lines.first().ok_or(LinesError::Empty)?;
        let mut total = Money::zero(first.unit_price.currency());
        let mut seen = std::collections::HashSet::new();
        for line in &lines {
            if !seen.insert(line.product_id) {
                return Err(LinesError::DuplicateProduct(line.product_id));
            }
            total = total.checked_add(line.line_total()?)?;
        }
        Ok(Self { lines, total })
    }

    pub fn lines(&self) -> &[OrderLine] {
        &self.lines
    }

    /// The sum of the line totals: what the customer pays.
    pub fn total(&self) -> Money {
        self.total
    }

    /// The items these lines price.
    pub fn items(&self) -> Vec<OrderItem> {
        self.lines
            .iter()
            .map(|line| OrderItem {
                product_id: line.product_id,
                quantity: line.quantity,
            })
            .collect()
    }
}

impl TryFrom<Vec<OrderLine>> for OrderLines {
    type Error = LinesError;
    fn try_from(lines: Vec<OrderLine>) -> Result<Self, Self::Error> {
        Self::new(lines)
    }
}

impl From<OrderLines> for Vec<OrderLine> {
    fn from(lines: OrderLines) -> Self {
        lines.lines
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::collection::vec;
    use proptest::prelude::*;
    use uuid::Uuid;

    use super::*;
    use crate::domain::money::Currency;

    /// One of a few products, so that duplicates happen.
    pub fn product() -> impl Strategy<Value = ProductId> {
        (0u128..8).prop_map(|n| {
            ProductId::from_uuid(Uuid::from_u128(
                0x0193_0000_0000_7000_8000_0000_0000_0000 + n,
            ))
        })
    }

    pub fn item() -> impl Strategy<Value = OrderItem> {
        (product(), 1u32..1000).prop_map(|(product_id, units)| OrderItem {
            product_id,
            quantity: Quantity::new(units).unwrap(),
        })
    }

    pub fn offer(product_id: ProductId, price: i64) -> ProductOffer {
        ProductOffer {
            product_id,
            name: format!("product {product_id}"),
            unit_price: Money::new(price, Currency::EUR).unwrap(),
            for_sale: true,
        }
    }

    #[test]
    fn empty_and_oversized_requests_are_refused() {
        assert_eq!(OrderItems::parse(vec![]), Err(ItemsError::Empty));
        let id = ProductId::from_uuid(Uuid::now_v7());
        let item = OrderItem {
            product_id: id,
            quantity: Quantity::new(1).unwrap(),
        };
        assert_eq!(
            OrderItems::parse(vec![item; MAX_ITEMS + 1]),
            Err(ItemsError::TooMany(MAX_ITEMS + 1))
        );
        assert!(OrderItems::parse(vec![item; MAX_ITEMS]).is_ok());
        assert_eq!(Quantity::new(0), Err(QuantityError));
        let huge = OrderItem {
            product_id: id,
            quantity: Quantity::new(u32::MAX).unwrap(),
        };
        assert_eq!(
            OrderItems::parse(vec![huge, item]),
            Err(ItemsError::QuantityOverflow(id))
        );
    }

    #[test]
    fn unknown_or_inactive_products_cannot_be_priced() {
        let id = ProductId::from_uuid(Uuid::now_v7());
        let items = OrderItems::parse(vec![OrderItem {
            product_id: id,
            quantity: Quantity::new(2).unwrap(),
        }])
        .unwrap();
        assert_eq!(items.price(&[]), Err(PricingError::UnknownProduct(id)));
        let inactive = ProductOffer {
            for_sale: false,
            ..offer(id, 100)
        };
        assert_eq!(
            items.price(&[inactive]),
            Err(PricingError::UnknownProduct(id))
        );
        let lines = items.price(&[offer(id, 1999)]).unwrap();
        assert_eq!(lines.total(), Money::new(3998, Currency::EUR).unwrap());
    }

    #[test]
    fn lines_in_two_currencies_do_not_add_up() {
        let (a, b) = (
            ProductId::from_uuid(Uuid::from_u128(1)),
            ProductId::from_uuid(Uuid::from_u128(2)),
        );
        let usd = Currency::parse("USD").unwrap();
        let items = OrderItems::parse(vec![
            OrderItem {
                product_id: a,
                quantity: Quantity::new(1).unwrap(),
            },
            OrderItem {
                product_id: b,
                quantity: Quantity::new(1).unwrap(),
            },
        ])
        .unwrap();
        let mut offers = vec![offer(a, 100), offer(b, 100)];
        offers[1].unit_price = Money::new(100, usd).unwrap();
        assert!(matches!(
            items.price(&offers),
            Err(PricingError::Lines(LinesError::Money(
                MoneyError::CurrencyMismatch { .. }
            )))
        ));
    }

    proptest! {
        #[test]
        fn merging_keeps_every_unit_and_the_first_position(items in vec(item(), 1..=MAX_ITEMS)) {
            let parsed = OrderItems::parse(items.clone()).unwrap();
            // One entry per product, in order of first appearance.
            let mut firsts = Vec::new();
            for item in &items {
                if !firsts.contains(&item.product_id) {
                    firsts.push(item.product_id);
                }
            }
            prop_assert_eq!(parsed.product_ids().collect::<Vec<_>>(), firsts);
            // No unit lost or invented.
            for entry in parsed.as_slice() {
                let wanted: u64 = items
                    .iter()
                    .filter(|item| item.product_id == entry.product_id)
                    .map(|item| u64::from(item.quantity.get()))
                    .sum();
                prop_assert_eq!(u64::from(entry.quantity.get()), wanted);
            }
        }

        #[test]
        fn the_total_is_the_sum_of_the_line_totals(
            items in vec(item(), 1..=20),
            prices in vec(1i64..1_000_000, 8),
        ) {
            let parsed = OrderItems::parse(items).unwrap();
            let offers: Vec<ProductOffer> = (0u128..8)
                .map(|n| offer(ProductId::from_uuid(Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0000 + n)), prices[n as usize]))
                .collect();
            let lines = parsed.price(&offers).unwrap();
            let expected: i64 = lines
                .lines()
                .iter()
                .map(|line| line.unit_price.amount() * i64::from(line.quantity.get()))
                .sum();
            prop_assert_eq!(lines.total().amount(), expected);
            prop_assert_eq!(lines.items(), parsed.as_slice().to_vec());
            // Stored and read back, the lines check out the same.
            let json = serde_json::to_string(&lines).unwrap();
            prop_assert_eq!(serde_json::from_str::<OrderLines>(&json).unwrap(), lines);
        }
    }
}
