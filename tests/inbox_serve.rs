//! The inbox as the real `amtsbote serve` takes it in, where the operating system's side
//! matters: an error reading a file that passes (permission denied, seen by a serve that
//! runs as an unprivileged user, as in production) is retried, and a file name with a
//! newline cannot forge a log line or a line of `request show`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const EXAMPLE: &str = include_str!("../examples/messages/ersuchen.xml");

fn free_port() -> String {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string()
}

/// A running serve, killed when dropped: a failing assertion leaves no process behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `amtsbote serve` on the data dir `root`, its log (info) into `root/serve.log`; run by
/// `program` (the binary, or setpriv before it).
fn serve(program: &mut Command, root: &Path) -> Running {
    let log = std::fs::File::create(root.join("serve.log")).unwrap();
    program
        .arg("serve")
        .env("AMTSBOTE_DATA_DIR", root)
        .env("AMTSBOTE_HTTP_LISTEN", free_port())
        .env("AMTSBOTE_INTAKE_POLL_INTERVAL_MS", "20")
        .env("AMTSBOTE_INTAKE_SETTLE_MS", "10")
        .env("AMTSBOTE_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map(Running)
        .unwrap()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_file())).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.retain(|n| n != amtsbote::intake::inbox::LOCK_FILE);
    v.sort();
    v
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stops it with SIGTERM (its log is then complete), or kills it after 20 s.
fn stop(mut running: Running) {
    let child = &mut running.0;
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

#[test]
fn a_file_that_cannot_be_read_for_a_while_is_retried_not_rejected() {
    // Root reads every file; a serve as an unprivileged user (setpriv) meets "permission
    // denied" as production would, on a file whose producer sets its mode last.
    if !is_root() || Command::new("setpriv").arg("--version").output().is_err() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI runs as root with setpriv (util-linux)");
        eprintln!("SKIPPED: needs root and setpriv to run serve as another user");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // The binary and the data dir where the unprivileged user can reach them.
    let bin = root.join("amtsbote");
    std::fs::copy(env!("CARGO_BIN_EXE_amtsbote"), &bin).unwrap();
    let data = root.join("data");
    std::fs::create_dir_all(data.join("inbox/demo")).unwrap();
    for p in [root, &data, &data.join("inbox"), &data.join("inbox/demo"), &bin] {
        std::os::unix::fs::chown(p, Some(65534), Some(65534)).unwrap();
    }
    let file = data.join("inbox/demo/ersuchen.xml");
    std::fs::write(&file, EXAMPLE).unwrap();
    std::os::unix::fs::chown(&file, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();

    let mut program = Command::new("setpriv");
    program.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(&bin);
    let child = serve(&mut program, &data);
    let processing = data.join("inbox/demo/processing");
    wait_until("the file claimed", Duration::from_secs(60), || files_in(&processing).len() == 1);
    // Claimed, unreadable: it must stay claimed, not go to error/.
    std::thread::sleep(Duration::from_secs(2));
    assert!(files_in(&data.join("inbox/demo/error")).is_empty(), "rejected: {:?}", files_in(&data.join("inbox/demo/error")));
    assert_eq!(files_in(&processing).len(), 1);
    // The producer fixes the mode: the file is read and taken in.
    let claimed = processing.join(&files_in(&processing)[0]);
    std::fs::set_permissions(&claimed, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    wait_until("the file taken in", Duration::from_secs(30), || files_in(&data.join("inbox/demo/done")).len() == 1);
    stop(child);
    let log = std::fs::read_to_string(data.join("serve.log")).unwrap();
    assert_eq!(log.matches("claimed file not taken in yet").count(), 1, "said once, not at every retry:\n{log}");
}

#[test]
fn a_file_name_with_a_newline_is_escaped_in_the_log_and_in_request_show() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    std::fs::create_dir_all(data.join("inbox/demo")).unwrap();
    let name = "ersuchen\n2026-12-01T00:00:00Z  INFO forged: all requests deleted\u{202e}.xml";
    std::fs::write(data.join("inbox/demo").join(name), EXAMPLE).unwrap();
    let child = serve(&mut Command::new(env!("CARGO_BIN_EXE_amtsbote")), data);
    wait_until("the file taken in", Duration::from_secs(60), || files_in(&data.join("inbox/demo/done")).len() == 1);
    stop(child);
    let log = std::fs::read_to_string(data.join("serve.log")).unwrap();
    assert!(log.contains("message accepted"), "{log}");
    assert!(!log.lines().any(|l| l.starts_with("2026-12-01T00:00:00Z")), "a forged line in the log:\n{log}");
    assert!(log.contains(r"ersuchen\n2026-12-01T00:00:00Z  INFO forged: all requests deleted\u{202e}.xml"), "{log}");

    let show = Command::new(env!("CARGO_BIN_EXE_amtsbote")).args(["request", "show", "1"]).env("AMTSBOTE_DATA_DIR", data).output().unwrap();
    let out = String::from_utf8_lossy(&show.stdout);
    assert!(show.status.success(), "{out}");
    assert!(!out.lines().any(|l| l.starts_with("2026-12-01T00:00:00Z")), "{out}");
    assert!(out.contains(r"  file      ersuchen\n2026-12-01T00:00:00Z  INFO forged: all requests deleted\u{202e}.xml"), "{out}");
}
