//! The notify stage: the ledger's notifications become emails, and each email is handed to
//! the server once.
//!
//! Three kinds of task run under one stage of `serve`:
//! - the **composer** takes the notifications no email carries yet, decides for each whom it
//!   goes to (the tenant's `notify` addresses, else the requester's `email` in the request)
//!   and whether the tenant wants it (`notify_events`), and writes the emails — one per
//!   notification and receiving domain, or, for a tenant with `digest_minutes`, one per
//!   window listing every event in it — in one transaction with the notifications' links;
//! - **senders** (`concurrency` of `jobs/notify.toml`, a connection each) claim due emails,
//!   render them from `templates/mail/`, and hand each over: MAIL/RCPT/DATA, then the note
//!   "sending" in the ledger, then the content, then the outcome. See `ledger::mail` for why
//!   this order sends nothing twice across a crash. A session that keeps emails for good
//!   only per batch (the `.eml` folder: its files synced together) is settled at the end of
//!   the batch, and only then are its emails noted accepted;
//! - the **keeper** looks every half minute for emails a sender of a dead process held
//!   (claimed: due again; sending: unconfirmed).
//!
//! A "try later" (4xx, an unreachable server) defers the email by the backoff of
//! `jobs/notify.toml` and makes its receiving domain wait as long (the others go on); after
//! `mail.give_up_hours` it is failed. A 5xx fails it at once. Failed and unconfirmed emails
//! are for an operator: `amtsbote notifications --failed`, `retry`, `discard`.
//!
//! Privacy: the email says no more than the requester sent, a debtor under Auskunftssperre
//! without the address; no content is logged.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, watch};

use super::render::Templates;
use super::transport::{Refusal, Session, Transport};
use super::{Authority, Debtor, Event, Item, MailContent, ReceivedInfo};
use crate::config::{MailConfig, Tenant};
use crate::ledger::{Ledger, Mail, MailMark, NewMail, Notification};
use crate::queue::JobConfig;
use crate::xamtshilfe::Message;
use crate::xamtshilfe::read::ReaderConfig;

/// What the stage did, for `/metrics` (`amtsbote_mails_total{outcome}`).
#[derive(Debug, Default)]
pub struct MailCounters {
    pub accepted: AtomicU64,
    pub deferred: AtomicU64,
    pub failed: AtomicU64,
    /// Found in `sending` after a crash.
    pub unconfirmed: AtomicU64,
    /// Notifications that get no email (not wanted, no address).
    pub skipped: AtomicU64,
}

impl MailCounters {
    /// `amtsbote_mails_total{outcome}` in Prometheus' text format.
    pub fn render(&self, text: &mut String) {
        use std::fmt::Write as _;
        text.push_str("# HELP amtsbote_mails_total What became of the tries to hand over a notification email, and notifications that got none (skipped).\n");
        text.push_str("# TYPE amtsbote_mails_total counter\n");
        for (outcome, n) in [
            ("accepted", &self.accepted),
            ("deferred", &self.deferred),
            ("failed", &self.failed),
            ("unconfirmed", &self.unconfirmed),
            ("skipped", &self.skipped),
        ] {
            let _ = writeln!(text, "amtsbote_mails_total{{outcome=\"{outcome}\"}} {}", n.load(Ordering::Relaxed));
        }
    }
}

