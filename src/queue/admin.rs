//! The SQLite job backend ([`SqliteJobs`]): the operators' view of the queues (`amtsbote
//! queues`, `jobs`, `retry`, `discard`), the relay's push, the sweeper's look-up, the durable
//! backoff and the purge, read from and written to apalis-sqlite's `Jobs` table. apalis has
//! no API for most of this, so it is plain SQL on the same pool.

use std::{fmt, str::FromStr};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Row, SqlitePool, sqlite::SqliteRow};

use super::{JobBackend, Queue, QueueAdmin, QueueError, StageJob, store::unix_now};
use crate::ledger::Trigger;

/// Where a job stands, as operators see it. apalis' status `Failed` is split in two:
/// [`JobState::Failed`] still has attempts left and will run again after its backoff,
/// [`JobState::Dead`] has used them all and waits for an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting to run (possibly not before its `run_at`).
    Pending,
    /// Claimed by a worker, not started yet.
    Queued,
    /// Running in a worker.
    Running,
    /// Failed, attempts left: runs again after its backoff.
    Failed,
    /// Failed, no attempts left.
    Dead,
    /// Stopped for good: aborted by its handler (or a panic), or discarded by an operator.
    Killed,
    /// Done.
    Done,
}

impl JobState {
    /// Every state.
    pub const ALL: [JobState; 7] = [
        JobState::Pending,
        JobState::Queued,
        JobState::Running,
        JobState::Failed,
        JobState::Dead,
        JobState::Killed,
        JobState::Done,
    ];

    /// `pending`, `queued`, …
    pub const fn name(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Failed => "failed",
            JobState::Dead => "dead",
            JobState::Killed => "killed",
            JobState::Done => "done",
        }
    }

    /// apalis-sqlite's `status` value for this state.
    fn status(self) -> &'static str {
        match self {
            JobState::Pending => "Pending",
            JobState::Queued => "Queued",
            JobState::Running => "Running",
            JobState::Failed | JobState::Dead => "Failed",
            JobState::Killed => "Killed",
            JobState::Done => "Done",
        }
    }

    /// The state of a row: its status, and for `Failed` whether attempts are left.
    fn of(status: &str, attempts: i64, max_attempts: i64) -> Option<JobState> {
        Some(match status {
            "Pending" => JobState::Pending,
            "Queued" => JobState::Queued,
            "Running" => JobState::Running,
            "Failed" if attempts < max_attempts => JobState::Failed,
            "Failed" => JobState::Dead,
            "Killed" => JobState::Killed,
            "Done" => JobState::Done,
            _ => return None,
        })
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for JobState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|state| state.name() == s)
            .ok_or_else(|| format!("unknown job state {s:?}"))
    }
}

/// How many jobs of one queue are in each state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueCounts {
    /// The queue.
    pub queue: Queue,
    /// Waiting to run, or claimed by a worker and not started (`pending` + `queued`).
    pub pending: u64,
    /// Running now.
    pub running: u64,
    /// Failed with attempts left: will run again after the backoff.
    pub failed: u64,
    /// Failed with no attempts left: an operator's to retry or discard.
    pub dead: u64,
    /// Aborted or discarded.
    pub killed: u64,
    /// Done (until purged: `queue.keep_finished_hours`).
    pub done: u64,
    /// Seconds the oldest due pending job has waited (0: none waits).
    pub oldest_pending_secs: u64,
}

impl QueueCounts {
    fn zero(queue: Queue) -> Self {
        QueueCounts {
            queue,
            pending: 0,
            running: 0,
            failed: 0,
            dead: 0,
            killed: 0,
            done: 0,
            oldest_pending_secs: 0,
        }
    }
}

/// One job, as `amtsbote jobs` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobInfo {
    /// The job's id (a ULID).
    pub id: String,
    /// Its queue's name.
    pub queue: String,
    /// Where it stands.
    pub state: JobState,
    /// Attempts made so far.
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Not to run before this time.
    pub run_at: Option<DateTime<Utc>>,
    /// When its last attempt ended.
    pub done_at: Option<DateTime<Utc>>,
    /// The worker that holds or last held it.
    pub worker: Option<String>,
    /// The error of its last failed attempt, or why it was re-enqueued or discarded.
    pub last_error: Option<String>,
    /// Its arguments (the JSON the job was pushed with).
    pub args: serde_json::Value,
}

