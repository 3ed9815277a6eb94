//! What operators' tools poll: `/healthz` (does the ledger answer, does every stage run?)
//! and `/metrics` (Prometheus text exposition, written by hand: a handful of gauges needs no
//! crate).

use std::fmt::Write as _;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::Shared;
use crate::intake::inbox::Backlog;
use super::error::ApiError;

/// `GET /healthz`: 200 `{"status":"ok","stages":{…}}` when the ledger answers one cheap
/// query and every supervised stage runs; 503 otherwise, naming what is down
/// (`"down": ["intake"]`, with each stage's last error and restarts). No table is counted,
/// so a probe costs the same however large the ledger grows.
pub(crate) async fn healthz(State(state): State<Shared>) -> Response {
    if let Err(e) = state.ledger.ping().await {
        return ApiError::unavailable(&e).with("status", "unavailable").with("down", json!(["ledger"])).into_response();
    }
    let stages = state.stages.as_ref().map(|h| h.stages()).unwrap_or_default();
    let down: Vec<&str> = stages.iter().filter(|(_, s)| !s.up).map(|(name, _)| *name).collect();
    let body = json!({
        "status": if down.is_empty() { "ok" } else { "degraded" },
        "down": down,
        "stages": stages,
    });
    let code = if down.is_empty() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(body)).into_response()
}

