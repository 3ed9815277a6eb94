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
//! Failures: a transient one (no answer, 5xx, a technical fault, an unknown availability,
//! the breaker holding calls back) schedules the next attempt in the ledger
//! ([`super::attempts`]: count and time in the request, the wait in the queue backend); the
//! job itself succeeds. Permanent ones (permission, parameter, schema, virus) and the last
//! of `max_attempts` (`jobs/transmit.toml`) end the transmission: the request goes to
//! `awaiting_print` with the reason (`xta.print_when_failed`, the default) or to `failed`
//! for an operator. An availability still unknown after `xta.unknown_availability_attempts`
//! lookups sends it to print. Each call passes the server's breaker and its limit of calls
//! in flight ([`super::breaker`], in the client).
//!
//! Two attempts at once (a job delivered twice) are harmless: the compare-and-set lets one
//! store the MessageID, the other reads it and sends under it; the server keeps one message
//! per MessageID.

use std::collections::HashMap;
use std::sync::Arc;

use crate::ledger::{Actor, Channel, Ledger, LedgerError, Request, RequestId, RequestState};
use crate::queue::stage::{StageError, StageHandler};
use crate::queue::{Queue, StageJob};
use crate::xta::soap::Content;
use crate::xta::attempts::{AttemptPolicy, Next, move_on};
use crate::xta::{Availability, ContentContainer, Identifier, MessageMetaData, Retry, XtaClient, XtaError};

/// The `transmit` queue's worker.
pub struct TransmitStage {
    pub ledger: Arc<dyn Ledger>,
    pub client: XtaClient,
    /// Each tenant's authority identifier (`kennung`): the author of what it sends.
    pub authors: HashMap<String, String>,
    /// Attempts and waits (`jobs/transmit.toml`).
    pub attempts: AttemptPolicy,
    /// Lookups answered "unknown" before the request goes by post.
    pub unknown_availability_attempts: u32,
    /// Where a transmission that failed for good goes: print (true) or failed.
    pub print_when_failed: bool,
}

fn actor() -> Actor {
    Actor::system("transmit")
}

/// A ledger error: passing, try again.
fn retry(e: LedgerError) -> StageError {
    StageError::Retry(e.to_string())
}

impl TransmitStage {
    async fn moved(&self, id: RequestId, from: RequestState, to: RequestState, detail: &str) -> Result<(), StageError> {
        move_on(&*self.ledger, id, from, to, &actor(), detail).await
    }

    /// The transmission failed for good: to print, or to failed for an operator.
    async fn give_up(&self, request: &Request, state: RequestState, reason: &str) -> Result<(), StageError> {
        if self.print_when_failed {
            self.moved(request.id, state, RequestState::AwaitingPrint, &format!("{reason}; the request goes by post")).await
        } else {
            self.moved(request.id, state, RequestState::Failed, &format!("{reason}; waiting for an operator (xta.print_when_failed is off)")).await
        }
    }

    /// `what` failed with `e` while the request was in `state`.
    async fn failed(&self, request: &Request, state: RequestState, what: &str, e: XtaError) -> Result<(), StageError> {
        if e.retry() == Retry::Permanent {
            return self.give_up(request, state, &format!("{what} refused for good ({e})")).await;
        }
        match self.attempts.next(&*self.ledger, Queue::Transmit, request, state, &actor(), what, Some(&e)).await? {
            Next::Scheduled => Ok(()),
            Next::Exhausted { attempts } => self.give_up(request, state, &format!("{attempts} attempts failed, the last: {what}: {e}")).await,
        }
    }

    async fn transmit(&self, mut request: Request) -> Result<(), StageError> {
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
        let message_id = loop {
            match (&request.xta_message_id, request.state) {
                (Some(stored), RequestState::Transmitting) => break stored.clone(),
                (_, from @ (RequestState::Routed | RequestState::Failed)) => {
                    let fresh = match self.client.create_message_id(&author).await {
                        Ok(fresh) => fresh,
                        Err(e) => return self.failed(&request, from, "createMessageId", e).await,
                    };
                    let detail = format!("MessageID {}", fresh.as_str());
                    match self.ledger.begin_transmission(id, from, fresh.as_str(), &actor(), Some(&detail)).await {
                        Ok(stored) => {
                            // What the move wrote (without reading it back).
                            request.state = RequestState::Transmitting;
                            request.seq += 1;
                            request.attempts = 0;
                            break stored;
                        }
                        // Another attempt got there first: read what it stored, and go on with it.
                        Err(LedgerError::Conflict { .. }) => {
                            request = self.ledger.get(id).await.map_err(retry)?.ok_or_else(|| StageError::Abort(format!("request {id} left the ledger")))?;
                        }
                        Err(e) => return Err(retry(e)),
                    }
                }
                (_, state) => {
                    tracing::debug!(request = %id, %state, "transmit job for a request that moved on; nothing to do");
                    return Ok(());
                }
            }
        };
        let message_id = crate::xta::MessageId::parse(&message_id).map_err(|e| StageError::Abort(format!("stored MessageID: {e}")))?;
        let state = RequestState::Transmitting;

        match self.client.lookup_service(&author, &reader, &service).await {
            Ok(result) => match result.availability {
                Availability::Available => {}
                Availability::NotAvailable => {
                    let detail = format!("reader {} does not take {service} electronically; the request goes by post", reader.value);
                    return self.moved(id, state, RequestState::AwaitingPrint, &detail).await;
                }
                Availability::Unknown => {
                    let what = format!("lookupService: availability of {service} at {} unknown", reader.value);
                    if request.attempts + 1 >= self.unknown_availability_attempts {
                        let detail = format!("{what} after {} lookups; the request goes by post", request.attempts + 1);
                        return self.moved(id, state, RequestState::AwaitingPrint, &detail).await;
                    }
                    return match self.attempts.next(&*self.ledger, Queue::Transmit, &request, state, &actor(), &what, None).await? {
                        Next::Scheduled => Ok(()),
                        Next::Exhausted { attempts } => self.give_up(&request, state, &format!("{what} after {attempts} attempts")).await,
                    };
                }
            },
            Err(e) => return self.failed(&request, state, "lookupService", e).await,
        }

        let payload = self.ledger.payload(id).await.map_err(retry)?;
        crate::memory::note_large(payload.len());
        let metadata = MessageMetaData::xamtshilfe(author, reader, message_id.clone(), service, request.kind.clone(), request.test, Some(payload.len() as u64));
        let container = ContentContainer {
            message: Content { content_type: "application/xml".into(), filename: request.file_name.clone(), data: payload },
            attachments: Vec::new(),
        };
        if let Err(e) = self.client.send_owned(metadata, container).await {
            return self.failed(&request, state, "sendMessage", e).await;
        }
        self.moved(id, state, RequestState::Transmitted, &format!("accepted by the XTA server as {}", message_id.as_str())).await
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
