//! The HTTP interface: the intake's API under `/api/v1`, the health check and the
//! Prometheus metrics. What this module owns:
//!
//! - [`AppState`], [`router`] and [`serve`] (with graceful shutdown, and the limits that
//!   keep slow or many clients from tying the server up: [`HttpLimits`]),
//! - the JSON error shape every endpoint answers with, `{"error": "...", "reasons": [...]}`
//!   (plus fields of the case, e.g. `id` or `existing`) — see [`error`],
//! - the handlers, each in the module of its part: [`api`] (messages in, requests out),
//!   [`ops`] (`/healthz`, `/metrics`), [`zustaendigkeit`] (the directory lookup),
//! - who may call which route: [`auth`], and the one table of routes and their rules,
//!   [`routes`] (the router is built from it alone, so no route goes without a rule).
//!
//! Every route but `/healthz` answers 401 without a valid bearer token and 403 to a role it
//! does not admit (see [`auth`]); so do paths no route has and methods a path does not take
//! (404 and 405 only with a valid token of any role):
//!
//! | route | who | answers |
//! |---|---|---|
//! | `POST /api/v1/nachrichten` | admin; tenant as itself | 202 accepted (or this very body accepted before), 400 rejected, 403 unknown tenant, 408 body not sent within `http.body_timeout_ms`, 409 duplicate Nachrichten-UUID, 413 too large, 415 not XML, 503 ledger unavailable or `http.max_bytes_in_flight` taken (Retry-After) |
//! | `GET /api/v1/requests/{id}` | 200 the request with its journal, 400 not an id, 404 unknown |
//! | `GET /api/v1/requests?state=&tenant=&limit=&offset=` | admin, operator; tenant its own (`?tenant=` another: 403) | 200 `{"requests": [...], "more": bool}` newest first, at most 200 a page (`limit`, `offset`), without payloads, details cut to 500 characters; 400 bad filter |
//! | `GET`, `POST /api/v1/zustaendigkeit` | admin, operator | the responsible authority (see [`zustaendigkeit`]) |
//! | `GET /healthz` | anyone, no token | 200 `{"status":"ok","stages":{…}}` when the ledger answers and every stage runs; 503 naming the stages that are down, or the ledger |
//! | `GET /metrics` | admin, operator (also the local token) | Prometheus text: requests by state, jobs by queue and state with the oldest pending job's age, jobs run by outcome, run time and lag, the outbox, the sweeper, stages up and their restarts, inbox files by outcome, what waits in each inbox (see [`ops`]) |
//!
//! # Privacy
//!
//! Messages carry debtors' personal data. Nothing here logs a body, nor the reasons of a
//! rejection (they may quote values from the message): logs name the tenant, the request id
//! and the outcome only. Ledger errors are logged, and answered with 503 and "try again",
//! never with their text.
//!
//! Tokens are never logged; a 401 or 403 says why without echoing what was sent.

pub mod api;
pub mod auth;
pub mod error;
pub mod ops;
pub mod zustaendigkeit;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::config::{Config, Tenant};
use crate::directory::{Directory, SharedDirectory};
use crate::intake::Intake;
use crate::ledger::Ledger;

/// What the handlers share. Cheap to clone: the router keeps it behind one `Arc`.
#[derive(Clone)]
pub struct AppState {
    pub intake: Intake,
    pub ledger: Arc<dyn Ledger>,
    /// The tenants messages may be posted for (`config.tenants`).
    pub tenants: Vec<Tenant>,
    /// Largest request body accepted; larger ones get 413 without being recorded.
    pub max_body_bytes: u64,
    /// The directory lookups answer from (the sample data until one is imported).
    pub directory: Arc<SharedDirectory>,
    pub limits: HttpLimits,
    /// The job queues, for `/metrics` (none: no queue metrics).
    pub queues: Option<crate::queue::QueueAdmin>,
    /// The inbox watcher's counters, for `/metrics` (none: no inbox metrics).
    pub inbox: Option<Arc<crate::intake::inbox::Stats>>,
    /// The supervised stages, for `/healthz` and `/metrics` (none: not reported).
    pub stages: Option<Arc<crate::supervise::Health>>,
    /// What the stage workers, the relay and the sweeper counted, for `/metrics`.
    pub stage_metrics: Option<Arc<crate::queue::metrics::StageMetrics>>,
    /// The XTA server's breaker and calls in flight, for `/metrics` (none: not reported).
    pub xta: Option<Arc<crate::xta::breaker::Destination>>,
    /// What the notify stage counted, for `/metrics` (none: no mail counters; the emails by
    /// status come from the ledger either way).
    pub mails: Option<Arc<crate::mail::notify::MailCounters>>,
    /// SHA-256 of the machine's local token (`<data_dir>/local.token`), accepted with the
    /// rights of an operator (none: only the ledger's tokens).
    pub local_token: Option<String>,
    /// When each token's last use was written (see [`auth`]).
    pub touched: Arc<auth::Touched>,
    /// HTTPS: every connection's TLS handshake first (none: plain HTTP).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The memory request bodies may take at once (`http.max_bytes_in_flight`).
    pub bodies: Arc<BodyBudget>,
    /// Connections closed at once because their client held too many
    /// (`http.max_connections_per_client`).
    pub refused_connections: Arc<std::sync::atomic::AtomicU64>,
}

