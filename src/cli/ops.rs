//! The operators' commands: migrate, config check, requests and their journals, queues and
//! jobs. They open the same databases `serve` uses and work while it runs.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use crate::app::{App, open_ledger, open_queues};
use crate::config::Config;
use crate::ledger::{ListFilter, Request, RequestId, RequestState};
use crate::queue::{Queue, QueueAdmin, load_job_configs};

pub async fn migrate(config: &Config) -> anyhow::Result<ExitCode> {
    open_ledger(config).await?;
    open_queues(config).await?;
    println!("ledger {} and queues {} are up to date", config.ledger_url(), config.queue_path().display());
    Ok(ExitCode::SUCCESS)
}

pub fn config_check(config: &Config) -> anyhow::Result<ExitCode> {
    config.checker().context("messages: code lists")?;
    load_job_configs(Some(&config.data_dir)).context("job settings (jobs/*.toml)")?;
    if let Some(url) = &config.xta.url {
        // Reads the TLS files: a missing one or a key that is not the certificate's shows here.
        crate::serve::xta_client(&config.xta, url, true)?;
    }
    if let Some(tls) = config.http.server_tls() {
        // The HTTP server's certificate and key, read as serve reads them.
        tls.rustls_config()?;
    }
    print!("{}", toml::to_string_pretty(config)?);
    eprintln!("configuration is valid");
    Ok(ExitCode::SUCCESS)
}

