//! A strategy as a run folder records it (`run.json`), from `GET /strategies`.

use serde::{Deserialize, Serialize};

/// A strategy as `GET /strategies` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct StrategyInfo {
    pub name: String,
    pub backend: String,
    pub safe: bool,
    pub durable: bool,
    #[serde(rename = "async")]
    pub queued: bool,
}
