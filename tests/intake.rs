//! The inbox watcher against a real SQLite ledger and real folders, and the crash tests:
//! `amtsbote serve` killed with SIGKILL while it takes in 1,000 files (SQLite ledger) or 400
//! files (PostgreSQL ledger), or while clients post 400 messages over HTTP, then restarted.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use amtsbote::intake::Intake;
use amtsbote::intake::inbox::{InboxDirs, WatchConfig, Watcher};
use amtsbote::ledger::{self, Ledger, ListFilter, RequestState};
use amtsbote::xamtshilfe::{Checker, Limits};

#[path = "support/postgres.rs"]
mod postgres_support;
use postgres_support::TestDatabase;
#[path = "support/serve.rs"]
mod serve_support;
use serve_support::create_token;

const EXAMPLE: &str = include_str!("../examples/messages/ersuchen.xml");

/// The sample request with its own Nachrichten-UUID.
fn request(n: u32) -> String {
    EXAMPLE.replace("7d3c1f0e-2b7a-4c55-9a51-0c2f5f7e9b11", &format!("7d3c1f0e-2b7a-4c55-9a51-{n:012x}"))
}

/// The files in `dir`, without folders and the watcher's lock file.
fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().filter(|e| e.file_type().is_ok_and(|t| !t.is_dir())).map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n != amtsbote::intake::inbox::LOCK_FILE).collect())
        .unwrap_or_default();
    v.sort();
    v
}

async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    root: PathBuf,
    dirs: InboxDirs,
    ledger: Arc<dyn Ledger>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start_watcher() -> Setup {
    start_watcher_settling(Duration::from_millis(10)).await
}

async fn start_watcher_settling(settle: Duration) -> Setup {
    start_watcher_with(WatchConfig { poll_interval: Duration::from_millis(20), settle, concurrency: 4, limits: Limits::default(), ..WatchConfig::default() }).await
}