/// The stage as `serve` runs it: the configuration's tenants, `[mail]` and `[smtp]`, the
/// templates (checked now: a broken one stops start-up with its file and line).
pub fn notifier(app: &crate::app::App, jobs: JobConfig) -> anyhow::Result<Notifier> {
    use anyhow::Context as _;
    let config = &app.config;
    let templates = Templates::load(&config.data_dir).context("the email templates (templates/mail, overridable in <data_dir>/templates/mail)")?;
    for unknown in templates.unknown_overrides() {
        tracing::warn!(file = %unknown.display(), "notify: this file in the templates folder replaces no email template (templates/mail/README.md lists the names); it is not used");
    }
    let transport: Arc<dyn Transport> = Arc::new(super::smtp::Mailer::from_config(&config.smtp, &config.data_dir).context("the smtp settings")?);
    let owner = owner_name();
    let log_dir = config.data_dir.join("mail/senders");
    let log = SendLog::open(&log_dir, &owner).context("the notify stage's send log")?;
    // One connection per sender, and never more than the server is said to take.
    let senders = (jobs.concurrency.max(1)).min(config.smtp.pool_size.max(1) as usize);
    Ok(Notifier {
        senders,
        ledger: app.ledger.clone(),
        tenants: config.tenants.iter().map(|t| (t.id.clone(), t.clone())).collect(),
        mail: config.mail.clone(),
        jobs,
        templates: Arc::new(templates),
        transport,
        reader: app.checker.reader.clone(),
        owner,
        counters: Arc::default(),
        log_dir,
        log,
    })
}

/// Everything the stage needs, built once by `serve`.
pub struct Notifier {
    pub ledger: Arc<dyn Ledger>,
    /// The configured tenants by id.
    pub tenants: HashMap<String, Tenant>,
    pub mail: MailConfig,
    /// `jobs/notify.toml`: senders, timeout, batch size, poll interval, backoff.
    pub jobs: JobConfig,
    /// Senders run at once, each on its own connection: `concurrency` of
    /// `jobs/notify.toml`, at most `smtp.pool_size`.
    pub senders: usize,
    pub templates: Arc<Templates>,
    pub transport: Arc<dyn Transport>,
    /// How the stored messages are read back (the configured namespaces).
    pub reader: ReaderConfig,
    /// This process in claims: `notify-<host>-<pid>`.
    pub owner: String,
    pub counters: Arc<MailCounters>,
    /// Where the senders' logs are (`<data_dir>/mail/senders/`), and this process's.
    pub log_dir: std::path::PathBuf,
    pub log: SendLog,
}

/// What a sender noted about an email in its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// Its content goes to the server now.
    Sending,
    /// The server accepted it.
    Accepted,
    /// The server refused the content (it did not take it).
    Refused,
}

impl Marker {
    fn letter(self) -> char {
        match self {
            Marker::Sending => 'S',
            Marker::Accepted => 'A',
            Marker::Refused => 'R',
        }
    }
}

/// A sender's log: one line per step (`S <id>`, `A <id>`, `R <id>`), appended with a plain
/// write, not synced. It is what tells, after a crash, whether an email's content had begun
/// to go: a note in the ledger would cost a sync, and a note that is durable before the
/// content goes leaves exactly that long a window in which a crash strands an email that
/// never went. A write survives the process (the kernel has it); a power cut may lose the
/// newest lines, and then an email may go twice. One file per process
/// (`<data_dir>/mail/senders/<owner>.log`), emptied when the stage starts and removed once
/// another process has read it after this one died.
pub struct SendLog {
    file: std::sync::Mutex<std::fs::File>,
}

impl SendLog {
    /// This process's log (appended to; [`SendLog::clear`] empties it).
    pub fn open(dir: &std::path::Path, owner: &str) -> std::io::Result<SendLog> {
        std::fs::create_dir_all(dir)?;
        let file = std::fs::OpenOptions::new().create(true).append(true).open(dir.join(format!("{owner}.log")))?;
        Ok(SendLog { file: std::sync::Mutex::new(file) })
    }

    /// Empty: nothing this process noted is held any more.
    pub fn clear(&self) -> std::io::Result<()> {
        self.file.lock().unwrap_or_else(|e| e.into_inner()).set_len(0)
    }

    pub fn note(&self, marker: Marker, id: &str) -> std::io::Result<()> {
        use std::io::Write as _;
        let line = format!("{} {id}\n", marker.letter());
        self.file.lock().unwrap_or_else(|e| e.into_inner()).write_all(line.as_bytes())
    }

