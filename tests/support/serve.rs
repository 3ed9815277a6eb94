//! Shared by the tests that start the real `amtsbote serve` (included with `#[path]`): the
//! process with its settings, requests to drop into an inbox, and ways to wait and look.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use amtsbote::ledger::{Ledger, RequestState};
use amtsbote::queue::Queue;

pub const EXAMPLE: &str = include_str!("../../examples/messages/ersuchen.xml");

/// The sample request (routed to Köln by the sample directory) with its own UUID.
pub fn request(n: u32) -> String {
    EXAMPLE.replace("7d3c1f0e-2b7a-4c55-9a51-0c2f5f7e9b11", &format!("7d3c1f0e-2b7a-4c55-9a51-{n:012x}"))
}

/// A port nobody listens on now.
pub fn free_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// A started serve: the child process, killed when dropped, so that a failing assertion
/// leaves no process behind (std's `Child` does not end its process on drop).
pub struct Running(pub Child);

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct Serve {
    pub root: PathBuf,
    pub ledger_url: String,
    pub listen: String,
    pub env: Vec<(String, String)>,
    /// An admin token in its ledger, made on first use (see [`Serve::token`]).
    token: std::sync::OnceLock<String>,
}

/// Makes a token with `role` in the ledger at `ledger_url` (data under `root`), as an
/// administrator does: `amtsbote token create --role ROLE`. Returns the token.
pub fn create_token(root: &Path, ledger_url: &str, role: &str, env: &[(String, String)]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_amtsbote"))
        .args(["token", "create", "--role", role])
        .env("AMTSBOTE_DATA_DIR", root)
        .env("AMTSBOTE_LEDGER_URL", ledger_url)
        .env("AMTSBOTE_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    assert!(out.status.success(), "token create --role {role}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

impl Serve {
    pub fn new(root: &Path, ledger_url: &str) -> Serve {
        Serve { root: root.to_path_buf(), ledger_url: ledger_url.to_string(), listen: free_port(), env: Vec::new(), token: Default::default() }
    }

    /// An admin token of its ledger, made the first time it is asked for (with
    /// `amtsbote token create`, on the ledger `serve` uses).
    pub fn token(&self) -> &str {
        self.token.get_or_init(|| create_token(&self.root, &self.ledger_url, "admin", &self.env))
    }

    pub fn env(mut self, key: &str, value: &str) -> Serve {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn start(&self) -> Running {
        Command::new(env!("CARGO_BIN_EXE_amtsbote"))
            .arg("serve")
            .env("AMTSBOTE_DATA_DIR", &self.root)
            .env("AMTSBOTE_LEDGER_URL", &self.ledger_url)
            .env("AMTSBOTE_HTTP_LISTEN", &self.listen)
            .env("AMTSBOTE_INTAKE_POLL_INTERVAL_MS", "20")
            .env("AMTSBOTE_INTAKE_SETTLE_MS", "10")
            .env("AMTSBOTE_LOG", "warn")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(Running)
            .unwrap()
    }

    /// GET with its admin token (none for `/healthz`, which needs none).
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let token = (path != "/healthz").then(|| self.token());
        http_get_as(&self.listen, path, token).await
    }

    /// Starts it and waits until its HTTP port answers (it has migrated the databases).
    pub async fn start_and_wait(&self) -> Running {
        let child = self.start();
        wait_for(Duration::from_secs(60), "serve to answer", || async { self.get("/healthz").await.is_some() }).await;
        child
    }
}

/// A `jobs/<queue>.toml` override: the shipped file with waits of at most `secs`.
pub fn quick_backoff(queue: Queue, secs: f64) -> String {
    let shipped = queue.default_config();
    let start = shipped.find("[backoff]").unwrap();
    format!("{}[backoff]\ninitial_secs = {secs}\nmax_secs = {secs}\nfactor = 1.0\njitter = 0.0\n", &shipped[..start])
}

/// GET over a fresh connection without a token: (status, body), or None when nothing answers.
pub async fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    http_get_as(addr, path, None).await
}

/// GET over a fresh connection, with `Authorization: Bearer <token>` when given.
pub async fn http_get_as(addr: &str, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authorization = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let mut stream = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr)).await.ok()?.ok()?;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{authorization}Connection: close\r\n\r\n").as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw)).await.ok()?.ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((status, body))
}

/// The value of a metric line (`name{labels} value`) in a Prometheus text.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

pub fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|rd| rd.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_file()) && !e.file_name().to_string_lossy().starts_with('.')).count()).unwrap_or(0)
}

/// Writes `total` request files beside the inbox, then moves them in at once.
pub fn drop_requests(root: &Path, tenant_inbox: &Path, from: u32, total: u32) {
    std::fs::create_dir_all(tenant_inbox).unwrap();
    let staging = root.join("staging");
    std::fs::create_dir_all(&staging).unwrap();
    for n in from..from + total {
        std::fs::write(staging.join(format!("e{n:05}.xml")), request(n)).unwrap();
    }
    for n in from..from + total {
        std::fs::rename(staging.join(format!("e{n:05}.xml")), tenant_inbox.join(format!("e{n:05}.xml"))).unwrap();
    }
}

pub async fn count(ledger: &dyn Ledger, state: RequestState) -> u64 {
    ledger.count_by_state().await.map(|c| c.iter().find(|(s, _)| *s == state).map_or(0, |(_, n)| *n)).unwrap_or(0)
}

/// Requests that went through routing (and may have been transmitted since).
pub async fn past_routing(ledger: &dyn Ledger) -> u64 {
    let mut n = 0;
    for state in [RequestState::Routed, RequestState::Transmitting, RequestState::Transmitted, RequestState::Delivered, RequestState::AwaitingPrint] {
        n += count(ledger, state).await;
    }
    n
}

pub async fn wait_for<F, Fut>(limit: Duration, what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !done().await {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