async fn start_watcher_with(config: WatchConfig) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let ledger = ledger::open(&format!("sqlite:{}", root.join("ledger.sqlite").display())).await.unwrap();
    ledger.migrate().await.unwrap();
    let intake = Intake::new(ledger.clone(), Arc::new(Checker::with_defaults()));
    let dirs = InboxDirs { tenant: "demo".into(), inbox: root.join("inbox/demo") };
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(Watcher::new(intake, vec![dirs.clone()], config).run(rx));
    wait_until("inbox folders", Duration::from_secs(10), || dirs.done().is_dir()).await;
    Setup { _dir: dir, root, dirs, ledger, stop, task }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_end_in_done_or_error_with_a_reason() {
    let s = start_watcher().await;
    let inbox = &s.dirs.inbox;
    std::fs::write(inbox.join("valid.xml"), request(1)).unwrap();
    std::fs::write(inbox.join("mit leerzeichen äöü.xml"), request(2)).unwrap();
    std::fs::write(inbox.join("-leading-dash.xml"), request(3)).unwrap();
    std::fs::write(inbox.join(format!("{}.xml", "lang".repeat(60))), request(4)).unwrap();
    std::fs::write(inbox.join("sum.xml"), request(5).replace(">445.00<", ">445.01<")).unwrap();
    std::fs::write(inbox.join("laughs.xml"), "<?xml version=\"1.0\"?><!DOCTYPE l [<!ENTITY a \"a\">]><l>&a;</l>").unwrap();
    std::fs::write(inbox.join("duplicate.xml"), request(1).replace("VH-2026-000123", "VH-2026-999999")).unwrap();
    std::fs::write(inbox.join("half.xml.part"), &request(6)[..300]).unwrap();
    std::fs::write(inbox.join(".hidden.xml"), request(7)).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", inbox.join("link.xml")).unwrap();

    wait_until("all files taken", Duration::from_secs(30), || {
        files_in(inbox).len() == 2 && files_in(&s.dirs.processing()).is_empty() && files_in(&s.dirs.done()).len() + files_in(&s.dirs.error()).len() >= 4 + 4 * 2
    })
    .await;
    // Still being written: left alone.
    assert_eq!(files_in(inbox), vec![".hidden.xml", "half.xml.part"]);

    let done = files_in(&s.dirs.done());
    assert_eq!(done.len(), 4, "{done:?}");
    assert!(done.iter().any(|n| n.ends_with("--mit leerzeichen äöü.xml")));
    assert!(done.iter().any(|n| n.ends_with("---leading-dash.xml")));

    let error = files_in(&s.dirs.error());
    let reason = |suffix: &str| {
        let name = error.iter().find(|n| n.ends_with(&format!("--{suffix}.error.txt"))).unwrap_or_else(|| panic!("{suffix}: {error:?}"));
        std::fs::read_to_string(s.dirs.error().join(name)).unwrap()
    };
    assert!(reason("sum.xml").contains("ersuchen/gesamtbetrag"), "{}", reason("sum.xml"));
    assert!(reason("laughs.xml").contains("DOCTYPE"));
    assert!(reason("duplicate.xml").contains("duplicate") && reason("duplicate.xml").contains("7d3c1f0e-2b7a-4c55-9a51-000000000001"));
    assert!(reason("link.xml").contains("symbolic link"));
    // The refused symlink was moved, not followed.
    assert!(std::fs::symlink_metadata(s.dirs.error().join(error.iter().find(|n| n.ends_with("--link.xml")).unwrap())).unwrap().file_type().is_symlink());

    let validated = s.ledger.list(&ListFilter::default().state(RequestState::Validated)).await.unwrap();
    assert_eq!(validated.len(), 4);
    let rejected = s.ledger.list(&ListFilter::default().state(RequestState::Rejected)).await.unwrap();
    assert_eq!(rejected.len(), 2, "sum and laughs are recorded as rejected");
    let journal = s.ledger.journal(validated[0].id).await.unwrap();
    assert_eq!(journal.len(), 1);
    assert_eq!(journal[0].to, RequestState::Validated);

    s.stop.send(true).unwrap();
    s.task.await.unwrap().unwrap();
    drop(s.root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_watcher_on_the_same_inbox_waits_and_takes_over_when_the_first_stops() {
    // Two watchers (two amtsbote processes on shared folders) on one inbox and one
    // ledger: only the first takes files in; the second leaves the inbox alone, even the
    // claims in processing/, until the first stops, and then takes over.
    let first = start_watcher().await;
    // The first holds the inbox before the second starts (its folders exist before its
    // first scan takes the lock; under load the second could otherwise be first).
    let patterns = amtsbote::intake::inbox::Patterns::default();
    wait_until("the first watcher to hold the inbox", Duration::from_secs(10), || first.dirs.report(&patterns).taken_in_by.is_some()).await;
    let intake = Intake::new(first.ledger.clone(), Arc::new(Checker::with_defaults()));
    let config = WatchConfig { poll_interval: Duration::from_millis(20), settle: Duration::from_millis(10), concurrency: 4, limits: Limits::default(), ..WatchConfig::default() };
    let second = Watcher::new(intake, vec![first.dirs.clone()], config);
    let second_stats = second.stats.clone();
    let (stop_second, rx) = tokio::sync::watch::channel(false);
    let second_task = tokio::spawn(second.run(rx));

    let inbox = first.dirs.inbox.clone();
    for n in 0..100 {
        std::fs::write(inbox.join(format!("first-{n}.xml")), request(n)).unwrap();
    }
    wait_until("100 files in done/", Duration::from_secs(60), || files_in(&first.dirs.done()).len() == 100).await;
    assert_eq!(second_stats.accepted.load(std::sync::atomic::Ordering::Relaxed), 0, "the second watcher took files while the first held the inbox");
    assert!(std::fs::read_to_string(inbox.join(amtsbote::intake::inbox::LOCK_FILE)).unwrap().contains(&format!("pid {}", std::process::id())));

    // The first stops; the second takes over, and every file still ends once.
    first.stop.send(true).unwrap();
    first.task.await.unwrap().unwrap();
    for n in 100..150 {
        std::fs::write(inbox.join(format!("second-{n}.xml")), request(n)).unwrap();
    }
    wait_until("150 files in done/", Duration::from_secs(60), || files_in(&first.dirs.done()).len() == 150).await;
    assert_eq!(second_stats.accepted.load(std::sync::atomic::Ordering::Relaxed), 50);
    assert_eq!(first.ledger.count_by_state().await.unwrap().iter().map(|(_, n)| n).sum::<u64>(), 150);
    stop_second.send(true).unwrap();
    second_task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backlog_says_what_waits_and_for_how_long() {
    // Files that will not settle within the test (settle time 10 minutes) wait in the inbox;
    // the watcher's backlog, which /metrics shows, counts them and ages the oldest.
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger::open(&format!("sqlite:{}", dir.path().join("ledger.sqlite").display())).await.unwrap();
    ledger.migrate().await.unwrap();
    let dirs = InboxDirs { tenant: "demo".into(), inbox: dir.path().join("inbox/demo") };
    dirs.create().unwrap();
    for n in 0..3 {
        std::fs::write(dirs.inbox.join(format!("w{n}.xml")), request(n)).unwrap();
    }
    let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options().write(true).open(dirs.inbox.join("w1.xml")).unwrap().set_modified(an_hour_ago).unwrap();
    std::fs::write(dirs.processing().join("01JDCLAIMED0000000000000000--stuck.xml"), "not read: the watcher waits for the ledger").unwrap();
    std::fs::write(dirs.inbox.join("being-written.xml.part"), "…").unwrap();

    let intake = Intake::new(ledger, Arc::new(Checker::with_defaults()));
    let config = WatchConfig { poll_interval: Duration::from_millis(20), settle: Duration::from_secs(600), concurrency: 4, limits: Limits::default(), ..WatchConfig::default() };
    let watcher = Watcher::new(intake, vec![dirs.clone()], config);
    let stats = watcher.stats.clone();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(watcher.run(rx));
    let backlog = || stats.backlog.lock().unwrap().get("demo").copied();
    wait_until("a scan", Duration::from_secs(10), || backlog().is_some()).await;
    let b = backlog().unwrap();
    assert_eq!(b.waiting, 3, "{b:?}");
    assert!((3600..3700).contains(&b.oldest_waiting_secs), "{b:?}");
    // The claim in processing/ is tried (and rejected: not XML), so it may be gone already.
    assert!(b.processing <= 1, "{b:?}");
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_still_growing_is_not_taken() {
    // A file that grows every 5 ms must not be taken; the settle time leaves room for a
    // loaded CI machine pausing this test for a while between two writes.
    let s = start_watcher_settling(Duration::from_millis(500)).await;
    let path = s.dirs.inbox.join("growing.xml");
    let text = request(10);
    let (head, tail) = text.split_at(1000);
    std::fs::write(&path, head).unwrap();
    // Keep it growing for a while: it must stay in the inbox.
    for chunk in tail.as_bytes().chunks(tail.len() / 5 + 1) {
        tokio::time::sleep(Duration::from_millis(5)).await;
        use std::io::Write;
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(chunk).unwrap();
        assert!(path.exists(), "taken while still growing");
    }
    wait_until("the finished file", Duration::from_secs(20), || files_in(&s.dirs.done()).len() == 1).await;
    assert!(files_in(&s.dirs.error()).is_empty(), "{:?}", files_in(&s.dirs.error()));
    s.stop.send(true).unwrap();
    s.task.await.unwrap().unwrap();
}

// ---------------------------------------------------------------------------------------------
// The crash test, with the real binary.

fn start_serve_on(root: &Path, listen: &str) -> Child {
    let ledger_url = format!("sqlite:{}", root.join("ledger.sqlite").display());
    start_serve_with(root, listen, &ledger_url)
}

fn start_serve_with(root: &Path, listen: &str, ledger_url: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_amtsbote"))
        .arg("serve")
        .env("AMTSBOTE_DATA_DIR", root)
        .env("AMTSBOTE_LEDGER_URL", ledger_url)
        .env("AMTSBOTE_HTTP_LISTEN", listen)
        .env("AMTSBOTE_INTAKE_POLL_INTERVAL_MS", "20")
        .env("AMTSBOTE_INTAKE_SETTLE_MS", "10")
        .env("AMTSBOTE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_taking_in_a_thousand_files_nothing_is_lost_or_doubled() {
    let dir = tempfile::tempdir().unwrap();
    let ledger_url = format!("sqlite:{}", dir.path().join("ledger.sqlite").display());
    killed_while_taking_in(dir.path(), &ledger_url, 1000, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_postgres_ledger_killed_while_taking_in_files_nothing_is_lost_or_doubled() {
    // The cluster mode's ledger: the same crash test against a database of its own on
    // the local PostgreSQL server.
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (root, url) = (dir.path().to_path_buf(), database.url.clone());
    let outcome = tokio::spawn(async move { killed_while_taking_in(&root, &url, 400, 2).await }).await;
    database.drop().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_serve_takes_over_the_inbox_when_the_active_one_is_killed() {
    // Two `serve` processes on the same data directory: the second waits for the inbox
    // while the first takes files in; the first is killed with SIGKILL halfway, and the
    // standby finishes the work, including the claims the first left in processing/.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let ledger_url = format!("sqlite:{}", root.join("ledger.sqlite").display());
    let dirs = InboxDirs { tenant: "demo".into(), inbox: root.join("inbox/demo") };
    let lock = dirs.inbox.join(amtsbote::intake::inbox::LOCK_FILE);
    let holder = || std::fs::read_to_string(&lock).unwrap_or_default();

    let mut active = start_serve_with(root, "127.0.0.1:0", &ledger_url);
    let active_pid = format!("pid {} ", active.id());
    wait_until("the first serve holds the inbox", Duration::from_secs(30), || holder().starts_with(&active_pid)).await;
    let mut standby = start_serve_with(root, "127.0.0.1:0", &ledger_url);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(holder().starts_with(&active_pid), "the standby took the inbox from a live process: {}", holder());

    let total = 1000u32;
    let staging = root.join("staging");
    std::fs::create_dir_all(&staging).unwrap();
    for n in 0..total {
        std::fs::write(staging.join(format!("e{n:04}.xml")), request(n)).unwrap();
    }
    for n in 0..total {
        std::fs::rename(staging.join(format!("e{n:04}.xml")), dirs.inbox.join(format!("e{n:04}.xml"))).unwrap();
    }
    let start = Instant::now();
    while files_in(&dirs.done()).len() < 100 {
        assert!(start.elapsed() < Duration::from_secs(60), "the first serve took nothing in");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    active.kill().unwrap(); // SIGKILL
    active.wait().unwrap();
    let left = total as usize - files_in(&dirs.done()).len();
    eprintln!("killed the active serve with {left} of {total} files not yet done");

    let standby_pid = format!("pid {} ", standby.id());
    wait_until("the standby finished", Duration::from_secs(120), || {
        files_in(&dirs.done()).len() == total as usize && files_in(&dirs.processing()).is_empty() && files_in(&dirs.inbox).is_empty()
    })
    .await;
    assert!(holder().starts_with(&standby_pid), "{}", holder());
    standby.kill().unwrap();
    standby.wait().unwrap();

    let ledger = ledger::open(&ledger_url).await.unwrap();
    let all = ledger.list(&ListFilter::default().limit(1000)).await.unwrap();
    assert_eq!(all.len(), total as usize, "each file once in the ledger");
    assert!(files_in(&dirs.error()).is_empty(), "{:?}", files_in(&dirs.error()));
}

/// Drops `total` files (every 20th invalid) into the inbox of a `serve` on `ledger_url`,
/// kills it with SIGKILL `kills` times while it works, restarts it, and checks that every
/// file ended exactly once in done/ or error/ and every message is in the ledger once.
async fn killed_while_taking_in(root: &Path, ledger_url: &str, total: u32, kills: u32) {
    let inbox = root.join("inbox/demo");
    std::fs::create_dir_all(&inbox).unwrap();
    let staging = root.join("staging");
    std::fs::create_dir_all(&staging).unwrap();
    for n in 0..total {
        let text = if n % 20 == 7 { request(n).replace(">445.00<", ">1.00<") } else { request(n) };
        std::fs::write(staging.join(format!("ersuchen {n:04}.xml")), text).unwrap();
    }
    for n in 0..total {
        let name = format!("ersuchen {n:04}.xml");
        std::fs::rename(staging.join(&name), inbox.join(&name)).unwrap();
    }
    let invalid = (0..total).filter(|n| n % 20 == 7).count();
    let valid_count = total as usize - invalid;

    let dirs = InboxDirs { tenant: "demo".into(), inbox: inbox.clone() };
    let finished = |dirs: &InboxDirs| files_in(&dirs.done()).len() + files_in(&dirs.error()).iter().filter(|n| !n.ends_with(".error.txt")).count();
    let serve = || start_serve_with(root, "127.0.0.1:0", ledger_url);

    // Kill it while it works, each time once some more files went through.
    let step = (total / (kills + 2)) as usize;
    for round in 1..=kills as usize {
        let mut child = serve();
        let before = finished(&dirs);
        let start = Instant::now();
        while finished(&dirs) < before + step * round && finished(&dirs) < total as usize && start.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    // Restart and let it finish.
    let mut child = serve();
    let start = Instant::now();
    while !(finished(&dirs) == total as usize && files_in(&dirs.processing()).is_empty() && files_in(&inbox).is_empty()) {
        assert!(start.elapsed() < Duration::from_secs(120), "not finished: {} of {total}", finished(&dirs));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();

    // Every file exactly once: in done/ or in error/, with its original name.
    let mut seen = std::collections::HashMap::new();
    for name in files_in(&dirs.done()).into_iter().chain(files_in(&dirs.error()).into_iter().filter(|n| !n.ends_with(".error.txt"))) {
        let original = name.split_once("--").unwrap().1.to_string();
        *seen.entry(original).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), total as usize);
    assert!(seen.values().all(|&c| c == 1), "a file ended twice: {:?}", seen.iter().filter(|(_, c)| **c != 1).collect::<Vec<_>>());
    assert_eq!(files_in(&dirs.done()).len(), valid_count);

    // Each valid request is in the ledger once; each invalid one is recorded as rejected.
    let ledger = ledger::open(ledger_url).await.unwrap();
    // (serve also routes them: valid ones are validated or already routed by now.)
    let all = ledger.list(&ListFilter::default().limit(1000)).await.unwrap();
    assert_eq!(all.len(), total as usize, "one ledger entry per file");
    let valid: Vec<_> = all.iter().filter(|r| r.state != RequestState::Rejected).collect();
    assert_eq!(valid.len(), valid_count);
    assert!(valid.iter().all(|r| matches!(r.state, RequestState::Validated | RequestState::Routed | RequestState::Transmitting | RequestState::Transmitted | RequestState::Delivered)), "{:?}", valid.iter().map(|r| r.state).collect::<std::collections::HashSet<_>>());
    let uuids: std::collections::HashSet<_> = valid.iter().map(|r| r.nachrichten_uuid.clone()).collect();
    assert_eq!(uuids.len(), valid_count);
    let rejected: Vec<_> = all.iter().filter(|r| r.state == RequestState::Rejected).collect();
    assert_eq!(rejected.len(), invalid);
    assert!(rejected.iter().all(|r| r.nachrichten_uuid.is_none()));
}

/// One POST of `body` on a fresh connection: the status and the JSON answer, or None when
/// the connection failed or broke before a whole answer came (the server was killed).
async fn post_once(addr: &str, token: &str, body: &str) -> Option<(u16, serde_json::Value)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let head = format!(
        "POST /api/v1/nachrichten?tenant=demo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.ok()?;
    stream.write_all(body.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.ok()?;
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let status = std::str::from_utf8(&raw[..end]).ok()?.split(' ').nth(1)?.parse().ok()?;
    let json = serde_json::from_slice(&raw[end + 4..]).ok()?;
    Some((status, json))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_clients_post_over_http_every_acknowledged_request_is_kept_once() {
    // Eight clients post 400 messages; the server is killed twice while they do. A client
    // whose post got no answer posts the same body again until it gets one. At the end
    // every message has its 202, the ledger holds each exactly once, and every id a 202
    // named is that message's request: nothing acknowledged was lost, nothing doubled.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let total = 400u32;
    let next = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let answered = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let retried = Arc::new(std::sync::atomic::AtomicU32::new(0));
    // The clients post as the tenant, with its token.
    let token = create_token(&root, &format!("sqlite:{}", root.join("ledger.sqlite").display()), "tenant:demo", &[]);
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (addr, next, answered, retried, token) = (addr.clone(), next.clone(), answered.clone(), retried.clone(), token.clone());
        clients.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= total {
                    return acks;
                }
                let body = request(n);
                let start = Instant::now();
                let (status, json) = loop {
                    if let Some(answer) = post_once(&addr, &token, &body).await {
                        break answer;
                    }
                    retried.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    assert!(start.elapsed() < Duration::from_secs(120), "message {n}: no answer for 120 s");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                };
                assert_eq!(status, 202, "message {n}: {json}");
                answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                acks.push((n, json["id"].as_i64().unwrap(), json["already_recorded"] == true));
            }
        }));
    }
    for round in 1..=2u32 {
        let mut child = start_serve_on(&root, &addr);
        let start = Instant::now();
        while answered.load(std::sync::atomic::Ordering::Relaxed) < 120 * round && start.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        child.kill().unwrap(); // SIGKILL, with posts in flight
        child.wait().unwrap();
    }
    let mut child = start_serve_on(&root, &addr);
    let mut acks = Vec::new();
    for client in clients {
        acks.extend(client.await.unwrap());
    }
    child.kill().unwrap();
    child.wait().unwrap();

    assert_eq!(acks.len(), total as usize, "every message answered");
    // What the kills did (varies from run to run): posts without an answer, and of those
    // the ones that had been recorded before the kill (answered "already recorded").
    let recorded_before = acks.iter().filter(|a| a.2).count();
    eprintln!("{} posts got no answer and were sent again; {recorded_before} of them had been recorded", retried.load(std::sync::atomic::Ordering::Relaxed));
    let ledger = ledger::open(&format!("sqlite:{}", root.join("ledger.sqlite").display())).await.unwrap();
    let all = ledger.list(&ListFilter::default().limit(1000)).await.unwrap();
    assert_eq!(all.len(), total as usize, "each message once in the ledger");
    for (n, id, _) in acks {
        let request = all.iter().find(|r| r.id.0 == id).unwrap_or_else(|| panic!("message {n}: acknowledged id {id} is not in the ledger"));
        assert_eq!(request.nachrichten_uuid.as_deref(), Some(format!("7d3c1f0e-2b7a-4c55-9a51-{n:012x}").as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deactivated_tenant_or_an_ended_trial_is_refused_with_the_reason() {
    use amtsbote::config::Tenant;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let ledger = ledger::open(&format!("sqlite:{}", root.join("ledger.sqlite").display())).await.unwrap();
    ledger.migrate().await.unwrap();
    let yesterday = chrono::Utc::now().date_naive() - chrono::Duration::days(2);
    let tenants = vec![
        Tenant { id: "off".into(), kennung: "vbh:1".into(), active: false, ..Tenant::default() },
        Tenant { id: "trial".into(), kennung: "vbh:2".into(), valid_to: Some(yesterday), ..Tenant::default() },
        Tenant { id: "on".into(), kennung: "vbh:057660440000".into(), ..Tenant::default() },
    ];
    let intake = Intake::new(ledger.clone(), Arc::new(Checker::with_defaults())).with_tenants(tenants.clone());
    let dirs: Vec<InboxDirs> = tenants.iter().map(|t| InboxDirs { tenant: t.id.clone(), inbox: root.join("inbox").join(&t.id) }).collect();
    let config = WatchConfig { poll_interval: Duration::from_millis(20), settle: Duration::from_millis(10), concurrency: 2, limits: Limits::default(), ..WatchConfig::default() };
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(Watcher::new(intake, dirs.clone(), config).run(rx));
    wait_until("inbox folders", Duration::from_secs(10), || dirs.iter().all(|d| d.done().is_dir())).await;
    for (i, d) in dirs.iter().enumerate() {
        std::fs::write(d.inbox.join("ersuchen.xml"), request(100 + i as u32)).unwrap();
    }
    wait_until("three files", Duration::from_secs(20), || {
        files_in(&dirs[0].error()).len() == 2 && files_in(&dirs[1].error()).len() == 2 && files_in(&dirs[2].done()).len() == 1
    })
    .await;
    let reason = |d: &InboxDirs| {
        let name = files_in(&d.error()).into_iter().find(|n| n.ends_with(".error.txt")).unwrap();
        std::fs::read_to_string(d.error().join(name)).unwrap()
    };
    assert!(reason(&dirs[0]).contains("deactivated"), "{}", reason(&dirs[0]));
    assert!(reason(&dirs[1]).contains("term has ended"), "{}", reason(&dirs[1]));
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_whose_name_matches_no_pattern_is_left_in_the_inbox_and_counted() {
    // The banner says ".xml files": a readme dropped beside the requests is not a request.
    let s = start_watcher().await;
    let inbox = &s.dirs.inbox;
    std::fs::write(inbox.join("readme.txt"), "Bitte nur XML-Dateien ablegen.\n").unwrap();
    std::fs::write(inbox.join("ERSUCHEN.XML"), request(1)).unwrap();
    wait_until("the request taken in", Duration::from_secs(30), || files_in(&s.dirs.done()).len() == 1).await;
    // A few more scans: the readme stays where it is, and is counted as not taken.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(files_in(inbox), vec!["readme.txt"]);
    assert!(files_in(&s.dirs.error()).is_empty(), "nothing refused: {:?}", files_in(&s.dirs.error()));
    assert_eq!(s.ledger.list(&ListFilter::default()).await.unwrap().len(), 1, "only the request is in the ledger");
    let patterns = amtsbote::intake::inbox::Patterns::default();
    let report = s.dirs.report(&patterns);
    assert_eq!((report.waiting, report.not_taken), (0, 1));
    s.stop.send(true).unwrap();
    s.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_still_being_appended_to_after_its_claim_is_waited_for_not_rejected() {
    // A producer copying slowly (a network share) through a handle it keeps open: the file
    // stops changing for longer than the settle time between its pieces, so it is claimed
    // half-written. It must be waited for in processing/ and then taken in whole.
    let s = start_watcher().await;
    let text = request(1);
    let bytes = text.as_bytes();
    let mut file = std::fs::File::create(s.dirs.inbox.join("langsam.xml")).unwrap();
    let pieces = 4;
    let step = bytes.len().div_ceil(pieces);
    for (i, piece) in bytes.chunks(step).enumerate() {
        std::io::Write::write_all(&mut file, piece).unwrap();
        std::io::Write::flush(&mut file).unwrap();
        if i == 0 {
            wait_until("the half-written file claimed", Duration::from_secs(10), || files_in(&s.dirs.processing()).len() == 1).await;
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    drop(file);
    wait_until("the file taken in", Duration::from_secs(30), || files_in(&s.dirs.done()).len() + files_in(&s.dirs.error()).len() > 0).await;
    assert!(files_in(&s.dirs.error()).is_empty(), "not rejected: {:?}", files_in(&s.dirs.error()));
    assert_eq!(files_in(&s.dirs.done()).len(), 1);
    let all = s.ledger.list(&ListFilter::default()).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].state, RequestState::Validated);
    s.stop.send(true).unwrap();
    s.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_file_nobody_writes_to_any_more_is_rejected_after_the_wait() {
    // The wait has an end: a file cut off for good is rejected as truncated once its last
    // write is older than intake.incomplete_wait_secs (here 1 s).
    let s = start_watcher_with(WatchConfig {
        poll_interval: Duration::from_millis(20),
        settle: Duration::from_millis(10),
        incomplete_wait: Duration::from_secs(1),
        ..WatchConfig::default()
    })
    .await;
    let dirs = s.dirs.clone();
    let started = Instant::now();
    std::fs::write(dirs.inbox.join("abgebrochen.xml"), &request(1)[..700]).unwrap();
    wait_until("the file rejected", Duration::from_secs(30), || files_in(&dirs.error()).len() == 2).await;
    assert!(started.elapsed() >= Duration::from_secs(1), "waited for its writer first");
    let reason_file = files_in(&dirs.error()).into_iter().find(|n| n.ends_with(".error.txt")).unwrap();
    let reason = std::fs::read_to_string(dirs.error().join(reason_file)).unwrap();
    assert!(reason.contains("truncated"), "{reason}");
    s.stop.send(true).unwrap();
    s.task.await.unwrap().unwrap();
}

/// A rejected message keeps only its first `intake.keep_rejected_bytes` in the ledger (a
/// hostile 2 MB body is not stored forever); its SHA-256 is the whole message's, and the
/// request's detail (and `request show`) says how much was kept of how many bytes. A small
/// rejected message is kept whole; an accepted one always is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_message_keeps_only_the_first_bytes_of_its_payload() {
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let ledger = ledger::open(&format!("sqlite:{}", root.join("ledger.sqlite").display())).await.unwrap();
    ledger.migrate().await.unwrap();
    let intake = Intake::new(ledger.clone(), Arc::new(Checker::with_defaults()));
    assert_eq!(intake.keep_rejected_bytes, 64 * 1024, "the default");
    // A family name of 2 MB: refused by length.
    let hostile = request(1).replacen("Mustermann", &"x".repeat(2 * 1024 * 1024), 1).into_bytes();
    let size = hostile.len();
    let sha = hex::encode(sha2::Sha256::digest(&hostile));
    let amtsbote::intake::Outcome::Rejected { id, .. } = intake.accept("demo", "http:demo:big", None, hostile.clone()).await.unwrap() else { panic!("rejected") };
    let stored = ledger.payload(id).await.unwrap();
    assert_eq!(stored.len(), 64 * 1024);
    assert_eq!(stored[..], hostile[..64 * 1024], "the first bytes");
    let recorded = ledger.get(id).await.unwrap().unwrap();
    assert_eq!(recorded.sha256, sha, "the hash of the whole message");
    let detail = recorded.state_detail.unwrap();
    assert!(detail.contains(&format!("the first 65536 of {size} bytes")), "{detail}");
    let shown = Command::new(env!("CARGO_BIN_EXE_amtsbote")).args(["request", "show", &id.to_string()]).env("AMTSBOTE_DATA_DIR", root).env_remove("AMTSBOTE_CONFIG").env_remove("AMTSBOTE_LEDGER_URL").output().unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains(&format!("payload kept: the first 65536 of {size} bytes")) && shown.contains(&sha), "{shown}");
    // Posted again: the same request, by the same source.
    assert!(matches!(intake.accept("demo", "http:demo:big", None, hostile).await.unwrap(), amtsbote::intake::Outcome::AlreadyRecorded { id: again, .. } if again == id));

    // Small and rejected: kept whole. Configurable.
    let small = request(2).replacen("Mustermann", "Muster\u{202E}mann", 1).into_bytes();
    let amtsbote::intake::Outcome::Rejected { id, .. } = intake.accept("demo", "http:demo:small", None, small.clone()).await.unwrap() else { panic!("rejected") };
    assert_eq!(ledger.payload(id).await.unwrap(), small);
    assert!(!ledger.get(id).await.unwrap().unwrap().state_detail.unwrap().contains("payload kept"));
    let tight = intake.clone().with_keep_rejected_bytes(100);
    let amtsbote::intake::Outcome::Rejected { id, .. } = tight.accept("demo", "http:demo:tight", None, request(3).replacen("Mustermann", "Muster\u{202E}mann", 1).into_bytes()).await.unwrap() else { panic!("rejected") };
    assert_eq!(ledger.payload(id).await.unwrap().len(), 100);
    // Accepted messages are kept whole, whatever their size.
    let valid = request(4).into_bytes();
    let amtsbote::intake::Outcome::Accepted { id } = tight.accept("demo", "http:demo:valid", None, valid.clone()).await.unwrap() else { panic!("accepted") };
    assert_eq!(ledger.payload(id).await.unwrap(), valid);
}