    /// The last note per email in `owner`'s log (none: nothing noted, or no log).
    pub fn read(dir: &std::path::Path, owner: &str) -> std::io::Result<HashMap<String, Marker>> {
        let text = match std::fs::read_to_string(dir.join(format!("{owner}.log"))) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
            Err(e) => return Err(e),
        };
        let mut last = HashMap::new();
        // A line cut off by the crash has no newline: it is not counted.
        for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
            let marker = match line.as_bytes().first() {
                Some(b'S') => Marker::Sending,
                Some(b'A') => Marker::Accepted,
                Some(b'R') => Marker::Refused,
                _ => continue,
            };
            if let Some(id) = line.get(2..).map(str::trim_end) {
                last.insert(id.to_owned(), marker);
            }
        }
        Ok(last)
    }

    fn remove(dir: &std::path::Path, owner: &str) {
        let _ = std::fs::remove_file(dir.join(format!("{owner}.log")));
    }
}

/// This process's name in the claims of emails.
pub fn owner_name() -> String {
    format!("notify-{}-{}", crate::hostname(), std::process::id())
}

/// Runs the stage until `stop` turns true.
pub async fn run(notifier: Arc<Notifier>, stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    // What this process held before a restart of the stage is let go first: its senders are
    // gone.
    notifier.let_go(true).await?;
    notifier.log.clear()?;
    let wake = Arc::new(Notify::new());
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(compose_loop(notifier.clone(), wake.clone(), stop.clone()));
    tasks.spawn(keep_loop(notifier.clone(), stop.clone()));
    for _ in 0..notifier.senders.max(1) {
        tasks.spawn(send_loop(notifier.clone(), wake.clone(), stop.clone()));
    }
    while let Some(done) = tasks.join_next().await {
        let result = done.map_err(|e| anyhow::anyhow!("a notify task stopped: {e}")).and_then(|r| r);
        if let Err(e) = result {
            tasks.abort_all();
            return Err(e);
        }
    }
    Ok(())
}

/// Waits `poll` or until woken or stopped; true when stopping.
async fn pause(poll: Duration, wake: Option<&Notify>, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    match wake {
        Some(wake) => tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = wake.notified() => {}
            _ = stop.changed() => {}
        },
        None => tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = stop.changed() => {}
        },
    }
    *stop.borrow()
}

async fn compose_loop(n: Arc<Notifier>, wake: Arc<Notify>, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    loop {
        let composed = n.compose_once(Utc::now()).await?;
        if composed.mails > 0 {
            wake.notify_waiters();
        }
        if composed.more {
            if *stop.borrow() {
                return Ok(());
            }
            continue;
        }
        if pause(n.jobs.poll_interval(), None, &mut stop).await {
            return Ok(());
        }
    }
}

async fn keep_loop(n: Arc<Notifier>, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    loop {
        if pause(Duration::from_secs(30), None, &mut stop).await {
            return Ok(());
        }
        n.let_go(false).await?;
    }
}

async fn send_loop(n: Arc<Notifier>, wake: Arc<Notify>, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    let mut session: Option<Box<dyn Session>> = None;
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        let sent = n.send_batch(&mut session, &stop).await?;
        if sent == 0 && pause(n.jobs.poll_interval(), Some(&wake), &mut stop).await {
            return Ok(());
        }
    }
}

/// What one composing pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Composed {
    pub mails: usize,
    pub skipped: usize,
    /// A full page was read: there may be more right away.
    pub more: bool,
}

/// Notifications read per composing pass.
const COMPOSE_PAGE: u32 = 500;

