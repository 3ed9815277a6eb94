//! The HTTP API over real sockets: the real router on 127.0.0.1:0, a real SQLite ledger,
//! the default checker, and a minimal HTTP/1.1 client written here (one request per
//! connection, `Connection: close`), so that the test needs no HTTP client crate.

use std::net::SocketAddr;
use std::sync::Arc;

use amtsbote::config::Tenant;
use amtsbote::intake::Intake;
use amtsbote::ledger::{self, Event, Ledger, LedgerError, ListFilter, NewRequest, Recorded, Request, RequestId, RequestState};
use amtsbote::web::{self, AppState, HttpLimits};
use amtsbote::xamtshilfe::Checker;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ERSUCHEN: &str = include_str!("../examples/messages/ersuchen.xml");
const XML: &str = "application/xml";

fn tenant(id: &str, kennung: &str) -> Tenant {
    Tenant { id: id.into(), name: format!("Tenant {id}"), kennung: kennung.into(), ..Tenant::default() }
}

struct Server {
    addr: SocketAddr,
    ledger: Arc<dyn Ledger>,
    /// An admin token in its ledger, sent with every request unless one is given.
    token: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Server {
        Server::start_with(vec![tenant("demo", "vbh:057660440000")], 1 << 20).await
    }

    async fn start_with(tenants: Vec<Tenant>, max_body_bytes: u64) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let ledger = ledger::open(&format!("sqlite:{}", dir.path().join("ledger.sqlite").display())).await.unwrap();
        ledger.migrate().await.unwrap();
        Server::start_on(ledger, tenants, max_body_bytes, dir).await
    }

    async fn start_on(ledger: Arc<dyn Ledger>, tenants: Vec<Tenant>, max_body_bytes: u64, dir: tempfile::TempDir) -> Server {
        Server::start_configured(ledger, tenants, max_body_bytes, dir, |state| state).await
    }

    /// A server with short timeouts and few connections, for the slow-client tests.
    async fn start_strict(limits: HttpLimits) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let ledger = ledger::open(&format!("sqlite:{}", dir.path().join("ledger.sqlite").display())).await.unwrap();
        ledger.migrate().await.unwrap();
        Server::start_configured(ledger, vec![tenant("demo", "vbh:057660440000")], 1 << 20, dir, |state| state.with_limits(limits)).await
    }

    /// A server whose state `configure` adjusts (limits, queues, inbox counters).
    async fn start_configured(ledger: Arc<dyn Ledger>, tenants: Vec<Tenant>, max_body_bytes: u64, dir: tempfile::TempDir, configure: impl FnOnce(AppState) -> AppState) -> Server {
        let intake = Intake::new(ledger.clone(), Arc::new(Checker::with_defaults())).with_tenants(tenants.clone());
        let state = configure(AppState::new(intake, tenants, max_body_bytes));
        let token = amtsbote::access::Token::generate().unwrap();
        // The ledger that is down (DownLedger) cannot store it: its requests get 503 anyway.
        let _ = ledger.create_token(&ledger::NewToken { name: "test-admin".into(), role: "admin".into(), sha256: token.sha256() }).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(web::serve(listener, state, async move {
            let _ = stopped.await;
        }));
        Server { addr, ledger, token: token.expose().to_string(), stop: Some(stop), task: Some(task), _dir: dir }
    }

    /// The header line with its token, for requests written by hand.
    fn auth(&self) -> String {
        format!("Authorization: Bearer {}\r\n", self.token)
    }

    async fn get(&self, path: &str) -> Reply {
        self.send("GET", path, &[], b"").await
    }

    async fn post(&self, path: &str, content_type: &str, body: &str) -> Reply {
        self.send("POST", path, &[("Content-Type", content_type)], body.as_bytes()).await
    }

    async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        let mut stream = TcpStream::connect(self.addr).await.unwrap();
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n", self.addr);
        if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("authorization")) {
            head.push_str(&format!("Authorization: Bearer {}\r\n", self.token));
        }
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if method == "POST" || !body.is_empty() {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        stream.write_all(&request).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        Reply::parse(&raw)
    }

    /// Stops the server gracefully and checks that it stopped without error.
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let result = tokio::time::timeout(std::time::Duration::from_secs(10), self.task.take().unwrap()).await;
        result.expect("graceful shutdown within 10 s").unwrap().unwrap();
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn parse(raw: &[u8]) -> Reply {
        let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete response head");
        let head = std::str::from_utf8(&raw[..end]).unwrap();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (name, value) = l.split_once(':').unwrap();
                (name.trim().to_ascii_lowercase(), value.trim().to_string())
            })
            .collect();
        let mut body = raw[end + 4..].to_vec();
        if headers.iter().any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked")) {
            body = dechunk(&body);
        }
        Reply { status, headers, body }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        assert_eq!(self.header("content-type"), Some("application/json"), "{self:?}");
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn reasons(&self) -> Vec<String> {
        let json = self.json();
        assert!(json["error"].is_string(), "{json}");
        json["reasons"].as_array().unwrap_or_else(|| panic!("no reasons: {json}")).iter().map(|r| r.as_str().unwrap().to_string()).collect()
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&data[..line_end]).unwrap().split(';').next().unwrap().trim(), 16).unwrap();
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// The sample request under another Nachrichten-UUID.
fn ersuchen(n: u32) -> String {
    ERSUCHEN.replace("7d3c1f0e-2b7a-4c55-9a51-0c2f5f7e9b11", &format!("7d3c1f0e-2b7a-4c55-9a51-{n:012x}"))
}