const DISCARDED: &str = "discarded by an operator";

// The statements, all on apalis-sqlite's Jobs table. Each names the queues (job_type) or
// the job (id), so that SQLite reads the per-queue index or the primary key, never the
// whole table; the test at the bottom checks their plans.

/// Jobs per queue and status. ?1: JSON array of queue names.
const COUNT_BY_STATUS: &str = "SELECT job_type, status, COUNT(*) AS n FROM Jobs \
     WHERE job_type IN (SELECT value FROM json_each(?1)) GROUP BY job_type, status";

/// The oldest pending job's `run_at`, per queue. ?1: JSON array of queue names.
const OLDEST_PENDING: &str = "SELECT job_type, MIN(run_at) AS run_at FROM Jobs \
     WHERE job_type IN (SELECT value FROM json_each(?1)) AND status = 'Pending' GROUP BY job_type";

/// Which of the idempotency keys ?2 (JSON array) have a job in queue ?1, in any state.
const KEYS_WITH_JOBS: &str = "SELECT idempotency_key FROM Jobs \
     WHERE job_type = ?1 AND idempotency_key IN (SELECT value FROM json_each(?2))";

/// Failed jobs with attempts left, per queue. ?1: JSON array of queue names.
const COUNT_RETRYING: &str = "SELECT job_type, COUNT(*) AS n FROM Jobs \
     WHERE job_type IN (SELECT value FROM json_each(?1)) \
     AND status = 'Failed' AND attempts < max_attempts GROUP BY job_type";

/// ?1: JSON array of queue names, ?2: of apalis statuses, ?3: of [`JobState`] names,
/// ?4: limit.
const LIST_JOBS: &str = "SELECT id, job_type, status, attempts, max_attempts, run_at, done_at, \
       lock_by, last_result, job FROM Jobs \
     WHERE job_type IN (SELECT value FROM json_each(?1)) \
     AND status IN (SELECT value FROM json_each(?2)) \
     AND (CASE WHEN status = 'Failed' THEN \
            (CASE WHEN attempts < max_attempts THEN 'failed' ELSE 'dead' END) \
          ELSE lower(status) END) IN (SELECT value FROM json_each(?3)) \
     ORDER BY COALESCE(done_at, run_at) DESC, id DESC LIMIT ?4";

/// Jobs claimed by worker ?1, whose process is gone: pending again, attempts unchanged (the
/// crash was not the job's fault).
const RECLAIM_JOBS: &str = "UPDATE Jobs SET status = 'Pending', lock_by = NULL, lock_at = NULL \
     WHERE lock_by = ?1 AND status IN ('Queued', 'Running')";

/// ?1: id.
const FIND_JOB: &str = "SELECT id, job_type, status, attempts, max_attempts, run_at, done_at, \
       lock_by, last_result, job FROM Jobs WHERE id = ?1";

/// ?1: id, ?2: now (unix seconds).
const RETRY_JOB: &str = "UPDATE Jobs SET \
       attempts = CASE WHEN status = 'Pending' THEN attempts ELSE 0 END, \
       status = 'Pending', run_at = MIN(run_at, ?2), \
       lock_by = NULL, lock_at = NULL, done_at = NULL \
     WHERE id = ?1 AND status IN ('Failed', 'Killed', 'Pending')";

/// ?1: id, ?2: now (unix seconds), ?3: the note.
const DISCARD_JOB: &str = "UPDATE Jobs SET status = 'Killed', done_at = ?2, lock_by = NULL, \
       lock_at = NULL, last_result = json_object('Err', ?3, 'before', last_result) \
     WHERE id = ?1 AND status IN ('Pending', 'Failed')";