impl Notifier {
    /// One composing pass over the open notifications (see the module doc).
    pub async fn compose_once(&self, now: DateTime<Utc>) -> anyhow::Result<Composed> {
        let open = self.ledger.open_notifications(COMPOSE_PAGE).await?;
        let more = open.len() == COMPOSE_PAGE as usize;
        let mut skipped: Vec<(String, String)> = Vec::new();
        // Per tenant, then per recipient list: the notifications that go together.
        let mut groups: BTreeMap<(String, Vec<String>), Vec<Notification>> = BTreeMap::new();
        for notification in open {
            let Some(tenant) = self.tenants.get(&notification.tenant) else {
                skipped.push((notification.id.clone(), format!("tenant {} is not configured", notification.tenant)));
                continue;
            };
            if tenant.notify_events.as_ref().is_some_and(|wanted| !wanted.contains(&notification.event)) {
                skipped.push((notification.id.clone(), format!("tenant {} does not want {} (notify_events)", tenant.id, notification.event)));
                continue;
            }
            match self.recipients(tenant, &notification).await {
                Ok(to) if !to.is_empty() => groups.entry((tenant.id.clone(), to)).or_default().push(notification),
                Ok(_) => skipped.push((notification.id.clone(), "no address: the tenant has no notify addresses and the message names no email".into())),
                Err(why) => skipped.push((notification.id.clone(), why)),
            }
        }
        let mut mails = Vec::new();
        for ((tenant_id, to), notifications) in groups {
            let window = self.tenants.get(&tenant_id).map_or(0, |t| t.digest_minutes);
            if window == 0 {
                for n in notifications {
                    mails.extend(split_by_domain(&n.id, &tenant_id, &to, false, vec![n.id.clone()]));
                }
                continue;
            }
            // A digest: the window opens with the oldest event and closes `window` minutes
            // later; until then the notifications wait. The page may hold only part of a
            // window's events if very many are open: those not read go in the next digest.
            let oldest = notifications.iter().map(|n| n.at).min().unwrap_or(now);
            if now < oldest + chrono::Duration::minutes(i64::from(window)) {
                continue;
            }
            let ids: Vec<String> = notifications.iter().map(|n| n.id.clone()).collect();
            let digest = ids.len() > 1;
            let base = if digest { format!("d-{}", ids[0]) } else { ids[0].clone() };
            mails.extend(split_by_domain(&base, &tenant_id, &to, digest, ids));
        }
        if mails.is_empty() && skipped.is_empty() {
            return Ok(Composed { more: false, ..Composed::default() });
        }
        self.ledger.compose_mails(&mails, &skipped).await?;
        self.counters.skipped.fetch_add(skipped.len() as u64, Ordering::Relaxed);
        Ok(Composed { mails: mails.len(), skipped: skipped.len(), more })
    }

    /// Whom a notification goes to: the tenant's `notify` addresses, else the `email` of the
    /// ersuchende Behörde in the request.
    async fn recipients(&self, tenant: &Tenant, n: &Notification) -> Result<Vec<String>, String> {
        if !tenant.notify.is_empty() {
            return Ok(tenant.notify.clone());
        }
        let Some(request) = n.request_id else { return Ok(Vec::new()) };
        let payload = self.ledger.payload(request).await.map_err(|e| format!("the request's message cannot be read from the ledger: {e}"))?;
        Ok(match crate::xamtshilfe::read::parse(&payload, &self.reader) {
            // Only a message in the tenant's own name says where the tenant's emails go:
            // anyone who can write into a tenant's inbox could otherwise have amtsbote send
            // a rejected message's details to any address it names.
            Ok(Message::Ersuchen(m)) if m.ersuchen.ersuchende_behoerde.kennung != tenant.kennung => {
                return Err(format!(
                    "no address: the message is not in the tenant's name (its ersuchende Behörde is {}, the tenant is {}), so the email it names is not used",
                    m.ersuchen.ersuchende_behoerde.kennung, tenant.kennung
                ));
            }
            Ok(Message::Ersuchen(m)) => m.ersuchen.ersuchende_behoerde.email.clone().into_iter().collect(),
            _ => Vec::new(),
        })
    }

