//! `amtsbote xta-sim`: an XTA 2 test server that the client cannot tell from a real one for
//! the operations of [`super::soap::Operation`], with fault injection and statistics.
//!
//! One URL path per WSDL port (`/ManagementPort`, `/SendXtaPort`, `/MsgBoxPort`), SOAP 1.2
//! over HTTP/1.1 on its own hyper accept loop. It keeps accounts (authors allowed to send),
//! readers with per-service availability and an optional permanent fault (from a TOML file;
//! without one every author may send, every reader exists and every service is available),
//! one message box per reader, transport reports (status 0, then green after a delay), and
//! detects duplicates: a MessageID sent again is accepted and counted in `resends`, never
//! delivered twice; a new MessageID whose content carries an xAmtshilfe Nachrichten-UUID (or,
//! when none can be read, a SHA-256) already delivered counts in `same_content_twice`.
//!
//! Faults by flags: a share of requests (`fault_rate`) gets one of the chosen kinds — HTTP
//! 503, a technical-problem SOAP fault, an answer delayed past the client's timeout, or a
//! connection closed mid-answer (the request was processed: the answer is what gets lost);
//! an outage window answers 503 to everything. `seed` makes the choice repeatable.
//! `GET /stats` answers JSON; `POST /inbox/<reader>` puts a message into a reader's box.
//!
//! Memory: with [`SimConfig::box_dir`] (the simulator inside `serve` sets it) the boxes hold
//! only the metadata of their messages; the content is written to a file there when it is
//! accepted and read back for getMessage, so a simulator that took 16 messages of 38 MB
//! does not keep 600 MB in memory (issue 13). [`SimServer::content_bytes_in_memory`] says
//! what it holds.
//!
//! TLS (`SimConfig::tls`, `--tls-cert/--tls-key [--client-ca]`): the simulator speaks HTTPS
//! with its certificate, and [`SimServer::url`] answers `https://…`. With a client CA every
//! connection must present a certificate signed by it (rustls' `WebPkiClientVerifier`), or
//! the handshake is refused and nothing of the connection reaches the XTA operations. The
//! handshake runs in the connection's own task, never in the accept loop, under the
//! setting's timeout; refused or timed-out handshakes are counted
//! ([`SimServer::handshakes_refused`]).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, StatusCode};
use sha2::Digest as _;
use tokio::net::TcpListener;
use tokio::sync::Mutex;

use super::fault::{Fault, FaultKind};
use super::tls::ServerTls;
use super::soap::{
    self, Availability, BusinessScenario, Content, ContentContainer, Identifier, KeyCode, LookupServiceResult, MessageId, MessageMetaData, MsgBoxResponse,
    Operation, Port, Qualifier, Request, Response, TransportReport, TransportStatus,
};
use super::xml::{self, Limits};

type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// A kind of injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InjectedFault {
    /// HTTP 503 without a SOAP body.
    Unavailable,
    /// A SOAP fault XTAWSTechnicalProblemException (9030), HTTP 500.
    Technical,
    /// The request is processed, its answer delayed by `slow` (beyond the client's timeout).
    Slow,
    /// The request is processed, then the connection closed halfway through the answer.
    Drop,
}

impl InjectedFault {
    pub fn name(self) -> &'static str {
        match self {
            InjectedFault::Unavailable => "503",
            InjectedFault::Technical => "technical",
            InjectedFault::Slow => "slow",
            InjectedFault::Drop => "drop",
        }
    }
}

impl std::str::FromStr for InjectedFault {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "503" => Ok(InjectedFault::Unavailable),
            "technical" => Ok(InjectedFault::Technical),
            "slow" => Ok(InjectedFault::Slow),
            "drop" => Ok(InjectedFault::Drop),
            other => Err(format!("unknown fault kind '{}' (one of: 503, technical, slow, drop)", xml::clip(other))),
        }
    }
}

/// A permanent fault a reader's messages get (in the TOML file: `permanent_fault = "..."`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PermanentFault {
    Permission,
    Parameter,
    Schema,
    Virus,
}

impl PermanentFault {
    fn kind(self) -> FaultKind {
        match self {
            PermanentFault::Permission => FaultKind::PermissionDenied,
            PermanentFault::Parameter => FaultKind::ParameterIsNotValid,
            PermanentFault::Schema => FaultKind::MessageSchemaViolation,
            PermanentFault::Virus => FaultKind::MessageVirusDetection,
        }
    }
}

/// The simulator's TOML file.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimFile {
    /// Author identifiers allowed to send; absent: every author.
    pub accounts: Option<Vec<String>>,
    /// The readers; absent or empty: every reader exists with every service.
    #[serde(default)]
    pub readers: Vec<ReaderConfig>,
}

