//! The notifications end to end: `serve` (the real binary) or the notify stage in-process,
//! against a real SMTP server on loopback (aiosmtpd, tests/support/smtp.rs) or writing .eml
//! files. What is asserted is what the requesting authority gets: each email once, at the
//! server, counted by Message-ID — across a server that is down, 4xx and 5xx answers, and a
//! SIGKILL during a burst.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use amtsbote::config::Config;
use amtsbote::ledger::{self, Actor, Ledger, MailStatus, NewRequest, Recorded, RequestState};
use amtsbote::queue::Queue;

#[path = "support/serve.rs"]
mod serve_support;
use serve_support::{Serve, wait_for};

#[path = "support/smtp.rs"]
mod smtp;
use smtp::SmtpServer;

const LEMGO: &str = "vbh:057660440000";

/// A configuration file with one tenant (`demo`, Lemgo) whose emails go to `notify`, plus
/// `extra` TOML for the tenant.
fn write_config(root: &Path, notify: &[&str], extra: &str) -> std::path::PathBuf {
    let file = root.join("amtsbote.toml");
    let notify: Vec<String> = notify.iter().map(|a| format!("\"{a}\"")).collect();
    let text = format!(
        "[mail]\nfrom = \"amtsbote@kasse.example\"\ncontact = \"Leitstelle, Tel. 05261 213-0\"\n\n\
         [[tenants]]\nid = \"demo\"\nname = \"Stadt Lemgo\"\nkennung = \"{LEMGO}\"\nnotify = [{}]\n{extra}\n",
        notify.join(", ")
    );
    std::fs::write(&file, text).unwrap();
    file
}

/// jobs/notify.toml with retries after `secs` (the shipped file waits minutes).
fn quick_notify_jobs(root: &Path, secs: f64) {
    let jobs = root.join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    std::fs::write(jobs.join("notify.toml"), serve_support::quick_backoff(Queue::Notify, secs).replace("poll_interval_ms = 500", "poll_interval_ms = 50")).unwrap();
}

/// `n` files the intake rejects (not XML): each a request in `rejected`, worth an email.
fn drop_junk(inbox: &Path, from: u32, n: u32) {
    std::fs::create_dir_all(inbox).unwrap();
    let staging = inbox.parent().unwrap().join("staging-junk");
    std::fs::create_dir_all(&staging).unwrap();
    for k in from..from + n {
        std::fs::write(staging.join(format!("j{k:05}.xml")), format!("not a message {k}")).unwrap();
    }
    for k in from..from + n {
        std::fs::rename(staging.join(format!("j{k:05}.xml")), inbox.join(format!("j{k:05}.xml"))).unwrap();
    }
}

async fn open_ledger(root: &Path) -> Arc<dyn Ledger> {
    ledger::open(&format!("sqlite:{}", root.join("ledger.sqlite").display())).await.unwrap()
}

async fn mails_in(l: &dyn Ledger, status: MailStatus) -> u64 {
    l.mail_counts().await.unwrap().into_iter().find(|(s, _)| *s == status).map_or(0, |(_, n)| n)
}

