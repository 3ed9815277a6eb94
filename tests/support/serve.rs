//! Shared by the tests that run the real `amtsbote serve` (included with `#[path]`): start it
//! with `AMTSBOTE_*` settings, wait until it answers, read its HTTP endpoints.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port nobody listens on now.
pub fn free_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// How to start `serve`: its data directory, ledger, HTTP address and further variables.
pub struct Serve {
    pub root: PathBuf,
    pub ledger_url: String,
    pub listen: String,
    env: Vec<(String, String)>,
}

impl Serve {
    pub fn new(root: &Path, ledger_url: &str) -> Serve {
        Serve { root: root.to_path_buf(), ledger_url: ledger_url.to_string(), listen: free_port(), env: Vec::new() }
    }

    pub fn env(mut self, key: &str, value: &str) -> Serve {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn start(&self) -> Child {
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
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(&self.listen, path).await
    }

    /// Starts it and waits until its HTTP port answers (it has migrated the databases).
    pub async fn start_and_wait(&self) -> Child {
        let child = self.start();
        wait_for(Duration::from_secs(60), "serve to answer", || async { self.get("/healthz").await.is_some() }).await;
        child
    }
}

/// GET over a fresh connection: (status, body), or None when nothing answers.
pub async fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr)).await.ok()?.ok()?;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await.ok()?;
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

/// Polls `done` every 50 ms until it is true; panics after `limit`.
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
