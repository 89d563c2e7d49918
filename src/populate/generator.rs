//! The rows populate loads, generated rather than stored: a product's row is a pure function of the
//! flags and its index, an order a pure function of `(seed, order index)`, so the tally, the
//! `orders` rows and the `order_items` rows agree without remembering anything, whichever server
//! receives them.

use checkout_strategies::order::MAX_LINES;
use checkout_strategies::{RandomProducts, StrategyKind};
use uuid::Uuid;

use super::PopulateArgs;
use super::rows::{Row, RowFormat};

/// Units of one product in one generated order are drawn from `1..=MAX_GENERATED_QUANTITY`.
const MAX_GENERATED_QUANTITY: u64 = 3;

/// Distinct customers generated orders are spread over.
const CUSTOMERS: u64 = 1_000_000;

/// Units generated orders hold, indexed by product id (index 0 unused).
pub(super) fn tally(orders: &OrderGenerator, products: u64) -> Vec<u32> {
    let len = usize::try_from(products + 1).expect("products is at most MAX_RANDOM_PRODUCTS");
    let mut held = vec![0_u32; len];
    if orders.count == 0 {
        return held;
    }
    let bar = super::progress("tally", orders.count);
    for index in 0..orders.count {
        for &(product, quantity) in orders.order(index).lines() {
            // `MAX_ORDERS * MAX_GENERATED_QUANTITY` fits a u32, so this cannot wrap.
            held[usize::try_from(product).expect("product ids fit usize")] += quantity;
        }
        if index % 65_536 == 65_535 {
            bar.inc(65_536);
        }
    }
    bar.finish_and_clear();
    held
}

/// The `products` rows: ids 1..=N with their seeded stock, then the hot product when its id lies
/// outside that range.
#[derive(Debug)]
pub(super) struct ProductRows<'a> {
    random: RandomProducts,
    hot_product: i64,
    hot_stock: i64,
    /// Units generated orders hold, by product id ([`tally`]).
    held: &'a [u32],
    /// Rows to write.
    pub(super) count: u64,
}

impl<'a> ProductRows<'a> {
    pub(super) fn new(args: &PopulateArgs, held: &'a [u32]) -> Self {
        let hot_outside = args.hot_product.cast_unsigned() > args.products;
        Self {
            random: RandomProducts {
                count: args.products,
                min_stock: args.min_stock,
                max_stock: args.max_stock,
                seed: args.seed,
            },
            hot_product: args.hot_product,
            hot_stock: args.hot_stock,
            held,
            count: args.products + u64::from(hot_outside),
        }
    }

    /// Appends row `index`: `id, stock, initial_stock`. The stock stays the plan's; the units
    /// generated orders hold already left the shelf, so they count in the initial stock only.
    pub(super) fn write(&self, index: u64, format: RowFormat, out: &mut Vec<u8>) {
        let id = if index == self.random.count { self.hot_product } else { (index + 1).cast_signed() };
        let stock = if id == self.hot_product { self.hot_stock } else { self.random.stock_of(id) };
        let units = self.held.get(usize::try_from(id).unwrap_or(usize::MAX)).copied().unwrap_or(0);
        Row::start(out, format).number(id).number(stock).number(stock + i64::from(units)).end();
    }
}

/// Generated orders: order `i` is a pure function of `(seed, i)`.
#[derive(Debug, Clone, Copy)]
pub(super) struct OrderGenerator {
    key: u64,
    pub(super) count: u64,
    products: u64,
    max_lines: u64,
    pub(super) strategy: StrategyKind,
}

impl OrderGenerator {
    pub(super) fn new(args: &PopulateArgs) -> Self {
        // Salted so order draws never replay the stock draws of `RandomProducts`.
        const ORDERS_SALT: u64 = 0x6f72_6465_7273_0001;
        let max_lines = u64::try_from(args.max_items_per_order).unwrap_or(u64::MAX).min(args.products);
        Self {
            key: splitmix64(args.seed ^ ORDERS_SALT),
            count: args.orders,
            products: args.products,
            max_lines,
            strategy: args.orders_strategy,
        }
    }

    pub(super) fn order(&self, index: u64) -> GeneratedOrder {
        let mut draws = Draws(splitmix64(self.key.wrapping_add(index.wrapping_mul(GOLDEN_GAMMA))));
        let mut id = [0; 16];
        id[..8].copy_from_slice(&draws.next().to_le_bytes());
        id[8..].copy_from_slice(&draws.next().to_le_bytes());
        let mut order = GeneratedOrder {
            id: uuid::Builder::from_random_bytes(id).into_uuid(),
            lines: [(0, 0); MAX_LINES],
            len: 0,
            draws,
        };
        let len = 1 + order.draws.below(self.max_lines);
        while (order.len as u64) < len {
            let product = 1 + order.draws.below(self.products);
            if order.lines().iter().all(|&(taken, _)| taken != product) {
                let quantity = 1 + order.draws.below(MAX_GENERATED_QUANTITY);
                order.lines[order.len] = (product, u32::try_from(quantity).expect("quantity is at most 3"));
                order.len += 1;
            }
        }
        order
    }
}

/// One generated order; `draws` continues its stream for the customer fields.
pub(super) struct GeneratedOrder {
    pub(super) id: Uuid,
    lines: [(u64, u32); MAX_LINES],
    len: usize,
    draws: Draws,
}

const STREETS: [&str; 8] = [
    "Market Street",
    "Station Road",
    "Church Lane",
    "High Street",
    "Mill Road",
    "Park Avenue",
    "Oak Drive",
    "Harbour Way",
];
const CITIES: [&str; 8] =
    ["Springfield", "Riverton", "Lakeside", "Fairview", "Greenville", "Ashford", "Kingston", "Milton"];

