//! Benchmark: emails per second to the local SMTP server (aiosmtpd, tests/support/
//! smtp_server.py, plain SMTP on loopback) through [`Mailer::send`] over its pooled
//! connections, against the server's own acceptance rate.
//!
//! Run: `cargo bench --bench mail` (1,000 and 10,000 emails; `-- --full` adds 100,000;
//! `-- --smoke` or `MAIL_BENCH_SMOKE=1` runs 200 only). Run as a test (`cargo test --bench
//! mail`, no `--bench` argument) it is the smoke run, checking that every email arrives once.
//!
//! For each N, on one server (its store keeps every message):
//! - baseline, first: a bare client loop, no lettre — `smtp.pool_size` (4) raw connections,
//!   each EHLO once, then MAIL FROM / RCPT TO / DATA / the message / its 250 per email, no
//!   pipelining, N emails shared among them: the rate the server itself accepts at.
//! - timed: N emails through one [`Mailer`] (`smtp.pool_size` 4), from as many tasks as the
//!   pool has connections, each building its email (`lettre::Message::builder`, ~600 bytes,
//!   its own Message-ID) and awaiting `send`.
//! - the notify stage, as `serve` runs it ([`amtsbote::mail::notify::run`]: composer and
//!   `jobs/notify.toml`'s senders, with its durable SQLite ledger): N notifications are made
//!   first (N requests recorded as rejected, each worth one email to the tenant's address),
//!   then the stage is started and timed until its counter says N emails were accepted. So
//!   this includes what the stage adds to a send: composing (one email per notification,
//!   written in the ledger), claiming batches, rendering the templates, the send log, and
//!   writing each outcome back.
//! - checked: every email of the three stored once by the server, counted by Message-ID.
//!
//! Goal (issue 11): ≥ 500 emails/s, or ≥ 80 % of the server's own rate where that is lower —
//! through the stage, not only through `Mailer::send`.

#[path = "support/sizes.rs"]
mod sizes;
#[path = "../tests/support/smtp.rs"]
mod smtp;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Instant;

use amtsbote::config::Config;
use amtsbote::ledger::{Actor, NewRequest, RequestState};
use amtsbote::mail::smtp::{Mailer, Outcome};
use amtsbote::queue::Queue;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const RCPT: &str = "stadtkasse@lemgo.test";
const FROM: &str = "noreply@amtsbote.test";
const BODY: &str = "Ihr Ersuchen 4711 (Aktenzeichen 2026/0815) wurde am 01.12.2026 um 10:15 Uhr an das Vollstreckungsamt der Stadt Köln übermittelt (XTA MessageID urn:de:xta:messageid:abc).\nBei Fragen wenden Sie sich an die Stadtkasse Lemgo, Telefon 05261 213-0.\n";

fn message(id: &str) -> lettre::Message {
    lettre::Message::builder()
        .message_id(Some(format!("<{id}@amtsbote.test>")))
        .from(format!("amtsbote <{FROM}>").parse().expect("an address"))
        .to(RCPT.parse().expect("an address"))
        .subject("Ersuchen 4711: übermittelt")
        .body(BODY.to_string())
        .expect("a message")
}

/// Reads one SMTP reply (all its lines); returns its code.
async fn reply(reader: &mut BufReader<TcpStream>) -> std::io::Result<u16> {
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the server closed the connection"));
        }
        if line.len() < 4 || line.as_bytes()[3] != b'-' {
            return line.get(..3).and_then(|c| c.parse().ok()).ok_or_else(|| std::io::Error::other(format!("not an SMTP reply: {line:?}")));
        }
    }
}

async fn command(reader: &mut BufReader<TcpStream>, text: &[u8], want: u16) -> std::io::Result<()> {
    reader.get_mut().write_all(text).await?;
    match reply(reader).await? {
        code if code == want => Ok(()),
        code => Err(std::io::Error::other(format!("{} answered {code}", String::from_utf8_lossy(text).trim()))),
    }
}

/// The bare client loop: `connections` connections, `n` emails shared among them.
async fn baseline(port: u16, n: usize, connections: usize, tag: &str) -> f64 {
    // The same bytes lettre sends for one email, its Message-ID made unique per email.
    let template = String::from_utf8(message("ID").formatted()).expect("ASCII");
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let loops: Vec<_> = (0..connections)
        .map(|_| {
            let (next, template, tag) = (next.clone(), template.clone(), tag.to_string());
            tokio::spawn(async move {
                let stream = TcpStream::connect(("127.0.0.1", port)).await?;
                // Each command is one write: no waiting for the ACK of the one before.
                stream.set_nodelay(true)?;
                let mut reader = BufReader::new(stream);
                assert_eq!(reply(&mut reader).await?, 220);
                command(&mut reader, b"EHLO bench.test\r\n", 250).await?;
                loop {
                    let i = next.fetch_add(1, Relaxed);
                    if i >= n {
                        break;
                    }
                    command(&mut reader, format!("MAIL FROM:<{FROM}>\r\n").as_bytes(), 250).await?;
                    command(&mut reader, format!("RCPT TO:<{RCPT}>\r\n").as_bytes(), 250).await?;
                    command(&mut reader, b"DATA\r\n", 354).await?;
                    let data = template.replace("<ID@amtsbote.test>", &format!("<{tag}-{i}@amtsbote.test>"));
                    // lettre's formatted message ends with CRLF and has no lone dots to stuff;
                    // the message and its end in one write.
                    command(&mut reader, format!("{data}.\r\n").as_bytes(), 250).await?;
                }
                command(&mut reader, b"QUIT\r\n", 221).await?;
                Ok::<_, std::io::Error>(())
            })
        })
        .collect();
    for l in loops {
        l.await.expect("a client loop").expect("the bare client loop");
    }
    start.elapsed().as_secs_f64()
}

