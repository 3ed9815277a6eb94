//! The quick start end to end, as a newcomer runs it: the RELEASE binary, an empty folder as
//! the working directory, no configuration — the embedded default under `./amtsbote-data`
//! (SQLite, inbox folders, the built-in XTA simulator, emails as .eml files, the nightly
//! print schedule). Three sample requests are dropped into the sample tenant's inbox and a
//! message arrives in its XTA message box:
//!
//! 1. `ersuchen.xml` (debtor in Köln, Grundsteuer): routed to the Steueramt Köln, sent over
//!    XTA, delivered by the simulator's transport report;
//! 2. `ersuchen-post.xml` (debtor in Düsseldorf, whose Stadtkasse takes no XTA): awaiting
//!    print, then printed by `amtsbote print-batch run` into a PDF in the handoff folder;
//! 3. `ersuchen-firma.xml` (in Köln's name, not the tenant's): rejected, into `error/` with
//!    its reason;
//! 4. `rueckmeldung.xml` put into the tenant's box (`amtsbote xta-sim put`): received into
//!    `outbox/demo/`.
//!
//! Every outcome is checked: states and journals, the outbox file, `error/`, the PDF (its
//! text read back with pdftotext), every notification email (.eml: which event, to whom) and
//! the notification that got none.
//!
//! The clock of the print schedule is fixed at 23:00 Europe/Berlin (`AMTSBOTE_TEST_NOW`):
//! `serve` then catches up the night's batch at start, with nothing to print. That must not
//! close the date: `print-batch run` afterwards prints the request that came later.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use amtsbote::ledger::{self, RequestId, RequestState};

#[path = "support/serve.rs"]
mod serve_support;
#[path = "support/release.rs"]
mod release_support;
use release_support::*;

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/messages");

/// The release binary run in `cwd` with `env` and none of the test's own `AMTSBOTE_*`.
fn amtsbote(cwd: &Path, env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(release_binary());
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("AMTSBOTE_")) {
        command.env_remove(key);
    }
    command.current_dir(cwd).envs(env.iter().copied());
    command
}

/// `amtsbote ARGS` in `cwd`: stdout, after checking it exited 0.
fn run(cwd: &Path, env: &[(&str, &str)], args: &[&str]) -> String {
    let out = amtsbote(cwd, env).args(args).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "amtsbote {}: exit {:?}\nstdout: {stdout}\nstderr: {stderr}", args.join(" "), out.status.code());
    stdout
}

fn copy_into(from: &str, to: &Path) {
    let name = Path::new(from).file_name().unwrap();
    // Written beside, then renamed in: the inbox sees it whole (as `cp` to the same disk does,
    // near enough; the watcher waits for a file to settle anyway).
    let staging = to.parent().unwrap().join(format!(".{}", name.to_string_lossy()));
    std::fs::copy(Path::new(EXAMPLES).join(from), &staging).unwrap();
    std::fs::rename(&staging, to.join(name)).unwrap();
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir).map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default();
    names.sort();
    names
}

/// An email's headers we look at, from its .eml file.
#[derive(Debug)]
struct Eml {
    to: String,
    subject: String,
    message_id: String,
    text: String,
}

fn read_eml(path: &Path) -> Eml {
    let raw = std::fs::read_to_string(path).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").or_else(|| raw.split_once("\n\n")).unwrap();
    // Unfold continuation lines, then read `Name: value`.
    let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ").replace("\n ", " ");
    let header = |name: &str| unfolded.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(": ").map(str::to_owned)).unwrap_or_default();
    Eml { to: header("To"), subject: header("Subject"), message_id: header("Message-ID"), text: body.to_string() }
}

