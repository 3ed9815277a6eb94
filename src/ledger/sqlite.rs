//! The ledger in one SQLite file: the embedded default.
//!
//! The connection options are our own, never a library's `setup()` (apalis-sqlite's switches
//! `synchronous=OFF`): WAL, `synchronous=NORMAL` (or FULL), a busy timeout, foreign keys on.
//! Every writing transaction starts with `BEGIN IMMEDIATE`, so it takes the write lock up
//! front and waits for it under the busy timeout instead of failing on a stale snapshot.
//! New requests are group-committed (see [`SqliteLedger`]'s `record`): a burst of records is
//! written many to a transaction, which doubled the intake rate of a burst of files.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::{
    Actor, Event, Ledger, LedgerError, ListFilter, NewRequest, Recorded, Request, RequestId,
    RequestRow, RequestState, Result, check_transition, counts_in_order, events_from_rows,
    migrator, now, request_columns, requests_from_rows,
};

/// The SQLite migrations, embedded: (version, description, SQL).
pub(crate) const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "ledger",
    include_str!("../../migrations/sqlite/0001_ledger.sql"),
)];

/// How hard SQLite makes sure a commit survives a power cut. OFF is deliberately not offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// With WAL: a commit survives a crash of the process; a power cut may lose the newest
    /// commits but never corrupts the file.
    #[default]
    Normal,
    /// A commit also survives a power cut, at the cost of an fsync per commit.
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
            synchronous: Synchronous::Normal,
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
    write_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Records waiting for the next group commit (see [`SqliteLedger::record`]).
    queued: std::sync::Mutex<Vec<QueuedRecord>>,
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
        Ok(SqliteLedger { pool, write_lock: Default::default(), queued: Default::default() })
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
        Ok(SqliteLedger { pool, write_lock: Default::default(), queued: Default::default() })
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
}

/// Records written in one transaction at most (see [`SqliteLedger::record`]).
const MAX_BATCH: usize = 64;

/// A record waiting for the next group commit, with where its answer goes.
struct QueuedRecord {
    new: NewRequest,
    initial: RequestState,
    actor: String,
    detail: Option<String>,
    answer: tokio::sync::oneshot::Sender<Result<Recorded>>,
}

/// Write `batch` in one transaction and answer each record. If one record's statement
/// fails (a constraint, a trigger), the others are tried again each in a transaction of
/// its own, so that its failure is not its neighbours'. If the transaction itself fails
/// (busy beyond the timeout, I/O, a full disk), every record gets that error at once:
/// trying them one by one would only wait the busy timeout once per record.
async fn write_batch(pool: &SqlitePool, batch: Vec<QueuedRecord>) {
    let at = ts(now());
    match write_records(pool, &batch, &at).await {
        Ok(results) => {
            for (record, result) in batch.into_iter().zip(results) {
                let _ = record.answer.send(result);
            }
        }
        Err(BatchFailure::Record(_)) if batch.len() > 1 => {
            for record in batch {
                let result = match write_records(pool, std::slice::from_ref(&record), &at).await {
                    Ok(mut results) => results.remove(0),
                    Err(BatchFailure::Record(e) | BatchFailure::Whole(e)) => Err(e.into()),
                };
                let _ = record.answer.send(result);
            }
        }
        Err(BatchFailure::Record(e) | BatchFailure::Whole(e)) => {
            let message = e.to_string();
            let mut first = Some(e);
            for record in batch {
                // sqlx::Error is not Clone: the first caller gets the error, the others
                // the same text.
                let error = first.take().unwrap_or_else(|| sqlx::Error::Protocol(message.clone()));
                let _ = record.answer.send(Err(error.into()));
            }
        }
    }
}

/// Why a batch's transaction failed.
enum BatchFailure {
    /// A statement of one record: the others may succeed without it.
    Record(sqlx::Error),
    /// The transaction: begin, commit, a busy database, I/O. No record can succeed now.
    Whole(sqlx::Error),
}

/// Whether `e`, raised by one record's statement, belongs to that record (its data broke
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

/// One transaction for `records`: each one's outcome, or why the transaction failed.
async fn write_records(
    pool: &SqlitePool,
    records: &[QueuedRecord],
    at: &str,
) -> std::result::Result<Vec<Result<Recorded>>, BatchFailure> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(BatchFailure::Whole)?;
    let mut results = Vec::with_capacity(records.len());
    for record in records {
        match insert_record(&mut tx, record, at).await {
            Ok(result) => results.push(result),
            Err(e) if is_about_the_record(&e) => return Err(BatchFailure::Record(e)),
            Err(e) => return Err(BatchFailure::Whole(e)),
        }
    }
    tx.commit().await.map_err(BatchFailure::Whole)?;
    Ok(results)
}

