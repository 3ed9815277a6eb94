//! Shared by the tests that run the RELEASE binary as a newcomer does (`cargo run --release`;
//! included with `#[path]`): where it is, and a quick-start walk-through's data directory
//! watched until the pipeline has settled.
//!
//! The binary: `scripts/test` builds it (`cargo build --release --bin amtsbote`) before the
//! suite runs. Each test asks cargo for it once more with the same command — a no-op when it
//! is up to date (a second or two), and it cannot test a stale binary after a change; when
//! it is missing or stale, that build takes minutes, and the test says so on stderr. Cargo
//! itself names the file (`--message-format=json`), so `CARGO_TARGET_DIR` or a
//! `.cargo/config` target dir are followed as the build follows them.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use amtsbote::ledger::{Ledger, ListFilter, MailStatus, RequestState};

/// The release binary `amtsbote`, built (or found up to date) by cargo.
pub fn release_binary() -> PathBuf {
    static BINARY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BINARY
        .get_or_init(|| {
            let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            eprintln!("release binary: cargo build --release --bin amtsbote (a no-op when scripts/test built it; minutes when it is missing or stale)");
            let started = Instant::now();
            let out = Command::new(cargo)
                .args(["build", "--release", "--bin", "amtsbote", "--message-format=json-render-diagnostics"])
                .current_dir(manifest)
                .stderr(Stdio::inherit())
                .output()
                .expect("cargo runs");
            assert!(out.status.success(), "cargo build --release --bin amtsbote failed");
            let path = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "amtsbote" && m["target"]["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "bin")))
                .find_map(|m| m["executable"].as_str().map(PathBuf::from))
                .expect("cargo names the amtsbote binary");
            eprintln!("release binary: {} ({:.1} s)", path.display(), started.elapsed().as_secs_f64());
            path
        })
        .clone()
}

/// A fixed time after 22:00 Europe/Berlin, when `serve` catches up the night's print batch
/// at start: the walk-throughs run at it (`AMTSBOTE_TEST_NOW`, read by the print schedule
/// and `print-batch run`), whatever the time of day.
pub const LATE_EVENING: &str = "2026-12-01T23:00:00+01:00";
/// Its batch.
pub const LATE_EVENING_BATCH: &str = "B20261201";

/// States a request of the walk-through rests in (nothing more happens by itself).
pub fn at_rest(state: RequestState) -> bool {
    use RequestState::*;
    matches!(state, Delivered | AwaitingPrint | Printed | Posted | Rejected | Unroutable | Failed | Withdrawn)
}

/// Files with an `.xml` name directly in `dir` (an inbox not yet taken in).
pub fn xml_files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|rd| rd.flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".xml") && e.path().is_file()).count()).unwrap_or(0)
}

/// What the simulator at `url` closed (messages received from its boxes).
pub async fn sim_closed(url: &str) -> Option<u64> {
    let addr = url.strip_prefix("http://")?.trim_end_matches('/').to_owned();
    let (status, body) = super::serve_support::http_get(&addr, "/stats").await?;
    if status != 200 {
        return None;
    }
    serde_json::from_str::<serde_json::Value>(&body).ok()?["closed"].as_u64()
}

/// Why the walk-through under `data` (an `amtsbote-data` folder) has not settled yet, or
/// None when it has: every inbox file taken in, every request at rest, `received` messages
/// closed at the built-in simulator, every notification composed and every email written.
pub async fn unsettled(data: &Path, ledger: &dyn Ledger, received: u64) -> Option<String> {
    let inbox = data.join("inbox/demo");
    if xml_files_in(&inbox) > 0 || xml_files_in(&inbox.join("processing")) > 0 {
        return Some("files wait in the inbox".into());
    }
    let requests = ledger.list(&ListFilter::default().limit(1000)).await.ok()?;
    if let Some(r) = requests.iter().find(|r| !at_rest(r.state)) {
        return Some(format!("request {} is {}", r.id, r.state));
    }
    if received > 0 {
        let url = std::fs::read_to_string(data.join("xta-sim/url")).unwrap_or_default();
        let closed = sim_closed(url.trim()).await.unwrap_or(0);
        if closed < received {
            return Some(format!("{closed} of {received} messages received"));
        }
    }
    let open = ledger.open_notification_count().await.ok()?;
    if open > 0 {
        return Some(format!("{open} notifications not composed"));
    }
    let counts = ledger.mail_counts().await.ok()?;
    let busy: u64 = counts.iter().filter(|(s, _)| matches!(s, MailStatus::Pending | MailStatus::Claimed | MailStatus::Sending | MailStatus::Deferred)).map(|(_, n)| n).sum();
    if busy > 0 {
        return Some(format!("{busy} emails not written"));
    }
    None
}

/// Waits until [`unsettled`] says nothing (at most `limit`).
pub async fn settle(data: &Path, received: u64, limit: Duration) {
    let url = format!("sqlite:{}", data.join("ledger.sqlite").display());
    let ledger = amtsbote::ledger::open(&url).await.expect("the walk-through's ledger opens");
    let start = Instant::now();
    loop {
        let why = unsettled(data, &*ledger, received).await;
        let Some(why) = why else { return };
        assert!(start.elapsed() < limit, "the walk-through did not settle within {limit:?}: {why}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the release `serve` started with its stderr in `serve_log` is ready for the
/// walk-through: HTTP answers on `listen`, and the print stage has caught up the night at
/// start (at the tests' 23:00 it does). Fails with the log when serve ends or is not ready
/// within two minutes.
pub async fn wait_until_ready(serve: &mut std::process::Child, listen: &str, serve_log: &Path) {
    let log = || std::fs::read_to_string(serve_log).unwrap_or_default();
    let start = Instant::now();
    while crate::serve_support::http_get(listen, "/healthz").await.is_none() || !log().contains("caught up at start") {
        assert!(serve.try_wait().unwrap().is_none(), "serve ended: {}", log());
        assert!(start.elapsed() < Duration::from_secs(120), "serve not ready within 2 minutes: {}", log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
