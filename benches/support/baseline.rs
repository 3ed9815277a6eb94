//! The baselines the pipeline benches measure in the same run (included by `#[path]`, beside
//! `common.rs`): the queue engine's rate on no-op work, and the XTA simulator's no-op SOAP
//! round trip. Not every bench uses both.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use amtsbote::ledger::{RequestId, Trigger};
use amtsbote::queue::metrics::StageMetrics;
use amtsbote::queue::relay::RELAY_BATCH;
use amtsbote::queue::stage::{StageError, StageHandler, run_worker};
use amtsbote::queue::{Queue, QueueStore, StageJob, load_job_configs};
use amtsbote::xta::sim::{SimConfig, SimServer};
use amtsbote::xta::{Identifier, XtaClient};

use super::common::{PROGRESS_EVERY, Rate, TICK, config};

/// The simulator as the benches run it: transport reports final at once (report delay 0),
/// nothing else changed.
pub fn sim_config() -> SimConfig {
    SimConfig { report_delay: Duration::ZERO, ..SimConfig::default() }
}

/// The baseline's stage: does nothing.
struct Noop(Arc<AtomicUsize>);

#[async_trait::async_trait]
impl StageHandler for Noop {
    fn queue(&self) -> Queue {
        Queue::Route
    }

    async fn handle(&self, _job: StageJob) -> Result<(), StageError> {
        self.0.fetch_add(1, Relaxed);
        Ok(())
    }
}

/// The queue engine on no-op work: N route jobs in a fresh queue database (pushed as the
/// relay pushes them, [`RELAY_BATCH`] triggers a transaction), drained by
/// [`run_worker`] with a handler that does nothing, under `jobs/route.toml`'s settings.
pub async fn noop_drain(n: usize, budget: Duration) -> Rate {
    let dir = tempfile::tempdir().unwrap();
    let store = QueueStore::open(&dir.path().join("queue.sqlite"), load_job_configs(None).unwrap()).await.unwrap();
    let jobs = store.jobs();
    let now = chrono::Utc::now();
    let triggers: Vec<Trigger> = (0..n)
        .map(|i| Trigger { id: i as i64 + 1, request: RequestId(i as i64 + 1), queue: Queue::Route, seq: 2, created_at: now, not_before: None })
        .collect();
    for chunk in triggers.chunks(RELAY_BATCH as usize) {
        jobs.push_triggers(chunk).await.unwrap();
    }
    let ran = Arc::new(AtomicUsize::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let start = Instant::now();
    let worker = tokio::spawn(run_worker(store.clone(), Arc::new(Noop(ran.clone())), Arc::new(StageMetrics::default()), stop_rx));
    let mut incomplete = None;
    let mut last_report = Instant::now();
    loop {
        let done = ran.load(Relaxed);
        if done >= n {
            break;
        }
        if start.elapsed() >= budget {
            incomplete = Some(format!("budget of {} s spent", budget.as_secs()));
            break;
        }
        if last_report.elapsed() >= PROGRESS_EVERY {
            eprintln!("  … no-op drain of {n}: {done} done");
            last_report = Instant::now();
        }
        tokio::time::sleep(TICK).await;
    }
    let elapsed = start.elapsed();
    let done = ran.load(Relaxed).min(n);
    stop_tx.send(true).unwrap();
    match tokio::time::timeout(Duration::from_secs(60), worker).await {
        Ok(Ok(Ok(()))) => {}
        other => {
            incomplete.get_or_insert(format!("the worker stopped badly: {other:?}"));
        }
    }
    if incomplete.is_none() {
        let counts = store.admin().queue_counts(Queue::Route).await.unwrap();
        if counts.done as usize != n {
            incomplete = Some(format!("{} of {n} jobs done in the queue", counts.done));
        }
    }
    store.pool().close().await;
    Rate::of(done, elapsed, incomplete)
}

/// The simulator's no-op SOAP round trip: N `checkAccountActive` calls as `tenant` through
/// one client built as `serve` builds it, from `callers` concurrent callers, against a fresh
/// simulator.
pub async fn noop_calls(n: usize, callers: usize, tenant: &str, budget: Duration) -> Rate {
    let sim = SimServer::start("127.0.0.1:0", sim_config()).await.expect("the simulator starts");
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &[("AMTSBOTE_XTA_URL", sim.url())]);
    let author = Identifier::xoev(cfg.tenants.iter().find(|t| t.id == tenant).expect("the tenant").kennung.clone());
    let client: XtaClient = amtsbote::serve::xta_client(&cfg.xta, &sim.url(), false).expect("the XTA client");
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + budget;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let (client, author, next, done) = (client.clone(), author.clone(), next.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Relaxed) < n {
                if Instant::now() >= deadline {
                    return Err("budget spent".to_string());
                }
                client.check_account_active(&author).await.map_err(|e| e.to_string())?;
                done.fetch_add(1, Relaxed);
            }
            Ok(())
        }));
    }
    let mut incomplete = None;
    for t in tasks {
        if let Err(e) = t.await.unwrap() {
            incomplete.get_or_insert(e);
        }
    }
    let elapsed = start.elapsed();
    sim.stop().await.unwrap();
    Rate::of(done.load(Relaxed), elapsed, incomplete)
}

/// The simulator baseline's callers: as many as the transmit stage has jobs in flight
/// (`jobs/transmit.toml` concurrency, at most `xta.max_connections`).
pub fn sim_callers() -> usize {
    let transmit = load_job_configs(None).unwrap().get(Queue::Transmit).concurrency;
    transmit.min(amtsbote::config::XtaConfig::default().max_connections as usize).max(1)
}
