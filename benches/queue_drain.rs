//! Drain rate of the SQLite queue as the backlog grows: no-op jobs drained by real apalis
//! workers (8 workers, batch 100) from a fresh database file, once with apalis-sqlite's
//! own indexes (the baseline) and once after our migration (migrations/queue-sqlite/), in
//! the same run. Also prints the query plans of the library's lock and ack statements on
//! a backlog, for both.
//!
//! Two measures for each backlog B (1,000, 10,000, 100,000):
//! * **held backlog** (the goal's measure): B jobs wait, and a feeder tops the queue up as
//!   the workers take jobs, so B jobs keep waiting; after a warm-up of 1,000 jobs the
//!   next `QUEUE_BENCH_MEASURE` (default 10,000) are timed. This is the drain rate *at* a
//!   backlog of B: the same amount of work at every B, none of it start-up.
//! * **whole drain**: B jobs pushed, then timed until all are done. At 1,000 this is
//!   mostly start-up: the 8 workers claim 800 of the 1,000 jobs in their first fetches,
//!   before they contend for the write lock, so it is not a rate at a backlog.
//!
//! `cargo bench --bench queue_drain`; `QUEUE_BENCH_MAX=10000` leaves out the larger
//! backlogs, `QUEUE_BENCH_SIZES=1000,20000` picks others; a run that has not finished
//! after `QUEUE_BENCH_BUDGET_SECS` (default 120) stops there and reports the rate so far
//! (marked `*`): the baseline's whole drain of 100,000 would take most of an hour.
//!
//! Without `--bench` (as a test target) it only checks that both variants drain 200 jobs.

#[path = "../tests/support/library_sql.rs"]
mod library_sql;
use library_sql::library_sql;

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use amtsbote::queue::{
    JobConfigs, Queue, QueueStore, explain_query_plan, open_queue_pool, run_index_fix,
    run_library_migrations, worker_name,
};
use apalis::prelude::*;
use apalis_sqlite::{SqliteTask, queries::push_tasks};
use sqlx::SqlitePool;

/// Workers draining the queue, unless `QUEUE_BENCH_WORKERS` says otherwise. Eight, as in
/// the measurement in docs/ARCHITECTURE.md ("Known traps").
const WORKERS: usize = 8;

fn worker_count() -> usize {
    std::env::var("QUEUE_BENCH_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(WORKERS)
}
const BATCH: usize = 100;
const QUEUE: Queue = Queue::Intake;

#[derive(Clone, Copy, PartialEq)]
enum Indexes {
    Library,
    Ours,
}

/// What a run times (see the module's doc).
#[derive(Clone, Copy, PartialEq)]
enum Measure {
    /// `backlog` jobs keep waiting; `measured` jobs after `WARMUP` are timed.
    Held { measured: usize },
    /// All `backlog` jobs, from the workers' start to the last one done.
    Whole,
}

/// Jobs done before a held-backlog run starts its clock: the workers have started,
/// registered and fetched their first batches.
const WARMUP: usize = 1_000;

/// The feeder tops the queue up with at most this many jobs per transaction.
const FEED_BATCH: usize = 200;

struct Outcome {
    /// Jobs the run meant to time, and how many it timed before the budget ran out.
    jobs: usize,
    done: usize,
    elapsed: Duration,
    /// Workers that stopped with an error before the end, and the first error.
    failed_workers: usize,
    first_error: Option<String>,
    /// Of how many runs this is the median.
    runs: usize,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.done as f64 / self.elapsed.as_secs_f64()
    }
}

/// One backlog size: held and whole-drain outcomes for the library's indexes and ours.
struct Row {
    backlog: usize,
    held: [Outcome; 2],
    whole: [Outcome; 2],
}

