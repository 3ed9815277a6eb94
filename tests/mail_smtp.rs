//! `mail::smtp::Mailer` against a real SMTP server on loopback (aiosmtpd, tests/support/
//! smtp_server.py): what is accepted arrives with its Message-ID, 4xx and connection faults
//! are transient, 5xx permanent; STARTTLS and implicit TLS with the test CA, a foreign CA,
//! AUTH; the embedded `.eml` mode; many sends at once over the pool arrive once each.

#[path = "support/smtp.rs"]
mod smtp;

use std::path::Path;

use amtsbote::config::SmtpConfig;
use amtsbote::mail::smtp::{Mailer, Outcome};
use smtp::{Options, Security, SmtpServer};

fn message(id: &str, to: &str) -> lettre::Message {
    lettre::Message::builder()
        .message_id(Some(format!("<{id}@amtsbote.test>")))
        .from("amtsbote <noreply@amtsbote.test>".parse().unwrap())
        .to(to.parse().unwrap())
        .subject("Ersuchen 42: übermittelt")
        .body(String::from("Ihr Ersuchen wurde übermittelt.\n"))
        .unwrap()
}

fn mailer(cfg: &SmtpConfig) -> Mailer {
    Mailer::from_config(cfg, Path::new("/nonexistent")).unwrap()
}

fn transient(outcome: Outcome) -> String {
    match outcome {
        Outcome::Transient(why) => why,
        other => panic!("expected a transient outcome, got {other:?}"),
    }
}

fn permanent(outcome: Outcome) -> String {
    match outcome {
        Outcome::Permanent(why) => why,
        other => panic!("expected a permanent outcome, got {other:?}"),
    }
}

#[tokio::test]
async fn an_accepted_email_arrives_with_its_message_id() {
    let server = SmtpServer::start();
    let mailer = mailer(&server.config());
    assert_eq!(mailer.send(&message("n-1-transmitted", "stadtkasse@lemgo.test"), "n-1-transmitted").await, Outcome::Accepted);
    let got = server.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message_id, "n-1-transmitted@amtsbote.test");
    assert_eq!(got[0].rcpt, vec!["stadtkasse@lemgo.test"]);
    assert_eq!(got[0].mail_from, "noreply@amtsbote.test");
    let raw = String::from_utf8_lossy(&got[0].raw);
    assert!(raw.contains("Message-ID: <n-1-transmitted@amtsbote.test>"), "{raw}");
}

#[tokio::test]
async fn a_4xx_is_transient_with_its_code_and_a_5xx_permanent() {
    let server = SmtpServer::start();
    let mailer = mailer(&server.config());
    let why = transient(mailer.send(&message("a", "fail451@lemgo.test"), "a").await);
    assert!(why.contains("451") && why.contains("try again later"), "{why}");
    assert!(!why.contains("übermittelt"), "no message content in the reason: {why}");
    let why = transient(mailer.send(&message("b", "jemand@down.test"), "b").await);
    assert!(why.contains("451"), "{why}");
    let why = permanent(mailer.send(&message("c", "fail550@lemgo.test"), "c").await);
    assert!(why.contains("550") && why.contains("no such mailbox"), "{why}");
    let why = permanent(mailer.send(&message("d", "fail552@lemgo.test"), "d").await);
    assert!(why.contains("552"), "{why}");
    assert!(server.messages().is_empty());
    // The pool keeps working after the refusals.
    assert_eq!(mailer.send(&message("e", "stadtkasse@lemgo.test"), "e").await, Outcome::Accepted);
    assert_eq!(server.messages().len(), 1);
}

#[tokio::test]
async fn a_4xx_twice_then_accepted_arrives_once() {
    let server = SmtpServer::start();
    let mailer = mailer(&server.config());
    let m = message("n-7-delivered", "fail451x2@lemgo.test");
    for attempt in 1..=2 {
        let why = transient(mailer.send(&m, "n-7-delivered").await);
        assert!(why.contains("451") && why.contains(&format!("attempt {attempt} of 2")), "{why}");
    }
    assert_eq!(mailer.send(&m, "n-7-delivered").await, Outcome::Accepted);
    assert_eq!(server.count_by_message_id().get("n-7-delivered@amtsbote.test"), Some(&1));
}

