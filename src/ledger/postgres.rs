//! The ledger in PostgreSQL: cluster mode, shared by any number of `amtsbote` processes.
//!
//! Compare-and-set relies on row locks: a transition's `UPDATE … WHERE state = $from` waits
//! for a concurrent one on the same request and then re-checks the condition, so exactly one
//! of them wins. Recording relies on the unique constraints: `INSERT … ON CONFLICT DO NOTHING`
//! waits for a concurrent insert of the same key to commit before it decides.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::{
    AccessToken, Actor, Event, Ledger, LedgerError, ListFilter, NewRequest, PushTriggers, Recorded, Request,
    FeedbackEntry, FeedbackRecorded, NewReceived, NewToken, PrintBatch, PrintBatchInfo, PrintFileInfo, PrintLetter, Received, ReceivedState, RequestId, RequestState, Result, RoutedTo, StoredReceived, Trigger,
    TriggerRow, check_received_transition, check_schedule, check_transition, migrator, now, received_columns,
    created_token, request_columns, routed_for_xta, stored_received, token_columns,
};
use super::{Mail, MailMark, MailStatus, NewMail, Notification};
use crate::queue::Queue;

/// The PostgreSQL migrations, embedded: (version, description, SQL).
pub(crate) const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "ledger", include_str!("../../migrations/postgres/0001_ledger.sql")),
    (2, "pipeline", include_str!("../../migrations/postgres/0002_pipeline.sql")),
    (3, "transmission", include_str!("../../migrations/postgres/0003_transmission.sql")),
    (4, "attempts", include_str!("../../migrations/postgres/0004_attempts.sql")),
    (5, "received", include_str!("../../migrations/postgres/0005_received.sql")),
    (6, "print", include_str!("../../migrations/postgres/0006_print.sql")),
    (7, "print feedback", include_str!("../../migrations/postgres/0007_print_feedback.sql")),
    (8, "access", include_str!("../../migrations/postgres/0008_access.sql")),
    (9, "notifications", include_str!("../../migrations/postgres/0009_notifications.sql")),
];

shared_statements!(sqlx::Postgres);
super::mail::mail_statements!();

/// Timestamps are `timestamptz`: bound as they are.
fn stamp(at: DateTime<Utc>) -> DateTime<Utc> {
    at
}

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
    outbox_signal: Arc<tokio::sync::Notify>,
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
        Ok(PostgresLedger { pool, outbox_signal: Default::default() })
    }

    /// Waits for the connections to close. Dropping the ledger closes them too, in the
    /// background.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    #[allow(clippy::too_many_arguments)]
    async fn transition_with(&self, id: RequestId, from: RequestState, to: RequestState, actor: &Actor, detail: Option<&str>, routed: Option<&RoutedTo>, message_id: Option<&str>) -> Result<()> {
        check_transition(from, to)?;
        let mut tx = self.pool.begin().await?;
        apply_transition(&mut tx, id, from, to, &actor.to_string(), detail, routed, message_id, now()).await??;
        tx.commit().await?;
        if to.stage().is_some() {
            self.outbox_signal.notify_one();
        }
        Ok(())
    }
}

#[async_trait]
impl Ledger for PostgresLedger {
    async fn migrate(&self) -> Result<()> {
        migrator(MIGRATIONS).run(&self.pool).await?;
        Ok(())
    }

    async fn record(&self, new: NewRequest, initial: RequestState, actor: &Actor, detail: Option<&str>) -> Result<Recorded> {
        if !initial.can_start_as() {
            return Err(LedgerError::InvalidInitialState(initial));
        }
        let mut tx = self.pool.begin().await?;
        let recorded = insert_record(&mut tx, &new, initial, &actor.to_string(), detail, now()).await??;
        tx.commit().await?;
        if matches!(recorded, Recorded::New(_)) && initial.stage().is_some() {
            self.outbox_signal.notify_one();
        }
        Ok(recorded)
    }

    async fn transition(&self, id: RequestId, from: RequestState, to: RequestState, actor: &Actor, detail: Option<&str>) -> Result<()> {
        self.transition_with(id, from, to, actor, detail, None, None).await
    }

    async fn route(&self, id: RequestId, from: RequestState, routed: &RoutedTo, actor: &Actor, detail: Option<&str>) -> Result<()> {
        self.transition_with(id, from, RequestState::Routed, actor, detail, Some(routed), None).await
    }

