//! Shared by the print tests (included with `#[path]`, beside `serve.rs`): requests brought
//! to `awaiting_print` by a real `serve`, and the `amtsbote print-batch` command line.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use amtsbote::ledger::{self, Ledger, RequestState};
use amtsbote::xta::sim::{ReaderConfig, SimConfig, SimFile, SimServer};

use super::serve_support::*;

pub const TEST_MESSAGE: &str = include_str!("../../examples/messages/ersuchen-test.xml");

/// A data directory with `n` requests for Köln and one test message for Hamburg, all
/// awaiting print (the simulator's only reader is someone else, so neither takes XTA).
pub async fn awaiting_print(root: &Path, n: u32) -> (String, std::sync::Arc<dyn Ledger>) {
    let config = SimConfig {
        file: SimFile { accounts: None, readers: vec![ReaderConfig { id: "elsewhere".into(), available: vec!["*".into()], unknown: vec![], permanent_fault: None, report: Default::default() }] },
        ..SimConfig::default()
    };
    let sim = SimServer::start("127.0.0.1:0", config).await.unwrap();
    let url = format!("sqlite:{}", root.join("ledger.sqlite").display());
    // No nightly batch in this serve: after 22:00 German time it would make the night's batch
    // itself (catching up at start) before the test runs its own.
    let jobs = root.join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    let shipped = amtsbote::queue::Queue::Print.default_config();
    std::fs::write(jobs.join("print.toml"), &shipped[..shipped.find("[schedule]").unwrap()]).unwrap();
    let serve = Serve::new(root, &url).env("AMTSBOTE_XTA_URL", &sim.url());
    let mut child = serve.start_and_wait().await;
    drop_requests(root, &root.join("inbox/demo"), 0, n);
    std::fs::write(root.join("inbox/demo/test.xml"), TEST_MESSAGE).unwrap();
    let ledger = ledger::open(&url).await.unwrap();
    wait_for(Duration::from_secs(60), "every request awaiting print", || async { count(&*ledger, RequestState::AwaitingPrint).await == u64::from(n) + 1 }).await;
    child.kill().unwrap();
    child.wait().unwrap();
    sim.stop().await.unwrap();
    (url, ledger)
}

/// `amtsbote print-batch run --date 2026-12-01` on `root`: (exit code, stdout).
pub fn print_batch(root: &Path, url: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    amtsbote(root, url, &["print-batch", "run", "--date", "2026-12-01"], env)
}

/// `amtsbote ARGS` on `root` with the ledger at `url`: (exit code, stdout, stderr).
pub fn amtsbote_out(root: &Path, url: &str, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_amtsbote"))
        .args(args)
        .env("AMTSBOTE_DATA_DIR", root)
        .env("AMTSBOTE_LEDGER_URL", url)
        .env("AMTSBOTE_PRINT_LETTERS_PER_FILE", "10")
        .env("AMTSBOTE_LOG", "warn")
        .env_remove("AMTSBOTE_CONFIG")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `amtsbote ARGS`: (exit code, stdout and stderr together).
pub fn amtsbote(root: &Path, url: &str, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let (code, out, err) = amtsbote_out(root, url, args, env);
    (code, format!("{out}{err}"))
}