#[tokio::test]
async fn a_server_that_is_down_is_transient_and_back_it_accepts() {
    let mut server = SmtpServer::start();
    let mailer = mailer(&server.config());
    server.stop();
    let why = transient(mailer.send(&message("n-2", "stadtkasse@lemgo.test"), "n-2").await);
    assert!(why.contains(&format!("127.0.0.1:{}", server.port)), "{why}");
    server.start_again();
    assert_eq!(mailer.send(&message("n-2", "stadtkasse@lemgo.test"), "n-2").await, Outcome::Accepted);
    assert_eq!(server.count_by_message_id().get("n-2@amtsbote.test"), Some(&1));
}

#[tokio::test]
async fn starttls_and_implicit_tls_with_the_test_ca_are_accepted() {
    for server in [SmtpServer::starttls(), SmtpServer::implicit_tls()] {
        let mailer = mailer(&server.config());
        assert_eq!(mailer.send(&message("n-3", "stadtkasse@lemgo.test"), "n-3").await, Outcome::Accepted, "{}", mailer.describe());
        assert_eq!(server.messages().len(), 1);
    }
}

/// A certificate no trusted CA signed is transient: it is a setting (smtp.ca_file, the
/// server's certificate) an operator fixes, and the notifications must still go out once it
/// is fixed; the retries give up after their time like any other transient fault. Nothing
/// is sent over the unverified connection.
#[tokio::test]
async fn a_certificate_from_a_foreign_ca_is_transient_and_nothing_is_sent() {
    for server in [SmtpServer::starttls(), SmtpServer::implicit_tls()] {
        let mut cfg = server.config();
        cfg.ca_file = server.pki.as_ref().map(|p| p.other_ca.clone());
        let why = transient(mailer(&cfg).send(&message("n-4", "stadtkasse@lemgo.test"), "n-4").await);
        assert!(why.contains("TLS") && why.contains("smtp.ca_file"), "{why}");
        assert!(server.messages().is_empty());
    }
}