/// Insert one request with its payload and first event, inside `tx`. The outer error
/// aborts the transaction; the inner result is this record's outcome.
async fn insert_record(
    tx: &mut sqlx::SqliteConnection,
    record: &QueuedRecord,
    at: &str,
) -> std::result::Result<Result<Recorded>, sqlx::Error> {
    let new = &record.new;
    // The unique constraints decide; DO NOTHING covers both of them.
    let inserted: Option<i64> = sqlx::query_scalar(
        "INSERT INTO requests (tenant, source, sha256, nachrichten_uuid, kind, test, \
         file_name, state, state_detail, last_seq, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, $10, $10) \
         ON CONFLICT DO NOTHING RETURNING id",
    )
    .bind(&new.tenant)
    .bind(&new.source)
    .bind(&new.sha256)
    .bind(&new.nachrichten_uuid)
    .bind(&new.kind)
    .bind(new.test)
    .bind(&new.file_name)
    .bind(record.initial.as_str())
    .bind(&record.detail)
    .bind(at)
    .fetch_optional(&mut *tx)
    .await?;

    let Some(id) = inserted else {
        // Still inside the transaction, holding the write lock: what conflicted is there
        // (possibly a record earlier in the same batch).
        let by_source: Option<(i64, String)> =
            sqlx::query_as("SELECT id, sha256 FROM requests WHERE source = $1")
                .bind(&new.source)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some((existing, sha256)) = by_source {
            return Ok(if sha256 == new.sha256 {
                Ok(Recorded::AlreadyRecorded(RequestId(existing)))
            } else {
                Err(LedgerError::SourceReused {
                    key: new.source.clone(),
                    existing: RequestId(existing),
                })
            });
        }
        let by_uuid: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM requests WHERE tenant = $1 AND nachrichten_uuid = $2",
        )
        .bind(&new.tenant)
        .bind(&new.nachrichten_uuid)
        .fetch_optional(&mut *tx)
        .await?;
        return Ok(match by_uuid {
            Some(existing) => Ok(Recorded::Duplicate {
                existing: RequestId(existing),
            }),
            None => Err(LedgerError::Corrupt(
                "insert conflicted, but no conflicting request was found".into(),
            )),
        });
    };

    sqlx::query("INSERT INTO request_payloads (request_id, bytes) VALUES ($1, $2)")
        .bind(id)
        .bind(&new.payload)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO request_events (request_id, seq, at, from_state, to_state, actor, detail) \
         VALUES ($1, 1, $2, NULL, $3, $4, $5)",
    )
    .bind(id)
    .bind(at)
    .bind(record.initial.as_str())
    .bind(&record.actor)
    .bind(&record.detail)
    .execute(&mut *tx)
    .await?;
    tracing::debug!(request = id, state = %record.initial, "request recorded");
    Ok(Ok(Recorded::New(RequestId(id))))
}

