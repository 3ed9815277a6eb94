//! Drain rate of the SQLite queue: N no-op jobs pushed into a fresh database file, then
//! drained by real apalis workers (8 workers, batch 100), jobs per second for each N;
//! once with apalis-sqlite's own indexes (the baseline) and once after our migration
//! (migrations/queue-sqlite/), in the same run. Also prints the query plans of the
//! library's lock and ack statements on a backlog, for both.
//!
//! `cargo bench --bench queue_drain`; `QUEUE_BENCH_MAX=10000` leaves out the larger
//! backlogs; a run that has not drained after `QUEUE_BENCH_BUDGET_SECS` (default 120)
//! stops there and reports the rate so far (marked `*`): the baseline at 100,000 would
//! take most of an hour.
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

struct Outcome {
    jobs: usize,
    done: usize,
    elapsed: Duration,
    /// Workers that stopped with an error before the end, and the first error.
    failed_workers: usize,
    first_error: Option<String>,
    /// Of how many runs this is the median.
    runs: usize,
    /// Jobs/s while the backlog went from 90% to 40% of its size: the drain rate at that
    /// backlog, without worker start-up and the tail (a 1,000-job drain is over in
    /// 0.07 s, where start-up and the first claim round of 8 × 100 jobs dominate).
    steady: Option<f64>,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.done as f64 / self.elapsed.as_secs_f64()
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        // A test runner asking for tests (nextest, `cargo test --all-targets`): none here.
        return;
    }
    let measuring = args.iter().any(|a| a == "--bench");
    let max: usize = std::env::var("QUEUE_BENCH_MAX")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let budget = Duration::from_secs(
        std::env::var("QUEUE_BENCH_BUDGET_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(120),
    );
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
        if measuring {
            print_plans().await;
        }
        let mut rows = Vec::new();
        for &n in &sizes {
            // Short drains are noisy (a 1,000-job drain takes a tenth of a second, and
            // others may be compiling on the machine): repeat them, keep the median.
            let repeats = if !measuring || n >= 100_000 {
                1
            } else if n >= 10_000 {
                3
            } else {
                5
            };
            let library = median(Indexes::Library, n, budget, repeats).await;
            let ours = median(Indexes::Ours, n, budget, repeats).await;
            if !measuring {
                assert_eq!(library.done, n, "baseline drained");
                assert_eq!(ours.done, n, "with our migration drained");
                assert_eq!(ours.failed_workers, 0, "{:?}", ours.first_error);
            }
            rows.push((n, library, ours));
        }
        if measuring {
            print_table(&rows, budget);
        } else {
            println!(
                "queue_drain smoke: 2 x {} jobs drained (run with --bench to measure)",
                sizes[0]
            );
        }
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

/// N no-op jobs, written in one transaction (not timed).
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

/// [`drain`] `repeats` times; the run with the median rate (a run that lost workers to
/// an error is reported as such: its error is kept).
async fn median(indexes: Indexes, n: usize, budget: Duration, repeats: usize) -> Outcome {
    let mut runs = Vec::new();
    for _ in 0..repeats {
        runs.push(drain(indexes, n, budget).await);
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

/// Push `n` jobs into a fresh file, start the workers, and time until all `n` are done
/// in the database (or the budget is spent).
async fn drain(indexes: Indexes, n: usize, budget: Duration) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let pool = fresh_database(dir.path(), indexes).await;
    push_jobs(&pool, n).await;
    let store = QueueStore::from_pool(pool.clone(), settings());
    let ran = Arc::new(AtomicUsize::new(0));

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
    let (mut t10, mut t60) = (None, None);
    let done = loop {
        let so_far = ran.load(Ordering::Relaxed);
        if t10.is_none() && so_far >= n / 10 {
            t10 = Some((start.elapsed(), so_far));
        }
        if t60.is_none() && so_far >= n * 6 / 10 {
            t60 = Some((start.elapsed(), so_far));
        }
        if start.elapsed() >= budget {
            break done_in_database(&pool).await;
        }
        if ran.load(Ordering::Relaxed) >= n {
            let done = done_in_database(&pool).await;
            if done >= n {
                break done;
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let elapsed = start.elapsed();
    let steady = match (t10, t60) {
        (Some((a, ja)), Some((b, jb))) if b > a => Some((jb - ja) as f64 / (b - a).as_secs_f64()),
        _ => None,
    };
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
    Outcome {
        jobs: n,
        done,
        elapsed,
        failed_workers,
        first_error,
        runs: 1,
        steady,
    }
}

fn print_table(rows: &[(usize, Outcome, Outcome)], budget: Duration) {
    println!();
    println!(
        "queue_drain: no-op jobs, {} workers, batch {BATCH}, SQLite WAL synchronous=NORMAL, {} cores",
        worker_count(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!(
        "{:>9} | {:>32} | {:>32}",
        "backlog", "library indexes (jobs/s)", "our migration (jobs/s)"
    );
    println!("{:->9}-+-{:->32}-+-{:->32}", "", "", "");
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
    for (n, library, ours) in rows {
        println!("{n:>9} | {:>32} | {:>32}", cell(library), cell(ours));
    }
    let rate = |n: usize, pick: fn(&(usize, Outcome, Outcome)) -> &Outcome| {
        rows.iter().find(|r| r.0 == n).map(|r| pick(r).rate())
    };
    if let (Some(l1), Some(l10), Some(o1), Some(o10)) = (
        rate(1_000, |r| &r.1),
        rate(10_000, |r| &r.1),
        rate(1_000, |r| &r.2),
        rate(10_000, |r| &r.2),
    ) {
        println!("{:->9}-+-{:->32}-+-{:->32}", "", "", "");
        println!(
            "{:>9} | {:>32} | {:>32}",
            "10k / 1k",
            format!("{:.2}", l10 / l1),
            format!("{:.2}", o10 / o1)
        );
        println!(
            "whole drain, with our migration, rate(10k) >= 0.70 x rate(1k): {}",
            if o10 / o1 >= 0.70 { "met" } else { "NOT met" }
        );
    }
    // The same runs, rated while the backlog went from 90% to 40% of its size.
    let steady = |o: &Outcome| o.steady.map_or("-".to_string(), |r| format!("{r:.0}"));
    println!();
    println!("steady drain (jobs/s while the backlog fell from 90% to 40%; same runs):");
    for (n, library, ours) in rows {
        println!("{n:>9} | {:>32} | {:>32}", steady(library), steady(ours));
    }
    let pick = |n: usize, ours: bool| rows.iter().find(|r| r.0 == n).and_then(|r| if ours { r.2.steady } else { r.1.steady });
    if let (Some(l1), Some(l10), Some(o1), Some(o10)) = (pick(1_000, false), pick(10_000, false), pick(1_000, true), pick(10_000, true)) {
        println!("{:>9} | {:>32} | {:>32}", "10k / 1k", format!("{:.2}", l10 / l1), format!("{:.2}", o10 / o1));
        println!(
            "goal: with our migration, steady rate at 10k >= 0.70 x at 1k: {}",
            if o10 / o1 >= 0.70 { "met" } else { "NOT met" }
        );
    }
    for (n, library, ours) in rows {
        for (label, o) in [("library indexes", library), ("our migration", ours)] {
            if o.failed_workers > 0 {
                println!(
                    "{n} jobs, {label}: {} of {} workers stopped with an error: {}",
                    o.failed_workers,
                    worker_count(),
                    o.first_error.as_deref().unwrap_or_default()
                );
            }
        }
    }
    if rows
        .iter()
        .any(|(_, l, o)| l.done < l.jobs || o.done < o.jobs)
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

