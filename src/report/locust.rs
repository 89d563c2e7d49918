//! Locust output.
use super::model::Run;
use std::path::Path;
pub fn detect(_dir: &Path) -> anyhow::Result<bool> {
    Ok(false)
}
pub fn load(_dir: &Path) -> anyhow::Result<Run> {
    anyhow::bail!("todo")
}
