//! The SQLite queue database: connection options, migrations, backends, pushing jobs.

use std::{
    future::Future,
    path::Path,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use apalis::prelude::{BackendExt, PollSnapshot, PollStrategy, PollWith, TaskBuilder, TaskId};
use apalis_sqlite::{Config, SqliteStorage, SqliteTask, queries::push_tasks};
use serde::Serialize;
use sqlx::{
    SqlSafeStr, SqlitePool,
    migrate::{Migration, MigrationType, Migrator},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};
use ulid::Ulid;

use super::{DurableBackoffLayer, JobBackend, JobConfigs, Queue, QueueAdmin, QueueError, SqliteJobs};

/// How long a connection waits for another writer before it fails with "database is
/// locked". Workers of all queues and the operators' commands share the file, and an
/// apalis worker whose fetch fails stops for good (it must be restarted), so wait long.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections in the pool: SQLite writes one at a time, but readers (the dashboard,
/// `amtsbote queues`) run beside the writer in WAL mode.
const MAX_CONNECTIONS: u32 = 8;

/// Our migrations' bookkeeping table, apart from the library's `_sqlx_migrations`, so
/// that neither migrator sees the other's versions as unknown.
const MIGRATIONS_TABLE: &str = "_amtsbote_queue_migrations";

/// Open (creating it if missing) the queue database at `path` with our connection
/// options: WAL journal; `synchronous=NORMAL` (never corrupt after a crash; a power
/// failure may lose the last commits, which the ledger recovers, while the `OFF` that
/// `SqliteStorage::setup()` sets can corrupt the file); a busy timeout; foreign keys on.
/// Does not migrate; see [`migrate`] or [`QueueStore::open`].
pub async fn open_queue_pool(path: &Path) -> Result<SqlitePool, QueueError> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .connect_with(options)
        .await?;
    Ok(pool)
}

/// Run apalis-sqlite's own migrations (its tables and its indexes), nothing else.
/// The bench uses this alone for its baseline; the service uses [`migrate`].
pub async fn run_library_migrations(pool: &SqlitePool) -> Result<(), QueueError> {
    let mut migrator = SqliteStorage::migrations();
    // Tolerate versions the library does not know (another part of amtsbote migrating
    // the same file); ours are kept in their own table anyway.
    migrator.set_ignore_missing(true);
    migrator.run(pool).await?;
    Ok(())
}

/// Run our migrations from `migrations/queue-sqlite/` (compiled in): they replace the
/// library indexes that make its lock and ack statements scan the backlog. Run after
/// [`run_library_migrations`].
pub async fn run_index_fix(pool: &SqlitePool) -> Result<(), QueueError> {
    let mut migrator = Migrator::with_migrations(vec![Migration::new(
        20261127000000,
        "job indexes".into(),
        MigrationType::Simple,
        include_str!("../../migrations/queue-sqlite/20261127000000_job_indexes.sql").into_sql_str(),
        false,
    )]);
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator.set_ignore_missing(true);
    migrator.run(pool).await?;
    Ok(())
}

/// Both: the library's migrations, then ours.
pub async fn migrate(pool: &SqlitePool) -> Result<(), QueueError> {
    run_library_migrations(pool).await?;
    run_index_fix(pool).await
}

/// A name for a new worker of `queue`: `<queue>-<hostname>-<pid>-<random>`, different on
/// every call. apalis-sqlite refuses to register a worker under a name that was seen
/// alive within the heartbeat interval, and such a worker sits idle; so a restarted
/// process, or a worker restarted inside one, must never reuse a name.
pub fn worker_name(queue: Queue) -> String {
    let random = Ulid::generate().random() as u32;
    format!("{queue}-{}-{}-{random:08x}", crate::hostname(), std::process::id())
}


/// The backend a worker of one queue gets from [`QueueStore::backend`]: apalis-sqlite's
/// storage, polled every `poll_interval_ms` while idle (without it an idle worker looks
/// for new jobs only at its heartbeat, every 30 s).
pub type QueueBackend<Args> = PollWith<SqliteStorage<Args>, PollEvery>;