/// Finished jobs (done, or killed: aborted or discarded) that ended before ?1, at most
/// ?2 of them. Dead jobs (failed, no attempts left) are never purged: they wait for an
/// operator. The first two terms repeat the WHERE of the library's partial index
/// idx_jobs_completed_done_at word for word, so SQLite reads that index and not the table
/// (a unit test below checks the plan).
const PURGE_FINISHED: &str = "DELETE FROM Jobs WHERE ROWID IN (SELECT ROWID FROM Jobs \
     WHERE status IN ('Done', 'Failed', 'Killed') AND done_at IS NOT NULL \
       AND status IN ('Done', 'Killed') AND done_at < ?1 LIMIT ?2)";

/// Jobs deleted per transaction by [`QueueAdmin::purge_finished`]: small enough that
/// workers waiting for the write lock wait milliseconds, not seconds.
const PURGE_CHUNK: i64 = 2_000;

/// The job backend of the embedded mode, over apalis-sqlite's tables: counts, listings,
/// retry and discard, pushes, backoff and purge. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SqliteJobs {
    pool: SqlitePool,
    configs: std::sync::Arc<super::JobConfigs>,
}

impl SqliteJobs {
    /// The backend over the queue database behind `pool` (migrated), with the queues'
    /// settings (`max_attempts` of pushed jobs).
    pub fn new(pool: SqlitePool, configs: std::sync::Arc<super::JobConfigs>) -> Self {
        SqliteJobs { pool, configs }
    }

    /// The counts of every queue, in data-flow order (queues without jobs too).
    pub async fn counts(&self) -> Result<Vec<QueueCounts>, QueueError> {
        self.counts_of(&Queue::ALL).await
    }

    /// The counts of one queue.
    pub async fn queue_counts(&self, queue: Queue) -> Result<QueueCounts, QueueError> {
        Ok(self.counts_of(&[queue]).await?.remove(0))
    }

    async fn counts_of(&self, queues: &[Queue]) -> Result<Vec<QueueCounts>, QueueError> {
        let names = queue_names(queues);
        // Both read only the per-queue indexes (idx_jobs_job_type_status_run_at, and the
        // partial idx_jobs_failed for the failed jobs with attempts left).
        let by_status = sqlx::query(COUNT_BY_STATUS)
            .bind(&names)
            .fetch_all(&self.pool)
            .await?;
        let retrying = sqlx::query(COUNT_RETRYING)
            .bind(&names)
            .fetch_all(&self.pool)
            .await?;

        let mut counts: Vec<QueueCounts> = queues.iter().map(|q| QueueCounts::zero(*q)).collect();
        let slot = |counts: &[QueueCounts], job_type: &str| {
            counts.iter().position(|c| c.queue.name() == job_type)
        };
        for row in &by_status {
            let job_type: String = row.try_get("job_type")?;
            let status: String = row.try_get("status")?;
            let n = row.try_get::<i64, _>("n")? as u64;
            let Some(i) = slot(&counts, &job_type) else {
                continue;
            };
            let c = &mut counts[i];
            match status.as_str() {
                "Pending" | "Queued" => c.pending += n,
                "Running" => c.running += n,
                "Failed" => c.dead += n, // the ones with attempts left move below
                "Killed" => c.killed += n,
                "Done" => c.done += n,
                _ => {}
            }
        }
        let oldest = sqlx::query(OLDEST_PENDING).bind(&names).fetch_all(&self.pool).await?;
        let now = unix_now();
        for row in &oldest {
            let job_type: String = row.try_get("job_type")?;
            let run_at: Option<i64> = row.try_get("run_at")?;
            if let (Some(i), Some(run_at)) = (slot(&counts, &job_type), run_at) {
                counts[i].oldest_pending_secs = u64::try_from(now - run_at).unwrap_or(0);
            }
        }
        for row in &retrying {
            let job_type: String = row.try_get("job_type")?;
            let n = row.try_get::<i64, _>("n")? as u64;
            let Some(i) = slot(&counts, &job_type) else {
                continue;
            };
            counts[i].failed += n;
            counts[i].dead -= n.min(counts[i].dead);
        }
        Ok(counts)
    }