    /// Gives back what senders that are gone held: at start (`mine`: also this process's
    /// own, from before the stage restarted) and every half minute.
    ///
    /// A sender of this machine left its send log (see [`SendLog`]): an email it noted as
    /// accepted is accepted; one whose content it had begun to send and no answer noted is
    /// unconfirmed (most likely accepted: never sent again by itself); any other is due again.
    /// A sender of another machine whose claim ran out left no log here: its emails are
    /// unconfirmed, so that none goes twice.
    pub async fn let_go(&self, mine: bool) -> anyhow::Result<()> {
        let now = Utc::now();
        let mut logs: HashMap<String, HashMap<String, Marker>> = HashMap::new();
        let mut gone_here = Vec::new();
        for mail in self.ledger.mails_in_hand().await? {
            let Some(owner) = mail.claimed_by.clone() else { continue };
            let here = (mine && owner == self.owner) || crate::owner_gone_here(&owner);
            let expired = mail.claimed_until.is_some_and(|until| until < now);
            if !here && !expired {
                continue;
            }
            let marker = if here {
                if !logs.contains_key(&owner) {
                    logs.insert(owner.clone(), SendLog::read(&self.log_dir, &owner)?);
                    if owner != self.owner {
                        gone_here.push(owner.clone());
                    }
                }
                logs[&owner].get(&mail.id).copied()
            } else {
                Some(Marker::Sending)
            };
            match marker {
                Some(Marker::Accepted) => {
                    self.ledger.mark_mails(&owner, vec![MailMark::Accepted { id: mail.id.clone() }]).await?;
                }
                Some(Marker::Sending) => {
                    self.ledger.mark_mails(&owner, vec![MailMark::HandOver { id: mail.id.clone() }]).await?;
                    if self.ledger.let_go_of_mail(&mail.id, &owner).await? {
                        self.counters.unconfirmed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(mail = %mail.id, "notify: an email was being handed to the server when its sender stopped; it is unconfirmed and not sent again (amtsbote notifications --failed)");
                    }
                }
                Some(Marker::Refused) | None => {
                    self.ledger.let_go_of_mail(&mail.id, &owner).await?;
                }
            }
        }
        for owner in gone_here {
            SendLog::remove(&self.log_dir, &owner);
        }
        Ok(())
    }

    /// Claims a batch of due emails and hands each over; how many it tried.
    async fn send_batch(&self, session: &mut Option<Box<dyn Session>>, stop: &watch::Receiver<bool>) -> anyhow::Result<usize> {
        let batch = self.jobs.batch_size.max(1);
        let hold = self.jobs.timeout() * 4 * u32::try_from(batch).unwrap_or(u32::MAX) + Duration::from_secs(60);
        let until = Utc::now() + chrono::Duration::from_std(hold).unwrap_or(chrono::Duration::hours(1));
        let mails = self.ledger.claim_mails(&self.owner, until, u32::try_from(batch).unwrap_or(u32::MAX)).await?;
        let tried = mails.len();
        // The outcomes, written to the ledger together at the end of the batch (until then
        // the send log has them).
        let mut notes: Vec<MailMark> = Vec::new();
        // Taken by a session that keeps them for good only at its `settle` (the .eml folder).
        let mut unsettled: Vec<Mail> = Vec::new();
        for mail in mails {
            if *stop.borrow() {
                notes.push(MailMark::Released { id: mail.id.clone() });
                continue;
            }
            let note = self.hand_over(&mail, session).await;
            match note {
                Ok(note) => {
                    if matches!(note, MailMark::Accepted { .. }) && session.as_ref().is_some_and(|s| s.defers()) {
                        unsettled.push(mail);
                    }
                    notes.push(note);
                }
                Err(e) => {
                    // The send log failed: nothing more is sent now. What was taken is settled
                    // and noted; the email stays claimed and is let go by the keeper; the
                    // session's transaction is dropped with it.
                    let _ = self.settle(session, unsettled, &mut notes).await;
                    *session = None;
                    let _ = self.ledger.mark_mails(&self.owner, std::mem::take(&mut notes)).await;
                    return Err(e);
                }
            }
        }
        self.settle(session, unsettled, &mut notes).await?;
        self.ledger.mark_mails(&self.owner, notes).await?;
        Ok(tried)
    }

