//! What a reset puts on the shelves: explicit products plus, optionally, a seeded random catalogue.
//!
//! Random stock is a pure function of `(seed, product id)`, so every strategy that keeps its own
//! copy of the stock (the in-memory baseline, Redis) derives the same catalogue without reading
//! PostgreSQL, and a run is reproducible from its plan alone.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::order::{InvalidInput, ProductId};

/// Largest random catalogue a plan may ask for (the seed's scale is 5,000,000).
pub const MAX_RANDOM_PRODUCTS: u64 = 50_000_000;

/// One product with a fixed stock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductStock {
    pub id: ProductId,
    pub stock: i64,
}

/// Products `1..=count`, each with a stock drawn uniformly from `min_stock..=max_stock`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RandomProducts {
    pub count: u64,
    #[serde(default = "default_min_stock")]
    pub min_stock: i64,
    #[serde(default = "default_max_stock")]
    pub max_stock: i64,
    #[serde(default = "default_seed")]
    pub seed: u64,
}

const fn default_min_stock() -> i64 {
    30_000
}
const fn default_max_stock() -> i64 {
    100_000
}
const fn default_seed() -> u64 {
    42
}

impl RandomProducts {
    /// The stock of product `id`, the same on every call and every machine.
    pub fn stock_of(&self, id: i64) -> i64 {
        let span = self.max_stock.abs_diff(self.min_stock) + 1;
        let draw = splitmix64(self.seed ^ splitmix64(id.cast_unsigned())) % span;
        self.min_stock + draw.cast_signed()
    }
}

/// SplitMix64's finaliser: a cheap, well-mixed hash, good enough to spread stock values.
const fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The body of `POST /admin/reset`, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockPlan {
    #[serde(default)]
    pub products: Vec<ProductStock>,
    #[serde(default)]
    pub random_products: Option<RandomProducts>,
    /// Keep the catalogue and the orders placed before the last reset (populate's history): undo
    /// only what the run since then did, then set `products`. See [`crate::catalog::reset_keeping`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_catalogue: bool,
}

impl StockPlan {
    /// The seed's flash sale: product 100 with 10,000 units among `count` random products.
    pub fn flash_sale(count: u64) -> Self {
        Self {
            products: vec![ProductStock {
                id: ProductId::parse(100).expect("100 is positive"),
                stock: 10_000,
            }],
            random_products: (count > 0).then_some(RandomProducts {
                count,
                min_stock: default_min_stock(),
                max_stock: default_max_stock(),
                seed: default_seed(),
            }),
            keep_catalogue: false,
        }
    }

    /// The plan in force after a reset that kept the catalogue: this plan's random catalogue, with
    /// `kept`'s products overriding or adding explicit ones.
    #[must_use]
    pub fn kept_with(&self, kept: &Self) -> Self {
        let mut products: Vec<ProductStock> =
            self.products.iter().filter(|p| kept.products.iter().all(|k| k.id != p.id)).copied().collect();
        products.extend(kept.products.iter().copied());
        Self { products, random_products: self.random_products, keep_catalogue: false }
    }

    /// # Errors
    /// Negative stock, an empty or inverted stock range, a product listed twice, a catalogue above
    /// [`MAX_RANDOM_PRODUCTS`].
    pub fn validate(&self) -> Result<(), InvalidInput> {
        let mut seen = HashMap::with_capacity(self.products.len());
        for product in &self.products {
            if product.stock < 0 {
                return Err(InvalidInput(format!("product {}: stock must be >= 0", product.id)));
            }
            if seen.insert(product.id, ()).is_some() {
                return Err(InvalidInput(format!("product {} is listed twice", product.id)));
            }
        }
        if self.keep_catalogue && self.random_products.is_some() {
            return Err(InvalidInput(
                "keep_catalogue keeps the catalogue: random_products would replace it; send one or the other"
                    .into(),
            ));
        }
        if let Some(random) = &self.random_products {
            if random.count > MAX_RANDOM_PRODUCTS {
                return Err(InvalidInput(format!("random_products.count must be <= {MAX_RANDOM_PRODUCTS}")));
            }
            if random.min_stock < 0 || random.min_stock > random.max_stock {
                return Err(InvalidInput("random_products needs 0 <= min_stock <= max_stock".into()));
            }
        }
        Ok(())
    }

    /// The initial stock the plan gives `id`, if the plan knows it. Explicit products win.
    pub fn stock_of(&self, id: ProductId) -> Option<i64> {
        self.products.iter().find(|p| p.id == id).map(|p| p.stock).or_else(|| {
            self.random_products
                .filter(|random| (1..=random.count).contains(&id.get().cast_unsigned()))
                .map(|random| random.stock_of(id.get()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_stock_is_reproducible_and_in_range() {
        let random = RandomProducts { count: 10_000, min_stock: 30_000, max_stock: 100_000, seed: 42 };
        let stocks: Vec<i64> = (1..=10_000).map(|id| random.stock_of(id)).collect();
        assert!(stocks.iter().all(|s| (30_000..=100_000).contains(s)));
        assert_eq!(stocks, (1..=10_000).map(|id| random.stock_of(id)).collect::<Vec<_>>());
        let mean = stocks.iter().sum::<i64>() / 10_000;
        assert!((60_000..70_000).contains(&mean), "stock is not spread evenly: mean {mean}");
        let other_seed = RandomProducts { seed: 7, ..random };
        assert_ne!(stocks[0..10], (1..=10).map(|id| other_seed.stock_of(id)).collect::<Vec<_>>()[..]);
    }

    #[test]
    fn explicit_products_override_random_ones() {
        let plan = StockPlan::flash_sale(1_000);
        assert_eq!(plan.stock_of(ProductId::parse(100).unwrap()), Some(10_000));
        assert!(plan.stock_of(ProductId::parse(1).unwrap()).is_some());
        assert_eq!(plan.stock_of(ProductId::parse(1_001).unwrap()), None);
    }

    #[test]
    fn a_kept_catalogue_keeps_the_random_part_and_merges_explicit_products() {
        let base = StockPlan::flash_sale(5_000);
        let id = |n| ProductId::parse(n).unwrap();
        let kept = StockPlan {
            products: vec![ProductStock { id: id(100), stock: 7 }, ProductStock { id: id(9_000), stock: 3 }],
            random_products: None,
            keep_catalogue: true,
        };
        let merged = base.kept_with(&kept);
        assert_eq!(merged.random_products, base.random_products);
        assert_eq!(merged.stock_of(id(100)), Some(7), "the reset's stock wins");
        assert_eq!(merged.stock_of(id(9_000)), Some(3), "a product outside the range is added");
        assert_eq!(merged.products.len(), 2);
        assert!(!merged.keep_catalogue, "the plan in force is a catalogue, not a request");
    }

    #[test]
    fn validation_rejects_nonsense() {
        let mut plan = StockPlan::flash_sale(0);
        plan.products[0].stock = -1;
        assert!(plan.validate().is_err());
        let plan = StockPlan {
            products: vec![],
            random_products: Some(RandomProducts { count: 1, min_stock: 5, max_stock: 4, seed: 1 }),
            keep_catalogue: false,
        };
        assert!(plan.validate().is_err());
        let twice = StockPlan::flash_sale(0).products.repeat(2);
        assert!(
            StockPlan { products: twice, random_products: None, keep_catalogue: false }.validate().is_err()
        );
        let both = StockPlan { keep_catalogue: true, ..StockPlan::flash_sale(10) };
        assert!(both.validate().unwrap_err().0.contains("keep_catalogue"));
        assert!(StockPlan::flash_sale(5_000_000).validate().is_ok());
    }
}