async fn count(ledger: &Arc<dyn Ledger>, state: RequestState) -> u64 {
    ledger.count_by_state().await.unwrap().into_iter().find(|(s, _)| *s == state).unwrap().1
}

#[tokio::test]
async fn accepted_message_is_readable_with_its_journal() {
    let server = Server::start().await;
    let reply = server.post("/api/v1/nachrichten?tenant=demo", XML, ERSUCHEN).await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    let json = reply.json();
    let id = json["id"].as_i64().unwrap();
    let location = format!("/api/v1/requests/{id}");
    assert_eq!(json["state"], "validated");
    assert_eq!(json["location"], location.as_str());
    assert_eq!(reply.header("location"), Some(location.as_str()));

    let reply = server.get(&location).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let request = reply.json();
    assert_eq!(request["id"], id);
    assert_eq!(request["tenant"], "demo");
    assert_eq!(request["state"], "validated");
    assert_eq!(request["kind"], "vollstreckungshilfe.Ersuchen.0101");
    assert_eq!(request["nachrichten_uuid"], "7d3c1f0e-2b7a-4c55-9a51-0c2f5f7e9b11");
    assert_eq!(request["test"], false);
    assert!(request["file_name"].is_null());
    for key in ["state_detail", "created_at", "updated_at"] {
        assert!(request.get(key).is_some(), "{key} missing: {request}");
    }
    assert!(request.get("payload").is_none() && request.get("source").is_none(), "{request}");
    let journal = request["journal"].as_array().unwrap();
    assert_eq!(journal.len(), 1, "{request}");
    assert_eq!(journal[0]["seq"], 1);
    assert!(journal[0]["from"].is_null());
    assert_eq!(journal[0]["to"], "validated");
    assert_eq!(journal[0]["actor"], "system:intake");
    assert!(journal[0]["at"].is_string() && journal[0]["detail"].is_string(), "{request}");

    // The identical POST again — here naming the tenant by header — is the same delivery.
    let again = server.send("POST", "/api/v1/nachrichten", &[("Content-Type", "text/xml; charset=utf-8"), ("X-Amtsbote-Tenant", "demo")], ERSUCHEN.as_bytes()).await;
    assert_eq!(again.status, 202, "{}", again.text());
    let json = again.json();
    assert_eq!(json["id"], id);
    assert_eq!(json["state"], "validated");
    assert_eq!(json["already_recorded"], true);
    assert_eq!(again.header("location"), Some(location.as_str()));

    // Listing, with filters; no payloads, no journals.
    let list = server.get("/api/v1/requests?state=validated&tenant=demo&limit=50").await;
    assert_eq!(list.status, 200, "{}", list.text());
    let requests = list.json()["requests"].as_array().unwrap().clone();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0]["id"], id);
    assert!(requests[0].get("journal").is_none() && requests[0].get("payload").is_none());
    let list = server.get("/api/v1/requests?state=rejected").await;
    assert_eq!(list.json()["requests"].as_array().unwrap().len(), 0);
    let list = server.get("/api/v1/requests?tenant=elsewhere").await;
    assert_eq!(list.json()["requests"].as_array().unwrap().len(), 0);
    let bad = server.get("/api/v1/requests?state=sent").await;
    assert_eq!(bad.status, 400);
    assert!(bad.reasons().iter().any(|r| r.contains("validated")), "{}", bad.text());
    let bad = server.get("/api/v1/requests?stat=validated").await;
    assert_eq!(bad.status, 400, "a misspelt filter is not silently ignored: {}", bad.text());

    // Operators' endpoints.
    let health = server.get("/healthz").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok", "{}", health.text());
    let metrics = server.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.header("content-type").unwrap().starts_with("text/plain"));
    let text = metrics.text();
    assert!(text.contains("# HELP amtsbote_requests "), "{text}");
    assert!(text.contains("# TYPE amtsbote_requests gauge\n"), "{text}");
    assert!(text.lines().any(|l| l == "amtsbote_requests{state=\"validated\"} 1"), "{text}");
    assert!(text.lines().any(|l| l == "amtsbote_requests{state=\"rejected\"} 0"), "{text}");
    assert_eq!(text.lines().filter(|l| l.starts_with("amtsbote_requests{")).count(), RequestState::ALL.len(), "{text}");

    server.stop().await;
}

#[tokio::test]
async fn same_nachrichten_uuid_with_another_body_is_a_conflict() {
    let server = Server::start().await;
    let first = server.post("/api/v1/nachrichten?tenant=demo", XML, ERSUCHEN).await;
    assert_eq!(first.status, 202, "{}", first.text());
    let id = first.json()["id"].as_i64().unwrap();

    let changed = ERSUCHEN.replace("VH-2026-000123", "VH-2026-999999");
    assert_ne!(changed, ERSUCHEN);
    let reply = server.post("/api/v1/nachrichten?tenant=demo", XML, &changed).await;
    assert_eq!(reply.status, 409, "{}", reply.text());
    let json = reply.json();
    assert_eq!(json["error"], "duplicate");
    assert_eq!(json["existing"], id);
    assert_eq!(json["nachrichten_uuid"], "7d3c1f0e-2b7a-4c55-9a51-0c2f5f7e9b11");
    assert!(json["reasons"][0].as_str().unwrap().contains("7d3c1f0e-2b7a-4c55-9a51-0c2f5f7e9b11"), "{json}");
    assert_eq!(reply.header("location"), Some(format!("/api/v1/requests/{id}").as_str()));
    assert_eq!(server.ledger.list(&ListFilter::default()).await.unwrap().len(), 1, "the duplicate is not recorded");

    // Another message goes through.
    let other = server.post("/api/v1/nachrichten?tenant=demo", XML, &ersuchen(2)).await;
    assert_eq!(other.status, 202, "{}", other.text());
    assert_ne!(other.json()["id"], id);
    server.stop().await;
}

