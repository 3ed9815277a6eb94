//! `/api/v1/zustaendigkeit`: who is responsible for an address and a kind of claim, asked of
//! the directory — as JSON (`GET`, the lookup contract of spec/directory.md) or as the XML
//! pair `ZustaendigkeitAnfrage.001` → `ZustaendigkeitAntwort.002` (`POST`).
//!
//! An ambiguous or unknown address is never guessed: `GET` says `ambiguous` (with the
//! candidates) or `not_found`; `POST` answers the empty `ZustaendigkeitAntwort.002` and says
//! which in the header `X-Amtsbote-Lookup`.

use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::Shared;
use super::error::ApiError;
use crate::directory::{LookupResult, Query as Lookup};
use crate::xamtshilfe::{Message, ZustaendigeBehoerde, ZustaendigkeitAntwort};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Params {
    plz: String,
    ort: String,
    strasse: Option<String>,
    einnahmeart: Option<String>,
    /// The day the answer is for (`YYYY-MM-DD`); default today.
    datum: Option<String>,
}

fn day(datum: Option<&str>) -> Result<chrono::NaiveDate, ApiError> {
    match datum {
        None => Ok(crate::directory::today()),
        Some(d) => d
            .parse::<crate::xamtshilfe::Date>()
            .map(|d| d.0)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad datum", vec![e])),
    }
}

/// `GET /api/v1/zustaendigkeit?plz=…&ort=…[&strasse=…][&einnahmeart=…][&datum=…]`.
pub(crate) async fn get(State(state): State<Shared>, query: Result<Query<Params>, axum::extract::rejection::QueryRejection>) -> Result<Response, ApiError> {
    let Query(p) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad query", vec![e.body_text(), "plz and ort are required".into()]))?;
    let date = day(p.datum.as_deref())?;
    let directory = state.directory.get();
    let result = directory.lookup(&Lookup { plz: &p.plz, ort: &p.ort, strasse: p.strasse.as_deref(), einnahmeart: p.einnahmeart.as_deref(), date });
    Ok(axum::Json(result.to_json()).into_response())
}

/// `POST /api/v1/zustaendigkeit` with a `ZustaendigkeitAnfrage.001`.
pub(crate) async fn post(State(state): State<Shared>, request: axum::extract::Request) -> Result<Response, ApiError> {
    let body = super::read_body(request, &state).await?;
    let anfrage = match state.intake.checker.check(&body) {
        Ok(Message::ZustaendigkeitAnfrage(a)) => a,
        Ok(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "not a ZustaendigkeitAnfrage.001",
                vec![format!("the body is a {}", other.kind())],
            ));
        }
        Err(rejection) => return Err(ApiError::new(StatusCode::BAD_REQUEST, "rejected", rejection.reasons())),
    };
    let a = &anfrage.anschrift;
    let directory = state.directory.get();
    let result = directory.lookup(&Lookup {
        plz: &a.postleitzahl,
        ort: &a.ort,
        strasse: a.strasse.as_deref(),
        einnahmeart: Some(anfrage.einnahmeart.code.as_str()),
        date: crate::directory::today(),
    });
    let (status, behoerde) = match &result {
        LookupResult::Found { authority, .. } => (
            "found",
            Some(ZustaendigeBehoerde {
                kennung: authority.kennung.clone(),
                name: authority.name.clone(),
                anschrift: authority.anschrift.clone(),
                kanal: authority.kanal,
            }),
        ),
        LookupResult::Ambiguous { .. } => ("ambiguous", None),
        LookupResult::NotFound => ("not_found", None),
    };
    let namespace = state.intake.checker.reader.namespaces.first().cloned().unwrap_or_default();
    let xml = Message::ZustaendigkeitAntwort(Box::new(ZustaendigkeitAntwort { behoerde }))
        .to_xml(&namespace)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "cannot write the answer", vec![e.to_string()]))?;
    let mut response = (StatusCode::OK, xml).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/xml; charset=utf-8"));
    headers.insert("x-amtsbote-lookup", HeaderValue::from_static(status));
    Ok(response)
}
