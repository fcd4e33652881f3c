//! The catalogue: what a product is and which values are acceptable.
//!
//! Each field has a type that can only hold an acceptable value, built by a
//! `parse` function from raw input ("parse, don't validate"). Code that holds
//! a [`ProductName`] never re-checks its length; code that holds a [`Price`]
//! never wonders whether it is positive. The database repeats the rules as
//! CHECK constraints, as a last line of defence against a bug or a manual edit.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::money::{Currency, Money};
use super::stock::{ReorderPolicy, StockLevel};

/// A product's id: a UUID v7, so ids sort by creation time and the catalogue
/// can be paged by id ("oldest first") without a separate sort key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProductId(Uuid);

/// Why a product id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be a UUID, got {0:?}")]
pub struct ProductIdError(pub String);

impl ProductId {
    /// A fresh, time-ordered id.
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn parse(text: &str) -> Result<Self, ProductIdError> {
        Uuid::try_parse(text)
            .map(Self)
            .map_err(|_| ProductIdError(text.to_owned()))
    }

    pub const fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    pub const fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl fmt::Display for ProductId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.as_hyphenated().fmt(f)
    }
}

impl serde::Serialize for ProductId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// A stock keeping unit: 1 to 64 characters from `A–Z`, `0–9`, `-`, `_`, `.`,
/// starting with a letter or digit, e.g. `KB-0042`.
///
/// Input is upper-cased before the check, so `kb-0042` and `KB-0042` are the
/// same SKU: people type SKUs, and two products that differ only by case
/// would be a warehouse mistake waiting to happen.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sku(String);

/// Why a SKU was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SkuError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {max} characters, got {0}", max = Sku::MAX_CHARS)]
    TooLong(usize),
    #[error("may only contain A-Z, 0-9, '-', '_' and '.', starting with a letter or digit")]
    BadCharacter,
}

impl Sku {
    pub const MAX_CHARS: usize = 64;

