//! Every Redis key the strategies use, under one prefix, so tests (and several benches on one
//! Redis) never see each other's keys and a reset can clear exactly its own.
//!
//! On a Redis Cluster the prefix becomes a hash tag (`{checkout}:stock:100`, see
//! [`RedisKeys::in_one_slot`]): every key hashes to one slot, so every multi-key script (a
//! reservation touches the stock and in-flight keys of each line, the reservations hash and the
//! deadlines) runs there whole, and the scan of a reset finds every key on one master.

/// Key names under a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisKeys {
    prefix: String,
}

impl RedisKeys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into() }
    }

    /// The same keys with the prefix as a hash tag, so a Redis Cluster keeps them all in one slot:
    /// `checkout:` becomes `{checkout}:`. A prefix that already holds a non-empty `{…}` is kept as
    /// it is (Redis hashes the first such tag); an empty one gets the tag `{checkout}`.
    #[must_use]
    pub fn in_one_slot(&self) -> Self {
        if has_hash_tag(&self.prefix) {
            return self.clone();
        }
        let tag = self.prefix.trim_end_matches(':');
        let separator = &self.prefix[tag.len()..];
        let tag = if tag.is_empty() { "checkout" } else { tag };
        Self { prefix: format!("{{{tag}}}{separator}") }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `SCAN` pattern matching every key under the prefix.
    pub fn pattern(&self) -> String {
        format!("{}*", escape_glob(&self.prefix))
    }

    /// Units of a product left to sell.
    pub fn stock(&self, product: i64) -> String {
        format!("{}stock:{product}", self.prefix)
    }

    /// Units of a product taken in Redis whose order PostgreSQL does not hold yet. Recovering a
    /// lost stock key subtracts them from PostgreSQL's stock.
    pub fn inflight(&self, product: i64) -> String {
        format!("{}inflight:{product}", self.prefix)
    }

    /// The order an idempotency key already names.
    pub fn idempotency(&self, key: &str) -> String {
        format!("{}idem:{key}", self.prefix)
    }

    /// Open reservations of the synchronous Redis strategies: order id → `strategy;id:qty;…`.
    /// Every unit they hold in flight is tied to one of these records.
    pub fn reservations(&self) -> String {
        format!("{}resv", self.prefix)
    }

    /// When each open reservation expires (order id → deadline in Redis milliseconds).
    pub fn reservation_deadlines(&self) -> String {
        format!("{}resv:deadlines", self.prefix)
    }

    /// Products whose mirror may stand above PostgreSQL (rebuilt after Redis lost it, or refused
    /// by PostgreSQL's stock): the sweeper rewrites them once no unit of theirs is in flight.
    pub fn resync(&self) -> String {
        format!("{}resync", self.prefix)
    }

    /// A strategy's order stream.
    pub fn stream(&self, strategy: &str) -> String {
        format!("{}stream:{strategy}", self.prefix)
    }

    /// Where a strategy's orders go after failing too often.
    pub fn dead_letter(&self, strategy: &str) -> String {
        format!("{}dead:{strategy}", self.prefix)
    }

    /// Accepted orders of a strategy not yet persisted: order id → stream entry.
    pub fn pending(&self, strategy: &str) -> String {
        format!("{}pending:{strategy}", self.prefix)
    }
}

/// Whether Redis Cluster would hash `prefix` by a tag: a `{` followed, later, by a `}` with
/// something between them.
fn has_hash_tag(prefix: &str) -> bool {
    prefix.find('{').is_some_and(|open| prefix[open + 1..].find('}').is_some_and(|close| close > 0))
}

/// Escapes glob metacharacters so a prefix matches only itself in `SCAN MATCH`.
fn escape_glob(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_live_under_the_prefix() {
        let keys = RedisKeys::new("t-abc:");
        assert_eq!(keys.stock(100), "t-abc:stock:100");
        assert_eq!(keys.stream("stream"), "t-abc:stream:stream");
        assert_eq!(keys.pattern(), "t-abc:*");
    }

    #[test]
    fn one_slot_keys_carry_the_prefix_as_a_hash_tag() {
        let keys = RedisKeys::new("t-abc:").in_one_slot();
        assert_eq!(keys.prefix(), "{t-abc}:");
        assert_eq!(keys.stock(100), "{t-abc}:stock:100");
        assert_eq!(keys.pattern(), "{t-abc}:*");
        assert_eq!(RedisKeys::new("plain").in_one_slot().prefix(), "{plain}");
        assert_eq!(RedisKeys::new("").in_one_slot().prefix(), "{checkout}");
        assert_eq!(
            RedisKeys::new("{shop}:a:").in_one_slot().prefix(),
            "{shop}:a:",
            "an existing tag is kept"
        );
        assert_eq!(keys.in_one_slot(), keys, "tagging twice changes nothing");
    }

    #[test]
    fn glob_characters_in_the_prefix_are_escaped() {
        assert_eq!(RedisKeys::new("a*[b]?").pattern(), "a\\*\\[b\\]\\?*");
    }
}