#[tokio::test]
async fn invalid_message_is_rejected_with_reasons_and_recorded() {
    let server = Server::start().await;
    let invalid = ERSUCHEN.replace(">445.00<", ">445.01<");
    assert_ne!(invalid, ERSUCHEN);
    let reply = server.post("/api/v1/nachrichten?tenant=demo", XML, &invalid).await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    let reasons = reply.reasons();
    assert!(reasons.iter().any(|r| r.contains("ersuchen/gesamtbetrag")), "{reasons:?}");
    let json = reply.json();
    assert_eq!(json["error"], "rejected");
    let id = json["id"].as_i64().unwrap();

    let request = server.get(&format!("/api/v1/requests/{id}")).await.json();
    assert_eq!(request["state"], "rejected");
    assert!(request["state_detail"].as_str().unwrap().contains("ersuchen/gesamtbetrag"), "{request}");

    // Posting the same body again gives the same answer from the ledger.
    let again = server.post("/api/v1/nachrichten?tenant=demo", XML, &invalid).await;
    assert_eq!(again.status, 400, "{}", again.text());
    assert_eq!(again.json()["id"], id);
    assert_eq!(again.reasons(), reasons);

    // A hostile body: rejected before any entity is expanded, and recorded without content leaking back.
    let laughs = "<?xml version=\"1.0\"?><!DOCTYPE l [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\">]><l>&b;</l>";
    let reply = server.post("/api/v1/nachrichten?tenant=demo", XML, laughs).await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    let reasons = reply.reasons();
    assert!(reasons.iter().any(|r| r.to_ascii_lowercase().contains("doctype")), "{reasons:?}");
    assert!(!reply.text().contains("aaaaaaaaaa"), "{}", reply.text());

    assert_eq!(count(&server.ledger, RequestState::Rejected).await, 2);
    let metrics = server.get("/metrics").await.text();
    assert!(metrics.lines().any(|l| l == "amtsbote_requests{state=\"rejected\"} 2"), "{metrics}");
    server.stop().await;
}

