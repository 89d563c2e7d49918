//! The seed's flash sale as requests: hot-product hunters and regular customers, mixed by weight.

use bytes::Bytes;
use serde::Serialize;
use serde_json::json;

/// What buyers ask for. Every purchase is one line of `quantity` units.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scenario {
    /// The product everyone hunts.
    pub hot_product: i64,
    /// Its stock at the reset.
    pub hot_stock: i64,
    /// Relative weight of hunters (the seed: 100).
    pub hot_weight: u32,
    /// Relative weight of regular customers, who buy a random product from `1..=products` (the
    /// seed: 3).
    pub regular_weight: u32,
    /// Catalogue size regular customers pick from.
    pub products: i64,
    /// Units per purchase.
    pub quantity: u32,
    /// Seeds the buyers' choices and the catalogue's random stock, so a run can be repeated.
    pub seed: u64,
}

impl Scenario {
    /// The reset plan that lays out this scenario's catalogue (`POST /admin/reset`).
    pub fn reset_plan(&self) -> serde_json::Value {
        json!({
            "products": [{ "id": self.hot_product, "stock": self.hot_stock }],
            "random_products": { "count": self.products, "seed": self.seed },
        })
    }

    /// Checks what flags cannot: that there is someone to send and something to buy.
    ///
    /// # Errors
    /// When both weights are zero, the catalogue is empty, or a number is out of the server's range.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.hot_weight + self.regular_weight > 0,
            "--hot-weight and --regular-weight are both 0"
        );
        anyhow::ensure!(self.products >= 1, "--products must be at least 1");
        anyhow::ensure!(self.hot_stock >= 0, "--hot-stock must not be negative");
        anyhow::ensure!(
            (1..=100).contains(&self.quantity),
            "--quantity must be 1..=100 (the server's limit)"
        );
        anyhow::ensure!(self.hot_product >= 1, "--hot-product must be a positive id");
        Ok(())
    }
}

/// One buyer's choice, and the body that asks for it.
#[derive(Debug, Clone)]
pub(crate) struct Purchase {
    pub(crate) product: i64,
    pub(crate) body: Bytes,
}

/// Draws buyers from a scenario; one per worker, each with its own stream of choices.
#[derive(Debug)]
pub(crate) struct Buyers {
    scenario: Scenario,
    hot: Purchase,
    state: u64,
}

impl Buyers {
    pub(crate) fn new(scenario: &Scenario, stream: u64) -> Self {
        let hot =
            Purchase { product: scenario.hot_product, body: body(scenario.hot_product, scenario.quantity) };
        Self {
            scenario: scenario.clone(),
            hot,
            state: scenario.seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        }
    }

    /// The next buyer: a hunter with probability `hot_weight / (hot_weight + regular_weight)`.
    pub(crate) fn next(&mut self) -> Purchase {
        let total = u64::from(self.scenario.hot_weight + self.scenario.regular_weight);
        if self.draw() % total < u64::from(self.scenario.hot_weight) {
            return self.hot.clone();
        }
        let count = u64::try_from(self.scenario.products).unwrap_or(1).max(1);
        let product = i64::try_from(self.draw() % count).unwrap_or(0) + 1;
        Purchase { product, body: body(product, self.scenario.quantity) }
    }

    /// splitmix64: tiny, fast, and reproducible on every platform.
    fn draw(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// A purchase body as the HTTP contract has it, delivery filled as the seed's Locust users fill it.
fn body(product: i64, quantity: u32) -> Bytes {
    let body = json!({
        "items": [{ "product_id": product, "quantity": quantity }],
        "delivery": { "address": "1 Main St, Kyiv", "phone": "+380441234567", "email": "buyer@example.com" },
        "user": "bench",
    });
    Bytes::from(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(hot_weight: u32, regular_weight: u32) -> Scenario {
        Scenario {
            hot_product: 100,
            hot_stock: 10,
            hot_weight,
            regular_weight,
            products: 50,
            quantity: 1,
            seed: 7,
        }
    }

    #[test]
    fn buyers_follow_the_weights() {
        let mut buyers = Buyers::new(&scenario(100, 3), 0);
        let draws = 103_000;
        let hunters = (0..draws).filter(|_| buyers.next().product == 100).count();
        // Regulars pick product 100 too, 1 time in 50.
        let expected = draws as f64 * (100.0 / 103.0 + 3.0 / 103.0 / 50.0);
        assert!(
            (hunters as f64 - expected).abs() < expected * 0.01,
            "{hunters} hunters, expected ≈{expected}"
        );
    }

    #[test]
    fn regulars_stay_in_the_catalogue_and_only_hunters_with_zero_regular_weight() {
        let mut regulars = Buyers::new(&scenario(0, 1), 3);
        let picked: Vec<i64> = (0..5_000).map(|_| regulars.next().product).collect();
        assert!(picked.iter().all(|p| (1..=50).contains(p)));
        assert_eq!(*picked.iter().min().unwrap(), 1);
        assert_eq!(*picked.iter().max().unwrap(), 50);
        let mut hunters = Buyers::new(&scenario(1, 0), 3);
        assert!((0..1_000).all(|_| hunters.next().product == 100));
    }

    #[test]
    fn the_same_seed_and_stream_give_the_same_buyers() {
        let run = |stream| {
            let mut buyers = Buyers::new(&scenario(1, 1), stream);
            (0..100).map(|_| buyers.next().product).collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn bodies_follow_the_contract() {
        let mut buyers = Buyers::new(&scenario(1, 0), 0);
        let body: serde_json::Value = serde_json::from_slice(&buyers.next().body).unwrap();
        assert_eq!(body["items"][0]["product_id"], 100);
        assert_eq!(body["items"][0]["quantity"], 1);
        assert_eq!(body["user"], "bench");
        for field in ["address", "phone", "email"] {
            assert!(body["delivery"][field].as_str().is_some_and(|v| !v.is_empty()), "{field}");
        }
    }

    #[test]
    fn validation_names_the_bad_flag() {
        let err = scenario(0, 0).validate().unwrap_err().to_string();
        assert!(err.contains("--hot-weight"), "{err}");
        let err = Scenario { quantity: 101, ..scenario(1, 1) }.validate().unwrap_err().to_string();
        assert!(err.contains("--quantity"), "{err}");
    }
}
