//! The ledger's part of the notifications: the rows the triggers of `0009_notifications`
//! write beside each journal event worth an email (`notifications`), the emails the notify
//! stage composes from them (`mails`), and the receiving domains that asked us to wait
//! (`mail_domains`). The SQL both dialects share is in [`mail_statements!`].
//!
//! An email's way, as its `status` says:
//! ```text
//! pending ─claim─► claimed ─hand over─► sending ─► accepted
//!    ▲                │                    │    ─► deferred ─(due)─► claimed …
//!    └──(a crash)─────┘                    │    ─► failed
//!                                          └─(a crash)─► unconfirmed
//! failed | unconfirmed | deferred ─(operator: retry)─► pending;  ─(discard)─► discarded
//! ```
//! `sending` is written (and committed) after the server said "go ahead" to the content and
//! before the content goes: a sender that dies before it leaves the email `claimed`, and it
//! is sent again; one that dies after it leaves `sending`, which becomes `unconfirmed` — the
//! server has most likely accepted it, so it is not sent again by itself (an operator sees it
//! and may retry it).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

use super::{LedgerError, RequestId, Result};

/// What happened that the requesting authority is told about (`notifications.event`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// The XTA server accepted the request (to whom, when, XTA MessageID).
    Transmitted,
    /// Its transport report says the reader fetched it.
    Delivered,
    /// It was put in a print batch (batch date, letter number).
    Printed,
    /// The print centre handed it to the post.
    Posted,
    /// It was refused, with the reasons, so the requester can correct and resend it.
    Rejected,
    /// No or no single authority is responsible: an operator clarifies it.
    Unroutable,
    /// It needs an operator (a red transport report, an error).
    Failed,
    /// A message for the tenant arrived from its XTA message box.
    Received,
}

impl Event {
    pub const ALL: [Event; 8] = [
        Event::Transmitted,
        Event::Delivered,
        Event::Printed,
        Event::Posted,
        Event::Rejected,
        Event::Unroutable,
        Event::Failed,
        Event::Received,
    ];

    /// The name in the ledger, the configuration and the template file names.
    pub const fn as_str(self) -> &'static str {
        match self {
            Event::Transmitted => "transmitted",
            Event::Delivered => "delivered",
            Event::Printed => "printed",
            Event::Posted => "posted",
            Event::Rejected => "rejected",
            Event::Unroutable => "unroutable",
            Event::Failed => "failed",
            Event::Received => "received",
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name given is not a notification event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown notification event {0:?} (known: transmitted, delivered, printed, posted, rejected, unroutable, failed, received)")]
pub struct UnknownEvent(pub String);

impl FromStr for Event {
    type Err = UnknownEvent;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Event::ALL.into_iter().find(|e| e.as_str() == s).ok_or_else(|| UnknownEvent(s.to_owned()))
    }
}

/// Where an email stands (`mails.status`, see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MailStatus {
    Pending,
    Claimed,
    Sending,
    Accepted,
    Deferred,
    Failed,
    Discarded,
    Unconfirmed,
}

impl MailStatus {
    pub const ALL: [MailStatus; 8] = [
        MailStatus::Pending,
        MailStatus::Claimed,
        MailStatus::Sending,
        MailStatus::Accepted,
        MailStatus::Deferred,
        MailStatus::Failed,
        MailStatus::Discarded,
        MailStatus::Unconfirmed,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            MailStatus::Pending => "pending",
            MailStatus::Claimed => "claimed",
            MailStatus::Sending => "sending",
            MailStatus::Accepted => "accepted",
            MailStatus::Deferred => "deferred",
            MailStatus::Failed => "failed",
            MailStatus::Discarded => "discarded",
            MailStatus::Unconfirmed => "unconfirmed",
        }
    }

    /// Whether an operator is asked to look at it (`amtsbote notifications --failed`).
    pub const fn needs_operator(self) -> bool {
        matches!(self, MailStatus::Failed | MailStatus::Unconfirmed)
    }
}

impl fmt::Display for MailStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MailStatus {
    type Err = LedgerError;
    fn from_str(s: &str) -> Result<Self> {
        MailStatus::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| LedgerError::Corrupt(format!("unknown mail status {s:?}")))
    }
}

/// One event the requester is told about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notification {
    /// Stable: `r<request>-<seq>-<event>`, or `m-<tenant>-<file>` for a received message.
    pub id: String,
    pub tenant: String,
    pub event: Event,
    pub request_id: Option<RequestId>,
    /// The journal event it is about.
    pub seq: Option<u32>,
    pub received_message_id: Option<String>,
    pub at: DateTime<Utc>,
    /// The email carrying it, once composed.
    pub mail_id: Option<String>,
    /// Why no email carries it.
    pub skipped: Option<String>,
}

