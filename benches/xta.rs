//! Benchmark: XTA transmission on the embedded default with its durable settings (SQLite
//! ledger, WAL, `synchronous=FULL`; SQLite job queues) against our XTA simulator on
//! loopback: requests/s through the transmit stage (createMessageId, the move to
//! transmitting, lookupService, sendMessage, the move to transmitted: three SOAP calls and
//! two ledger writes a request) and through the report stage (getTransportReport and the
//! move to delivered: one call, one write).
//!
//! Run: `cargo bench --bench xta` (`-- --quick` stops at 10,000 requests, `-- --smoke` runs
//! 200 only). Run as a test (`cargo test --bench xta`, no `--bench` argument) it is the smoke
//! run, checking that every request is delivered once.
//!
//! For each N (1,000, 10,000, 100,000), in a fresh data directory with `xta.url` pointing to
//! a [`SimServer`] this benchmark starts (report delay 0, nothing else changed):
//! - setup (not timed): N requests (the sample request, each with its own
//!   Nachrichten-UUID) taken in by the intake and routed by the router to the sample
//!   directory's XTA authority, so they wait in `routed` with their transmit triggers in the
//!   outbox. The route triggers the intake wrote are taken out of the outbox unpushed (as if
//!   routing had run earlier and finished its jobs): no route job competes with the stages.
//! - transmit: the relay and the transmit worker are started as `serve` starts them
//!   ([`run_relay`], [`run_worker`] with [`TransmitStage`], `jobs/transmit.toml`, the XTA
//!   client of [`amtsbote::serve::xta_client`] with `[xta]`'s defaults). Timed from their
//!   start until the ledger holds N requests `transmitted`; the transmit worker's
//!   in-process counter is read every 5 ms, the ledger only once that counter says N.
//! - report: then the report worker is started (its N jobs were pushed by the relay
//!   meanwhile); timed until N are `delivered`, the same way. The stages run one after the
//!   other so that each one's rate is its own; in `serve` they run at once and share the
//!   client's `xta.max_connections` calls in flight.
//! - checked at the end: the simulator delivered N distinct MessageIDs, none re-sent, and
//!   `same_content_twice` is 0.
//!
//! The baseline, in the same run: the simulator's no-op SOAP round trip. N
//! `checkAccountActive` calls through one client built the same way, from as many
//! concurrent callers as the transmit stage has jobs in flight (`jobs/transmit.toml`
//! concurrency, at most `xta.max_connections`): calls/s. The transmit stage makes three
//! calls a request, so three times its requests/s is set against it.
//!
//! A stage that makes no progress for `XTA_BENCH_STALL_SECS` (default 30) or has not
//! finished after `XTA_BENCH_BUDGET_SECS` (default 300) stops there: its row is marked `*`,
//! and what every stage had counted by then is printed to stderr.

#[path = "support/sizes.rs"]
mod sizes;
#[path = "support/common.rs"]
mod common;
#[path = "support/baseline.rs"]
mod baseline;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use amtsbote::app::App;
use amtsbote::config::Config;
use amtsbote::intake::Outcome as Intaken;
use amtsbote::ledger::{Actor, RequestId, RequestState};
use amtsbote::queue::Queue;
use amtsbote::queue::metrics::Outcome;
use amtsbote::queue::relay::{RELAY_BATCH, run_relay};
use amtsbote::queue::stage::run_worker;
use amtsbote::supervise::Supervisor;
use amtsbote::xta::attempts::AttemptPolicy;
use amtsbote::xta::report::ReportStage;
use amtsbote::xta::sim::{SimServer, Stats};
use amtsbote::xta::transmit::TransmitStage;
use baseline::{noop_calls, sim_config};
use common::{EXAMPLE, PROGRESS_EVERY, Rate, TICK, env_secs, in_state, states};

const TENANT: &str = "demo";

/// Requests taken in and routed at once during the setup (the ledger's group commit).
const SETUP_TASKS: usize = 32;

/// What one run of transmit and report measured.
struct Run {
    setup_s: f64,
    transmit: Rate,
    report: Rate,
    stats: Stats,
    /// TCP connections the simulator accepted (keep-alive: a handful).
    connections: u64,
}