#[tokio::test]
async fn body_over_the_limit_is_413_and_not_recorded() {
    let server = Server::start_with(vec![tenant("demo", "vbh:057660440000")], 1000).await;
    assert!(ERSUCHEN.len() > 1000);
    let reply = server.post("/api/v1/nachrichten?tenant=demo", XML, ERSUCHEN).await;
    assert_eq!(reply.status, 413, "{}", reply.text());
    let json = reply.json();
    assert!(json["error"].as_str().unwrap().contains("1000"), "{json}");
    assert_eq!(json["limit"], 1000);

    // Without Content-Length (chunked), the DefaultBodyLimit layer catches it.
    let chunked = format!("{:x}\r\n{ERSUCHEN}\r\n0\r\n\r\n", ERSUCHEN.len());
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let head = format!("POST /api/v1/nachrichten?tenant=demo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{}Content-Type: application/xml\r\nTransfer-Encoding: chunked\r\n\r\n", server.auth());
    stream.write_all(format!("{head}{chunked}").as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let reply = Reply::parse(&raw);
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert!(reply.json()["error"].as_str().unwrap().contains("1000"));

    // A small message still passes.
    let small = server.post("/api/v1/nachrichten?tenant=demo", XML, "<x/>").await;
    assert_eq!(small.status, 400, "{}", small.text());
    assert_eq!(server.ledger.list(&ListFilter::default()).await.unwrap().len(), 1, "only the small one is recorded");
    server.stop().await;
}

/// Reads until the server closes the connection; what it sent. Gives up (fails) after
/// `limit`, far beyond the timeout under test: a hang is what these tests catch.
async fn read_until_closed(stream: &mut TcpStream, limit: std::time::Duration) -> Vec<u8> {
    let mut raw = Vec::new();
    match tokio::time::timeout(limit, stream.read_to_end(&mut raw)).await {
        Ok(Ok(_)) => raw,
        // A reset after the server closed: what arrived is the answer.
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => raw,
        Ok(Err(e)) => panic!("reading: {e}"),
        Err(_) => panic!("the server kept the connection open for {limit:?}"),
    }
}

#[tokio::test]
async fn a_client_trickling_headers_or_idling_is_disconnected() {
    let limits = HttpLimits { header_timeout: std::time::Duration::from_millis(300), ..HttpLimits::default() };
    let server = Server::start_strict(limits).await;
    let limit = std::time::Duration::from_secs(20);

    // Half a request head, then nothing.
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"POST /api/v1/nachrichten?tenant=demo HTTP/1.1\r\nHost: x\r\nContent-Ty").await.unwrap();
    let raw = read_until_closed(&mut slow, limit).await;
    assert!(raw.is_empty() || raw.starts_with(b"HTTP/1.1 408"), "{}", String::from_utf8_lossy(&raw));

    // A connection that never sends a byte.
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    read_until_closed(&mut idle, limit).await;

    // A keep-alive connection after its request: answered, then closed when idle.
    let mut kept = TcpStream::connect(server.addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let raw = read_until_closed(&mut kept, limit).await;
    assert!(raw.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&raw));

    // The server still answers others.
    assert_eq!(server.get("/healthz").await.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_408_and_not_recorded() {
    let limits = HttpLimits { body_timeout: std::time::Duration::from_millis(300), ..HttpLimits::default() };
    let server = Server::start_strict(limits).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/nachrichten?tenant=demo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{}Content-Type: application/xml\r\nContent-Length: {}\r\n\r\n",
        server.auth(),
        ERSUCHEN.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&ERSUCHEN.as_bytes()[..100]).await.unwrap();
    let raw = read_until_closed(&mut stream, std::time::Duration::from_secs(20)).await;
    let reply = Reply::parse(&raw);
    assert_eq!(reply.status, 408, "{}", reply.text());
    let json = reply.json();
    assert!(json["error"].as_str().unwrap().contains("300 ms"), "{json}");
    assert!(server.ledger.list(&ListFilter::default()).await.unwrap().is_empty(), "nothing recorded");

    // The same on the directory's XML endpoint.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let head = format!("POST /api/v1/zustaendigkeit HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{}Content-Type: application/xml\r\nContent-Length: 500\r\n\r\n<x", server.auth());
    stream.write_all(head.as_bytes()).await.unwrap();
    let reply = Reply::parse(&read_until_closed(&mut stream, std::time::Duration::from_secs(20)).await);
    assert_eq!(reply.status, 408, "{}", reply.text());
    server.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_and_are_served_when_one_closes() {
    // One connection at a time: a second client waits until the first is done, and is
    // then served; a client holding its connection idle is dropped by the header timeout.
    let limits = HttpLimits { max_connections: 1, header_timeout: std::time::Duration::from_millis(500), ..HttpLimits::default() };
    let server = Server::start_strict(limits).await;
    let mut holder = TcpStream::connect(server.addr).await.unwrap();
    holder.write_all(b"GET /heal").await.unwrap();
    // Served once the holder is dropped by the header timeout.
    let reply = tokio::time::timeout(std::time::Duration::from_secs(20), server.get("/healthz")).await.expect("served after the holder was dropped");
    assert_eq!(reply.status, 200);
    read_until_closed(&mut holder, std::time::Duration::from_secs(20)).await;
    for _ in 0..5 {
        assert_eq!(server.get("/healthz").await.status, 200);
    }
    server.stop().await;
}

#[tokio::test]
async fn metrics_report_jobs_by_queue_and_state_and_inbox_files_by_outcome() {
    use amtsbote::queue::{JobConfigs, Queue, QueueStore};
    use std::sync::atomic::Ordering::Relaxed;
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger::open(&format!("sqlite:{}", dir.path().join("ledger.sqlite").display())).await.unwrap();
    ledger.migrate().await.unwrap();
    let queues = QueueStore::open(&dir.path().join("queue.sqlite"), JobConfigs::builtin().unwrap()).await.unwrap();
    for n in 0..3u32 {
        queues.push(Queue::Transmit, n).await.unwrap();
    }
    let dead = queues.push(Queue::Notify, 9u32).await.unwrap();
    sqlx::query("UPDATE Jobs SET status = 'Failed', attempts = max_attempts WHERE id = ?1").bind(&dead).execute(queues.pool()).await.unwrap();
    let inbox = Arc::new(amtsbote::intake::inbox::Stats::default());
    inbox.accepted.fetch_add(7, Relaxed);
    inbox.refused.fetch_add(1, Relaxed);
    inbox.backlog.lock().unwrap().insert("demo".into(), amtsbote::intake::inbox::Backlog { waiting: 12, processing: 2, oldest_waiting_secs: 340, not_taken: 1 });
    let (admin, stats) = (queues.admin(), inbox.clone());
    let server = Server::start_configured(ledger, vec![tenant("demo", "vbh:057660440000")], 1 << 20, dir, |state| state.with_queues(admin).with_inbox_stats(stats)).await;

    let text = server.get("/metrics").await.text();
    for line in [
        "amtsbote_queues_up 1",
        "amtsbote_jobs{queue=\"transmit\",state=\"pending\"} 3",
        "amtsbote_jobs{queue=\"notify\",state=\"dead\"} 1",
        "amtsbote_jobs{queue=\"print\",state=\"pending\"} 0",
        "amtsbote_inbox_files_total{outcome=\"accepted\"} 7",
        "amtsbote_inbox_files_total{outcome=\"refused\"} 1",
        "amtsbote_inbox_retries_total 0",
        "amtsbote_inbox_waiting_files{tenant=\"demo\"} 12",
        "amtsbote_inbox_processing_files{tenant=\"demo\"} 2",
        "amtsbote_inbox_oldest_waiting_seconds{tenant=\"demo\"} 340",
        "amtsbote_inbox_not_taken_files{tenant=\"demo\"} 1",
        "# TYPE amtsbote_inbox_files_total counter",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
    }
    // Every sample line is `name{labels} value` or `name value`, as Prometheus reads it.
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let (_, value) = l.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok(), "{l}");
    }

    // The queue database gone: the rest is still served, and says so.
    queues.pool().close().await;
    let text = server.get("/metrics").await.text();
    assert!(text.lines().any(|l| l == "amtsbote_queues_up 0"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("amtsbote_requests{")), "{text}");
    server.stop().await;
}

