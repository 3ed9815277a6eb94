//! Who may call what. Every route but `/healthz` needs a bearer token
//! (`Authorization: Bearer ab_…`, made with `amtsbote token create`); each route's [`Rule`]
//! says which roles it admits, in the one table of routes in [`super::routes`]. The rule is
//! checked by [`enforce`], a middleware on each route, before the handler runs; the handler
//! gets the [`Caller`] as an extension and narrows a tenant to its own requests.
//!
//! | answer | when |
//! |---|---|
//! | 401, `WWW-Authenticate: Bearer` | no `Authorization` header, not `Bearer <token>`, not a token's form, a token the ledger does not know, a revoked token |
//! | 403 | a token whose role the route does not admit, or a tenant token for another tenant (`?tenant=`) or a tenant no longer configured |
//! | 404 | a tenant token asking for another tenant's request: the same answer as for an id that does not exist, so ids cannot be probed; a path no route has, with a valid token (without one: 401, so the API's shape cannot be probed anonymously; a method a path does not take is 405 likewise) |
//!
//! A token is looked up by its SHA-256 and the stored hash then compared with the presented
//! one's in constant time (`access::hashes_equal`). Its last use is written about once a
//! minute per token, not per request. Besides the ledger's tokens, `serve` accepts the
//! machine's local token (`<data_dir>/local.token`) as an operator's: `amtsbote queues`
//! reads `/metrics` with it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::Shared;
use super::error::ApiError;
use crate::access::{Role, Token, hashes_equal};

/// Which roles a route admits. `admin` may do everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// No token: `/healthz` only (probes of load balancers and supervisors).
    Open,
    /// `operator` or `admin`: queues, metrics, the directory lookup.
    Operator,
    /// `admin`, or a tenant token posting as its own tenant. Operators post nothing.
    PostAsTenant,
    /// `operator` or `admin` for every request; a tenant token for its own only.
    OwnRequests,
}

impl Rule {
    /// The roles it admits, for messages and docs.
    pub fn describe(self) -> &'static str {
        match self {
            Rule::Open => "no token",
            Rule::Operator => "an operator or admin token",
            Rule::PostAsTenant => "a tenant or admin token",
            Rule::OwnRequests => "a tenant, operator or admin token",
        }
    }

    fn admits(self, role: &Role) -> bool {
        matches!(
            (self, role),
            (Rule::Open, _) | (_, Role::Admin) | (Rule::Operator | Rule::OwnRequests, Role::Operator) | (Rule::PostAsTenant | Rule::OwnRequests, Role::Tenant(_))
        )
    }
}

/// Who called: the token's name and role. Set by [`enforce`] on every route but the open one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

impl Caller {
    /// The tenant a tenant token speaks for; `None` for operators and admins.
    pub fn tenant(&self) -> Option<&str> {
        match &self.role {
            Role::Tenant(id) => Some(id),
            _ => None,
        }
    }

    /// The tenant a request is about: for a tenant token its own (403 when `named` is
    /// another), for operators and admins the one `named`, if any.
    pub(crate) fn scope(&self, named: Option<String>) -> Result<Option<String>, ApiError> {
        match (self.tenant(), named) {
            (Some(own), Some(named)) if named != own => Err(forbidden(format!("token {} speaks for tenant {own:?} only, not for {named:?}", self.name))),
            (Some(own), _) => Ok(Some(own.to_string())),
            (None, named) => Ok(named),
        }
    }
}

/// What the middleware of one route holds: the state and the route's rule.
#[derive(Clone)]
pub(crate) struct Guard {
    pub app: Shared,
    pub rule: Rule,
}

/// Tokens whose last use was written, and when (written again after [`TOUCH_EVERY`]).
#[derive(Debug, Default)]
pub struct Touched(Mutex<HashMap<String, Instant>>);

const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// The middleware: 401 or 403 as the module doc says, else the handler with the
/// [`Caller`] in the request's extensions.
pub(crate) async fn enforce(State(guard): State<Guard>, mut request: Request, next: Next) -> Response {
    if guard.rule == Rule::Open {
        return next.run(request).await;
    }
    let caller = match authenticate(&guard.app, request.headers()).await {
        Ok(caller) => caller,
        Err(e) => return e.into_response(),
    };
    if !guard.rule.admits(&caller.role) {
        let route = format!("{} {}", request.method(), request.uri().path());
        return forbidden(format!("token {} has the role {}; {route} needs {}", caller.name, caller.role, guard.rule.describe())).into_response();
    }
    if let Some(tenant) = caller.tenant()
        && guard.app.tenant(tenant).is_none()
    {
        return forbidden(format!("token {} is for tenant {tenant:?}, which is not configured here", caller.name)).into_response();
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// The caller a request's `Authorization` header names, or 401 (503 when the ledger does
/// not answer). Also asked by the answers to unknown paths and methods ([`super::error`]).
pub(crate) async fn authenticate(state: &Shared, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(unauthorized(false, "no token: send `Authorization: Bearer <token>` (made with `amtsbote token create`)"));
    };
    let malformed = || unauthorized(true, "the Authorization header is not `Bearer <token>` with a token of amtsbote (ab_…)");
    let text = value.to_str().map_err(|_| malformed())?;
    let (scheme, rest) = text.trim().split_once(' ').ok_or_else(malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(malformed());
    }
    let token = Token::parse(rest.trim()).ok_or_else(malformed)?;
    let presented = token.sha256();
    if let Some(local) = &state.local_token
        && hashes_equal(local, &presented)
    {
        return Ok(Caller { name: "local".into(), role: Role::Operator });
    }
    let invalid = || unauthorized(true, "the token is not valid here (unknown or revoked)");
    let stored = state.ledger.token_by_hash(&presented).await.map_err(|e| ApiError::unavailable(&e))?;
    // Found by its hash; the whole hash compared again without an early exit.
    let Some(stored) = stored.filter(|t| hashes_equal(&t.sha256, &presented)) else {
        return Err(invalid());
    };
    if stored.revoked_at.is_some() {
        tracing::info!(token = %stored.name, "a revoked token was presented");
        return Err(invalid());
    }
    let role: Role = stored.role.parse().map_err(|e| {
        tracing::warn!(token = %stored.name, error = %e, "a token in the ledger has a role that cannot be read; refusing it");
        invalid()
    })?;
    touch(state, &stored.name);
    Ok(Caller { name: stored.name, role })
}

/// Writes the token's last use in the background, at most once a [`TOUCH_EVERY`].
fn touch(state: &Shared, name: &str) {
    let now = Instant::now();
    {
        let mut touched = state.touched.0.lock().unwrap_or_else(|e| e.into_inner());
        if touched.get(name).is_some_and(|at| now.duration_since(*at) < TOUCH_EVERY) {
            return;
        }
        touched.insert(name.to_string(), now);
    }
    let (ledger, name) = (state.ledger.clone(), name.to_string());
    tokio::spawn(async move {
        if let Err(e) = ledger.touch_token(&name, crate::ledger::now()).await {
            tracing::debug!(token = %name, error = %e, "cannot note the token's last use");
        }
    });
}

fn unauthorized(invalid_token: bool, reason: &str) -> ApiError {
    let challenge = if invalid_token { "Bearer realm=\"amtsbote\", error=\"invalid_token\"" } else { "Bearer realm=\"amtsbote\"" };
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", vec![reason.to_string()]).header(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge))
}

pub(crate) fn forbidden(reason: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", vec![reason])
}
