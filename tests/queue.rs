//! The queues on a real SQLite file: jobs pushed, run by real apalis workers, retried,
//! dead, retried and discarded by an operator; the query plans of apalis-sqlite's own
//! statements with and without our index migration; worker names across processes.
//!
//! Run: `cargo nextest run --test queue` (add `--no-capture` to see the plans).

#[path = "support/library_sql.rs"]
mod library_sql;
use library_sql::library_sql;

use std::{
    future::Future,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use amtsbote::queue::{
    JobConfig, JobConfigs, JobState, QueryPlan, Queue, QueueAdmin, QueueCounts, QueueError,
    QueueStore, explain_query_plan, migrate, open_queue_pool, purge_every_hour, run_index_fix,
    run_library_migrations, worker_name,
};
use apalis::prelude::*;
use serde::{Deserialize, Serialize};
use sqlx::{Row, SqlitePool};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ping {
    n: u32,
}

/// Settings with a quick poll, so that tests do not wait for idle workers.
fn configs() -> JobConfigs {
    let mut configs = JobConfigs::builtin().unwrap();
    for queue in Queue::ALL {
        let mut cfg = configs.get(queue).clone();
        cfg.poll_interval_ms = 50;
        configs.set(queue, cfg);
    }
    configs
}

async fn open_store(dir: &Path, configs: JobConfigs) -> QueueStore {
    QueueStore::open(&dir.join("queue.sqlite"), configs)
        .await
        .unwrap()
}

/// Wait until `done` says so (checked every 50 ms), at most `limit`.
async fn wait_for<F, Fut>(limit: Duration, what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !done().await {
        assert!(
            start.elapsed() < limit,
            "gave up waiting for {what} after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn counts(admin: &QueueAdmin, queue: Queue) -> QueueCounts {
    admin.queue_counts(queue).await.unwrap()
}

/// Run a worker of `queue` with `handler` (wired as the service does: backoff layer,
/// concurrency, timeout from the queue's settings) until `until` holds.
macro_rules! run_worker_until {
    ($store:expr, $queue:expr, $handler:expr, $data:expr, $limit:expr, $what:expr, $until:expr) => {{
        let store: &QueueStore = &$store;
        let queue: Queue = $queue;
        let cfg = store.configs().get(queue).clone();
        let worker = WorkerBuilder::new(worker_name(queue))
            .backend(store.backend::<Ping>(queue))
            .layer(store.backoff_layer(queue))
            .catch_panic()
            .concurrency(cfg.concurrency)
            .timeout(cfg.timeout())
            .data($data)
            .build($handler);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(worker.run_until(async move {
            let _ = stopped.await;
            Ok::<(), WorkerError>(())
        }));
        let started = Instant::now();
        wait_for($limit, $what, $until).await;
        eprintln!("{}: {:?}", $what, started.elapsed());
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(20), running)
            .await
            .expect("worker stops")
            .expect("worker task")
            .expect("worker ran without error");
        eprintln!("{} (stopped): {:?}", $what, started.elapsed());
    }};
}

#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(u32, Instant, usize)>>>);

async fn record(job: Ping, seen: Data<Seen>, attempt: Attempt) -> Result<(), BoxDynError> {
    seen.0
        .0
        .lock()
        .unwrap()
        .push((job.n, Instant::now(), attempt.current()));
    Ok(())
}

async fn always_fail(job: Ping, seen: Data<Seen>, attempt: Attempt) -> Result<(), BoxDynError> {
    seen.0
        .0
        .lock()
        .unwrap()
        .push((job.n, Instant::now(), attempt.current()));
    Err(format!("XTA endpoint refused job {}", job.n).into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_jobs_are_run_by_a_worker_and_end_done() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), configs()).await;
    let admin = store.admin();

    let mut ids = Vec::new();
    for n in 0..25 {
        ids.push(store.push(Queue::Intake, Ping { n }).await.unwrap());
    }
    // An idempotency key pushes once.
    for _ in 0..2 {
        store
            .push_task(
                Queue::Intake,
                TaskBuilder::new(Ping { n: 100 }).idempotency_key("inbox/a/1.xml"),
            )
            .await
            .unwrap();
    }
    let before = counts(&admin, Queue::Intake).await;
    assert_eq!(before.pending, 26, "{before:?}");
    assert_eq!(counts(&admin, Queue::Route).await.pending, 0);
    let job = admin.job(&ids[3]).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Pending);
    assert_eq!(
        job.max_attempts,
        store.configs().get(Queue::Intake).max_attempts
    );
    assert_eq!(job.args["n"], 3);

    let seen = Seen::default();
    let admin2 = admin.clone();
    run_worker_until!(
        store,
        Queue::Intake,
        record,
        seen.clone(),
        Duration::from_secs(30),
        "26 jobs done",
        || {
            let admin = admin2.clone();
            async move { counts(&admin, Queue::Intake).await.done == 26 }
        }
    );

    let after = counts(&admin, Queue::Intake).await;
    assert_eq!(
        after,
        QueueCounts {
            queue: Queue::Intake,
            pending: 0,
            running: 0,
            failed: 0,
            dead: 0,
            killed: 0,
            done: 26,
            oldest_pending_secs: 0
        }
    );
    let mut runs: Vec<u32> = seen.0.lock().unwrap().iter().map(|(n, _, _)| *n).collect();
    runs.sort();
    let mut expected: Vec<u32> = (0..25).collect();
    expected.push(100);
    assert_eq!(runs, expected, "each job ran exactly once");
    let job = admin.job(&ids[3]).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Done);
    assert_eq!(job.attempts, 1);
    assert!(job.worker.unwrap().starts_with("intake-"));
}

