//! What operators' tools poll: `/healthz` (is the ledger answering?) and `/metrics`
//! (Prometheus text exposition, written by hand: a handful of gauges needs no crate).

use std::fmt::Write as _;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::Shared;
use super::error::ApiError;

/// `GET /healthz`: 200 `{"status":"ok"}` when the ledger answers a query, 503 otherwise.
pub(crate) async fn healthz(State(state): State<Shared>) -> Response {
    match state.ledger.count_by_state().await {
        Ok(_) => Json(json!({"status": "ok"})).into_response(),
        Err(e) => ApiError::unavailable(&e).with("status", "unavailable").into_response(),
    }
}

/// `GET /metrics`: one gauge per request state, zeros included.
pub(crate) async fn metrics(State(state): State<Shared>) -> Response {
    let counts = match state.ledger.count_by_state().await {
        Ok(counts) => counts,
        Err(e) => return ApiError::unavailable(&e).into_response(),
    };
    let mut text = String::new();
    text.push_str("# HELP amtsbote_requests Requests in the ledger, by state.\n");
    text.push_str("# TYPE amtsbote_requests gauge\n");
    for (state, n) in counts {
        let _ = writeln!(text, "amtsbote_requests{{state=\"{state}\"}} {n}");
    }
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}
