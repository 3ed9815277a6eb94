//! The receive stage: messages waiting in the XTA message box for our tenants are fetched
//! and written into each tenant's outbox folder, once, surviving crashes.
//!
//! What it owns: the scheduled poll ([`run`], on the `[schedule]` of `jobs/receive.toml`, or
//! every `xta.receive_interval_ms`, with a first pass at start), one pass over every active
//! tenant's box ([`ReceiveStage::pass`]), the file names derived from MessageIDs
//! ([`file_name_for`]) and the writing of `outbox/<tenant>/<name>.xml` and
//! `outbox/<tenant>/error/<name>.xml` (+ `<name>.xml.error.txt`).
//!
//! Per message of a tenant's box (its reader identity is the tenant's `kennung`):
//! getStatusList → getMessage → check (the xAmtshilfe reader and validator, with the limits
//! of every message we read: size, depth, no DOCTYPE) → **store** in the ledger
//! (`received_messages`, insert-if-absent by MessageID, with the check's reason) → claim the
//! write → write the file from the stored payload (`<name>.xml.<ulid>.part`, fsync, rename,
//! fsync the folder) → mark it `written` (or `invalid`) → close → mark it `closed`.
//!
//! A message is "fetched" at the server only after close, so a crash before close offers it
//! again: its row is found, and a row `written` or `invalid` is only closed, not written
//! again. A crash between the rename and the mark re-writes the same file under the same name
//! (the name comes from the MessageID): the message is still in the outbox once. Two
//! processes polling one box at once both fetch, but one row is stored and one claim is
//! granted: the other leaves the message to its holder (a claim of a process that died runs
//! out after `timeout_secs` of `jobs/receive.toml`).
//!
//! Failures: the server unreachable or unwell (timeouts, broken connections, 5xx, technical
//! faults) or the ledger or the folder failing ends the tenant's pass with a warning; the
//! next pass tries again. A message that cannot be fetched (a permanent fault, an unreadable
//! reply) is skipped with a warning and stays in the box; the others go on.
//!
//! Privacy: payloads are debtors' data. Logs name MessageIDs, tenants and sizes, never
//! content.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sha2::Digest as _;
use tokio::sync::watch;

use super::{Identifier, MessageId, XtaClient, XtaError};
use crate::config::Tenant;
use crate::ledger::{Ledger, LedgerError, NewReceived, Received, ReceivedState, StoredReceived};
use crate::queue::JobSchedule;
use crate::queue::metrics::{ReceiveOutcome, StageMetrics};
use crate::supervise::crash_point;
use crate::xamtshilfe::Checker;

/// When passes run.
#[derive(Debug, Clone)]
pub enum Cadence {
    /// On a cron schedule in its time zone (`[schedule]` of `jobs/receive.toml`).
    Schedule(Box<JobSchedule>),
    /// Every so often (`xta.receive_interval_ms`).
    Every(Duration),
}

impl Cadence {
    /// How long from `now` to the next pass.
    pub fn wait_after(&self, now: chrono::DateTime<Utc>) -> Duration {
        match self {
            Cadence::Every(every) => *every,
            Cadence::Schedule(schedule) => schedule
                .next_after(now)
                .and_then(|next| (next.with_timezone(&Utc) - now).to_std().ok())
                // A schedule that never fires again (its last year passed): once an hour.
                .unwrap_or(Duration::from_secs(3600)),
        }
    }
}

/// One tenant as the receive stage sees it.
#[derive(Debug, Clone)]
pub struct ReceiveTenant {
    pub id: String,
    /// Its reader identity at the XTA server (the tenant's `kennung`).
    pub reader: String,
    /// `outbox/<tenant>/`: the messages; `error/` in it: the invalid ones.
    pub outbox: PathBuf,
}

impl ReceiveTenant {
    /// Every configured tenant that may use amtsbote today (active, inside its dates).
    pub fn active(tenants: &[Tenant]) -> Vec<ReceiveTenant> {
        let today = crate::directory::today();
        tenants
            .iter()
            .filter(|t| t.refusal_on(today).is_none())
            .map(|t| ReceiveTenant { id: t.id.clone(), reader: t.kennung.clone(), outbox: t.outbox().to_path_buf() })
            .collect()
    }

    pub fn error_dir(&self) -> PathBuf {
        self.outbox.join("error")
    }
}