/// Wake an idle worker every interval, so it fetches again, and at once when this process
/// pushed a job onto its queue ([`wake_workers`]: the relay's triggers), so that a request
/// does not wait up to a poll interval at every stage when the pipeline is quiet.
///
/// Instead of apalis' `IntervalStrategy` (`poll_with_interval`), which in apalis-core
/// 1.0.0 arms its next timer without polling it when one fires: if the worker's fetch
/// then finds nothing, no timer is registered and the worker sleeps until its next
/// heartbeat (30 s). That happens whenever a fetch is in flight as the interval ends,
/// often on a busy machine. This one polls the fresh timer at once.
pub struct PollEvery {
    interval: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The queue's wake-up and the registered wait for it (registered between polls too,
    /// so a push while the worker fetches is not missed).
    wake: Option<&'static tokio::sync::Notify>,
    woken: Option<Pin<Box<tokio::sync::futures::Notified<'static>>>>,
}

impl std::fmt::Debug for PollEvery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PollEvery").field("interval", &self.interval).field("woken_by_pushes", &self.wake.is_some()).finish()
    }
}

/// One wake-up per queue for the workers of this process.
fn wake_up(queue: Queue) -> &'static tokio::sync::Notify {
    static WAKE: std::sync::LazyLock<Vec<tokio::sync::Notify>> = std::sync::LazyLock::new(|| Queue::ALL.iter().map(|_| tokio::sync::Notify::new()).collect());
    let i = Queue::ALL.iter().position(|q| *q == queue).unwrap_or(0);
    &WAKE[i]
}

/// Wakes this process's idle workers of `queue`: jobs were just pushed onto it.
pub fn wake_workers(queue: Queue) {
    wake_up(queue).notify_waiters();
}

impl PollEvery {
    /// Every `interval` (at least 1 ms).
    pub fn new(interval: Duration) -> Self {
        PollEvery {
            interval: interval.max(Duration::from_millis(1)),
            timer: None,
            wake: None,
            woken: None,
        }
    }

    /// Every `interval`, and whenever this process pushes onto `queue`.
    pub fn for_queue(interval: Duration, queue: Queue) -> Self {
        PollEvery { wake: Some(wake_up(queue)), ..PollEvery::new(interval) }
    }