/// What a client may take of the server: time to send headers and body, connections.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HttpLimits {
    /// Headers not complete after this: the connection is closed (also an idle
    /// keep-alive connection). A client trickling bytes cannot hold a connection.
    pub header_timeout: Duration,
    /// Body not complete after this: 408, nothing recorded.
    pub body_timeout: Duration,
    /// Connections served at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// Connections one client address may hold; further ones are closed at once.
    pub max_connections_per_client: usize,
    /// Bytes of request bodies held at once ([`BodyBudget`]).
    pub max_bytes_in_flight: u64,
}

impl Default for HttpLimits {
    fn default() -> Self {
        let http = crate::config::HttpConfig::default();
        HttpLimits::from_config(&http)
    }
}

impl HttpLimits {
    /// `http.header_timeout_ms`, `http.body_timeout_ms`, `http.max_connections`.
    pub fn from_config(http: &crate::config::HttpConfig) -> Self {
        HttpLimits {
            header_timeout: Duration::from_millis(http.header_timeout_ms.max(1)),
            body_timeout: Duration::from_millis(http.body_timeout_ms.max(1)),
            max_connections: http.max_connections.max(1),
            max_connections_per_client: http.max_connections_per_client.max(1),
            max_bytes_in_flight: http.max_bytes_in_flight.max(1),
        }
    }
}

/// The memory request bodies may take at once: each request reserves its announced length
/// (or the body limit, when it announces none) before its body is read, and gives it back
/// when it is answered. A request that finds no room gets 503 with Retry-After at once
/// rather than waiting with its connection open.
#[derive(Debug)]
pub struct BodyBudget {
    /// In KiB, so that a budget of several GiB fits the semaphore's u32 per acquisition.
    kib: Arc<tokio::sync::Semaphore>,
    total_kib: u32,
    /// Requests turned away for want of room.
    pub refused: std::sync::atomic::AtomicU64,
}

impl BodyBudget {
    pub fn new(bytes: u64) -> Self {
        let total_kib = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX).max(1);
        BodyBudget { kib: Arc::new(tokio::sync::Semaphore::new(total_kib as usize)), total_kib, refused: Default::default() }
    }

    /// Room for a body of `bytes`, or None when the budget is taken. A body larger than
    /// the whole budget waits for all of it (it still gets in when nothing else is).
    pub fn reserve(&self, bytes: u64) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let kib = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX).clamp(1, self.total_kib);
        let permit = self.kib.clone().try_acquire_many_owned(kib).ok();
        if permit.is_none() {
            self.refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        permit
    }

    /// Bytes reserved now.
    pub fn in_use(&self) -> u64 {
        u64::from(self.total_kib.saturating_sub(u32::try_from(self.kib.available_permits()).unwrap_or(u32::MAX))) * 1024
    }
}

