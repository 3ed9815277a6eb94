//! The ledger in one SQLite file: the embedded default.
//!
//! The connection options are our own, never a library's `setup()` (apalis-sqlite's switches
//! `synchronous=OFF`): WAL, `synchronous=FULL` by default (a commit is on disk before a file
//! reaches `done/` or a client gets its 202, even across a power cut; `?synchronous=normal`
//! trades that for speed), a busy timeout, foreign keys on. Every writing transaction starts
//! with `BEGIN IMMEDIATE`, so it takes the write lock up front and waits for it under the
//! busy timeout instead of failing on a stale snapshot.
//!
//! Writes are group-committed (see [`SqliteLedger`]'s `submit`): new requests and
//! transitions arriving together are written many to a transaction, so a burst costs one
//! fsync per batch, not one per request.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::oneshot;

use super::{
    AccessToken, Actor, Event, Ledger, LedgerError, ListFilter, NewRequest, PushTriggers, Recorded, Request,
    FeedbackEntry, FeedbackRecorded, NewReceived, NewToken, PrintBatch, PrintBatchInfo, PrintFileInfo, PrintLetter, Received, ReceivedState, RequestId, RequestState, Result, RoutedTo, StoredReceived, Trigger,
    TriggerRow, check_received_transition, check_schedule, check_transition, migrator, now, received_columns,
    created_token, request_columns, routed_for_xta, stored_received, token_columns,
};
use super::{Mail, MailMark, MailStatus, NewMail, Notification};
use crate::queue::Queue;

/// The SQLite migrations, embedded: (version, description, SQL).
pub(crate) const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "ledger", include_str!("../../migrations/sqlite/0001_ledger.sql")),
    (2, "pipeline", include_str!("../../migrations/sqlite/0002_pipeline.sql")),
    (3, "transmission", include_str!("../../migrations/sqlite/0003_transmission.sql")),
    (4, "attempts", include_str!("../../migrations/sqlite/0004_attempts.sql")),
    (5, "received", include_str!("../../migrations/sqlite/0005_received.sql")),
    (6, "print", include_str!("../../migrations/sqlite/0006_print.sql")),
    (7, "print feedback", include_str!("../../migrations/sqlite/0007_print_feedback.sql")),
    (8, "access", include_str!("../../migrations/sqlite/0008_access.sql")),
    (9, "notifications", include_str!("../../migrations/sqlite/0009_notifications.sql")),
];

shared_statements!(sqlx::Sqlite);
super::mail::mail_statements!();

/// Timestamps as fixed-width UTC text, so that they sort (and compare) as text.
fn stamp(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// How hard SQLite makes sure a commit survives a power cut. OFF is deliberately not offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// With WAL: a commit survives a crash of the process; a power cut may lose the newest
    /// commits (already reported as done) but never corrupts the file.
    Normal,
    /// A commit also survives a power cut: an fsync per commit, which the group commit
    /// shares among every write of a batch. The default.
    #[default]
    Full,
}

impl FromStr for Synchronous {
    type Err = LedgerError;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "normal" => Ok(Synchronous::Normal),
            "full" => Ok(Synchronous::Full),
            _ => Err(LedgerError::UnsupportedUrl(format!(
                "synchronous={s:?} (expected normal or full)"
            ))),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SqliteLedgerOptions {
    pub synchronous: Synchronous,
    /// How long a writer waits for another one before giving up with "database is locked".
    pub busy_timeout: Duration,
    pub max_connections: u32,
}

impl Default for SqliteLedgerOptions {
    fn default() -> Self {
        SqliteLedgerOptions {
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(10),
            max_connections: 8,
        }
    }
}

pub struct SqliteLedger {
    pool: SqlitePool,
    /// Writers of this process queue here rather than in SQLite: a second `BEGIN IMMEDIATE`
    /// would get SQLITE_BUSY and sleep in SQLite's busy handler (1, 2, 5, 10… ms), which
    /// cut the intake of a burst to a fraction. Other processes still wait under the busy
    /// timeout.
    write_lock: Arc<tokio::sync::Mutex<()>>,
    /// Writes waiting for the next group commit (see [`SqliteLedger::submit`]).
    queued: std::sync::Mutex<Vec<Write>>,
    outbox_signal: Arc<tokio::sync::Notify>,
}

impl SqliteLedger {
    /// Opens (creating if missing) the ledger file at `path` with the default options.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, &SqliteLedgerOptions::default()).await
    }

