//! `/api/v1`: messages in (`POST /api/v1/nachrichten`), requests out
//! (`GET /api/v1/requests`, `GET /api/v1/requests/{id}`).
//!
//! # Posting a message
//!
//! The body is the xAmtshilfe XML message itself (`Content-Type: application/xml` or
//! `text/xml`; anything else is 415). A tenant token posts for its tenant: nothing needs
//! naming, and `?tenant=` or `X-Amtsbote-Tenant` naming another tenant is 403. An admin
//! token names the tenant, in this order: the query parameter `?tenant=<id>`, the header
//! `X-Amtsbote-Tenant`, or — when neither is given and exactly one tenant is configured —
//! that tenant. With several tenants and none named the answer is 400; a tenant that is not
//! configured is 403. Either way the message's author (and a request's ersuchende Behörde)
//! must be the tenant's kennung, or it is rejected (see `crate::intake`).
//!
//! Reading requests: operators and admins read all of them; a tenant token reads its own
//! (another tenant's request is 404, as an unknown id is).
//!
//! The delivery's idempotency key is `http:<tenant>:<sha256 of the body>`: a client that
//! repeats the identical POST (after a timeout, a 503) gets the answer of the first one,
//! with the same request id, and nothing is recorded twice.
//!
//! | outcome | status | body |
//! |---|---|---|
//! | valid, recorded | 202, `Location` | `{"id", "state": "validated", "location"}` |
//! | this very body recorded before | 202, `Location` (400 if it was rejected) | `{"id", "state", "location", "already_recorded": true}` |
//! | invalid, recorded as rejected | 400 | `{"error": "rejected", "reasons": [...], "id", "location"}` |
//! | Nachrichten-UUID already received (for any tenant) | 409, `Location` of the first | `{"error": "duplicate", "reasons", "existing", "nachrichten_uuid", "location"}` |
//! | body larger than `max_body_bytes` | 413 | nothing recorded |
//! | body not complete within `http.body_timeout_ms` | 408 | nothing recorded |
//! | ledger unavailable | 503, `Retry-After` | "try again" |

use axum::Json;
use axum::extract::{Extension, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::Shared;
use super::auth::Caller;
use super::error::ApiError;
use crate::intake::Outcome;
use crate::ledger::{Event, ListFilter, Request as LedgerRequest, RequestId, RequestState};

/// The header naming the tenant when the query does not.
pub const TENANT_HEADER: &str = "x-amtsbote-tenant";

/// Where a request can be read.
pub fn location(id: RequestId) -> String {
    format!("/api/v1/requests/{id}")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PostParams {
    tenant: Option<String>,
}

/// `POST /api/v1/nachrichten`.
pub(crate) async fn post_nachricht(State(state): State<Shared>, Extension(caller): Extension<Caller>, request: Request) -> Result<Response, ApiError> {
    // Cheap checks first, before the body is read.
    check_content_type(request.headers())?;
    let params = Query::<PostParams>::try_from_uri(request.uri())
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad query", vec![e.body_text()]))?
        .0;
    let tenant = choose_tenant(&state, &caller, params.tenant.as_deref(), request.headers())?;
    let announced = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > state.max_body_bytes) {
        return Err(super::too_large(state.max_body_bytes));
    }
    // Room for the body in memory, held until the answer: a burst of large posts is turned
    // away with 503 instead of taking the memory (http.max_bytes_in_flight).
    let Some(_room) = state.bodies.reserve(announced.unwrap_or(state.max_body_bytes)) else {
        tracing::warn!(tenant = %tenant, in_flight = state.bodies.in_use(), "message refused: http.max_bytes_in_flight taken by other requests");
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is taking in as many message bytes as it may at once; try again in a few seconds",
            vec![format!("bodies in flight are limited to {} bytes (http.max_bytes_in_flight); nothing was recorded", state.limits.max_bytes_in_flight)],
        )
        .header(header::RETRY_AFTER, HeaderValue::from(2u32)));
    };
    let body = super::read_body(request, &state).await?;

    let source = format!("http:{tenant}:{}", hex::encode(Sha256::digest(&body)));
    let bytes = Vec::from(body);
    let size = bytes.len();
    // Run to the end even if the client goes away: the client's retry then finds the
    // outcome under the same source instead of a half-done recording.
    let intake = state.intake.clone();
    let task_tenant = tenant.clone();
    let task_source = source.clone();
    let outcome = tokio::spawn(async move { intake.accept(&task_tenant, &task_source, None, bytes).await })
        .await
        .map_err(|e| crate::ledger::LedgerError::Corrupt(format!("intake task failed: {e}")))
        .and_then(|r| r)
        .map_err(|e| ApiError::unavailable(&e))?;

    let response = match outcome {
        Outcome::Accepted { id } => {
            tracing::info!(tenant = %tenant, id = %id, bytes = size, "message accepted over HTTP");
            created(StatusCode::ACCEPTED, json!({"id": id, "state": RequestState::Validated, "location": location(id)}), id)
        }
        Outcome::AlreadyRecorded { id, .. } => {
            // Report where the request stands now (it may have moved on since).
            let recorded = state.ledger.get(id).await.map_err(|e| ApiError::unavailable(&e))?;
            let Some(recorded) = recorded else {
                return Err(ApiError::unavailable(&crate::ledger::LedgerError::NotFound(id)));
            };
            tracing::info!(tenant = %tenant, id = %id, state = %recorded.state, "message posted again; answering with the request recorded first");
            if recorded.state == RequestState::Rejected {
                return Err(rejected(id, recorded_reasons(recorded.state_detail.as_deref())).with("already_recorded", true));
            }
            created(StatusCode::ACCEPTED, json!({"id": id, "state": recorded.state, "location": location(id), "already_recorded": true}), id)
        }
        Outcome::Duplicate { existing, uuid } => {
            tracing::info!(tenant = %tenant, existing = %existing, "duplicate Nachrichten-UUID posted; not recorded");
            let reason = if uuid.is_empty() {
                format!("this message was already received as request {existing}")
            } else {
                format!("a message with Nachrichten-UUID {uuid} was already received as request {existing}")
            };
            return Err(ApiError::new(StatusCode::CONFLICT, "duplicate", vec![reason])
                .with("existing", existing.get())
                .with("nachrichten_uuid", uuid)
                .location(location(existing)));
        }
        Outcome::Rejected { id, reasons } => {
            // The reasons may quote the message: counted, not logged.
            tracing::info!(tenant = %tenant, id = %id, reasons = reasons.len(), "message rejected");
            return Err(rejected(id, reasons));
        }
    };
    Ok(response)
}

