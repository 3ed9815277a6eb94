-- amtsbote's own change to the apalis-sqlite queue schema, run after the library's
-- migrations (src/queue/store.rs; recorded in _amtsbote_queue_migrations, not in the
-- library's _sqlx_migrations).
--
-- apalis-sqlite 1.0 locks and acknowledges a batch of jobs by id:
--   lock: UPDATE Jobs ... WHERE id IN (SELECT value FROM json_each(?1)) AND (status = 'Queued' OR ...)
--   ack:  UPDATE Jobs ... FROM json_each(?1) WHERE Jobs.id = j.task_id AND Jobs.lock_by = ?2
-- With the library's indexes SQLite plans the lock through idx_jobs_status_run_at (one
-- search per status: every pending job of the backlog is visited) and the ack through
-- LIdx (every job this worker ever ran). Each batch then costs O(backlog), and draining a
-- backlog of N jobs O(N^2). Without those two indexes both statements find their rows by
-- the primary key. tests/queue.rs asserts on the plans.

DROP INDEX IF EXISTS LIdx;

DROP INDEX IF EXISTS idx_jobs_status_run_at;

-- What used the two indexes, and what it uses now:
-- * orphan re-enqueue (every heartbeat): in-flight jobs (Running or Queued) of dead workers,
--   joined on lock_by. It gets this partial index, which holds only in-flight jobs, so the
--   lock and ack statements cannot use it. SQLite uses a partial index only when the
--   statement's WHERE contains the index's WHERE term as written: keep the text below
--   exactly as in the library's reenqueue_orphaned.sql.
-- * per-queue stats and listings: idx_jobs_job_type_status_run_at (unchanged).
-- * the library's all-queue listings, queue_length and vacuum: a scan of Jobs; amtsbote's
--   QueueAdmin always names the queues and uses the per-queue index.
CREATE INDEX IF NOT EXISTS amtsbote_jobs_inflight_lock_by ON Jobs(lock_by)
WHERE
    status = 'Running'
    OR status = 'Queued';