fn env_number(name: &str) -> Option<usize> {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        // A test runner asking for tests (nextest, `cargo test --all-targets`): none here.
        return;
    }
    let measuring = args.iter().any(|a| a == "--bench");
    let max = env_number("QUEUE_BENCH_MAX").unwrap_or(100_000);
    let measured = env_number("QUEUE_BENCH_MEASURE").unwrap_or(10_000);
    let budget = Duration::from_secs(env_number("QUEUE_BENCH_BUDGET_SECS").unwrap_or(120) as u64);
    let sizes: Vec<usize> = if measuring {
        let listed = std::env::var("QUEUE_BENCH_SIZES").ok().map(|v| {
            v.split(',')
                .map(|n| {
                    n.trim()
                        .replace('_', "")
                        .parse()
                        .expect("QUEUE_BENCH_SIZES: numbers")
                })
                .collect::<Vec<usize>>()
        });
        listed
            .unwrap_or_else(|| vec![1_000, 10_000, 100_000])
            .into_iter()
            .filter(|n| *n <= max)
            .collect()
    } else {
        vec![200]
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        if !measuring {
            // The smoke test: both variants drain a small backlog, held and whole.
            for indexes in [Indexes::Library, Indexes::Ours] {
                let held = run(indexes, 200, Measure::Held { measured: 200 }, budget).await;
                let whole = run(indexes, 200, Measure::Whole, budget).await;
                for o in [held, whole] {
                    assert_eq!(o.done, o.jobs, "drained");
                    assert_eq!(o.failed_workers, 0, "{:?}", o.first_error);
                }
            }
            println!("queue_drain smoke: 200 jobs drained, held and whole, both index sets (run with --bench to measure)");
            return;
        }
        print_plans().await;
        let mut rows = Vec::new();
        for &n in &sizes {
            // Short runs are noisy (a whole drain of 1,000 jobs takes a tenth of a second,
            // and others may be compiling on the machine): repeat them, keep the median.
            let (held_repeats, whole_repeats) = if n >= 100_000 {
                (1, 1)
            } else if n >= 10_000 {
                (3, 3)
            } else {
                (3, 5)
            };
            let held = Measure::Held { measured };
            rows.push(Row {
                backlog: n,
                held: [
                    median(Indexes::Library, n, held, budget, held_repeats).await,
                    median(Indexes::Ours, n, held, budget, held_repeats).await,
                ],
                whole: [
                    median(Indexes::Library, n, Measure::Whole, budget, whole_repeats).await,
                    median(Indexes::Ours, n, Measure::Whole, budget, whole_repeats).await,
                ],
            });
        }
        print_table(&rows, measured, budget);
    });
}

fn settings() -> JobConfigs {
    let mut configs = JobConfigs::builtin().unwrap();
    let mut cfg = configs.get(QUEUE).clone();
    cfg.batch_size = BATCH;
    cfg.poll_interval_ms = 20;
    configs.set(QUEUE, cfg);
    configs
}

async fn fresh_database(dir: &Path, indexes: Indexes) -> SqlitePool {
    let pool = open_queue_pool(&dir.join("queue.sqlite")).await.unwrap();
    run_library_migrations(&pool).await.unwrap();
    if indexes == Indexes::Ours {
        run_index_fix(&pool).await.unwrap();
    }
    pool
}

/// N no-op jobs, written in one transaction.
async fn push_jobs(pool: &SqlitePool, n: usize) {
    let tasks: Vec<SqliteTask> = (0..n)
        .map(|i| {
            TaskBuilder::new(serde_json::to_vec(&(i as u32)).unwrap())
                .task_id(TaskId::from_ulid(ulid::Ulid::generate()))
                .max_attempts(5)
                .build()
        })
        .collect();
    let mut tx = pool.begin().await.unwrap();
    push_tasks(&mut *tx, QUEUE.name(), &tasks).await.unwrap();
    tx.commit().await.unwrap();
}

async fn done_in_database(pool: &SqlitePool) -> usize {
    let n: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM Jobs WHERE job_type = ?1 AND status = 'Done'")
            .bind(QUEUE.name())
            .fetch_one(pool)
            .await
            .unwrap();
    n as usize
}