/// Why one message, or a tenant's pass, failed.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error("XTA {operation}: {source}")]
    Xta { operation: &'static str, source: XtaError },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// The MessageID was stored for another tenant (two tenants with one reader identity).
    #[error("MessageID {message_id} was stored for tenant {stored_for}, not for {tenant}; left in the box")]
    OtherTenant { message_id: String, tenant: String, stored_for: String },
}

impl ReceiveError {
    /// Whether the rest of the tenant's pass should wait for the next one: the server, the
    /// ledger or the folder is in trouble, not this one message.
    fn ends_pass(&self) -> bool {
        match self {
            ReceiveError::Xta { source, .. } => server_trouble(source),
            ReceiveError::Ledger(_) | ReceiveError::Io { .. } => true,
            ReceiveError::OtherTenant { .. } => false,
        }
    }
}

/// The server is unreachable or unwell (as opposed to one message that cannot be read).
fn server_trouble(e: &XtaError) -> bool {
    e.is_transient() && !matches!(e, XtaError::InvalidReply(_) | XtaError::UnexpectedReply { .. })
}

fn xta(operation: &'static str) -> impl FnOnce(XtaError) -> ReceiveError {
    move |source| ReceiveError::Xta { operation, source }
}

/// What one pass over a tenant's box did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassSummary {
    /// Written into the outbox.
    pub written: u64,
    /// Written into the outbox's `error/`.
    pub invalid: u64,
    /// Closed at the server (written now or before).
    pub closed: u64,
    /// Left to another process that holds the claim to write it.
    pub left_to_another: u64,
    /// Failed and left in the box.
    pub failed: u64,
}

impl PassSummary {
    fn add(&mut self, other: PassSummary) {
        self.written += other.written;
        self.invalid += other.invalid;
        self.closed += other.closed;
        self.left_to_another += other.left_to_another;
        self.failed += other.failed;
    }

    fn is_empty(&self) -> bool {
        *self == PassSummary::default()
    }
}

/// What became of one listed message.
enum Handled {
    Closed { wrote: Option<ReceivedState> },
    LeftToAnother,
}

/// What became of a stored message's file.
enum Write {
    /// Written by this process (into the outbox, or its `error/`).
    ByUs(ReceivedState),
    /// Written by another process meanwhile.
    ByAnother(ReceivedState),
    /// Another process holds the claim and is not done.
    LeftToAnother,
}

/// The receive stage of one process.
pub struct ReceiveStage {
    pub ledger: Arc<dyn Ledger>,
    pub client: XtaClient,
    pub checker: Arc<Checker>,
    /// The configured tenants; each pass looks into the boxes of those active that day.
    pub tenants: Vec<Tenant>,
    pub metrics: Arc<StageMetrics>,
    /// This process in claims: host, pid and a random part.
    pub owner: String,
    /// How long a claim to write one message's file holds.
    pub claim_for: Duration,
    /// Messages asked for per getStatusList.
    pub max_items: u32,
}

/// A name for this process in claims.
pub fn owner_name() -> String {
    format!("{}:{}:{}", crate::hostname(), std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..8])
}

impl ReceiveStage {
    /// One pass over every tenant's box; stops early when `stop` turns true.
    pub async fn pass(&self, stop: &watch::Receiver<bool>) -> PassSummary {
        let mut total = PassSummary::default();
        for tenant in &ReceiveTenant::active(&self.tenants) {
            if *stop.borrow() {
                break;
            }
            let mut summary = PassSummary::default();
            if let Err(e) = self.receive_tenant(tenant, stop, &mut summary).await {
                self.metrics.received.count(&tenant.id, ReceiveOutcome::FailedPass);
                tracing::warn!(tenant = %tenant.id, error = %e, "receive: the pass over this box ends here; the next pass tries again");
            }
            if !summary.is_empty() {
                tracing::info!(tenant = %tenant.id, written = summary.written, invalid = summary.invalid, closed = summary.closed, left_to_another = summary.left_to_another, failed = summary.failed, "receive: pass over the box done");
            }
            total.add(summary);
        }
        total
    }

