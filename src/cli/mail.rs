//! `amtsbote notifications`: the emails to requesting authorities, those that need an
//! operator (`--failed`: refused for good, given up, or unconfirmed after a crash), and the
//! operator's `retry` and `discard`.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::app::open_ledger;
use crate::config::Config;
use crate::ledger::{Ledger, Mail, Notification};

#[derive(Debug, Args)]
pub struct NotificationsArgs {
    #[command(subcommand)]
    action: Option<NotificationAction>,
    /// Only those an operator must look at: failed (refused for good, or given up) and
    /// unconfirmed (a crash while it was handed over: most likely accepted, not sent again).
    #[arg(long)]
    failed: bool,
    /// At most this many (newest first).
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// JSON for scripts: one object per email with its notifications.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum NotificationAction {
    /// Send a failed, unconfirmed or deferred email again now (its domain's wait is lifted).
    Retry { id: String },
    /// Do not send an email that has not been accepted.
    Discard { id: String },
}

pub async fn run(config: &Config, args: NotificationsArgs) -> anyhow::Result<ExitCode> {
    let ledger = open_ledger(config).await?;
    match args.action {
        Some(NotificationAction::Retry { id }) => act(&*ledger, &id, true).await,
        Some(NotificationAction::Discard { id }) => act(&*ledger, &id, false).await,
        None => list(&*ledger, args.failed, args.limit, args.json).await,
    }
}

async fn act(ledger: &dyn Ledger, id: &str, retry: bool) -> anyhow::Result<ExitCode> {
    let Some(mail) = ledger.mail(id).await? else {
        eprintln!("no email {id:?} in the ledger (amtsbote notifications lists them)");
        return Ok(ExitCode::from(1));
    };
    let done = if retry { ledger.retry_mail(id).await? } else { ledger.discard_mail(id).await? };
    if done {
        println!("{id}: {}", if retry { "due again now; a running serve sends it within its poll interval" } else { "discarded" });
        Ok(ExitCode::SUCCESS)
    } else {
        let can = if retry { "failed, unconfirmed or deferred" } else { "pending, deferred, failed or unconfirmed" };
        eprintln!("{id} is {}; only an email that is {can} can be {}", mail.status, if retry { "retried" } else { "discarded" });
        Ok(ExitCode::from(1))
    }
}

async fn list(ledger: &dyn Ledger, failed: bool, limit: u32, json: bool) -> anyhow::Result<ExitCode> {
    let mails = ledger.mails(failed, limit.clamp(1, 1000)).await?;
    let mut shown = Vec::with_capacity(mails.len());
    for mail in mails {
        let notifications = ledger.notifications_of_mail(&mail.id).await?;
        shown.push((mail, notifications));
    }
    if json {
        let value: Vec<serde_json::Value> = shown.iter().map(|(m, n)| mail_json(m, n)).collect();
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    if shown.is_empty() {
        println!("{}", if failed { "no email needs an operator" } else { "no emails yet" });
        return Ok(ExitCode::SUCCESS);
    }
    for (mail, notifications) in &shown {
        let what: Vec<String> = notifications.iter().map(|n| match n.request_id {
            Some(r) => format!("request {r} {}", n.event),
            None => format!("{} {}", n.event, n.received_message_id.as_deref().unwrap_or("")),
        }).collect();
        println!("{}  {}  to {}  tries {}  {}", mail.id, mail.status, mail.recipients.join(", "), mail.attempts, what.join("; "));
        if let Some(e) = &mail.last_error {
            println!("    {}", crate::intake::inbox::shown_str(e));
        }
    }
    if failed {
        println!("retry: amtsbote notifications retry ID; give up: amtsbote notifications discard ID");
    }
    Ok(ExitCode::SUCCESS)
}

/// An email as `notifications --json` and `request show --json` print it.
pub fn mail_json(mail: &Mail, notifications: &[Notification]) -> serde_json::Value {
    serde_json::json!({
        "id": mail.id,
        "tenant": mail.tenant,
        "status": mail.status,
        "recipients": mail.recipients,
        "digest": mail.digest,
        "attempts": mail.attempts,
        "next_attempt_at": mail.next_attempt_at,
        "last_error": mail.last_error,
        "created_at": mail.created_at,
        "accepted_at": mail.accepted_at,
        "notifications": notifications.iter().map(|n| serde_json::json!({
            "id": n.id, "event": n.event, "request": n.request_id, "received_message_id": n.received_message_id, "at": n.at,
        })).collect::<Vec<_>>(),
    })
}
