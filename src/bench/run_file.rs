//! A command's run folder from start to finish: created as the run starts; `run.json`, the rows
//! and the `latest` link written once the passes end, whatever their outcome; the report last.

use std::path::Path;

use anyhow::Context as _;

use super::drivers::{self, DriverFlags};
use super::options::ServerFlags;
use super::passes::Ran;
use crate::run_folder::{RunFolder, StrategyInfo, meta};

/// A run folder, and what `run.json` keeps of the run's start.
#[derive(Debug)]
pub(crate) struct RunStart {
    pub(crate) folder: RunFolder,
    git: meta::Git,
    started_at: chrono::DateTime<chrono::Utc>,
}

/// What a command says of itself in `run.json`.
#[derive(Debug)]
pub(crate) struct Described<'a> {
    pub(crate) preset: String,
    pub(crate) command: String,
    /// The command's own options; those every command shares are added to them.
    pub(crate) options: serde_json::Value,
    pub(crate) server: &'a ServerFlags,
    pub(crate) drivers: &'a DriverFlags,
    pub(crate) drain_timeout_secs: u64,
    /// Where run folders go: its `latest` link names this run.
    pub(crate) out: &'a Path,
}

impl RunStart {
    /// Creates the run's folder in `out`, named after the time and the commit.
    ///
    /// # Errors
    /// When the folder cannot be created.
    pub(crate) fn begin(out: &Path) -> anyhow::Result<Self> {
        let git = meta::git();
        let folder = RunFolder::create(out, &git.short_sha)?;
        Ok(Self { folder, git, started_at: chrono::Utc::now() })
    }

    /// Seeds the repetition orders: another run, another order.
    pub(crate) fn order_seed(&self) -> u64 {
        u64::try_from(self.started_at.timestamp_micros()).unwrap_or_default()
    }

    /// Writes `run.json` (incomplete when `outcome` is an error), the rows (`write_rows`) and
    /// the `latest` link, then returns what `run.json` holds.
    ///
    /// # Errors
    /// When a file cannot be written, else `outcome`'s error once everything is written.
    pub(crate) async fn finish(
        &self,
        described: Described<'_>,
        ran: Ran,
        outcome: anyhow::Result<()>,
        write_rows: impl FnOnce(&RunFolder) -> anyhow::Result<()>,
    ) -> anyhow::Result<meta::RunMeta> {
        let Described { preset, command, mut options, server, drivers, drain_timeout_secs, out } = described;
        if let Some(options) = options.as_object_mut() {
            options.extend([
                ("repeat".to_owned(), serde_json::json!(ran.repeat())),
                (
                    "strategies".to_owned(),
                    serde_json::json!(ran.strategies.iter().map(StrategyInfo::label).collect::<Vec<_>>()),
                ),
                ("drain_timeout_secs".to_owned(), serde_json::json!(drain_timeout_secs)),
                ("order_seed".to_owned(), serde_json::json!(self.order_seed())),
                ("server_args".to_owned(), serde_json::json!(server.server_args)),
            ]);
        }
        let mut meta = meta::RunMeta {
            run_id: self.folder.id.clone(),
            started_at: self.started_at.to_rfc3339(),
            finished_at: chrono::Utc::now().to_rfc3339(),
            git: self.git.clone(),
            versions: meta::versions(&server.database_url, &server.redis_url).await,
            host: meta::host(),
            profile: meta::profile().to_owned(),
            preset,
            command,
            options,
            strategies: ran.strategies,
            repetition_order: ran.repetition_order,
            server: ran.server.unwrap_or_default(),
            incomplete: outcome.as_ref().err().map(|err| format!("{err:#}")),
        };
        drivers::record(&mut meta.options, drivers);
        let run_json = self.folder.file("run.json");
        std::fs::write(&run_json, serde_json::to_string_pretty(&meta)?)
            .with_context(|| format!("cannot write {}", run_json.display()))?;
        write_rows(&self.folder)?;
        self.folder.mark_latest(out)?;
        outcome?;
        Ok(meta)
    }

    /// Renders the run's charts and page, unless `no_report`.
    ///
    /// # Errors
    /// When the report cannot be rendered (the run itself is written).
    pub(crate) fn report(&self, no_report: bool) -> anyhow::Result<()> {
        if !no_report {
            let rendered = crate::report::render(&self.folder.path)
                .context("the run is written, but its report failed")?;
            eprintln!("bench: report {}", rendered.index_html.display());
        }
        Ok(())
    }
}