    /// A registered wait for the next wake-up.
    fn wait(wake: &'static tokio::sync::Notify) -> Pin<Box<tokio::sync::futures::Notified<'static>>> {
        let mut woken = Box::pin(wake.notified());
        woken.as_mut().enable();
        woken
    }
}

impl Clone for PollEvery {
    fn clone(&self) -> Self {
        PollEvery { wake: self.wake, ..PollEvery::new(self.interval) }
    }
}

impl PollStrategy for PollEvery {
    fn poll_drive(&mut self, cx: &mut Context<'_>, _: &PollSnapshot) -> Poll<Option<()>> {
        if let Some(wake) = self.wake {
            let woken = self.woken.get_or_insert_with(|| PollEvery::wait(wake));
            if woken.as_mut().poll(cx).is_ready() {
                // Wait for the next one from now on; the interval starts again.
                self.woken = Some(PollEvery::wait(wake));
                self.timer = None;
                return Poll::Ready(Some(()));
            }
        }
        let mut fired = false;
        loop {
            let interval = self.interval;
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(interval)));
            match timer.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    // Start the next interval and poll it (the loop), so it wakes us.
                    self.timer = None;
                    fired = true;
                }
                Poll::Pending if fired => return Poll::Ready(Some(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// The queue database, opened and migrated, with every queue's settings.
#[derive(Debug, Clone)]
pub struct QueueStore {
    pool: SqlitePool,
    configs: Arc<JobConfigs>,
}

impl QueueStore {
    /// Open the queue database at `path` ([`open_queue_pool`]) and migrate it
    /// ([`migrate`]).
    pub async fn open(path: &Path, configs: JobConfigs) -> Result<QueueStore, QueueError> {
        let pool = open_queue_pool(path).await?;
        migrate(&pool).await?;
        Ok(QueueStore::from_pool(pool, configs))
    }

    /// Use a pool that is already open and migrated.
    pub fn from_pool(pool: SqlitePool, configs: JobConfigs) -> QueueStore {
        QueueStore {
            pool,
            configs: Arc::new(configs),
        }
    }

    /// The connection pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Every queue's settings.
    pub fn configs(&self) -> &JobConfigs {
        &self.configs
    }

    /// The job backend over this database (relay, sweeper, backoff, purge).
    pub fn jobs(&self) -> Arc<dyn JobBackend> {
        Arc::new(SqliteJobs::new(self.pool.clone(), self.configs.clone()))
    }

    /// The operators' view: counts, failed jobs, retry, discard.
    pub fn admin(&self) -> QueueAdmin {
        QueueAdmin::new(self.jobs())
    }

    /// apalis-sqlite's storage for `queue`: its name, and the batch size from its
    /// settings. Usable as a worker's backend as is, or as a sink (`TaskSink`).
    pub fn storage<Args>(&self, queue: Queue) -> SqliteStorage<Args> {
        let config = Config::default()
            .queue(queue.name())
            .batch_size(self.configs.get(queue).batch_size);
        SqliteStorage::new(&self.pool).with_config(config)
    }

    /// The backend for a worker of `queue`: [`Self::storage`] polled every
    /// `poll_interval_ms`.
    pub fn backend<Args>(&self, queue: Queue) -> QueueBackend<Args> {
        self.storage(queue)
            .poll_with_strategy(PollEvery::for_queue(self.configs.get(queue).poll_interval(), queue))
    }

    /// The layer that keeps a failed job's backoff in the database (see
    /// [`DurableBackoffLayer`]), with `queue`'s backoff settings.
    pub fn backoff_layer(&self, queue: Queue) -> DurableBackoffLayer {
        DurableBackoffLayer::new(self.jobs(), self.configs.get(queue).backoff.clone())
    }

    /// Push a job with `args` onto `queue`, due now; returns its id. Its attempts are
    /// limited to the queue's `max_attempts`.
    pub async fn push<Args: Serialize>(
        &self,
        queue: Queue,
        args: Args,
    ) -> Result<String, QueueError> {
        self.push_task(queue, TaskBuilder::new(args)).await
    }

    /// Push a job built with apalis' `TaskBuilder` (for `run_after`, `idempotency_key`,
    /// `priority`, `max_attempts`); returns its id. Unless the builder says otherwise the
    /// job gets a fresh id and the queue's `max_attempts`. With an idempotency key that
    /// `queue` already holds, nothing is pushed (the library's `ON CONFLICT DO NOTHING`)
    /// and the returned id names no job.
    pub async fn push_task<Args: Serialize>(
        &self,
        queue: Queue,
        task: TaskBuilder<Args>,
    ) -> Result<String, QueueError> {
        let mut task = task
            .try_map_args(|args| serde_json::to_vec(&args))
            .map_err(|source| QueueError::Encode { queue, source })?
            .build();
        let (needs_id, needs_limit) = (task.task_id().is_none(), task.max_attempts().is_none());
        if needs_id || needs_limit {
            let mut builder = task.into_builder();
            if needs_id {
                builder = builder.task_id(TaskId::from_ulid(next_job_id()));
            }
            if needs_limit {
                builder = builder.max_attempts(self.configs.get(queue).max_attempts as usize);
            }
            task = builder.build();
        }
        let id = task.task_id().map(|id| id.to_string()).unwrap_or_default();
        let tasks: [SqliteTask; 1] = [task];
        let mut tx = self.pool.begin().await?;
        push_tasks(&mut *tx, queue.name(), &tasks)
            .await
            .map_err(sqlx_error)?;
        tx.commit().await?;
        wake_workers(queue);
        Ok(id)
    }
}

/// A new job id: a ULID greater than every one this process made before. apalis-sqlite
/// fetches jobs due at the same second in the order of their ids, so jobs pushed in order
/// run in that order (oldest first).
pub(super) fn next_job_id() -> Ulid {
    static GENERATOR: std::sync::Mutex<Option<ulid::Generator>> = std::sync::Mutex::new(None);
    let mut generator = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    // Overflow needs 2^80 ids within one millisecond.
    generator.get_or_insert_with(ulid::Generator::new).generate().unwrap_or_else(|_| Ulid::generate())
}

pub(super) fn sqlx_error(e: apalis_sqlite::Error) -> QueueError {
    match e {
        apalis_sqlite::Error::Database(e) => QueueError::Database(e),
        other => QueueError::Database(sqlx::Error::Protocol(other.to_string())),
    }
}

/// Seconds since the epoch, as apalis-sqlite keeps its times.
pub(super) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
