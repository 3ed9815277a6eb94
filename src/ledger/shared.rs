//! The SQL both ledgers share, written once.
//!
//! SQLite and PostgreSQL differ in few places here: how a writing transaction begins, how
//! timestamps are stored (fixed-width UTC text in SQLite, `timestamptz` in PostgreSQL) and
//! how the relay locks the outbox. Everything else is the same SQL (`$1`-style parameters
//! work in both). Generic sqlx code over both databases needs long trait bounds on every
//! function, so [`shared_statements!`] instead writes the same free functions into each
//! dialect's module, where `Db` is that module's database and `stamp` turns a time into
//! what its timestamp columns hold. The `Ledger` impls call these functions.

/// Writes the shared statements into the calling module for database `$db`. The module
/// must have a `fn stamp(DateTime<Utc>) -> impl Encode` in scope.
macro_rules! shared_statements {
    ($db:ty) => {
        type Conn = <$db as sqlx::Database>::Connection;
        type Pool = sqlx::Pool<$db>;

        /// Inserts one request with its payload, its first event and (if its first state is a
        /// stage's input) the trigger, inside `tx`. The outer error aborts the transaction;
        /// the inner result is this record's outcome.
        async fn insert_record(
            tx: &mut Conn,
            new: &$crate::ledger::NewRequest,
            initial: $crate::ledger::RequestState,
            actor: &str,
            detail: Option<&str>,
            at: chrono::DateTime<chrono::Utc>,
        ) -> std::result::Result<$crate::ledger::Result<$crate::ledger::Recorded>, sqlx::Error> {
            use $crate::ledger::{LedgerError, Recorded, RequestId};
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
            .bind(stamp(at))
            .fetch_optional(&mut *tx)
            .await?;

            let Some(id) = inserted else {
                // Inside the transaction: what conflicted is visible (in PostgreSQL, DO
                // NOTHING waited for a concurrent insert of the same key to commit; in
                // SQLite we hold the write lock, and it may be a record of the same batch).
                let by_source: Option<(i64, String)> =
                    sqlx::query_as("SELECT id, sha256 FROM requests WHERE source = $1")
                        .bind(&new.source)
                        .fetch_optional(&mut *tx)
                        .await?;
                if let Some((existing, sha256)) = by_source {
                    return Ok(if sha256 == new.sha256 {
                        Ok(Recorded::AlreadyRecorded(RequestId(existing)))
                    } else {
                        Err(LedgerError::SourceReused { key: new.source.clone(), existing: RequestId(existing) })
                    });
                }
                // Unique across tenants (0008_access): nobody sends another's message again.
                let by_uuid: Option<i64> =
                    sqlx::query_scalar("SELECT id FROM requests WHERE nachrichten_uuid = $1")
                        .bind(&new.nachrichten_uuid)
                        .fetch_optional(&mut *tx)
                        .await?;
                return Ok(match by_uuid {
                    Some(existing) => Ok(Recorded::Duplicate { existing: RequestId(existing) }),
                    None => Err(LedgerError::Corrupt("insert conflicted, but no conflicting request was found".into())),
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
            .bind(stamp(at))
            .bind(initial.as_str())
            .bind(actor)
            .bind(detail)
            .execute(&mut *tx)
            .await?;
            if let Some(queue) = initial.stage() {
                write_trigger(tx, id, queue, 1, at).await?;
            }
            tracing::debug!(request = id, state = %initial, "request recorded");
            Ok(Ok(Recorded::New(RequestId(id))))
        }

        /// The compare-and-set of a transition inside `tx`: the state, the event, the
        /// routing columns (when given) and the trigger of the next stage (when `to` is a
        /// stage's input). The inner error is the request's: not found, or in another state.
        #[allow(clippy::too_many_arguments)]
        async fn apply_transition(
            tx: &mut Conn,
            id: $crate::ledger::RequestId,
            from: $crate::ledger::RequestState,
            to: $crate::ledger::RequestState,
            actor: &str,
            detail: Option<&str>,
            routed: Option<&$crate::ledger::RoutedTo>,
            message_id: Option<&str>,
            at: chrono::DateTime<chrono::Utc>,
        ) -> std::result::Result<$crate::ledger::Result<()>, sqlx::Error> {
            // One statement: the compare-and-set, and the routing columns when given (the
            // others keep theirs).
            let seq: Option<i32> = sqlx::query_scalar(
                "UPDATE requests SET state = $1, state_detail = $2, updated_at = $3, \
                 last_seq = last_seq + 1, \
                 routed_kennung = CASE WHEN $6 THEN $7 ELSE routed_kennung END, \
                 routed_name = CASE WHEN $6 THEN $8 ELSE routed_name END, \
                 routed_channel = CASE WHEN $6 THEN $9 ELSE routed_channel END, \
                 routed_xta_reader = CASE WHEN $6 THEN $10 ELSE routed_xta_reader END, \
                 routed_xta_service = CASE WHEN $6 THEN $11 ELSE routed_xta_service END, \
                 directory_generation = CASE WHEN $6 THEN $12 ELSE directory_generation END, \
                 xta_message_id = COALESCE(xta_message_id, $13), \
                 attempts = CASE WHEN $14 THEN 0 ELSE attempts END, \
                 next_attempt_at = CASE WHEN $14 THEN NULL ELSE next_attempt_at END \
                 WHERE id = $4 AND state = $5 RETURNING last_seq",
            )
            .bind(to.as_str())
            .bind(detail)
            .bind(stamp(at))
            .bind(id.0)
            .bind(from.as_str())
            .bind(routed.is_some())
            .bind(routed.map(|r| r.kennung.as_str()))
            .bind(routed.map(|r| r.name.as_str()))
            .bind(routed.map(|r| r.channel.as_str()))
            .bind(routed.and_then(|r| r.xta_reader.as_deref()))
            .bind(routed.and_then(|r| r.xta_service.as_deref()))
            .bind(routed.map(|r| r.directory_generation.as_str()))
            .bind(message_id)
            // A new state starts its tries afresh.
            .bind(from != to)
            .fetch_optional(&mut *tx)
            .await?;

            let Some(seq) = seq else {
                return Ok(Err(why_not_in(tx, id, from).await?));
            };
            insert_event(tx, id, seq, from, to, actor, detail, at).await?;
            if let Some(queue) = to.stage() {
                write_trigger(tx, id.0, queue, seq, at).await?;
            }
            tracing::debug!(request = id.0, %from, %to, "request moved");
            Ok(Ok(()))
        }

        /// Why a compare-and-set on a request expected in `from` changed nothing: it is
        /// unknown, or in another state.
        async fn why_not_in(
            tx: &mut Conn,
            id: $crate::ledger::RequestId,
            from: $crate::ledger::RequestState,
        ) -> std::result::Result<$crate::ledger::LedgerError, sqlx::Error> {
            use $crate::ledger::LedgerError;
            let current: Option<String> = sqlx::query_scalar("SELECT state FROM requests WHERE id = $1")
                .bind(id.0)
                .fetch_optional(&mut *tx)
                .await?;
            Ok(match current {
                None => LedgerError::NotFound(id),
                Some(current) => match $crate::ledger::parse_state(&current) {
                    Ok(current) => LedgerError::Conflict { id, expected: from, current },
                    Err(e) => e,
                },
            })
        }

        #[allow(clippy::too_many_arguments)]
        async fn insert_event(
            tx: &mut Conn,
            id: $crate::ledger::RequestId,
            seq: i32,
            from: $crate::ledger::RequestState,
            to: $crate::ledger::RequestState,
            actor: &str,
            detail: Option<&str>,
            at: chrono::DateTime<chrono::Utc>,
        ) -> std::result::Result<(), sqlx::Error> {
            sqlx::query(
                "INSERT INTO request_events (request_id, seq, at, from_state, to_state, actor, detail) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(id.0)
            .bind(seq)
            .bind(stamp(at))
            .bind(from.as_str())
            .bind(to.as_str())
            .bind(actor)
            .bind(detail)
            .execute(&mut *tx)
            .await?;
            Ok(())
        }

        /// [`Ledger::schedule_attempt`] inside `tx`.
        #[allow(clippy::too_many_arguments)]
        async fn apply_schedule(
            tx: &mut Conn,
            id: $crate::ledger::RequestId,
            state: $crate::ledger::RequestState,
            queue: $crate::queue::Queue,
            attempts: u32,
            next_at: chrono::DateTime<chrono::Utc>,
            actor: &str,
            detail: Option<&str>,
            at: chrono::DateTime<chrono::Utc>,
        ) -> std::result::Result<$crate::ledger::Result<()>, sqlx::Error> {
            let seq: Option<i32> = sqlx::query_scalar(
                "UPDATE requests SET state_detail = $1, updated_at = $2, last_seq = last_seq + 1, \
                 attempts = $3, next_attempt_at = $4 WHERE id = $5 AND state = $6 RETURNING last_seq",
            )
            .bind(detail)
            .bind(stamp(at))
            .bind(i64::from(attempts))
            .bind(stamp(next_at))
            .bind(id.0)
            .bind(state.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            let Some(seq) = seq else {
                return Ok(Err(why_not_in(tx, id, state).await?));
            };
            insert_event(tx, id, seq, state, state, actor, detail, at).await?;
            sqlx::query(
                "INSERT INTO outbox (request_id, queue, seq, created_at, not_before) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(id.0)
            .bind(queue.name())
            .bind(seq)
            .bind(stamp(at))
            .bind(stamp(next_at))
            .execute(&mut *tx)
            .await?;
            tracing::debug!(request = id.0, %state, attempts, "further attempt scheduled");
            Ok(Ok(()))
        }

        /// One outbox row, if the request's state is its stage's input (`routed_for_xta!`);
        /// nothing when the same (request, queue, seq) is there already.
        async fn write_trigger(
            tx: &mut Conn,
            request: i64,
            queue: $crate::queue::Queue,
            seq: i32,
            at: chrono::DateTime<chrono::Utc>,
        ) -> std::result::Result<bool, sqlx::Error> {
            let done = sqlx::query(concat!(
                "INSERT INTO outbox (request_id, queue, seq, created_at) \
                 SELECT id, $2, $3, $4 FROM requests WHERE id = $1 AND ",
                routed_for_xta!(),
                " ON CONFLICT DO NOTHING"
            ))
            .bind(request)
            .bind(queue.name())
            .bind(seq)
            .bind(stamp(at))
            .execute(&mut *tx)
            .await?;
            Ok(done.rows_affected() == 1)
        }

        /// The sweeper's trigger, written only while the request is still in `state`,
        /// entered with `seq`.
        async fn write_retrigger(
            tx: &mut Conn,
            id: $crate::ledger::RequestId,
            seq: u32,
            state: $crate::ledger::RequestState,
            queue: $crate::queue::Queue,
            at: chrono::DateTime<chrono::Utc>,
        ) -> std::result::Result<bool, sqlx::Error> {
            let done = sqlx::query(concat!(
                "INSERT INTO outbox (request_id, queue, seq, created_at) \
                 SELECT id, $1, last_seq, $2 FROM requests WHERE id = $3 AND last_seq = $4 AND state = $5 AND ",
                routed_for_xta!(),
                " ON CONFLICT DO NOTHING"
            ))
            .bind(queue.name())
            .bind(stamp(at))
            .bind(id.0)
            .bind(i64::from(seq))
            .bind(state.as_str())
            .execute(&mut *tx)
            .await?;
            Ok(done.rows_affected() == 1)
        }

        async fn select_request(pool: &Pool, id: $crate::ledger::RequestId) -> $crate::ledger::Result<Option<$crate::ledger::Request>> {
            let row: Option<$crate::ledger::RequestRow> =
                sqlx::query_as(concat!("SELECT ", request_columns!(), " FROM requests WHERE id = $1"))
                    .bind(id.0)
                    .fetch_optional(pool)
                    .await?;
            row.map($crate::ledger::Request::try_from).transpose()
        }

        /// The MessageID stored for a request that began its transmission.
        async fn stored_message_id(pool: &Pool, id: $crate::ledger::RequestId) -> $crate::ledger::Result<String> {
            select_request(pool, id)
                .await?
                .and_then(|r| r.xta_message_id)
                .ok_or_else(|| $crate::ledger::LedgerError::Corrupt(format!("request {id} is transmitting without a MessageID")))
        }

        async fn select_by_source(pool: &Pool, source: &str) -> $crate::ledger::Result<Option<$crate::ledger::Request>> {
            let row: Option<$crate::ledger::RequestRow> =
                sqlx::query_as(concat!("SELECT ", request_columns!(), " FROM requests WHERE source = $1"))
                    .bind(source)
                    .fetch_optional(pool)
                    .await?;
            row.map($crate::ledger::Request::try_from).transpose()
        }

        async fn select_journal(pool: &Pool, id: $crate::ledger::RequestId) -> $crate::ledger::Result<Vec<$crate::ledger::Event>> {
            let rows = sqlx::query_as(
                "SELECT seq, at, from_state, to_state, actor, detail FROM request_events \
                 WHERE request_id = $1 ORDER BY seq",
            )
            .bind(id.0)
            .fetch_all(pool)
            .await?;
            $crate::ledger::events_from_rows(id, rows)
        }

        async fn select_payload(pool: &Pool, id: $crate::ledger::RequestId) -> $crate::ledger::Result<Vec<u8>> {
            let bytes: Option<Vec<u8>> = sqlx::query_scalar("SELECT bytes FROM request_payloads WHERE request_id = $1")
                .bind(id.0)
                .fetch_optional(pool)
                .await?;
            bytes.ok_or($crate::ledger::LedgerError::NotFound(id))
        }

        async fn select_list(pool: &Pool, filter: &$crate::ledger::ListFilter) -> $crate::ledger::Result<Vec<$crate::ledger::Request>> {
            // One fixed statement per combination of filters, so each can use its index.
            let query = match (filter.state, filter.tenant.as_deref()) {
                (None, None) => sqlx::query_as(concat!("SELECT ", request_columns!(), " FROM requests ORDER BY id DESC LIMIT $1 OFFSET $2")),
                (Some(state), None) => {
                    sqlx::query_as(concat!("SELECT ", request_columns!(), " FROM requests WHERE state = $1 ORDER BY id DESC LIMIT $2 OFFSET $3"))
                        .bind(state.as_str())
                }
                (None, Some(tenant)) => {
                    sqlx::query_as(concat!("SELECT ", request_columns!(), " FROM requests WHERE tenant = $1 ORDER BY id DESC LIMIT $2 OFFSET $3"))
                        .bind(tenant)
                }
                (Some(state), Some(tenant)) => sqlx::query_as(concat!(
                    "SELECT ",
                    request_columns!(),
                    " FROM requests WHERE state = $1 AND tenant = $2 ORDER BY id DESC LIMIT $3 OFFSET $4"
                ))
                .bind(state.as_str())
                .bind(tenant),
            };
            let rows: Vec<$crate::ledger::RequestRow> =
                query.bind(filter.capped_limit()).bind(filter.offset_i64()).fetch_all(pool).await?;
            $crate::ledger::requests_from_rows(rows)
        }

        async fn select_awaiting_print_after(pool: &Pool, after: $crate::ledger::RequestId, limit: u32) -> $crate::ledger::Result<Vec<$crate::ledger::Request>> {
            let rows: Vec<$crate::ledger::RequestRow> =
                sqlx::query_as(concat!("SELECT ", request_columns!(), " FROM requests WHERE state = $1 AND id > $2 ORDER BY id LIMIT $3"))
                    .bind($crate::ledger::RequestState::AwaitingPrint.as_str())
                    .bind(after.0)
                    .bind(i64::from(limit.min($crate::ledger::ListFilter::MAX_LIMIT)))
                    .fetch_all(pool)
                    .await?;
            $crate::ledger::requests_from_rows(rows)
        }

        /// [`Ledger::print_inputs`]: the requests whose letters in the batch are numbered
        /// from the lowest to the highest of `letters` (one statement), their payloads (a
        /// second), kept for the requests of `letters`.
        async fn select_print_inputs(
            pool: &Pool,
            batch_id: &str,
            letters: &[($crate::ledger::RequestId, u32)],
        ) -> $crate::ledger::Result<Vec<($crate::ledger::Request, Vec<u8>)>> {
            let (Some(first), Some(last)) = (letters.iter().map(|l| l.1).min(), letters.iter().map(|l| l.1).max()) else {
                return Ok(Vec::new());
            };
            let wanted: std::collections::HashSet<i64> = letters.iter().map(|l| l.0.0).collect();
            let rows: Vec<$crate::ledger::RequestRow> = sqlx::query_as(concat!(
                "SELECT ",
                request_columns!(),
                " FROM requests WHERE id IN (SELECT request_id FROM print_letters WHERE batch_id = $1 AND letter_number BETWEEN $2 AND $3)"
            ))
            .bind(batch_id)
            .bind(i64::from(first))
            .bind(i64::from(last))
            .fetch_all(pool)
            .await?;
            let payloads: Vec<(i64, Vec<u8>)> = sqlx::query_as(
                "SELECT request_id, bytes FROM request_payloads WHERE request_id IN \
                 (SELECT request_id FROM print_letters WHERE batch_id = $1 AND letter_number BETWEEN $2 AND $3)",
            )
            .bind(batch_id)
            .bind(i64::from(first))
            .bind(i64::from(last))
            .fetch_all(pool)
            .await?;
            let mut payloads: std::collections::HashMap<i64, Vec<u8>> = payloads.into_iter().filter(|(id, _)| wanted.contains(id)).collect();
            let mut found = Vec::with_capacity(letters.len());
            for row in rows {
                let request = $crate::ledger::Request::try_from(row)?;
                if let Some(bytes) = payloads.remove(&request.id.0) {
                    found.push((request, bytes));
                }
            }
            Ok(found)
        }

        async fn select_counts(pool: &Pool) -> $crate::ledger::Result<Vec<($crate::ledger::RequestState, u64)>> {
            let rows: Vec<(String, i64)> = sqlx::query_as("SELECT state, COUNT(*) FROM requests GROUP BY state").fetch_all(pool).await?;
            $crate::ledger::counts_in_order(rows)
        }

        async fn select_ping(pool: &Pool) -> $crate::ledger::Result<()> {
            let _: i32 = sqlx::query_scalar("SELECT 1").fetch_one(pool).await?;
            Ok(())
        }

        async fn select_outbox_len(pool: &Pool) -> $crate::ledger::Result<u64> {
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox").fetch_one(pool).await?;
            Ok(u64::try_from(n).unwrap_or(0))
        }

        async fn select_waiting_without_trigger(
            pool: &Pool,
            state: $crate::ledger::RequestState,
            before: chrono::DateTime<chrono::Utc>,
            after_id: $crate::ledger::RequestId,
            limit: u32,
        ) -> $crate::ledger::Result<Vec<($crate::ledger::RequestId, u32)>> {
            let rows: Vec<(i64, i32)> = sqlx::query_as(concat!(
                "SELECT id, last_seq FROM requests r WHERE state = $1 AND id > $2 AND updated_at < $3 \
                 AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.request_id = r.id) AND ",
                routed_for_xta!(),
                " ORDER BY id LIMIT $4"
            ))
            .bind(state.as_str())
            .bind(after_id.0)
            .bind(stamp(before))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?;
            Ok(rows.into_iter().map(|(id, seq)| ($crate::ledger::RequestId(id), u32::try_from(seq).unwrap_or(0))).collect())
        }

        /// Inserts a received message as `stored` unless its MessageID is there; true when
        /// inserted. Only the MessageID's conflict is "already there": a file name another
        /// MessageID holds fails the statement.
        async fn insert_received(tx: &mut Conn, new: &$crate::ledger::NewReceived, at: chrono::DateTime<chrono::Utc>) -> std::result::Result<bool, sqlx::Error> {
            let done = sqlx::query(
                "INSERT INTO received_messages (message_id, tenant, reader, file_name, payload, state, reason, received_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, 'stored', $6, $7, $7) ON CONFLICT (message_id) DO NOTHING",
            )
            .bind(&new.message_id)
            .bind(&new.tenant)
            .bind(&new.reader)
            .bind(&new.file_name)
            .bind(&new.payload)
            .bind(&new.reason)
            .bind(stamp(at))
            .execute(&mut *tx)
            .await?;
            Ok(done.rows_affected() == 1)
        }

        async fn select_received(pool: &Pool, message_id: &str) -> $crate::ledger::Result<Option<$crate::ledger::Received>> {
            let row: Option<$crate::ledger::ReceivedRow> =
                sqlx::query_as(concat!("SELECT ", received_columns!(), " FROM received_messages WHERE message_id = $1"))
                    .bind(message_id)
                    .fetch_optional(pool)
                    .await?;
            row.map($crate::ledger::Received::try_from).transpose()
        }

        async fn select_received_payload(pool: &Pool, message_id: &str) -> $crate::ledger::Result<Option<Vec<u8>>> {
            Ok(sqlx::query_scalar("SELECT payload FROM received_messages WHERE message_id = $1")
                .bind(message_id)
                .fetch_optional(pool)
                .await?)
        }

        /// The claim to write a stored message's file: free, expired, or the owner's own.
        async fn update_received_claim(
            tx: &mut Conn,
            message_id: &str,
            owner: &str,
            until: chrono::DateTime<chrono::Utc>,
            at: chrono::DateTime<chrono::Utc>,
        ) -> std::result::Result<bool, sqlx::Error> {
            let done = sqlx::query(
                "UPDATE received_messages SET claimed_by = $2, claimed_until = $3, updated_at = $4 \
                 WHERE message_id = $1 AND state = 'stored' \
                 AND (claimed_by IS NULL OR claimed_by = $2 OR claimed_until IS NULL OR claimed_until < $4)",
            )
            .bind(message_id)
            .bind(owner)
            .bind(stamp(until))
            .bind(stamp(at))
            .execute(&mut *tx)
            .await?;
            Ok(done.rows_affected() == 1)
        }

        /// The compare-and-set of a received message's state; lets go of the claim.
        async fn update_received_state(
            tx: &mut Conn,
            message_id: &str,
            from: $crate::ledger::ReceivedState,
            to: $crate::ledger::ReceivedState,
            at: chrono::DateTime<chrono::Utc>,
        ) -> std::result::Result<bool, sqlx::Error> {
            let done = sqlx::query(
                "UPDATE received_messages SET state = $3, claimed_by = NULL, claimed_until = NULL, updated_at = $4 \
                 WHERE message_id = $1 AND state = $2",
            )
            .bind(message_id)
            .bind(from.as_str())
            .bind(to.as_str())
            .bind(stamp(at))
            .execute(&mut *tx)
            .await?;
            Ok(done.rows_affected() == 1)
        }

        /// [`Ledger::open_print_batch`] inside `tx`: `Some(true)` when this call created the
        /// batch, `Some(false)` when it was there, `None` when there was none and no candidate
        /// could take a number: then nothing is recorded (the caller rolls `tx` back).
        async fn apply_open_print_batch(
            tx: &mut Conn,
            date: chrono::NaiveDate,
            batch_id: &str,
            candidates: &[$crate::ledger::RequestId],
            at: chrono::DateTime<chrono::Utc>,
        ) -> std::result::Result<Option<bool>, sqlx::Error> {
            let created = sqlx::query(
                "INSERT INTO print_batches (batch_date, batch_id, letters, created_at) VALUES ($1, $2, 0, $3) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(date.format("%Y-%m-%d").to_string())
            .bind(batch_id)
            .bind(stamp(at))
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if !created {
                return Ok(Some(false));
            }
            // Numbered in the order given; a request that moved on meanwhile, or sits in
            // another batch, is left out and takes no number.
            let mut number: i64 = 0;
            for id in candidates {
                let taken = sqlx::query(
                    "UPDATE requests SET print_batch = $1, letter_number = $2 \
                     WHERE id = $3 AND state = 'awaiting_print' AND print_batch IS NULL",
                )
                .bind(batch_id)
                .bind(number + 1)
                .bind(id.0)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if taken == 1 {
                    number += 1;
                    // The letter for good: it stays when an error sends its request back.
                    sqlx::query("INSERT INTO print_letters (batch_id, letter_number, request_id) VALUES ($1, $2, $3)")
                        .bind(batch_id)
                        .bind(number)
                        .bind(id.0)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            if number == 0 {
                // Nothing to print: no batch. The date stays open, so a later run of it (an
                // operator's, after requests arrived) makes the batch with its letters.
                return Ok(None);
            }
            sqlx::query("UPDATE print_batches SET letters = $2 WHERE batch_id = $1")
                .bind(batch_id)
                .bind(number)
                .execute(&mut *tx)
                .await?;
            Ok(Some(true))
        }

        /// The batch of `date` with its letters and the files handed off.
        async fn select_print_batch(tx: &mut Conn, date: chrono::NaiveDate, created: bool) -> $crate::ledger::Result<$crate::ledger::PrintBatch> {
            let row: Option<(String, Option<chrono::DateTime<chrono::Utc>>)> =
                sqlx::query_as("SELECT batch_id, finished_at FROM print_batches WHERE batch_date = $1")
                    .bind(date.format("%Y-%m-%d").to_string())
                    .fetch_optional(&mut *tx)
                    .await?;
            let Some((batch_id, finished_at)) = row else {
                return Err($crate::ledger::LedgerError::Corrupt(format!("the print batch of {date} is gone")));
            };
            // Every letter the batch got, also one whose request an error sent back since: the
            // files are planned from them, and must come out the same on every run.
            let letters: Vec<(i64, i32)> = sqlx::query_as("SELECT request_id, letter_number FROM print_letters WHERE batch_id = $1 ORDER BY letter_number")
                .bind(&batch_id)
                .fetch_all(&mut *tx)
                .await?;
            let files: Vec<i32> = sqlx::query_scalar("SELECT file_no FROM print_files WHERE batch_id = $1 ORDER BY file_no")
                .bind(&batch_id)
                .fetch_all(&mut *tx)
                .await?;
            Ok($crate::ledger::PrintBatch {
                batch_id,
                date,
                letters: letters.into_iter().map(|(id, n)| ($crate::ledger::RequestId(id), u32::try_from(n).unwrap_or(0))).collect(),
                files_done: files.into_iter().map(|n| u32::try_from(n).unwrap_or(0)).collect(),
                finished: finished_at.is_some(),
                created,
            })
        }

        async fn update_print_claim(
            tx: &mut Conn,
            batch_id: &str,
            owner: &str,
            until: chrono::DateTime<chrono::Utc>,
            take_from: Option<&str>,
            at: chrono::DateTime<chrono::Utc>,
        ) -> std::result::Result<Option<String>, sqlx::Error> {
            let done = sqlx::query(
                "UPDATE print_batches SET writer = $2, lease_until = $3 WHERE batch_id = $1 \
                 AND (writer IS NULL OR writer = $2 OR lease_until IS NULL OR lease_until < $4 OR writer = $5)",
            )
            .bind(batch_id)
            .bind(owner)
            .bind(stamp(until))
            .bind(stamp(at))
            .bind(take_from)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 1 {
                return Ok(None);
            }
            let holder: Option<Option<String>> = sqlx::query_scalar("SELECT writer FROM print_batches WHERE batch_id = $1")
                .bind(batch_id)
                .fetch_optional(&mut *tx)
                .await?;
            Ok(Some(holder.flatten().unwrap_or_default()))
        }

        /// [`Ledger::print_file_done`] inside `tx`.
        #[allow(clippy::too_many_arguments)]
        async fn apply_print_file_done(
            tx: &mut Conn,
            batch_id: &str,
            file_no: u32,
            file_name: &str,
            sha256: &str,
            letters: &[($crate::ledger::RequestId, u32)],
            notes: &[($crate::ledger::RequestId, String)],
            actor: &str,
            at: chrono::DateTime<chrono::Utc>,
        ) -> std::result::Result<$crate::ledger::Result<()>, sqlx::Error> {
            let recorded = sqlx::query(
                "INSERT INTO print_files (batch_id, file_no, file_name, sha256, letters, written_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            )
            .bind(batch_id)
            .bind(i64::from(file_no))
            .bind(file_name)
            .bind(sha256)
            .bind(letters.len() as i64)
            .bind(stamp(at))
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if !recorded {
                return Ok(Ok(()));
            }
            use $crate::ledger::RequestState::{AwaitingPrint, Printed};
            for (id, number) in letters {
                sqlx::query("UPDATE print_letters SET file_no = $3 WHERE batch_id = $1 AND letter_number = $2")
                    .bind(batch_id)
                    .bind(i64::from(*number))
                    .bind(i64::from(file_no))
                    .execute(&mut *tx)
                    .await?;
                let mut detail = format!("batch {batch_id}, letter {number}, file {file_name}");
                for (_, note) in notes.iter().filter(|(of, _)| of == id) {
                    detail.push_str("; ");
                    detail.push_str(note);
                }
                match apply_transition(tx, *id, AwaitingPrint, Printed, actor, Some(&detail), None, None, at).await? {
                    // Withdrawn meanwhile (its letter is in the file all the same) or already
                    // printed: the journal says what it says.
                    Ok(()) | Err($crate::ledger::LedgerError::Conflict { .. }) => {}
                    Err(e) => return Ok(Err(e)),
                }
            }
            Ok(Ok(()))
        }

        async fn select_print_batches(pool: &Pool) -> $crate::ledger::Result<Vec<$crate::ledger::PrintBatchInfo>> {
            type Row = (String, String, i32, chrono::DateTime<chrono::Utc>, Option<chrono::DateTime<chrono::Utc>>, i64, i64, i64, i64);
            let rows: Vec<Row> = sqlx::query_as(
                "SELECT b.batch_date, b.batch_id, b.letters, b.created_at, b.finished_at, \
                 (SELECT COUNT(*) FROM print_files f WHERE f.batch_id = b.batch_id), \
                 (SELECT COUNT(DISTINCT p.letter_number) FROM print_feedback p WHERE p.batch_id = b.batch_id AND p.status = 'handed_over'), \
                 (SELECT COUNT(DISTINCT p.letter_number) FROM print_feedback p WHERE p.batch_id = b.batch_id AND p.status = 'error'), \
                 (SELECT COUNT(*) FROM print_letters l WHERE l.batch_id = b.batch_id AND NOT EXISTS \
                   (SELECT 1 FROM print_feedback p WHERE p.batch_id = l.batch_id AND p.letter_number = l.letter_number)) \
                 FROM print_batches b ORDER BY b.batch_date DESC",
            )
            .fetch_all(pool)
            .await?;
            let count = |n: i64| u32::try_from(n).unwrap_or(0);
            rows.into_iter()
                .map(|(date, batch_id, letters, created_at, finished_at, files, posted, errors, no_feedback)| {
                    let date = chrono::NaiveDate::parse_from_str(&date, "%Y-%m-%d")
                        .map_err(|_| $crate::ledger::LedgerError::Corrupt(format!("print batch {batch_id}: date {date:?}")))?;
                    Ok($crate::ledger::PrintBatchInfo {
                        batch_id,
                        date,
                        letters: u32::try_from(letters).unwrap_or(0),
                        files: count(files),
                        created_at,
                        finished_at,
                        posted: count(posted),
                        errors: count(errors),
                        no_feedback: count(no_feedback),
                    })
                })
                .collect()
        }

        async fn select_print_files(pool: &Pool, batch_id: &str) -> $crate::ledger::Result<Vec<$crate::ledger::PrintFileInfo>> {
            let rows: Vec<(i32, String, String, i32, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
                "SELECT file_no, file_name, sha256, letters, written_at FROM print_files WHERE batch_id = $1 ORDER BY file_no",
            )
            .bind(batch_id)
            .fetch_all(pool)
            .await?;
            Ok(rows
                .into_iter()
                .map(|(file_no, file_name, sha256, letters, written_at)| $crate::ledger::PrintFileInfo {
                    file_no: u32::try_from(file_no).unwrap_or(0),
                    file_name,
                    sha256,
                    letters: u32::try_from(letters).unwrap_or(0),
                    written_at,
                })
                .collect())
        }

        async fn select_print_letters(pool: &Pool, batch_id: &str) -> $crate::ledger::Result<Vec<$crate::ledger::PrintLetter>> {
            let rows: Vec<(i32, i64, Option<i32>, bool, String, Option<bool>)> = sqlx::query_as(
                "SELECT l.letter_number, l.request_id, l.file_no, r.test, r.state, \
                 (r.print_batch = l.batch_id AND r.letter_number = l.letter_number) \
                 FROM print_letters l JOIN requests r ON r.id = l.request_id WHERE l.batch_id = $1 ORDER BY l.letter_number",
            )
            .bind(batch_id)
            .fetch_all(pool)
            .await?;
            type FeedbackRow = (i32, String, chrono::DateTime<chrono::Utc>, Option<String>, String, i32);
            let feedback: Vec<FeedbackRow> = sqlx::query_as(
                "SELECT letter_number, status, reported_at, reason, file_name, line FROM print_feedback \
                 WHERE batch_id = $1 ORDER BY letter_number, reported_at, imported_at, line",
            )
            .bind(batch_id)
            .fetch_all(pool)
            .await?;
            let mut by_letter: std::collections::HashMap<u32, Vec<$crate::ledger::PrintFeedback>> = std::collections::HashMap::new();
            for (number, status, at, reason, file_name, line) in feedback {
                let letter_number = u32::try_from(number).unwrap_or(0);
                by_letter.entry(letter_number).or_default().push($crate::ledger::PrintFeedback {
                    batch_id: batch_id.to_string(),
                    letter_number,
                    status: status.parse()?,
                    at,
                    reason,
                    file_name,
                    line: u32::try_from(line).unwrap_or(0),
                });
            }
            rows.into_iter()
                .map(|(number, request, file_no, test, state, in_batch)| {
                    let letter_number = u32::try_from(number).unwrap_or(0);
                    Ok($crate::ledger::PrintLetter {
                        batch_id: batch_id.to_string(),
                        letter_number,
                        request: $crate::ledger::RequestId(request),
                        test,
                        state: $crate::ledger::parse_state(&state)?,
                        in_batch: in_batch.unwrap_or(false),
                        file_no: file_no.and_then(|n| u32::try_from(n).ok()),
                        feedback: by_letter.remove(&letter_number).unwrap_or_default(),
                    })
                })
                .collect()
        }

        /// [`Ledger::record_print_feedback`] inside `tx`. The inner error aborts it all.
        async fn apply_print_feedback(
            tx: &mut Conn,
            entries: &[$crate::ledger::FeedbackEntry],
            actor: &str,
            at: chrono::DateTime<chrono::Utc>,
        ) -> std::result::Result<$crate::ledger::Result<$crate::ledger::FeedbackRecorded>, sqlx::Error> {
            use $crate::ledger::{FeedbackEffect, LedgerError, RequestState};
            let mut done = $crate::ledger::FeedbackRecorded::default();
            for entry in entries {
                let f = &entry.feedback;
                let inserted = sqlx::query(
                    "INSERT INTO print_feedback (batch_id, letter_number, status, reported_at, reason, file_name, line, imported_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                )
                .bind(&f.batch_id)
                .bind(i64::from(f.letter_number))
                .bind(f.status.as_str())
                .bind(stamp(f.at))
                .bind(&f.reason)
                .bind(&f.file_name)
                .bind(i64::from(f.line))
                .bind(stamp(at))
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                if !inserted {
                    done.before += 1;
                    continue;
                }
                done.new += 1;
                let (to, detail) = match entry.effect {
                    FeedbackEffect::Record => continue,
                    FeedbackEffect::Posted => (
                        RequestState::Posted,
                        format!("batch {}, letter {}: handed over to the post at {} (print centre)", f.batch_id, f.letter_number, f.at.format("%Y-%m-%d %H:%M:%S UTC")),
                    ),
                    FeedbackEffect::Reprint => (
                        RequestState::AwaitingPrint,
                        format!(
                            "batch {}, letter {}: print centre error at {}: {}; printed again in the next batch",
                            f.batch_id,
                            f.letter_number,
                            f.at.format("%Y-%m-%d %H:%M:%S UTC"),
                            f.reason.as_deref().unwrap_or("no reason given")
                        ),
                    ),
                };
                // Still printed as this letter (and locked, in PostgreSQL, until the end);
                // sent back, it leaves its batch so that the next one takes it.
                let held = sqlx::query(
                    "UPDATE requests SET print_batch = CASE WHEN $4 THEN NULL ELSE print_batch END, \
                     letter_number = CASE WHEN $4 THEN NULL ELSE letter_number END \
                     WHERE id = $1 AND state = 'printed' AND print_batch = $2 AND letter_number = $3",
                )
                .bind(entry.request.0)
                .bind(&f.batch_id)
                .bind(i64::from(f.letter_number))
                .bind(entry.effect == FeedbackEffect::Reprint)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                let moved = || LedgerError::LetterMoved { batch_id: f.batch_id.clone(), letter_number: f.letter_number, request: entry.request };
                if !held {
                    return Ok(Err(moved()));
                }
                match apply_transition(tx, entry.request, RequestState::Printed, to, actor, Some(&detail), None, None, at).await? {
                    Ok(()) => {}
                    Err(LedgerError::Conflict { .. }) => return Ok(Err(moved())),
                    Err(e) => return Ok(Err(e)),
                }
                if to == RequestState::Posted { done.posted += 1 } else { done.reprint += 1 }
            }
            Ok(Ok(done))
        }

        async fn update_print_finished(tx: &mut Conn, batch_id: &str, at: chrono::DateTime<chrono::Utc>) -> std::result::Result<(), sqlx::Error> {
            sqlx::query("UPDATE print_batches SET finished_at = COALESCE(finished_at, $2), writer = NULL, lease_until = NULL WHERE batch_id = $1")
                .bind(batch_id)
                .bind(stamp(at))
                .execute(&mut *tx)
                .await?;
            Ok(())
        }

        /// A new access token; false when its name (or, never in practice, its hash) is taken.
        async fn insert_token(tx: &mut Conn, new: &$crate::ledger::NewToken, at: chrono::DateTime<chrono::Utc>) -> std::result::Result<bool, sqlx::Error> {
            let done = sqlx::query(
                "INSERT INTO access_tokens (name, role, token_sha256, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            )
            .bind(&new.name)
            .bind(&new.role)
            .bind(&new.sha256)
            .bind(stamp(at))
            .execute(&mut *tx)
            .await?;
            Ok(done.rows_affected() == 1)
        }

        async fn update_token_revoked(tx: &mut Conn, name: &str, at: chrono::DateTime<chrono::Utc>) -> std::result::Result<(), sqlx::Error> {
            sqlx::query("UPDATE access_tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE name = $1")
                .bind(name)
                .bind(stamp(at))
                .execute(&mut *tx)
                .await?;
            Ok(())
        }

        async fn update_token_used(tx: &mut Conn, name: &str, at: chrono::DateTime<chrono::Utc>) -> std::result::Result<(), sqlx::Error> {
            sqlx::query("UPDATE access_tokens SET last_used_at = $2 WHERE name = $1")
                .bind(name)
                .bind(stamp(at))
                .execute(&mut *tx)
                .await?;
            Ok(())
        }

        async fn select_token_by_name(pool: &Pool, name: &str) -> $crate::ledger::Result<Option<$crate::ledger::AccessToken>> {
            let row: Option<$crate::ledger::TokenRow> = sqlx::query_as(concat!("SELECT ", token_columns!(), " FROM access_tokens WHERE name = $1"))
                .bind(name)
                .fetch_optional(pool)
                .await?;
            Ok(row.map($crate::ledger::AccessToken::from))
        }

        async fn select_token_by_hash(pool: &Pool, sha256: &str) -> $crate::ledger::Result<Option<$crate::ledger::AccessToken>> {
            let row: Option<$crate::ledger::TokenRow> = sqlx::query_as(concat!("SELECT ", token_columns!(), " FROM access_tokens WHERE token_sha256 = $1"))
                .bind(sha256)
                .fetch_optional(pool)
                .await?;
            Ok(row.map($crate::ledger::AccessToken::from))
        }

        async fn select_tokens(pool: &Pool) -> $crate::ledger::Result<Vec<$crate::ledger::AccessToken>> {
            let rows: Vec<$crate::ledger::TokenRow> = sqlx::query_as(concat!("SELECT ", token_columns!(), " FROM access_tokens ORDER BY created_at, name"))
            .fetch_all(pool)
            .await?;
            Ok(rows.into_iter().map($crate::ledger::AccessToken::from).collect())
        }
    };
}