fn rejected(id: RequestId, reasons: Vec<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "rejected", reasons).with("id", id.get()).with("location", location(id))
}

/// The reasons of a rejection, as the intake wrote them into the journal
/// (`rejected: <reason>; <reason>`).
fn recorded_reasons(detail: Option<&str>) -> Vec<String> {
    let Some(detail) = detail else { return Vec::new() };
    let detail = detail.strip_prefix("rejected: ").unwrap_or(detail);
    let detail = detail.split_once(crate::intake::KEPT_NOTE).map_or(detail, |(reasons, _)| reasons);
    detail.split("; ").filter(|r| !r.is_empty()).map(str::to_string).collect()
}

fn created(status: StatusCode, body: serde_json::Value, id: RequestId) -> Response {
    let mut response = (status, Json(body)).into_response();
    if let Ok(value) = HeaderValue::try_from(location(id)) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let given = headers.get(header::CONTENT_TYPE).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let essence = given.as_deref().map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    match essence.as_deref() {
        Some("application/xml" | "text/xml") => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be an XML message",
            vec![match given {
                Some(t) => format!("Content-Type {t:?} is not application/xml or text/xml"),
                None => "Content-Type is missing; send application/xml or text/xml".into(),
            }],
        )),
    }
}

fn choose_tenant(state: &Shared, caller: &Caller, query: Option<&str>, headers: &HeaderMap) -> Result<String, ApiError> {
    let named = match query {
        Some(t) => Some(t.to_string()),
        None => match headers.get(TENANT_HEADER) {
            Some(v) => Some(v.to_str().map(str::to_string).map_err(|_| unknown_tenant("(not readable)"))?),
            None => None,
        },
    };
    // A tenant token speaks for its own tenant, and for no other.
    let named = caller.scope(named)?;
    let tenant = match named {
        Some(id) => state.tenant(&id).ok_or_else(|| unknown_tenant(&id))?,
        None => match state.tenants.as_slice() {
            [only] => only,
            _ => return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "which tenant?",
                vec![format!("name the tenant with ?tenant=<id> or the header X-Amtsbote-Tenant ({} tenants are configured)", state.tenants.len())],
            )),
        },
    };
    // Deactivated, or outside its validity dates: refused before anything is read.
    if let Some(reason) = tenant.refusal_on(crate::directory::today()) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "tenant not active", vec![reason]));
    }
    Ok(tenant.id.clone())
}

fn unknown_tenant(id: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "unknown tenant", vec![format!("tenant {id:?} is not configured here")])
}

