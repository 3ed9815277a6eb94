//! Notifications: telling the requesting authority by email what became of its request.
//!
//! The ledger writes a notification row in the same transaction as the journal event it is
//! about (transmitted, delivered, printed, posted, rejected, unroutable, failed; and a message
//! received for a tenant). The `notify` stage of `serve` (`notify`) turns them into emails:
//! whom (the tenant's `notify` addresses, else the requester's `email`), which events the
//! tenant wants, single or as a digest, rendered from `templates/mail/` (`render`), sent over
//! SMTP or written as `.eml` files (`smtp`), each with a stable id in its Message-ID header
//! and its outcome — accepted, deferred, failed — recorded in the ledger.
//!
//! This file holds what the parts share: the events and what an email says about them.

pub mod smtp;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

pub use crate::ledger::mail::{Event, UnknownEvent};

pub mod notify;
pub mod render;
pub mod transport;

/// One email's content, before it is rendered: one item, or several for a digest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MailContent {
    /// The tenant the email is about (its name and kennung).
    pub tenant_name: String,
    pub tenant_kennung: String,
    /// Whom the requester calls when something needs a person (config `mail.contact`).
    pub contact: Option<String>,
    /// At least one; more than one makes a digest.
    pub items: Vec<Item>,
}

/// One event about one request (or one received message).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Item {
    pub event: Event,
    /// When it happened (the journal event's time).
    pub at: DateTime<Utc>,
    /// The request's number in amtsbote; `None` for a received message.
    pub request_id: Option<i64>,
    /// The requester's own file number (Aktenzeichen), when the message could be read.
    pub aktenzeichen: Option<String>,
    /// The message's Nachrichten-UUID, when it could be read.
    pub nachrichten_uuid: Option<String>,
    /// Whether it was a test message (`test="true"`).
    pub test: bool,
    /// The debtors as the requester sent them; the address is `None` under Auskunftssperre.
    pub debtors: Vec<Debtor>,
    /// The total claimed, in euro cents (`gesamtbetrag`).
    pub total_cents: Option<i64>,
    /// transmitted, delivered, printed, posted: the responsible authority (name, kennung).
    pub authority: Option<Authority>,
    /// transmitted, delivered: the XTA MessageID.
    pub xta_message_id: Option<String>,
    /// delivered: what the transport report said ("grün", or the warnings of a yellow one).
    pub report: Option<String>,
    /// printed, posted: the batch's date and the letter's number in it.
    pub batch_date: Option<NaiveDate>,
    pub letter_number: Option<u32>,
    /// rejected, unroutable, failed: why (the reasons recorded in the ledger).
    pub reasons: Vec<String>,
    /// received: the message that arrived.
    pub received: Option<ReceivedInfo>,
}

/// A debtor as named in an email.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Debtor {
    /// "Vorname Familienname" or the Firma.
    pub name: String,
    /// One line ("Musterstraße 1, 32657 Lemgo"); `None` when the debtor is under
    /// Auskunftssperre: the address goes to the responsible authority only.
    pub address: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Authority {
    pub name: String,
    pub kennung: String,
}

/// A message received from the tenant's XTA message box.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReceivedInfo {
    /// Its XTA MessageID.
    pub message_id: String,
    /// The file it was written to in the tenant's outbox folder (relative to it).
    pub file_name: String,
    /// Its message type, e.g. `vollstreckungshilfe.Rueckmeldung.0201`, when readable.
    pub message_type: Option<String>,
    /// The sender's name, when readable.
    pub from: Option<String>,
    /// `false`: it failed the checks and went to `error/`; `reasons` says why.
    pub valid: bool,
    pub reasons: Vec<String>,
}
