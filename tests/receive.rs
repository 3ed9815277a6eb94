//! The receive stage with the real binary, real databases and an XTA simulator over real
//! sockets: messages waiting in a tenant's box end up in `outbox/<tenant>/`, once and closed;
//! a crash before close leaves the message in the outbox once; invalid messages go to
//! `error/` with their reasons; faults of the server delay but never double a message; two
//! `serve` processes polling one box on one PostgreSQL ledger write each message once.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use amtsbote::ledger::{self, Ledger, ReceivedState};
use amtsbote::xta::MessageId;
use amtsbote::xta::receive::file_name_for;
use amtsbote::xta::sim::{InjectedFault, SimConfig, SimServer};

#[path = "support/postgres.rs"]
mod postgres_support;
use postgres_support::TestDatabase;

#[path = "support/serve.rs"]
mod serve_support;
use serve_support::{Serve, metric, wait_for};

const EXAMPLE: &str = include_str!("../examples/messages/ersuchen.xml");

/// The reader identity of the default tenant `demo` (its kennung).
const DEMO: &str = "vbh:057660440000";

/// A valid message with its own Nachrichten-UUID.
fn message(n: u32) -> Vec<u8> {
    EXAMPLE.replace("7d3c1f0e-2b7a-4c55-9a51-0c2f5f7e9b11", &format!("7d3c1f0e-2b7a-4c55-9a51-{n:012x}")).into_bytes()
}

/// `serve` on `root` with a SQLite ledger there, receiving from `sim` every 100 ms.
fn serve_receiving(root: &Path, sim: &SimServer) -> Serve {
    let url = format!("sqlite:{}", root.join("ledger.sqlite").display());
    Serve::new(root, &url).env("AMTSBOTE_XTA_URL", &sim.url()).env("AMTSBOTE_XTA_RECEIVE_INTERVAL_MS", "100")
}

/// The files directly in `dir`, by name, with their content.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
                .collect()
        })
        .unwrap_or_default()
}

fn stop(mut child: serve_support::Running) {
    child.kill().unwrap();
    child.wait().unwrap();
}

