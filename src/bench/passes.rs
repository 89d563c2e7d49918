//! The passes of a command ([`super::drivers`]): a server per pass, one after the other, each running the
//! command's own body on its strategies, and what they ran, for `run.json`.

use rand::SeedableRng;
use rand::seq::SliceRandom;

use super::drivers::Pass;
use super::server::{Server, StrategyInfo};
use crate::run_folder::{RunFolder, meta};

/// Each repetition's strategies in a shuffled order of their own, seeded from `seed`.
fn shuffled(strategies: &[StrategyInfo], repeat: u32, seed: u64) -> Vec<Vec<StrategyInfo>> {
    (0..repeat)
        .map(|rep| {
            let mut order = strategies.to_vec();
            order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed.wrapping_add(u64::from(rep))));
            order
        })
        .collect()
}

/// What the passes of a command ran, for `run.json`.
#[derive(Debug)]
pub(crate) struct Ran {
    /// Every strategy of every pass, as its server described it.
    pub(crate) strategies: Vec<StrategyInfo>,
    /// Per repetition, the labels in the order they ran, pass after pass.
    pub(crate) repetition_order: Vec<Vec<String>>,
    /// The first pass's server.
    pub(crate) server: Option<meta::ServerInfo>,
    /// What the first pass selected; later passes pick from it.
    selected: Vec<StrategyInfo>,
    /// What the pass under way runs.
    pass_strategies: Vec<StrategyInfo>,
    /// The passes to run, one server each.
    passes: Vec<Pass>,
    /// The strategies asked for; none: every one the first server has.
    wanted: Vec<String>,
    repeat: u32,
    /// Seeds every pass's shuffles alike, so a strategy keeps its place across passes.
    order_seed: u64,
    /// Whether any pass drew its orders: until then, a failure has nothing to write.
    drawn: bool,
}

impl Ran {
    pub(crate) fn new(passes: Vec<Pass>, wanted: &[String], repeat: u32, order_seed: u64) -> Self {
        Self {
            passes,
            wanted: wanted.to_vec(),
            strategies: Vec::new(),
            repetition_order: vec![Vec::new(); repeat as usize],
            server: None,
            selected: Vec::new(),
            pass_strategies: Vec::new(),
            repeat,
            order_seed,
            drawn: false,
        }
    }

    /// The repetitions are `repeat` long in `run.json`, whatever ran.
    pub(crate) const fn repeat(&self) -> u32 {
        self.repeat
    }

    /// Runs `body` on the server of each pass in turn, then stops that server. A later pass with
    /// nothing to run (no selected strategy is switched by its driver) starts no server. The first
    /// error, or Ctrl-C (`interrupted` says what is kept), ends the passes.
    ///
    /// Returns the outcome to write beside what was measured.
    ///
    /// # Errors
    /// When the first pass fails before `body` drew its orders ([`Self::draw_orders`]): nothing
    /// ran, nothing to write.
    pub(crate) async fn each_pass(
        &mut self,
        folder: &RunFolder,
        interrupted: &str,
        mut body: impl AsyncFnMut(&Server, &mut Self) -> anyhow::Result<()>,
    ) -> anyhow::Result<anyhow::Result<()>> {
        for pass in std::mem::take(&mut self.passes) {
            let outcome = match self.start(&pass, folder).await {
                Ok(Some(server)) => {
                    let outcome = tokio::select! {
                        outcome = body(&server, self) => outcome,
                        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted: {interrupted}")),
                    };
                    server.stop().await;
                    outcome
                }
                Ok(None) => continue,
                Err(err) => Err(err),
            };
            match outcome {
                Ok(()) => {}
                Err(err) if pass.first && !self.drawn => return Err(err),
                Err(err) => return Ok(Err(err)),
            }
        }
        Ok(Ok(()))
    }

    /// The pass's repetition orders: its strategies shuffled once per repetition, recorded for
    /// `run.json`.
    pub(crate) fn draw_orders(&mut self) -> Vec<Vec<StrategyInfo>> {
        let orders = shuffled(&self.pass_strategies, self.repeat, self.order_seed);
        for (all, order) in self.repetition_order.iter_mut().zip(&orders) {
            all.extend(order.iter().map(StrategyInfo::label));
        }
        self.drawn = true;
        orders
    }

    /// Starts the server of `pass` and chooses what it runs (`pass_strategies`); `None` when a
    /// later pass has nothing to run (no selected strategy is switched by the driver).
    ///
    /// # Errors
    /// When the server cannot be started or asked, or a strategy is unknown.
    async fn start(&mut self, pass: &Pass, folder: &RunFolder) -> anyhow::Result<Option<Server>> {
        if !pass.runs_any_of(&self.selected) {
            return Ok(None);
        }
        if let Some(driver) = pass.driver {
            eprintln!("bench: PostgreSQL driver {driver} for the per-sale SQL strategies");
        }
        if let Some(database) = pass.database {
            eprintln!("bench: the SQL strategies again, on {database} ({})", pass.server.database_url);
        }
        let server = Server::start(&pass.server, &pass.log(folder)).await?;
        let chosen = async {
            let available = server.strategies().await?;
            if pass.first {
                self.selected = super::select(&available, &self.wanted, pass.server.replicas)?;
            }
            pass.choose(&available, &self.selected)
        }
        .await;
        match chosen {
            Ok(chosen) => {
                if pass.first {
                    self.server = Some(meta::ServerInfo {
                        url: server.target.base().to_owned(),
                        spawned: server.spawned(),
                        replicas: server.replicas(),
                    });
                }
                self.strategies.extend(chosen.iter().cloned());
                self.pass_strategies = chosen;
                Ok(Some(server))
            }
            Err(err) => {
                server.stop().await;
                Err(err)
            }
        }
    }
}
