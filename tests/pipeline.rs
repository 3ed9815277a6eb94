//! The pipeline on the job queues, with the real binary and real databases: `serve`
//! SIGKILLed three times while it takes in and routes 2,000 requests (SQLite; 600 on
//! PostgreSQL), a crash injected between the state change and the push, a job delivered
//! twice, oldest first under a steady inflow, two `serve` processes on one PostgreSQL ledger,
//! and a stage that fails, is reported by `/healthz` and started again.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amtsbote::directory::{Directory, SharedDirectory};
use amtsbote::intake::{Intake, Outcome};
use amtsbote::ledger::{self, Ledger, ListFilter, RequestId, RequestState};
use amtsbote::queue::metrics::StageMetrics;
use amtsbote::queue::relay::run_relay;
use amtsbote::queue::stage::run_worker;
use amtsbote::queue::{JobConfig, Queue, QueueStore, StageJob, load_job_configs};
use amtsbote::route::{RouteStage, Router};
use amtsbote::xamtshilfe::Checker;

#[path = "support/postgres.rs"]
mod postgres_support;
use postgres_support::TestDatabase;
#[path = "support/serve.rs"]
mod serve_support;
use serve_support::*;

/// Every request in the ledger, each with how many `routed` events its journal holds.
async fn routed_events(ledger: &dyn Ledger, total: usize) -> Vec<(RequestId, RequestState, usize)> {
    let mut all = Vec::new();
    let mut offset = 0;
    loop {
        let page = ledger.list(&ListFilter::default().limit(1000).offset(offset)).await.unwrap();
        if page.is_empty() {
            break;
        }
        offset += page.len() as u64;
        all.extend(page);
    }
    assert_eq!(all.len(), total, "one request per file");
    let mut out = Vec::new();
    for r in all {
        let n = ledger.journal(r.id).await.unwrap().iter().filter(|e| e.to == RequestState::Routed).count();
        out.push((r.id, r.state, n));
    }
    out
}

// ---------------------------------------------------------------------------------------
// Crashes

/// Drops `total` requests into a `serve` on `ledger_url`, SIGKILLs it `kills` times while
/// it routes, restarts it, and checks that every request was routed exactly once, no job is
/// left behind, the outbox is empty and the sweeper found nothing to do.
async fn killed_while_routing(root: &Path, ledger_url: &str, total: u32, kills: u32) {
    let serve = Serve::new(root, ledger_url);
    drop_requests(root, &root.join("inbox/demo"), 0, total);
    let mut child = serve.start_and_wait().await;
    let ledger = ledger::open(ledger_url).await.unwrap();
    let step = u64::from(total / (kills + 2));
    for round in 1..=u64::from(kills) {
        wait_for(Duration::from_secs(120), "some more requests routed", || async { past_routing(&*ledger).await >= step * round }).await;
        child.kill().unwrap(); // SIGKILL, in the middle of routing
        child.wait().unwrap();
        eprintln!("kill {round}: {} of {total} routed", past_routing(&*ledger).await);
        child = serve.start_and_wait().await;
    }
    // Routed, then sent to the built-in XTA simulator of whichever serve runs, and delivered.
    wait_for(Duration::from_secs(240), "every request routed, transmitted and delivered", || async { count(&*ledger, RequestState::Delivered).await == u64::from(total) }).await;
    // No job left behind: the route queue holds exactly one finished job per request.
    let queues = QueueStore::open(&root.join("queue.sqlite"), load_job_configs(None).unwrap()).await.unwrap();
    wait_for(Duration::from_secs(60), "the route queue to settle", || async {
        let c = queues.admin().queue_counts(Queue::Route).await.unwrap();
        c.pending + c.running == 0
    })
    .await;
    let c = queues.admin().queue_counts(Queue::Route).await.unwrap();
    assert_eq!((c.failed, c.dead, c.killed, c.done), (0, 0, 0, u64::from(total)), "{c:?}");
    assert_eq!(ledger.outbox_len().await.unwrap(), 0, "every trigger pushed");
    // After the last, clean run: the sweeper found nothing lost.
    let sweep = ledger_sweep(&*ledger, &queues).await;
    assert_eq!(sweep, 0, "a request waited without a job");
    let (_, text) = serve.get("/metrics").await.expect("metrics");
    assert_eq!(metric(&text, "amtsbote_sweeper_retriggered_total"), Some(0.0), "{text}");
    child.kill().unwrap();
    child.wait().unwrap();

    for (id, state, routed) in routed_events(&*ledger, total as usize).await {
        assert_eq!((state, routed), (RequestState::Delivered, 1), "request {id}");
    }
}