#[tokio::test]
async fn tenant_and_content_type_are_checked() {
    let server = Server::start().await;
    let reply = server.post("/api/v1/nachrichten?tenant=koeln", XML, ERSUCHEN).await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert!(reply.reasons()[0].contains("koeln"));
    let reply = server.send("POST", "/api/v1/nachrichten", &[("Content-Type", XML), ("X-Amtsbote-Tenant", "koeln")], ERSUCHEN.as_bytes()).await;
    assert_eq!(reply.status, 403, "{}", reply.text());

    let reply = server.post("/api/v1/nachrichten?tenant=demo", "application/json", ERSUCHEN).await;
    assert_eq!(reply.status, 415, "{}", reply.text());
    assert!(!reply.reasons().is_empty());
    let reply = server.send("POST", "/api/v1/nachrichten?tenant=demo", &[], ERSUCHEN.as_bytes()).await;
    assert_eq!(reply.status, 415, "{}", reply.text());
    let reply = server.post("/api/v1/nachrichten?tenant=demo&tennant=x", XML, ERSUCHEN).await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert_eq!(server.ledger.list(&ListFilter::default()).await.unwrap().len(), 0);

    // One tenant configured and none named: that one.
    let reply = server.post("/api/v1/nachrichten", "Application/XML; charset=UTF-8", ERSUCHEN).await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    let id = reply.json()["id"].as_i64().unwrap();
    assert_eq!(server.get(&format!("/api/v1/requests/{id}")).await.json()["tenant"], "demo");
    server.stop().await;

    // Several: the client must say which.
    let server = Server::start_with(vec![tenant("a", "vbh:057660440000"), tenant("b", "vbh:053150000000")], 1 << 20).await;
    let reply = server.post("/api/v1/nachrichten", XML, ERSUCHEN).await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(reply.reasons()[0].contains("X-Amtsbote-Tenant"));
    let reply = server.post("/api/v1/nachrichten?tenant=a", XML, ERSUCHEN).await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    server.stop().await;
}

#[tokio::test]
async fn unknown_and_malformed_ids_and_routes() {
    let server = Server::start().await;
    let reply = server.get("/api/v1/requests/4711").await;
    assert_eq!(reply.status, 404, "{}", reply.text());
    assert!(reply.reasons()[0].contains("4711"));
    for bad in ["abc", "0", "-3", "1.5"] {
        let reply = server.get(&format!("/api/v1/requests/{bad}")).await;
        assert_eq!(reply.status, 400, "{bad}: {}", reply.text());
        assert!(!reply.reasons().is_empty());
    }
    let reply = server.get("/api/v1/nope").await;
    assert_eq!(reply.status, 404);
    assert!(!reply.reasons().is_empty());
    let reply = server.get("/api/v1/nachrichten").await;
    assert_eq!(reply.status, 405, "{}", reply.text());
    assert_eq!(reply.json()["error"], "method not allowed");
    assert_eq!(reply.header("allow"), Some("POST"));
    server.stop().await;
}

/// A ledger that never answers, as when the database is down.
struct DownLedger;

fn down<T>() -> Result<T, LedgerError> {
    Err(LedgerError::Database(sqlx::Error::PoolTimedOut))
}