/// `smtp://` requires STARTTLS: a server that does not offer it gets nothing in plain text
/// (transient: its operator may turn it on; the retries go on meanwhile).
#[tokio::test]
async fn starttls_is_required_unless_tls_none() {
    let server = SmtpServer::start();
    let cfg = SmtpConfig { url: Some(format!("smtp://127.0.0.1:{}", server.port)), ..Default::default() };
    let mailer = mailer(&cfg);
    assert!(mailer.describe().contains("STARTTLS"), "{}", mailer.describe());
    let why = transient(mailer.send(&message("n-5", "stadtkasse@lemgo.test"), "n-5").await);
    assert!(why.contains("STARTTLS"), "{why}");
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn auth_with_the_right_password_is_accepted_and_a_wrong_one_permanent() {
    let server = SmtpServer::with(Options { tls: Security::StartTls, auth: true });
    let good = mailer(&server.config());
    assert!(good.describe().contains(&format!("auth as user {}", smtp::USER)), "{}", good.describe());
    assert!(!good.describe().contains(smtp::PASSWORD), "{}", good.describe());
    assert_eq!(good.send(&message("n-6", "stadtkasse@lemgo.test"), "n-6").await, Outcome::Accepted);
    let mut cfg = server.config();
    cfg.url = Some(server.url_as(smtp::USER, "falsch"));
    let why = permanent(mailer(&cfg).send(&message("n-6b", "stadtkasse@lemgo.test"), "n-6b").await);
    assert!(why.contains("535"), "{why}");
    // Without credentials the server refuses MAIL: permanent too.
    let mut cfg = server.config();
    cfg.url = Some(format!("smtp://127.0.0.1:{}", server.port));
    let why = permanent(mailer(&cfg).send(&message("n-6c", "stadtkasse@lemgo.test"), "n-6c").await);
    assert!(why.contains("530"), "{why}");
    assert_eq!(server.messages().len(), 1);
}

#[tokio::test]
async fn the_embedded_default_writes_one_eml_file_per_id() {
    let data = tempfile::tempdir().unwrap();
    let mailer = Mailer::from_config(&SmtpConfig::default(), data.path()).unwrap();
    let dir = data.path().join("mail");
    assert!(mailer.describe().contains(&dir.display().to_string()) && mailer.describe().contains("no smtp.url"), "{}", mailer.describe());
    let m = message("n-8-printed", "stadtkasse@lemgo.test");
    assert_eq!(mailer.send(&m, "n-8-printed").await, Outcome::Accepted);
    assert_eq!(mailer.send(&m, "n-8-printed").await, Outcome::Accepted);
    assert_eq!(mailer.send(&message("n/9", "stadtkasse@lemgo.test"), "n/9").await, Outcome::Accepted);
    let mut names: Vec<String> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(names[0], "n-8-printed.eml");
    assert!(names[1].starts_with("n_9-") && names[1].ends_with(".eml"), "{names:?}");
    let text = std::fs::read_to_string(dir.join("n-8-printed.eml")).unwrap();
    assert!(text.contains("Message-ID: <n-8-printed@amtsbote.test>") && text.contains("To: stadtkasse@lemgo.test"), "{text}");
}

/// A folder that cannot be written is transient (an operator frees or fixes it).
#[tokio::test]
async fn an_eml_folder_that_cannot_be_written_is_transient() {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("mail"), "a file where the folder should be").unwrap();
    let mailer = Mailer::from_config(&SmtpConfig::default(), data.path()).unwrap();
    let why = transient(mailer.send(&message("n-10", "stadtkasse@lemgo.test"), "n-10").await);
    assert!(why.contains("mail"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_sends_at_once_over_the_pool_arrive_once_each() {
    let server = SmtpServer::start();
    let mailer = std::sync::Arc::new(mailer(&server.config()));
    let sends: Vec<_> = (0..200)
        .map(|i| {
            let mailer = mailer.clone();
            tokio::spawn(async move {
                let id = format!("n-{i}-transmitted");
                mailer.send(&message(&id, "stadtkasse@lemgo.test"), &id).await
            })
        })
        .collect();
    for send in sends {
        assert_eq!(send.await.unwrap(), Outcome::Accepted);
    }
    let counts = server.count_by_message_id();
    assert_eq!(counts.len(), 200);
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    assert!((0..200).all(|i| counts.contains_key(&format!("n-{i}-transmitted@amtsbote.test"))));
    // At most pool_size connections, kept and reused: not one a send.
    let opened = server.connections_opened();
    assert!((1..=4).contains(&opened), "{opened} connections for 200 sends over a pool of 4");
}

#[test]
fn settings_that_cannot_be_used_are_errors_before_any_send() {
    let bad = |url: &str, ca: Option<&Path>| {
        let cfg = SmtpConfig { url: Some(url.into()), ca_file: ca.map(Path::to_path_buf), ..Default::default() };
        Mailer::from_config(&cfg, Path::new(".")).err().map(|e| e.to_string()).unwrap_or_default()
    };
    assert!(bad("smtp://u:secret@mail.example?tls=none", None).contains("in clear"));
    for url in ["smtps://mail.example", "smtp://mail.example"] {
        let e = bad(url, Some(Path::new("/nonexistent/ca.pem")));
        assert!(e.contains("smtp.ca_file") && e.contains("/nonexistent/ca.pem"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), "not a certificate").unwrap();
        let e = bad(url, Some(&dir.path().join("ca.pem")));
        assert!(e.contains("no PEM certificate"), "{e}");
    }
    // Without ca_file the built-in roots are trusted; no runtime is needed to build or drop it.
    let cfg = SmtpConfig { url: Some("smtps://mail.example".into()), ..Default::default() };
    let mailer = Mailer::from_config(&cfg, Path::new(".")).unwrap();
    assert!(mailer.describe().contains("Mozilla roots") && mailer.describe().contains("smtps://mail.example:465"), "{}", mailer.describe());
}