    /// The pass over one tenant's box: status lists until the box is empty or nothing moves.
    async fn receive_tenant(&self, tenant: &ReceiveTenant, stop: &watch::Receiver<bool>, summary: &mut PassSummary) -> Result<(), ReceiveError> {
        for dir in [tenant.outbox.clone(), tenant.error_dir()] {
            std::fs::create_dir_all(&dir).map_err(|source| ReceiveError::Io { path: dir.clone(), source })?;
        }
        let reader = Identifier::xoev(tenant.reader.clone());
        loop {
            let (msgbox, entries) = self.client.get_status_list(&reader, Some(self.max_items)).await.map_err(xta("getStatusList"))?;
            if entries.is_empty() {
                return Ok(());
            }
            let mut progress = false;
            for entry in entries {
                if *stop.borrow() {
                    return Ok(());
                }
                let id = entry.message_id;
                match self.receive_one(tenant, &reader, &msgbox.request_id, &id).await {
                    Ok(Handled::Closed { wrote }) => {
                        progress = true;
                        summary.closed += 1;
                        match wrote {
                            Some(ReceivedState::Written) => summary.written += 1,
                            Some(ReceivedState::Invalid) => summary.invalid += 1,
                            _ => {}
                        }
                    }
                    Ok(Handled::LeftToAnother) => summary.left_to_another += 1,
                    Err(e) if e.ends_pass() => return Err(e),
                    Err(e) => {
                        summary.failed += 1;
                        self.metrics.received.count(&tenant.id, ReceiveOutcome::Failed);
                        tracing::warn!(tenant = %tenant.id, message_id = %id, error = %e, "receive: message left in the box");
                    }
                }
            }
            if !progress || msgbox.items_pending.unwrap_or(0) == 0 {
                return Ok(());
            }
        }
    }

    /// One listed message: stored (fetched unless stored before), written unless written
    /// before, closed.
    async fn receive_one(&self, tenant: &ReceiveTenant, reader: &Identifier, list_request: &str, message_id: &MessageId) -> Result<Handled, ReceiveError> {
        let id = message_id.as_str();
        let mut close_request = list_request.to_owned();
        let mut fetched_payload = None;
        let row = match self.ledger.received(id).await? {
            Some(row) => row,
            None => {
                let fetched = self.client.get_message(reader, message_id).await.map_err(xta("getMessage"))?;
                close_request = fetched.msgbox.request_id.clone();
                if !fetched.container.attachments.is_empty() {
                    tracing::warn!(tenant = %tenant.id, message_id = %id, attachments = fetched.container.attachments.len(), "receive: the container's attachments are not delivered (only its message)");
                }
                let payload = fetched.container.message.data;
                let reason = self.check(&payload).await;
                tracing::debug!(tenant = %tenant.id, message_id = %id, bytes = payload.len(), valid = reason.is_none(), "receive: fetched");
                let new = NewReceived {
                    message_id: id.to_owned(),
                    tenant: tenant.id.clone(),
                    reader: tenant.reader.clone(),
                    file_name: file_name_for(id),
                    payload,
                    reason,
                };
                let payload = new.payload.clone();
                match self.ledger.store_received(new).await? {
                    StoredReceived::New(row) => {
                        self.metrics.received.count(&tenant.id, ReceiveOutcome::Stored);
                        fetched_payload = Some(payload);
                        row
                    }
                    // Another process stored it in the meantime: its row is the truth.
                    StoredReceived::Before(row) => row,
                }
            }
        };
        if row.tenant != tenant.id {
            return Err(ReceiveError::OtherTenant { message_id: id.to_owned(), tenant: tenant.id.clone(), stored_for: row.tenant });
        }
        let (state, wrote) = match row.state {
            ReceivedState::Stored => match self.write(tenant, &row, fetched_payload).await? {
                Write::ByUs(state) => (state, Some(state)),
                Write::ByAnother(state) => (state, None),
                Write::LeftToAnother => return Ok(Handled::LeftToAnother),
            },
            state => (state, None),
        };
        crash_point("receive-before-close");
        self.client.close(reader, &close_request, std::slice::from_ref(message_id)).await.map_err(xta("close"))?;
        if state != ReceivedState::Closed {
            // False: another process closed it too and marked it first.
            if self.ledger.mark_received(id, state, ReceivedState::Closed).await? {
                self.metrics.received.count(&tenant.id, ReceiveOutcome::Closed);
            }
        }
        Ok(Handled::Closed { wrote })
    }