    /// The emails a deferring session took in this batch made durable together; each then
    /// noted accepted in the send log and counted, or, when that failed, refused (tried
    /// again later).
    async fn settle(&self, session: &mut Option<Box<dyn Session>>, unsettled: Vec<Mail>, notes: &mut [MailMark]) -> anyhow::Result<()> {
        if unsettled.is_empty() {
            return Ok(());
        }
        let settled = match session.as_mut() {
            Some(s) => s.settle().await,
            None => Err(Refusal::Transient("the session ended before its emails were kept".into())),
        };
        for mail in unsettled {
            let Some(note) = notes.iter_mut().find(|n| matches!(n, MailMark::Accepted { id } if *id == mail.id)) else { continue };
            match &settled {
                Ok(()) => {
                    self.log.note(Marker::Accepted, &mail.id)?;
                    self.counters.accepted.fetch_add(1, Ordering::Relaxed);
                }
                Err(refused) => {
                    self.log.note(Marker::Refused, &mail.id)?;
                    *note = self.refused(&mail, refused.clone());
                }
            }
        }
        Ok(())
    }

    /// One email: render, begin (MAIL, RCPT, DATA), the note in the send log, the content.
    /// The outcome's note for the ledger is returned; the batch writes them together.
    async fn hand_over(&self, mail: &Mail, session: &mut Option<Box<dyn Session>>) -> anyhow::Result<MailMark> {
        let id = mail.id.clone();
        let content = match self.content_of(mail).await {
            Ok(content) => content,
            Err(why) => return Ok(MailMark::Failed { id, error: why }),
        };
        let from = self.mail.from_address();
        if session.as_ref().is_none_or(|s| !s.usable()) {
            *session = None;
            match self.transport.open().await {
                Ok(s) => *session = Some(s),
                Err(refused) => return Ok(self.refused(mail, refused)),
            }
        }
        let Some(s) = session.as_mut() else { return Ok(MailMark::Released { id }) };
        if let Err(refused) = s.begin(&id, &from, &mail.recipients, &content).await {
            return Ok(self.refused(mail, refused));
        }
        // The note that the content goes now: written (not synced) right before it goes, so a
        // crash after it leaves the email unconfirmed and one before it leaves it unsent.
        self.log.note(Marker::Sending, &id)?;
        match s.finish(&content).await {
            // Noted and counted once the session has kept it (see `settle`).
            Ok(()) if s.defers() => Ok(MailMark::Accepted { id }),
            Ok(()) => {
                self.log.note(Marker::Accepted, &id)?;
                self.counters.accepted.fetch_add(1, Ordering::Relaxed);
                Ok(MailMark::Accepted { id })
            }
            Err(refused) => {
                self.log.note(Marker::Refused, &id)?;
                Ok(self.refused(mail, refused))
            }
        }
    }

