//! The report stage (`report` queue): asks the XTA server for a transmitted request's
//! transport report (`getTransportReport` under its stored MessageID) until it is final.
//!
//! - green (1) → `delivered`; yellow (2) → `delivered` with the warnings in the journal;
//! - red (3) → `failed` with the server's errors: an operator decides (send by post, ask);
//! - open (0), or a call that failed transiently → asked again later, with growing waits
//!   ([`super::attempts`], `jobs/report.toml`); after `max_attempts` reports still open →
//!   `failed` ("no final transport report").
//!
//! A permanent fault (the server does not know the MessageID, say) → `failed` with it.
//! Reading a report changes nothing outside, so a job delivered twice is harmless; the
//! compare-and-set decides which of two answers counts.

use std::collections::HashMap;
use std::sync::Arc;

use crate::ledger::{Actor, Ledger, Request, RequestId, RequestState};
use crate::queue::stage::{StageError, StageHandler};
use crate::queue::{Queue, StageJob};
use crate::xta::attempts::{AttemptPolicy, Next, move_on};
use crate::xta::soap::Record;
use crate::xta::{Identifier, MessageId, Retry, TransportStatus, XtaClient};

/// The `report` queue's worker.
pub struct ReportStage {
    pub ledger: Arc<dyn Ledger>,
    pub client: XtaClient,
    /// Each tenant's authority identifier (`kennung`): the author who asks.
    pub authors: HashMap<String, String>,
    /// How often and how far apart (`jobs/report.toml`).
    pub attempts: AttemptPolicy,
}

fn actor() -> Actor {
    Actor::system("report")
}

/// `code: reason; …`, for the journal (the server's words, clipped).
fn records(list: &[Record]) -> String {
    let text = list.iter().map(|r| format!("{} {}", r.code, r.reason)).collect::<Vec<_>>().join("; ");
    crate::xta::xml::clip(&text).to_string()
}

impl ReportStage {
    async fn moved(&self, id: RequestId, to: RequestState, detail: &str) -> Result<(), StageError> {
        move_on(&*self.ledger, id, RequestState::Transmitted, to, &actor(), detail).await
    }

    async fn again(&self, request: &Request, what: &str, error: Option<&crate::xta::XtaError>) -> Result<(), StageError> {
        match self.attempts.next(&*self.ledger, Queue::Report, request, RequestState::Transmitted, &actor(), what, error).await? {
            Next::Scheduled => Ok(()),
            Next::Exhausted { attempts } => {
                let detail = format!("no final transport report after {attempts} requests for it (the last: {what}); ask the receiving authority, then deliver by post if needed");
                self.moved(request.id, RequestState::Failed, &detail).await
            }
        }
    }

    async fn report(&self, request: Request) -> Result<(), StageError> {
        if request.state != RequestState::Transmitted {
            tracing::debug!(request = %request.id, state = %request.state, "report job for a request that moved on; nothing to do");
            return Ok(());
        }
        let Some(stored) = request.xta_message_id.as_deref() else {
            return Err(StageError::Abort(format!("request {} was transmitted without a MessageID", request.id)));
        };
        let message_id = MessageId::parse(stored).map_err(|e| StageError::Abort(format!("stored MessageID: {e}")))?;
        let Some(author) = self.authors.get(&request.tenant) else {
            return Err(StageError::Abort(format!("tenant {} is not configured", request.tenant)));
        };
        match self.client.get_transport_report(&Identifier::xoev(author.clone()), &message_id).await {
            Ok(report) => match report.status {
                TransportStatus::Green => self.moved(request.id, RequestState::Delivered, &format!("transport report green ({})", report.report_time.format("%Y-%m-%d %H:%M:%S UTC"))).await,
                TransportStatus::Yellow => {
                    let detail = format!("transport report yellow ({}), warnings: {}", report.report_time.format("%Y-%m-%d %H:%M:%S UTC"), records(&report.warnings));
                    self.moved(request.id, RequestState::Delivered, &detail).await
                }
                TransportStatus::Red => {
                    let detail = format!("transport report red ({}), errors: {}; the reader did not get it", report.report_time.format("%Y-%m-%d %H:%M:%S UTC"), records(&report.errors));
                    self.moved(request.id, RequestState::Failed, &detail).await
                }
                TransportStatus::Open => self.again(&request, "transport report still open", None).await,
            },
            Err(e) if e.retry() == Retry::Permanent => self.moved(request.id, RequestState::Failed, &format!("getTransportReport refused for good ({e})")).await,
            Err(e) => self.again(&request, "getTransportReport", Some(&e)).await,
        }
    }
}

#[async_trait::async_trait]
impl StageHandler for ReportStage {
    fn queue(&self) -> Queue {
        Queue::Report
    }

    async fn handle(&self, job: StageJob) -> Result<(), StageError> {
        let id = RequestId(job.request);
        match self.ledger.get(id).await {
            Ok(Some(request)) => self.report(request).await,
            Ok(None) => Err(StageError::Abort(format!("request {id} is not in the ledger"))),
            Err(e) => Err(StageError::Retry(e.to_string())),
        }
    }
}
