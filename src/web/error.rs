//! The JSON error answer shared by every endpoint: `{"error": "...", "reasons": [...]}`,
//! plus fields of the case (`id`, `existing`, `location`, …).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use super::Shared;
use crate::ledger::LedgerError;

/// An error answer. Build with [`ApiError::new`], add fields with [`ApiError::with`].
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: String,
    pub reasons: Vec<String>,
    extra: Map<String, Value>,
    /// `Location`, `Retry-After`, `WWW-Authenticate`, … (one list keeps the error small).
    headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>, reasons: Vec<String>) -> Self {
        ApiError { status, error: error.into(), reasons, extra: Map::new(), headers: Vec::new() }
    }

    /// Adds a field to the JSON body.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_string(), value.into());
        self
    }

    /// Adds a header to the answer (`WWW-Authenticate` of a 401).
    pub fn header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Sets the `Location` header (and the `location` field).
    pub fn location(mut self, location: String) -> Self {
        if let Ok(value) = HeaderValue::try_from(location.as_str()) {
            self.headers.push((header::LOCATION, value));
        }
        self.extra.insert("location".into(), Value::String(location));
        self
    }

    /// The ledger did not answer: 503, "try again", never the error's text (it may name
    /// tables, paths or hosts). The error is logged.
    pub fn unavailable(err: &LedgerError) -> Self {
        tracing::error!(error = %err, "ledger unavailable; answering 503");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the ledger is not available; try again later",
            vec!["the ledger did not answer; repeating the identical request is safe".into()],
        )
        .header(header::RETRY_AFTER, HeaderValue::from(5u32))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = Map::new();
        body.insert("error".into(), Value::String(self.error));
        body.insert("reasons".into(), Value::from(self.reasons));
        body.extend(self.extra);
        let mut response = (self.status, Json(Value::Object(body))).into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

/// A path no route has: 401 without a valid token (so the API's shape cannot be probed
/// anonymously), else 404.
pub(crate) async fn not_found(State(state): State<Shared>, headers: HeaderMap, uri: Uri) -> Result<ApiError, ApiError> {
    super::auth::authenticate(&state, &headers).await?;
    Ok(ApiError::new(StatusCode::NOT_FOUND, "not found", vec![format!("no such endpoint: {}", uri.path())]))
}

/// A route's path with a method it does not take: 401 without a valid token, like
/// [`not_found`], else 405.
pub(crate) async fn method_not_allowed(State(state): State<Shared>, headers: HeaderMap) -> Result<ApiError, ApiError> {
    super::auth::authenticate(&state, &headers).await?;
    Ok(ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed", vec![]))
}