async fn noop(_job: u32, ran: Data<Arc<AtomicUsize>>) -> Result<(), BoxDynError> {
    ran.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// [`run`] `repeats` times; the run with the median rate (a run that lost workers to
/// an error is reported as such: its error is kept).
async fn median(
    indexes: Indexes,
    backlog: usize,
    measure: Measure,
    budget: Duration,
    repeats: usize,
) -> Outcome {
    let mut runs = Vec::new();
    for _ in 0..repeats {
        runs.push(run(indexes, backlog, measure, budget).await);
    }
    let failed_workers = runs.iter().map(|r| r.failed_workers).max().unwrap_or(0);
    let first_error = runs.iter().find_map(|r| r.first_error.clone());
    runs.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
    let mut mid = runs.swap_remove(runs.len() / 2);
    mid.runs = repeats;
    mid.failed_workers = failed_workers;
    mid.first_error = first_error;
    mid
}

/// Push `backlog` jobs into a fresh file, start the workers, and time what `measure`
/// says (or until the budget is spent).
async fn run(indexes: Indexes, backlog: usize, measure: Measure, budget: Duration) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let pool = fresh_database(dir.path(), indexes).await;
    push_jobs(&pool, backlog).await;
    let store = QueueStore::from_pool(pool.clone(), settings());
    let ran = Arc::new(AtomicUsize::new(0));

    // Held backlog: keep `backlog` jobs not yet done (waiting, or fetched and not yet
    // run) by pushing as many as the workers have finished.
    let feeding = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let feeder = matches!(measure, Measure::Held { .. }).then(|| {
        let (pool, ran, feeding) = (pool.clone(), ran.clone(), feeding.clone());
        tokio::spawn(async move {
            let mut pushed = backlog;
            while feeding.load(Ordering::Relaxed) {
                let waiting = pushed.saturating_sub(ran.load(Ordering::Relaxed));
                let missing = backlog.saturating_sub(waiting).min(FEED_BATCH);
                if missing == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                push_jobs(&pool, missing).await;
                pushed += missing;
            }
        })
    });

    let start = Instant::now();
    let mut stops = Vec::new();
    let mut workers = Vec::new();
    for _ in 0..worker_count() {
        let worker = WorkerBuilder::new(worker_name(QUEUE))
            .backend(store.backend::<u32>(QUEUE))
            .data(ran.clone())
            .build(noop);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        stops.push(stop);
        workers.push(tokio::spawn(worker.run_until(async move {
            let _ = stopped.await;
            Ok::<(), WorkerError>(())
        })));
    }
    let outcome = match measure {
        Measure::Held { measured } => {
            let (from, to) = (WARMUP.min(backlog / 2), WARMUP.min(backlog / 2) + measured);
            let mut clock: Option<Instant> = None;
            loop {
                let so_far = ran.load(Ordering::Relaxed);
                if clock.is_none() && so_far >= from {
                    clock = Some(Instant::now());
                }
                if so_far >= to || start.elapsed() >= budget {
                    let clock = clock.unwrap_or(start);
                    break (
                        measured,
                        so_far.min(to).saturating_sub(from),
                        clock.elapsed(),
                    );
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        Measure::Whole => loop {
            if start.elapsed() >= budget {
                break (backlog, done_in_database(&pool).await, start.elapsed());
            }
            if ran.load(Ordering::Relaxed) >= backlog {
                let done = done_in_database(&pool).await;
                if done >= backlog {
                    break (backlog, done, start.elapsed());
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        },
    };
    feeding.store(false, Ordering::Relaxed);
    if let Some(feeder) = feeder {
        feeder.await.unwrap();
    }
    for stop in stops {
        let _ = stop.send(());
    }
    let mut failed_workers = 0;
    let mut first_error = None;
    for worker in workers {
        match tokio::time::timeout(Duration::from_secs(60), worker).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => {
                failed_workers += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
            other => {
                failed_workers += 1;
                first_error.get_or_insert_with(|| format!("{other:?}"));
            }
        }
    }
    pool.close().await;
    let (jobs, done, elapsed) = outcome;
    Outcome {
        jobs,
        done,
        elapsed,
        failed_workers,
        first_error,
        runs: 1,
    }
}

/// Which pair of outcomes of a row a table shows.
type Pick = fn(&Row) -> &[Outcome; 2];

fn print_table(rows: &[Row], measured: usize, budget: Duration) {
    println!();
    println!(
        "queue_drain: no-op jobs, {} workers, batch {BATCH}, SQLite WAL synchronous=NORMAL, {} cores",
        worker_count(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    let cell = |o: &Outcome| {
        if o.done < o.jobs {
            format!(
                "{:.0}* ({} of {} in {:.0} s)",
                o.rate(),
                o.done,
                o.jobs,
                o.elapsed.as_secs_f64()
            )
        } else {
            let median = if o.runs > 1 {
                format!(", median of {}", o.runs)
            } else {
                String::new()
            };
            format!("{:.0} ({:.2} s{median})", o.rate(), o.elapsed.as_secs_f64())
        }
    };
    let ratio = |pick: Pick, i: usize| {
        let at = |n: usize| {
            rows.iter()
                .find(|r| r.backlog == n)
                .map(|r| pick(r)[i].rate())
        };
        at(1_000).zip(at(10_000)).map(|(r1, r10)| r10 / r1)
    };
    let tables: [(&str, Pick); 2] = [
        (
            "held backlog: jobs/s while the backlog stays at its size",
            |r| &r.held,
        ),
        (
            "whole drain: jobs/s from the workers' start to the last job (start-up included)",
            |r| &r.whole,
        ),
    ];
    for (title, pick) in tables {
        println!();
        println!("{title}");
        println!(
            "{:>9} | {:>34} | {:>34}",
            "backlog", "library indexes (jobs/s)", "our migration (jobs/s)"
        );
        println!("{:->9}-+-{:->34}-+-{:->34}", "", "", "");
        for row in rows {
            let [library, ours] = pick(row);
            println!(
                "{:>9} | {:>34} | {:>34}",
                row.backlog,
                cell(library),
                cell(ours)
            );
        }
        if let (Some(l), Some(o)) = (ratio(pick, 0), ratio(pick, 1)) {
            println!("{:->9}-+-{:->34}-+-{:->34}", "", "", "");
            println!(
                "{:>9} | {:>34} | {:>34}",
                "10k / 1k",
                format!("{l:.2}"),
                format!("{o:.2}")
            );
        }
    }
    println!();
    println!(
        "(held: {measured} jobs timed after a warm-up of {WARMUP}, the feeder pushing at most {FEED_BATCH} per transaction)"
    );
    if let Some(o) = ratio(|r| &r.held, 1) {
        println!(
            "goal: with our migration, rate at a 10k backlog >= 0.70 x rate at 1k: {:.2}, {}",
            o,
            if o >= 0.70 { "met" } else { "NOT met" }
        );
    }
    for row in rows {
        for (kind, pair) in [("held", &row.held), ("whole", &row.whole)] {
            for (label, o) in [("library indexes", &pair[0]), ("our migration", &pair[1])] {
                if o.failed_workers > 0 {
                    println!(
                        "{} jobs, {kind}, {label}: {} of {} workers stopped with an error: {}",
                        row.backlog,
                        o.failed_workers,
                        worker_count(),
                        o.first_error.as_deref().unwrap_or_default()
                    );
                }
            }
        }
    }
    if rows
        .iter()
        .flat_map(|r| r.held.iter().chain(r.whole.iter()))
        .any(|o| o.done < o.jobs)
    {
        println!(
            "* stopped after the budget of {} s (QUEUE_BENCH_BUDGET_SECS); the rate is of the jobs done by then",
            budget.as_secs()
        );
    }
}

/// The plans of apalis-sqlite's lock and ack statements on a backlog of 10,000 jobs,
/// with the library's indexes and after our migration.
async fn print_plans() {
    let lock = library_sql("task/lock.sql");
    let ack = library_sql("task/ack.sql");
    for indexes in [Indexes::Library, Indexes::Ours] {
        let dir = tempfile::tempdir().unwrap();
        let pool = fresh_database(dir.path(), indexes).await;
        push_jobs(&pool, 10_000).await;
        let label = match indexes {
            Indexes::Library => "library indexes",
            Indexes::Ours => "after our migration",
        };
        println!(
            "lock ({label}):\n{}",
            explain_query_plan(&pool, &lock).await.unwrap()
        );
        println!(
            "ack ({label}):\n{}",
            explain_query_plan(&pool, &ack).await.unwrap()
        );
        pool.close().await;
    }
}