pub async fn request_show(config: &Config, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let Ok(id) = id.parse::<RequestId>() else {
        eprintln!("'{id}' is not a request id (a positive number)");
        return Ok(ExitCode::from(2));
    };
    let ledger = open_ledger(config).await?;
    let Some(request) = ledger.get(id).await? else {
        eprintln!("request {id} is not in the ledger");
        return Ok(ExitCode::from(1));
    };
    let journal = ledger.journal(id).await?;
    // The notifications about it, each with the email that carries it (if composed yet).
    let mut notifications = Vec::new();
    for n in ledger.notifications_of_request(id).await? {
        let mails = ledger.mails_of_notification(&n.id).await?;
        if mails.is_empty() {
            notifications.push((n, None));
        } else {
            for mail in mails {
                notifications.push((n.clone(), Some(mail)));
            }
        }
    }
    if json {
        let mut value = request_json(&request);
        value["journal"] = journal
            .iter()
            .map(|e| serde_json::json!({"seq": e.seq, "at": e.at, "from": e.from, "to": e.to, "actor": e.actor.to_string(), "detail": e.detail}))
            .collect();
        value["notifications"] = notifications
            .iter()
            .map(|(n, m)| serde_json::json!({
                "id": n.id, "event": n.event, "at": n.at, "skipped": n.skipped, "mail": m.as_ref().map(|m| m.id.clone()),
                "status": m.as_ref().map(|m| m.status), "recipients": m.as_ref().map(|m| m.recipients.clone()),
                "attempts": m.as_ref().map(|m| m.attempts), "last_error": m.as_ref().and_then(|m| m.last_error.clone()),
                "accepted_at": m.as_ref().and_then(|m| m.accepted_at),
            }))
            .collect();
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!("request {}  {}  tenant {}", request.id, request.state, request.tenant);
        println!("  kind      {}{}", request.kind, if request.test { " (test message)" } else { "" });
        if let Some(u) = &request.nachrichten_uuid {
            println!("  uuid      {u}");
        }
        // The source and file name hold the sender's file name: shown escaped, so a name with
        // a newline or a direction override cannot forge what is printed.
        println!("  source    {}", crate::intake::inbox::shown_str(&request.source));
        if let Some(name) = &request.file_name {
            println!("  file      {}", crate::intake::inbox::shown_str(name));
        }
        if !request.sha256.is_empty() {
            println!("  sha256    {}", request.sha256);
        }
        if let Some(d) = &request.state_detail {
            println!("  detail    {}", crate::intake::inbox::shown_str(d));
        }
        if let Some(r) = &request.routed {
            println!("  routed to {} {} via {}", r.kennung, r.name, r.channel);
            if let (Some(reader), service) = (&r.xta_reader, &r.xta_service) {
                println!("  xta       reader {reader}{}", service.as_deref().map(|s| format!(", service {s}")).unwrap_or_default());
            }
            println!("  directory {}", r.directory_generation);
        }
        if let Some(m) = &request.xta_message_id {
            println!("  xta id    {m}");
        }
        if request.attempts > 0 || request.next_attempt_at.is_some() {
            let next = request.next_attempt_at.map(|t| format!(", the next at {}", t.format("%Y-%m-%d %H:%M:%S UTC"))).unwrap_or_default();
            println!("  attempts  {} in this state{next}", request.attempts);
        }
        println!("  journal:");
        for e in &journal {
            let from = e.from.map_or("-".to_string(), |s| s.to_string());
            println!(
                "    {}  {from} → {}  by {}{}",
                e.at.format("%Y-%m-%d %H:%M:%S%.3f UTC"),
                e.to,
                e.actor,
                e.detail.as_deref().map(|d| format!(": {}", crate::intake::inbox::shown_str(d))).unwrap_or_default()
            );
        }
        if !notifications.is_empty() {
            println!("  notifications:");
            for (n, m) in &notifications {
                let how = match (m, &n.skipped) {
                    (Some(m), _) => {
                        let when = m.accepted_at.map(|t| format!(" {}", t.format("%Y-%m-%d %H:%M:%S UTC"))).unwrap_or_default();
                        let error = m.last_error.as_deref().map(|e| format!(" ({})", crate::intake::inbox::shown_str(e))).unwrap_or_default();
                        format!("{}{when} to {}, email {}{error}", m.status, m.recipients.join(", "), m.id)
                    }
                    (None, Some(why)) => format!("no email: {why}"),
                    (None, None) => "waiting to be sent".to_string(),
                };
                println!("    {:<12} {how}", n.event.as_str());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct RequestsArgs {
    /// Only requests in this state (received, validated, routed, …, rejected, unroutable, failed).
    #[arg(long)]
    state: Option<RequestState>,
    /// Only this tenant's requests.
    #[arg(long)]
    tenant: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// JSON for scripts: one object per request, as `request show --json` without the
    /// journal, in an array.
    #[arg(long)]
    json: bool,
}

/// A request as `request show --json` and `requests --json` print it (no payload).
fn request_json(r: &Request) -> serde_json::Value {
    serde_json::json!({
        "id": r.id,
        "tenant": r.tenant,
        "kind": r.kind,
        "state": r.state,
        "state_detail": r.state_detail,
        "nachrichten_uuid": r.nachrichten_uuid,
        "test": r.test,
        "source": r.source,
        "file_name": r.file_name,
        "routed": r.routed,
        "xta_message_id": r.xta_message_id,
        "attempts": r.attempts,
        "next_attempt_at": r.next_attempt_at,
        "created_at": r.created_at,
        "updated_at": r.updated_at,
    })
}

pub async fn requests(config: &Config, args: RequestsArgs) -> anyhow::Result<ExitCode> {
    let ledger = open_ledger(config).await?;
    let mut filter = ListFilter::default().limit(args.limit);
    if let Some(s) = args.state {
        filter = filter.state(s);
    }
    if let Some(t) = args.tenant {
        filter = filter.tenant(t);
    }
    let list = ledger.list(&filter).await?;
    if args.json {
        let values: Vec<serde_json::Value> = list.iter().map(request_json).collect();
        println!("{}", serde_json::to_string_pretty(&values)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:>8}  {:<14} {:<10} {:<38} updated (UTC)", "id", "state", "tenant", "kind");
    for r in &list {
        println!("{:>8}  {:<14} {:<10} {:<38} {}", r.id, r.state.as_str(), r.tenant, r.kind, r.updated_at.format("%Y-%m-%d %H:%M:%S"));
    }
    if list.is_empty() {
        eprintln!("no requests match");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn queues(config: &Config) -> anyhow::Result<ExitCode> {
    let store = open_queues(config).await?;
    let counts = store.admin().counts().await?;
    println!("{:<10} {:>9} {:>8} {:>7} {:>6} {:>7} {:>9} {:>15}", "queue", "pending", "running", "failed", "dead", "killed", "done", "oldest pending");
    for c in &counts {
        let oldest = if c.pending == 0 { "-".to_string() } else { format!("{} s", c.oldest_pending_secs) };
        println!("{:<10} {:>9} {:>8} {:>7} {:>6} {:>7} {:>9} {:>15}", c.queue.name(), c.pending, c.running, c.failed, c.dead, c.killed, c.done, oldest);
    }
    // What the workers did, how long jobs ran and waited: counted by the serve process,
    // read from its /metrics.
    println!();
    // An HTTPS serve is read trusting its own certificate (http.tls_cert) alone.
    let tls = match config.http.server_tls() {
        Some(server) => match crate::xta::tls::pinned_client_config(&server.identity.cert_chain) {
            Ok(client) => Some(std::sync::Arc::new(client)),
            Err(e) => {
                eprintln!("cannot read the serve's certificate to reach it over HTTPS: {e}");
                None
            }
        },
        None => None,
    };
    let scheme = if config.http.server_tls().is_some() { "https" } else { "http" };
    let metrics = match (config.http.server_tls(), tls) {
        (Some(_), None) => None,
        (_, tls) => read_metrics(&config.http.listen, crate::access::read_local_token(&config.data_dir), tls).await,
    };
    match metrics {
        Some(text) => {
            println!("as counted by the serve at {scheme}://{} since it started:", config.http.listen);
            println!("{:<10} {:>8} {:>8} {:>6} {:>8} {:>10} {:>10} {:>10} {:>10}", "queue", "done", "retried", "dead", "aborted", "run p50", "run p95", "lag p50", "lag p95");
            for c in &counts {
                let q = c.queue.name();
                let outcome = |o: &str| metric_value(&text, &format!("amtsbote_jobs_run_total{{queue=\"{q}\",outcome=\"{o}\"}}")).unwrap_or(0.0);
                let quantile = |name: &str, p: f64| histogram_quantile(&text, name, q, p).map_or("-".to_string(), format_seconds);
                println!(
                    "{:<10} {:>8} {:>8} {:>6} {:>8} {:>10} {:>10} {:>10} {:>10}",
                    q,
                    outcome("done"),
                    outcome("retried"),
                    outcome("dead"),
                    outcome("aborted"),
                    quantile("amtsbote_job_run_seconds", 0.5),
                    quantile("amtsbote_job_run_seconds", 0.95),
                    quantile("amtsbote_job_lag_seconds", 0.5),
                    quantile("amtsbote_job_lag_seconds", 0.95),
                );
            }
            if let Some(n) = metric_value(&text, "amtsbote_sweeper_retriggered_total").filter(|n| *n > 0.0) {
                println!("the sweeper re-triggered {n} requests that had lost their job (see the log)");
            }
            if let Some(state) = metric_value(&text, "amtsbote_xta_breaker_state") {
                let value = |name: &str| metric_value(&text, name).unwrap_or(0.0);
                let (name, meaning) = match state as u8 {
                    0 => ("closed", "calls go out"),
                    1 => ("open", "no calls go out for now: the server failed repeatedly; waiting work is scheduled for later"),
                    _ => ("half-open", "one probe call tests whether the server answers again"),
                };
                println!(
                    "XTA server: breaker {name} ({meaning}); opened {} times, {} calls held back, {} calls in flight",
                    value("amtsbote_xta_breaker_opened_total"),
                    value("amtsbote_xta_breaker_refused_total"),
                    value("amtsbote_xta_calls_in_flight")
                );
            }
        }
        None => println!(
            "run times, lag and outcomes: no serve answers at {scheme}://{} (http.listen); they are counted by a running serve (/metrics)",
            config.http.listen
        ),
    }
    // The intake stage's queue is its folders: what waits there, and who takes it in.
    println!();
    let patterns = crate::intake::inbox::Patterns::new(&config.intake.patterns).map_err(anyhow::Error::msg)?;
    println!("{:<10} {:>9} {:>11} {:>15} {:>10}  taken in by", "inbox", "waiting", "processing", "oldest waiting", "not taken");
    let mut left = Vec::new();
    for tenant in &config.tenants {
        let dirs = crate::intake::inbox::InboxDirs { tenant: tenant.id.clone(), inbox: tenant.inbox().to_path_buf() };
        let r = dirs.report(&patterns);
        let oldest = r.oldest_waiting.and_then(|t| t.elapsed().ok()).map_or("-".to_string(), |age| format!("{} s", age.as_secs()));
        let by = r.taken_in_by.unwrap_or_else(|| "nobody: no amtsbote serve takes this inbox in".into());
        println!("{:<10} {:>9} {:>11} {:>15} {:>10}  {by}", tenant.id, r.waiting, r.processing, oldest, r.not_taken);
        if r.not_taken > 0 {
            left.push(format!("{} ({})", dirs.inbox.display(), r.not_taken));
        }
    }
    if !left.is_empty() {
        println!(
            "not taken: files whose names match none of intake.patterns ({patterns}) stay in {}; rename them or add a pattern",
            left.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The text of `GET /metrics` from a serve at `listen`, if one answers within a second
/// (two over HTTPS, for the handshake). It shows the machine's local token, which `serve`
/// wrote into the data directory and accepts with an operator's rights
/// (`crate::access::local_token`). With `tls` it speaks HTTPS.
async fn read_metrics(listen: &str, token: Option<crate::access::Token>, tls: Option<std::sync::Arc<rustls::ClientConfig>>) -> Option<String> {
    let authorization = token.map(|t| format!("Authorization: Bearer {}\r\n", t.expose())).unwrap_or_default();
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {listen}\r\n{authorization}Connection: close\r\n\r\n");
    let limit = std::time::Duration::from_secs(if tls.is_some() { 2 } else { 1 });
    let attempt = async {
        let stream = tokio::net::TcpStream::connect(listen).await.ok()?;
        let raw = match tls {
            None => exchange(stream, &request).await?,
            Some(config) => {
                // The pinned verifier looks at the certificate, not at the name.
                let name = rustls_pki_types::ServerName::try_from("localhost").ok()?;
                let stream = tokio_rustls::TlsConnector::from(config).connect(name, stream).await.ok()?;
                exchange(stream, &request).await?
            }
        };
        let text = String::from_utf8(raw).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200").then(|| body.to_string())
    };
    tokio::time::timeout(limit, attempt).await.ok().flatten()
}

/// Writes `request` and reads the answer to its end. A TLS peer that closes without
/// `close_notify` ends the read with an error after the whole answer: what arrived counts.
async fn exchange(mut stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin, request: &str) -> Option<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    match stream.read_to_end(&mut raw).await {
        Ok(_) => Some(raw),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => Some(raw),
        Err(_) => None,
    }
}

/// The value of one series (`name{labels}`) in a Prometheus text.
fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The upper bound of the histogram bucket below which the share `p` of `queue`'s
/// observations lie; None without observations.
fn histogram_quantile(text: &str, name: &str, queue: &str, p: f64) -> Option<f64> {
    let prefix = format!("{name}_bucket{{queue=\"{queue}\",le=\"");
    let buckets: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (le, value) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((le, value.trim().parse().ok()?))
        })
        .collect();
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    buckets.iter().find(|(_, n)| *n >= p * total).map(|(le, _)| *le)
}

fn format_seconds(bound: f64) -> String {
    if bound.is_infinite() {
        "> 300 s".into()
    } else if bound < 1.0 {
        format!("≤ {} ms", (bound * 1000.0).round())
    } else {
        format!("≤ {bound} s")
    }
}

#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Only jobs that failed (attempts left, or dead).
    #[arg(long)]
    failed: bool,
    /// Only this queue.
    #[arg(long)]
    queue: Option<Queue>,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    limit: u32,
}

pub async fn jobs(config: &Config, args: JobsArgs) -> anyhow::Result<ExitCode> {
    let store = open_queues(config).await?;
    let admin: QueueAdmin = store.admin();
    let jobs = if args.failed {
        admin.list_failed(args.queue, args.limit).await?
    } else {
        admin.list_jobs(args.queue, &crate::queue::JobState::ALL, args.limit).await?
    };
    println!("{:<26}  {:<10} {:<8} {:>8}  last error", "id", "queue", "state", "attempts");
    for j in &jobs {
        println!(
            "{:<26}  {:<10} {:<8} {:>4}/{:<3}  {}",
            j.id,
            j.queue,
            j.state.name(),
            j.attempts,
            j.max_attempts,
            j.last_error.as_deref().unwrap_or("")
        );
    }
    if jobs.is_empty() {
        eprintln!("no jobs match");
    }
    Ok(ExitCode::SUCCESS)
}

/// What an operator does with one job.
#[derive(Debug, Clone, Copy)]
pub enum JobAction {
    Retry,
    Discard,
}

pub async fn job_action(config: &Config, id: &str, action: JobAction) -> anyhow::Result<ExitCode> {
    let admin = open_queues(config).await?.admin();
    let (result, verb, done) = match action {
        JobAction::Retry => (admin.retry(id).await, "retry", "will run again now"),
        JobAction::Discard => (admin.discard(id).await, "discard", "discarded"),
    };
    match result {
        Ok(job) => {
            println!("job {} ({}) {done}", job.id, job.queue);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("cannot {verb} job {id}: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

pub async fn route(config: &Config, id: &str) -> anyhow::Result<ExitCode> {
    let Ok(id) = id.parse::<RequestId>() else {
        eprintln!("'{id}' is not a request id (a positive number)");
        return Ok(ExitCode::from(2));
    };
    let router = App::open(config.clone()).await?.router();
    let Some(request) = router.ledger.get(id).await? else {
        eprintln!("request {id} is not in the ledger");
        return Ok(ExitCode::from(1));
    };
    if !matches!(request.state, RequestState::Unroutable | RequestState::Validated) {
        eprintln!("request {id} is {}; only validated or unroutable requests are routed", request.state);
        return Ok(ExitCode::from(1));
    }
    let operator = std::env::var("USER").unwrap_or_else(|_| "cli".into());
    let state = router.route(id, request.state, &crate::ledger::Actor::operator(operator)).await?;
    let detail = router.ledger.get(id).await?.and_then(|r| r.state_detail).unwrap_or_default();
    println!("request {id}: {state}: {detail}");
    Ok(if state == RequestState::Routed { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
