//! The operators' commands against a real data directory: migrate, config check, requests,
//! request show, queues, jobs, retry and discard of unknown ids.

use std::path::Path;
use std::process::{Command, Output};

fn amtsbote(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_amtsbote")).args(args).env("AMTSBOTE_DATA_DIR", data).env_remove("AMTSBOTE_CONFIG").output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn migrate_and_config_check() {
    let dir = tempfile::tempdir().unwrap();
    let out = amtsbote(dir.path(), &["migrate"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(dir.path().join("ledger.sqlite").is_file() && dir.path().join("queue.sqlite").is_file());
    // Twice is fine.
    assert_eq!(amtsbote(dir.path(), &["migrate"]).status.code(), Some(0));

    let out = amtsbote(dir.path(), &["config", "check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.contains("listen = \"127.0.0.1:8080\"") && shown.contains("id = \"demo\""), "{shown}");

    let file = dir.path().join("amtsbote.toml");
    std::fs::write(&file, "[intake]\npoll_intervall_ms = 5\n").unwrap();
    let out = amtsbote(dir.path(), &["--config", file.to_str().unwrap(), "config", "check"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("poll_intervall_ms"), "{}", text(&out.stderr));

    let out = Command::new(env!("CARGO_BIN_EXE_amtsbote"))
        .args(["config", "check"])
        .env("AMTSBOTE_DATA_DIR", dir.path())
        .env("AMTSBOTE_HTTP_LISEN", "x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("AMTSBOTE_HTTP_LISEN"), "{}", text(&out.stderr));
}

#[test]
fn requests_queues_and_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let out = amtsbote(dir.path(), &["requests"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no requests match"));

    let out = amtsbote(dir.path(), &["request", "show", "42"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not in the ledger"));
    assert_eq!(amtsbote(dir.path(), &["request", "show", "abc"]).status.code(), Some(2));

    let out = amtsbote(dir.path(), &["queues"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    for q in ["intake", "route", "transmit", "print", "notify", "receive"] {
        assert!(table.contains(q), "{table}");
    }
    assert_eq!(amtsbote(dir.path(), &["jobs", "--failed"]).status.code(), Some(0));
    assert_eq!(amtsbote(dir.path(), &["retry", "01NOSUCHJOB"]).status.code(), Some(1));
    assert_eq!(amtsbote(dir.path(), &["discard", "01NOSUCHJOB"]).status.code(), Some(1));
    assert_eq!(amtsbote(dir.path(), &["requests", "--state", "nonsense"]).status.code(), Some(2));
}

#[test]
fn queues_shows_what_waits_in_each_inbox_and_who_takes_it_in() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox/demo");
    std::fs::create_dir_all(inbox.join("processing")).unwrap();
    std::fs::write(inbox.join("a.xml"), "<a/>").unwrap();
    std::fs::write(inbox.join("b.xml"), "<b/>").unwrap();
    std::fs::write(inbox.join("still-writing.xml.part"), "<").unwrap();
    std::fs::write(inbox.join("processing/01JDCLAIM00000000000000000--c.xml"), "<c/>").unwrap();
    let row = |out: &Output| text(&out.stdout).lines().find(|l| l.starts_with("demo ")).map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>()).unwrap_or_default();

    let out = amtsbote(dir.path(), &["queues"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let demo = row(&out);
    assert_eq!(&demo[..3], ["demo", "2", "1"], "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("nobody"), "{}", text(&out.stdout));

    // A process holding the inbox's lock, as `serve` does: named in the table.
    let lock = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(inbox.join(amtsbote::intake::inbox::LOCK_FILE)).unwrap();
    lock.lock().unwrap();
    std::io::Write::write_all(&mut &lock, b"pid 4242 on testhost, since 2026-11-27T20:00:00Z\n").unwrap();
    let out = amtsbote(dir.path(), &["queues"]);
    assert!(text(&out.stdout).contains("pid 4242 on testhost"), "{}", text(&out.stdout));
}

/// A script that reads only the first line (`amtsbote requests | head -1`) closes the pipe
/// early: the command ends quietly, without a panic's message on stderr.
#[test]
fn a_closed_pipe_ends_the_command_quietly() {
    use std::io::Read;
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(amtsbote(dir.path(), &["migrate"]).status.code(), Some(0));
    let mut child = Command::new(env!("CARGO_BIN_EXE_amtsbote"))
        .args(["config", "check"])
        .env("AMTSBOTE_DATA_DIR", dir.path())
        .env_remove("AMTSBOTE_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close our end of stdout before the command writes its many lines.
    drop(child.stdout.take());
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    child.wait().unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
}