    pub async fn open_with(path: impl AsRef<Path>, options: &SqliteLedgerOptions) -> Result<Self> {
        let connect = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match options.synchronous {
                Synchronous::Normal => SqliteSynchronous::Normal,
                Synchronous::Full => SqliteSynchronous::Full,
            })
            .busy_timeout(options.busy_timeout)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.busy_timeout + Duration::from_secs(20))
            .connect_with(connect)
            .await?;
        Ok(Self::with_pool(pool))
    }

    fn with_pool(pool: SqlitePool) -> Self {
        SqliteLedger { pool, write_lock: Default::default(), queued: Default::default(), outbox_signal: Default::default() }
    }

    /// A ledger that lives in memory until dropped: for tests of other parts.
    /// One connection, so that every query sees the same database.
    pub async fn in_memory() -> Result<Self> {
        let connect = SqliteConnectOptions::from_str("sqlite::memory:")?.foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(connect)
            .await?;
        Ok(Self::with_pool(pool))
    }

    /// `sqlite:PATH`, `sqlite://PATH`, `sqlite::memory:`; option `?synchronous=normal|full`.
    pub(crate) async fn open_url(url: &str) -> Result<Self> {
        let rest = url
            .strip_prefix("sqlite:")
            .ok_or_else(|| LedgerError::UnsupportedUrl("not a sqlite: URL".into()))?;
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut options = SqliteLedgerOptions::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("synchronous", value)) => options.synchronous = value.parse()?,
                _ => {
                    let key = pair.split_once('=').map_or(pair, |(k, _)| k);
                    return Err(LedgerError::UnsupportedUrl(format!(
                        "unknown sqlite option {key:?} (known: synchronous)"
                    )));
                }
            }
        }
        match path {
            "" => Err(LedgerError::UnsupportedUrl(
                "sqlite: URL without a path".into(),
            )),
            ":memory:" => Self::in_memory().await,
            path => Self::open_with(path, &options).await,
        }
    }

    /// Waits for the connections to close. Dropping the ledger closes them too, in the
    /// background.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Group commit: queue the write, then take the write lock. Whoever holds it writes the
    /// queued writes, up to MAX_BATCH, in one transaction. A write queued while another
    /// batch was being written is either in that batch (its answer is waiting when we get
    /// the lock) or still queued, and then we write it with whatever queued beside it. A
    /// burst of N writes costs about N / batch commits (and fsyncs), not N.
    async fn submit<T>(&self, write: Write, mut answered: oneshot::Receiver<Result<T>>) -> Result<T> {
        self.queued.lock().unwrap_or_else(|e| e.into_inner()).push(write);
        loop {
            let writer = self.write_lock.clone().lock_owned().await;
            match answered.try_recv() {
                Ok(result) => return result,
                Err(oneshot::error::TryRecvError::Closed) => {
                    return Err(LedgerError::Corrupt("the batch holding this write stopped before answering".into()));
                }
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            let batch: Vec<Write> = {
                let mut queued = self.queued.lock().unwrap_or_else(|e| e.into_inner());
                let take = queued.len().min(MAX_BATCH);
                queued.drain(..take).collect()
            };
            // Written by a task of its own, holding the lock: if this caller is dropped
            // (an HTTP client gone), the others in the batch still get their answers.
            let pool = self.pool.clone();
            let signal = self.outbox_signal.clone();
            let _ = tokio::spawn(async move {
                if write_batch(&pool, batch).await {
                    signal.notify_one();
                }
                drop(writer);
            })
            .await;
        }
    }

    /// A transition, group-committed: the compare-and-set, and the routing columns or the
    /// MessageID when given.
    #[allow(clippy::too_many_arguments)]
    async fn transition_with(
        &self,
        id: RequestId,
        from: RequestState,
        to: RequestState,
        actor: &Actor,
        detail: Option<&str>,
        routed: Option<RoutedTo>,
        message_id: Option<String>,
    ) -> Result<()> {
        check_transition(from, to)?;
        let (answer, answered) = oneshot::channel();
        let write = Write::Transition { id, from, to, actor: actor.to_string(), detail: detail.map(str::to_owned), routed, message_id, answer };
        self.submit(write, answered).await
    }

    /// A transaction of its own under the process's write lock (relay, sweeper).
    async fn begin_write(&self) -> Result<(tokio::sync::OwnedMutexGuard<()>, sqlx::Transaction<'static, sqlx::Sqlite>)> {
        let guard = self.write_lock.clone().lock_owned().await;
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        Ok((guard, tx))
    }
}

