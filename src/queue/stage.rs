//! The stage-worker harness, written once: every stage after intake is a [`StageHandler`]
//! that consumes its named queue through [`run_worker`].
//!
//! A stage job names a request and the journal event that put it into the stage's input
//! state ([`StageJob`]). The handler reads the request from the ledger, does nothing when it
//! has moved on (a job delivered twice), and moves it by compare-and-set. Its error says
//! whether to try again ([`StageError::Retry`]: after the queue's backoff, kept in the
//! database, until `max_attempts`) or to give up ([`StageError::Abort`]). The harness
//! counts every attempt's outcome, run time and lag ([`super::metrics`]).
//!
//! The queue's `timeout_secs` is enforced here, around the handler, not by apalis'
//! `timeout` layer: that layer drops the job's future from outside apalis' task lifecycle,
//! so the attempt is acknowledged with its status still `Running` ("request timed out")
//! and no worker ever fetches it again — its request waited in `validated` (or
//! `transmitting`) for good, and the sweeper, seeing a job, left it alone (issue 13: 38 MB
//! requests whose routing took longer than 30 s on a loaded machine). An attempt that runs
//! too long is an ordinary failure: retried after the backoff, dead after `max_attempts`.

use std::sync::Arc;
use std::time::Instant;

use apalis::prelude::*;
use tokio::sync::watch;

use super::metrics::{Outcome, StageMetrics};
use super::{Queue, QueueStore, StageJob, worker_name};

/// Why a stage could not finish a job.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// Passing (the ledger or a peer is unavailable): try again after the backoff.
    #[error("{0}")]
    Retry(String),
    /// For good: trying again cannot help. The job ends killed; the reason is kept with it.
    #[error("{0}")]
    Abort(String),
}

/// One stage: what it does with one job of its queue.
#[async_trait::async_trait]
pub trait StageHandler: Send + Sync + 'static {
    /// The queue it consumes.
    fn queue(&self) -> Queue;

    /// Handles one job. Must be safe to run twice for the same job.
    async fn handle(&self, job: StageJob) -> Result<(), StageError>;
}

struct Context {
    handler: Arc<dyn StageHandler>,
    metrics: Arc<StageMetrics>,
    max_attempts: usize,
    /// The longest run of one attempt (`timeout_secs`).
    timeout: std::time::Duration,
}

/// The stall tests set `AMTSBOTE_TEST_STALL` to `<queue>:<ms>`: the first attempt of each
/// job of that queue waits that long before its handler runs, as a 38 MB message on a loaded
/// machine does, so that a test can make an attempt outlast its timeout without depending
/// on the machine's speed. Unset in production: a no-op.
async fn stall_point(queue: Queue, attempt: usize) {
    if attempt > 1 {
        return;
    }
    let Ok(v) = std::env::var("AMTSBOTE_TEST_STALL") else { return };
    if let Some((q, ms)) = v.split_once(':')
        && q == queue.name()
        && let Ok(ms) = ms.parse::<u64>()
    {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}

async fn run_job(job: StageJob, cx: Data<Arc<Context>>, id: TaskId, attempt: Attempt) -> Result<(), BoxDynError> {
    let queue = cx.handler.queue();
    let metrics = cx.metrics.queue(queue);
    if attempt.current() <= 1
        && let Ok(ulid) = ulid::Ulid::from_string(&id.to_string())
    {
        // The job id is a ULID made at the push: its time is the push's.
        let pushed = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ulid.timestamp_ms());
        metrics.lag.observe(std::time::SystemTime::now().duration_since(pushed).unwrap_or_default());
    }
    let started = Instant::now();
    let attempted = async {
        stall_point(queue, attempt.current()).await;
        cx.handler.handle(job).await
    };
    let result = match tokio::time::timeout(cx.timeout, attempted).await {
        Ok(result) => result,
        Err(_) => Err(StageError::Retry(format!("timed out: the attempt ran longer than the queue's timeout_secs ({} s)", cx.timeout.as_secs()))),
    };
    metrics.run_time.observe(started.elapsed());
    match result {
        Ok(()) => {
            metrics.record(Outcome::Done);
            Ok(())
        }
        Err(StageError::Retry(reason)) => {
            let last = attempt.current() >= cx.max_attempts;
            metrics.record(if last { Outcome::Dead } else { Outcome::Retried });
            tracing::warn!(queue = %queue, request = job.request, attempt = attempt.current(), reason = %reason, "{}", if last { "job failed on its last attempt: dead, waiting for an operator" } else { "job failed; it runs again after its backoff" });
            Err(reason.into())
        }
        Err(StageError::Abort(reason)) => {
            metrics.record(Outcome::Aborted);
            tracing::warn!(queue = %queue, request = job.request, reason = %reason, "job failed for good");
            Err(AbortError::new(reason).into())
        }
    }
}

/// Runs a worker of `handler`'s queue (concurrency, timeout, batch, poll interval and
/// backoff from its `jobs/<queue>.toml`) until `stop` turns true; running jobs finish
/// first. An error means the worker stopped by itself (its fetch failed): the supervisor
/// starts a new one, under a new name.
pub fn run_worker(store: QueueStore, handler: Arc<dyn StageHandler>, metrics: Arc<StageMetrics>, mut stop: watch::Receiver<bool>) -> impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static {
    let queue = handler.queue();
    let cfg = store.configs().get(queue).clone();
    let jobs = store.jobs();
    let cx = Arc::new(Context { handler, metrics, max_attempts: cfg.max_attempts.max(1) as usize, timeout: cfg.timeout() });
    let worker = WorkerBuilder::new(worker_name(queue))
        .backend(store.backend::<StageJob>(queue))
        .layer(store.backoff_layer(queue))
        .catch_panic()
        .concurrency(cfg.concurrency)
        .data(cx)
        .build(run_job);
    // Spawned from this plain function: inside an `async fn`, rustc cannot prove the
    // worker's future Send (the panic layer's higher-ranked closure).
    let running = tokio::spawn(worker.run_until(async move {
        let _ = stop.wait_for(|stop| *stop).await;
        Ok::<(), WorkerError>(())
    }));
    async move {
        // Beside the new worker: what it takes back is due at once.
        match jobs.reclaim_from_dead_workers(queue).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(%queue, jobs = n, "took back the jobs of workers whose process died"),
            Err(e) => tracing::warn!(%queue, error = %e, "cannot look for jobs of workers whose process died"),
        }
        running
            .await
            .map_err(|e| anyhow::anyhow!("the {queue} worker panicked: {e}"))?
            .map_err(|e| anyhow::anyhow!("the {queue} worker stopped: {e}"))
    }
}