/// A request as the API shows it: no payload, no source key.
#[derive(Debug, Serialize)]
pub struct RequestView {
    pub id: RequestId,
    pub tenant: String,
    pub kind: String,
    pub state: RequestState,
    pub state_detail: Option<String>,
    pub nachrichten_uuid: Option<String>,
    pub test: bool,
    pub file_name: Option<String>,
    /// The XTA MessageID it is sent under (from `transmitting` on).
    pub xta_message_id: Option<String>,
    /// Tries made in its current state, and when the next is due (a scheduled retry).
    pub attempts: u32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journal: Option<Vec<Event>>,
}

impl RequestView {
    fn new(r: LedgerRequest, journal: Option<Vec<Event>>) -> Self {
        RequestView {
            id: r.id,
            tenant: r.tenant,
            kind: r.kind,
            state: r.state,
            state_detail: r.state_detail,
            nachrichten_uuid: r.nachrichten_uuid,
            test: r.test,
            file_name: r.file_name,
            xta_message_id: r.xta_message_id,
            attempts: r.attempts,
            next_attempt_at: r.next_attempt_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
            journal,
        }
    }
}

/// `GET /api/v1/requests/{id}`: the request with its journal.
pub(crate) async fn get_request(State(state): State<Shared>, Extension(caller): Extension<Caller>, Path(id): Path<String>) -> Result<Json<RequestView>, ApiError> {
    let id: RequestId = id.parse().map_err(|e: crate::ledger::InvalidRequestId| ApiError::new(StatusCode::BAD_REQUEST, "not a request id", vec![e.to_string()]))?;
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "not found", vec![format!("there is no request {id}")]);
    let request = state.ledger.get(id).await.map_err(|e| ApiError::unavailable(&e))?.ok_or_else(not_found)?;
    // Another tenant's request is not there for a tenant token: 404, as an unknown id.
    if caller.tenant().is_some_and(|own| own != request.tenant) {
        return Err(not_found());
    }
    let journal = match state.ledger.journal(id).await {
        Ok(journal) => journal,
        Err(crate::ledger::LedgerError::NotFound(_)) => return Err(not_found()),
        Err(e) => return Err(ApiError::unavailable(&e)),
    };
    Ok(Json(RequestView::new(request, Some(journal))))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    state: Option<String>,
    tenant: Option<String>,
    limit: Option<u32>,
    offset: Option<u64>,
}

/// The most requests one page of `GET /api/v1/requests` holds: pages stay small whatever a
/// client asks for (it pages on with `offset`).
pub const MAX_PAGE: u32 = 200;

/// The longest `state_detail` a list shows (the whole one is in `GET /api/v1/requests/ID`).
const LIST_DETAIL_CHARS: usize = 500;

/// `GET /api/v1/requests?state=&tenant=&limit=&offset=`: newest first, without payloads
/// and journals, each detail cut to 500 characters. `limit` defaults to 50 and is capped at
/// [`MAX_PAGE`]; the answer says `more` when another page follows.
pub(crate) async fn list_requests(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(params) = params.map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "bad query", vec![e.body_text(), "known parameters: state, tenant, limit, offset".into()])
    })?;
    let mut filter = ListFilter::default();
    if let Some(s) = params.state.as_deref().filter(|s| !s.is_empty()) {
        let parsed: RequestState = s.parse().map_err(|e: crate::ledger::UnknownState| {
            let known: Vec<&str> = RequestState::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::new(StatusCode::BAD_REQUEST, "bad query", vec![e.to_string(), format!("known states: {}", known.join(", "))])
        })?;
        filter = filter.state(parsed);
    }
    // A tenant token lists its own requests only.
    if let Some(t) = caller.scope(params.tenant.filter(|t| !t.is_empty()))? {
        filter = filter.tenant(t);
    }
    if let Some(limit) = params.limit {
        if limit == 0 {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "bad query", vec!["limit must be at least 1".into()]));
        }
        filter = filter.limit(limit.min(MAX_PAGE));
    }
    if let Some(offset) = params.offset {
        filter = filter.offset(offset);
    }
    // One more than the page, to tell whether another follows.
    let page = filter.limit;
    let mut requests = state.ledger.list(&filter.clone().limit(page + 1)).await.map_err(|e| ApiError::unavailable(&e))?;
    let more = requests.len() > page as usize;
    requests.truncate(page as usize);
    let views: Vec<RequestView> = requests
        .into_iter()
        .map(|mut r| {
            if let Some(d) = r.state_detail.as_mut().filter(|d| d.chars().count() > LIST_DETAIL_CHARS) {
                *d = format!("{}…", d.chars().take(LIST_DETAIL_CHARS).collect::<String>());
            }
            RequestView::new(r, None)
        })
        .collect();
    Ok(Json(json!({"requests": views, "limit": page, "offset": filter.offset, "more": more})))
}
