//! The HTTP interface: the intake's API under `/api/v1`, the health check and the
//! Prometheus metrics. What this module owns:
//!
//! - [`AppState`], [`router`] and [`serve`] (with graceful shutdown),
//! - the JSON error shape every endpoint answers with, `{"error": "...", "reasons": [...]}`
//!   (plus fields of the case, e.g. `id` or `existing`) — see [`error`],
//! - the handlers, each in the module of its part: [`api`] (messages in, requests out),
//!   [`ops`] (`/healthz`, `/metrics`).
//!
//! | route | answers |
//! |---|---|
//! | `POST /api/v1/nachrichten` | 202 accepted (or this very body accepted before), 400 rejected, 403 unknown tenant, 409 duplicate Nachrichten-UUID, 413 too large, 415 not XML, 503 ledger unavailable |
//! | `GET /api/v1/requests/{id}` | 200 the request with its journal, 400 not an id, 404 unknown |
//! | `GET /api/v1/requests?state=&tenant=&limit=&offset=` | 200 `{"requests": [...]}` newest first, without payloads; 400 bad filter |
//! | `GET /healthz` | 200 `{"status":"ok"}` when the ledger answers, 503 otherwise |
//! | `GET /metrics` | Prometheus text: `amtsbote_requests{state="…"}` gauges |
//!
//! # Privacy
//!
//! Messages carry debtors' personal data. Nothing here logs a body, nor the reasons of a
//! rejection (they may quote values from the message): logs name the tenant, the request id
//! and the outcome only. Ledger errors are logged, and answered with 503 and "try again",
//! never with their text.
//!
//! There is no authentication yet: whoever reaches the port may post for any configured
//! tenant and read every request. Listen on loopback or behind a proxy that authenticates.

pub mod api;
pub mod error;
pub mod ops;
pub mod zustaendigkeit;

use std::future::Future;
use std::sync::Arc;

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
}

impl AppState {
    /// State over the intake's ledger.
    pub fn new(intake: Intake, tenants: Vec<Tenant>, max_body_bytes: u64) -> Self {
        let ledger = intake.ledger.clone();
        let directory = Arc::new(SharedDirectory::new(Directory::sample()));
        AppState { intake, ledger, tenants, max_body_bytes, directory }
    }

    /// State as the configuration asks: its tenants, and `http.max_body_bytes` (default:
    /// the message size limit, `messages.max_bytes`).
    pub fn from_config(intake: Intake, config: &Config) -> Self {
        let limit = config.http.max_body_bytes.unwrap_or(config.messages.max_bytes);
        AppState::new(intake, config.tenants.clone(), limit)
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

/// All routes, with the body limit applied.
pub fn router(state: AppState) -> Router {
    let limit = usize::try_from(state.max_body_bytes).unwrap_or(usize::MAX);
    Router::new()
        .route("/api/v1/nachrichten", post(api::post_nachricht))
        .route("/api/v1/requests", get(api::list_requests))
        .route("/api/v1/requests/{id}", get(api::get_request))
        .route("/api/v1/zustaendigkeit", get(zustaendigkeit::get).post(zustaendigkeit::post))
        .route("/healthz", get(ops::healthz))
        .route("/metrics", get(ops::metrics))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(Arc::new(state))
}

/// Serves [`router`] on `listener` until `shutdown` completes, then stops taking
/// connections and waits for the requests in flight to finish.
pub async fn serve(listener: tokio::net::TcpListener, state: AppState, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await
}