/// Writes in one transaction at most (see [`SqliteLedger::submit`]).
const MAX_BATCH: usize = 64;

/// A write waiting for the next group commit, with where its answer goes.
enum Write {
    Record {
        new: NewRequest,
        initial: RequestState,
        actor: String,
        detail: Option<String>,
        answer: oneshot::Sender<Result<Recorded>>,
    },
    Transition {
        id: RequestId,
        from: RequestState,
        to: RequestState,
        actor: String,
        detail: Option<String>,
        routed: Option<RoutedTo>,
        message_id: Option<String>,
        answer: oneshot::Sender<Result<()>>,
    },
    /// A mail sender's notes (`Ledger::mark_mails`).
    Mails {
        owner: String,
        marks: Vec<MailMark>,
        answer: oneshot::Sender<Result<()>>,
    },
}

/// What one write did inside the transaction, before it is answered.
enum Done {
    Record(Result<Recorded>),
    Transition(Result<()>),
    Mails,
}

impl Write {
    /// Whether committing it may have written a trigger.
    fn triggers(&self) -> bool {
        match self {
            Write::Record { initial, .. } => initial.stage().is_some(),
            Write::Transition { to, .. } => to.stage().is_some(),
            Write::Mails { .. } => false,
        }
    }

    fn answer(self, done: Done) {
        match (self, done) {
            (Write::Record { answer, .. }, Done::Record(r)) => {
                let _ = answer.send(r);
            }
            (Write::Transition { answer, .. }, Done::Transition(r)) => {
                let _ = answer.send(r);
            }
            (Write::Mails { answer, .. }, Done::Mails) => {
                let _ = answer.send(Ok(()));
            }
            (write, _) => write.fail(LedgerError::Corrupt("a write was answered with another's outcome".into())),
        }
    }

    fn fail(self, e: LedgerError) {
        match self {
            Write::Record { answer, .. } => {
                let _ = answer.send(Err(e));
            }
            Write::Transition { answer, .. } => {
                let _ = answer.send(Err(e));
            }
            Write::Mails { answer, .. } => {
                let _ = answer.send(Err(e));
            }
        }
    }
}

/// Write `batch` in one transaction and answer each write; true when a trigger may have
/// been committed. If one write's statement fails (a constraint, a trigger), the others are
/// tried again each in a transaction of its own, so that its failure is not its neighbours'.
/// If the transaction itself fails (busy beyond the timeout, I/O, a full disk), every write
/// gets that error at once: trying them one by one would only wait the busy timeout once
/// per write.
async fn write_batch(pool: &SqlitePool, batch: Vec<Write>) -> bool {
    let at = now();
    let triggers = batch.iter().any(Write::triggers);
    match write_all(pool, &batch, at).await {
        Ok(results) => {
            for (write, done) in batch.into_iter().zip(results) {
                write.answer(done);
            }
            triggers
        }
        Err(BatchFailure::Record(_)) if batch.len() > 1 => {
            for write in batch {
                match write_all(pool, std::slice::from_ref(&write), at).await {
                    Ok(mut results) => write.answer(results.remove(0)),
                    Err(BatchFailure::Record(e) | BatchFailure::Whole(e)) => write.fail(e.into()),
                }
            }
            triggers
        }
        Err(BatchFailure::Record(e) | BatchFailure::Whole(e)) => {
            let message = e.to_string();
            let mut first = Some(e);
            for write in batch {
                // sqlx::Error is not Clone: the first caller gets the error, the others
                // the same text.
                let error = first.take().unwrap_or_else(|| sqlx::Error::Protocol(message.clone()));
                write.fail(error.into());
            }
            false
        }
    }
}