/// A job that always fails runs `max_attempts` times, waiting its backoff (kept in the
/// database) between attempts, then is dead; an operator's retry gives it its attempts
/// back and it runs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_job_is_retried_up_to_max_attempts_then_dead_and_an_operator_can_retry_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut configs = configs();
    let notify = JobConfig {
        max_attempts: 3,
        backoff: amtsbote::queue::Backoff {
            initial_secs: 2.0,
            max_secs: 2.0,
            factor: 1.0,
            jitter: 0.0,
        },
        ..configs.get(Queue::Notify).clone()
    };
    configs.set(Queue::Notify, notify);
    let store = open_store(dir.path(), configs).await;
    let admin = store.admin();
    let id = store.push(Queue::Notify, Ping { n: 7 }).await.unwrap();
    let other = store.push(Queue::Notify, Ping { n: 8 }).await.unwrap();

    let seen = Seen::default();
    let admin2 = admin.clone();
    run_worker_until!(
        store,
        Queue::Notify,
        always_fail,
        seen.clone(),
        Duration::from_secs(40),
        "both jobs dead",
        || {
            let admin = admin2.clone();
            async move { counts(&admin, Queue::Notify).await.dead == 2 }
        }
    );

    let attempts: Vec<(Instant, usize)> = seen
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|(n, _, _)| *n == 7)
        .map(|(_, t, a)| (*t, *a))
        .collect();
    assert_eq!(
        attempts.iter().map(|(_, a)| *a).collect::<Vec<_>>(),
        vec![1, 2, 3],
        "three attempts, counted"
    );
    for pair in attempts.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        // run_at is kept in whole seconds: now + 2 s, rounded down to the second.
        assert!(
            gap >= Duration::from_millis(950),
            "backoff between attempts, got {gap:?}"
        );
    }

    let c = counts(&admin, Queue::Notify).await;
    assert_eq!(
        (c.dead, c.failed, c.pending, c.running, c.done),
        (2, 0, 0, 0, 0),
        "{c:?}"
    );
    let failed = admin.list_failed(Some(Queue::Notify), 10).await.unwrap();
    assert_eq!(failed.len(), 2);
    let job = failed.iter().find(|j| j.id == id).unwrap();
    assert_eq!(job.state, JobState::Dead);
    assert_eq!((job.attempts, job.max_attempts), (3, 3));
    assert_eq!(
        job.last_error.as_deref(),
        Some("XTA endpoint refused job 7")
    );
    assert_eq!(
        admin.list_failed(None, 10).await.unwrap().len(),
        2,
        "across all queues"
    );
    assert!(
        admin
            .list_failed(Some(Queue::Transmit), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        admin
            .list_jobs(None, &[JobState::Dead], 1)
            .await
            .unwrap()
            .len(),
        1,
        "limit"
    );

    // The operator retries one and discards the other.
    let retried = admin.retry(&id).await.unwrap();
    assert_eq!((retried.state, retried.attempts), (JobState::Pending, 0));
    let discarded = admin.discard(&other).await.unwrap();
    assert_eq!(discarded.state, JobState::Killed);
    assert_eq!(
        discarded.last_error.as_deref(),
        Some("discarded by an operator")
    );
    let c = counts(&admin, Queue::Notify).await;
    assert_eq!((c.pending, c.dead, c.killed), (1, 0, 1), "{c:?}");

    let seen = Seen::default();
    let admin2 = admin.clone();
    let id2 = id.clone();
    run_worker_until!(
        store,
        Queue::Notify,
        record,
        seen.clone(),
        Duration::from_secs(30),
        "the retried job done",
        || {
            let (admin, id) = (admin2.clone(), id2.clone());
            async move { admin.job(&id).await.unwrap().unwrap().state == JobState::Done }
        }
    );
    let runs: Vec<u32> = seen.0.lock().unwrap().iter().map(|(n, _, _)| *n).collect();
    assert_eq!(
        runs,
        vec![7],
        "the retried job ran once; the discarded one did not run"
    );
    assert_eq!(
        admin.job(&other).await.unwrap().unwrap().state,
        JobState::Killed
    );
}