/// Connections open per client address, for [`HttpLimits::max_connections_per_client`].
#[derive(Debug, Default)]
struct PerClient {
    open: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

/// One client's connection, counted while it lives.
struct ClientSlot {
    clients: Arc<PerClient>,
    ip: std::net::IpAddr,
}

impl PerClient {
    /// A slot for `ip`, or None when it holds `max` connections already.
    fn take(self: &Arc<Self>, ip: std::net::IpAddr, max: usize) -> Option<ClientSlot> {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = open.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(ClientSlot { clients: self.clone(), ip })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.clients.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

impl AppState {
    /// State over the intake's ledger.
    pub fn new(intake: Intake, tenants: Vec<Tenant>, max_body_bytes: u64) -> Self {
        let ledger = intake.ledger.clone();
        let directory = Arc::new(SharedDirectory::new(Directory::sample()));
        AppState { intake, ledger, tenants, max_body_bytes, directory, limits: HttpLimits::default(), queues: None, inbox: None, stages: None, stage_metrics: None, xta: None, mails: None, local_token: None, touched: Default::default(), tls: None, bodies: Arc::new(BodyBudget::new(HttpLimits::default().max_bytes_in_flight)), refused_connections: Default::default() }
    }

    /// State as the configuration asks: its tenants, and `http.max_body_bytes` (default:
    /// the message size limit, `messages.max_bytes`).
    pub fn from_config(intake: Intake, config: &Config) -> Self {
        let limit = config.http.max_body_bytes.unwrap_or(config.messages.max_bytes);
        AppState::new(intake, config.tenants.clone(), limit).with_limits(HttpLimits::from_config(&config.http))
    }

    /// `/metrics` also reports the job queues' counts.
    pub fn with_queues(mut self, queues: crate::queue::QueueAdmin) -> Self {
        self.queues = Some(queues);
        self
    }

    /// `/metrics` also reports the inbox watcher's counters.
    pub fn with_inbox_stats(mut self, stats: Arc<crate::intake::inbox::Stats>) -> Self {
        self.inbox = Some(stats);
        self
    }

    /// `/healthz` names the stages that are down; `/metrics` reports them and what they
    /// counted.
    pub fn with_stages(mut self, health: Arc<crate::supervise::Health>, metrics: Arc<crate::queue::metrics::StageMetrics>) -> Self {
        self.stages = Some(health);
        self.stage_metrics = Some(metrics);
        self
    }

    /// `/metrics` also reports the XTA server's breaker.
    pub fn with_mails(mut self, counters: Arc<crate::mail::notify::MailCounters>) -> Self {
        self.mails = Some(counters);
        self
    }

    pub fn with_xta(mut self, destination: Arc<crate::xta::breaker::Destination>) -> Self {
        self.xta = Some(destination);
        self
    }

    /// Also accepts `token`, the machine's local token, as an operator's.
    pub fn with_local_token(mut self, token: &crate::access::Token) -> Self {
        self.local_token = Some(token.sha256());
        self
    }

    /// Speaks HTTPS with this configuration (`http.tls_cert`, `http.tls_key`).
    pub fn with_tls(mut self, config: rustls::ServerConfig) -> Self {
        self.tls = Some(Arc::new(config));
        self
    }

    /// Other time and connection limits than the defaults.
    pub fn with_limits(mut self, limits: HttpLimits) -> Self {
        self.limits = limits;
        self.bodies = Arc::new(BodyBudget::new(limits.max_bytes_in_flight));
        self
    }

    /// Answers lookups from `directory` instead of the sample data.
    pub fn with_directory(mut self, directory: Arc<SharedDirectory>) -> Self {
        self.directory = directory;
        self
    }

    pub(crate) fn tenant(&self, id: &str) -> Option<&Tenant> {
        self.tenants.iter().find(|t| t.id == id)
    }
}

pub(crate) type Shared = Arc<AppState>;

/// 413 for a body over `max_body_bytes`, announced or sent; nothing was recorded.
pub(crate) fn too_large(max_body_bytes: u64) -> error::ApiError {
    error::ApiError::new(
        axum::http::StatusCode::PAYLOAD_TOO_LARGE,
        format!("the body is larger than the limit of {max_body_bytes} bytes"),
        vec![format!("messages may have at most {max_body_bytes} bytes; nothing was recorded")],
    )
    .with("limit", max_body_bytes)
}

/// The request's body, read within [`HttpLimits::body_timeout`] and the body limit
/// (the `DefaultBodyLimit` layer, also for bodies without `Content-Length`). A body that
/// does not arrive in time gets 408; one over the limit 413 ([`too_large`]); one that
/// breaks off 400.
pub(crate) async fn read_body(request: axum::extract::Request, state: &Shared) -> Result<axum::body::Bytes, error::ApiError> {
    use axum::extract::FromRequest;
    use axum::http::StatusCode;
    let timeout = state.limits.body_timeout;
    match tokio::time::timeout(timeout, axum::body::Bytes::from_request(request, state)).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(rejection)) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(too_large(state.max_body_bytes)),
        Ok(Err(rejection)) => Err(error::ApiError::new(StatusCode::BAD_REQUEST, "the body could not be read", vec![rejection.body_text()])),
        Err(_) => Err(error::ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!("the body did not arrive within {} ms", timeout.as_millis()),
            vec!["send the whole body at once (http.body_timeout_ms); nothing was recorded".into()],
        )),
    }
}

