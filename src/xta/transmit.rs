//! The transmit stage (`transmit` queue): sends a request routed to an XTA authority.
//!
//! For a request in `routed` (channel `xta`): `createMessageId`, then the compare-and-set
//! `routed → transmitting` that stores the MessageID — before anything is sent, so every
//! later attempt (a retry, a job delivered twice, a crash) sends under the same MessageID and
//! the server never delivers the request twice. Then `lookupService` for the authority's
//! reader and service: not available → `awaiting_print` (the letter goes by post). Then
//! `sendMessage` (the message as received, inline; `TestMsg` for test messages) →
//! `transmitted`.
//!
//! Failures: transient ones (technical faults, 5xx, timeouts, broken connections, an unknown
//! availability) are tried again after the queue's backoff (`jobs/transmit.toml`); when the
//! attempts are used up the job is dead and the request stays `transmitting`, visible to
//! operators (`amtsbote jobs --failed`). Permanent ones (permission, parameter, schema,
//! virus) send the request to `awaiting_print` with the reason.
//!
//! Still to come (issue 9): the attempt count and next time in the ledger, the breaker and
//! the per-server concurrency limit, the transport report (`transmitted → delivered`).

use std::collections::HashMap;
use std::sync::Arc;

use crate::ledger::{Actor, Channel, Ledger, LedgerError, Request, RequestId, RequestState};
use crate::queue::stage::{StageError, StageHandler};
use crate::queue::{Queue, StageJob};
use crate::xta::soap::{BusinessScenario, Content, KeyCode, Qualifier};
use crate::xta::{Availability, ContentContainer, Identifier, MessageMetaData, Retry, XtaClient, XtaError};

/// The `transmit` queue's worker.
pub struct TransmitStage {
    pub ledger: Arc<dyn Ledger>,
    pub client: XtaClient,
    /// Each tenant's authority identifier (`kennung`): the author of what it sends.
    pub authors: HashMap<String, String>,
}

fn actor() -> Actor {
    Actor::system("transmit")
}

/// A ledger error: passing, try again.
fn retry(e: LedgerError) -> StageError {
    StageError::Retry(e.to_string())
}

impl TransmitStage {
    /// Where a call's failure leaves the request: retried (transient) or sent to print.
    async fn failed(&self, id: RequestId, what: &str, e: XtaError) -> Result<(), StageError> {
        match e.retry() {
            Retry::Transient => Err(StageError::Retry(format!("{what}: {e}"))),
            Retry::Permanent => self.moved(id, RequestState::AwaitingPrint, &format!("{what} refused for good ({e}); the request goes by post")).await,
        }
    }

    /// `transmitting → to`; a request that moved on already (another attempt) is fine.
    async fn moved(&self, id: RequestId, to: RequestState, detail: &str) -> Result<(), StageError> {
        match self.ledger.transition(id, RequestState::Transmitting, to, &actor(), Some(detail)).await {
            Ok(()) | Err(LedgerError::Conflict { .. }) => Ok(()),
            Err(e) => Err(retry(e)),
        }
    }

    async fn transmit(&self, request: Request) -> Result<(), StageError> {
        let id = request.id;
        let Some(routed) = request.routed.clone().filter(|r| r.channel == Channel::Xta) else {
            return Err(StageError::Abort(format!("request {id} is not routed to an XTA authority")));
        };
        let (Some(reader), Some(service)) = (routed.xta_reader.clone(), routed.xta_service.clone()) else {
            return Err(StageError::Abort(format!("the directory names no XTA reader and service for {}", routed.kennung)));
        };
        let Some(author) = self.authors.get(&request.tenant).cloned() else {
            return Err(StageError::Abort(format!("tenant {} is not configured", request.tenant)));
        };
        let author = Identifier::xoev(author);
        let reader = Identifier::xoev(reader);

        // The MessageID first, stored with the move to transmitting: from here on every
        // attempt uses it.
        let message_id = match (&request.xta_message_id, request.state) {
            (Some(stored), RequestState::Transmitting) => stored.clone(),
            (_, RequestState::Routed | RequestState::Failed) => {
                let fresh = match self.client.create_message_id(&author).await {
                    Ok(fresh) => fresh,
                    Err(e) => return Err(StageError::Retry(format!("createMessageId: {e}"))),
                };
                let detail = format!("MessageID {}", fresh.as_str());
                match self.ledger.begin_transmission(id, request.state, fresh.as_str(), &actor(), Some(&detail)).await {
                    Ok(stored) => stored,
                    // Another attempt got there first: it stored the MessageID; run again.
                    Err(LedgerError::Conflict { .. }) => return Err(StageError::Retry("another attempt began the transmission".into())),
                    Err(e) => return Err(retry(e)),
                }
            }
            (_, state) => {
                tracing::debug!(request = %id, %state, "transmit job for a request that moved on; nothing to do");
                return Ok(());
            }
        };
        let message_id = crate::xta::MessageId::parse(&message_id).map_err(|e| StageError::Abort(format!("stored MessageID: {e}")))?;

        match self.client.lookup_service(&author, &reader, &service).await {
            Ok(result) => match result.availability {
                Availability::Available => {}
                Availability::NotAvailable => {
                    let detail = format!("reader {} does not take {service} electronically; the request goes by post", reader.value);
                    return self.moved(id, RequestState::AwaitingPrint, &detail).await;
                }
                Availability::Unknown => return Err(StageError::Retry(format!("lookupService: availability of {service} at {} unknown", reader.value))),
            },
            Err(e) => return self.failed(id, "lookupService", e).await,
        }

        let payload = self.ledger.payload(id).await.map_err(retry)?;
        let metadata = MessageMetaData {
            test_msg: request.test,
            origin: Some(chrono::Utc::now()),
            author,
            reader,
            message_id: message_id.clone(),
            qualifier: Qualifier {
                subject: None,
                service,
                business_scenario: BusinessScenario::Defined(KeyCode {
                    code: "XAMTSHILFE_DATA".into(),
                    name: None,
                    list_uri: "urn:de:dataport:codeliste:business.scenario".into(),
                    list_version: "1".into(),
                }),
                message_type: KeyCode {
                    code: request.kind.clone(),
                    name: None,
                    list_uri: "urn:xoev-de:xamtshilfe:codeliste:nachrichtentyp".into(),
                    list_version: "1.1".into(),
                },
                payload_schema: "xAmtshilfe110".into(),
            },
            msg_size: Some(payload.len() as u64),
        };
        let container = ContentContainer {
            message: Content { content_type: "application/xml".into(), filename: request.file_name.clone(), data: payload },
            attachments: Vec::new(),
        };
        if let Err(e) = self.client.send_message(&metadata, &container).await {
            return self.failed(id, "sendMessage", e).await;
        }
        self.moved(id, RequestState::Transmitted, &format!("accepted by the XTA server as {}", message_id.as_str())).await
    }
}

#[async_trait::async_trait]
impl StageHandler for TransmitStage {
    fn queue(&self) -> Queue {
        Queue::Transmit
    }

    async fn handle(&self, job: StageJob) -> Result<(), StageError> {
        let id = RequestId(job.request);
        match self.ledger.get(id).await {
            Ok(Some(request)) => self.transmit(request).await,
            Ok(None) => Err(StageError::Abort(format!("request {id} is not in the ledger"))),
            Err(e) => Err(retry(e)),
        }
    }
}
