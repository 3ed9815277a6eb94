//! The wiring: opens the stores a configuration names and builds the parts on them.
//! `serve` and the command line both start here, and only this module knows every part.

use std::sync::Arc;

use anyhow::Context;

use crate::config::Config;
use crate::directory::SharedDirectory;
use crate::intake::Intake;
use crate::ledger::{self, Ledger};
use crate::queue::metrics::StageMetrics;
use crate::queue::{QueueStore, load_job_configs};
use crate::route::Router;
use crate::xamtshilfe::Checker;

/// Opens the ledger and brings its schema up to date.
pub async fn open_ledger(config: &Config) -> anyhow::Result<Arc<dyn Ledger>> {
    if let Some(path) = config.ledger_url().strip_prefix("sqlite:")
        && let Some(parent) = std::path::Path::new(path.trim_start_matches("//")).parent()
    {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let ledger = ledger::open(config.ledger_url()).await.context("cannot open the ledger")?;
    // Two processes starting at once may migrate a new file at the same moment; SQLite then
    // fails the second cleanly, and it succeeds when run again.
    let mut tries = 0;
    loop {
        match ledger.migrate().await {
            Ok(()) => return Ok(ledger),
            Err(e) if tries < 5 => {
                tries += 1;
                tracing::debug!(error = %e, "migrating the ledger failed; trying again");
                tokio::time::sleep(std::time::Duration::from_millis(200 * tries)).await;
            }
            Err(e) => return Err(anyhow::Error::new(e).context("cannot migrate the ledger")),
        }
    }
}

/// Opens the queue database (creating and migrating it).
pub async fn open_queues(config: &Config) -> anyhow::Result<QueueStore> {
    let path = config.queue_path();
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let jobs = load_job_configs(Some(&config.data_dir)).context("job settings (jobs/*.toml)")?;
    QueueStore::open(&path, jobs).await.with_context(|| format!("cannot open the queue database {}", path.display()))
}

/// The directory imported under the data directory, or the sample data.
pub fn open_directory(config: &Config) -> anyhow::Result<Arc<SharedDirectory>> {
    let directory = crate::directory::open_or_sample(&config.data_dir).context("the directory (import it again with `amtsbote directory import`)")?;
    Ok(Arc::new(SharedDirectory::new(directory)))
}

/// Everything an installation is made of, opened.
#[derive(Clone)]
pub struct App {
    pub config: Config,
    pub ledger: Arc<dyn Ledger>,
    pub queues: QueueStore,
    pub checker: Arc<Checker>,
    pub directory: Arc<SharedDirectory>,
    /// What this process's stages count (`/metrics`).
    pub metrics: Arc<StageMetrics>,
}

impl App {
    /// Opens (and migrates) the ledger and the queues, loads the code lists and the
    /// directory.
    pub async fn open(config: Config) -> anyhow::Result<App> {
        std::fs::create_dir_all(&config.data_dir).with_context(|| format!("cannot create the data directory {}", config.data_dir.display()))?;
        let ledger = open_ledger(&config).await?;
        let queues = open_queues(&config).await?;
        let checker = Arc::new(config.checker().context("messages: code lists")?);
        let directory = open_directory(&config)?;
        Ok(App { config, ledger, queues, checker, directory, metrics: Arc::default() })
    }

    /// The intake over this ledger, refusing tenants that may not deliver.
    pub fn intake(&self) -> Intake {
        Intake::new(self.ledger.clone(), self.checker.clone()).with_tenants(self.config.tenants.clone()).with_keep_rejected_bytes(self.config.intake.keep_rejected_bytes)
    }

    /// The routing stage over this ledger and directory.
    pub fn router(&self) -> Router {
        Router { ledger: self.ledger.clone(), checker: self.checker.clone(), directory: self.directory.clone() }
    }
}