async fn received_state(ledger: &dyn Ledger, id: &MessageId) -> Option<ReceivedState> {
    ledger.received(id.as_str()).await.unwrap().map(|r| r.state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_in_a_tenants_box_are_written_to_its_outbox_once_and_closed() {
    let sim = SimServer::start("127.0.0.1:0", SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // One waits before serve starts (its first pass), one comes while it runs (a later one).
    let first = sim.put_inbox(DEMO, message(1)).await;
    let serve = serve_receiving(root, &sim);
    let child = serve.start_and_wait().await;
    let second = sim.put_inbox(DEMO, message(2)).await;
    wait_for(Duration::from_secs(60), "both messages closed", || async { sim.stats().await.closed == 2 }).await;
    // A few more passes over the empty box change nothing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, metrics) = serve.get("/metrics").await.expect("metrics");
    stop(child);

    let outbox = files(&root.join("outbox/demo"));
    let expected: BTreeMap<String, Vec<u8>> = [(file_name_for(first.as_str()), message(1)), (file_name_for(second.as_str()), message(2))].into();
    assert_eq!(outbox.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>(), "the two messages and nothing else (no .part)");
    assert_eq!(outbox, expected, "content as sent");
    assert!(files(&root.join("outbox/demo/error")).is_empty());
    let stats = sim.stats().await;
    assert_eq!((stats.fetched, stats.closed), (2, 2), "{stats:?}");
    let ledger = ledger::open(&format!("sqlite:{}", root.join("ledger.sqlite").display())).await.unwrap();
    for id in [&first, &second] {
        let row = ledger.received(id.as_str()).await.unwrap().expect("stored");
        assert_eq!((row.state, row.tenant.as_str(), row.reader.as_str(), row.reason), (ReceivedState::Closed, "demo", DEMO, None));
        assert_eq!(row.file_name, file_name_for(id.as_str()));
    }
    for (outcome, n) in [("stored", 2.0), ("written", 2.0), ("invalid", 0.0), ("closed", 2.0), ("failed", 0.0)] {
        assert_eq!(metric(&metrics, &format!("amtsbote_received_total{{tenant=\"demo\",outcome=\"{outcome}\"}}")), Some(n), "{outcome}\n{metrics}");
    }
    sim.stop().await.unwrap();
}

/// `serve` dies after the first message is written and recorded, before close: the server
/// offers it again. The restarted `serve` finds it in the ledger, closes it without fetching
/// or writing it again, and goes on with the second: each is in the outbox once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_close_leaves_the_message_in_the_outbox_once() {
    let sim = SimServer::start("127.0.0.1:0", SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let first = sim.put_inbox(DEMO, message(1)).await;
    let second = sim.put_inbox(DEMO, message(2)).await;
    let mut crashing = serve_receiving(root, &sim).env("AMTSBOTE_TEST_CRASH", "receive-before-close").start();
    let status = tokio::task::spawn_blocking(move || crashing.wait().unwrap()).await.unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(6), "aborted at the crash point ({status:?})");
    let outbox = root.join("outbox/demo");
    assert_eq!(files(&outbox).into_values().collect::<Vec<_>>(), [message(1)], "the first message written before the crash");
    let stats = sim.stats().await;
    assert_eq!((stats.fetched, stats.closed), (1, 0), "not closed: offered again ({stats:?})");
    let url = format!("sqlite:{}", root.join("ledger.sqlite").display());
    let ledger = ledger::open(&url).await.unwrap();
    let recorded_before_restart = received_state(&*ledger, &first).await;

    let serve = serve_receiving(root, &sim);
    let child = serve.start_and_wait().await;
    wait_for(Duration::from_secs(60), "both messages closed", || async { sim.stats().await.closed == 2 }).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop(child);

    let written = files(&outbox);
    assert_eq!(written.len(), 2, "each message once: {:?}", written.keys());
    let expected: BTreeMap<String, Vec<u8>> = [(file_name_for(first.as_str()), message(1)), (file_name_for(second.as_str()), message(2))].into();
    assert_eq!(written, expected, "each message once, as sent");
    assert_eq!(recorded_before_restart, Some(ReceivedState::Written), "written and recorded before the crash");
    let stats = sim.stats().await;
    assert_eq!((stats.fetched, stats.closed), (2, 2), "the first was not fetched again ({stats:?})");
    for id in [&first, &second] {
        assert_eq!(received_state(&*ledger, id).await, Some(ReceivedState::Closed));
    }
    sim.stop().await.unwrap();
}

/// Not valid, not XML, hostile: each goes to `error/` beside its reason and is closed; the
/// valid one behind them is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_messages_go_to_error_with_their_reason_and_are_closed() {
    let sim = SimServer::start("127.0.0.1:0", SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let invalid = sim.put_inbox(DEMO, include_bytes!("data/invalid/missing-header.xml").to_vec()).await;
    let not_xml = sim.put_inbox(DEMO, b"Sehr geehrte Damen und Herren".to_vec()).await;
    let laughs = "<?xml version=\"1.0\"?><!DOCTYPE l [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\">]><l>&b;</l>";
    let hostile = sim.put_inbox(DEMO, laughs.as_bytes().to_vec()).await;
    let valid = sim.put_inbox(DEMO, message(7)).await;
    let serve = serve_receiving(root, &sim);
    let child = serve.start_and_wait().await;
    wait_for(Duration::from_secs(60), "all four closed", || async { sim.stats().await.closed == 4 }).await;
    stop(child);

    assert_eq!(files(&root.join("outbox/demo")).into_keys().collect::<Vec<_>>(), [file_name_for(valid.as_str())], "only the valid one in the outbox");
    let errors = files(&root.join("outbox/demo/error"));
    assert_eq!(errors.len(), 6, "three messages, three reasons: {:?}", errors.keys());
    let url = format!("sqlite:{}", root.join("ledger.sqlite").display());
    let ledger = ledger::open(&url).await.unwrap();
    for (id, content, says) in [
        (&invalid, include_bytes!("data/invalid/missing-header.xml").to_vec(), "nachrichtenkopf"),
        (&not_xml, b"Sehr geehrte Damen und Herren".to_vec(), "XML"),
        (&hostile, laughs.as_bytes().to_vec(), "DOCTYPE"),
    ] {
        let name = file_name_for(id.as_str());
        assert_eq!(errors.get(&name), Some(&content), "{name}");
        let reason = String::from_utf8(errors.get(&format!("{name}.error.txt")).cloned().unwrap_or_default()).unwrap();
        assert!(reason.starts_with("invalid: ") && reason.contains(says) && reason.contains(id.as_str()), "{name}: {reason}");
        let row = ledger.received(id.as_str()).await.unwrap().unwrap();
        assert_eq!(row.state, ReceivedState::Closed);
        assert!(row.reason.is_some_and(|r| r.contains(says)));
    }
    assert_eq!(received_state(&*ledger, &valid).await, Some(ReceivedState::Closed));
    sim.stop().await.unwrap();
}

/// A third of the server's answers are 503, technical faults or connections dropped after
/// the request was processed: passes end early and the next ones go on, and each message
/// still lands in the outbox once, without a `.part` left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faulty_server_delays_messages_but_never_doubles_them() {
    let config = SimConfig { fault_rate: 0.33, faults: vec![InjectedFault::Unavailable, InjectedFault::Technical, InjectedFault::Drop], seed: 7, ..SimConfig::default() };
    let sim = SimServer::start("127.0.0.1:0", config).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut ids = Vec::new();
    for n in 0..12 {
        ids.push(sim.put_inbox(DEMO, message(n)).await);
    }
    let serve = serve_receiving(root, &sim);
    let child = serve.start_and_wait().await;
    wait_for(Duration::from_secs(90), "every message closed", || async { sim.stats().await.closed == 12 }).await;
    stop(child);

    let written = files(&root.join("outbox/demo"));
    let expected: BTreeMap<String, Vec<u8>> = ids.iter().enumerate().map(|(n, id)| (file_name_for(id.as_str()), message(n as u32))).collect();
    assert_eq!(written, expected, "each message once, nothing else");
    let stats = sim.stats().await;
    assert!(stats.faults.values().sum::<u64>() > 0, "faults were injected: {stats:?}");
}

/// Two `serve` processes on one PostgreSQL ledger poll the same box at once and write into
/// one outbox folder: every message is there once, and the ledger holds each once, closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_serve_processes_polling_one_box_write_each_message_once() {
    let Some(database) = TestDatabase::create().await else { return };
    let url = database.url.clone();
    let outcome = tokio::spawn(async move {
        let sim = SimServer::start("127.0.0.1:0", SimConfig::default()).await.unwrap();
        let shared = tempfile::tempdir().unwrap();
        let outbox = shared.path().join("outbox/demo");
        let config = shared.path().join("amtsbote.toml");
        std::fs::write(&config, format!("[[tenants]]\nid = \"demo\"\nname = \"Stadt Lemgo\"\nkennung = \"{DEMO}\"\noutbox = \"{}\"\n", outbox.display())).unwrap();
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let serve = |root: &Path| {
            Serve::new(root, &url)
                .env("AMTSBOTE_CONFIG", &config.display().to_string())
                .env("AMTSBOTE_XTA_URL", &sim.url())
                .env("AMTSBOTE_XTA_RECEIVE_INTERVAL_MS", "20")
        };
        let (serve_a, serve_b) = (serve(a.path()), serve(b.path()));
        let (child_a, child_b) = (serve_a.start_and_wait().await, serve_b.start_and_wait().await);
        let mut ids = Vec::new();
        for n in 0..40 {
            ids.push(sim.put_inbox(DEMO, message(n)).await);
        }
        wait_for(Duration::from_secs(120), "every message closed", || async { sim.stats().await.closed == 40 }).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop(child_a);
        stop(child_b);

        let written = files(&outbox);
        let expected: BTreeMap<String, Vec<u8>> = ids.iter().enumerate().map(|(n, id)| (file_name_for(id.as_str()), message(n as u32))).collect();
        assert_eq!(written, expected, "each message once, nothing else");
        let ledger = ledger::open(&url).await.unwrap();
        for id in &ids {
            assert_eq!(received_state(&*ledger, id).await, Some(ReceivedState::Closed), "{id}");
        }
        let stats = sim.stats().await;
        eprintln!("two processes: fetched {} for 40 messages", stats.fetched);
        sim.stop().await.unwrap();
    })
    .await;
    database.drop().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}
