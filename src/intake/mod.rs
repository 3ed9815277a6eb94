//! Intake: where messages enter. Owns taking a message from an inbox folder or an HTTP
//! body, checking it, and recording it in the ledger — validated, or rejected with its
//! reasons — exactly once per source.
//!
//! [`Intake::accept`] is the one way in for both channels. Its `source` is the idempotency
//! key of the delivery (`inbox:<tenant>:<claimed file>`, `http:<tenant>:<sha256>`): the same
//! source accepted twice (a restart after a crash) answers with the request recorded the
//! first time. A second message with a Nachrichten-UUID already recorded — for any tenant:
//! the UUID is unique in the installation — is a duplicate: reported with the first
//! request's id, never processed twice.
//!
//! Tenants speak only for themselves: a message is taken in for a tenant only when its
//! author (`nachrichtenkopf.g2g/autor/kennung`) and, for a request, its
//! `ersuchendeBehoerde/kennung` are the tenant's kennung; otherwise it is rejected with a
//! reason naming both kennungen (authority identifiers, no personal data).
//!
//! A rejected message keeps only the first `intake.keep_rejected_bytes` (64 KiB) of its
//! payload in the ledger, so a hostile 40 MB body is not stored forever; the request's
//! `sha256` stays that of the whole message, and its detail says how much was kept of how
//! many bytes ([`KEPT_NOTE`]).

pub mod inbox;

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::ledger::{Actor, Ledger, LedgerError, NewRequest, Recorded, RequestId, RequestState};
use crate::xamtshilfe::{Checker, Message, Rejection};

/// What became of a delivered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Valid and recorded: the request waits in state `validated` for the next stage.
    Accepted { id: RequestId },
    /// This very delivery was recorded before (a re-run after a crash).
    AlreadyRecorded { id: RequestId, state: Option<RequestState> },
    /// Another delivery already brought a message with this Nachrichten-UUID.
    Duplicate { existing: RequestId, uuid: String },
    /// Not a valid message; recorded as rejected with these reasons.
    Rejected { id: RequestId, reasons: Vec<String> },
}

/// Checks messages and records them.
#[derive(Clone)]
pub struct Intake {
    pub ledger: Arc<dyn Ledger>,
    pub checker: Arc<Checker>,
    /// When set, deliveries for tenants not in it, deactivated or outside their validity
    /// dates are rejected with that reason.
    pub tenants: Option<Arc<Vec<crate::config::Tenant>>>,
    /// The bytes of a rejected message's payload kept in the ledger (`intake.keep_rejected_bytes`).
    pub keep_rejected_bytes: usize,
}

/// How the detail of a rejected request whose payload was cut says so: appended to the
/// reasons as ` [payload kept: the first N of M bytes; sha256 is of all M]`.
pub const KEPT_NOTE: &str = " [payload kept: ";

impl Intake {
    pub fn new(ledger: Arc<dyn Ledger>, checker: Arc<Checker>) -> Self {
        Intake { ledger, checker, tenants: None, keep_rejected_bytes: crate::config::IntakeConfig::default().keep_rejected_bytes }
    }

    /// Keeps at most `bytes` of a rejected message's payload (`intake.keep_rejected_bytes`).
    pub fn with_keep_rejected_bytes(mut self, bytes: usize) -> Self {
        self.keep_rejected_bytes = bytes;
        self
    }

    /// Refuses deliveries for tenants that are not (or no longer) active.
    pub fn with_tenants(mut self, tenants: Vec<crate::config::Tenant>) -> Self {
        self.tenants = Some(Arc::new(tenants));
        self
    }

    /// Why `tenant` may not deliver today, if it may not.
    fn tenant_refusal(&self, tenant: &str) -> Option<String> {
        let tenants = self.tenants.as_ref()?;
        match tenants.iter().find(|t| t.id == tenant) {
            None => Some(format!("tenant '{tenant}' is not configured")),
            Some(t) => t.refusal_on(crate::directory::today()),
        }
    }

    /// Why `message` may not come in for `tenant`: its author, or the requesting authority of
    /// a request, is not the tenant's kennung. Nothing to say when the tenants are not known
    /// here or the message has no header (the directory's query).
    fn foreign_author(&self, tenant: &str, message: &Message) -> Option<String> {
        let own = &self.tenants.as_ref()?.iter().find(|t| t.id == tenant)?.kennung;
        let autor = &message.envelope()?.kopf.autor.kennung;
        if autor != own {
            return Some(format!(
                "nachrichtenkopf.g2g/autor/kennung is {autor}, but tenant '{tenant}' is {own}: a tenant sends only in its own name"
            ));
        }
        if let Message::Ersuchen(m) = message
            && m.ersuchen.ersuchende_behoerde.kennung != *own
        {
            return Some(format!(
                "ersuchen/ersuchendeBehoerde/kennung is {}, but tenant '{tenant}' is {own}: a tenant requests only in its own name",
                m.ersuchen.ersuchende_behoerde.kennung
            ));
        }
        None
    }