/// Why a batch's transaction failed.
enum BatchFailure {
    /// A statement of one write: the others may succeed without it.
    Record(sqlx::Error),
    /// The transaction: begin, commit, a busy database, I/O. No write can succeed now.
    Whole(sqlx::Error),
}

/// Whether `e`, raised by one write's statement, belongs to that write (its data broke
/// a constraint or a trigger, or does not fit) rather than to the database as a whole.
fn is_about_the_record(e: &sqlx::Error) -> bool {
    const SQLITE_TOOBIG: i64 = 18;
    const SQLITE_CONSTRAINT: i64 = 19;
    const SQLITE_MISMATCH: i64 = 20;
    match e {
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|code| code.parse::<i64>().ok())
            .is_some_and(|code| matches!(code & 0xff, SQLITE_TOOBIG | SQLITE_CONSTRAINT | SQLITE_MISMATCH)),
        _ => false,
    }
}

/// One transaction for `writes`: each one's outcome, or why the transaction failed.
async fn write_all(pool: &SqlitePool, writes: &[Write], at: DateTime<Utc>) -> std::result::Result<Vec<Done>, BatchFailure> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(BatchFailure::Whole)?;
    let mut results = Vec::with_capacity(writes.len());
    for write in writes {
        let done = match write {
            Write::Record { new, initial, actor, detail, .. } => {
                insert_record(&mut tx, new, *initial, actor, detail.as_deref(), at).await.map(Done::Record)
            }
            Write::Transition { id, from, to, actor, detail, routed, message_id, .. } => {
                apply_transition(&mut tx, *id, *from, *to, actor, detail.as_deref(), routed.as_ref(), message_id.as_deref(), at).await.map(Done::Transition)
            }
            Write::Mails { owner, marks, .. } => apply_mail_marks(&mut tx, owner, marks, at).await.map(|()| Done::Mails),
        };
        match done {
            Ok(done) => results.push(done),
            Err(e) if is_about_the_record(&e) => return Err(BatchFailure::Record(e)),
            Err(e) => return Err(BatchFailure::Whole(e)),
        }
    }
    tx.commit().await.map_err(BatchFailure::Whole)?;
    Ok(results)
}

#[async_trait]
impl Ledger for SqliteLedger {
    async fn migrate(&self) -> Result<()> {
        // sqlx takes no lock for SQLite migrations, but runs each one and its bookkeeping in
        // one transaction: of two processes migrating a new file at the same moment, the
        // second fails cleanly and succeeds when run again.
        migrator(MIGRATIONS).run(&self.pool).await?;
        Ok(())
    }

    async fn record(
        &self,
        new: NewRequest,
        initial: RequestState,
        actor: &Actor,
        detail: Option<&str>,
    ) -> Result<Recorded> {
        if !initial.can_start_as() {
            return Err(LedgerError::InvalidInitialState(initial));
        }
        let (answer, answered) = oneshot::channel();
        let write = Write::Record { new, initial, actor: actor.to_string(), detail: detail.map(str::to_owned), answer };
        self.submit(write, answered).await
    }

    async fn transition(
        &self,
        id: RequestId,
        from: RequestState,
        to: RequestState,
        actor: &Actor,
        detail: Option<&str>,
    ) -> Result<()> {
        self.transition_with(id, from, to, actor, detail, None, None).await
    }