/// An email to compose ([`crate::ledger::Ledger::compose_mails`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMail {
    pub id: String,
    pub tenant: String,
    /// All of one domain.
    pub recipients: Vec<String>,
    pub domain: String,
    pub digest: bool,
    /// The notifications it carries.
    pub notifications: Vec<String>,
}

/// An email as the ledger has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mail {
    pub id: String,
    pub tenant: String,
    pub recipients: Vec<String>,
    pub domain: String,
    pub digest: bool,
    pub status: MailStatus,
    /// Tries that ended with an answer other than acceptance.
    pub attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
    pub claimed_by: Option<String>,
    pub claimed_until: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub accepted_at: Option<DateTime<Utc>>,
}

/// A sender's note on an email it holds ([`crate::ledger::Ledger::mark_mails`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailMark {
    /// The server is ready for the content, which goes next.
    HandOver { id: String },
    /// The server accepted it (2xx after the content).
    Accepted { id: String },
    /// "Try later" (4xx), or the server could not be reached: again at `next_at`; its domain
    /// waits until then too.
    Deferred { id: String, error: String, next_at: DateTime<Utc> },
    /// Refused for good (5xx), or given up after the retry period.
    Failed { id: String, error: String },
    /// Not sent, back to the queue (the sender stops).
    Released { id: String },
}

impl MailMark {
    pub fn id(&self) -> &str {
        match self {
            MailMark::HandOver { id }
            | MailMark::Accepted { id }
            | MailMark::Deferred { id, .. }
            | MailMark::Failed { id, .. }
            | MailMark::Released { id } => id,
        }
    }
}

/// A row of `notifications`, as both databases return it.
#[derive(sqlx::FromRow)]
pub(crate) struct NotificationRow {
    id: String,
    tenant: String,
    event: String,
    request_id: Option<i64>,
    seq: Option<i32>,
    received_message_id: Option<String>,
    at: DateTime<Utc>,
    mail_id: Option<String>,
    skipped: Option<String>,
}

macro_rules! notification_columns {
    () => {
        "id, tenant, event, request_id, seq, received_message_id, at, mail_id, skipped"
    };
}
pub(crate) use notification_columns;

impl TryFrom<NotificationRow> for Notification {
    type Error = LedgerError;
    fn try_from(row: NotificationRow) -> Result<Self> {
        Ok(Notification {
            event: row.event.parse().map_err(|e: UnknownEvent| LedgerError::Corrupt(e.to_string()))?,
            id: row.id,
            tenant: row.tenant,
            request_id: row.request_id.map(RequestId),
            seq: row.seq.and_then(|s| u32::try_from(s).ok()),
            received_message_id: row.received_message_id,
            at: row.at,
            mail_id: row.mail_id,
            skipped: row.skipped,
        })
    }
}

/// A row of `mails`, as both databases return it.
#[derive(sqlx::FromRow)]
pub(crate) struct MailRow {
    id: String,
    tenant: String,
    recipients: String,
    domain: String,
    digest: bool,
    status: String,
    attempts: i32,
    next_attempt_at: DateTime<Utc>,
    claimed_by: Option<String>,
    claimed_until: Option<DateTime<Utc>>,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    accepted_at: Option<DateTime<Utc>>,
}

macro_rules! mail_columns {
    () => {
        "id, tenant, recipients, domain, digest, status, attempts, next_attempt_at, claimed_by, \
         claimed_until, last_error, created_at, updated_at, accepted_at"
    };
}
pub(crate) use mail_columns;

impl TryFrom<MailRow> for Mail {
    type Error = LedgerError;
    fn try_from(row: MailRow) -> Result<Self> {
        Ok(Mail {
            status: row.status.parse()?,
            id: row.id,
            tenant: row.tenant,
            recipients: row.recipients.split(',').filter(|r| !r.is_empty()).map(str::to_owned).collect(),
            domain: row.domain,
            digest: row.digest,
            attempts: u32::try_from(row.attempts).unwrap_or(0),
            next_attempt_at: row.next_attempt_at,
            claimed_by: row.claimed_by,
            claimed_until: row.claimed_until,
            last_error: row.last_error,
            created_at: row.created_at,
            updated_at: row.updated_at,
            accepted_at: row.accepted_at,
        })
    }
}

