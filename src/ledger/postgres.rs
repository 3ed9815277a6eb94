//! The ledger in PostgreSQL: cluster mode, shared by any number of `amtsbote` processes.
//!
//! Compare-and-set relies on row locks: a transition's `UPDATE … WHERE state = $from` waits
//! for a concurrent one on the same request and then re-checks the condition, so exactly one
//! of them wins. Recording relies on the unique constraints: `INSERT … ON CONFLICT DO NOTHING`
//! waits for a concurrent insert of the same key to commit before it decides.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::{
    Actor, Event, Ledger, LedgerError, ListFilter, NewRequest, Recorded, Request, RequestId,
    RequestRow, RequestState, Result, check_transition, counts_in_order, events_from_rows,
    migrator, now, request_columns, requests_from_rows,
};

/// The PostgreSQL migrations, embedded: (version, description, SQL).
pub(crate) const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "ledger",
    include_str!("../../migrations/postgres/0001_ledger.sql"),
)];

#[derive(Debug, Clone)]
pub struct PostgresLedgerOptions {
    pub max_connections: u32,
    /// How long a query waits for a free connection.
    pub acquire_timeout: Duration,
}

impl Default for PostgresLedgerOptions {
    fn default() -> Self {
        PostgresLedgerOptions {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(30),
        }
    }
}

pub struct PostgresLedger {
    pool: PgPool,
}

impl PostgresLedger {
    /// Connects to `postgres://…` with the default options.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, &PostgresLedgerOptions::default()).await
    }

    pub async fn connect_with(url: &str, options: &PostgresLedgerOptions) -> Result<Self> {
        let connect = PgConnectOptions::from_str(url)?.application_name("amtsbote");
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await?;
        Ok(PostgresLedger { pool })
    }

    /// Waits for the connections to close. Dropping the ledger closes them too, in the
    /// background.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[async_trait]
impl Ledger for PostgresLedger {
    async fn migrate(&self) -> Result<()> {
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
        let at = now();
        let mut tx = self.pool.begin().await?;
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
        .bind(initial.as_str())
        .bind(detail)
        .bind(at)
        .fetch_optional(&mut *tx)
        .await?;

        let Some(id) = inserted else {
            // DO NOTHING waited for any concurrent insert of the same keys to commit; this
            // statement's snapshot sees what conflicted.
            let by_source: Option<(i64, String)> =
                sqlx::query_as("SELECT id, sha256 FROM requests WHERE source = $1")
                    .bind(&new.source)
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some((existing, sha256)) = by_source {
                return if sha256 == new.sha256 {
                    Ok(Recorded::AlreadyRecorded(RequestId(existing)))
                } else {
                    Err(LedgerError::SourceReused {
                        key: new.source,
                        existing: RequestId(existing),
                    })
                };
            }
            let by_uuid: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM requests WHERE tenant = $1 AND nachrichten_uuid = $2",
            )
            .bind(&new.tenant)
            .bind(&new.nachrichten_uuid)
            .fetch_optional(&mut *tx)
            .await?;
            return match by_uuid {
                Some(existing) => Ok(Recorded::Duplicate {
                    existing: RequestId(existing),
                }),
                None => Err(LedgerError::Corrupt(
                    "insert conflicted, but no conflicting request was found".into(),
                )),
            };
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
        .bind(initial.as_str())
        .bind(actor.to_string())
        .bind(detail)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::debug!(request = id, state = %initial, "request recorded");
        Ok(Recorded::New(RequestId(id)))
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
        let at = now();
        let mut tx = self.pool.begin().await?;
        let seq: Option<i32> = sqlx::query_scalar(
            "UPDATE requests SET state = $1, state_detail = $2, updated_at = $3, \
             last_seq = last_seq + 1 \
             WHERE id = $4 AND state = $5 RETURNING last_seq",
        )
        .bind(to.as_str())
        .bind(detail)
        .bind(at)
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
        .bind(at)
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