    async fn route(&self, id: RequestId, from: RequestState, routed: &RoutedTo, actor: &Actor, detail: Option<&str>) -> Result<()> {
        self.transition_with(id, from, RequestState::Routed, actor, detail, Some(routed.clone()), None).await
    }

    async fn begin_transmission(&self, id: RequestId, from: RequestState, message_id: &str, actor: &Actor, detail: Option<&str>) -> Result<String> {
        self.transition_with(id, from, RequestState::Transmitting, actor, detail, None, Some(message_id.to_owned())).await?;
        stored_message_id(&self.pool, id).await
    }

    async fn get(&self, id: RequestId) -> Result<Option<Request>> {
        select_request(&self.pool, id).await
    }

    async fn journal(&self, id: RequestId) -> Result<Vec<Event>> {
        select_journal(&self.pool, id).await
    }

    async fn payload(&self, id: RequestId) -> Result<Vec<u8>> {
        select_payload(&self.pool, id).await
    }

    async fn find_by_source(&self, source: &str) -> Result<Option<Request>> {
        select_by_source(&self.pool, source).await
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<Request>> {
        select_list(&self.pool, filter).await
    }

    async fn awaiting_print_after(&self, after: RequestId, limit: u32) -> Result<Vec<Request>> {
        select_awaiting_print_after(&self.pool, after, limit).await
    }

    async fn print_inputs(&self, batch_id: &str, letters: &[(RequestId, u32)]) -> Result<Vec<(Request, Vec<u8>)>> {
        select_print_inputs(&self.pool, batch_id, letters).await
    }

    async fn count_by_state(&self) -> Result<Vec<(RequestState, u64)>> {
        select_counts(&self.pool).await
    }

    async fn ping(&self) -> Result<()> {
        select_ping(&self.pool).await
    }

    async fn relay_outbox(&self, limit: u32, push: PushTriggers<'_>) -> Result<usize> {
        // Read without a lock: two relays on one file (a standby process) may offer the same
        // triggers; the queue keeps one job per key.
        let rows: Vec<TriggerRow> =
            sqlx::query_as("SELECT id, request_id, queue, seq, created_at, not_before FROM outbox ORDER BY id LIMIT $1")
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let triggers = rows.into_iter().map(Trigger::try_from).collect::<Result<Vec<_>>>()?;
        push(&triggers).await.map_err(LedgerError::Relay)?;
        let ids = serde_json::to_string(&triggers.iter().map(|t| t.id).collect::<Vec<_>>()).unwrap_or_default();
        let (_guard, mut tx) = self.begin_write().await?;
        sqlx::query("DELETE FROM outbox WHERE id IN (SELECT value FROM json_each($1))").bind(ids).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(triggers.len())
    }

    async fn outbox_len(&self) -> Result<u64> {
        select_outbox_len(&self.pool).await
    }

    async fn waiting_without_trigger(&self, state: RequestState, before: DateTime<Utc>, after_id: RequestId, limit: u32) -> Result<Vec<(RequestId, u32)>> {
        select_waiting_without_trigger(&self.pool, state, before, after_id, limit).await
    }

    async fn schedule_attempt(&self, id: RequestId, state: RequestState, queue: Queue, attempts: u32, next_at: DateTime<Utc>, actor: &Actor, detail: Option<&str>) -> Result<()> {
        check_schedule(state)?;
        let (_guard, mut tx) = self.begin_write().await?;
        apply_schedule(&mut tx, id, state, queue, attempts, next_at, &actor.to_string(), detail, now()).await??;
        tx.commit().await?;
        self.outbox_signal.notify_one();
        Ok(())
    }

    async fn open_print_batch(&self, date: chrono::NaiveDate, batch_id: &str, candidates: &[RequestId]) -> Result<Option<PrintBatch>> {
        let (_guard, mut tx) = self.begin_write().await?;
        let Some(created) = apply_open_print_batch(&mut tx, date, batch_id, candidates, now()).await? else {
            tx.rollback().await?;
            return Ok(None);
        };
        let batch = select_print_batch(&mut tx, date, created).await?;
        tx.commit().await?;
        Ok(Some(batch))
    }

    async fn claim_print_batch(&self, batch_id: &str, owner: &str, until: DateTime<Utc>, take_from: Option<&str>) -> Result<Option<String>> {
        let (_guard, mut tx) = self.begin_write().await?;
        let claimed = update_print_claim(&mut tx, batch_id, owner, until, take_from, now()).await?;
        tx.commit().await?;
        Ok(claimed)
    }

    async fn print_file_done(&self, batch_id: &str, file_no: u32, file_name: &str, sha256: &str, letters: &[(RequestId, u32)], notes: &[(RequestId, String)], actor: &Actor) -> Result<()> {
        let (_guard, mut tx) = self.begin_write().await?;
        apply_print_file_done(&mut tx, batch_id, file_no, file_name, sha256, letters, notes, &actor.to_string(), now()).await??;
        tx.commit().await?;
        Ok(())
    }

    async fn print_batches(&self) -> Result<Vec<PrintBatchInfo>> {
        select_print_batches(&self.pool).await
    }

    async fn print_files(&self, batch_id: &str) -> Result<Vec<PrintFileInfo>> {
        select_print_files(&self.pool, batch_id).await
    }

    async fn print_letters(&self, batch_id: &str) -> Result<Vec<PrintLetter>> {
        select_print_letters(&self.pool, batch_id).await
    }

    async fn record_print_feedback(&self, entries: &[FeedbackEntry], actor: &Actor) -> Result<FeedbackRecorded> {
        let (_guard, mut tx) = self.begin_write().await?;
        let done = apply_print_feedback(&mut tx, entries, &actor.to_string(), now()).await??;
        tx.commit().await?;
        Ok(done)
    }

    async fn finish_print_batch(&self, batch_id: &str) -> Result<()> {
        let (_guard, mut tx) = self.begin_write().await?;
        update_print_finished(&mut tx, batch_id, now()).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn retrigger(&self, id: RequestId, seq: u32, queue: Queue) -> Result<bool> {
        let Some(state) = RequestState::input_of(queue) else {
            return Ok(false);
        };
        let (_guard, mut tx) = self.begin_write().await?;
        let written = write_retrigger(&mut tx, id, seq, state, queue, now()).await?;
        tx.commit().await?;
        if written {
            self.outbox_signal.notify_one();
        }
        Ok(written)
    }

    async fn store_received(&self, new: NewReceived) -> Result<StoredReceived> {
        let (_guard, mut tx) = self.begin_write().await?;
        let inserted = insert_received(&mut tx, &new, now()).await?;
        tx.commit().await?;
        stored_received(select_received(&self.pool, &new.message_id).await?, inserted, &new.message_id)
    }

    async fn received(&self, message_id: &str) -> Result<Option<Received>> {
        select_received(&self.pool, message_id).await
    }

    async fn received_payload(&self, message_id: &str) -> Result<Option<Vec<u8>>> {
        select_received_payload(&self.pool, message_id).await
    }

    async fn claim_received(&self, message_id: &str, owner: &str, until: DateTime<Utc>) -> Result<bool> {
        let (_guard, mut tx) = self.begin_write().await?;
        let claimed = update_received_claim(&mut tx, message_id, owner, until, now()).await?;
        tx.commit().await?;
        Ok(claimed)
    }

    async fn mark_received(&self, message_id: &str, from: ReceivedState, to: ReceivedState) -> Result<bool> {
        check_received_transition(from, to)?;
        let (_guard, mut tx) = self.begin_write().await?;
        let moved = update_received_state(&mut tx, message_id, from, to, now()).await?;
        tx.commit().await?;
        Ok(moved)
    }

    async fn create_token(&self, new: &NewToken) -> Result<AccessToken> {
        let (_guard, mut tx) = self.begin_write().await?;
        let inserted = insert_token(&mut tx, new, now()).await?;
        tx.commit().await?;
        created_token(inserted, select_token_by_name(&self.pool, &new.name).await?, &new.name)
    }

    async fn revoke_token(&self, name: &str) -> Result<Option<AccessToken>> {
        let (_guard, mut tx) = self.begin_write().await?;
        update_token_revoked(&mut tx, name, now()).await?;
        tx.commit().await?;
        select_token_by_name(&self.pool, name).await
    }

    async fn tokens(&self) -> Result<Vec<AccessToken>> {
        select_tokens(&self.pool).await
    }

    async fn token_by_hash(&self, sha256: &str) -> Result<Option<AccessToken>> {
        select_token_by_hash(&self.pool, sha256).await
    }

    async fn touch_token(&self, name: &str, at: DateTime<Utc>) -> Result<()> {
        let (_guard, mut tx) = self.begin_write().await?;
        update_token_used(&mut tx, name, at).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn open_notifications(&self, limit: u32) -> Result<Vec<Notification>> {
        select_open_notifications(&self.pool, limit).await
    }

    async fn open_notification_count(&self) -> Result<u64> {
        select_open_notification_count(&self.pool).await
    }

    async fn compose_mails(&self, mails: &[NewMail], skipped: &[(String, String)]) -> Result<()> {
        let (_guard, mut tx) = self.begin_write().await?;
        insert_mails(&mut tx, mails, skipped, now()).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn claim_mails(&self, owner: &str, until: DateTime<Utc>, limit: u32) -> Result<Vec<Mail>> {
        let at = now();
        let (_guard, mut tx) = self.begin_write().await?;
        let rows: Vec<super::mail::MailRow> = sqlx::query_as(concat!(
            "UPDATE mails SET status = 'claimed', claimed_by = $1, claimed_until = $2, updated_at = $3 \
             WHERE id IN (SELECT id FROM mails WHERE status IN ('pending', 'deferred') AND next_attempt_at <= $3 \
                          AND domain NOT IN (SELECT domain FROM mail_domains WHERE next_attempt_at > $3) \
                          ORDER BY next_attempt_at, id LIMIT $4) \
             RETURNING ",
            super::mail::mail_columns!()
        ))
        .bind(owner)
        .bind(stamp(until))
        .bind(stamp(at))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut mails = super::mail::mails_from_rows(rows)?;
        mails.sort_by(|a, b| (a.next_attempt_at, &a.id).cmp(&(b.next_attempt_at, &b.id)));
        Ok(mails)
    }

    async fn mark_mails(&self, owner: &str, marks: Vec<MailMark>) -> Result<()> {
        if marks.is_empty() {
            return Ok(());
        }
        let (answer, answered) = oneshot::channel();
        self.submit(Write::Mails { owner: owner.to_owned(), marks, answer }, answered).await
    }

    async fn mails_in_hand(&self) -> Result<Vec<Mail>> {
        select_mails_in_hand(&self.pool).await
    }

    async fn let_go_of_mail(&self, id: &str, owner: &str) -> Result<bool> {
        let (_guard, mut tx) = self.begin_write().await?;
        let done = update_mail_let_go(&mut tx, id, owner, now()).await?;
        tx.commit().await?;
        Ok(done)
    }

    async fn mail(&self, id: &str) -> Result<Option<Mail>> {
        select_mail(&self.pool, id).await
    }

    async fn mails(&self, operator_only: bool, limit: u32) -> Result<Vec<Mail>> {
        select_mails(&self.pool, operator_only, limit).await
    }

    async fn notifications_of_mail(&self, mail_id: &str) -> Result<Vec<Notification>> {
        select_notifications_of_mail(&self.pool, mail_id).await
    }

    async fn notifications_of_request(&self, id: RequestId) -> Result<Vec<Notification>> {
        select_notifications_of_request(&self.pool, id).await
    }

    async fn mails_of_notification(&self, id: &str) -> Result<Vec<Mail>> {
        select_mails_of_notification(&self.pool, id).await
    }

    async fn retry_mail(&self, id: &str) -> Result<bool> {
        let (_guard, mut tx) = self.begin_write().await?;
        let done = update_mail_by_operator(&mut tx, id, false, now()).await?;
        tx.commit().await?;
        Ok(done)
    }

    async fn discard_mail(&self, id: &str) -> Result<bool> {
        let (_guard, mut tx) = self.begin_write().await?;
        let done = update_mail_by_operator(&mut tx, id, true, now()).await?;
        tx.commit().await?;
        Ok(done)
    }

    async fn mail_counts(&self) -> Result<Vec<(MailStatus, u64)>> {
        select_mail_counts(&self.pool).await
    }

    fn outbox_signal(&self) -> Arc<tokio::sync::Notify> {
        self.outbox_signal.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_request(source: &str) -> NewRequest {
        NewRequest {
            tenant: "t1".into(),
            source: source.into(),
            sha256: "ab".repeat(32),
            nachrichten_uuid: None,
            kind: "ersuchen".into(),
            test: false,
            payload: b"<xml/>".to_vec(),
            file_name: None,
        }
    }

    #[tokio::test]
    async fn connection_settings_are_ours() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = SqliteLedger::open(dir.path().join("ledger.db"))
            .await
            .unwrap();
        let mut conn = ledger.pool.acquire().await.unwrap();
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        let foreign_keys: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(journal, "wal");
        assert_eq!(synchronous, 2, "FULL by default");
        assert_eq!(foreign_keys, 1);
        assert!(busy >= 5000, "busy_timeout {busy}");
    }

    #[tokio::test]
    async fn url_options() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!(
            "sqlite://{}?synchronous=full",
            dir.path().join("l.db").display()
        );
        let ledger = SqliteLedger::open_url(&url).await.unwrap();
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&ledger.pool)
            .await
            .unwrap();
        assert_eq!(synchronous, 2, "FULL");

        let url = format!(
            "sqlite:{}?synchronous=off",
            dir.path().join("l.db").display()
        );
        assert!(matches!(
            SqliteLedger::open_url(&url).await,
            Err(LedgerError::UnsupportedUrl(_))
        ));
        let url = format!("sqlite:{}?cache=shared", dir.path().join("l.db").display());
        assert!(matches!(
            SqliteLedger::open_url(&url).await,
            Err(LedgerError::UnsupportedUrl(_))
        ));
        assert!(matches!(
            SqliteLedger::open_url("sqlite:").await,
            Err(LedgerError::UnsupportedUrl(_))
        ));
    }

    #[tokio::test]
    async fn in_memory_works() {
        let ledger = SqliteLedger::open_url("sqlite::memory:").await.unwrap();
        ledger.migrate().await.unwrap();
        let recorded = ledger
            .record(
                new_request("http:1"),
                RequestState::Received,
                &Actor::system("intake"),
                None,
            )
            .await
            .unwrap();
        let Recorded::New(id) = recorded else {
            panic!("{recorded:?}")
        };
        assert_eq!(
            ledger.get(id).await.unwrap().unwrap().state,
            RequestState::Received
        );
    }

    #[tokio::test]
    async fn journal_is_append_only_and_timestamps_sort() {
        let ledger = SqliteLedger::in_memory().await.unwrap();
        ledger.migrate().await.unwrap();
        let Recorded::New(id) = ledger
            .record(
                new_request("http:1"),
                RequestState::Received,
                &Actor::system("intake"),
                None,
            )
            .await
            .unwrap()
        else {
            panic!()
        };
        let err = sqlx::query("UPDATE request_events SET detail = 'x' WHERE request_id = $1")
            .bind(id.0)
            .execute(&ledger.pool)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("append-only"), "{err}");
        let err = sqlx::query("DELETE FROM request_events WHERE request_id = $1")
            .bind(id.0)
            .execute(&ledger.pool)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("append-only"), "{err}");

        let at: String = sqlx::query_scalar("SELECT created_at FROM requests WHERE id = $1")
            .bind(id.0)
            .fetch_one(&ledger.pool)
            .await
            .unwrap();
        assert_eq!(at.len(), "2025-01-01T00:00:00.000000Z".len(), "{at}");
        assert!(at.ends_with('Z'));
    }
}