pub(crate) fn mails_from_rows(rows: Vec<MailRow>) -> Result<Vec<Mail>> {
    rows.into_iter().map(Mail::try_from).collect()
}

pub(crate) fn notifications_from_rows(rows: Vec<NotificationRow>) -> Result<Vec<Notification>> {
    rows.into_iter().map(Notification::try_from).collect()
}

/// Writes the notification statements both ledgers share into the calling module (as
/// `shared_statements!` does): `Conn`, `Pool` and `stamp` must be in scope.
macro_rules! mail_statements {
    () => {
        async fn select_open_notifications(pool: &Pool, limit: u32) -> $crate::ledger::Result<Vec<$crate::ledger::Notification>> {
            let rows = sqlx::query_as(concat!(
                "SELECT ", $crate::ledger::mail::notification_columns!(),
                " FROM notifications WHERE mail_id IS NULL AND skipped IS NULL ORDER BY at, id LIMIT $1"
            ))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?;
            $crate::ledger::mail::notifications_from_rows(rows)
        }

        async fn insert_mails(
            tx: &mut Conn,
            mails: &[$crate::ledger::NewMail],
            skipped: &[(String, String)],
            at: chrono::DateTime<chrono::Utc>,
        ) -> std::result::Result<(), sqlx::Error> {
            for mail in mails {
                sqlx::query(
                    "INSERT INTO mails (id, tenant, recipients, domain, digest, status, attempts, next_attempt_at, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6, $6) ON CONFLICT DO NOTHING",
                )
                .bind(&mail.id)
                .bind(&mail.tenant)
                .bind(mail.recipients.join(","))
                .bind(&mail.domain)
                .bind(mail.digest)
                .bind(stamp(at))
                .execute(&mut *tx)
                .await?;
                for notification in &mail.notifications {
                    // The first email of a notification marks it composed; every email of the
                    // same composition (its other domains) is linked to it, none of another.
                    sqlx::query("UPDATE notifications SET mail_id = $1, composed_at = $2 WHERE id = $3 AND mail_id IS NULL AND skipped IS NULL")
                        .bind(&mail.id)
                        .bind(stamp(at))
                        .bind(notification)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(
                        "INSERT INTO mail_notifications (mail, notification) \
                         SELECT $1, id FROM notifications WHERE id = $2 AND composed_at = $3 ON CONFLICT DO NOTHING",
                    )
                    .bind(&mail.id)
                    .bind(notification)
                    .bind(stamp(at))
                    .execute(&mut *tx)
                    .await?;
                }
            }
            for (notification, why) in skipped {
                sqlx::query("UPDATE notifications SET skipped = $1, composed_at = $2 WHERE id = $3 AND mail_id IS NULL AND skipped IS NULL")
                    .bind(why)
                    .bind(stamp(at))
                    .bind(notification)
                    .execute(&mut *tx)
                    .await?;
            }
            Ok(())
        }

        /// One sender's notes, in order, inside `tx`. A note on an email the sender no
        /// longer holds changes nothing.
        async fn apply_mail_marks(
            tx: &mut Conn,
            owner: &str,
            marks: &[$crate::ledger::MailMark],
            at: chrono::DateTime<chrono::Utc>,
        ) -> std::result::Result<(), sqlx::Error> {
            use $crate::ledger::MailMark;
            for mark in marks {
                match mark {
                    MailMark::HandOver { id } => {
                        sqlx::query("UPDATE mails SET status = 'sending', updated_at = $1 WHERE id = $2 AND claimed_by = $3 AND status = 'claimed'")
                            .bind(stamp(at))
                            .bind(id)
                            .bind(owner)
                            .execute(&mut *tx)
                            .await?;
                    }
                    MailMark::Accepted { id } => {
                        let done = sqlx::query(
                            "UPDATE mails SET status = 'accepted', accepted_at = $1, updated_at = $1, last_error = NULL, \
                             claimed_by = NULL, claimed_until = NULL \
                             WHERE id = $2 AND claimed_by = $3 AND status IN ('claimed', 'sending', 'unconfirmed')",
                        )
                        .bind(stamp(at))
                        .bind(id)
                        .bind(owner)
                        .execute(&mut *tx)
                        .await?;
                        if done.rows_affected() == 1 {
                            sqlx::query("DELETE FROM mail_domains WHERE domain = (SELECT domain FROM mails WHERE id = $1)")
                                .bind(id)
                                .execute(&mut *tx)
                                .await?;
                        }
                    }
                    MailMark::Deferred { id, error, next_at } => {
                        let done = sqlx::query(
                            "UPDATE mails SET status = 'deferred', attempts = attempts + 1, next_attempt_at = $1, last_error = $2, \
                             updated_at = $3, claimed_by = NULL, claimed_until = NULL \
                             WHERE id = $4 AND claimed_by = $5 AND status IN ('claimed', 'sending', 'unconfirmed')",
                        )
                        .bind(stamp(*next_at))
                        .bind(error)
                        .bind(stamp(at))
                        .bind(id)
                        .bind(owner)
                        .execute(&mut *tx)
                        .await?;
                        if done.rows_affected() == 1 {
                            sqlx::query(
                                "INSERT INTO mail_domains (domain, failures, next_attempt_at, last_error) \
                                 SELECT domain, 1, $1, $2 FROM mails WHERE id = $3 \
                                 ON CONFLICT (domain) DO UPDATE SET failures = mail_domains.failures + 1, \
                                 next_attempt_at = excluded.next_attempt_at, last_error = excluded.last_error",
                            )
                            .bind(stamp(*next_at))
                            .bind(error)
                            .bind(id)
                            .execute(&mut *tx)
                            .await?;
                        }
                    }
                    MailMark::Failed { id, error } => {
                        sqlx::query(
                            "UPDATE mails SET status = 'failed', attempts = attempts + 1, last_error = $1, updated_at = $2, \
                             claimed_by = NULL, claimed_until = NULL \
                             WHERE id = $3 AND claimed_by = $4 AND status IN ('claimed', 'sending', 'unconfirmed')",
                        )
                        .bind(error)
                        .bind(stamp(at))
                        .bind(id)
                        .bind(owner)
                        .execute(&mut *tx)
                        .await?;
                    }
                    MailMark::Released { id } => {
                        sqlx::query(
                            "UPDATE mails SET status = CASE WHEN attempts > 0 THEN 'deferred' ELSE 'pending' END, \
                             updated_at = $1, claimed_by = NULL, claimed_until = NULL \
                             WHERE id = $2 AND claimed_by = $3 AND status = 'claimed'",
                        )
                        .bind(stamp(at))
                        .bind(id)
                        .bind(owner)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
            }
            Ok(())
        }

        async fn select_mails_in_hand(pool: &Pool) -> $crate::ledger::Result<Vec<$crate::ledger::Mail>> {
            let rows = sqlx::query_as(concat!(
                "SELECT ", $crate::ledger::mail::mail_columns!(),
                " FROM mails WHERE status IN ('claimed', 'sending') ORDER BY id"
            ))
            .fetch_all(pool)
            .await?;
            $crate::ledger::mail::mails_from_rows(rows)
        }

        /// A dead sender's email: `claimed` back to the queue, `sending` unconfirmed.
        async fn update_mail_let_go(
            tx: &mut Conn,
            id: &str,
            owner: &str,
            at: chrono::DateTime<chrono::Utc>,
        ) -> std::result::Result<bool, sqlx::Error> {
            let done = sqlx::query(
                "UPDATE mails SET status = CASE WHEN status = 'sending' THEN 'unconfirmed' \
                                               WHEN attempts > 0 THEN 'deferred' ELSE 'pending' END, \
                 last_error = CASE WHEN status = 'sending' \
                                   THEN 'sending was interrupted after the server took the content: it has most likely accepted it; not sent again (amtsbote notifications retry sends it once more)' \
                                   ELSE last_error END, \
                 updated_at = $1, claimed_until = NULL \
                 WHERE id = $2 AND claimed_by = $3 AND status IN ('claimed', 'sending')",
            )
            .bind(stamp(at))
            .bind(id)
            .bind(owner)
            .execute(&mut *tx)
            .await?;
            Ok(done.rows_affected() == 1)
        }

        async fn select_mail(pool: &Pool, id: &str) -> $crate::ledger::Result<Option<$crate::ledger::Mail>> {
            let row: Option<$crate::ledger::mail::MailRow> =
                sqlx::query_as(concat!("SELECT ", $crate::ledger::mail::mail_columns!(), " FROM mails WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(pool)
                    .await?;
            row.map($crate::ledger::Mail::try_from).transpose()
        }

        async fn select_mails(pool: &Pool, operator_only: bool, limit: u32) -> $crate::ledger::Result<Vec<$crate::ledger::Mail>> {
            let sql = if operator_only {
                concat!("SELECT ", $crate::ledger::mail::mail_columns!(), " FROM mails WHERE status IN ('failed', 'unconfirmed') ORDER BY updated_at DESC, id LIMIT $1")
            } else {
                concat!("SELECT ", $crate::ledger::mail::mail_columns!(), " FROM mails ORDER BY created_at DESC, id LIMIT $1")
            };
            let rows = sqlx::query_as(sql).bind(i64::from(limit)).fetch_all(pool).await?;
            $crate::ledger::mail::mails_from_rows(rows)
        }

        async fn select_notifications_of_mail(pool: &Pool, mail_id: &str) -> $crate::ledger::Result<Vec<$crate::ledger::Notification>> {
            let rows = sqlx::query_as(concat!(
                "SELECT ", $crate::ledger::mail::notification_columns!(),
                " FROM notifications JOIN mail_notifications ON notification = id WHERE mail = $1 ORDER BY at, id"
            ))
            .bind(mail_id)
            .fetch_all(pool)
            .await?;
            $crate::ledger::mail::notifications_from_rows(rows)
        }

        async fn select_mails_of_notification(pool: &Pool, notification: &str) -> $crate::ledger::Result<Vec<$crate::ledger::Mail>> {
            let rows = sqlx::query_as(concat!(
                "SELECT ", $crate::ledger::mail::mail_columns!(),
                " FROM mails JOIN mail_notifications ON mail = id WHERE notification = $1 ORDER BY id"
            ))
            .bind(notification)
            .fetch_all(pool)
            .await?;
            $crate::ledger::mail::mails_from_rows(rows)
        }

        async fn select_notifications_of_request(pool: &Pool, request: $crate::ledger::RequestId) -> $crate::ledger::Result<Vec<$crate::ledger::Notification>> {
            let rows = sqlx::query_as(concat!(
                "SELECT ", $crate::ledger::mail::notification_columns!(), " FROM notifications WHERE request_id = $1 ORDER BY seq, id"
            ))
            .bind(request.0)
            .fetch_all(pool)
            .await?;
            $crate::ledger::mail::notifications_from_rows(rows)
        }

        /// An operator's retry (`failed`, `unconfirmed`, `deferred` → due now) or discard.
        async fn update_mail_by_operator(
            tx: &mut Conn,
            id: &str,
            discard: bool,
            at: chrono::DateTime<chrono::Utc>,
        ) -> std::result::Result<bool, sqlx::Error> {
            let done = if discard {
                sqlx::query(
                    "UPDATE mails SET status = 'discarded', updated_at = $1, claimed_by = NULL, claimed_until = NULL \
                     WHERE id = $2 AND status IN ('pending', 'deferred', 'failed', 'unconfirmed')",
                )
                .bind(stamp(at))
                .bind(id)
                .execute(&mut *tx)
                .await?
            } else {
                sqlx::query(
                    "UPDATE mails SET status = 'pending', next_attempt_at = $1, updated_at = $1, claimed_by = NULL, claimed_until = NULL \
                     WHERE id = $2 AND status IN ('deferred', 'failed', 'unconfirmed')",
                )
                .bind(stamp(at))
                .bind(id)
                .execute(&mut *tx)
                .await?
            };
            if done.rows_affected() == 1 && !discard {
                // The operator says the domain is worth a try now.
                sqlx::query("DELETE FROM mail_domains WHERE domain = (SELECT domain FROM mails WHERE id = $1)")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            Ok(done.rows_affected() == 1)
        }

        async fn select_mail_counts(pool: &Pool) -> $crate::ledger::Result<Vec<($crate::ledger::MailStatus, u64)>> {
            let rows: Vec<(String, i64)> = sqlx::query_as("SELECT status, COUNT(*) FROM mails GROUP BY status").fetch_all(pool).await?;
            let mut counts: Vec<($crate::ledger::MailStatus, u64)> = $crate::ledger::MailStatus::ALL.iter().map(|s| (*s, 0)).collect();
            for (status, n) in rows {
                let status: $crate::ledger::MailStatus = status.parse()?;
                if let Some(slot) = counts.iter_mut().find(|(s, _)| *s == status) {
                    slot.1 = u64::try_from(n).unwrap_or(0);
                }
            }
            Ok(counts)
        }

        async fn select_open_notification_count(pool: &Pool) -> $crate::ledger::Result<u64> {
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM notifications WHERE mail_id IS NULL AND skipped IS NULL").fetch_one(pool).await?;
            Ok(u64::try_from(n).unwrap_or(0))
        }
    };
}
pub(crate) use mail_statements;