#[tokio::test]
async fn retry_and_discard_refuse_what_they_cannot_do() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), configs()).await;
    let admin = store.admin();
    let id = store.push(Queue::Reconcile, Ping { n: 1 }).await.unwrap();

    // Pending: retry makes it due now, discard kills it, a second discard changes nothing.
    let later = store
        .push_task(
            Queue::Reconcile,
            TaskBuilder::new(Ping { n: 2 }).run_after(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    let job = admin.job(&later).await.unwrap().unwrap();
    assert!(job.run_at.unwrap() > chrono::Utc::now() + chrono::Duration::minutes(30));
    let job = admin.retry(&later).await.unwrap();
    assert!(job.run_at.unwrap() <= chrono::Utc::now());
    assert_eq!(admin.discard(&id).await.unwrap().state, JobState::Killed);
    assert_eq!(admin.discard(&id).await.unwrap().state, JobState::Killed);

    assert!(matches!(
        admin.retry("01JDNOSUCHJOB0000000000000").await,
        Err(QueueError::JobNotFound(_))
    ));
    assert!(matches!(
        admin.discard("nope").await,
        Err(QueueError::JobNotFound(_))
    ));

    // Running and done jobs are left alone.
    sqlx::query("UPDATE Jobs SET status = 'Running' WHERE id = ?1")
        .bind(&later)
        .execute(store.pool())
        .await
        .unwrap();
    let err = admin.discard(&later).await.unwrap_err();
    assert!(
        matches!(
            err,
            QueueError::InvalidState {
                state: JobState::Running,
                action: "discard",
                ..
            }
        ),
        "{err}"
    );
    assert!(matches!(
        admin.retry(&later).await,
        Err(QueueError::InvalidState { .. })
    ));
    sqlx::query("UPDATE Jobs SET status = 'Done' WHERE id = ?1")
        .bind(&later)
        .execute(store.pool())
        .await
        .unwrap();
    let err = admin.retry(&later).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("job {later} is done: cannot retry it")
    );
}