    /// The note for a refusal: deferred with the backoff, or failed (5xx, or given up).
    fn refused(&self, mail: &Mail, refused: Refusal) -> MailMark {
        let id = mail.id.clone();
        match refused {
            Refusal::Permanent(error) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(mail = %id, domain = %mail.domain, %error, "notify: the server refused the email for good; amtsbote notifications --failed lists it");
                MailMark::Failed { id, error }
            }
            Refusal::Transient(error) => {
                let now = Utc::now();
                let give_up = mail.created_at + chrono::Duration::hours(i64::try_from(self.mail.give_up_hours).unwrap_or(96));
                if now >= give_up {
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                    let error = format!("given up after {} hours without acceptance; the last answer: {error}", self.mail.give_up_hours);
                    tracing::warn!(mail = %id, domain = %mail.domain, "notify: an email is given up (mail.give_up_hours); amtsbote notifications --failed lists it");
                    return MailMark::Failed { id, error };
                }
                self.counters.deferred.fetch_add(1, Ordering::Relaxed);
                let delay = self.jobs.backoff.delay(mail.attempts + 1, &id);
                let next_at = now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::minutes(30));
                tracing::info!(mail = %id, domain = %mail.domain, %error, next = %next_at, "notify: try later; the email and its domain wait");
                MailMark::Deferred { id, error, next_at }
            }
        }
    }

    /// The email's bytes: its notifications as content, rendered, built with its stable
    /// Message-ID.
    async fn content_of(&self, mail: &Mail) -> Result<Vec<u8>, String> {
        let content = self.mail_content(mail).await?;
        let rendered = self.templates.render(&content).map_err(|e| format!("cannot render the email: {e}"))?;
        let message_id = format!("{}@{}", mail.id, self.mail.id_domain());
        let message = super::render::build_message(&rendered, &self.mail.from_address(), &mail.recipients, &message_id, mail.created_at)
            .map_err(|e| format!("cannot build the email: {e}"))?;
        Ok(message.formatted())
    }

    /// What an email says: the items of its notifications, read from the ledger.
    pub async fn mail_content(&self, mail: &Mail) -> Result<MailContent, String> {
        let ledger_error = |e: crate::ledger::LedgerError| format!("the ledger: {e}");
        let notifications = self.ledger.notifications_of_mail(&mail.id).await.map_err(ledger_error)?;
        if notifications.is_empty() {
            return Err("the email carries no notification".into());
        }
        let mut items = Vec::with_capacity(notifications.len());
        for n in &notifications {
            items.push(self.item(n).await?);
        }
        let tenant = self.tenants.get(&mail.tenant);
        Ok(MailContent {
            tenant_name: tenant.map_or_else(|| mail.tenant.clone(), |t| t.name.clone()),
            tenant_kennung: tenant.map_or_else(String::new, |t| t.kennung.clone()),
            contact: self.mail.contact.clone(),
            items,
        })
    }

    async fn item(&self, n: &Notification) -> Result<Item, String> {
        let ledger_error = |e: crate::ledger::LedgerError| format!("the ledger: {e}");
        let mut item = Item {
            event: n.event,
            at: n.at,
            request_id: n.request_id.map(|r| r.0),
            aktenzeichen: None,
            nachrichten_uuid: None,
            test: false,
            debtors: Vec::new(),
            total_cents: None,
            authority: None,
            xta_message_id: None,
            report: None,
            batch_date: None,
            letter_number: None,
            reasons: Vec::new(),
            received: None,
        };
        if let Some(message_id) = &n.received_message_id {
            let row = self.ledger.received(message_id).await.map_err(ledger_error)?.ok_or("the received message is not in the ledger")?;
            let payload = self.ledger.received_payload(message_id).await.map_err(ledger_error)?.unwrap_or_default();
            let message = crate::xamtshilfe::read::parse(&payload, &self.reader).ok();
            let envelope = message.as_ref().and_then(Message::envelope);
            item.test = message.as_ref().is_some_and(Message::is_test);
            item.nachrichten_uuid = message.as_ref().and_then(Message::uuid).map(|u| u.to_string());
            item.received = Some(ReceivedInfo {
                message_id: message_id.clone(),
                file_name: if row.reason.is_some() { format!("error/{}", row.file_name) } else { row.file_name.clone() },
                message_type: message.as_ref().map(|m| m.kind().root_name().to_owned()),
                from: envelope.map(|e| e.kopf.autor.name.clone()),
                valid: row.reason.is_none(),
                reasons: row.reason.iter().flat_map(|r| r.lines()).map(str::to_owned).collect(),
            });
            return Ok(item);
        }
        let Some(id) = n.request_id else { return Err("a notification about nothing".into()) };
        let request = self.ledger.get(id).await.map_err(ledger_error)?.ok_or("the request is not in the ledger")?;
        item.test = request.test;
        item.nachrichten_uuid = request.nachrichten_uuid.clone();
        let event = self.ledger.journal(id).await.map_err(ledger_error)?.into_iter().find(|e| Some(e.seq) == n.seq);
        let detail = event.as_ref().and_then(|e| e.detail.clone());
        if let Some(routed) = &request.routed
            && matches!(n.event, Event::Transmitted | Event::Delivered | Event::Printed | Event::Posted | Event::Failed)
        {
            item.authority = Some(Authority { name: routed.name.clone(), kennung: routed.kennung.clone() });
        }
        match n.event {
            Event::Transmitted | Event::Delivered => item.xta_message_id = request.xta_message_id.clone(),
            Event::Printed | Event::Posted => {
                item.batch_date = request.print_batch.as_deref().and_then(crate::print::batch::batch_date);
                item.letter_number = request.letter_number;
            }
            _ => {}
        }
        match n.event {
            Event::Delivered => item.report = detail,
            Event::Rejected | Event::Unroutable | Event::Failed => {
                item.reasons = detail.iter().flat_map(|d| d.lines()).map(str::to_owned).filter(|l| !l.trim().is_empty()).collect();
            }
            _ => {}
        }
        let payload = self.ledger.payload(id).await.map_err(ledger_error)?;
        if let Ok(Message::Ersuchen(m)) = crate::xamtshilfe::read::parse(&payload, &self.reader) {
            let e = &m.ersuchen;
            item.aktenzeichen = Some(e.aktenzeichen.clone());
            item.total_cents = Some(e.gesamtbetrag.wert.0);
            item.debtors = e.schuldner.iter().map(debtor).collect();
        }
        Ok(item)
    }
}