#[async_trait::async_trait]
impl Ledger for DownLedger {
    async fn migrate(&self) -> Result<(), LedgerError> {
        down()
    }
    async fn record(&self, _: NewRequest, _: RequestState, _: &ledger::Actor, _: Option<&str>) -> Result<Recorded, LedgerError> {
        down()
    }
    async fn transition(&self, _: RequestId, _: RequestState, _: RequestState, _: &ledger::Actor, _: Option<&str>) -> Result<(), LedgerError> {
        down()
    }
    async fn get(&self, _: RequestId) -> Result<Option<Request>, LedgerError> {
        down()
    }
    async fn journal(&self, _: RequestId) -> Result<Vec<Event>, LedgerError> {
        down()
    }
    async fn payload(&self, _: RequestId) -> Result<Vec<u8>, LedgerError> {
        down()
    }
    async fn find_by_source(&self, _: &str) -> Result<Option<Request>, LedgerError> {
        down()
    }
    async fn list(&self, _: &ListFilter) -> Result<Vec<Request>, LedgerError> {
        down()
    }
    async fn count_by_state(&self) -> Result<Vec<(RequestState, u64)>, LedgerError> {
        down()
    }
    async fn ping(&self) -> Result<(), LedgerError> {
        down()
    }
    async fn begin_transmission(&self, _: RequestId, _: RequestState, _: &str, _: &ledger::Actor, _: Option<&str>) -> Result<String, LedgerError> {
        down()
    }
    async fn route(&self, _: RequestId, _: RequestState, _: &ledger::RoutedTo, _: &ledger::Actor, _: Option<&str>) -> Result<(), LedgerError> {
        down()
    }
    async fn relay_outbox(&self, _: u32, _: ledger::PushTriggers<'_>) -> Result<usize, LedgerError> {
        down()
    }
    async fn outbox_len(&self) -> Result<u64, LedgerError> {
        down()
    }
    async fn waiting_without_trigger(&self, _: RequestState, _: chrono::DateTime<chrono::Utc>, _: RequestId, _: u32) -> Result<Vec<(RequestId, u32)>, LedgerError> {
        down()
    }
    async fn retrigger(&self, _: RequestId, _: u32, _: amtsbote::queue::Queue) -> Result<bool, LedgerError> {
        down()
    }
    async fn store_received(&self, _: ledger::NewReceived) -> Result<ledger::StoredReceived, LedgerError> {
        down()
    }
    async fn received(&self, _: &str) -> Result<Option<ledger::Received>, LedgerError> {
        down()
    }
    async fn received_payload(&self, _: &str) -> Result<Option<Vec<u8>>, LedgerError> {
        down()
    }
    async fn claim_received(&self, _: &str, _: &str, _: chrono::DateTime<chrono::Utc>) -> Result<bool, LedgerError> {
        down()
    }
    async fn mark_received(&self, _: &str, _: ledger::ReceivedState, _: ledger::ReceivedState) -> Result<bool, LedgerError> {
        down()
    }
    #[allow(clippy::too_many_arguments)]
    async fn schedule_attempt(&self, _: RequestId, _: RequestState, _: amtsbote::queue::Queue, _: u32, _: chrono::DateTime<chrono::Utc>, _: &ledger::Actor, _: Option<&str>) -> Result<(), LedgerError> {
        down()
    }
    async fn open_print_batch(&self, _: chrono::NaiveDate, _: &str, _: &[RequestId]) -> Result<Option<ledger::PrintBatch>, LedgerError> {
        down()
    }
    async fn claim_print_batch(&self, _: &str, _: &str, _: chrono::DateTime<chrono::Utc>, _: Option<&str>) -> Result<Option<String>, LedgerError> {
        down()
    }
    async fn print_file_done(&self, _: &str, _: u32, _: &str, _: &str, _: &[(RequestId, u32)], _: &[(RequestId, String)], _: &ledger::Actor) -> Result<(), LedgerError> {
        down()
    }
    async fn finish_print_batch(&self, _: &str) -> Result<(), LedgerError> {
        down()
    }
    async fn print_batches(&self) -> Result<Vec<ledger::PrintBatchInfo>, LedgerError> {
        down()
    }
    async fn print_files(&self, _: &str) -> Result<Vec<ledger::PrintFileInfo>, LedgerError> {
        down()
    }
    async fn print_letters(&self, _: &str) -> Result<Vec<ledger::PrintLetter>, LedgerError> {
        down()
    }
    async fn record_print_feedback(&self, _: &[ledger::FeedbackEntry], _: &ledger::Actor) -> Result<ledger::FeedbackRecorded, LedgerError> {
        down()
    }
    async fn create_token(&self, _: &ledger::NewToken) -> Result<ledger::AccessToken, LedgerError> {
        down()
    }
    async fn revoke_token(&self, _: &str) -> Result<Option<ledger::AccessToken>, LedgerError> {
        down()
    }
    async fn tokens(&self) -> Result<Vec<ledger::AccessToken>, LedgerError> {
        down()
    }
    async fn token_by_hash(&self, _: &str) -> Result<Option<ledger::AccessToken>, LedgerError> {
        down()
    }
    async fn touch_token(&self, _: &str, _: chrono::DateTime<chrono::Utc>) -> Result<(), LedgerError> {
        down()
    }
    async fn open_notifications(&self, _: u32) -> Result<Vec<ledger::Notification>, LedgerError> {
        down()
    }
    async fn open_notification_count(&self) -> Result<u64, LedgerError> {
        down()
    }
    async fn compose_mails(&self, _: &[ledger::NewMail], _: &[(String, String)]) -> Result<(), LedgerError> {
        down()
    }
    async fn claim_mails(&self, _: &str, _: chrono::DateTime<chrono::Utc>, _: u32) -> Result<Vec<ledger::Mail>, LedgerError> {
        down()
    }
    async fn mark_mails(&self, _: &str, _: Vec<ledger::MailMark>) -> Result<(), LedgerError> {
        down()
    }
    async fn mails_in_hand(&self) -> Result<Vec<ledger::Mail>, LedgerError> {
        down()
    }
    async fn let_go_of_mail(&self, _: &str, _: &str) -> Result<bool, LedgerError> {
        down()
    }
    async fn mail(&self, _: &str) -> Result<Option<ledger::Mail>, LedgerError> {
        down()
    }
    async fn mails(&self, _: bool, _: u32) -> Result<Vec<ledger::Mail>, LedgerError> {
        down()
    }
    async fn notifications_of_mail(&self, _: &str) -> Result<Vec<ledger::Notification>, LedgerError> {
        down()
    }
    async fn notifications_of_request(&self, _: RequestId) -> Result<Vec<ledger::Notification>, LedgerError> {
        down()
    }
    async fn mails_of_notification(&self, _: &str) -> Result<Vec<ledger::Mail>, LedgerError> {
        down()
    }
    async fn retry_mail(&self, _: &str) -> Result<bool, LedgerError> {
        down()
    }
    async fn discard_mail(&self, _: &str) -> Result<bool, LedgerError> {
        down()
    }
    async fn mail_counts(&self) -> Result<Vec<(ledger::MailStatus, u64)>, LedgerError> {
        down()
    }
    fn outbox_signal(&self) -> Arc<tokio::sync::Notify> {
        Arc::default()
    }
}

