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
//! The stage is a worker of the `route` queue ([`RouteStage`]): a request entering
//! `validated` gets a trigger in the ledger's outbox in the same transaction, the relay
//! pushes it as a job, and the job moves the request with a compare-and-set, so a job run
//! twice, or by two processes, routes it once. The decision (authority, channel, XTA reader
//! and service, directory generation) is kept in the request's columns. `amtsbote route ID`
//! re-routes an unroutable request after the directory was fixed.

use std::sync::Arc;

use crate::directory::{Directory, LookupResult, Query, SharedDirectory};
use crate::ledger::{Actor, Channel, Ledger, LedgerError, RequestId, RequestState, RoutedTo};
use crate::queue::stage::{StageError, StageHandler};
use crate::queue::{Queue, StageJob};
use crate::xamtshilfe::{Checker, Message};

/// A payload larger than this is read on the blocking pool.
const LARGE_CHECK: usize = 256 * 1024;

/// Where a request went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routing {
    Routed { kennung: String, detail: String, to: RoutedTo },
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
    let authority = directory.authority(&kennung);
    let channel = match authority.map(|au| au.kanal) {
        Some(crate::xamtshilfe::Kanal::Xta) => Channel::Xta,
        _ => Channel::Post,
    };
    let to = RoutedTo {
        kennung: kennung.clone(),
        name: authority.map(|au| au.name.clone()).unwrap_or_default(),
        channel,
        xta_reader: authority.and_then(|au| au.xta_reader.clone()).filter(|_| channel == Channel::Xta),
        xta_service: authority.and_then(|au| au.xta_service.clone()).filter(|_| channel == Channel::Xta),
        directory_generation: directory.generation().unwrap_or("sample").to_string(),
    };
    Routing::Routed { detail: format!("to {kennung} {name} via {channel}"), kennung, to }
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
        crate::memory::note_large(payload.len());
        let directory = self.directory.get();
        let route = move |checker: &Checker, payload: &[u8]| match checker.check(payload) {
            Ok(message) => match decide(&message, &directory, crate::directory::today()) {
                Routing::Routed { detail, to, .. } => (RequestState::Routed, detail, Some(to)),
                Routing::Unroutable { detail } => (RequestState::Unroutable, detail, None),
                Routing::Rejected { detail } => (RequestState::Rejected, detail, None),
            },
            // Checked at intake; a changed code list or limit may refuse it now.
            Err(rejection) => (RequestState::Rejected, format!("no longer valid: {}", rejection.reasons().join("; ")), None),
        };
        // Reading a 40 MB message again is seconds of CPU on a debug build: on the
        // blocking pool, as the intake does, so the runtime's threads (timers, HTTP, the
        // other stages) go on meanwhile. The message (and its model) is dropped there too.
        let (to, detail, routed) = if payload.len() > LARGE_CHECK {
            let checker = self.checker.clone();
            let slot = crate::memory::large_work_permit().await;
            tokio::task::spawn_blocking(move || {
                let _slot = slot;
                route(&checker, &payload)
            })
                .await
                .map_err(|e| LedgerError::Corrupt(format!("routing task failed: {e}")))?
        } else {
            route(&self.checker, &payload)
        };
        match routed {
            Some(routed) => {
                self.ledger.route(id, from, &routed, actor, Some(&detail)).await?;
                if routed.channel == Channel::Post {
                    return self.by_post(id, actor).await;
                }
            }
            None if from == to => return Ok(from),
            None => self.ledger.transition(id, from, to, actor, Some(&detail)).await?,
        }
        Ok(to)
    }

    /// A request routed to an authority that takes no XTA goes on to `awaiting_print`: the
    /// next print batch takes it.
    pub async fn by_post(&self, id: RequestId, actor: &Actor) -> Result<RequestState, LedgerError> {
        self.ledger.transition(id, RequestState::Routed, RequestState::AwaitingPrint, actor, Some(BY_POST)).await?;
        Ok(RequestState::AwaitingPrint)
    }
}

/// The journal's word for a request that goes by post because its authority takes no XTA.
pub const BY_POST: &str = "its authority takes no XTA: by post, in the next print batch";

/// The `route` queue's worker: routes the request a job names, if it still waits in
/// `validated`.
pub struct RouteStage {
    pub router: Router,
}

#[async_trait::async_trait]
impl StageHandler for RouteStage {
    fn queue(&self) -> Queue {
        Queue::Route
    }

    async fn handle(&self, job: StageJob) -> Result<(), StageError> {
        // No look-up first: the compare-and-set decides. A request that moved on (a job
        // delivered twice) loses it and nothing changes.
        let id = RequestId(job.request);
        let actor = Actor::system("route");
        match self.router.route(id, RequestState::Validated, &actor).await {
            Ok(RequestState::Routed | RequestState::AwaitingPrint) => {
                tracing::debug!(request = %id, "request routed");
                Ok(())
            }
            // Routed to post before, and the step on to print was cut off (a crash between
            // the two commits): this job, run again, takes it.
            Err(LedgerError::Conflict { current: RequestState::Routed, .. })
                if matches!(self.router.ledger.get(id).await, Ok(Some(r)) if r.routed.as_ref().is_some_and(|to| to.channel == Channel::Post)) =>
            {
                match self.router.by_post(id, &actor).await {
                    Ok(_) | Err(LedgerError::Conflict { .. }) => Ok(()),
                    Err(e) => Err(StageError::Retry(e.to_string())),
                }
            }
            Ok(state) => {
                tracing::info!(request = %id, %state, "request not routed; see `amtsbote request show {id}`");
                Ok(())
            }
            // Routed already, or another worker was quicker: nothing to do.
            Err(LedgerError::Conflict { current, .. }) => {
                tracing::debug!(request = %id, state = %current, "route job for a request that moved on; nothing to do");
                Ok(())
            }
            Err(LedgerError::NotFound(_)) => Err(StageError::Abort(format!("request {id} is not in the ledger"))),
            Err(e) => Err(StageError::Retry(e.to_string())),
        }
    }
}