    /// Jobs in any of `states`, of `queue` or of every queue, the most recent first
    /// (by the end of their last attempt, else their `run_at`), at most `limit`.
    pub async fn list_jobs(
        &self,
        queue: Option<Queue>,
        states: &[JobState],
        limit: u32,
    ) -> Result<Vec<JobInfo>, QueueError> {
        let queues = match queue {
            Some(q) => vec![q],
            None => Queue::ALL.to_vec(),
        };
        let mut statuses: Vec<&str> = states.iter().map(|s| s.status()).collect();
        statuses.dedup();
        let state_names: Vec<&str> = states.iter().map(|s| s.name()).collect();
        let rows = sqlx::query(LIST_JOBS)
            .bind(queue_names(&queues))
            .bind(serde_json::to_string(&statuses).unwrap_or_default())
            .bind(serde_json::to_string(&state_names).unwrap_or_default())
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(job_info).collect()
    }

    /// The jobs that failed (attempts left or dead), of `queue` or of every queue, the
    /// most recent first, at most `limit`.
    pub async fn list_failed(
        &self,
        queue: Option<Queue>,
        limit: u32,
    ) -> Result<Vec<JobInfo>, QueueError> {
        self.list_jobs(queue, &[JobState::Failed, JobState::Dead], limit)
            .await
    }

    /// One job by id.
    pub async fn job(&self, id: &str) -> Result<Option<JobInfo>, QueueError> {
        let row = sqlx::query(FIND_JOB)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(job_info).transpose()
    }

    /// Run a failed, dead or discarded job again, now, with all its attempts: it becomes
    /// pending with no attempts counted. A pending job (waiting for its backoff or a
    /// later `run_at`) is made due now, keeping its count. A job that is queued, running
    /// or done is left alone: [`QueueError::InvalidState`].
    pub async fn retry(&self, id: &str) -> Result<JobInfo, QueueError> {
        let result = sqlx::query(RETRY_JOB)
            .bind(id)
            .bind(unix_now())
            .execute(&self.pool)
            .await?;
        self.after_change(id, result.rows_affected(), "retry", |_| false)
            .await
    }

    /// Give up on a pending, failed or dead job: it becomes killed, and no worker takes
    /// it again (until [`Self::retry`]). Its last error is kept beside the note that an
    /// operator discarded it. Discarding a killed job changes nothing. A job that is
    /// queued, running or done is left alone: [`QueueError::InvalidState`].
    pub async fn discard(&self, id: &str) -> Result<JobInfo, QueueError> {
        let result = sqlx::query(DISCARD_JOB)
            .bind(id)
            .bind(unix_now())
            .bind(DISCARDED)
            .execute(&self.pool)
            .await?;
        self.after_change(id, result.rows_affected(), "discard", |state| {
            state == JobState::Killed
        })
        .await
    }

    /// Delete the jobs that finished (done or killed) before `before`, in chunks of
    /// [`PURGE_CHUNK`] so workers are not held up; returns how many. apalis keeps every
    /// finished job, so without this the table, its indexes and with them the cost of
    /// every fetch, lock and ack grow for as long as the service runs. The ledger keeps
    /// the requests' history; a finished job holds nothing else. (apalis-sqlite's own
    /// `vacuum_before` compares the integer `run_at` with a date string, which SQLite
    /// sorts after every integer: it deletes every finished job, of any age, and the dead
    /// ones too.)
    pub async fn purge_finished(&self, before: DateTime<Utc>) -> Result<u64, QueueError> {
        let mut purged = 0;
        loop {
            let deleted = sqlx::query(PURGE_FINISHED)
                .bind(before.timestamp())
                .bind(PURGE_CHUNK)
                .execute(&self.pool)
                .await?
                .rows_affected();
            purged += deleted;
            if deleted < PURGE_CHUNK as u64 {
                return Ok(purged);
            }
            tokio::task::yield_now().await;
        }
    }

    async fn after_change(
        &self,
        id: &str,
        changed: u64,
        action: &'static str,
        already_done: impl Fn(JobState) -> bool,
    ) -> Result<JobInfo, QueueError> {
        let job = self
            .job(id)
            .await?
            .ok_or_else(|| QueueError::JobNotFound(id.to_owned()))?;
        if changed == 0 && !already_done(job.state) {
            return Err(QueueError::InvalidState {
                id: id.to_owned(),
                state: job.state,
                action,
            });
        }
        Ok(job)
    }
}