fn serve_with_smtp(root: &Path, server: &SmtpServer, notify: &[&str], extra: &str) -> Serve {
    let config = write_config(root, notify, extra);
    Serve::new(root, &format!("sqlite:{}", root.join("ledger.sqlite").display()))
        .env("AMTSBOTE_CONFIG", config.to_str().unwrap())
        .env("AMTSBOTE_SMTP_URL", &server.url())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_email_of_a_burst_arrives_once_though_the_server_was_down_at_first() {
    let root = tempfile::tempdir().unwrap();
    let mut server = SmtpServer::start();
    server.stop();
    quick_notify_jobs(root.path(), 1.0);
    let serve = serve_with_smtp(root.path(), &server, &["kasse@lemgo.example"], "");
    let _child = serve.start_and_wait().await;
    let ledger = open_ledger(root.path()).await;
    drop_junk(&root.path().join("inbox/demo"), 0, 500);
    // The server is down: the emails are deferred, none is lost.
    wait_for(Duration::from_secs(120), "500 rejections and deferred emails", || async {
        serve_support::count(&*ledger, RequestState::Rejected).await == 500 && mails_in(&*ledger, MailStatus::Deferred).await > 0
    })
    .await;
    server.start_again();
    wait_for(Duration::from_secs(180), "500 emails accepted", || async { mails_in(&*ledger, MailStatus::Accepted).await == 500 }).await;
    let counts = server.count_by_message_id();
    assert_eq!(counts.len(), 500, "one Message-ID per rejected request");
    assert!(counts.values().all(|n| *n == 1), "an email arrived twice: {:?}", counts.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>());
    assert!(counts.keys().all(|id| id.starts_with('r') && id.ends_with("-rejected@kasse.example")), "{:?}", counts.keys().next());
}

/// `smtp.pool_size` caps the connections to the server: with 1, a burst goes out over one
/// connection, though `jobs/notify.toml` asks for 4 senders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stage_holds_no_more_connections_than_smtp_pool_size() {
    let root = tempfile::tempdir().unwrap();
    let server = SmtpServer::start();
    quick_notify_jobs(root.path(), 1.0);
    let serve = serve_with_smtp(root.path(), &server, &["kasse@lemgo.example"], "").env("AMTSBOTE_SMTP_POOL_SIZE", "1");
    let _child = serve.start_and_wait().await;
    let ledger = open_ledger(root.path()).await;
    drop_junk(&root.path().join("inbox/demo"), 0, 200);
    wait_for(Duration::from_secs(120), "200 emails accepted", || async { mails_in(&*ledger, MailStatus::Accepted).await == 200 }).await;
    assert_eq!(server.count_by_message_id().len(), 200);
    assert_eq!(server.connections_opened(), 1, "one sender on one connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_killed_during_a_burst_loses_no_email_and_sends_none_twice() {
    let root = tempfile::tempdir().unwrap();
    let server = SmtpServer::start();
    quick_notify_jobs(root.path(), 1.0);
    let serve = serve_with_smtp(root.path(), &server, &["kasse@lemgo.example"], "");
    let ledger = open_ledger(root.path()).await;
    {
        let mut child = serve.start_and_wait().await;
        drop_junk(&root.path().join("inbox/demo"), 0, 500);
        let got = server.wait_for_messages(60, Duration::from_secs(120));
        assert!(got >= 60, "the burst did not start going out ({got})");
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let at_kill = server.messages().len();
    assert!(at_kill < 500, "the kill came after the burst ({at_kill}): it proves nothing");
    let _child = serve.start_and_wait().await;
    wait_for(Duration::from_secs(180), "every email accepted or unconfirmed", || async {
        serve_support::count(&*ledger, RequestState::Rejected).await == 500
            && mails_in(&*ledger, MailStatus::Accepted).await + mails_in(&*ledger, MailStatus::Unconfirmed).await == 500
    })
    .await;
    let counts = server.count_by_message_id();
    assert!(counts.values().all(|n| *n == 1), "sent twice: {:?}", counts.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>());
    assert_eq!(counts.len(), 500, "every notification arrived ({} unconfirmed)", mails_in(&*ledger, MailStatus::Unconfirmed).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_later_is_tried_again_refused_is_failed_for_an_operator_and_a_dead_domain_holds_up_no_other() {
    let root = tempfile::tempdir().unwrap();
    let server = SmtpServer::start();
    quick_notify_jobs(root.path(), 1.0);
    // Three recipients for each notification, three domains, three emails: one accepted after
    // two 451s, one refused (550), one whose whole domain is down.
    let serve = serve_with_smtp(root.path(), &server, &["fail451x2@lemgo.example", "fail550@koeln.example", "kasse@down.test"], "");
    let _child = serve.start_and_wait().await;
    let ledger = open_ledger(root.path()).await;
    drop_junk(&root.path().join("inbox/demo"), 0, 1);
    for _ in 0..600 {
        if mails_in(&*ledger, MailStatus::Accepted).await == 1 && mails_in(&*ledger, MailStatus::Failed).await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all = ledger.mails(false, 10).await.unwrap();
    assert!(mails_in(&*ledger, MailStatus::Accepted).await == 1 && mails_in(&*ledger, MailStatus::Failed).await == 1, "{all:#?}");
    // One email per domain, the domains in order: down.test, koeln.example, lemgo.example.
    let id = "r1-1-rejected";
    let accepted = ledger.mail(&format!("{id}.3")).await.unwrap().unwrap();
    assert_eq!((accepted.domain.as_str(), accepted.status, accepted.attempts), ("lemgo.example", MailStatus::Accepted, 2), "two 451s, then accepted");
    let refused = ledger.mail(&format!("{id}.2")).await.unwrap().unwrap();
    assert_eq!((refused.domain.as_str(), refused.status, refused.attempts), ("koeln.example", MailStatus::Failed, 1));
    assert!(refused.last_error.as_deref().is_some_and(|e| e.contains("550")), "{:?}", refused.last_error);
    let down = ledger.mail(id).await.unwrap().unwrap();
    assert_eq!((down.domain.as_str(), down.status), ("down.test", MailStatus::Deferred), "its domain waits; the others went on");
    assert_eq!(server.count_by_message_id().get(&format!("{id}.3@kasse.example")), Some(&1));

    // The operator's view and actions.
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_amtsbote"))
            .args(args)
            .env("AMTSBOTE_CONFIG", root.path().join("amtsbote.toml"))
            .env("AMTSBOTE_DATA_DIR", root.path())
            .env("AMTSBOTE_LOG", "warn")
            .output()
            .unwrap()
    };
    let failed = cli(&["notifications", "--failed"]);
    let text = String::from_utf8_lossy(&failed.stdout);
    assert!(failed.status.success());
    assert!(text.contains(&format!("{id}.2")) && text.contains("failed") && text.contains("550"), "{text}");
    assert!(!text.contains("down.test"), "a deferred email is not an operator's yet: {text}");
    let show = cli(&["request", "show", "1"]);
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(text.contains("notifications:") && text.contains("accepted") && text.contains("fail451x2@lemgo.example"), "{text}");
    let discard = cli(&["notifications", "discard", &format!("{id}.2")]);
    assert!(discard.status.success(), "{}", String::from_utf8_lossy(&discard.stderr));
    assert_eq!(ledger.mail(&format!("{id}.2")).await.unwrap().unwrap().status, MailStatus::Discarded);
    let again = cli(&["notifications", "retry", &format!("{id}.3")]);
    assert_eq!(again.status.code(), Some(1), "an accepted email cannot be retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_template_stops_serve_with_its_file_and_line() {
    let root = tempfile::tempdir().unwrap();
    let templates = root.path().join("templates/mail");
    std::fs::create_dir_all(&templates).unwrap();
    std::fs::write(templates.join("rejected.txt"), "Guten Tag,\n\n{% if item.reasons %}\nGründe\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_amtsbote"))
        .arg("serve")
        .env("AMTSBOTE_DATA_DIR", root.path())
        .env("AMTSBOTE_HTTP_LISTEN", serve_support::free_port())
        .env("AMTSBOTE_LOG", "warn")
        .env_remove("AMTSBOTE_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let path = templates.join("rejected.txt");
    assert!(stderr.contains(&format!("{}:", path.display())), "names the file: {stderr}");
    assert!(stderr.contains("rejected.txt:4") || stderr.contains("rejected.txt:3"), "names the line: {stderr}");
}

/// A tenant with a digest window: events within it go out as one email listing them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_sends_the_events_of_its_window_as_one_email() {
    let root = tempfile::tempdir().unwrap();
    let file = write_config(root.path(), &["kasse@lemgo.example"], "digest_minutes = 5");
    let mut config = Config::load_with(Some(&file), &[("AMTSBOTE_DATA_DIR".into(), root.path().display().to_string())]).unwrap();
    config.data_dir = root.path().to_path_buf();
    let app = amtsbote::app::App::open(config).await.unwrap();
    let mut jobs = app.queues.configs().get(Queue::Notify).clone();
    jobs.poll_interval_ms = 20;
    let notifier = Arc::new(amtsbote::mail::notify::notifier(&app, jobs).unwrap());
    for k in 0..5 {
        let payload = format!("junk {k}").into_bytes();
        let new = NewRequest {
            tenant: "demo".into(),
            source: format!("test:{k}"),
            sha256: format!("{k:064}"),
            nachrichten_uuid: None,
            kind: "unknown".into(),
            test: false,
            payload,
            file_name: None,
        };
        let recorded = app.ledger.record(new, RequestState::Rejected, &Actor::system("intake"), Some("not XML")).await.unwrap();
        assert!(matches!(recorded, Recorded::New(_)));
    }
    let now = chrono::Utc::now();
    let early = notifier.compose_once(now).await.unwrap();
    assert_eq!(early.mails, 0, "the window is still open");
    let late = notifier.compose_once(now + chrono::Duration::minutes(6)).await.unwrap();
    assert_eq!(late.mails, 1, "one digest for the five");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(amtsbote::mail::notify::run(notifier.clone(), stop_rx));
    let eml = root.path().join("mail/d-r1-1-rejected.eml");
    wait_for(Duration::from_secs(30), "the digest written", || async { eml.exists() }).await;
    stop_tx.send(true).unwrap();
    task.await.unwrap().unwrap();
    let text = std::fs::read_to_string(&eml).unwrap();
    assert!(text.contains("Message-ID: <d-r1-1-rejected@kasse.example>"), "{text}");
    let mail = app.ledger.mail("d-r1-1-rejected").await.unwrap().unwrap();
    assert!(mail.digest);
    assert_eq!(app.ledger.notifications_of_mail(&mail.id).await.unwrap().len(), 5);
    let files: Vec<_> = std::fs::read_dir(root.path().join("mail")).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".eml")).collect();
    assert_eq!(files.len(), 1, "one email, not five");
}

/// The embedded default: a request that goes out over XTA (the built-in simulator) tells
/// its requester twice — transmitted, then delivered — as .eml files to the `email` the
/// request names (the sample tenant has no notify addresses).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_sent_over_xta_tells_its_requester_when_it_went_and_when_it_was_fetched() {
    let root = tempfile::tempdir().unwrap();
    let serve = Serve::new(root.path(), &format!("sqlite:{}", root.path().join("ledger.sqlite").display())).env("AMTSBOTE_MAIL_FROM", "amtsbote@kasse.example");
    let _child = serve.start_and_wait().await;
    let ledger = open_ledger(root.path()).await;
    serve_support::drop_requests(root.path(), &root.path().join("inbox/demo"), 1, 1);
    let mail = root.path().join("mail");
    wait_for(Duration::from_secs(120), "two emails", || async { serve_support::files_in(&mail) == 2 }).await;
    let request = ledger.get(ledger::RequestId(1)).await.unwrap().unwrap();
    assert_eq!(request.state, RequestState::Delivered);
    let xta_id = request.xta_message_id.clone().unwrap();
    for n in ledger.notifications_of_request(request.id).await.unwrap() {
        let raw = std::fs::read(mail.join(format!("{}.eml", n.id))).unwrap();
        let text = String::from_utf8_lossy(&quoted_printable::decode(&raw, quoted_printable::ParseMode::Robust).unwrap()).into_owned();
        assert!(text.contains(&format!("Message-ID: <{}@kasse.example>", n.id)), "{text}");
        assert!(text.contains("To: stadtkasse@lemgo.example"), "the requester's own address: {text}");
        assert!(text.contains(&xta_id), "the XTA MessageID: {text}");
        assert!(text.contains("Content-Type: text/plain") && text.contains("Content-Type: text/html"), "both parts: {text}");
    }
    let events: Vec<_> = ledger.notifications_of_request(request.id).await.unwrap().into_iter().map(|n| n.event).collect();
    assert_eq!(events, [ledger::NotifyEvent::Transmitted, ledger::NotifyEvent::Delivered]);
}