#[tokio::test]
async fn purge_deletes_finished_jobs_older_than_the_cutoff_and_keeps_everything_else() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), configs()).await;
    let admin = store.admin();
    let pool = store.pool();
    let now = chrono::Utc::now().timestamp();
    let (old, recent) = (now - 10 * 24 * 3600, now - 60);

    // 4,500 old done jobs: more than one purge chunk.
    let tasks: Vec<apalis_sqlite::SqliteTask> = (0..4_500)
        .map(|n| {
            TaskBuilder::new(serde_json::to_vec(&Ping { n }).unwrap())
                .task_id(TaskId::from_ulid(ulid::Ulid::generate()))
                .build()
        })
        .collect();
    let mut tx = pool.begin().await.unwrap();
    apalis_sqlite::queries::push_tasks(&mut *tx, Queue::Reconcile.name(), &tasks)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    sqlx::query("UPDATE Jobs SET status = 'Done', done_at = ?1")
        .bind(old)
        .execute(pool)
        .await
        .unwrap();

    // One job in each other situation; (status, attempts, done_at, purged?).
    let cases = [
        ("Done", 1, Some(recent), false),   // done, but recently
        ("Killed", 1, Some(old), true),     // discarded long ago
        ("Killed", 1, Some(recent), false), // discarded recently
        ("Failed", 25, Some(old), false),   // dead: waits for an operator, however old
        ("Failed", 2, None, false),         // failed, attempts left
        ("Pending", 0, None, false),
        ("Running", 1, None, false),
    ];
    let mut ids = Vec::new();
    for (status, attempts, done_at, purged) in cases {
        let id = store.push(Queue::Transmit, Ping { n: 0 }).await.unwrap();
        sqlx::query("UPDATE Jobs SET status = ?2, attempts = ?3, max_attempts = 25, done_at = ?4 WHERE id = ?1")
            .bind(&id)
            .bind(status)
            .bind(attempts)
            .bind(done_at)
            .execute(pool)
            .await
            .unwrap();
        ids.push((id, status, purged));
    }

    let cutoff = chrono::Utc::now() - chrono::Duration::hours(1);
    assert_eq!(admin.purge_finished(cutoff).await.unwrap(), 4_500 + 1);
    for (id, status, purged) in &ids {
        let found = admin.job(id).await.unwrap().is_some();
        assert_eq!(found, !purged, "{status} job {id}: purged = {purged}");
    }
    assert_eq!(counts(&admin, Queue::Reconcile).await.done, 0);
    // Nothing left to purge: a second run deletes nothing.
    assert_eq!(admin.purge_finished(cutoff).await.unwrap(), 0);

    // What `serve` runs: a purge at once, then hourly, until told to stop.
    let id = store.push(Queue::Reconcile, Ping { n: 1 }).await.unwrap();
    sqlx::query("UPDATE Jobs SET status = 'Done', done_at = ?2 WHERE id = ?1")
        .bind(&id)
        .bind(old)
        .execute(pool)
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let purging = tokio::spawn(purge_every_hour(
        admin.clone(),
        Duration::from_secs(3600),
        stopped,
    ));
    wait_for(
        Duration::from_secs(10),
        "the hourly purge's first run",
        || {
            let admin = admin.clone();
            let id = id.clone();
            async move { admin.job(&id).await.unwrap().is_none() }
        },
    )
    .await;
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), purging)
        .await
        .expect("the purge stops when told")
        .unwrap();
}

#[tokio::test]
async fn the_queue_database_is_opened_with_our_connection_options() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), configs()).await;
    let mut conn = store.pool().acquire().await.unwrap();
    let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(journal, "wal");
    assert_eq!(synchronous, 1, "NORMAL, not OFF");
    assert!(busy >= 1000, "busy_timeout {busy}");
    // Migrating again is a no-op.
    drop(conn);
    migrate(store.pool()).await.unwrap();
}

// ---------------------------------------------------------------------------------------
// Worker names

const CHILD_ENV: &str = "AMTSBOTE_TEST_PRINT_WORKER_NAME";

/// Not a test of its own: run as a child process by the test below, it prints the name
/// a worker would get in that process.
#[test]
fn print_worker_name_in_child_process() {
    if std::env::var_os(CHILD_ENV).is_some() {
        println!("WORKER_NAME={}", worker_name(Queue::Transmit));
    }
}

fn worker_name_of_a_new_process() -> (String, u32) {
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "print_worker_name_in_child_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    let name = stdout
        .split_whitespace()
        .find_map(|word| word.strip_prefix("WORKER_NAME="))
        .unwrap_or_else(|| panic!("child printed no name: {stdout}"))
        .to_owned();
    (name, pid)
}

#[test]
fn two_worker_processes_get_different_worker_names() {
    let (first, first_pid) = worker_name_of_a_new_process();
    let (second, second_pid) = worker_name_of_a_new_process();
    assert_ne!(first, second);
    for (name, pid) in [(&first, first_pid), (&second, second_pid)] {
        assert!(name.starts_with("transmit-"), "{name}");
        assert!(
            name.contains(&format!("-{pid}-")),
            "{name} carries the pid {pid}"
        );
    }
    // Within one process, too: a restarted worker never reuses a name.
    assert_ne!(worker_name(Queue::Transmit), worker_name(Queue::Transmit));
}

/// Why names must be unique: apalis-sqlite refuses a worker whose name was alive within
/// the heartbeat interval.
#[tokio::test]
async fn a_reused_worker_name_is_refused_by_apalis_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), configs()).await;
    let name = worker_name(Queue::Route);
    sqlx::query(
        "INSERT INTO Workers (id, worker_type, storage_name, layers, last_seen, started_at) \
         VALUES (?1, 'route', 'SqliteStorage', '', strftime('%s', 'now'), strftime('%s', 'now'))",
    )
    .bind(&name)
    .execute(store.pool())
    .await
    .unwrap();
    async fn noop(_: Ping) -> Result<(), BoxDynError> {
        Ok(())
    }
    let worker = WorkerBuilder::new(name)
        .backend(store.backend::<Ping>(Queue::Route))
        .build(noop);
    let result = tokio::time::timeout(Duration::from_secs(10), worker.run())
        .await
        .expect("returns");
    let err = result.expect_err("the second worker of that name is refused");
    assert!(err.to_string().contains("WORKER_ALREADY_EXISTS"), "{err}");
}

