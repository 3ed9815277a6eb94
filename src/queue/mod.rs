//! Named job queues: the arrows of the data flow.
//!
//! Every arrow into a box in docs/ARCHITECTURE.md's data flow is a job on one of the
//! [`Queue`]s below. Jobs are triggers: the ledger is the truth, and every handler reads the
//! ledger before it acts, so a job that runs twice does no harm.
//!
//! ```text
//! inbox, HTTP ─► intake ─► route ─┬─► transmit ─► notify
//!                                 └─► (awaiting print) ─► print (nightly) ─► notify
//! XTA message box ─► receive (every 5 min) ─► notify
//! print-centre feedback ─► reconcile ─► notify
//! ```
//!
//! # Per-queue settings: `jobs/<queue>.toml`
//! Concurrency, timeout, attempts, backoff and (for `print` and `receive`) a cron schedule
//! with its time zone. The shipped files are compiled in; a data directory's
//! `jobs/<queue>.toml` replaces one ([`load_job_configs`]). Unknown keys and unknown files
//! are errors.
//!
//! # Storage (embedded mode): SQLite through apalis-sqlite
//! [`QueueStore::open`] opens the queue database with our connection options (WAL,
//! `synchronous=NORMAL`, `busy_timeout`; apalis' own `SqliteStorage::setup()` would switch
//! `synchronous=OFF`), runs the library's migrations, then ours from
//! `migrations/queue-sqlite/`. Ours drops two library indexes (`LIdx` on `lock_by`,
//! `idx_jobs_status_run_at`) that made SQLite plan the library's lock and ack statements
//! as scans of the whole backlog, so the drain rate fell as the backlog grew; it adds a
//! small partial index for the orphan re-enqueue instead. [`explain_query_plan`] shows the
//! plans; tests/queue.rs asserts on them and `cargo bench --bench queue_drain` measures the
//! drain rate with and without the change.
//!
//! # The pipeline's stages
//! A stage after intake is a [`stage::StageHandler`] run by [`stage::run_worker`] (the
//! harness: settings from its `jobs/<queue>.toml`, durable backoff, panics caught, outcomes,
//! run time and lag counted in [`metrics`]). Its jobs are pushed by the relay from the
//! ledger's outbox, and the sweeper re-triggers work that lost its job ([`relay`]). The
//! store behind them is a [`JobBackend`] ([`SqliteJobs`] in embedded mode).
//!
//! # Running a worker by hand
//! ```no_run
//! # use amtsbote::queue::*;
//! # use apalis::prelude::*;
//! # #[derive(Clone, serde::Serialize, serde::Deserialize)] struct Transmit { request: String }
//! # async fn send(job: &Transmit) -> Result<(), BoxDynError> { Ok(()) }
//! # async fn transmit(job: Transmit) -> Result<(), BoxDynError> {
//! #     let timeout = std::time::Duration::from_secs(600);
//! // The attempt's timeout inside the job, as stage::run_worker does: apalis' own
//! // `.timeout()` layer leaves a timed-out job `Running` for good.
//! tokio::time::timeout(timeout, send(&job)).await.map_err(|_| "timed out")?
//! # }
//! # async fn run(store: QueueStore) -> Result<(), Box<dyn std::error::Error>> {
//! let queue = Queue::Transmit;
//! let cfg = store.configs().get(queue);
//! let worker = WorkerBuilder::new(worker_name(queue)) // unique per process and start
//!     .backend(store.backend::<Transmit>(queue))    // polls every poll_interval_ms
//!     .layer(store.backoff_layer(queue))            // failed attempt: run_at += backoff
//!     .catch_panic()
//!     .concurrency(cfg.concurrency)
//!     .build(transmit);
//! worker.run().await?;
//! # Ok(()) }
//! ```
//! A job's attempts are counted in the database: after a failure it is fetched again once
//! its backoff has passed, until `max_attempts` attempts have failed; then it is dead and
//! waits for an operator ([`QueueAdmin::retry`], [`QueueAdmin::discard`]).
//! Push jobs with [`QueueStore::push`] (or [`QueueStore::push_task`] for a delay or an
//! idempotency key).