/// A reader of the TOML file.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReaderConfig {
    pub id: String,
    /// Services for which lookupService answers true; `"*"` for all.
    #[serde(default)]
    pub available: Vec<String>,
    /// Services for which lookupService answers ServiceIsAvailableUnknown; `"*"` for all.
    #[serde(default)]
    pub unknown: Vec<String>,
    /// Every sendMessage to this reader gets this fault.
    pub permanent_fault: Option<PermanentFault>,
    /// The final status of the transport reports of messages to this reader, once the
    /// report delay has passed: `green` (the default), `yellow` (with a warning) or `red`
    /// (with an error: the reader did not get it).
    #[serde(default)]
    pub report: FinalReport,
}

/// The final status a reader's transport reports get ([`ReaderConfig::report`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinalReport {
    #[default]
    Green,
    Yellow,
    Red,
}

impl SimFile {
    pub fn load(path: &Path) -> anyhow::Result<SimFile> {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }
}

/// Where `serve`'s built-in simulator writes its URL: `<data_dir>/xta-sim/url` (read by
/// `amtsbote xta-sim put`).
pub fn url_file(data_dir: &Path) -> PathBuf {
    data_dir.join("xta-sim/url")
}

/// Everything the simulator is told.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub file: SimFile,
    /// After how long a transport report turns green.
    pub report_delay: Duration,
    /// The share of SOAP requests (0.0–1.0) that get an injected fault.
    pub fault_rate: f64,
    pub faults: Vec<InjectedFault>,
    /// How long a `slow` answer is delayed.
    pub slow: Duration,
    /// An outage window: from `outage_after` after the start, for `outage_for`.
    pub outage_after: Option<Duration>,
    pub outage_for: Duration,
    pub seed: u64,
    /// Every SOAP request body is written into this directory.
    pub record: Option<PathBuf>,
    /// What it accepted (MessageIDs with their metadata, content keys, times) is kept in
    /// this file, one JSON line per message, and read again at start: a restarted
    /// simulator still answers the transport reports of what it took before and still
    /// counts a re-send as one. The boxes' contents are not kept.
    pub state_file: Option<PathBuf>,
    /// The content of the messages in the boxes is kept in files of this directory (emptied
    /// at start: the boxes are not kept across restarts), not in memory; only metadata is
    /// held. Without it the boxes keep their content in memory.
    pub box_dir: Option<PathBuf>,
    /// Answer getMessage with MTOM (multipart/related) instead of inline base64.
    pub mtom: bool,
    pub limits: Limits,
    pub server_identity: String,
    /// The `<prefix>` of the MessageIDs it creates.
    pub message_id_prefix: String,
    /// HTTPS with this certificate (and client-certificate checking when it names a client
    /// CA); plain HTTP without.
    pub tls: Option<ServerTls>,
    /// Told whenever a message is put into a box (`POST /inbox/<reader>`): `serve`'s
    /// built-in simulator wakes the receive stage with it, so that the message is received
    /// at once instead of on the next beat of the schedule.
    pub on_inbox: Option<Arc<tokio::sync::Notify>>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            file: SimFile::default(),
            report_delay: Duration::from_secs(2),
            fault_rate: 0.0,
            faults: vec![InjectedFault::Unavailable, InjectedFault::Technical, InjectedFault::Slow, InjectedFault::Drop],
            slow: Duration::from_secs(90),
            outage_after: None,
            outage_for: Duration::ZERO,
            seed: 1,
            record: None,
            state_file: None,
            box_dir: None,
            mtom: false,
            limits: Limits::default(),
            server_identity: "amtsbote-xta-sim".into(),
            message_id_prefix: "xtasim".into(),
            tls: None,
            on_inbox: None,
        }
    }
}

/// The counters of `GET /stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    /// sendMessage calls answered with success (re-sends included).
    pub accepted: u64,
    /// Distinct MessageIDs placed in a box.
    pub delivered: u64,
    /// A MessageID sent again (a lost answer or a crash: harmless).
    pub resends: u64,
    /// A second MessageID with content already delivered (must never happen).
    pub same_content_twice: u64,
    /// Faults answered, by kind (`503`, `technical`, `slow`, `drop`, `outage`, `permanent`,
    /// and the kinds of ordinary faults such as `permission_denied`).
    pub faults: BTreeMap<String, u64>,
    /// Messages handed out by getMessage.
    pub fetched: u64,
    /// Messages closed (taken out of a box).
    pub closed: u64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Sent {
    metadata: MessageMetaData,
    accepted_at: std::time::SystemTime,
}