    /// The check of every message we read; the reasons when it fails.
    async fn check(&self, payload: &[u8]) -> Option<String> {
        let result = if payload.len() > 256 * 1024 {
            // Milliseconds for a big message: not on the runtime's threads.
            let (checker, bytes) = (self.checker.clone(), payload.to_vec());
            match tokio::task::spawn_blocking(move || checker.check(&bytes).map(|_| ())).await {
                Ok(result) => result,
                Err(e) => return Some(format!("the check failed: {e}")),
            }
        } else {
            self.checker.check(payload).map(|_| ())
        };
        result.err().map(|rejection| rejection.reasons().join("\n"))
    }

    /// Writes a stored message's file under this process's claim.
    async fn write(&self, tenant: &ReceiveTenant, row: &Received, payload: Option<Vec<u8>>) -> Result<Write, ReceiveError> {
        let id = row.message_id.as_str();
        let until = Utc::now() + chrono::Duration::from_std(self.claim_for).unwrap_or(chrono::Duration::minutes(5));
        if !self.ledger.claim_received(id, &self.owner, until).await? {
            // Another process writes it, or wrote it since we read the row.
            return Ok(match self.ledger.received(id).await?.map(|r| r.state).filter(|s| s.is_handled()) {
                Some(state) => Write::ByAnother(state),
                None => Write::LeftToAnother,
            });
        }
        let payload = match payload {
            Some(p) => p,
            None => self.ledger.received_payload(id).await?.ok_or_else(|| LedgerError::Corrupt(format!("received message {id} has no payload")))?,
        };
        // A claim held before (ours before a crash, or a dead process's): its writer may
        // have left a `.part` behind.
        let leftovers = row.claimed_by.is_some();
        let (to, dir, reason) = match &row.reason {
            None => (ReceivedState::Written, tenant.outbox.clone(), None),
            Some(reason) => (ReceivedState::Invalid, tenant.error_dir(), Some(format!("invalid: {reason}\nMessageID: {id}\n"))),
        };
        let name = row.file_name.clone();
        let bytes = payload.len();
        tokio::task::spawn_blocking(move || {
            if leftovers {
                remove_parts(&dir, &name);
            }
            if let Some(reason) = reason {
                write_durably(&dir, &format!("{name}.error.txt"), reason.as_bytes())?;
            }
            write_durably(&dir, &name, &payload)
        })
        .await
        .map_err(|e| ReceiveError::Io { path: tenant.outbox.clone(), source: std::io::Error::other(e.to_string()) })?
        .map_err(|(path, source)| ReceiveError::Io { path, source })?;
        if !self.ledger.mark_received(id, ReceivedState::Stored, to).await? {
            // Our claim ran out and another process wrote and marked it: same file, same name.
            tracing::debug!(message_id = %id, "receive: marked by another process meanwhile");
        }
        self.metrics.received.count(&tenant.id, if to == ReceivedState::Written { ReceiveOutcome::Written } else { ReceiveOutcome::Invalid });
        tracing::info!(tenant = %tenant.id, message_id = %id, file = %row.file_name, bytes, state = %to, "receive: message written");
        Ok(Write::ByUs(to))
    }
}

/// Runs a pass at once, then one on each beat of `cadence` — and one whenever `wake` is
/// told (the built-in simulator got a message) — until `stop` turns true.
pub async fn run(stage: Arc<ReceiveStage>, cadence: Cadence, wake: Option<Arc<tokio::sync::Notify>>, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        stage.pass(&stop).await;
        let wait = cadence.wait_after(Utc::now());
        let woken = async {
            match &wake {
                Some(wake) => wake.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = woken => {}
            _ = stop.wait_for(|s| *s) => return Ok(()),
        }
    }
}

/// Longest MessageID part kept readable in a file name.
const MAX_READABLE: usize = 150;

