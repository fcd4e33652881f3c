//! The demo catalogue loaded when `SEED_CATALOG=true`: twenty products, four
//! per category, with stock and reorder policies, so a new user of a fresh
//! stack has something to browse, quote and order — and a few products with
//! little stock left, to see low-stock events and `INSUFFICIENT_STOCK`.

use crate::domain::money::Currency;
use crate::domain::product::{Category, Description, NewProduct, Price, ProductName, Sku};
use crate::domain::stock::ReorderPolicy;

/// `(sku, name, description, price in minor units, category, stock,
/// (avg daily demand, lead time days, safety stock))`.
type Row = (
    &'static str,
    &'static str,
    &'static str,
    i64,
    Category,
    u32,
    (u32, u32, u32),
);

#[rustfmt::skip]
const CATALOG: [Row; 20] = [
    ("EL-HEADPHONES", "Wireless Headphones", "Over-ear, active noise cancelling, 30 h battery.", 12_999, Category::Electronics, 120, (4, 7, 10)),
    ("EL-KEYBOARD", "Mechanical Keyboard", "Tenkeyless, hot-swappable switches, USB-C.", 8_950, Category::Electronics, 80, (3, 10, 10)),
    ("EL-USB-C-HUB", "USB-C Hub", "7-in-1: HDMI 4K, 3 × USB-A, SD, microSD, 100 W pass-through.", 3_499, Category::Electronics, 300, (10, 5, 20)),
    ("EL-E-READER", "E-Reader", "6.8\" glare-free display, waterproof, 16 GB.", 14_999, Category::Electronics, 8, (1, 14, 5)),
    ("CL-TSHIRT", "Organic Cotton T-Shirt", "Crew neck, unisex, 180 g/m².", 1_999, Category::Clothing, 500, (20, 14, 50)),
    ("CL-RAIN-JACKET", "Rain Jacket", "Packable, taped seams, 10,000 mm waterproof rating.", 7_900, Category::Clothing, 60, (2, 21, 10)),
    ("CL-WOOL-SOCKS", "Merino Wool Socks (3 pairs)", "Cushioned hiking socks, sizes 39–46.", 2_450, Category::Clothing, 240, (8, 10, 30)),
    ("CL-BEANIE", "Knit Beanie", "Recycled yarn, one size.", 1_500, Category::Clothing, 3, (1, 7, 5)),
    ("BK-RUST", "The Rust Programming Language", "The official book on Rust, 2nd edition, paperback.", 3_995, Category::Books, 150, (5, 10, 15)),
    ("BK-DDIA", "Designing Data-Intensive Applications", "Reliable, scalable and maintainable systems.", 4_490, Category::Books, 90, (3, 10, 10)),
    ("BK-MICROSERVICES", "Building Microservices", "Designing fine-grained systems, 2nd edition.", 4_250, Category::Books, 70, (2, 10, 10)),
    ("BK-COOKBOOK", "Simple Weeknight Cooking", "100 recipes in 30 minutes or less, hardcover.", 2_699, Category::Books, 0, (1, 14, 5)),
    ("HG-KETTLE", "Electric Kettle", "1.7 l, stainless steel, temperature control.", 5_499, Category::HomeGarden, 75, (2, 10, 10)),
    ("HG-CHEF-KNIFE", "Chef's Knife 20 cm", "Forged stainless steel, full tang.", 6_900, Category::HomeGarden, 40, (1, 21, 5)),
    ("HG-PRUNER", "Bypass Pruner", "Hardened steel blades, cuts branches up to 20 mm.", 2_299, Category::HomeGarden, 110, (3, 10, 10)),
    ("HG-PLANTER", "Self-Watering Planter", "30 cm, water reservoir with level indicator.", 1_895, Category::HomeGarden, 200, (5, 14, 20)),
    ("SP-YOGA-MAT", "Yoga Mat", "6 mm, non-slip natural rubber, 183 × 61 cm.", 3_900, Category::Sports, 130, (4, 10, 15)),
    ("SP-RUN-SHOES", "Running Shoes", "Neutral road running shoe, 8 mm drop.", 11_900, Category::Sports, 45, (2, 21, 10)),
    ("SP-BOTTLE", "Insulated Bottle 750 ml", "Keeps cold 24 h, hot 12 h; stainless steel.", 2_495, Category::Sports, 400, (12, 7, 40)),
    ("SP-KETTLEBELL", "Kettlebell 12 kg", "Cast iron, powder coated.", 4_999, Category::Sports, 12, (1, 21, 5)),
];

/// The demo catalogue, priced in `currency`.
///
/// Fails only if an entry above breaks a catalogue rule, which the tests
/// below rule out.
pub fn catalog(currency: Currency) -> Result<Vec<NewProduct>, String> {
    CATALOG
        .iter()
        .map(
            |&(sku, name, description, price, category, stock, (demand, lead, safety))| {
                let bad = |error: &dyn std::fmt::Display| format!("seed product {sku}: {error}");
                Ok(NewProduct {
                    sku: Sku::parse(sku).map_err(|e| bad(&e))?,
                    name: ProductName::parse(name).map_err(|e| bad(&e))?,
                    description: Description::parse(description).map_err(|e| bad(&e))?,
                    price: Price::parse(price, currency, currency).map_err(|e| bad(&e))?,
                    category,
                    initial_stock: stock,
                    reorder_policy: ReorderPolicy {
                        avg_daily_demand: demand,
                        lead_time_days: lead,
                        safety_stock: safety,
                    },
                })
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_seed_product_is_valid_and_unique() {
        let products = catalog(Currency::EUR).unwrap();
        assert_eq!(products.len(), 20);
        let skus: HashSet<_> = products.iter().map(|p| p.sku.clone()).collect();
        assert_eq!(skus.len(), products.len(), "SKUs must be unique");
        for category in Category::ALL {
            assert!(
                products.iter().filter(|p| p.category == category).count() >= 3,
                "{category} needs products"
            );
        }
        assert!(
            products.iter().any(|p| p.initial_stock == 0),
            "one sold out"
        );
    }
}
