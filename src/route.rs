//! The routing stage: finds the authority responsible for a validated request in the
//! directory, and moves the request on — `routed` (authority and channel in the journal) or
//! `unroutable` (with the candidates, for an operator; never a guess).
//!
//! Rules, as decided for amtsbote:
//! - The debtor's address is the first debtor's; the Einnahmeart is each claim's. All claims
//!   must lead to the same authority: a request whose claims belong to different authorities
//!   is **rejected** with the split it needs ("send one request per authority"), since only
//!   the requester can split a request it signed.
//! - A request that names its reader (`leser`) is checked: the reader must be the authority
//!   the directory finds; otherwise it is unroutable, with both named.
//! - Test messages are routed like any other (the channel decides later that nothing real
//!   goes out).
//! - An address under an information block (Auskunftssperre) is used for the lookup, but
//!   never written into the journal: details name authorities and municipality keys only.
//!
//! The stage is driven by the ledger: [`Router::run`] takes requests in state `validated`
//! (the truth; a restart loses nothing) and moves each with a compare-and-set, so two
//! processes never route one request twice. `amtsbote route ID` re-routes an unroutable
//! request after the directory was fixed.

use std::sync::Arc;
use std::time::Duration;

use crate::directory::{Directory, LookupResult, Query, SharedDirectory};
use crate::ledger::{Actor, Ledger, LedgerError, ListFilter, RequestId, RequestState};
use crate::xamtshilfe::{Checker, Message};

/// Where a request went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routing {
    Routed { kennung: String, detail: String },
    Unroutable { detail: String },
    Rejected { detail: String },
}

/// Decides where one request goes (no ledger access: a pure function of the message and
/// the directory).
pub fn decide(message: &Message, directory: &Directory, date: chrono::NaiveDate) -> Routing {
    let Message::Ersuchen(m) = message else {
        return Routing::Unroutable { detail: format!("{} is not routed by address (only requests are)", message.kind()) };
    };
    let Some(schuldner) = m.ersuchen.schuldner.first() else {
        return Routing::Rejected { detail: "no debtor to route by".into() };
    };
    let a = &schuldner.anschrift;
    let mut found: Vec<(String, String, String)> = Vec::new(); // (einnahmeart, kennung, name)
    for forderung in &m.ersuchen.forderung {
        let einnahmeart = forderung.einnahmeart.code.trim();
        let q = Query { plz: &a.postleitzahl, ort: &a.ort, strasse: a.strasse.as_deref(), einnahmeart: Some(einnahmeart), date };
        match directory.lookup(&q) {
            LookupResult::Found { authority, rule, ags } => {
                if !found.iter().any(|(e, _, _)| e == einnahmeart) {
                    found.push((einnahmeart.to_string(), authority.kennung.clone(), format!("{} (rule {} {} for AGS {ags})", authority.name, rule.schluessel, rule.einnahmeart)));
                }
            }
            LookupResult::Ambiguous { candidates } => {
                let list = candidates
                    .iter()
                    .map(|c| match c.authority {
                        Some(au) => format!("{} {} (AGS {})", au.kennung, au.name, c.municipality.ags),
                        None => format!("no authority for AGS {}", c.municipality.ags),
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                return Routing::Unroutable { detail: format!("ambiguous for Einnahmeart {einnahmeart}: {list}") };
            }
            LookupResult::NotFound => {
                return Routing::Unroutable {
                    detail: format!("no responsible authority found for the debtor's address and Einnahmeart {einnahmeart}"),
                };
            }
        }
    }
    let Some((_, kennung, name)) = found.first().cloned() else {
        return Routing::Rejected { detail: "no claim to route by".into() };
    };
    if found.iter().any(|(_, k, _)| *k != kennung) {
        let split = found.iter().map(|(e, k, _)| format!("{e} → {k}")).collect::<Vec<_>>().join(", ");
        return Routing::Rejected {
            detail: format!("the claims belong to different authorities ({split}); send one request per responsible authority"),
        };
    }
    if let Some(leser) = &m.kopf.leser
        && leser.kennung.trim() != kennung
    {
        return Routing::Unroutable {
            detail: format!("the request names reader {} but the directory finds {kennung} {name}", leser.kennung.trim()),
        };
    }
    let kanal = directory.authority(&kennung).map(|au| au.kanal);
    let kanal = match kanal {
        Some(crate::xamtshilfe::Kanal::Xta) => "xta",
        _ => "post",
    };
    Routing::Routed { detail: format!("to {kennung} {name} via {kanal}"), kennung }
}

/// Routes validated requests.
#[derive(Clone)]
pub struct Router {
    pub ledger: Arc<dyn Ledger>,
    pub checker: Arc<Checker>,
    pub directory: Arc<SharedDirectory>,
}

impl Router {
    /// Routes one request that is `from` (validated, or unroutable when re-routing).
    pub async fn route(&self, id: RequestId, from: RequestState, actor: &Actor) -> Result<RequestState, LedgerError> {
        let payload = self.ledger.payload(id).await?;
        let (to, detail) = match self.checker.check(&payload) {
            Ok(message) => match decide(&message, &self.directory.get(), crate::directory::today()) {
                Routing::Routed { detail, .. } => (RequestState::Routed, detail),
                Routing::Unroutable { detail } => (RequestState::Unroutable, detail),
                Routing::Rejected { detail } => (RequestState::Rejected, detail),
            },
            // Checked at intake; a changed code list or limit may refuse it now.
            Err(rejection) => (RequestState::Rejected, format!("no longer valid: {}", rejection.reasons().join("; "))),
        };
        let to = if from == to { return Ok(from) } else { to };
        self.ledger.transition(id, from, to, actor, Some(&detail)).await?;
        Ok(to)
    }

    /// Routes whatever waits in state `validated`, until `shutdown` turns true.
    pub async fn run(self, poll: Duration, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let actor = Actor::system("route");
        loop {
            let mut busy = false;
            match self.ledger.list(&ListFilter::default().state(RequestState::Validated).limit(100)).await {
                Ok(waiting) => {
                    busy = waiting.len() == 100;
                    for r in waiting {
                        match self.route(r.id, RequestState::Validated, &actor).await {
                            Ok(state) => tracing::info!(request = %r.id, %state, "request routed"),
                            // Another process was quicker: fine.
                            Err(LedgerError::Conflict { .. }) => {}
                            Err(e) => tracing::warn!(request = %r.id, error = %e, "cannot route a request; will retry"),
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the requests waiting for routing; will retry"),
            }
            if *shutdown.borrow() {
                return;
            }
            if !busy {
                tokio::select! {
                    _ = tokio::time::sleep(poll) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    }
}