/// `n` emails through `mailer` from `tasks` tasks; returns the seconds and the outcomes that
/// were not Accepted.
async fn through_mailer(mailer: Arc<Mailer>, n: usize, tasks: usize, tag: &str) -> (f64, Vec<Outcome>) {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let senders: Vec<_> = (0..tasks)
        .map(|_| {
            let (mailer, next, tag) = (mailer.clone(), next.clone(), tag.to_string());
            tokio::spawn(async move {
                let mut failed = Vec::new();
                loop {
                    let i = next.fetch_add(1, Relaxed);
                    if i >= n {
                        return failed;
                    }
                    let id = format!("{tag}-{i}");
                    let outcome = mailer.send(&message(&id), &id).await;
                    if outcome != Outcome::Accepted {
                        failed.push(outcome);
                    }
                }
            })
        })
        .collect();
    let mut failed = Vec::new();
    for s in senders {
        failed.extend(s.await.expect("a sender"));
    }
    (start.elapsed().as_secs_f64(), failed)
}

/// The tenant's address in the stage's run (the server takes any).
const STAGE_RCPT: &str = "kasse@lemgo.test";

/// The notify stage on `n` notifications (see the module doc), in a fresh data directory;
/// its Message-IDs end in `@<domain>`. Returns the seconds from the stage's start until it
/// had `n` emails accepted, and what went wrong.
async fn through_stage(smtp: amtsbote::config::SmtpConfig, n: usize, domain: &str) -> (f64, Vec<String>) {
    let root = tempfile::tempdir().expect("a temporary folder");
    let file = root.path().join("amtsbote.toml");
    let text = format!(
        "[mail]\nfrom = \"{FROM}\"\nmessage_id_domain = \"{domain}\"\n\n\
         [[tenants]]\nid = \"demo\"\nname = \"Stadt Lemgo\"\nkennung = \"vbh:057660440000\"\nnotify = [\"{STAGE_RCPT}\"]\n"
    );
    std::fs::write(&file, text).expect("the config file");
    let mut config = Config::load_with(Some(&file), &[("AMTSBOTE_DATA_DIR".into(), root.path().display().to_string())]).expect("the config");
    config.data_dir = root.path().to_path_buf();
    config.smtp = smtp;
    let app = amtsbote::app::App::open(config).await.expect("the app");
    // The notifications: n requests rejected, recorded from 64 tasks at once (the ledger
    // commits them in groups).
    let writers: Vec<_> = (0..64)
        .map(|w| {
            let ledger = app.ledger.clone();
            tokio::spawn(async move {
                for k in (w..n).step_by(64) {
                    let new = NewRequest {
                        tenant: "demo".into(),
                        source: format!("bench:{k}"),
                        sha256: format!("{k:064}"),
                        nachrichten_uuid: None,
                        kind: "unknown".into(),
                        test: false,
                        payload: format!("not a message {k}").into_bytes(),
                        file_name: None,
                    };
                    ledger.record(new, RequestState::Rejected, &Actor::system("intake"), Some("not XML")).await.expect("a request recorded");
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("a writer");
    }
    let open = app.ledger.open_notification_count().await.expect("the open notifications");
    let mut problems = Vec::new();
    if open != n as u64 {
        problems.push(format!("{open} notifications open before the stage, expected {n}"));
    }
    let jobs = app.queues.configs().get(Queue::Notify).clone();
    let notifier = std::sync::Arc::new(amtsbote::mail::notify::notifier(&app, jobs).expect("the notify stage"));
    let counters = notifier.counters.clone();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let start = Instant::now();
    let stage = tokio::spawn(amtsbote::mail::notify::run(notifier, stop_rx));
    let budget = std::time::Duration::from_secs(600);
    while counters.accepted.load(Relaxed) < n as u64 && start.elapsed() < budget && !stage.is_finished() {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let accepted = counters.accepted.load(Relaxed);
    if accepted != n as u64 {
        problems.push(format!("the stage had {accepted} of {n} emails accepted after {secs:.0} s"));
    }
    for (what, c) in [("deferred", &counters.deferred), ("failed", &counters.failed), ("unconfirmed", &counters.unconfirmed), ("skipped", &counters.skipped)] {
        let c = c.load(Relaxed);
        if c > 0 {
            problems.push(format!("the stage counted {c} {what}"));
        }
    }
    let _ = stop_tx.send(true);
    match stage.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => problems.push(format!("the stage stopped: {e:#}")),
        Err(e) => problems.push(format!("the stage panicked: {e}")),
    }
    (secs, problems)
}

struct Row {
    n: usize,
    baseline: f64,
    mailer: f64,
    stage: f64,
    problems: Vec<String>,
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

fn main() {
    let Some(sizes::Sizes { smoke, mut sizes }) = sizes::from_args("MAIL_BENCH_SMOKE") else { return };
    if !std::env::args().any(|a| a == "--full") {
        sizes.retain(|&n| n <= 10_000);
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("AMTSBOTE_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")))
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let server = smtp::SmtpServer::start();
    let config = server.config();
    let pool = config.pool_size as usize;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mailer = {
        let _guard = runtime.enter();
        Arc::new(Mailer::from_config(&config, std::path::Path::new(".")).expect("the mailer"))
    };
    println!("amtsbote mail benchmark — Mailer::send to aiosmtpd on loopback (plain SMTP, one file stored per accepted email); tokio with 2 worker threads, {cores} cores");
    println!("mailer: {}", mailer.describe());
    println!("each email: {} bytes (lettre::Message, one recipient); {pool} tasks send at once (the pool size)", message("mail-0").formatted().len());
    println!("baseline: a bare SMTP client loop on {pool} raw connections (EHLO once; MAIL, RCPT, DATA, message, 250 per email; no lettre), measured first");
    println!("stage: the notify stage on as many notifications (jobs/notify.toml's senders, the templates, durable SQLite ledger), timed from its start to the last email accepted\n");
    println!("{:>8} | {:>17} | {:>10} {:>10} | {:>8} | {:>10} {:>10} | {:>8}", "emails", "baseline emails/s", "Mailer s", "emails/s", "vs base", "stage s", "emails/s", "vs base");

    let mut rows = Vec::new();
    let mut stored = 0;
    for (round, &n) in sizes.iter().enumerate() {
        let base_tag = format!("base{round}");
        let mail_tag = format!("mail{round}");
        let base_secs = runtime.block_on(baseline(server.port, n, pool, &base_tag));
        let (secs, failed) = runtime.block_on(through_mailer(mailer.clone(), n, pool, &mail_tag));
        let mut problems: Vec<String> = failed.iter().take(3).map(|o| format!("{o:?}")).collect();
        if failed.len() > 3 {
            problems.push(format!("… {} not accepted in all", failed.len()));
        }
        let stage_domain = format!("stage{round}.test");
        let (stage_secs, stage_problems) = runtime.block_on(through_stage(config.clone(), n, &stage_domain));
        problems.extend(stage_problems);
        // Every email of the three stored once.
        stored += 3 * n;
        let got = server.wait_for_messages(stored, std::time::Duration::from_secs(10));
        let counts = server.count_by_message_id();
        for tag in [&base_tag, &mail_tag] {
            let once = (0..n).filter(|i| counts.get(&format!("{tag}-{i}@amtsbote.test")) == Some(&1)).count();
            if once != n {
                problems.push(format!("{tag}: {once} of {n} stored exactly once"));
            }
        }
        // The stage's Message-IDs: r<request>-1-rejected@<its domain>, requests 1..=n.
        let once = (1..=n).filter(|r| counts.get(&format!("r{r}-1-rejected@{stage_domain}")) == Some(&1)).count();
        if once != n {
            problems.push(format!("stage: {once} of {n} stored exactly once"));
        }
        if got != stored {
            problems.push(format!("the server stored {got} emails, expected {stored}"));
        }
        let row = Row { n, baseline: n as f64 / base_secs, mailer: n as f64 / secs, stage: n as f64 / stage_secs, problems };
        println!(
            "{:>8} | {:>17.0} | {:>10.2} {:>10.0} | {:>7.0}% | {:>10.2} {:>10.0} | {:>7.0}%",
            row.n,
            row.baseline,
            secs,
            row.mailer,
            100.0 * row.mailer / row.baseline,
            stage_secs,
            row.stage,
            100.0 * row.stage / row.baseline
        );
        rows.push(row);
    }
    let ok = rows.iter().all(|r| r.stage >= 500f64.min(0.8 * r.baseline));
    println!(
        "\ngoal, through the stage: ≥ 500 emails/s, or ≥ 80 % of the server's own rate where that is lower: {} ({})",
        verdict(ok),
        rows.iter().map(|r| format!("{}: {:.0}/s of {:.0}/s", r.n, r.stage, r.baseline)).collect::<Vec<_>>().join(", ")
    );
    let mut failed = false;
    for r in &rows {
        for p in &r.problems {
            println!("* {}: {p}", r.n);
            failed = true;
        }
    }
    // The pool's connections are closed inside the runtime.
    runtime.block_on(async move { drop(mailer) });
    if smoke {
        assert!(!failed, "the smoke run must deliver every email exactly once");
        println!("\nmail smoke: {n} emails through Mailer::send, {n} through the notify stage and {n} through the bare loop, each accepted and stored once (run `cargo bench --bench mail` to measure)", n = sizes[0]);
    }
}