/// The config of a fresh data directory sending to `url`: the defaults otherwise.
fn config(root: &std::path::Path, url: &str) -> Config {
    common::config(root, &[("AMTSBOTE_XTA_URL", url.to_string())])
}

/// The setup's push of the route triggers: none pushed, all taken out of the outbox.
fn discard(_: &[amtsbote::ledger::Trigger]) -> amtsbote::ledger::PushFuture<'_> {
    Box::pin(async { Ok(()) })
}

/// N requests taken in and routed to the sample directory's XTA authority; the route
/// triggers taken out of the outbox unpushed, the transmit triggers left in it.
async fn fill(app: &App, n: usize) {
    let intake = app.intake();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..SETUP_TASKS {
        let (intake, next) = (intake.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            loop {
                let i = next.fetch_add(1, Relaxed);
                if i >= n {
                    return ids;
                }
                let text = common::request("9a51", i);
                let name = format!("ersuchen-{i:06}.xml");
                match intake.accept(TENANT, &format!("bench:{i}"), Some(&name), text.into_bytes()).await.expect("intake") {
                    Intaken::Accepted { id } => ids.push(id),
                    other => panic!("request {i} not accepted: {other:?}"),
                }
            }
        }));
    }
    let mut ids: Vec<RequestId> = Vec::with_capacity(n);
    for t in tasks {
        ids.extend(t.await.unwrap());
    }
    // The route triggers: out of the outbox, unpushed.
    while app.ledger.relay_outbox(RELAY_BATCH, &discard).await.expect("outbox") > 0 {}
    // Routed as the route stage routes them.
    let ids = Arc::new(ids);
    let router = app.router();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..SETUP_TASKS {
        let (router, ids, next) = (router.clone(), ids.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Relaxed);
                let Some(id) = ids.get(i) else { return };
                let to = router.route(*id, RequestState::Validated, &Actor::system("route")).await.expect("route");
                assert_eq!(to, RequestState::Routed, "request {id}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let by_state = app.ledger.count_by_state().await.unwrap();
    assert_eq!(in_state(&by_state, RequestState::Routed), n, "ledger after the setup: {}", states(&by_state));
    assert_eq!(app.ledger.outbox_len().await.unwrap() as usize, n, "one transmit trigger a request in the outbox");
    let sample = app.ledger.get(ids[0]).await.unwrap().unwrap();
    let routed = sample.routed.expect("routed");
    assert_eq!(routed.channel, amtsbote::ledger::Channel::Xta, "the sample request goes to an XTA authority");
}

/// Waits until `queue`'s worker has finished N jobs and the ledger holds N requests in
/// `target`; a stall or the budget stops it early.
async fn until_in_state(app: &App, queue: Queue, target: RequestState, n: usize, budget: Duration, stall: Duration, health: &amtsbote::supervise::Health) -> Rate {
    let metrics = app.metrics.queue(queue);
    let start = Instant::now();
    let mut last_report = Instant::now();
    let (mut last_progress, mut last_change) = (0usize, Instant::now());
    let mut last_ledger_look: Option<Instant> = None;
    let mut in_target = 0usize;
    let mut incomplete = None;
    loop {
        let handled = metrics.count(Outcome::Done) as usize;
        // The ledger only once the counter says all (and then every 100 ms): a scheduled
        // further attempt counts as done in the queue but leaves the request where it was.
        if handled >= n && last_ledger_look.is_none_or(|t| t.elapsed() >= Duration::from_millis(100)) {
            last_ledger_look = Some(Instant::now());
            in_target = in_state(&app.ledger.count_by_state().await.unwrap(), target);
            if in_target >= n {
                break;
            }
        }
        if handled != last_progress {
            last_progress = handled;
            last_change = Instant::now();
        }
        if last_change.elapsed() >= stall {
            incomplete = Some(format!("no {queue} job finished for {} s", stall.as_secs()));
        } else if start.elapsed() >= budget {
            incomplete = Some(format!("budget of {} s spent", budget.as_secs()));
        }
        if let Some(why) = &incomplete {
            eprintln!("  ! {n} requests, {queue}: stopped: {why}, {handled} jobs done");
            diagnose(app, health).await;
            break;
        }
        if last_report.elapsed() >= PROGRESS_EVERY {
            eprintln!("  … {n} requests, {queue}, {:.0} s: {handled} jobs done, {} relayed", start.elapsed().as_secs_f64(), app.metrics.relayed.load(Relaxed));
            last_report = Instant::now();
        }
        tokio::time::sleep(TICK).await;
    }
    let elapsed = start.elapsed();
    if incomplete.is_some() {
        in_target = in_state(&app.ledger.count_by_state().await.unwrap(), target);
    }
    Rate::of(in_target.min(n), elapsed, incomplete)
}

/// What every stage had counted: printed when a stage stalls.
async fn diagnose(app: &App, health: &amtsbote::supervise::Health) {
    eprintln!("    ledger by state: {:?}", app.ledger.count_by_state().await.map(|s| states(&s)));
    eprintln!("    ledger outbox: {:?} triggers waiting; relay pushed {}", app.ledger.outbox_len().await, app.metrics.relayed.load(Relaxed));
    for queue in [Queue::Transmit, Queue::Report] {
        let m = app.metrics.queue(queue);
        eprintln!(
            "    {queue} worker: {}; queue: {:?}",
            Outcome::ALL.iter().map(|o| format!("{} {}", o.name(), m.count(*o))).collect::<Vec<_>>().join(", "),
            app.queues.admin().queue_counts(queue).await
        );
    }
    eprintln!("    stages down: {:?}", health.down());
}

/// N routed requests through transmit, then through report, against a fresh simulator.
async fn transmit_and_report(n: usize, budget: Duration, stall: Duration) -> Run {
    let sim = SimServer::start("127.0.0.1:0", sim_config()).await.expect("the simulator starts");
    let dir = tempfile::tempdir().unwrap();
    let app = App::open(config(dir.path(), &sim.url())).await.expect("App::open");
    let setup = Instant::now();
    fill(&app, n).await;
    let setup_s = setup.elapsed().as_secs_f64();

    // The stages as `serve` starts them (src/serve.rs, start_stages): one client for both.
    let cfg = &app.config;
    let client = amtsbote::serve::xta_client(&cfg.xta, &sim.url(), false).expect("the XTA client");
    let authors: HashMap<String, String> = cfg.tenants.iter().map(|t| (t.id.clone(), t.kennung.clone())).collect();
    let policy = |queue: Queue| {
        let jobs = app.queues.configs().get(queue);
        AttemptPolicy { max_attempts: jobs.max_attempts.max(1), backoff: jobs.backoff.clone() }
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut supervisor = Supervisor::new(stop_rx);
    let health = supervisor.health();
    {
        let (ledger, jobs, metrics) = (app.ledger.clone(), app.queues.jobs(), app.metrics.clone());
        let poll = Duration::from_millis(cfg.queue.relay_poll_ms.max(1));
        supervisor.spawn("relay", move |stop| run_relay(ledger.clone(), jobs.clone(), metrics.clone(), poll, stop));
    }
    {
        let stage = Arc::new(TransmitStage {
            ledger: app.ledger.clone(),
            client: client.clone(),
            authors: authors.clone(),
            attempts: policy(Queue::Transmit),
            unknown_availability_attempts: cfg.xta.unknown_availability_attempts,
            print_when_failed: cfg.xta.print_when_failed,
        });
        let (queues, metrics) = (app.queues.clone(), app.metrics.clone());
        supervisor.spawn("transmit", move |stop| run_worker(queues.clone(), stage.clone(), metrics.clone(), stop));
    }
    let transmit = until_in_state(&app, Queue::Transmit, RequestState::Transmitted, n, budget, stall, &health).await;

    let report = if transmit.incomplete.is_none() {
        let stage = Arc::new(ReportStage { ledger: app.ledger.clone(), client: client.clone(), authors: authors.clone(), attempts: policy(Queue::Report) });
        let (queues, metrics) = (app.queues.clone(), app.metrics.clone());
        supervisor.spawn("report", move |stop| run_worker(queues.clone(), stage.clone(), metrics.clone(), stop));
        until_in_state(&app, Queue::Report, RequestState::Delivered, n, budget, stall, &health).await
    } else {
        Rate { incomplete: Some("not run: transmit did not finish".into()), ..Rate::default() }
    };

    stop_tx.send(true).unwrap();
    supervisor.join(Duration::from_secs(30)).await;
    let stats = sim.stats().await;
    let connections = sim.connections();
    let mut run = Run { setup_s, transmit, report, stats, connections };
    if run.transmit.incomplete.is_none() {
        let s = &run.stats;
        if (s.delivered, s.resends, s.same_content_twice) != (n as u64, 0, 0) {
            run.transmit.incomplete = Some(format!("the simulator delivered {} (expected {n}), {} re-sent, {} with the same content twice", s.delivered, s.resends, s.same_content_twice));
        }
    }
    eprintln!(
        "  ({n} requests: setup {setup_s:.1} s; simulator: {} accepted, {} delivered, {} re-sent, {} same content twice, faults {:?}, {} connections)",
        run.stats.accepted, run.stats.delivered, run.stats.resends, run.stats.same_content_twice, run.stats.faults, run.connections
    );
    sim.stop().await.unwrap();
    drop(app);
    run
}

fn main() {
    // `--list`: a test runner asking for tests (none here). Without `--bench` (`cargo test
    // --bench xta`): the smoke run.
    let Some(sizes::Sizes { smoke, sizes }) = sizes::from_args("XTA_BENCH_SMOKE") else { return };
    let budget = env_secs("XTA_BENCH_BUDGET_SECS", 300);
    let stall = env_secs("XTA_BENCH_STALL_SECS", 30);
    common::init_logging();
    let runtime = common::runtime();
    let jobs = amtsbote::queue::load_job_configs(None).unwrap();
    let (transmit, report) = (jobs.get(Queue::Transmit), jobs.get(Queue::Report));
    let xta = amtsbote::config::XtaConfig::default();
    let callers = baseline::sim_callers();
    println!(
        "amtsbote XTA benchmark — transmit and report on the embedded default: SQLite ledger (WAL, synchronous=FULL), SQLite queues; against the XTA simulator on loopback (plain HTTP, report delay 0) in this process; 2 threads, {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "transmit worker: jobs/transmit.toml (concurrency {}, batch {}, poll {} ms); report worker: jobs/report.toml (concurrency {}, batch {}, poll {} ms); xta.max_connections {} (calls in flight, both stages together)",
        transmit.concurrency, transmit.batch_size, transmit.poll_interval_ms, report.concurrency, report.batch_size, report.poll_interval_ms, xta.max_connections
    );
    println!(
        "each request: the sample request ({} bytes), its own Nachrichten-UUID, recorded and routed before the clock starts; transmit = createMessageId + lookupService + sendMessage (3 calls) and 2 ledger writes; report = getTransportReport (1 call) and 1 write",
        EXAMPLE.len()
    );
    println!("transmit: from the start of relay + transmit worker until N are transmitted; report: then the report worker alone, until N are delivered");
    println!("baseline: the simulator's no-op SOAP round trip: N checkAccountActive calls through one XtaClient from {callers} concurrent callers (the transmit stage's jobs in flight)\n");

    let mut rows = Vec::new();
    for &n in &sizes {
        let run = runtime.block_on(transmit_and_report(n, budget, stall));
        let noop = runtime.block_on(noop_calls(n, callers, TENANT, budget));
        rows.push((n, run, noop));
    }

    let star = |incomplete: &Option<String>| if incomplete.is_some() { "*" } else { " " };
    println!(
        "{:>8} {:>8} | {:>8} {:>14} {:>9} {:>7} | {:>8} {:>13} {:>7} | {:>19} {:>15} {:>14}",
        "requests", "setup s", "seconds", "transmitted/s", "calls/s", "vs 1k", "seconds", "delivered/s", "vs 1k", "no-op calls/s (s)", "transmit/no-op", "report/no-op"
    );
    let base = rows.iter().find(|(n, ..)| *n == 1_000).map(|(_, r, _)| (r.transmit.rate, r.report.rate));
    for (n, r, q) in &rows {
        let (t, p) = (&r.transmit, &r.report);
        let vs = |rate: f64, b: Option<f64>| b.map_or("-".to_string(), |b| format!("{:.0}%", rate / b * 100.0));
        println!(
            "{n:>8} {:>8.1} | {:>8.2} {:>13.0}{} {:>9.0} {:>7} | {:>8.2} {:>12.0}{} {:>7} | {:>18}{} {:>14.0}% {:>13.0}%",
            r.setup_s,
            t.seconds,
            t.rate,
            star(&t.incomplete),
            t.rate * 3.0,
            vs(t.rate, base.map(|b| b.0)),
            p.seconds,
            p.rate,
            star(&p.incomplete),
            vs(p.rate, base.map(|b| b.1)),
            format!("{:.0} ({:.2} s)", q.rate, q.seconds),
            star(&q.incomplete),
            t.rate * 3.0 / q.rate * 100.0,
            p.rate / q.rate * 100.0
        );
    }
    println!("(transmit calls/s = 3 × transmitted/s; transmit/no-op and report/no-op: the stage's SOAP calls/s against the no-op rate)");
    // A smoke run (a debug build, 200 requests) is no measurement: it only checks that every
    // request is delivered once.
    let verdict = |ok: bool| match (ok, smoke) {
        (true, _) => "met",
        (false, true) => "not judged on a smoke run (cargo bench --bench xta judges it)",
        (false, false) => "NOT met",
    };
    println!();
    let big: Vec<_> = rows.iter().filter(|(n, ..)| *n >= 10_000).collect();
    let judged = if big.is_empty() { rows.iter().collect::<Vec<_>>() } else { big };
    let transmit_ok = judged.iter().all(|(_, r, _)| r.transmit.incomplete.is_none() && r.transmit.rate >= 1_000.0);
    println!(
        "goal ≥ 1,000 requests/s transmitted{}: {} ({})",
        if rows.iter().any(|(n, ..)| *n >= 10_000) { " at 10,000 and more" } else { "" },
        verdict(transmit_ok),
        rows.iter().map(|(n, r, _)| format!("{n}: {:.0}/s", r.transmit.rate)).collect::<Vec<_>>().join(", ")
    );
    let sim_ok = judged.iter().all(|(_, _, q)| q.incomplete.is_none() && q.rate >= 10_000.0);
    println!(
        "goal ≥ 10,000 no-op calls/s from the simulator: {} ({})",
        verdict(sim_ok),
        rows.iter().map(|(n, _, q)| format!("{n}: {:.0}/s", q.rate)).collect::<Vec<_>>().join(", ")
    );
    if let Some((bt, br)) = base {
        let more: Vec<_> = rows.iter().filter(|(n, ..)| *n > 1_000).collect();
        if !more.is_empty() {
            println!(
                "against the 1k rate: transmit {}; report {}",
                more.iter().map(|(n, r, _)| format!("{}k/1k {:.0}%", n / 1_000, r.transmit.rate / bt * 100.0)).collect::<Vec<_>>().join(", "),
                more.iter().map(|(n, r, _)| format!("{}k/1k {:.0}%", n / 1_000, r.report.rate / br * 100.0)).collect::<Vec<_>>().join(", ")
            );
        }
    }
    for (n, r, _) in &rows {
        println!(
            "{n}: simulator accepted {}, delivered {}, re-sent {}, same content twice {}, over {} connections",
            r.stats.accepted, r.stats.delivered, r.stats.resends, r.stats.same_content_twice, r.connections
        );
    }
    let mut failed = false;
    for (n, r, q) in &rows {
        for (what, rate) in [("transmit", &r.transmit), ("report", &r.report), ("no-op calls", q)] {
            if let Some(why) = &rate.incomplete {
                println!("* {n}: {what} incomplete ({} of {n}): {why}", rate.done);
                failed = true;
            }
        }
    }
    if smoke {
        assert!(!failed, "the smoke run must transmit and deliver every request once and make every no-op call");
        println!("\nxta smoke: {} requests transmitted and delivered once each, {} no-op calls (run `cargo bench --bench xta` to measure)", sizes[0], sizes[0]);
    }
}