/// Purge finished jobs older than `keep` now and then every hour, until `stop` turns
/// true (what `serve` runs). A failed purge is logged and tried again an hour later.
pub async fn purge_every_hour(
    admin: QueueAdmin,
    keep: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(3600);
    loop {
        // A `keep` too long for the calendar keeps everything.
        let before = chrono::Duration::from_std(keep)
            .ok()
            .and_then(|keep| Utc::now().checked_sub_signed(keep));
        let purged = match before {
            Some(before) => admin.purge_finished(before).await,
            None => Ok(0),
        };
        match purged {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                jobs = n,
                "purged finished jobs older than queue.keep_finished_hours"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "cannot purge finished jobs; trying again in an hour")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
    }
}

#[async_trait::async_trait]
impl JobBackend for SqliteJobs {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    async fn push_triggers(&self, triggers: &[Trigger]) -> Result<(), QueueError> {
        use apalis::prelude::{TaskBuilder, TaskId};
        let mut tx = self.pool.begin().await?;
        for t in triggers {
            let args = serde_json::to_vec(&StageJob { request: t.request.0, seq: t.seq })
                .map_err(|source| QueueError::Encode { queue: t.queue, source })?;
            let mut task = TaskBuilder::new(args)
                .task_id(TaskId::from_ulid(super::store::next_job_id()))
                .idempotency_key(t.key())
                .max_attempts(self.configs.get(t.queue).max_attempts as usize);
            // A scheduled further attempt waits in the queue database for its time.
            if let Some(not_before) = t.not_before {
                task = task.run_at_timestamp(u64::try_from(not_before.timestamp()).unwrap_or(0));
            }
            let task = task.build();
            apalis_sqlite::queries::push_tasks(&mut *tx, t.queue.name(), std::slice::from_ref(&task))
                .await
                .map_err(super::store::sqlx_error)?;
        }
        tx.commit().await?;
        // This process's idle workers of these queues fetch now, not at their next poll.
        let mut woken: Vec<Queue> = Vec::new();
        for t in triggers {
            if !woken.contains(&t.queue) {
                woken.push(t.queue);
                super::store::wake_workers(t.queue);
            }
        }
        Ok(())
    }

    async fn jobs_exist(&self, queue: Queue, keys: &[String]) -> Result<std::collections::HashSet<String>, QueueError> {
        let rows: Vec<String> = sqlx::query_scalar(KEYS_WITH_JOBS)
            .bind(queue.name())
            .bind(serde_json::to_string(keys).unwrap_or_default())
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().collect())
    }

    async fn counts(&self) -> Result<Vec<QueueCounts>, QueueError> {
        SqliteJobs::counts(self).await
    }

    async fn list_jobs(&self, queue: Option<Queue>, states: &[JobState], limit: u32) -> Result<Vec<JobInfo>, QueueError> {
        SqliteJobs::list_jobs(self, queue, states, limit).await
    }

    async fn job(&self, id: &str) -> Result<Option<JobInfo>, QueueError> {
        SqliteJobs::job(self, id).await
    }

    async fn retry(&self, id: &str) -> Result<JobInfo, QueueError> {
        SqliteJobs::retry(self, id).await
    }

    async fn discard(&self, id: &str) -> Result<JobInfo, QueueError> {
        SqliteJobs::discard(self, id).await
    }

    async fn postpone(&self, id: &str, delay: std::time::Duration) -> Result<(), QueueError> {
        // Whole seconds, rounded up, as the library keeps them; only while the job is still
        // the worker's (Queued or Running: apalis has not recorded the outcome yet).
        let run_at = unix_now() + delay.as_secs_f64().ceil() as i64;
        sqlx::query("UPDATE Jobs SET run_at = ?1 WHERE id = ?2 AND status IN ('Queued', 'Running')")
            .bind(run_at)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn purge_finished(&self, before: DateTime<Utc>) -> Result<u64, QueueError> {
        SqliteJobs::purge_finished(self, before).await
    }

    async fn reclaim_from_dead_workers(&self, queue: Queue) -> Result<u64, QueueError> {
        // Worker names are `<queue>-<host>-<pid>-<random>` (super::worker_name): a worker of
        // this host whose process is gone holds its jobs for nobody.
        let prefix = format!("{queue}-{}-", crate::hostname());
        let workers: Vec<String> = sqlx::query_scalar("SELECT id FROM Workers WHERE worker_type = ?1 AND substr(id, 1, length(?2)) = ?2")
            .bind(queue.name())
            .bind(&prefix)
            .fetch_all(&self.pool)
            .await?;
        let mut reclaimed = 0;
        for worker in workers {
            let Some(pid) = worker[prefix.len()..].split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
            if pid == std::process::id() || !cfg!(target_os = "linux") || std::path::Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            reclaimed += sqlx::query(RECLAIM_JOBS).bind(&worker).execute(&self.pool).await?.rows_affected();
        }
        Ok(reclaimed)
    }
}