/// A line of [`SimConfig::state_file`].
#[derive(serde::Serialize, serde::Deserialize)]
struct Kept {
    #[serde(flatten)]
    sent: Sent,
    content_key: String,
}

struct Boxed {
    metadata: MessageMetaData,
    /// The content; with a [`SimConfig::box_dir`] without its data, which is in `file`.
    container: ContentContainer,
    file: Option<BoxFile>,
}

/// A boxed message's content on disk: the data of the message and of each attachment, one
/// after another.
#[derive(Clone)]
struct BoxFile {
    path: PathBuf,
    lengths: Vec<usize>,
}

impl BoxFile {
    /// Writes `container`'s data into a new file of `dir`.
    fn write(dir: &Path, name: &str, container: &ContentContainer) -> std::io::Result<BoxFile> {
        use std::io::Write as _;
        let path = dir.join(name);
        let mut file = std::fs::File::create(&path)?;
        let mut lengths = Vec::new();
        for c in std::iter::once(&container.message).chain(&container.attachments) {
            file.write_all(&c.data)?;
            lengths.push(c.data.len());
        }
        Ok(BoxFile { path, lengths })
    }

    /// Fills `container`'s data from the file.
    fn read_into(&self, container: &mut ContentContainer) -> std::io::Result<()> {
        let mut data = std::fs::read(&self.path)?;
        let mut parts = Vec::with_capacity(self.lengths.len());
        for len in self.lengths.iter().rev() {
            let at = data.len().checked_sub(*len).ok_or_else(|| std::io::Error::other("box file shorter than its content"))?;
            parts.push(data.split_off(at));
        }
        for (c, part) in std::iter::once(&mut container.message).chain(container.attachments.iter_mut()).zip(parts.into_iter().rev()) {
            c.data = part;
        }
        Ok(())
    }
}

struct State {
    rng: SplitMix,
    sent: HashMap<MessageId, Sent>,
    content_keys: HashSet<String>,
    boxes: HashMap<String, VecDeque<Boxed>>,
    /// MsgBoxRequestID → the reader it was given to.
    requests: HashMap<String, String>,
    stats: Stats,
    /// [`SimConfig::state_file`], open for appending.
    kept: Option<std::fs::File>,
}

struct Shared {
    config: SimConfig,
    readers: HashMap<String, ReaderConfig>,
    accounts: Option<HashSet<String>>,
    started: Instant,
    seq: AtomicU64,
    /// TCP connections accepted (not in `/stats`, whose keys are fixed): shows keep-alive.
    connections: AtomicU64,
    /// TLS handshakes that failed or timed out (not in `/stats` either).
    handshakes_refused: AtomicU64,
    state: Mutex<State>,
}

/// A running simulator.
pub struct SimServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl SimServer {
    /// Binds `addr` (e.g. `127.0.0.1:0`) and serves until [`SimServer::stop`] or drop. A
    /// TLS setting that cannot be used is an error (its `TlsError` inside) before binding.
    pub async fn start(addr: &str, config: SimConfig) -> std::io::Result<SimServer> {
        let tls = match &config.tls {
            Some(tls) => Some((tokio_rustls::TlsAcceptor::from(Arc::new(tls.rustls_config().map_err(std::io::Error::other)?)), tls.handshake_timeout)),
            None => None,
        };
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        if let Some(dir) = &config.record {
            std::fs::create_dir_all(dir)?;
        }
        let kept = match &config.state_file {
            Some(path) => Some(read_kept(path)?),
            None => None,
        };
        if let Some(dir) = &config.box_dir {
            // What a previous run left: its boxes are gone with it.
            match std::fs::remove_dir_all(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(std::io::Error::new(e.kind(), format!("{}: {e}", dir.display()))),
            }
            std::fs::create_dir_all(dir).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
        }
        let shared = Arc::new(Shared::new(config));
        if let Some((file, kept)) = kept {
            let mut state = shared.state.lock().await;
            for k in kept {
                state.content_keys.insert(k.content_key);
                state.sent.insert(k.sent.metadata.message_id.clone(), k.sent);
            }
            state.kept = Some(file);
        }
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, shared.clone(), tls, async move {
            let _ = stopped.await;
        }));
        Ok(SimServer { addr, shared, stop: Some(stop), task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>` (`https://` with TLS), the base URL for
    /// [`super::client::ClientConfig`].
    pub fn url(&self) -> String {
        let scheme = if self.shared.config.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// How many TCP connections it accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// How many TLS handshakes failed (a client certificate refused, none presented, our
    /// certificate not trusted by the client) or timed out.
    pub fn handshakes_refused(&self) -> u64 {
        self.shared.handshakes_refused.load(Ordering::Relaxed)
    }

    pub async fn stats(&self) -> Stats {
        self.shared.state.lock().await.stats.clone()
    }

    /// Bytes of message content its boxes hold in memory (0 with a [`SimConfig::box_dir`]).
    pub async fn content_bytes_in_memory(&self) -> usize {
        let state = self.shared.state.lock().await;
        state
            .boxes
            .values()
            .flatten()
            .map(|b| b.container.message.data.len() + b.container.attachments.iter().map(|a| a.data.len()).sum::<usize>())
            .sum()
    }

    /// Puts a message into `reader`'s box, as `POST /inbox/<reader>` does.
    pub async fn put_inbox(&self, reader: &str, content: Vec<u8>) -> MessageId {
        self.shared.put_inbox(reader, content).await
    }

    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.unwrap_or(Ok(()))
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The accept loop: one task per client connection (its TLS handshake first, when
/// configured, then hyper HTTP/1.1), until `shutdown`.
async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<(tokio_rustls::TlsAcceptor, Duration)>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::TokioIo;
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "xta-sim: cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        shared.connections.fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let Some((acceptor, timeout)) = tls else {
                return serve_connection(TokioIo::new(stream), shared).await;
            };
            match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => serve_connection(TokioIo::new(stream), shared).await,
                Ok(Err(e)) => {
                    shared.handshakes_refused.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(error = %e, "xta-sim: TLS handshake refused");
                }
                Err(_) => {
                    shared.handshakes_refused.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(timeout_ms = timeout.as_millis() as u64, "xta-sim: no TLS handshake in time; connection closed");
                }
            }
        });
    }
}