    /// Records a delivery that could not even be read (too large, unreadable) as rejected,
    /// without its content.
    pub async fn accept_unreadable(&self, tenant: &str, source: &str, file_name: Option<&str>, error: crate::xamtshilfe::ReadError) -> Result<Outcome, LedgerError> {
        let delivery = Delivery { tenant, source, file_name, sha256: String::new(), payload: Vec::new() };
        self.reject(delivery, "unreadable", vec![error.to_string()]).await
    }

    /// Checks `bytes` and records the result under `source`.
    pub async fn accept(&self, tenant: &str, source: &str, file_name: Option<&str>, bytes: Vec<u8>) -> Result<Outcome, LedgerError> {
        // No look-up first: recording is idempotent by `source` (the database decides), and
        // a redelivery after a crash is rare enough to pay for one more check.
        let sha256 = hex::encode(Sha256::digest(&bytes));
        crate::memory::note_large(bytes.len());
        if let Some(reason) = self.tenant_refusal(tenant) {
            let delivery = Delivery { tenant, source, file_name, sha256, payload: bytes };
            return self.reject(delivery, "refused", vec![reason]).await;
        }
        // Checking is CPU work of ~20 µs for a typical message, milliseconds for a 40 MB
        // one: big messages go to the blocking pool so the runtime keeps answering.
        let (checked, bytes) = if bytes.len() > 256 * 1024 {
            let checker = self.checker.clone();
            tokio::task::spawn_blocking(move || (checker.check_to_store(&bytes), bytes))
                .await
                .map_err(|e| LedgerError::Corrupt(format!("checking task failed: {e}")))?
        } else {
            (self.checker.check_to_store(&bytes), bytes)
        };
        let (message, bytes) = match checked {
            // A text that arrived decomposed is stored in NFC, as the model holds it.
            Ok((message, normalised)) => (message, normalised.unwrap_or(bytes)),
            Err(rejection) => {
                let kind = match &rejection {
                    Rejection::Unreadable(_) => "unreadable",
                    Rejection::Invalid(_) => "invalid",
                };
                let delivery = Delivery { tenant, source, file_name, sha256, payload: bytes };
                return self.reject(delivery, kind, rejection.reasons()).await;
            }
        };
        if let Some(reason) = self.foreign_author(tenant, &message) {
            let delivery = Delivery { tenant, source, file_name, sha256, payload: bytes };
            return self.reject(delivery, "refused", vec![reason]).await;
        }
        let uuid = message.uuid().map(|u| u.to_string());
        let kind = message.kind();
        // The source holds the sender's file name: escaped in the text people read.
        let detail = format!("{} from {}{}", kind.root_name(), inbox::shown_str(source), if message.is_test() { " (test message)" } else { "" });
        let new = NewRequest {
            tenant: tenant.to_string(),
            source: source.to_string(),
            sha256,
            nachrichten_uuid: uuid.clone(),
            kind: kind.root_name().to_string(),
            test: message.is_test(),
            payload: bytes,
            file_name: file_name.map(str::to_string),
        };
        Ok(match self.ledger.record(new, RequestState::Validated, &Actor::system("intake"), Some(&detail)).await? {
            Recorded::New(id) => Outcome::Accepted { id },
            Recorded::AlreadyRecorded(id) => Outcome::AlreadyRecorded { id, state: None },
            Recorded::Duplicate { existing } => Outcome::Duplicate { existing, uuid: uuid.unwrap_or_default() },
        })
    }

    /// Records a delivery as rejected with its reasons. A rejected message holds no
    /// Nachrichten-UUID in the ledger: the corrected message may come again under the same one.
    async fn reject(&self, mut d: Delivery<'_>, kind: &str, reasons: Vec<String>) -> Result<Outcome, LedgerError> {
        let mut detail = format!("rejected: {}", reasons.join("; "));
        let size = d.payload.len();
        if size > self.keep_rejected_bytes {
            // The hash stays the whole message's (d.sha256 was taken before).
            d.payload.truncate(self.keep_rejected_bytes);
            d.payload.shrink_to_fit();
            detail.push_str(&format!("{KEPT_NOTE}the first {} of {size} bytes; sha256 is of all {size}]", self.keep_rejected_bytes));
        }
        let new = NewRequest {
            tenant: d.tenant.to_string(),
            source: d.source.to_string(),
            sha256: d.sha256,
            nachrichten_uuid: None,
            kind: kind.to_string(),
            test: false,
            payload: d.payload,
            file_name: d.file_name.map(str::to_string),
        };
        Ok(match self.ledger.record(new, RequestState::Rejected, &Actor::system("intake"), Some(&detail)).await? {
            Recorded::New(id) => Outcome::Rejected { id, reasons },
            Recorded::AlreadyRecorded(id) => Outcome::AlreadyRecorded { id, state: Some(RequestState::Rejected) },
            Recorded::Duplicate { existing } => Outcome::Duplicate { existing, uuid: String::new() },
        })
    }
}

/// One delivery on its way into the ledger.
struct Delivery<'a> {
    tenant: &'a str,
    source: &'a str,
    file_name: Option<&'a str>,
    sha256: String,
    payload: Vec<u8>,
}