mod admin;
mod backend;
mod backoff;
mod config;
pub mod metrics;
mod plan;
pub mod relay;
pub mod stage;
mod store;

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

pub use admin::{JobInfo, JobState, QueueCounts, SqliteJobs, purge_every_hour};
pub use backend::{JobBackend, QueueAdmin, StageJob};
pub use backoff::{DurableBackoff, DurableBackoffLayer};
pub use config::{
    Backoff, ConfigSource, JobConfig, JobConfigError, JobConfigs, JobSchedule, load_job_configs,
};
pub use plan::{PlanStep, QueryPlan, explain_query_plan};
pub use store::{
    PollEvery, QueueBackend, QueueStore, migrate, open_queue_pool, run_index_fix,
    run_library_migrations, worker_name,
};

/// The named queues, one per stage of the data flow. The name is the apalis queue name
/// (`job_type` in the SQLite tables) and the stem of its `jobs/<name>.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Queue {
    /// Validate a request that arrived (inbox folder or HTTP) and record it in the ledger.
    Intake,
    /// Find the responsible authority in the directory.
    Route,
    /// Send a request over XTA 2, with retries.
    Transmit,
    /// Ask the XTA server for a transmitted request's transport report until it is final.
    Report,
    /// The nightly print batch (scheduled).
    Print,
    /// Delivery-status email to the requesting authority.
    Notify,
    /// Poll the XTA message box and deliver into outbox folders (scheduled).
    Receive,
    /// Import the print centre's feedback file.
    Reconcile,
}

impl Queue {
    /// Every queue, in data-flow order.
    pub const ALL: [Queue; 8] = [
        Queue::Intake,
        Queue::Route,
        Queue::Transmit,
        Queue::Report,
        Queue::Print,
        Queue::Notify,
        Queue::Receive,
        Queue::Reconcile,
    ];

    /// The queue's name: `intake`, `route`, …
    pub const fn name(self) -> &'static str {
        match self {
            Queue::Intake => "intake",
            Queue::Route => "route",
            Queue::Transmit => "transmit",
            Queue::Report => "report",
            Queue::Print => "print",
            Queue::Notify => "notify",
            Queue::Receive => "receive",
            Queue::Reconcile => "reconcile",
        }
    }

    /// The shipped `jobs/<name>.toml`, compiled in.
    pub const fn default_config(self) -> &'static str {
        match self {
            Queue::Intake => include_str!("../../jobs/intake.toml"),
            Queue::Route => include_str!("../../jobs/route.toml"),
            Queue::Transmit => include_str!("../../jobs/transmit.toml"),
            Queue::Report => include_str!("../../jobs/report.toml"),
            Queue::Print => include_str!("../../jobs/print.toml"),
            Queue::Notify => include_str!("../../jobs/notify.toml"),
            Queue::Receive => include_str!("../../jobs/receive.toml"),
            Queue::Reconcile => include_str!("../../jobs/reconcile.toml"),
        }
    }
}

impl fmt::Display for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Queue {
    type Err = QueueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Queue::ALL
            .into_iter()
            .find(|q| q.name() == s)
            .ok_or_else(|| QueueError::UnknownQueue(s.to_owned()))
    }
}

/// What can go wrong in the queue layer.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The queue database failed.
    #[error("queue database: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration of the queue database failed.
    #[error("queue database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A queue name that is none of [`Queue::ALL`].
    #[error(
        "unknown queue {0:?} (known: intake, route, transmit, report, print, notify, receive, reconcile)"
    )]
    UnknownQueue(String),
    /// No job with this id.
    #[error("no job with id {0}")]
    JobNotFound(String),
    /// The job is in a state that does not allow the operation.
    #[error("job {id} is {state}: cannot {action} it")]
    InvalidState {
        /// The job.
        id: String,
        /// Its state now.
        state: JobState,
        /// `retry` or `discard`.
        action: &'static str,
    },
    /// A job's arguments could not be encoded.
    #[error("job for queue {queue}: cannot encode its arguments: {source}")]
    Encode {
        /// The queue it was meant for.
        queue: Queue,
        /// Why.
        source: serde_json::Error,
    },
    /// A jobs/*.toml file is wrong.
    #[error(transparent)]
    Config(#[from] JobConfigError),
}