#[tokio::test]
async fn ledger_down_is_503_try_again_without_internals() {
    let server = Server::start_on(Arc::new(DownLedger), vec![tenant("demo", "vbh:057660440000")], 1 << 20, tempfile::tempdir().unwrap()).await;
    for reply in [
        server.post("/api/v1/nachrichten?tenant=demo", XML, ERSUCHEN).await,
        server.get("/api/v1/requests/1").await,
        server.get("/api/v1/requests").await,
        server.get("/healthz").await,
        server.get("/metrics").await,
    ] {
        assert_eq!(reply.status, 503, "{}", reply.text());
        let json = reply.json();
        assert!(json["error"].as_str().unwrap().contains("try again"), "{json}");
        assert!(reply.header("retry-after").is_some());
        let text = reply.text().to_ascii_lowercase();
        assert!(!text.contains("pool") && !text.contains("sqlx") && !text.contains("database"), "{text}");
    }
    assert_eq!(server.get("/healthz").await.json()["status"], "unavailable");
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The directory over HTTP (answering from the sample data in examples/directory).

#[tokio::test]
async fn zustaendigkeit_as_json_follows_the_lookup_contract() {
    let server = Server::start().await;
    let reply = server.get("/api/v1/zustaendigkeit?plz=50667&ort=K%C3%B6ln&strasse=Hohe%20Str.%2012a&einnahmeart=GWST&datum=2026-11-27").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let json = reply.json();
    assert_eq!(json["status"], "found", "{json}");
    assert_eq!(json["kennung"], "vbh:053150000000");
    assert_eq!(json["kanal"], "xta");
    // The specific Einnahmeart wins over `*`.
    let json = server.get("/api/v1/zustaendigkeit?plz=50667&ort=K%C3%B6ln&einnahmeart=GRST&datum=2026-11-27").await.json();
    assert_eq!(json["kennung"], "vbh:053150000001", "{json}");
    let json = server.get("/api/v1/zustaendigkeit?plz=99999&ort=Nirgendwo").await.json();
    assert_eq!(json["status"], "not_found");
    let reply = server.get("/api/v1/zustaendigkeit?ort=K%C3%B6ln").await;
    assert_eq!(reply.status, 400);
    server.stop().await;
}

#[tokio::test]
async fn zustaendigkeit_as_the_xml_pair() {
    let server = Server::start().await;
    let anfrage = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/messages/zustaendigkeit-anfrage.xml")).unwrap();
    let reply = server.post("/api/v1/zustaendigkeit", "application/xml", &anfrage).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let answer = Checker::with_defaults().check(&reply.body).unwrap_or_else(|e| panic!("{e}: {}", reply.text()));
    let amtsbote::xamtshilfe::Message::ZustaendigkeitAntwort(answer) = answer else { panic!("{}", reply.text()) };
    match reply.header("x-amtsbote-lookup") {
        Some("found") => assert!(answer.behoerde.is_some()),
        Some("not_found" | "ambiguous") => assert!(answer.behoerde.is_none()),
        other => panic!("{other:?}"),
    }
    // Unknown address: the empty answer.
    let unknown = anfrage.replace(
        &anfrage[anfrage.find("<postleitzahl>").unwrap()..anfrage.find("</postleitzahl>").unwrap()],
        "<postleitzahl>99999",
    );
    let reply = server.post("/api/v1/zustaendigkeit", "application/xml", &unknown).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-amtsbote-lookup"), Some("not_found"));
    assert!(!reply.text().contains("<behoerde>"), "{}", reply.text());
    // Another message kind is refused.
    let ersuchen = ersuchen(1);
    assert_eq!(server.post("/api/v1/zustaendigkeit", "application/xml", &ersuchen).await.status, 400);
    server.stop().await;
}

#[tokio::test]
async fn a_deactivated_tenant_is_refused_before_anything_is_read() {
    let off = Tenant { active: false, ..tenant("off", "vbh:1") };
    let server = Server::start_with(vec![off, tenant("on", "vbh:057660440000")], 1 << 20).await;
    let reply = server.post("/api/v1/nachrichten?tenant=off", "application/xml", &ersuchen(1)).await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert!(reply.reasons()[0].contains("deactivated"));
    assert_eq!(count(&server.ledger, RequestState::Validated).await, 0);
    assert_eq!(server.post("/api/v1/nachrichten?tenant=on", "application/xml", &ersuchen(1)).await.status, 202);
    server.stop().await;
}

/// A connection to the server from the loopback address `from` (another client than
/// 127.0.0.1: Linux routes all of 127.0.0.0/8 to the loopback device).
async fn connect_from(server: &Server, from: [u8; 4]) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::from((from, 0))).unwrap();
    socket.connect(server.addr).await.unwrap()
}