/// A debtor as the email names it: the address only without Auskunftssperre.
fn debtor(s: &crate::xamtshilfe::model::Schuldner) -> Debtor {
    let name = match (&s.firma, &s.vorname, &s.familienname) {
        (Some(firma), _, _) => firma.clone(),
        (None, Some(vorname), Some(familienname)) => format!("{vorname} {familienname}"),
        (None, None, Some(familienname)) => familienname.clone(),
        _ => String::new(),
    };
    let address = (!s.auskunftssperre).then(|| {
        let a = &s.anschrift;
        let street = a.street_line().map(|line| format!("{line}, ")).unwrap_or_default();
        format!("{street}{} {}", a.postleitzahl, a.ort)
    });
    Debtor { name, address }
}

/// The emails for one set of notifications: one per receiving domain, the first under
/// `base`, the others under `base.2`, `base.3` … (domains sorted: the same split every time).
fn split_by_domain(base: &str, tenant: &str, to: &[String], digest: bool, notifications: Vec<String>) -> Vec<NewMail> {
    let mut by_domain: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for address in to {
        let domain = address.rsplit_once('@').map_or_else(String::new, |(_, d)| d.trim_end_matches('>').to_ascii_lowercase());
        by_domain.entry(domain).or_default().push(address.clone());
    }
    by_domain
        .into_iter()
        .enumerate()
        .map(|(k, (domain, recipients))| NewMail {
            id: if k == 0 { mail_id(base) } else { format!("{}.{}", mail_id(base), k + 1) },
            tenant: tenant.to_owned(),
            recipients,
            domain,
            digest,
            notifications: notifications.clone(),
        })
        .collect()
}

/// A notification id as the left part of a Message-ID: letters, digits, `.`, `-`, `_`.
fn mail_id(base: &str) -> String {
    base.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_email_per_domain_with_stable_ids() {
        let to = vec!["b@Lemgo.de".to_string(), "a@koeln.de".to_string(), "c@lemgo.de".to_string()];
        let mails = split_by_domain("r1-5-rejected", "demo", &to, false, vec!["r1-5-rejected".into()]);
        assert_eq!(mails.len(), 2);
        assert_eq!((mails[0].id.as_str(), mails[0].domain.as_str(), mails[0].recipients.clone()), ("r1-5-rejected", "koeln.de", vec!["a@koeln.de".to_string()]));
        assert_eq!((mails[1].id.as_str(), mails[1].domain.as_str()), ("r1-5-rejected.2", "lemgo.de"));
        assert_eq!(mails[1].recipients, vec!["b@Lemgo.de".to_string(), "c@lemgo.de".to_string()]);
    }

    #[test]
    fn ids_are_safe_in_a_message_id() {
        assert_eq!(mail_id("m-demo-rueck meldung<1>.xml"), "m-demo-rueck_meldung_1_.xml");
    }

}