/// HTTP/1.1 on one connection, plain or TLS.
async fn serve_connection<I>(io: I, shared: Arc<Shared>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(shared.handle(req).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(Duration::from_secs(30));
    let _ = builder.serve_connection(io, service).await;
}

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> hyper::Response<Body> {
    let body: Bytes = body.into();
    let mut resp = hyper::Response::new(Full::new(body).map_err(|never| match never {}).boxed());
    *resp.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        resp.headers_mut().insert(CONTENT_TYPE, v);
    }
    resp
}

fn text(status: StatusCode, message: &str) -> hyper::Response<Body> {
    full(status, "text/plain; charset=utf-8", format!("{message}\n"))
}

/// An answer that announces its full length, sends half of it and breaks the connection.
fn dropped(encoded: soap::Encoded) -> hyper::Response<Body> {
    let total = encoded.body.len();
    let half = Bytes::from(encoded.body).slice(..total / 2);
    let (mut tx, channel) = http_body_util::channel::Channel::<Bytes, Box<dyn std::error::Error + Send + Sync>>::new(2);
    tokio::spawn(async move {
        let _ = tx.send_data(half).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        tx.abort("connection dropped by fault injection".into());
    });
    let mut resp = hyper::Response::new(channel.boxed());
    if let Ok(v) = encoded.content_type.parse() {
        resp.headers_mut().insert(CONTENT_TYPE, v);
    }
    if let Ok(v) = total.to_string().parse() {
        resp.headers_mut().insert(CONTENT_LENGTH, v);
    }
    resp
}

fn soap_answer(status: StatusCode, encoded: soap::Encoded) -> hyper::Response<Body> {
    full(status, &encoded.content_type, encoded.body)
}

impl Shared {
    fn new(config: SimConfig) -> Shared {
        let readers = config.file.readers.iter().map(|r| (r.id.clone(), r.clone())).collect();
        let accounts = config.file.accounts.as_ref().map(|a| a.iter().cloned().collect());
        let rng = SplitMix(config.seed);
        Shared {
            config,
            readers,
            accounts,
            started: Instant::now(),
            seq: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            handshakes_refused: AtomicU64::new(0),
            state: Mutex::new(State {
                rng,
                sent: HashMap::new(),
                content_keys: HashSet::new(),
                boxes: HashMap::new(),
                requests: HashMap::new(),
                stats: Stats::default(),
                kept: None,
            }),
        }
    }