    async fn begin_transmission(&self, id: RequestId, from: RequestState, message_id: &str, actor: &Actor, detail: Option<&str>) -> Result<String> {
        self.transition_with(id, from, RequestState::Transmitting, actor, detail, None, Some(message_id)).await?;
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
        // The rows stay locked until this transaction ends: the relay of another process
        // skips them and takes the next ones.
        let mut tx = self.pool.begin().await?;
        let rows: Vec<TriggerRow> = sqlx::query_as(
            "SELECT id, request_id, queue, seq, created_at, not_before FROM outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let triggers = rows.into_iter().map(Trigger::try_from).collect::<Result<Vec<_>>>()?;
        push(&triggers).await.map_err(LedgerError::Relay)?;
        let ids: Vec<i64> = triggers.iter().map(|t| t.id).collect();
        sqlx::query("DELETE FROM outbox WHERE id = ANY($1)").bind(&ids).execute(&mut *tx).await?;
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
        let mut tx = self.pool.begin().await?;
        apply_schedule(&mut tx, id, state, queue, attempts, next_at, &actor.to_string(), detail, now()).await??;
        tx.commit().await?;
        self.outbox_signal.notify_one();
        Ok(())
    }

    async fn open_print_batch(&self, date: chrono::NaiveDate, batch_id: &str, candidates: &[RequestId]) -> Result<Option<PrintBatch>> {
        let mut tx = self.pool.begin().await?;
        let Some(created) = apply_open_print_batch(&mut tx, date, batch_id, candidates, now()).await? else {
            tx.rollback().await?;
            return Ok(None);
        };
        let batch = select_print_batch(&mut tx, date, created).await?;
        tx.commit().await?;
        Ok(Some(batch))
    }

    async fn claim_print_batch(&self, batch_id: &str, owner: &str, until: DateTime<Utc>, take_from: Option<&str>) -> Result<Option<String>> {
        let mut tx = self.pool.begin().await?;
        let claimed = update_print_claim(&mut tx, batch_id, owner, until, take_from, now()).await?;
        tx.commit().await?;
        Ok(claimed)
    }

    async fn print_file_done(&self, batch_id: &str, file_no: u32, file_name: &str, sha256: &str, letters: &[(RequestId, u32)], notes: &[(RequestId, String)], actor: &Actor) -> Result<()> {
        let mut tx = self.pool.begin().await?;
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
        let mut tx = self.pool.begin().await?;
        let done = apply_print_feedback(&mut tx, entries, &actor.to_string(), now()).await??;
        tx.commit().await?;
        Ok(done)
    }

    async fn finish_print_batch(&self, batch_id: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        update_print_finished(&mut tx, batch_id, now()).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn retrigger(&self, id: RequestId, seq: u32, queue: Queue) -> Result<bool> {
        let Some(state) = RequestState::input_of(queue) else {
            return Ok(false);
        };
        let mut tx = self.pool.begin().await?;
        let written = write_retrigger(&mut tx, id, seq, state, queue, now()).await?;
        tx.commit().await?;
        if written {
            self.outbox_signal.notify_one();
        }
        Ok(written)
    }

    async fn store_received(&self, new: NewReceived) -> Result<StoredReceived> {
        let mut tx = self.pool.begin().await?;
        // DO NOTHING waits for a concurrent insert of the same MessageID to commit.
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
        let mut tx = self.pool.begin().await?;
        let claimed = update_received_claim(&mut tx, message_id, owner, until, now()).await?;
        tx.commit().await?;
        Ok(claimed)
    }

    async fn mark_received(&self, message_id: &str, from: ReceivedState, to: ReceivedState) -> Result<bool> {
        check_received_transition(from, to)?;
        let mut tx = self.pool.begin().await?;
        let moved = update_received_state(&mut tx, message_id, from, to, now()).await?;
        tx.commit().await?;
        Ok(moved)
    }

    async fn create_token(&self, new: &NewToken) -> Result<AccessToken> {
        let mut tx = self.pool.begin().await?;
        let inserted = insert_token(&mut tx, new, now()).await?;
        tx.commit().await?;
        created_token(inserted, select_token_by_name(&self.pool, &new.name).await?, &new.name)
    }

    async fn revoke_token(&self, name: &str) -> Result<Option<AccessToken>> {
        let mut tx = self.pool.begin().await?;
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
        let mut tx = self.pool.begin().await?;
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
        let mut tx = self.pool.begin().await?;
        insert_mails(&mut tx, mails, skipped, now()).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn claim_mails(&self, owner: &str, until: DateTime<Utc>, limit: u32) -> Result<Vec<Mail>> {
        let at = now();
        let mut tx = self.pool.begin().await?;
        let rows: Vec<super::mail::MailRow> = sqlx::query_as(concat!(
            "UPDATE mails SET status = 'claimed', claimed_by = $1, claimed_until = $2, updated_at = $3 \
             WHERE id IN (SELECT id FROM mails WHERE status IN ('pending', 'deferred') AND next_attempt_at <= $3 \
                          AND domain NOT IN (SELECT domain FROM mail_domains WHERE next_attempt_at > $3) \
                          ORDER BY next_attempt_at, id LIMIT $4 FOR UPDATE SKIP LOCKED) \
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
        let mut tx = self.pool.begin().await?;
        apply_mail_marks(&mut tx, owner, &marks, now()).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn mails_in_hand(&self) -> Result<Vec<Mail>> {
        select_mails_in_hand(&self.pool).await
    }

    async fn let_go_of_mail(&self, id: &str, owner: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
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
        let mut tx = self.pool.begin().await?;
        let done = update_mail_by_operator(&mut tx, id, false, now()).await?;
        tx.commit().await?;
        Ok(done)
    }

    async fn discard_mail(&self, id: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
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