/// Timestamps as fixed-width UTC text, so that they sort as text.
fn ts(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
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
        // Group commit: queue the record, then take the write lock. Whoever holds it
        // writes the queued records, up to MAX_BATCH, in one transaction. A record queued
        // while another batch was being written is either in that batch (its answer is
        // waiting when we get the lock) or still queued, and then we write it with
        // whatever queued beside it. A burst of N records costs about N / batch commits
        // and round trips to SQLite's thread, not N.
        let (answer, mut answered) = tokio::sync::oneshot::channel();
        self.queued.lock().unwrap_or_else(|e| e.into_inner()).push(QueuedRecord {
            new,
            initial,
            actor: actor.to_string(),
            detail: detail.map(str::to_owned),
            answer,
        });
        loop {
            let writer = self.write_lock.clone().lock_owned().await;
            match answered.try_recv() {
                Ok(result) => return result,
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                    return Err(LedgerError::Corrupt(
                        "the batch holding this record stopped before answering".into(),
                    ));
                }
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
            }
            let batch: Vec<QueuedRecord> = {
                let mut queued = self.queued.lock().unwrap_or_else(|e| e.into_inner());
                let take = queued.len().min(MAX_BATCH);
                queued.drain(..take).collect()
            };
            // Written by a task of its own, holding the lock: if this caller is dropped
            // (an HTTP client gone), the others in the batch still get their answers.
            let pool = self.pool.clone();
            let _ = tokio::spawn(async move {
                write_batch(&pool, batch).await;
                drop(writer);
            })
            .await;
        }
    }

    async fn transition(
        &self,
        id: RequestId,
        from: RequestState,
        to: RequestState,
        actor: &Actor,
        detail: Option<&str>,
    ) -> Result<()> {
        check_transition(from, to)?;
        let at = ts(now());
        let _writer = self.write_lock.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let seq: Option<i32> = sqlx::query_scalar(
            "UPDATE requests SET state = $1, state_detail = $2, updated_at = $3, \
             last_seq = last_seq + 1 \
             WHERE id = $4 AND state = $5 RETURNING last_seq",
        )
        .bind(to.as_str())
        .bind(detail)
        .bind(&at)
        .bind(id.0)
        .bind(from.as_str())
        .fetch_optional(&mut *tx)
        .await?;

        let Some(seq) = seq else {
            let current: Option<String> =
                sqlx::query_scalar("SELECT state FROM requests WHERE id = $1")
                    .bind(id.0)
                    .fetch_optional(&mut *tx)
                    .await?;
            return match current {
                None => Err(LedgerError::NotFound(id)),
                Some(current) => Err(LedgerError::Conflict {
                    id,
                    expected: from,
                    current: super::parse_state(&current)?,
                }),
            };
        };

        sqlx::query(
            "INSERT INTO request_events (request_id, seq, at, from_state, to_state, actor, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id.0)
        .bind(seq)
        .bind(&at)
        .bind(from.as_str())
        .bind(to.as_str())
        .bind(actor.to_string())
        .bind(detail)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::debug!(request = id.0, %from, %to, "request moved");
        Ok(())
    }

    async fn get(&self, id: RequestId) -> Result<Option<Request>> {
        let row: Option<RequestRow> = sqlx::query_as(concat!(
            "SELECT ",
            request_columns!(),
            " FROM requests WHERE id = $1"
        ))
        .bind(id.0)
        .fetch_optional(&self.pool)
        .await?;
        row.map(Request::try_from).transpose()
    }

    async fn journal(&self, id: RequestId) -> Result<Vec<Event>> {
        let rows = sqlx::query_as(
            "SELECT seq, at, from_state, to_state, actor, detail FROM request_events \
             WHERE request_id = $1 ORDER BY seq",
        )
        .bind(id.0)
        .fetch_all(&self.pool)
        .await?;
        events_from_rows(id, rows)
    }

    async fn payload(&self, id: RequestId) -> Result<Vec<u8>> {
        let bytes: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT bytes FROM request_payloads WHERE request_id = $1")
                .bind(id.0)
                .fetch_optional(&self.pool)
                .await?;
        bytes.ok_or(LedgerError::NotFound(id))
    }

    async fn find_by_source(&self, source: &str) -> Result<Option<Request>> {
        let row: Option<RequestRow> = sqlx::query_as(concat!(
            "SELECT ",
            request_columns!(),
            " FROM requests WHERE source = $1"
        ))
        .bind(source)
        .fetch_optional(&self.pool)
        .await?;
        row.map(Request::try_from).transpose()
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<Request>> {
        // One fixed statement per combination of filters, so each can use its index.
        let query = match (filter.state, filter.tenant.as_deref()) {
            (None, None) => sqlx::query_as(concat!(
                "SELECT ",
                request_columns!(),
                " FROM requests",
                " ORDER BY id DESC LIMIT $1 OFFSET $2"
            )),
            (Some(state), None) => sqlx::query_as(concat!(
                "SELECT ",
                request_columns!(),
                " FROM requests WHERE state = $1",
                " ORDER BY id DESC LIMIT $2 OFFSET $3"
            ))
            .bind(state.as_str()),
            (None, Some(tenant)) => sqlx::query_as(concat!(
                "SELECT ",
                request_columns!(),
                " FROM requests WHERE tenant = $1",
                " ORDER BY id DESC LIMIT $2 OFFSET $3"
            ))
            .bind(tenant),
            (Some(state), Some(tenant)) => sqlx::query_as(concat!(
                "SELECT ",
                request_columns!(),
                " FROM requests WHERE state = $1 AND tenant = $2",
                " ORDER BY id DESC LIMIT $3 OFFSET $4"
            ))
            .bind(state.as_str())
            .bind(tenant),
        };
        let rows: Vec<RequestRow> = query
            .bind(filter.capped_limit())
            .bind(filter.offset_i64())
            .fetch_all(&self.pool)
            .await?;
        requests_from_rows(rows)
    }

    async fn count_by_state(&self) -> Result<Vec<(RequestState, u64)>> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM requests GROUP BY state")
                .fetch_all(&self.pool)
                .await?;
        counts_in_order(rows)
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
        assert_eq!(synchronous, 1, "NORMAL");
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

        let at: String = sqlx::query_scalar("SELECT created_at FROM requests WHERE id = $1")
            .bind(id.0)
            .fetch_one(&ledger.pool)
            .await
            .unwrap();
        assert_eq!(at.len(), "2025-01-01T00:00:00.000000Z".len(), "{at}");
        assert!(at.ends_with('Z'));
    }
}
