//! The queue backend behind one interface: what the relay, the sweeper, the durable
//! backoff, the purge and the operators' commands need of the store that holds the jobs.
//!
//! [`JobBackend`] is implemented by [`super::SqliteJobs`] (embedded mode, apalis-sqlite); a
//! Redis backend for cluster mode implements the same trait. Workers themselves are built by
//! the stage harness ([`super::stage`]) from the backend's apalis storage.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{JobInfo, JobState, Queue, QueueCounts, QueueError};
use crate::ledger::Trigger;

/// The arguments of every stage job: which request, and which entry into the stage's input
/// state (the journal event's `seq`). Nothing else, and no personal data: the handler reads
/// the rest from the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageJob {
    pub request: i64,
    pub seq: u32,
}

/// A store of jobs. Every method is safe to call from several processes at once.
#[async_trait::async_trait]
pub trait JobBackend: Send + Sync + fmt::Debug {
    /// `sqlite` or `redis`.
    fn kind(&self) -> &'static str;

    /// One job per trigger on the trigger's queue, due now, with the trigger's key as
    /// idempotency key: a key the queue holds already (in any state) pushes nothing. All or
    /// nothing.
    async fn push_triggers(&self, triggers: &[Trigger]) -> Result<(), QueueError>;

    /// Which of `keys` have a job on `queue`, in any state (the sweeper's question).
    async fn jobs_exist(&self, queue: Queue, keys: &[String]) -> Result<HashSet<String>, QueueError>;

    /// Per queue, in data-flow order: jobs by state and the oldest pending job's age.
    async fn counts(&self) -> Result<Vec<QueueCounts>, QueueError>;

    /// Jobs in any of `states`, the most recent first.
    async fn list_jobs(&self, queue: Option<Queue>, states: &[JobState], limit: u32) -> Result<Vec<JobInfo>, QueueError>;

    async fn job(&self, id: &str) -> Result<Option<JobInfo>, QueueError>;

    /// Run a failed, dead or discarded job again now, with all its attempts.
    async fn retry(&self, id: &str) -> Result<JobInfo, QueueError>;

    /// Give up a pending, failed or dead job.
    async fn discard(&self, id: &str) -> Result<JobInfo, QueueError>;

    /// Not before now + `delay`: a failed attempt's backoff, kept in the store so that it
    /// survives a restart.
    async fn postpone(&self, id: &str, delay: Duration) -> Result<(), QueueError>;

    /// Delete jobs that finished (done or killed) before `before`; dead jobs stay.
    async fn purge_finished(&self, before: DateTime<Utc>) -> Result<u64, QueueError>;

    /// Hands the jobs that workers of `queue` on this machine held when their process died
    /// (SIGKILL, a power cut) back to the queue at once, without counting an attempt. Without
    /// this they wait until the library notices the missed heartbeats (a minute). Returns how
    /// many.
    async fn reclaim_from_dead_workers(&self, queue: Queue) -> Result<u64, QueueError>;
}

/// The operators' view of whichever backend is configured: counts, failed jobs, retry,
/// discard, purge. Cheap to clone.
#[derive(Debug, Clone)]
pub struct QueueAdmin {
    backend: Arc<dyn JobBackend>,
}

impl QueueAdmin {
    pub fn new(backend: Arc<dyn JobBackend>) -> Self {
        QueueAdmin { backend }
    }

    /// The backend itself (relay, sweeper).
    pub fn backend(&self) -> &Arc<dyn JobBackend> {
        &self.backend
    }

    /// The counts of every queue, in data-flow order (queues without jobs too).
    pub async fn counts(&self) -> Result<Vec<QueueCounts>, QueueError> {
        self.backend.counts().await
    }

    /// The counts of one queue.
    pub async fn queue_counts(&self, queue: Queue) -> Result<QueueCounts, QueueError> {
        let counts = self.backend.counts().await?;
        counts
            .into_iter()
            .find(|c| c.queue == queue)
            .ok_or_else(|| QueueError::UnknownQueue(queue.name().to_owned()))
    }

    /// Jobs in any of `states`, of `queue` or of every queue, the most recent first.
    pub async fn list_jobs(&self, queue: Option<Queue>, states: &[JobState], limit: u32) -> Result<Vec<JobInfo>, QueueError> {
        self.backend.list_jobs(queue, states, limit).await
    }

    /// The jobs that failed (attempts left or dead), the most recent first.
    pub async fn list_failed(&self, queue: Option<Queue>, limit: u32) -> Result<Vec<JobInfo>, QueueError> {
        self.backend.list_jobs(queue, &[JobState::Failed, JobState::Dead], limit).await
    }

    pub async fn job(&self, id: &str) -> Result<Option<JobInfo>, QueueError> {
        self.backend.job(id).await
    }

    /// See [`JobBackend::retry`]; a queued, running or done job: [`QueueError::InvalidState`].
    pub async fn retry(&self, id: &str) -> Result<JobInfo, QueueError> {
        self.backend.retry(id).await
    }

    /// See [`JobBackend::discard`]; a queued, running or done job: [`QueueError::InvalidState`].
    pub async fn discard(&self, id: &str) -> Result<JobInfo, QueueError> {
        self.backend.discard(id).await
    }

    pub async fn purge_finished(&self, before: DateTime<Utc>) -> Result<u64, QueueError> {
        self.backend.purge_finished(before).await
    }
}
