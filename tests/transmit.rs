//! Transmission over XTA with the real `serve` and our XTA simulator over real sockets: 30 %
//! injected faults of every kind over 1,000 requests, a 60 s outage and the breaker, SIGKILL
//! during transmission, a permanent fault and an availability that stays unknown.
//!
//! The simulator runs in the test process, outside `serve` (its `xta.url`), so it outlives
//! every kill and its statistics tell what reached the other side: `delivered` counts distinct
//! MessageIDs placed in a box, `same_content_twice` a request delivered under a second
//! MessageID — the failure that must never happen.

use std::path::Path;
use std::time::Duration;

use amtsbote::ledger::{self, Ledger, ListFilter, Request, RequestState};
use amtsbote::queue::Queue;
use amtsbote::xta::sim::{FinalReport, InjectedFault, PermanentFault, ReaderConfig, SimConfig, SimFile, SimServer, Stats};

#[path = "support/serve.rs"]
mod serve_support;
use serve_support::*;

/// A `jobs/<queue>.toml` override: the shipped file with `max_attempts` and waits of at most
/// `secs`.
fn jobs_file(queue: Queue, max_attempts: u32, secs: f64) -> String {
    let shipped = quick_backoff(queue, secs);
    let start = shipped.find("max_attempts =").unwrap();
    let end = start + shipped[start..].find('\n').unwrap();
    format!("{}max_attempts = {max_attempts}{}", &shipped[..start], &shipped[end..])
}

/// A data directory whose transmit and report waits are short (the shipped ones are
/// seconds to minutes).
fn quick_jobs(root: &Path, transmit_attempts: u32) {
    std::fs::create_dir_all(root.join("jobs")).unwrap();
    std::fs::write(root.join("jobs/transmit.toml"), jobs_file(Queue::Transmit, transmit_attempts, 0.3)).unwrap();
    std::fs::write(root.join("jobs/report.toml"), jobs_file(Queue::Report, 60, 0.3)).unwrap();
}

/// `serve` sending to `sim`, with a client timeout of 700 ms and a breaker that pauses
/// `open_secs` (doubling up to four times that).
fn serve_for(root: &Path, sim: &SimServer, open_secs: u32) -> Serve {
    let url = format!("sqlite:{}", root.join("ledger.sqlite").display());
    Serve::new(root, &url)
        .env("AMTSBOTE_XTA_URL", &sim.url())
        .env("AMTSBOTE_XTA_RESPONSE_TIMEOUT_MS", "700")
        .env("AMTSBOTE_XTA_BREAKER_OPEN_SECS", &open_secs.to_string())
        .env("AMTSBOTE_XTA_BREAKER_MAX_OPEN_SECS", &(open_secs * 4).to_string())
}