impl GeneratedOrder {
    pub(super) fn lines(&self) -> &[(u64, u32)] {
        &self.lines[..self.len]
    }

    /// Appends the `orders` row: `id, strategy, status, user_name, address, phone, email`.
    pub(super) fn write_order(mut self, strategy: StrategyKind, format: RowFormat, out: &mut Vec<u8>) {
        let customer = 1 + self.draws.below(CUSTOMERS);
        let number = 1 + self.draws.below(9_999);
        let street = STREETS[self.draws.pick(STREETS.len())];
        let city = CITIES[self.draws.pick(CITIES.len())];
        let exchange = 200 + self.draws.below(800);
        let line = self.draws.below(10_000);
        Row::start(out, format)
            .id(self.id)
            .text(format_args!("{strategy}"))
            .text(format_args!("confirmed"))
            .text(format_args!("user-{customer}"))
            .text(format_args!("{number} {street}, {city}"))
            .text(format_args!("+1-555-{exchange}-{line:04}"))
            .text(format_args!("user-{customer}@example.com"))
            .end();
    }

    /// Appends the `order_items` rows: `order_id, product_id, quantity`.
    pub(super) fn write_items(&self, format: RowFormat, out: &mut Vec<u8>) {
        for &(product, quantity) in self.lines() {
            Row::start(out, format).id(self.id).number(product).number(quantity).end();
        }
    }
}

const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// A SplitMix64 stream: cheap, well mixed, and restartable from any order's seed.
struct Draws(u64);

impl Draws {
    const fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN_GAMMA);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`; the modulo bias is below `n / 2^64`, invisible at catalogue sizes.
    const fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick(&mut self, n: usize) -> usize {
        usize::try_from(self.below(u64::try_from(n).expect("usize fits u64"))).expect("below n")
    }
}

/// SplitMix64's finaliser, to derive independent stream seeds.
const fn splitmix64(x: u64) -> u64 {
    Draws(x).next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(products: u64, max_items: usize) -> PopulateArgs {
        PopulateArgs { products, max_items_per_order: max_items, ..super::super::tests::args() }
    }

    #[test]
    fn orders_are_reproducible_distinct_and_in_range() {
        let generator = OrderGenerator::new(&args(50, 5));
        let mut ids = std::collections::HashSet::new();
        for index in 0..10_000 {
            let order = generator.order(index);
            assert_eq!(order.id, generator.order(index).id);
            assert_eq!(order.lines(), generator.order(index).lines());
            assert!(ids.insert(order.id), "order {index} repeats an id");
            assert!((1..=5).contains(&order.len));
            let mut products: Vec<u64> = order.lines().iter().map(|&(p, _)| p).collect();
            assert!(products.iter().all(|p| (1..=50).contains(p)));
            assert!(order.lines().iter().all(|&(_, q)| (1..=3).contains(&q)));
            products.sort_unstable();
            products.dedup();
            assert_eq!(products.len(), order.len, "order {index} names a product twice");
        }
    }

    #[test]
    fn orders_never_ask_more_distinct_products_than_exist() {
        let generator = OrderGenerator::new(&args(2, 5));
        assert!((0..1_000).all(|index| generator.order(index).len <= 2));
    }

    #[test]
    fn generated_rows_are_copy_text_safe() {
        let generator = OrderGenerator::new(&args(1_000, 3));
        let mut out = Vec::new();
        for index in 0..1_000 {
            generator.order(index).write_order(StrategyKind::SqlAtomic, RowFormat::CopyText, &mut out);
            generator.order(index).write_items(RowFormat::CopyText, &mut out);
        }
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains('\\') && !text.contains('\r'));
        assert!(text.lines().all(|line| matches!(line.split('\t').count(), 3 | 7)));
    }

    #[test]
    fn generated_sql_tuples_need_no_escapes() {
        let generator = OrderGenerator::new(&args(1_000, 3));
        for index in 0..1_000 {
            let mut out = Vec::new();
            generator.order(index).write_order(StrategyKind::SqlAtomic, RowFormat::SqlValues, &mut out);
            let text = String::from_utf8(out).unwrap();
            // Seven fields, six of them quoted, and no quote or backslash inside any.
            assert_eq!(text.matches('\'').count(), 2 + 2 * 6, "{text}");
            assert!(!text.contains('\\') && !text.contains("''"), "{text}");
            assert!(text.starts_with("(X'") && text.ends_with(')'), "{text}");
        }
    }

    #[test]
    fn both_formats_carry_the_same_product_rows() {
        let args = PopulateArgs { hot_product: 7, hot_stock: 5, ..args(10, 3) };
        let held = tally(&OrderGenerator::new(&args), args.products);
        let rows = ProductRows::new(&args, &held);
        assert_eq!(rows.count, 10, "the hot product is one of the ten");
        let (mut copy, mut sql) = (Vec::new(), Vec::new());
        for index in 0..rows.count {
            rows.write(index, RowFormat::CopyText, &mut copy);
            rows.write(index, RowFormat::SqlValues, &mut sql);
        }
        let copy = String::from_utf8(copy).unwrap().replace('\t', ",");
        let copy: Vec<&str> = copy.lines().collect();
        let sql = String::from_utf8(sql).unwrap();
        let sql: Vec<&str> = sql.trim_start_matches('(').trim_end_matches(')').split("),(").collect();
        assert_eq!(copy, sql);
        assert!(copy[6].starts_with("7,5,"), "the hot product keeps its own stock: {}", copy[6]);
    }
}