/// One route: its method and path, who may call it, and its handler.
pub struct Route {
    pub method: axum::http::Method,
    pub path: &'static str,
    pub rule: auth::Rule,
    handler: axum::routing::MethodRouter<Shared>,
}

/// Every route the server answers, with its access rule: the one table [`router`] is built
/// from. A new route is added here, with its rule, or not at all.
pub fn routes() -> Vec<Route> {
    use auth::Rule::{Open, Operator, OwnRequests, PostAsTenant};
    use axum::http::Method;
    let route = |method: Method, path: &'static str, rule: auth::Rule, handler| Route { method, path, rule, handler };
    vec![
        route(Method::POST, "/api/v1/nachrichten", PostAsTenant, post(api::post_nachricht)),
        route(Method::GET, "/api/v1/requests", OwnRequests, get(api::list_requests)),
        route(Method::GET, "/api/v1/requests/{id}", OwnRequests, get(api::get_request)),
        route(Method::GET, "/api/v1/zustaendigkeit", Operator, get(zustaendigkeit::get)),
        route(Method::POST, "/api/v1/zustaendigkeit", Operator, post(zustaendigkeit::post)),
        route(Method::GET, "/healthz", Open, get(ops::healthz)),
        route(Method::GET, "/metrics", Operator, get(ops::metrics)),
    ]
}

/// All routes of [`routes`], each behind its access rule, with the body limit applied.
pub fn router(state: AppState) -> Router {
    let limit = usize::try_from(state.max_body_bytes).unwrap_or(usize::MAX);
    let shared: Shared = Arc::new(state);
    let mut router = Router::new();
    for Route { path, rule, handler, .. } in routes() {
        let guard = auth::Guard { app: shared.clone(), rule };
        // Routes of one path with different methods are merged by axum.
        router = router.route(path, handler.route_layer(axum::middleware::from_fn_with_state(guard, auth::enforce)));
    }
    router
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(shared)
}

/// Serves [`router`] on `listener` until `shutdown` completes, then stops taking
/// connections and waits (at most 30 s) for the requests in flight to finish.
///
/// Our own accept loop rather than `axum::serve`, which gives hyper no timer and so no
/// header timeout: a client sending one header byte a minute would hold its connection
/// forever, and enough of them every file descriptor. Here each connection has
/// [`HttpLimits::header_timeout`], and at most [`HttpLimits::max_connections`] are open.
/// With [`AppState::with_tls`] every connection is HTTPS (its handshake within the header
/// timeout); a plain HTTP request to it fails the handshake.
pub async fn serve(listener: tokio::net::TcpListener, state: AppState, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    let limits = state.limits;
    let refused = state.refused_connections.clone();
    let clients = Arc::new(PerClient::default());
    let tls = state.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let app = router(state);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let open = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = open.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, slot) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match clients.take(peer.ip(), limits.max_connections_per_client) {
                    Some(slot) => (stream, slot),
                    None => {
                        // Closed at once: this client holds its share already.
                        refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::debug!(client = %peer.ip(), "connection closed: the client holds http.max_connections_per_client");
                        continue;
                    }
                },
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "cannot accept an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => {
                    let _ = watcher.watch(builder.serve_connection(TokioIo::new(stream), service)).await;
                }
                // The handshake within the header timeout: a client that stalls in it holds
                // its connection no longer than one that stalls in its headers.
                Some(acceptor) => match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let _ = watcher.watch(builder.serve_connection(TokioIo::new(stream), service)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake not done within the header timeout"),
                },
            }
            drop(slot);
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(30), graceful.shutdown()).await.is_err() {
        tracing::warn!("HTTP connections still open 30 s after the stop; closing them");
    }
    Ok(())
}