/// A sweep now, treating every request as old enough: how many it re-triggered.
async fn ledger_sweep(ledger: &dyn Ledger, queues: &QueueStore) -> u64 {
    amtsbote::queue::relay::sweep_once(ledger, queues.jobs().as_ref(), Duration::ZERO, &StageMetrics::default()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_three_times_while_routing_2000_requests_each_is_routed_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("ledger.sqlite").display());
    killed_while_routing(dir.path(), &url, 2000, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_postgres_ledger_killed_while_routing_each_request_is_routed_exactly_once() {
    let Some(database) = TestDatabase::create().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let (root, url) = (dir.path().to_path_buf(), database.url.clone());
    let outcome = tokio::spawn(async move { killed_while_routing(&root, &url, 600, 2).await }).await;
    database.drop().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// The process dies right after the state change (and its trigger) was committed, before
/// the relay pushed the trigger; or after the push, before the trigger was deleted. With the
/// sweeper out of the picture, the restarted process still routes every request, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_the_state_change_and_the_push_still_delivers_the_trigger() {
    for point in ["relay-before-push", "relay-after-push"] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let url = format!("sqlite:{}", root.join("ledger.sqlite").display());
        drop_requests(root, &root.join("inbox/demo"), 0, 20);
        // The first process aborts at the crash point.
        let crashing = Serve::new(root, &url).env("AMTSBOTE_TEST_CRASH", point).env("AMTSBOTE_QUEUE_SWEEP_AFTER_SECS", "1000000");
        let mut crashing = crashing.start();
        let status = tokio::task::spawn_blocking(move || crashing.wait().unwrap()).await.unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(6), "{point}: aborted at the crash point ({status:?})");
        let ledger = ledger::open(&url).await.unwrap();
        assert_eq!(past_routing(&*ledger).await, 0, "{point}: nothing routed before the crash");
        assert!(count(&*ledger, RequestState::Validated).await > 0, "{point}");
        assert!(ledger.outbox_len().await.unwrap() > 0, "{point}: the triggers survived the crash in the outbox");

        let serve = Serve::new(root, &url).env("AMTSBOTE_QUEUE_SWEEP_AFTER_SECS", "1000000");
        let mut child = serve.start_and_wait().await;
        wait_for(Duration::from_secs(60), "the requests routed, transmitted and delivered after the restart", || async { count(&*ledger, RequestState::Delivered).await == 20 }).await;
        let (_, text) = serve.get("/metrics").await.expect("metrics");
        assert_eq!(metric(&text, "amtsbote_sweeper_retriggered_total"), Some(0.0), "the outbox delivered, not the sweeper");
        // The last jobs' acknowledgements follow their transitions.
        let queues = QueueStore::open(&root.join("queue.sqlite"), load_job_configs(None).unwrap()).await.unwrap();
        wait_for(Duration::from_secs(60), "the route queue to settle", || async {
            let c = queues.admin().queue_counts(Queue::Route).await.unwrap();
            c.pending + c.running == 0
        })
        .await;
        child.kill().unwrap();
        child.wait().unwrap();
        let c = queues.admin().queue_counts(Queue::Route).await.unwrap();
        assert_eq!(c.done, 20, "{point}: one job per request, a re-pushed trigger deduplicated: {c:?}");
        for (id, state, routed) in routed_events(&*ledger, 20).await {
            assert_eq!((state, routed), (RequestState::Delivered, 1), "{point}: request {id}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// In one process: delivered twice, oldest first

struct Pipeline {
    _dir: tempfile::TempDir,
    ledger: Arc<dyn Ledger>,
    intake: Intake,
    queues: QueueStore,
    router: Router,
}

async fn pipeline(route: Option<JobConfig>) -> Pipeline {
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger::open(&format!("sqlite:{}", dir.path().join("ledger.sqlite").display())).await.unwrap();
    ledger.migrate().await.unwrap();
    let checker = Arc::new(Checker::with_defaults());
    let intake = Intake::new(ledger.clone(), checker.clone());
    let mut configs = load_job_configs(None).unwrap();
    if let Some(route) = route {
        configs.set(Queue::Route, route);
    }
    let queues = QueueStore::open(&dir.path().join("queue.sqlite"), configs).await.unwrap();
    let router = Router { ledger: ledger.clone(), checker, directory: Arc::new(SharedDirectory::new(Directory::sample())) };
    Pipeline { _dir: dir, ledger, intake, queues, router }
}

async fn accept(p: &Pipeline, n: u32) -> RequestId {
    match p.intake.accept("demo", &format!("test:{n}"), None, request(n).into_bytes()).await.unwrap() {
        Outcome::Accepted { id } => id,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_delivered_twice_changes_nothing_the_second_time() {
    let p = pipeline(None).await;
    let id = accept(&p, 1).await;
    let seq = p.ledger.get(id).await.unwrap().unwrap().seq;
    let metrics = Arc::new(StageMetrics::default());
    let (stop, rx) = tokio::sync::watch::channel(false);
    let relay = tokio::spawn(run_relay(p.ledger.clone(), p.queues.jobs(), metrics.clone(), Duration::from_millis(20), rx.clone()));
    // The same job a second and a third time, as a lost acknowledgement would deliver it.
    p.queues.push(Queue::Route, StageJob { request: id.get(), seq }).await.unwrap();
    p.queues.push(Queue::Route, StageJob { request: id.get(), seq }).await.unwrap();
    let worker = tokio::spawn(run_worker(p.queues.clone(), Arc::new(RouteStage { router: p.router.clone() }), metrics.clone(), rx));
    let admin = p.queues.admin();
    wait_for(Duration::from_secs(30), "three route jobs done", || async { admin.queue_counts(Queue::Route).await.unwrap().done == 3 }).await;
    stop.send(true).unwrap();
    worker.await.unwrap().unwrap();
    relay.await.unwrap().unwrap();
    let journal = p.ledger.journal(id).await.unwrap();
    assert_eq!(journal.iter().map(|e| e.to).collect::<Vec<_>>(), vec![RequestState::Validated, RequestState::Routed], "routed once, nothing else changed");
    assert_eq!(metrics.queue(Queue::Route).count(amtsbote::queue::metrics::Outcome::Done), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oldest_requests_are_routed_first_under_a_steady_inflow() {
    // One worker taking five jobs at a time, so the order it routes in is the order the
    // queue hands them out.
    let mut route = load_job_configs(None).unwrap().get(Queue::Route).clone();
    route.concurrency = 1;
    route.batch_size = 5;
    route.poll_interval_ms = 20;
    let p = Arc::new(pipeline(Some(route)).await);
    // A backlog of 60 waits before routing starts.
    let mut backlog = Vec::new();
    for n in 0..60 {
        backlog.push(accept(&p, n).await);
    }
    let metrics = Arc::new(StageMetrics::default());
    let (stop, rx) = tokio::sync::watch::channel(false);
    let relay = tokio::spawn(run_relay(p.ledger.clone(), p.queues.jobs(), metrics.clone(), Duration::from_millis(10), rx.clone()));
    let admin = p.queues.admin();
    wait_for(Duration::from_secs(30), "the backlog's jobs", || async { admin.queue_counts(Queue::Route).await.unwrap().pending == 60 }).await;
    // Then a steady inflow, newer than the backlog, while the worker routes.
    let feeder = {
        let p = p.clone();
        let rx = rx.clone();
        tokio::spawn(async move {
            let mut n = 1000;
            while !*rx.borrow() {
                accept(&p, n).await;
                n += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            n - 1000
        })
    };
    let worker = tokio::spawn(run_worker(p.queues.clone(), Arc::new(RouteStage { router: p.router.clone() }), metrics.clone(), rx));
    wait_for(Duration::from_secs(60), "the backlog routed", || async {
        let mut all = true;
        for id in &backlog {
            all &= p.ledger.get(*id).await.unwrap().unwrap().state == RequestState::Routed;
        }
        all
    })
    .await;
    stop.send(true).unwrap();
    let fed = feeder.await.unwrap();
    worker.await.unwrap().unwrap();
    relay.await.unwrap().unwrap();
    assert!(fed > 0, "the inflow ran");
    // In the order they were routed, the 60 of the backlog come first.
    let mut routed_at = Vec::new();
    for r in p.ledger.list(&ListFilter::default().state(RequestState::Routed).limit(1000)).await.unwrap() {
        let at = p.ledger.journal(r.id).await.unwrap().into_iter().find(|e| e.to == RequestState::Routed).unwrap().at;
        routed_at.push((at, r.id));
    }
    routed_at.sort();
    let first: Vec<RequestId> = routed_at.iter().take(60).map(|(_, id)| *id).collect();
    assert_eq!(first, backlog, "oldest first, in order");
}

// ---------------------------------------------------------------------------------------
// Two processes, one PostgreSQL ledger

/// Two `serve` processes with their own data directories (inboxes and queue databases) on
/// one PostgreSQL ledger. Both relays take from the same outbox, and the sweepers are set to
/// re-trigger after a second, so that each process also pushes jobs for requests whose job
/// waits in the other's queue: many requests get two jobs. Each is routed exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_serve_processes_on_one_postgres_ledger_route_each_request_once() {
    let Some(database) = TestDatabase::create().await else { return };
    let url = database.url.clone();
    let outcome = tokio::spawn(async move {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        // A cluster shares one XTA server: a report is asked for wherever its job runs.
        let sim = amtsbote::xta::sim::SimServer::start("127.0.0.1:0", amtsbote::xta::sim::SimConfig::default()).await.unwrap();
        let serve = |root: &Path| Serve::new(root, &url).env("AMTSBOTE_QUEUE_SWEEP_AFTER_SECS", "1").env("AMTSBOTE_QUEUE_SWEEP_INTERVAL_SECS", "1").env("AMTSBOTE_XTA_URL", &sim.url());
        let (serve_a, serve_b) = (serve(a.path()), serve(b.path()));
        let mut child_a = serve_a.start_and_wait().await;
        let ledger = ledger::open(&url).await.unwrap();
        let mut child_b = serve_b.start_and_wait().await;
        drop_requests(a.path(), &a.path().join("inbox/demo"), 0, 300);
        drop_requests(b.path(), &b.path().join("inbox/demo"), 300, 300);
        wait_for(Duration::from_secs(180), "every request routed, transmitted and delivered", || async { count(&*ledger, RequestState::Delivered).await == 600 }).await;
        // Let the sweepers and the second jobs run their course.
        tokio::time::sleep(Duration::from_secs(3)).await;
        for child in [&mut child_a, &mut child_b] {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        for (id, state, routed) in routed_events(&*ledger, 600).await {
            assert_eq!((state, routed), (RequestState::Delivered, 1), "request {id}");
        }
        let stats = sim.stats().await;
        assert_eq!((stats.delivered, stats.same_content_twice), (600, 0), "{stats:?}");
    })
    .await;
    database.drop().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

// ---------------------------------------------------------------------------------------
// Supervision

/// The inbox watcher cannot create its folders (a file stands where the inbox should be):
/// `/healthz` answers 503 naming the stage, `/metrics` counts its restarts, and once the
/// obstacle is gone the stage runs again, the probe says ok and requests flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_that_fails_is_restarted_and_healthz_says_so_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("inbox")).unwrap();
    std::fs::write(root.join("inbox/demo"), "not a folder").unwrap();
    let url = format!("sqlite:{}", root.join("ledger.sqlite").display());
    let serve = Serve::new(root, &url);
    let mut child = serve.start();

    let start = Instant::now();
    let seen = loop {
        if let Some((503, body)) = serve.get("/healthz").await {
            break body;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "timed out waiting for /healthz to report the intake down");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let health: serde_json::Value = serde_json::from_str(&seen).unwrap();
    assert_eq!(health["down"], serde_json::json!(["intake"]), "{health}");
    assert_eq!(health["stages"]["intake"]["up"], false);
    assert!(health["stages"]["intake"]["last_error"].as_str().unwrap().contains("cannot create inbox folders"), "{health}");
    assert_eq!(health["stages"]["route"]["up"], true, "{health}");
    let (_, text) = serve.get("/metrics").await.unwrap();
    assert_eq!(metric(&text, "amtsbote_stage_up{stage=\"intake\"}"), Some(0.0), "{text}");

    std::fs::remove_file(root.join("inbox/demo")).unwrap();
    wait_for(Duration::from_secs(90), "/healthz ok again", || async { matches!(serve.get("/healthz").await, Some((200, _))) }).await;
    let (_, text) = serve.get("/metrics").await.unwrap();
    assert_eq!(metric(&text, "amtsbote_stage_up{stage=\"intake\"}"), Some(1.0), "{text}");
    assert!(metric(&text, "amtsbote_stage_restarts_total{stage=\"intake\"}").unwrap() >= 1.0, "{text}");

    drop_requests(root, &root.join("inbox/demo"), 0, 3);
    let ledger = ledger::open(&url).await.unwrap();
    wait_for(Duration::from_secs(60), "the requests routed, transmitted and delivered", || async { count(&*ledger, RequestState::Delivered).await == 3 }).await;
    assert_eq!(files_in(&root.join("inbox/demo/done")), 3);

    // What the operator's commands show of it.
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_amtsbote")).args(args).env("AMTSBOTE_DATA_DIR", root).env("AMTSBOTE_LEDGER_URL", &url).env("AMTSBOTE_HTTP_LISTEN", &serve.listen).env_remove("AMTSBOTE_CONFIG").output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let store = QueueStore::open(&root.join("queue.sqlite"), load_job_configs(None).unwrap()).await.unwrap();
    wait_for(Duration::from_secs(60), "the route jobs acknowledged", || async { store.admin().queue_counts(Queue::Route).await.unwrap().done == 3 }).await;
    let queues = cli(&["queues"]);
    let row = |table: &str, after: &str| -> Vec<String> {
        let part = &table[table.find(after).unwrap_or(0)..];
        part.lines().find(|l| l.starts_with("route ")).map(|l| l.split_whitespace().map(str::to_owned).collect()).unwrap_or_default()
    };
    // queue pending running failed dead killed done oldest
    assert_eq!(row(&queues, "queue")[1..7], ["0", "0", "0", "0", "0", "3"], "{queues}");
    // From the serve's /metrics: 3 done, and a lag and a run time.
    let counted = row(&queues, "as counted by the serve");
    assert_eq!(counted.get(1).map(String::as_str), Some("3"), "{queues}");
    assert!(queues.contains("run p50") && queues[queues.find("as counted").unwrap()..].contains("ms"), "{queues}");
    let listed: serde_json::Value = serde_json::from_str(&cli(&["requests", "--json"])).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 3);
    for r in listed {
        assert_eq!(r["state"], "delivered", "{r}");
        assert_eq!(r["routed"]["kennung"], "vbh:053150000001", "{r}");
        assert_eq!(r["routed"]["channel"], "xta", "{r}");
        assert!(r.get("journal").is_none(), "a list without journals: {r}");
    }
    let shown = cli(&["request", "show", &listed[0]["id"].to_string()]);
    assert!(shown.contains("routed to vbh:053150000001") && shown.contains("directory sample"), "{shown}");
    child.kill().unwrap();
    child.wait().unwrap();
}

// ---------------------------------------------------------------------------------------
// Transmission to an outside XTA server

/// `serve` with `xta.url` naming a simulator of its own: the Köln request (its reader takes
/// the service) is sent once and, once its transport report turns green, ends `delivered`
/// with its MessageID stored; the Hamburg request (its reader does not take the service
/// electronically) goes to `awaiting_print`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routed_requests_are_transmitted_once_and_delivered_or_go_by_post_when_the_reader_takes_no_xta() {
    use amtsbote::xta::sim::{ReaderConfig, SimConfig, SimFile, SimServer};
    let config = SimConfig {
        file: SimFile {
            accounts: None,
            readers: vec![
                ReaderConfig { id: "koeln-grundsteuer".into(), available: vec!["*".into()], unknown: vec![], permanent_fault: None, report: Default::default() },
                ReaderConfig { id: "hamburg-kasse".into(), available: vec![], unknown: vec![], permanent_fault: None, report: Default::default() },
            ],
        },
        report_delay: Duration::from_millis(300),
        ..SimConfig::default()
    };
    let sim = SimServer::start("127.0.0.1:0", config).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // Reports asked for again within a second (the shipped waits start at 5 s).
    std::fs::create_dir_all(root.join("jobs")).unwrap();
    std::fs::write(root.join("jobs/report.toml"), quick_backoff(Queue::Report, 0.5)).unwrap();
    let url = format!("sqlite:{}", root.join("ledger.sqlite").display());
    let serve = Serve::new(root, &url).env("AMTSBOTE_XTA_URL", &sim.url());
    let mut child = serve.start_and_wait().await;
    std::fs::create_dir_all(root.join("inbox/demo")).unwrap();
    std::fs::write(root.join("inbox/demo/koeln.xml"), EXAMPLE).unwrap();
    std::fs::write(root.join("inbox/demo/hamburg.xml"), include_str!("../examples/messages/ersuchen-test.xml")).unwrap();
    let ledger = ledger::open(&url).await.unwrap();
    wait_for(Duration::from_secs(60), "one delivered, one awaiting print", || async {
        count(&*ledger, RequestState::Delivered).await == 1 && count(&*ledger, RequestState::AwaitingPrint).await == 1
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();

    let all = ledger.list(&ListFilter::default()).await.unwrap();
    let koeln = all.iter().find(|r| r.state == RequestState::Delivered).unwrap();
    let message_id = koeln.xta_message_id.clone().expect("the MessageID is stored");
    assert!(message_id.starts_with("urn:de:xta:messageid:"), "{message_id}");
    let mut steps: Vec<RequestState> = ledger.journal(koeln.id).await.unwrap().iter().map(|e| e.to).collect();
    // Reports still open were asked for again (transmitted → transmitted): once each state.
    steps.dedup();
    assert_eq!(steps, [RequestState::Validated, RequestState::Routed, RequestState::Transmitting, RequestState::Transmitted, RequestState::Delivered]);
    assert!(koeln.state_detail.as_deref().unwrap_or_default().contains("transport report green"), "{:?}", koeln.state_detail);
    let hamburg = all.iter().find(|r| r.state == RequestState::AwaitingPrint).unwrap();
    assert!(hamburg.state_detail.as_deref().unwrap_or_default().contains("by post"), "{:?}", hamburg.state_detail);
    let stats = sim.stats().await;
    assert_eq!((stats.delivered, stats.same_content_twice), (1, 0), "{stats:?}");
    sim.stop().await.unwrap();
}