async fn all_requests(ledger: &dyn Ledger) -> Vec<Request> {
    let mut all = Vec::new();
    loop {
        let page = ledger.list(&ListFilter::default().limit(1000).offset(all.len() as u64)).await.unwrap();
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

/// Every request delivered, under one MessageID each, reserved once; the simulator holds
/// exactly one message per request.
async fn each_delivered_once(ledger: &dyn Ledger, stats: &Stats, total: u64) {
    let all = all_requests(ledger).await;
    assert_eq!(all.len() as u64, total, "one request per file");
    let mut ids = std::collections::HashSet::new();
    for r in &all {
        assert_eq!(r.state, RequestState::Delivered, "request {}: {:?}", r.id, r.state_detail);
        assert!(ids.insert(r.xta_message_id.clone().unwrap()), "request {} shares its MessageID", r.id);
        let journal = ledger.journal(r.id).await.unwrap();
        let began = journal.iter().filter(|e| e.to == RequestState::Transmitting && e.from != Some(RequestState::Transmitting)).count();
        assert_eq!(began, 1, "request {}: the transmission began once", r.id);
    }
    assert_eq!((stats.delivered, stats.same_content_twice), (total, 0), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_percent_faults_of_every_kind_over_1000_requests_each_delivered_exactly_once() {
    let config = SimConfig {
        fault_rate: 0.3,
        faults: vec![InjectedFault::Unavailable, InjectedFault::Technical, InjectedFault::Slow, InjectedFault::Drop],
        slow: Duration::from_millis(1500),
        report_delay: Duration::from_millis(200),
        seed: 9,
        ..SimConfig::default()
    };
    let sim = SimServer::start("127.0.0.1:0", config).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // Each attempt makes two calls that fail three times in ten: some requests need many.
    quick_jobs(root, 40);
    let serve = serve_for(root, &sim, 1);
    let mut child = serve.start_and_wait().await;
    let total = 1000;
    drop_requests(root, &root.join("inbox/demo"), 0, total);
    let ledger = ledger::open(&serve.ledger_url).await.unwrap();
    wait_for(Duration::from_secs(600), "every request delivered", || async { count(&*ledger, RequestState::Delivered).await == u64::from(total) }).await;
    child.kill().unwrap();
    child.wait().unwrap();

    let stats = sim.stats().await;
    for kind in ["503", "technical", "slow", "drop"] {
        assert!(stats.faults.get(kind).copied().unwrap_or(0) > 0, "no {kind} fault injected: {stats:?}");
    }
    // Answers lost after the message was taken (drop, slow): sent again under its MessageID.
    assert!(stats.resends > 0, "{stats:?}");
    each_delivered_once(&*ledger, &stats, u64::from(total)).await;
    sim.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_60_s_outage_the_breaker_keeps_the_calls_few_and_afterwards_all_are_delivered() {
    let config = SimConfig { outage_after: Some(Duration::ZERO), outage_for: Duration::from_secs(60), report_delay: Duration::from_millis(200), ..SimConfig::default() };
    let sim = SimServer::start("127.0.0.1:0", config).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    quick_jobs(root, 8);
    // Pauses of 2 s, doubling to 8 s: some ten probes in 60 s.
    let serve = serve_for(root, &sim, 2);
    let mut child = serve.start_and_wait().await;
    let total = 1000;
    drop_requests(root, &root.join("inbox/demo"), 0, total);
    let ledger = ledger::open(&serve.ledger_url).await.unwrap();
    wait_for(Duration::from_secs(300), "every request delivered after the outage", || async { count(&*ledger, RequestState::Delivered).await == u64::from(total) }).await;
    let (_, text) = serve.get("/metrics").await.expect("metrics");
    child.kill().unwrap();
    child.wait().unwrap();

    let stats = sim.stats().await;
    let during = stats.faults.get("outage").copied().unwrap_or(0);
    // Without the breaker every request would call once per backoff step (0.3 s here):
    // tens of thousands of calls. With it: the failures that open it, the calls already in
    // flight (xta.max_connections) and one probe per pause.
    assert!(during >= 5, "the outage was seen: {stats:?}");
    assert!(during <= 60, "{during} calls during the outage: {stats:?}");
    assert!(metric(&text, "amtsbote_xta_breaker_opened_total").unwrap() >= 2.0, "{text}");
    assert!(metric(&text, "amtsbote_xta_breaker_refused_total").unwrap() >= 1.0, "{text}");
    assert_eq!(metric(&text, "amtsbote_xta_breaker_state"), Some(0.0), "closed again: {text}");
    each_delivered_once(&*ledger, &stats, u64::from(total)).await;
    sim.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_killed_twice_while_transmitting_1000_requests_loses_none_and_sends_none_twice() {
    let config = SimConfig { report_delay: Duration::from_millis(200), ..SimConfig::default() };
    let sim = SimServer::start("127.0.0.1:0", config).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    quick_jobs(root, 8);
    let serve = serve_for(root, &sim, 1);
    let total = 1000u64;
    drop_requests(root, &root.join("inbox/demo"), 0, total as u32);
    let mut child = serve.start_and_wait().await;
    let ledger = ledger::open(&serve.ledger_url).await.unwrap();
    for round in 1..=2u64 {
        wait_for(Duration::from_secs(240), "more requests transmitted", || {
            let sim = &sim;
            async move { sim.stats().await.accepted >= total * round / 3 }
        })
        .await;
        child.kill().unwrap(); // SIGKILL, in the middle of transmitting
        child.wait().unwrap();
        eprintln!("kill {round}: {} messages accepted", sim.stats().await.accepted);
        child = serve.start_and_wait().await;
    }
    wait_for(Duration::from_secs(300), "every request delivered", || async { count(&*ledger, RequestState::Delivered).await == total }).await;
    child.kill().unwrap();
    child.wait().unwrap();
    each_delivered_once(&*ledger, &sim.stats().await, total).await;
    sim.stop().await.unwrap();
}

/// One request (routed to Köln by the sample directory) through a `serve` whose simulator
/// treats the Köln reader as `reader`; returns it once it is in `end`.
async fn one_request_with_reader(reader: ReaderConfig) -> (Request, Vec<ledger::Event>, Stats) {
    one_request_ending(reader, RequestState::AwaitingPrint).await
}

async fn one_request_ending(reader: ReaderConfig, end: RequestState) -> (Request, Vec<ledger::Event>, Stats) {
    let config = SimConfig { file: SimFile { accounts: None, readers: vec![reader] }, report_delay: Duration::from_millis(200), ..SimConfig::default() };
    let sim = SimServer::start("127.0.0.1:0", config).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    quick_jobs(root, 8);
    let serve = serve_for(root, &sim, 1);
    let mut child = serve.start_and_wait().await;
    drop_requests(root, &root.join("inbox/demo"), 0, 1);
    let ledger = ledger::open(&serve.ledger_url).await.unwrap();
    wait_for(Duration::from_secs(60), &format!("the request to be {end}"), || async { count(&*ledger, end).await == 1 }).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let stats = sim.stats().await;
    sim.stop().await.unwrap();
    let request = all_requests(&*ledger).await.remove(0);
    let journal = ledger.journal(request.id).await.unwrap();
    (request, journal, stats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_fault_sends_the_request_by_post_without_a_second_try() {
    let reader = ReaderConfig { id: "koeln-grundsteuer".into(), available: vec!["*".into()], unknown: vec![], permanent_fault: Some(PermanentFault::Permission), report: Default::default() };
    let (request, _, stats) = one_request_with_reader(reader).await;
    let detail = request.state_detail.unwrap_or_default();
    assert!(detail.contains("sendMessage refused for good") && detail.contains("by post"), "{detail}");
    assert_eq!(request.attempts, 0);
    assert_eq!((stats.faults.get("permanent").copied(), stats.delivered), (Some(1), 0), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_availability_that_stays_unknown_is_asked_three_times_then_the_request_goes_by_post() {
    let reader = ReaderConfig { id: "koeln-grundsteuer".into(), available: vec![], unknown: vec!["*".into()], permanent_fault: None, report: Default::default() };
    let (request, journal, stats) = one_request_with_reader(reader).await;
    let detail = request.state_detail.clone().unwrap_or_default();
    assert!(detail.contains("unknown after 3 lookups") && detail.contains("by post"), "{detail}");
    assert_eq!(stats.delivered, 0, "{stats:?}");
    // The two lookups before the last were scheduled in the ledger as further attempts.
    let again: Vec<&str> = journal.iter().filter(|e| e.from == Some(RequestState::Transmitting) && e.to == RequestState::Transmitting).filter_map(|e| e.detail.as_deref()).collect();
    assert_eq!(again.len(), 2, "{journal:?}");
    assert!(again.iter().all(|d| d.contains("availability") && d.contains("next attempt at")), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_yellow_transport_report_delivers_with_its_warnings_and_a_red_one_fails_with_its_errors() {
    let reader = |report| ReaderConfig { id: "koeln-grundsteuer".into(), available: vec!["*".into()], unknown: vec![], permanent_fault: None, report };
    let ((yellow, _, _), (red, journal, stats)) =
        tokio::join!(one_request_ending(reader(FinalReport::Yellow), RequestState::Delivered), one_request_ending(reader(FinalReport::Red), RequestState::Failed));
    let detail = yellow.state_detail.unwrap_or_default();
    assert!(detail.contains("transport report yellow") && detail.contains("delivered late (simulated)"), "{detail}");
    let detail = red.state_detail.clone().unwrap_or_default();
    assert!(detail.contains("transport report red") && detail.contains("refused the message (simulated)"), "{detail}");
    // Red after it was transmitted: failed from transmitted, for an operator.
    let last = journal.last().unwrap();
    assert_eq!((last.from, last.to), (Some(RequestState::Transmitted), RequestState::Failed));
    assert_eq!(stats.delivered, 1, "{stats:?}");
}