    pub fn parse(text: &str) -> Result<Self, SkuError> {
        let sku = text.trim().to_ascii_uppercase();
        let length = sku.chars().count();
        if length == 0 {
            return Err(SkuError::Empty);
        }
        if length > Self::MAX_CHARS {
            return Err(SkuError::TooLong(length));
        }
        let allowed = |c: char| c.is_ascii_uppercase() || c.is_ascii_digit();
        let mut chars = sku.chars();
        let first_ok = chars.next().is_some_and(allowed);
        if !first_ok || !chars.all(|c| allowed(c) || matches!(c, '-' | '_' | '.')) {
            return Err(SkuError::BadCharacter);
        }
        Ok(Self(sku))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sku {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A display name: 1 to 200 characters (Unicode scalar values, not bytes)
/// after trimming surrounding whitespace, without control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProductName(String);

/// Why a product name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProductNameError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {max} characters, got {0}", max = ProductName::MAX_CHARS)]
    TooLong(usize),
    #[error("must not contain control characters")]
    ControlCharacter,
}

impl ProductName {
    pub const MAX_CHARS: usize = 200;

    pub fn parse(text: &str) -> Result<Self, ProductNameError> {
        let name = text.trim();
        let length = name.chars().count();
        if length == 0 {
            return Err(ProductNameError::Empty);
        }
        if length > Self::MAX_CHARS {
            return Err(ProductNameError::TooLong(length));
        }
        if name.chars().any(char::is_control) {
            return Err(ProductNameError::ControlCharacter);
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Free text describing a product: may be empty, at most 2,000 characters
/// (the issue sets no bound; an unbounded text field is a storage and
/// response-size hazard, and 2,000 characters is a generous product blurb).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Description(String);

/// Why a description was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be at most {max} characters, got {0}", max = Description::MAX_CHARS)]
pub struct DescriptionError(pub usize);

impl Description {
    pub const MAX_CHARS: usize = 2_000;

    pub fn parse(text: &str) -> Result<Self, DescriptionError> {
        let text = text.trim();
        let length = text.chars().count();
        if length > Self::MAX_CHARS {
            return Err(DescriptionError(length));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A unit price: a strictly positive amount in the shop's currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Price(Money);

/// Why a price was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    #[error("amount must be greater than 0, got {0}")]
    NotPositive(i64),
    #[error("currency must be {expected}, got {got}")]
    WrongCurrency { expected: Currency, got: Currency },
}

impl Price {
    /// A price of `amount` minor units of `currency`, which must be
    /// `shop_currency`: every product of one shop shares a currency, so an
    /// order's total (Σ unit price × quantity) is well defined.
    pub fn parse(
        amount: i64,
        currency: Currency,
        shop_currency: Currency,
    ) -> Result<Self, PriceError> {
        if currency != shop_currency {
            return Err(PriceError::WrongCurrency {
                expected: shop_currency,
                got: currency,
            });
        }
        match Money::new(amount, currency) {
            Ok(money) if !money.is_zero() => Ok(Self(money)),
            _ => Err(PriceError::NotPositive(amount)),
        }
    }

    /// A price read back from storage, in whatever currency it was stored.
    pub fn from_stored(amount: i64, currency: Currency) -> Result<Self, PriceError> {
        Self::parse(amount, currency, currency)
    }

    pub const fn money(&self) -> Money {
        self.0
    }
}

/// The five categories of the shop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    Electronics,
    Clothing,
    Books,
    HomeGarden,
    Sports,
}

/// Why a category name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown category {0:?}")]
pub struct CategoryError(pub String);

impl Category {
    pub const ALL: [Self; 5] = [
        Self::Electronics,
        Self::Clothing,
        Self::Books,
        Self::HomeGarden,
        Self::Sports,
    ];

    /// The stable upper-snake-case name, as stored and as in the proto enum
    /// (without its `CATEGORY_` prefix).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Electronics => "ELECTRONICS",
            Self::Clothing => "CLOTHING",
            Self::Books => "BOOKS",
            Self::HomeGarden => "HOME_GARDEN",
            Self::Sports => "SPORTS",
        }
    }
}

impl FromStr for Category {
    type Err = CategoryError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|category| category.as_str() == text)
            .ok_or_else(|| CategoryError(text.to_owned()))
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything needed to add a product to the catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewProduct {
    pub sku: Sku,
    pub name: ProductName,
    pub description: Description,
    pub price: Price,
    pub category: Category,
    /// Units in stock from the start.
    pub initial_stock: u32,
    pub reorder_policy: ReorderPolicy,
}

/// A catalogue product (its stock lives in [`super::stock::StockLevel`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    pub id: ProductId,
    pub sku: Sku,
    pub name: ProductName,
    pub description: Description,
    pub price: Price,
    pub category: Category,
    /// Inactive products are neither listed nor reservable.
    pub active: bool,
    pub reorder_policy: ReorderPolicy,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A product with its current stock: what the catalogue shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    pub product: Product,
    pub level: StockLevel,
}

impl CatalogEntry {
    /// When the product or its stock last changed.
    pub fn updated_at(&self) -> DateTime<Utc> {
        self.product.updated_at.max(self.level.updated_at)
    }
}

/// Which active products a catalogue listing shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CatalogFilter {
    /// Only this category; `None` for all.
    pub category: Option<Category>,
    /// `Some(true)`: only products with stock available; `Some(false)`: only
    /// those without; `None`: both.
    pub in_stock: Option<bool>,
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded_in_characters() {
        assert_eq!(ProductName::parse(""), Err(ProductNameError::Empty));
        assert_eq!(ProductName::parse("   "), Err(ProductNameError::Empty));
        assert_eq!(
            ProductName::parse(" Kettle ").map(|n| n.as_str().to_owned()),
            Ok("Kettle".to_owned())
        );
        assert!(
            ProductName::parse(&"é".repeat(200)).is_ok(),
            "200 chars, 400 bytes"
        );
        assert_eq!(
            ProductName::parse(&"a".repeat(201)),
            Err(ProductNameError::TooLong(201))
        );
        assert_eq!(
            ProductName::parse("tab\there"),
            Err(ProductNameError::ControlCharacter)
        );
    }

    #[test]
    fn skus_are_upper_cased_and_restricted() {
        assert_eq!(Sku::parse(" kb-0042 ").unwrap().as_str(), "KB-0042");
        assert_eq!(Sku::parse(""), Err(SkuError::Empty));
        assert_eq!(Sku::parse("-KB"), Err(SkuError::BadCharacter));
        assert_eq!(Sku::parse("KB 42"), Err(SkuError::BadCharacter));
        assert_eq!(Sku::parse(&"A".repeat(65)), Err(SkuError::TooLong(65)));
        assert!(Sku::parse(&"A".repeat(64)).is_ok());
    }

    #[test]
    fn prices_are_positive_and_in_the_shop_currency() {
        let eur = |amount| Price::parse(amount, Currency::EUR, Currency::EUR);
        assert_eq!(
            eur(1).map(|price| price.money()),
            Ok(Money::new(1, Currency::EUR).unwrap())
        );
        assert_eq!(eur(0), Err(PriceError::NotPositive(0)));
        assert_eq!(eur(-5), Err(PriceError::NotPositive(-5)));
        let usd = Currency::parse("USD").unwrap();
        assert_eq!(
            Price::parse(100, Currency::EUR, usd),
            Err(PriceError::WrongCurrency {
                expected: usd,
                got: Currency::EUR
            })
        );
    }

    #[test]
    fn categories_round_trip_through_their_names() {
        for category in Category::ALL {
            assert_eq!(category.as_str().parse::<Category>(), Ok(category));
        }
        assert!("GARDEN".parse::<Category>().is_err());
    }

    #[test]
    fn descriptions_may_be_empty_but_not_huge() {
        assert_eq!(Description::parse("").unwrap().as_str(), "");
        assert_eq!(
            Description::parse(&"x".repeat(2_001)),
            Err(DescriptionError(2_001))
        );
    }

    proptest! {
        #[test]
        fn any_name_that_parses_is_within_bounds(text in "\\PC{0,250}") {
            if let Ok(name) = ProductName::parse(&text) {
                let length = name.as_str().chars().count();
                prop_assert!((1..=200).contains(&length));
                prop_assert_eq!(name.as_str(), name.as_str().trim());
                // Parsing is idempotent: a parsed name parses to itself.
                prop_assert_eq!(ProductName::parse(name.as_str()), Ok(name.clone()));
            } else {
                let trimmed = text.trim().chars().count();
                prop_assert!(trimmed == 0 || trimmed > 200 || text.chars().any(char::is_control));
            }
        }

        #[test]
        fn any_sku_that_parses_is_canonical(text in "[a-zA-Z0-9._ -]{0,70}") {
            if let Ok(sku) = Sku::parse(&text) {
                prop_assert!((1..=64).contains(&sku.as_str().len()));
                prop_assert_eq!(sku.as_str().to_ascii_uppercase(), sku.as_str());
                prop_assert_eq!(Sku::parse(sku.as_str()), Ok(sku.clone()));
            }
        }

        #[test]
        fn product_ids_round_trip_through_text(bytes in any::<[u8; 16]>()) {
            let id = ProductId::from_uuid(Uuid::from_bytes(bytes));
            prop_assert_eq!(ProductId::parse(&id.to_string()), Ok(id));
        }

        #[test]
        fn only_positive_amounts_are_prices(amount in any::<i64>()) {
            let price = Price::parse(amount, Currency::EUR, Currency::EUR);
            prop_assert_eq!(price.is_ok(), amount > 0);
        }
    }
}