    async fn handle(&self, req: hyper::Request<Incoming>) -> hyper::Response<Body> {
        let path = req.uri().path().to_owned();
        let method = req.method().clone();
        if method == Method::GET && path == "/stats" {
            let stats = self.state.lock().await.stats.clone();
            return match serde_json::to_vec(&stats) {
                Ok(json) => full(StatusCode::OK, "application/json", json),
                Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode the statistics"),
            };
        }
        let content_type = req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = match Limited::new(req.into_body(), self.config.limits.max_bytes).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large or broken off"),
        };
        if method == Method::POST
            && let Some(reader) = path.strip_prefix("/inbox/")
        {
            if reader.is_empty() || body.is_empty() {
                return text(StatusCode::BAD_REQUEST, "POST /inbox/<reader> with the message as the body");
            }
            let id = self.put_inbox(reader, body.to_vec()).await;
            return full(StatusCode::CREATED, "application/json", serde_json::json!({ "message_id": id.as_str() }).to_string());
        }
        let Some(port) = Port::ALL.into_iter().find(|p| path.strip_prefix('/') == Some(p.name())) else {
            return text(StatusCode::NOT_FOUND, "unknown path: the ports are /ManagementPort, /SendXtaPort, /MsgBoxPort");
        };
        if method != Method::POST {
            return text(StatusCode::METHOD_NOT_ALLOWED, "SOAP requests are POSTed");
        }
        self.soap(port, content_type.as_deref(), &body).await
    }

    async fn count_fault(&self, kind: &str) {
        *self.state.lock().await.stats.faults.entry(kind.to_owned()).or_default() += 1;
    }

    fn in_outage(&self) -> bool {
        match self.config.outage_after {
            Some(after) => {
                let t = self.started.elapsed();
                t >= after && t < after + self.config.outage_for
            }
            None => false,
        }
    }

    async fn soap(&self, port: Port, content_type: Option<&str>, body: &[u8]) -> hyper::Response<Body> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let parsed = soap::read_request(content_type, body, &self.config.limits);
        if let Some(dir) = &self.config.record {
            let name = match &parsed {
                Ok((_, r)) => r.operation().name(),
                Err(_) => "unreadable",
            };
            if let Err(e) = std::fs::write(dir.join(format!("{seq:07}-{name}.xml")), body) {
                tracing::warn!(error = %e, "xta-sim: cannot record a request");
            }
        }
        if self.in_outage() {
            self.count_fault("outage").await;
            return text(StatusCode::SERVICE_UNAVAILABLE, "outage (simulated)");
        }
        let injected = {
            let mut state = self.state.lock().await;
            let roll = state.rng.next_f64();
            if self.config.fault_rate > 0.0 && !self.config.faults.is_empty() && roll < self.config.fault_rate {
                let i = (state.rng.next_u64() % self.config.faults.len() as u64) as usize;
                Some(self.config.faults[i])
            } else {
                None
            }
        };
        match injected {
            Some(InjectedFault::Unavailable) => {
                self.count_fault("503").await;
                return text(StatusCode::SERVICE_UNAVAILABLE, "service unavailable (injected)");
            }
            Some(InjectedFault::Technical) => {
                self.count_fault("technical").await;
                let op = parsed.as_ref().ok().map(|(_, r)| r.operation());
                let relates = parsed.as_ref().ok().and_then(|(a, _)| a.message_id.clone());
                let fault = Fault::new(FaultKind::TechnicalProblem, "technical problem (injected)");
                return soap_answer(StatusCode::INTERNAL_SERVER_ERROR, soap::write_fault(op, &fault, relates.as_deref()));
            }
            _ => {}
        }
        let (addressing, request) = match parsed {
            Ok(p) => p,
            Err(e) => {
                self.count_fault("parameter_is_not_valid").await;
                let fault = Fault::new(FaultKind::ParameterIsNotValid, format!("unreadable request: {e}"));
                return soap_answer(StatusCode::BAD_REQUEST, soap::write_fault(None, &fault, None));
            }
        };
        let op = request.operation();
        if op.port() != port {
            let fault = Fault::new(FaultKind::ParameterIsNotValid, format!("{} is not an operation of {}", op.name(), port.name()));
            self.count_fault("parameter_is_not_valid").await;
            return soap_answer(StatusCode::BAD_REQUEST, soap::write_fault(Some(op), &fault, addressing.message_id.as_deref()));
        }
        let relates = addressing.message_id.as_deref();
        let encoded = match self.answer(request).await {
            Ok(response) => {
                let mtom = self.config.mtom && op == Operation::GetMessage;
                (StatusCode::OK, soap::write_response(op, &response, relates, mtom))
            }
            Err((fault, counted_as)) => {
                self.count_fault(counted_as).await;
                let status = if fault.kind.is_server_side() { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::BAD_REQUEST };
                (status, soap::write_fault(Some(op), &fault, relates))
            }
        };
        match injected {
            Some(InjectedFault::Slow) => {
                self.count_fault("slow").await;
                tokio::time::sleep(self.config.slow).await;
                soap_answer(encoded.0, encoded.1)
            }
            Some(InjectedFault::Drop) => {
                self.count_fault("drop").await;
                dropped(encoded.1)
            }
            _ => soap_answer(encoded.0, encoded.1),
        }
    }

    fn may_send(&self, author: &Identifier) -> bool {
        self.accounts.as_ref().is_none_or(|a| a.contains(&author.value))
    }

    /// A box may be read by a configured reader, or by anyone when none is configured.
    fn may_read(&self, reader: &Identifier) -> bool {
        self.readers.is_empty() || self.readers.contains_key(&reader.value)
    }

    fn availability(&self, reader: &str, service: &str) -> Availability {
        if self.readers.is_empty() {
            return Availability::Available;
        }
        match self.readers.get(reader) {
            None => Availability::NotAvailable,
            Some(r) if r.unknown.iter().any(|s| s == service || s == "*") => Availability::Unknown,
            Some(r) if r.available.iter().any(|s| s == service || s == "*") => Availability::Available,
            Some(_) => Availability::NotAvailable,
        }
    }

    fn new_message_id(&self) -> MessageId {
        MessageId::generate(&self.config.message_id_prefix)
            .unwrap_or_else(|_| MessageId::parse(&format!("urn:de:xta:messageid:xtasim:{}", uuid::Uuid::new_v4())).expect("a valid MessageID"))
    }

    /// Does what a request asks. A fault comes back with the name it is counted under.
    async fn answer(&self, request: Request) -> Result<Response, (Fault, &'static str)> {
        let denied = |what: &str| (Fault::new(FaultKind::PermissionDenied, format!("{what} is not an account of this server")), "permission_denied");
        match request {
            Request::CheckAccountActive { author } | Request::CreateMessageId { author } if !self.may_send(&author) => Err(denied("the author")),
            Request::CheckAccountActive { .. } => Ok(Response::Empty),
            Request::CreateMessageId { .. } => Ok(Response::MessageId(self.new_message_id())),
            Request::LookupService { author, .. } if !self.may_send(&author) => Err(denied("the author")),
            Request::LookupService { lookups, .. } => Ok(Response::LookupService(
                lookups
                    .into_iter()
                    .map(|(reader, service)| {
                        let availability = self.availability(&reader.value, &service);
                        LookupServiceResult { reader, service, availability, parameters: Vec::new() }
                    })
                    .collect(),
            )),
            Request::SendMessage { metadata, container } => self.send(*metadata, container).await,
            Request::GetTransportReport { author, message_id } => {
                let state = self.state.lock().await;
                let Some(sent) = state.sent.get(&message_id) else {
                    return Err((Fault::new(FaultKind::InvalidMessageId, "no message with this MessageID"), "invalid_message_id"));
                };
                if sent.metadata.author.value != author.value {
                    return Err(denied("the asking author"));
                }
                let final_status = self.readers.get(&sent.metadata.reader.value).map(|r| r.report).unwrap_or_default();
                let status = match final_status {
                    _ if sent.accepted_at.elapsed().unwrap_or_default() < self.config.report_delay => TransportStatus::Open,
                    FinalReport::Green => TransportStatus::Green,
                    FinalReport::Yellow => TransportStatus::Yellow,
                    FinalReport::Red => TransportStatus::Red,
                };
                let record = |reason: &str| soap::Record {
                    timestamp: chrono::Utc::now(),
                    code: "9999".into(),
                    list_uri: "urn:de:xta:sim:report".into(),
                    list_version: "1".into(),
                    reason: reason.into(),
                };
                Ok(Response::TransportReport(Box::new(TransportReport {
                    metadata: sent.metadata.clone(),
                    report_time: chrono::Utc::now(),
                    server_identity: self.config.server_identity.clone(),
                    status,
                    errors: if status == TransportStatus::Red { vec![record("the reader's box refused the message (simulated)")] } else { Vec::new() },
                    warnings: if status == TransportStatus::Yellow { vec![record("delivered late (simulated)")] } else { Vec::new() },
                    infos: Vec::new(),
                })))
            }
            Request::GetStatusList { author, .. } | Request::GetMessage { author, .. } | Request::Close { author, .. } if !self.may_read(&author) => {
                Err(denied("the reader"))
            }
            Request::GetStatusList { author, max_items } => {
                let mut state = self.state.lock().await;
                let request_id = format!("urn:uuid:{}", uuid::Uuid::new_v4());
                let entries: Vec<MessageMetaData> = state
                    .boxes
                    .get(&author.value)
                    .map(|b| b.iter().take(max_items.map_or(usize::MAX, |n| n as usize)).map(|m| m.metadata.clone()).collect())
                    .unwrap_or_default();
                let total = state.boxes.get(&author.value).map_or(0, VecDeque::len);
                state.requests.insert(request_id.clone(), author.value.clone());
                let items_pending = if total == 0 { None } else { Some((total - entries.len()) as u64) };
                Ok(Response::StatusList { msgbox: MsgBoxResponse { request_id, items_pending }, entries })
            }
            Request::GetMessage { author, message_id } => {
                let mut state = self.state.lock().await;
                let found = state.boxes.get(&author.value).and_then(|b| b.iter().find(|m| m.metadata.message_id == message_id));
                let Some(found) = found else {
                    return Err((Fault::new(FaultKind::InvalidMessageId, "no message with this MessageID in the box"), "invalid_message_id"));
                };
                let (metadata, mut container, file) = (found.metadata.clone(), found.container.clone(), found.file.clone());
                let pending = state.boxes.get(&author.value).map_or(0, |b| b.len().saturating_sub(1)) as u64;
                let request_id = format!("urn:uuid:{}", uuid::Uuid::new_v4());
                state.requests.insert(request_id.clone(), author.value.clone());
                state.stats.fetched += 1;
                drop(state);
                if let Some(file) = file {
                    let read = tokio::task::spawn_blocking(move || file.read_into(&mut container).map(|()| container)).await;
                    container = match read {
                        Ok(Ok(container)) => container,
                        // Closed meanwhile (its file removed), or the disk failed.
                        _ => return Err((Fault::new(FaultKind::InvalidMessageId, "no message with this MessageID in the box"), "invalid_message_id")),
                    };
                }
                Ok(Response::Message { msgbox: MsgBoxResponse { request_id, items_pending: Some(pending) }, metadata: Box::new(metadata), container })
            }
            Request::Close { author, request_id, message_ids } => {
                let mut state = self.state.lock().await;
                if state.requests.get(&request_id).is_none_or(|r| *r != author.value) {
                    return Err((Fault::new(FaultKind::ParameterIsNotValid, "unknown MsgBoxRequestID"), "parameter_is_not_valid"));
                }
                let mut closed = Vec::new();
                if let Some(b) = state.boxes.get_mut(&author.value) {
                    let (gone, stay): (VecDeque<Boxed>, VecDeque<Boxed>) = std::mem::take(b).into_iter().partition(|m| message_ids.contains(&m.metadata.message_id));
                    *b = stay;
                    closed = gone.into_iter().collect();
                }
                state.stats.closed += closed.len() as u64;
                drop(state);
                for file in closed.into_iter().filter_map(|m| m.file) {
                    let _ = tokio::fs::remove_file(&file.path).await;
                }
                Ok(Response::Empty)
            }
        }
    }

    /// Writes `container`'s data to a file of the box directory, when there is one (on the
    /// blocking pool). A failure to write keeps the content in memory.
    async fn hold(&self, container: ContentContainer) -> (ContentContainer, Option<BoxFile>) {
        let Some(dir) = self.config.box_dir.clone() else { return (container, None) };
        let name = format!("{}.bin", uuid::Uuid::new_v4());
        let written = tokio::task::spawn_blocking(move || {
            let written = BoxFile::write(&dir, &name, &container);
            (container, written)
        })
        .await;
        match written {
            Ok((mut container, Ok(file))) => {
                for c in std::iter::once(&mut container.message).chain(container.attachments.iter_mut()) {
                    c.data = Vec::new();
                }
                (container, Some(file))
            }
            Ok((container, Err(e))) => {
                tracing::warn!(error = %e, "xta-sim: cannot keep a message's content on disk; it stays in memory");
                (container, None)
            }
            // Only a panic while writing (the content went with it).
            Err(e) => {
                tracing::warn!(error = %e, "xta-sim: writing a message's content failed");
                (ContentContainer { message: Content { content_type: "application/octet-stream".into(), filename: None, data: Vec::new() }, attachments: Vec::new() }, None)
            }
        }
    }

    async fn send(&self, metadata: MessageMetaData, container: ContentContainer) -> Result<Response, (Fault, &'static str)> {
        if !self.may_send(&metadata.author) {
            return Err((Fault::new(FaultKind::PermissionDenied, "the author is not an account of this server"), "permission_denied"));
        }
        if let Some(kind) = self.readers.get(&metadata.reader.value).and_then(|r| r.permanent_fault) {
            return Err((Fault::new(kind.kind(), "permanent fault of this reader (simulated)"), "permanent"));
        }
        if self.availability(&metadata.reader.value, &metadata.qualifier.service) != Availability::Available {
            return Err((Fault::new(FaultKind::ParameterIsNotValid, "the reader does not take this service"), "parameter_is_not_valid"));
        }
        let key = content_key(&container.message.data);
        let resent = |state: &State| state.sent.contains_key(&metadata.message_id);
        // Onto the disk before the state is locked (a re-send is not kept twice).
        let (container, file) = if resent(&*self.state.lock().await) { (container, None) } else { self.hold(container).await };
        let mut state = self.state.lock().await;
        state.stats.accepted += 1;
        if resent(&state) {
            state.stats.resends += 1;
            drop(state);
            if let Some(file) = file {
                let _ = tokio::fs::remove_file(&file.path).await;
            }
            return Ok(Response::Empty);
        }
        if !state.content_keys.insert(key.clone()) {
            state.stats.same_content_twice += 1;
        }
        let kept = Kept { sent: Sent { metadata: metadata.clone(), accepted_at: std::time::SystemTime::now() }, content_key: key };
        if let Some(file) = state.kept.as_mut() {
            use std::io::Write as _;
            let line = serde_json::to_string(&kept).unwrap_or_default();
            if let Err(e) = writeln!(file, "{line}") {
                // Taken all the same; only a restart would forget it.
                tracing::warn!(error = %e, "xta-sim: cannot keep what it accepted in its state file");
            }
        }
        state.stats.delivered += 1;
        let reader = metadata.reader.value.clone();
        state.sent.insert(metadata.message_id.clone(), kept.sent);
        state.boxes.entry(reader).or_default().push_back(Boxed { metadata, container, file });
        Ok(Response::Empty)
    }

    async fn put_inbox(&self, reader: &str, content: Vec<u8>) -> MessageId {
        let message_id = self.new_message_id();
        let metadata = MessageMetaData {
            test_msg: false,
            origin: Some(chrono::Utc::now()),
            author: Identifier::xoev("xta-sim"),
            reader: Identifier::xoev(reader),
            message_id: message_id.clone(),
            qualifier: Qualifier {
                subject: None,
                service: "urn:xoev-de:xamtshilfe:xamtshilfe".into(),
                business_scenario: BusinessScenario::Undefined("xAmtshilfe".into()),
                message_type: KeyCode { code: "xamtshilfe".into(), name: None, list_uri: "urn:de:xta:sim:messagetype".into(), list_version: "1".into() },
                payload_schema: "xAmtshilfe110".into(),
            },
            msg_size: Some(content.len() as u64),
        };
        let container = ContentContainer { message: Content { content_type: "application/xml".into(), filename: Some("message.xml".into()), data: content }, attachments: Vec::new() };
        let (container, file) = self.hold(container).await;
        let mut state = self.state.lock().await;
        state.boxes.entry(reader.to_owned()).or_default().push_back(Boxed { metadata, container, file });
        drop(state);
        if let Some(on_inbox) = &self.config.on_inbox {
            on_inbox.notify_one();
        }
        message_id
    }
}