// ---------------------------------------------------------------------------------------
// Query plans of apalis-sqlite's own statements

/// A backlog like a busy day's: 5,000 jobs pending, 5,000 done by one worker (whose name
/// the ack statement filters on), a few running. Written with plain SQL; the planner
/// does not look at the rows (there are no statistics), but the plans are those the
/// library's statements get on a table of this shape.
async fn fill_backlog(pool: &SqlitePool) {
    sqlx::query(
        "INSERT INTO Workers (id, worker_type, storage_name, layers, last_seen, started_at) \
         VALUES ('transmit-host-1-00000000', 'transmit', 'SqliteStorage', '', 0, 0)",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 10050) \
         INSERT INTO Jobs (job, id, job_type, status, attempts, max_attempts, run_at, lock_by, done_at, priority, metadata) \
         SELECT CAST('{}' AS BLOB), printf('01JD%022d', i), 'transmit', \
                CASE WHEN i <= 5000 THEN 'Done' WHEN i <= 5050 THEN 'Running' ELSE 'Pending' END, \
                CASE WHEN i <= 5050 THEN 1 ELSE 0 END, 8, 1000 + i, \
                CASE WHEN i <= 5050 THEN 'transmit-host-1-00000000' END, \
                CASE WHEN i <= 5000 THEN 2000 + i END, 0, '{}' \
         FROM c",
    )
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn lock_and_ack_find_jobs_by_primary_key_after_our_migration() {
    let dir = tempfile::tempdir().unwrap();
    let pool = open_queue_pool(&dir.path().join("queue.sqlite"))
        .await
        .unwrap();
    run_library_migrations(&pool).await.unwrap();
    fill_backlog(&pool).await;

    let lock = library_sql("task/lock.sql");
    let ack = library_sql("task/ack.sql");

    // Before: the library's indexes mislead the planner.
    let lock_before = explain_query_plan(&pool, &lock).await.unwrap();
    let ack_before = explain_query_plan(&pool, &ack).await.unwrap();
    println!("lock, library indexes:\n{lock_before}\nack, library indexes:\n{ack_before}");
    assert!(
        lock_before.uses_index("Jobs", "idx_jobs_status_run_at"),
        "{lock_before}"
    );
    assert!(!lock_before.reads_only_by_key("Jobs"), "{lock_before}");
    assert!(ack_before.uses_index("Jobs", "LIdx"), "{ack_before}");
    let orphaned_before = explain_query_plan(&pool, &library_sql("backend/reenqueue_orphaned.sql"))
        .await
        .unwrap();
    println!("reenqueue_orphaned, library indexes:\n{orphaned_before}");
    assert!(!ack_before.reads_only_by_key("Jobs"), "{ack_before}");

    run_index_fix(&pool).await.unwrap();

    let lock_after = explain_query_plan(&pool, &lock).await.unwrap();
    let ack_after = explain_query_plan(&pool, &ack).await.unwrap();
    println!("lock, after our migration:\n{lock_after}\nack, after our migration:\n{ack_after}");
    for (name, plan) in [("lock", &lock_after), ("ack", &ack_after)] {
        assert!(
            plan.reads_only_by_key("Jobs"),
            "{name} reads Jobs by primary key only:\n{plan}"
        );
        assert!(!plan.scans("Jobs"), "{name} scans no Jobs:\n{plan}");
    }

    // The statements that used the dropped indexes, or could now pick a worse one.
    type Check<'a> = (&'a str, &'a dyn Fn(&QueryPlan) -> bool);
    let checks: &[Check] = &[
        // Every heartbeat: in-flight jobs of dead workers, through the partial index.
        ("backend/reenqueue_orphaned.sql", &|p| {
            p.uses_index("Jobs", "amtsbote_jobs_inflight_lock_by") && !p.scans("Jobs")
        }),
        // On shutdown: this worker's queued jobs, by id or through the same partial index.
        ("backend/reenqueue_abandoned.sql", &|p| {
            !p.scans("Jobs")
                && p.accesses("Jobs").all(|d| {
                    d.contains("sqlite_autoindex_Jobs_1 (id=?)")
                        || d.contains("amtsbote_jobs_inflight_lock_by")
                })
        }),
        ("backend/fetch_completed_tasks.sql", &|p| {
            p.reads_only_by_key("Jobs")
        }),
        ("backend/fetch_next.sql", &|p| {
            p.uses_index("Jobs", "idx_jobs_pending")
                && p.uses_index("Jobs", "idx_jobs_failed")
                && !p.scans("Jobs")
        }),
        ("backend/stats.sql", &|p| {
            p.uses_index("Jobs", "idx_jobs_job_type_status_run_at") && !p.scans("Jobs")
        }),
        ("backend/list_jobs.sql", &|p| {
            p.uses_index("Jobs", "idx_jobs_job_type_status_run_at") && !p.scans("Jobs")
        }),
        ("task/kill.sql", &|p| p.reads_only_by_key("Jobs")),
        ("task/find_by_id.sql", &|p| p.reads_only_by_key("Jobs")),
    ];
    for (file, ok) in checks {
        let plan = explain_query_plan(&pool, &library_sql(file)).await.unwrap();
        println!("{file}:\n{plan}");
        assert!(ok(&plan), "{file}:\n{plan}");
    }
    // Known and accepted: the library's all-queue listing (status = ?, no queue) now scans
    // Jobs; nothing in amtsbote calls it (QueueAdmin names the queues).
    let all = explain_query_plan(&pool, &library_sql("backend/list_all_jobs.sql"))
        .await
        .unwrap();
    println!("backend/list_all_jobs.sql (not used by amtsbote):\n{all}");

    // And the rows are where they were.
    let n: i64 = sqlx::query("SELECT COUNT(*) FROM Jobs")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 10050);
}