fn queue_names(queues: &[Queue]) -> String {
    let names: Vec<&str> = queues.iter().map(|q| q.name()).collect();
    serde_json::to_string(&names).unwrap_or_default()
}

fn job_info(row: &SqliteRow) -> Result<JobInfo, QueueError> {
    let status: String = row.try_get("status")?;
    let attempts: i64 = row.try_get("attempts")?;
    let max_attempts: i64 = row.try_get("max_attempts")?;
    let state = JobState::of(&status, attempts, max_attempts).ok_or_else(|| {
        QueueError::Database(sqlx::Error::Protocol(format!(
            "job with unknown status {status:?}"
        )))
    })?;
    let time = |column: &str| -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        Ok(row
            .try_get::<Option<i64>, _>(column)?
            .and_then(|secs| DateTime::from_timestamp(secs, 0)))
    };
    let last_result: Option<String> = row.try_get("last_result")?;
    let job: Vec<u8> = row.try_get("job")?;
    Ok(JobInfo {
        id: row.try_get("id")?,
        queue: row.try_get("job_type")?,
        state,
        attempts: attempts.max(0) as u32,
        max_attempts: max_attempts.max(0) as u32,
        run_at: time("run_at")?,
        done_at: time("done_at")?,
        worker: row.try_get("lock_by")?,
        last_error: last_result.as_deref().and_then(error_of),
        args: serde_json::from_slice(&job).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&job).into_owned())
        }),
    })
}

/// apalis keeps a job's outcome as the JSON of `Result<_, String>`: `{"Err": "…"}` for a
/// failure. Anything else that is not JSON is shown as it is.
fn error_of(last_result: &str) -> Option<String> {
    match serde_json::from_str::<serde_json::Value>(last_result) {
        Ok(value) => value.get("Err").map(|e| match e {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        }),
        Err(_) => Some(last_result.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{explain_query_plan, migrate, open_queue_pool};

    #[tokio::test]
    async fn the_admin_statements_read_an_index_or_the_primary_key_never_the_whole_table() {
        let dir = tempfile::tempdir().unwrap();
        let pool = open_queue_pool(&dir.path().join("queue.sqlite"))
            .await
            .unwrap();
        migrate(&pool).await.unwrap();
        for (name, sql) in [
            ("count by status", COUNT_BY_STATUS),
            ("count retrying", COUNT_RETRYING),
            ("oldest pending", OLDEST_PENDING),
            ("keys with jobs", KEYS_WITH_JOBS),
            ("list jobs", LIST_JOBS),
            ("purge finished", PURGE_FINISHED),
        ] {
            let plan = explain_query_plan(&pool, sql).await.unwrap();
            assert!(!plan.scans("Jobs"), "{name}:\n{plan}");
            assert!(plan.accesses("Jobs").count() > 0, "{name}:\n{plan}");
        }
        for (name, sql) in [
            ("find", FIND_JOB),
            ("retry", RETRY_JOB),
            ("discard", DISCARD_JOB),
        ] {
            let plan = explain_query_plan(&pool, sql).await.unwrap();
            assert!(plan.reads_only_by_key("Jobs"), "{name}:\n{plan}");
        }
    }
}