/// `GET /metrics`, what an operator's alerts need:
///
/// - `amtsbote_requests{state}`: requests in the ledger by state (zeros included), so
///   "requests waiting in `unroutable`" or "`failed` above zero" can page someone;
/// - `amtsbote_jobs{queue,state}`: jobs by queue and state (pending, running, failed with
///   attempts left, dead, killed, done), and `amtsbote_queues_up` (0 when the queue
///   database did not answer: the other figures are still served);
/// - `amtsbote_inbox_files_total{outcome}` and `amtsbote_inbox_retries_total`: files the
///   inbox watcher took in since the start (accepted, rejected, duplicate, refused) and
///   recordings it had to try again (the ledger was unavailable);
/// - per tenant whose inbox this process takes in, as of the last scan:
///   `amtsbote_inbox_waiting_files`, `amtsbote_inbox_processing_files` and
///   `amtsbote_inbox_oldest_waiting_seconds` (a file waiting for minutes is stuck).
///
/// 503 when the ledger does not answer.
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
    if let Some(queues) = &state.queues {
        let counts = queues.counts().await;
        text.push_str("# HELP amtsbote_queues_up Whether the queue database answered (1) or not (0).\n");
        text.push_str("# TYPE amtsbote_queues_up gauge\n");
        let _ = writeln!(text, "amtsbote_queues_up {}", u8::from(counts.is_ok()));
        match counts {
            Ok(counts) => {
                text.push_str("# HELP amtsbote_jobs Jobs in the queues, by queue and state.\n");
                text.push_str("# TYPE amtsbote_jobs gauge\n");
                for c in &counts {
                    for (job_state, n) in [("pending", c.pending), ("running", c.running), ("failed", c.failed), ("dead", c.dead), ("killed", c.killed), ("done", c.done)] {
                        let _ = writeln!(text, "amtsbote_jobs{{queue=\"{}\",state=\"{job_state}\"}} {n}", c.queue);
                    }
                }
                text.push_str("# HELP amtsbote_job_oldest_pending_seconds How long the oldest due job of a queue has waited (0: none waits).\n");
                text.push_str("# TYPE amtsbote_job_oldest_pending_seconds gauge\n");
                for c in &counts {
                    let _ = writeln!(text, "amtsbote_job_oldest_pending_seconds{{queue=\"{}\"}} {}", c.queue, c.oldest_pending_secs);
                }
            }
            Err(e) => tracing::warn!(error = %e, "metrics: the queue database did not answer"),
        }
    }
    match state.ledger.outbox_len().await {
        Ok(n) => {
            text.push_str("# HELP amtsbote_outbox_triggers Triggers in the ledger's outbox, not yet pushed to a queue.\n");
            text.push_str("# TYPE amtsbote_outbox_triggers gauge\n");
            let _ = writeln!(text, "amtsbote_outbox_triggers {n}");
        }
        Err(e) => tracing::warn!(error = %e, "metrics: cannot count the outbox"),
    }
    if let Some(metrics) = &state.stage_metrics {
        metrics.render(&mut text);
    }
    match (state.ledger.mail_counts().await, state.ledger.open_notification_count().await) {
        (Ok(counts), Ok(open)) => {
            text.push_str("# HELP amtsbote_mails Notification emails in the ledger, by status (failed and unconfirmed wait for an operator).\n");
            text.push_str("# TYPE amtsbote_mails gauge\n");
            for (status, n) in counts {
                let _ = writeln!(text, "amtsbote_mails{{status=\"{status}\"}} {n}");
            }
            text.push_str("# HELP amtsbote_notifications_open Notifications not yet composed into an email.\n");
            text.push_str("# TYPE amtsbote_notifications_open gauge\n");
            let _ = writeln!(text, "amtsbote_notifications_open {open}");
        }
        (Err(e), _) | (_, Err(e)) => tracing::warn!(error = %e, "metrics: cannot count the emails"),
    }
    if let Some(mails) = &state.mails {
        mails.render(&mut text);
    }
    if let Some(xta) = &state.xta {
        xta.render(&mut text);
    }
    if let Some(stages) = &state.stages {
        let stages = stages.stages();
        text.push_str("# HELP amtsbote_stage_up Whether a stage of serve runs (1) or is down, waiting to be started again (0).\n");
        text.push_str("# TYPE amtsbote_stage_up gauge\n");
        for (name, s) in &stages {
            let _ = writeln!(text, "amtsbote_stage_up{{stage=\"{name}\"}} {}", u8::from(s.up));
        }
        text.push_str("# HELP amtsbote_stage_restarts_total Times a stage failed and was started again.\n");
        text.push_str("# TYPE amtsbote_stage_restarts_total counter\n");
        for (name, s) in &stages {
            let _ = writeln!(text, "amtsbote_stage_restarts_total{{stage=\"{name}\"}} {}", s.restarts);
        }
    }
    {
        use std::sync::atomic::Ordering::Relaxed;
        text.push_str("# HELP amtsbote_http_body_bytes_in_flight Bytes of request bodies reserved now (http.max_bytes_in_flight).\n");
        text.push_str("# TYPE amtsbote_http_body_bytes_in_flight gauge\n");
        let _ = writeln!(text, "amtsbote_http_body_bytes_in_flight {}", state.bodies.in_use());
        text.push_str("# HELP amtsbote_http_refused_total Requests and connections turned away to protect the server, by reason.\n");
        text.push_str("# TYPE amtsbote_http_refused_total counter\n");
        let _ = writeln!(text, "amtsbote_http_refused_total{{reason=\"bytes_in_flight\"}} {}", state.bodies.refused.load(Relaxed));
        let _ = writeln!(text, "amtsbote_http_refused_total{{reason=\"connections_per_client\"}} {}", state.refused_connections.load(Relaxed));
    }
    if let Some(inbox) = &state.inbox {
        use std::sync::atomic::Ordering::Relaxed;
        text.push_str("# HELP amtsbote_inbox_files_total Files taken in from the inbox folders since the start, by outcome.\n");
        text.push_str("# TYPE amtsbote_inbox_files_total counter\n");
        for (outcome, n) in [("accepted", &inbox.accepted), ("rejected", &inbox.rejected), ("duplicate", &inbox.duplicates), ("refused", &inbox.refused)] {
            let _ = writeln!(text, "amtsbote_inbox_files_total{{outcome=\"{outcome}\"}} {}", n.load(Relaxed));
        }
        text.push_str("# HELP amtsbote_inbox_retries_total Recordings of inbox files that failed and will be tried again.\n");
        text.push_str("# TYPE amtsbote_inbox_retries_total counter\n");
        let _ = writeln!(text, "amtsbote_inbox_retries_total {}", inbox.retried.load(Relaxed));
        let backlog = inbox.backlog.lock().map(|b| b.clone()).unwrap_or_default();
        for (name, help, value) in [
            ("amtsbote_inbox_waiting_files", "Files waiting in a tenant's inbox, as of the last scan.", (|b: &Backlog| b.waiting) as fn(&Backlog) -> u64),
            ("amtsbote_inbox_processing_files", "Claims in a tenant's processing/ folder (being recorded, or waiting for the ledger).", |b: &Backlog| b.processing),
            ("amtsbote_inbox_oldest_waiting_seconds", "Age of the oldest file waiting in a tenant's inbox (0: none waits).", |b: &Backlog| b.oldest_waiting_secs),
            ("amtsbote_inbox_not_taken_files", "Files left in a tenant's inbox because their names match none of intake.patterns.", |b: &Backlog| b.not_taken),
        ] {
            let _ = writeln!(text, "# HELP {name} {help}");
            let _ = writeln!(text, "# TYPE {name} gauge");
            for (tenant, b) in &backlog {
                let _ = writeln!(text, "{name}{{tenant=\"{tenant}\"}} {}", value(b));
            }
        }
    }
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}