/// The file name of a received message, from its MessageID alone (the same on every
/// re-write): `urn:de:xta:messageid:<prefix>:<uuid>` becomes `<prefix>_<uuid>.xml` with each
/// `:` as `_` when the rest is plain (letters, digits, `.`, `-`, `:`, starting with a letter
/// or digit, at most 150 characters). Anything else — the MessageID is outside input — is
/// `msg_<sanitised, cut to 64>_<16 hex of its SHA-256>.xml`: only `[A-Za-z0-9._-]`, bounded,
/// never a dotfile, and distinct from every plain name (a plain one ends in a UUID).
pub fn file_name_for(message_id: &str) -> String {
    let rest = message_id.strip_prefix("urn:de:xta:messageid:").unwrap_or(message_id);
    let plain = !rest.is_empty()
        && rest.len() <= MAX_READABLE
        && rest.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && rest.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'))
        && !rest.contains("..");
    if plain {
        return format!("{}.xml", rest.replace(':', "_"));
    }
    let sanitised: String = rest.chars().take(64).map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    let hash = hex::encode(sha2::Sha256::digest(message_id.as_bytes()));
    format!("msg_{sanitised}_{}.xml", &hash[..16])
}

/// Writes `dir/name` whole or not at all: a `.part` beside it, fsynced, renamed over it (a
/// re-write of the same message replaces an identical file), and the folder fsynced.
fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), (PathBuf, std::io::Error)> {
    let part = dir.join(format!("{name}.{}.part", ulid::Ulid::generate()));
    let target = dir.join(name);
    let result = (|| {
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(&part)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&part, &target)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&part);
        (target, e)
    })
}

/// Removes `<name>.*.part` left in `dir` by a writer that died.
fn remove_parts(dir: &Path, name: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let prefix = format!("{name}.");
    for entry in entries.flatten() {
        let file = entry.file_name();
        let file = file.to_string_lossy();
        if file.starts_with(&prefix) && file.ends_with(".part") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_come_from_the_message_id_alone() {
        let id = "urn:de:xta:messageid:xtasim:0e0b3c1a-2d2b-4a0e-9f43-7d8f3c1b2a10";
        assert_eq!(file_name_for(id), "xtasim_0e0b3c1a-2d2b-4a0e-9f43-7d8f3c1b2a10.xml");
        assert_eq!(file_name_for(id), file_name_for(id));
        // `_` in the prefix would make `a_b:x` and `a:b:x` one name: hashed instead.
        let a = file_name_for("urn:de:xta:messageid:a_b:0e0b3c1a-2d2b-4a0e-9f43-7d8f3c1b2a10");
        let b = file_name_for("urn:de:xta:messageid:a:b:0e0b3c1a-2d2b-4a0e-9f43-7d8f3c1b2a10");
        assert_ne!(a, b);
        assert!(a.starts_with("msg_a_b_0e0b3c1a"), "{a}");
        for hostile in ["../../etc/passwd", "/abs", ".hidden", "a/b", "x\0y", "ä", "", "..", &"x".repeat(5000), "urn:de:xta:messageid:..:x"] {
            let name = file_name_for(hostile);
            assert!(name.len() <= 100, "{name}");
            assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')), "{name}");
            assert!(!name.starts_with('.') && !name.contains(".."), "{name}");
            assert!(name.ends_with(".xml"), "{name}");
        }
        assert_ne!(file_name_for("a/b"), file_name_for("a_b"));
    }

    #[test]
    fn a_rewrite_replaces_the_file_and_leaves_no_part() {
        let dir = tempfile::tempdir().unwrap();
        write_durably(dir.path(), "m.xml", b"<m/>").unwrap();
        std::fs::write(dir.path().join("m.xml.01ARZ3NDEKTSV4RRFFQ69G5FAV.part"), b"<m").unwrap();
        remove_parts(dir.path(), "m.xml");
        write_durably(dir.path(), "m.xml", b"<m/>").unwrap();
        let names: Vec<String> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["m.xml"]);
        assert_eq!(std::fs::read(dir.path().join("m.xml")).unwrap(), b"<m/>");
    }

    #[test]
    fn the_cadence_follows_the_cron_in_its_zone() {
        let schedule: JobSchedule = toml::from_str::<toml::Table>("cron = \"0 */5 * * * *\"\ntimezone = \"Europe/Berlin\"")
            .unwrap()
            .try_into()
            .unwrap();
        let now = chrono::DateTime::parse_from_rfc3339("2026-03-01T10:02:30Z").unwrap().with_timezone(&Utc);
        assert_eq!(Cadence::Schedule(Box::new(schedule)).wait_after(now), Duration::from_secs(150));
        assert_eq!(Cadence::Every(Duration::from_millis(200)).wait_after(now), Duration::from_millis(200));
    }
}