/// The notification event an email's Message-ID names: `<r1-5-transmitted@host>` → (1, transmitted).
fn event_of(message_id: &str) -> (String, String) {
    let id = message_id.trim_matches(|c| c == '<' || c == '>');
    let id = id.split('@').next().unwrap();
    let (subject, event) = id.rsplit_once('-').unwrap();
    (subject.split('-').next().unwrap().to_string(), event.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_start_from_an_empty_directory_with_the_release_binary() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let listen = serve_support::free_port();
    let env: &[(&str, &str)] = &[("AMTSBOTE_HTTP_LISTEN", &listen), ("AMTSBOTE_TEST_NOW", LATE_EVENING)];
    let data: PathBuf = cwd.join("amtsbote-data");
    assert!(std::fs::read_dir(cwd).unwrap().next().is_none(), "an empty directory");

    // serve, with no configuration at all.
    let serve_log = cwd.join("serve.log");
    let mut serve = serve_support::Running(amtsbote(cwd, env).arg("serve").stdout(Stdio::null()).stderr(std::fs::File::create(&serve_log).unwrap()).spawn().unwrap());
    let log = || std::fs::read_to_string(&serve_log).unwrap_or_default();
    release_support::wait_until_ready(&mut serve, &listen, &serve_log).await;
    let banner = log();
    for what in ["data directory   ./amtsbote-data", "inbox demo", "built-in simulator", ".eml", "token create --role admin"] {
        assert!(banner.contains(what), "the start-up banner names {what:?}: {banner}");
    }
    // 23:00 in Berlin: the night's batch was caught up at start with nothing to print, and
    // no batch was recorded (the date stays open for what comes later).
    assert!(banner.contains("nothing awaits print, no batch recorded"), "{banner}");
    assert_eq!(run(cwd, env, &["print-batch", "list", "--json"]).trim(), "[]", "no batch recorded by the catch-up");

    let token = run(cwd, env, &["token", "create", "--role", "admin"]).trim().to_string();
    assert!(token.starts_with("ab_"), "{token}");
    let url = format!("sqlite:{}", data.join("ledger.sqlite").display());
    let ledger = ledger::open(&url).await.unwrap();
    let inbox = data.join("inbox/demo");

    // 1. Electronically: Köln, Grundsteuer → the Steueramt, over XTA, delivered.
    copy_into("ersuchen.xml", &inbox);
    settle(&data, 0, Duration::from_secs(120)).await;
    let r1 = ledger.get(RequestId(1)).await.unwrap().expect("request 1");
    assert_eq!(r1.state, RequestState::Delivered);
    let routed = r1.routed.as_ref().unwrap();
    assert_eq!(routed.kennung, "vbh:053150000001", "GRST in Köln: the Steueramt");
    assert!(r1.xta_message_id.as_deref().is_some_and(|m| m.starts_with("urn:de:xta:messageid:")), "{:?}", r1.xta_message_id);
    // The states it went through (a report asked for again adds `transmitted → transmitted`).
    let states = |journal: &[ledger::Event]| {
        let mut states = journal.iter().map(|e| e.to.to_string()).collect::<Vec<_>>();
        states.dedup();
        states
    };
    assert_eq!(states(&ledger.journal(r1.id).await.unwrap()), ["validated", "routed", "transmitting", "transmitted", "delivered"]);
    // Taken in files keep their name after the claim's prefix (`<ULID>--`).
    let taken = |dir: &Path| names(dir).into_iter().map(|n| n.split_once("--").map_or(n.clone(), |(_, name)| name.to_string())).collect::<Vec<_>>();
    assert_eq!(taken(&inbox.join("done")), ["ersuchen.xml"]);
    let shown = run(cwd, env, &["request", "show", "1"]);
    for what in ["delivered", "Steueramt Köln", "transmitted", "r1-4-transmitted"] {
        assert!(shown.contains(what), "request show 1 names {what:?}: {shown}");
    }

    // 2. By post: Düsseldorf takes no XTA → awaiting print → the batch now.
    copy_into("ersuchen-post.xml", &inbox);
    settle(&data, 0, Duration::from_secs(120)).await;
    let r2 = ledger.get(RequestId(2)).await.unwrap().expect("request 2");
    assert_eq!((r2.state, r2.routed.as_ref().unwrap().kennung.as_str()), (RequestState::AwaitingPrint, "vbh:051110000000"));
    let printed = run(cwd, env, &["print-batch", "run"]);
    assert!(printed.contains(&format!("batch {LATE_EVENING_BATCH} of 2026-12-01: 1 letters (0 test letters")), "{printed}");
    assert!(printed.contains("1 files written"), "{printed}");
    settle(&data, 0, Duration::from_secs(120)).await;
    let r2 = ledger.get(RequestId(2)).await.unwrap().unwrap();
    assert_eq!((r2.state, r2.print_batch.as_deref(), r2.letter_number), (RequestState::Printed, Some(LATE_EVENING_BATCH), Some(1)));
    assert_eq!(states(&ledger.journal(r2.id).await.unwrap()), ["validated", "routed", "awaiting_print", "printed"]);
    let handoff = data.join("print/handoff");
    let pdf = format!("{LATE_EVENING_BATCH}-001.pdf");
    assert_eq!(names(&handoff), [format!("{LATE_EVENING_BATCH}-001.manifest.csv"), format!("{LATE_EVENING_BATCH}-001.manifest.json"), pdf.clone()]);
    let text = Command::new("pdftotext").args(["-layout"]).arg(handoff.join(&pdf)).arg("-").output().expect("pdftotext (poppler-utils; scripts/test installs it)");
    let text = String::from_utf8_lossy(&text.stdout);
    for what in ["VH-2026-000124", "Stadtkasse Düsseldorf (Beispiel)", "Beispiel", "Gewerbesteuer", "40213 Düsseldorf"] {
        assert!(text.contains(what), "the letter shows {what:?}:\n{text}");
    }
    // The same date again: nothing written twice.
    let again = run(cwd, env, &["print-batch", "run"]);
    assert!(again.contains("complete before, nothing written (1 letters in 1 files)"), "{again}");

    // 3. Rejected: in Köln's name, not the tenant's.
    copy_into("ersuchen-firma.xml", &inbox);
    settle(&data, 0, Duration::from_secs(120)).await;
    let r3 = ledger.get(RequestId(3)).await.unwrap().expect("request 3");
    assert_eq!(r3.state, RequestState::Rejected);
    assert_eq!(taken(&inbox.join("error")), ["ersuchen-firma.xml", "ersuchen-firma.xml.error.txt"]);
    let error_txt = names(&inbox.join("error")).into_iter().find(|n| n.ends_with(".error.txt")).unwrap();
    let reason = std::fs::read_to_string(inbox.join("error").join(error_txt)).unwrap();
    assert!(reason.contains("vbh:053150000000") && reason.contains("vbh:057660440000"), "both kennungen named: {reason}");
    let shown = run(cwd, env, &["request", "show", "3"]);
    assert!(shown.contains("rejected") && shown.contains("a tenant sends only in its own name"), "{shown}");
    assert_eq!(taken(&inbox.join("done")), ["ersuchen.xml", "ersuchen-post.xml"], "in the order taken in (the claim's ULID)");

    // 4. Received: a message for demo in its XTA box at the built-in simulator.
    let put = run(cwd, env, &["xta-sim", "put", &format!("{EXAMPLES}/rueckmeldung.xml")]);
    let message_id = put.trim().to_string();
    assert!(message_id.starts_with("urn:de:xta:messageid:"), "{put}");
    settle(&data, 1, Duration::from_secs(120)).await;
    let outbox = data.join("outbox/demo");
    let file = amtsbote::xta::receive::file_name_for(&message_id);
    assert_eq!(names(&outbox), ["error".to_string(), file.clone()]);
    assert!(names(&outbox.join("error")).is_empty());
    assert_eq!(std::fs::read(outbox.join(&file)).unwrap(), std::fs::read(format!("{EXAMPLES}/rueckmeldung.xml")).unwrap());
    assert_eq!(ledger.received(&message_id).await.unwrap().unwrap().state, ledger::ReceivedState::Closed);

    // Every email, as .eml files: which event, to whom.
    let mail = data.join("mail");
    let mut emails: BTreeMap<(String, String), String> = BTreeMap::new();
    for name in names(&mail).into_iter().filter(|n| n.ends_with(".eml")) {
        let eml = read_eml(&mail.join(&name));
        assert!(!eml.subject.is_empty() && !eml.text.is_empty(), "{name}: {eml:?}");
        emails.insert(event_of(&eml.message_id), eml.to);
    }
    let expected: BTreeMap<(String, String), String> = [
        (("r1", "transmitted"), "stadtkasse@lemgo.example"),
        (("r1", "delivered"), "stadtkasse@lemgo.example"),
        (("r2", "printed"), "stadtkasse@lemgo.example"),
    ]
    .into_iter()
    .map(|((s, e), to)| ((s.to_string(), e.to_string()), to.to_string()))
    .collect();
    assert_eq!(emails, expected, "the emails in {}: {:?}", mail.display(), names(&mail));
    let listed = run(cwd, env, &["notifications"]);
    assert_eq!(listed.lines().filter(|l| l.contains(" accepted ")).count(), 3, "{listed}");
    // The received message's notification got no email: the sample tenant has no notify
    // addresses, and a received message names none. It says so.
    let mut db = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url).await.unwrap();
    let received: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as("SELECT event, mail_id, skipped FROM notifications WHERE received_message_id IS NOT NULL").fetch_all(&mut db).await.unwrap();
    assert_eq!(received, [("received".to_string(), None, Some("no address: the tenant has no notify addresses and the message names no email".to_string()))]);
    // The rejected message is in Köln's name, not the tenant's: the address it names is not
    // trusted, so its rejection is not emailed there (nor anywhere: the tenant has no notify
    // addresses). It says so.
    let rejected: Vec<(Option<String>, Option<String>)> = sqlx::query_as("SELECT mail_id, skipped FROM notifications WHERE id LIKE 'r3-%'").fetch_all(&mut db).await.unwrap();
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(rejected[0].0, None, "no email for r3");
    assert!(rejected[0].1.as_deref().is_some_and(|why| why.contains("not in the tenant's name")), "{rejected:?}");

    // The HTTP side answers with the token.
    let (status, body) = serve_support::http_get_as(&listen, "/api/v1/requests?tenant=demo", Some(&token)).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(serve.try_wait().unwrap().is_none(), "serve ran throughout: {}", log());
    serve.kill().unwrap();
    serve.wait().unwrap();

    // With serve gone, a message for a tenant cannot be put: said plainly.
    let out = amtsbote(cwd, env).args(["xta-sim", "put", &format!("{EXAMPLES}/rueckmeldung.xml")]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is `amtsbote serve` running?"), "{}", String::from_utf8_lossy(&out.stderr));
}