/// A post whose headers announce `len` bytes and whose body stops after 10: it holds its
/// connection (and its reservation) until the body timeout.
async fn stalled_post(server: &Server, from: [u8; 4], len: usize) -> TcpStream {
    let mut stream = connect_from(server, from).await;
    let head = format!(
        "POST /api/v1/nachrichten?tenant=demo HTTP/1.1\r\nHost: x\r\n{}Content-Type: application/xml\r\nContent-Length: {len}\r\n\r\n<?xml vers",
        server.auth()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

#[tokio::test]
async fn one_client_stalling_its_bodies_cannot_keep_healthz_and_other_clients_from_being_served() {
    // Issue 13: 1,030 connections stalled mid-body kept /healthz from answering until the body
    // timeout. One client address may hold http.max_connections_per_client connections; the
    // rest of it is closed at once, and another client is served.
    let limits = HttpLimits { max_connections: 40, max_connections_per_client: 8, body_timeout: std::time::Duration::from_secs(60), ..HttpLimits::default() };
    let server = Server::start_strict(limits).await;
    let mut stalled = Vec::new();
    for _ in 0..60 {
        stalled.push(stalled_post(&server, [127, 0, 0, 1], 5_000).await);
    }
    // Another client: answered at once.
    let mut other = connect_from(&server, [127, 0, 0, 2]).await;
    other.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let raw = read_until_closed(&mut other, std::time::Duration::from_secs(5)).await;
    assert!(!raw.is_empty(), "/healthz from another client was not answered while one client stalls 60 connections");
    assert_eq!(Reply::parse(&raw).status, 200);
    // The stalling client's connections beyond its share were closed at once: at most 8 open.
    let mut closed = 0;
    for s in &mut stalled {
        let mut buf = [0u8; 1];
        // Closed: end of stream, or reset (the server closed it with our bytes unread).
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(std::time::Duration::from_millis(50), s.read(&mut buf)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, 60 - 8, "the connections beyond the client's share are closed");
    let metrics = {
        let mut s = connect_from(&server, [127, 0, 0, 3]).await;
        s.write_all(format!("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{}\r\n", server.auth()).as_bytes()).await.unwrap();
        Reply::parse(&read_until_closed(&mut s, std::time::Duration::from_secs(5)).await).text()
    };
    assert!(metrics.lines().any(|l| l == "amtsbote_http_refused_total{reason=\"connections_per_client\"} 52"), "{metrics}");
    drop(stalled);
    server.stop().await;
}

#[tokio::test]
async fn bodies_beyond_the_bytes_in_flight_get_503_with_retry_after_and_are_not_recorded() {
    // Issue 13: 16 parallel 38 MB posts took RSS to 2.2 GB. The bodies in flight are held to
    // http.max_bytes_in_flight; a post beyond it is turned away before its body is read.
    // Room for one and a half samples: a slow client holding one, a second does not fit.
    let len = ersuchen(1).len() as u64;
    let limits = HttpLimits { max_bytes_in_flight: len * 3 / 2, body_timeout: std::time::Duration::from_secs(60), ..HttpLimits::default() };
    let server = Server::start_strict(limits).await;
    let mut slow = stalled_post(&server, [127, 0, 0, 1], len as usize).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let reply = server.post("/api/v1/nachrichten?tenant=demo", "application/xml", &ersuchen(2)).await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(reply.header("retry-after"), Some("2"));
    assert!(reply.json()["reasons"][0].as_str().unwrap().contains("http.max_bytes_in_flight"), "{}", reply.text());
    assert!(server.ledger.list(&ListFilter::default()).await.unwrap().is_empty(), "nothing recorded");
    // The slow client gives up: its room is free again, and the same post is taken.
    slow.shutdown().await.unwrap();
    drop(slow);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let reply = server.post("/api/v1/nachrichten?tenant=demo", "application/xml", &ersuchen(1)).await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    server.stop().await;
}

#[tokio::test]
async fn the_request_list_answers_small_pages_and_says_when_more_follow() {
    // Issue 13: `GET /api/v1/requests?limit=1000` answered 53–56 MB. A page holds at most
    // 200 requests, each detail cut to 500 characters; `more` says that another page follows.
    let server = Server::start().await;
    for n in 0..230 {
        assert_eq!(server.post("/api/v1/nachrichten?tenant=demo", "application/xml", &ersuchen(n)).await.status, 202);
    }
    // One with a long detail (as many reasons make): the list shows its first 500 characters.
    let newest = server.ledger.list(&ListFilter::default().limit(1)).await.unwrap().remove(0);
    let actor = ledger::Actor::system("test");
    server.ledger.transition(newest.id, RequestState::Validated, RequestState::Rejected, &actor, Some(&"Grund; ".repeat(2_000))).await.unwrap();
    let page = server.get("/api/v1/requests?limit=1000").await.json();
    assert_eq!(page["requests"].as_array().unwrap().len(), 200, "{}", page["limit"]);
    assert_eq!((page["limit"].as_u64(), page["more"].as_bool()), (Some(200), Some(true)));
    let rest = server.get("/api/v1/requests?limit=200&offset=200").await.json();
    assert_eq!(rest["requests"].as_array().unwrap().len(), 30);
    assert_eq!(rest["more"].as_bool(), Some(false));
    for r in page["requests"].as_array().unwrap().iter().chain(rest["requests"].as_array().unwrap()) {
        assert!(r.get("payload").is_none() && r.get("journal").is_none(), "{r}");
        assert!(r["state_detail"].as_str().map_or(0, |d| d.chars().count()) <= 501, "{r}");
    }
    let first = &page["requests"][0];
    assert_eq!(first["id"].as_i64(), Some(newest.id.0));
    assert!(first["state_detail"].as_str().unwrap().starts_with("Grund; Grund;") && first["state_detail"].as_str().unwrap().ends_with('…'));
    // The whole detail is in the request itself.
    let whole = server.get(&format!("/api/v1/requests/{}", newest.id)).await.json();
    assert_eq!(whole["state_detail"].as_str().unwrap().len(), "Grund; ".len() * 2_000);
    server.stop().await;
}