// ---------------------------------------------------------------------------------------
// Schedules

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PrintBatch {
    tick: u64,
}

/// A scheduled queue: a cron worker (apalis-cron, in the schedule's time zone) pushes one
/// job per tick with an idempotency key; with two processes' cron workers both firing,
/// each tick still makes one job.
async fn push_print_batch(
    tick: apalis_cron::Tick<chrono_tz::Tz>,
    store: Data<QueueStore>,
) -> Result<(), BoxDynError> {
    let at = tick.get_timestamp();
    store
        .push_task(
            Queue::Print,
            TaskBuilder::new(PrintBatch { tick: at }).idempotency_key(format!("print:{at}")),
        )
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_schedule_pushes_one_job_per_tick_however_many_schedulers_fire() {
    let dir = tempfile::tempdir().unwrap();
    let mut configs = configs();
    let every_second = Queue::Print
        .default_config()
        .replace("0 0 22 * * *", "* * * * * *");
    configs.set(Queue::Print, JobConfig::parse(&every_second).unwrap());
    let store = open_store(dir.path(), configs).await;
    let schedule = store.configs().get(Queue::Print).schedule.clone().unwrap();
    assert_eq!(schedule.timezone(), chrono_tz::Europe::Berlin);

    let mut stops = Vec::new();
    let mut running = Vec::new();
    for _ in 0..2 {
        let worker = WorkerBuilder::new(worker_name(Queue::Print))
            .backend(schedule.scheduler())
            .data(store.clone())
            .build(push_print_batch);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        stops.push(stop);
        running.push(tokio::spawn(worker.run_until(async move {
            let _ = stopped.await;
            Ok::<(), WorkerError>(())
        })));
    }
    let admin = store.admin();
    wait_for(Duration::from_secs(10), "three ticks", || {
        let admin = admin.clone();
        async move { counts(&admin, Queue::Print).await.pending >= 3 }
    })
    .await;
    for stop in stops {
        let _ = stop.send(());
    }
    for worker in running {
        let _ = tokio::time::timeout(Duration::from_secs(5), worker).await;
    }
    let jobs = admin
        .list_jobs(Some(Queue::Print), &[JobState::Pending], 100)
        .await
        .unwrap();
    let mut ticks: Vec<u64> = jobs
        .iter()
        .map(|j| j.args["tick"].as_u64().unwrap())
        .collect();
    ticks.sort();
    let before = ticks.len();
    ticks.dedup();
    assert_eq!(before, ticks.len(), "one job per tick: {ticks:?}");
    assert!(ticks.windows(2).all(|w| w[1] > w[0]));
}