/// Reads [`SimConfig::state_file`] (created if missing) and opens it for appending. A line
/// that cannot be read (one cut short by a crash) is skipped.
fn read_kept(path: &Path) -> std::io::Result<(std::fs::File, Vec<Kept>)> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    };
    let kept = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    Ok((file, kept))
}

/// What identifies a content for `same_content_twice`: its xAmtshilfe Nachrichten-UUID, or
/// its SHA-256 when none can be read.
fn content_key(data: &[u8]) -> String {
    let limits = Limits { max_depth: 32, ..Limits::default() };
    if let Ok(root) = xml::parse(data, &limits)
        && let Some(uuid) = root.find(None, "identifikation.nachricht").and_then(|i| i.find(None, "nachrichtenUUID"))
        && !uuid.trimmed().is_empty()
    {
        return format!("uuid:{}", uuid.trimmed().to_ascii_lowercase());
    }
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// A small seeded generator (SplitMix64): repeatable fault choices without a dependency.
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_key_prefers_the_nachrichten_uuid() {
        let a = br#"<n><nachrichtenkopf.g2g><identifikation.nachricht><nachrichtenUUID>0E0B3C1A-2D2B-4A0E-9F43-7D8F3C1B2A10</nachrichtenUUID></identifikation.nachricht></nachrichtenkopf.g2g><x>1</x></n>"#;
        let b = br#"<n><nachrichtenkopf.g2g><identifikation.nachricht><nachrichtenUUID>0e0b3c1a-2d2b-4a0e-9f43-7d8f3c1b2a10</nachrichtenUUID></identifikation.nachricht></nachrichtenkopf.g2g><x>2</x></n>"#;
        assert_eq!(content_key(a), content_key(b));
        assert!(content_key(b"not xml").starts_with("sha256:"));
    }

    #[test]
    fn seeded_rng_repeats() {
        let (mut a, mut b) = (SplitMix(7), SplitMix(7));
        for _ in 0..10 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert!((0.0..1.0).contains(&SplitMix(3).next_f64()));
    }
}
