//! Every command in README.md is run, so the README cannot drift from the program.
//!
//! - The shell blocks (```sh) of "Quick start" are run line by line as a newcomer types them,
//!   with the RELEASE binary (`cargo run --release --` replaced by its path), in an empty
//!   folder as the working directory (with `examples/` linked in, as in a checkout): the first
//!   line starts `serve` in the background, every other line must exit 0. After each line the
//!   test waits until the pipeline has settled (files taken in, requests at rest, messages
//!   received, emails written) — a person reads the output meanwhile. Two things differ from
//!   a terminal, both to share the machine with other tests: the HTTP address
//!   (`127.0.0.1:8080` in the README) is a free port, and the clock of the print schedule is
//!   fixed at 23:00 Europe/Berlin (`AMTSBOTE_TEST_NOW`), after the nightly batch's time, when
//!   `serve` catches up the night at start — the walk-through must work then too.
//!   Variables a line exports (`TOKEN`) are kept for the lines after it.
//! - Shell lines outside the quick start must be in [`NOT_RUN`] with the reason and where
//!   they are run instead; a new line in neither fails this test, naming it.
//! - Each subcommand in the "Command line" table exists (`amtsbote <cmd> --help` exits 0).
//!
//! tests/e2e.rs goes the same way and checks every outcome.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support/serve.rs"]
mod serve_support;
#[path = "support/release.rs"]
mod release_support;
use release_support::*;

const README: &str = include_str!("../README.md");

/// Shell lines outside the quick start that this test does not run: (the line, or its start
/// when it ends in a space; why; where it runs instead).
const NOT_RUN: &[(&str, &str, &str)] = &[
    ("scripts/test", "the whole suite: it runs this test", "CI (.ci/run calls it)"),
    (
        "cargo bench --bench ",
        "a benchmark takes minutes to hours at its full sizes",
        "scripts/test builds every benchmark and runs the queue_drain, pipeline, xta, print and mail ones as 200-item smoke runs (cargo test --bench NAME); the full runs by hand",
    ),
    ("benches/http_lookup.sh [seconds]", "needs wrk and loads the machine for its seconds", "by hand (README, Benchmarks)"),
];

/// A shell line of the README: its section, the command (continuations joined, without a
/// trailing comment for matching), and the text as written.
#[derive(Debug)]
struct ShellLine {
    section: String,
    command: String,
    text: String,
}

/// Every line of the README's shell blocks (```sh, ```bash, ```shell), in order.
fn shell_lines(readme: &str) -> Vec<ShellLine> {
    let mut lines = Vec::new();
    let mut section = String::new();
    let mut in_shell: Option<bool> = None;
    let mut pending = String::new();
    for line in readme.lines() {
        if let Some(fence) = line.trim_start().strip_prefix("```") {
            in_shell = match in_shell {
                Some(_) => None,
                None => Some(matches!(fence.trim(), "sh" | "bash" | "shell")),
            };
            continue;
        }
        match in_shell {
            None => {
                if let Some(heading) = line.strip_prefix("## ") {
                    section = heading.trim().to_string();
                }
            }
            Some(false) => {}
            Some(true) => {
                if let Some(start) = line.strip_suffix('\\') {
                    pending.push_str(start);
                    pending.push(' ');
                    continue;
                }
                let text = format!("{pending}{line}");
                pending.clear();
                let trimmed = text.trim();
                if trimmed.is_empty() || trimmed.starts_with('#') {
                    continue;
                }
                lines.push(ShellLine { section: section.clone(), command: without_comment(trimmed), text: trimmed.to_string() });
            }
        }
    }
    lines
}

/// A line without its trailing `# comment` (a `#` after a blank, outside quotes).
fn without_comment(line: &str) -> String {
    let (mut single, mut double, mut prev) = (false, false, ' ');
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && prev.is_whitespace() => return line[..i].trim_end().to_string(),
            _ => {}
        }
        prev = c;
    }
    line.trim_end().to_string()
}

fn not_run(command: &str) -> Option<&'static (&'static str, &'static str, &'static str)> {
    NOT_RUN.iter().find(|(line, _, _)| if line.ends_with(' ') { command.starts_with(line) } else { command == *line })
}

#[test]
fn every_shell_line_outside_the_quick_start_is_listed_with_where_it_runs() {
    let lines = shell_lines(README);
    assert!(lines.iter().any(|l| l.section.starts_with("Quick start")), "the README has a quick start with shell blocks");
    let unlisted: Vec<String> =
        lines.iter().filter(|l| !l.section.starts_with("Quick start") && not_run(&l.command).is_none()).map(|l| format!("{} (section \"{}\")", l.text, l.section)).collect();
    assert!(
        unlisted.is_empty(),
        "README shell lines neither in the quick start (run by this test) nor in NOT_RUN of tests/readme.rs (with the reason and where they run): {unlisted:#?}"
    );
    // And nothing listed that the README no longer has.
    for (line, _, _) in NOT_RUN {
        assert!(lines.iter().any(|l| not_run(&l.command).is_some_and(|(n, _, _)| n == line)), "NOT_RUN lists {line:?}, which is in no README shell block any more");
    }
}

/// The subcommand words of a command as the table shows it: `amtsbote request show ID
/// [--json]` → [request, show].
fn subcommand(span: &str) -> Vec<String> {
    let span = span.strip_prefix("amtsbote ").unwrap_or(span);
    span.split_whitespace()
        .take_while(|w| w.chars().next().is_some_and(|c| c.is_ascii_lowercase()) && w.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
        .map(str::to_owned)
        .collect()
}

/// Every command in the first column of the "Command line" table.
fn table_commands(readme: &str) -> Vec<Vec<String>> {
    let start = readme.find("## Command line").expect("the README has a Command line section");
    let section = &readme[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let mut commands = Vec::new();
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let first = row.trim_start_matches('|').split(" | ").next().unwrap_or_default();
        for span in first.split('`').skip(1).step_by(2) {
            let words = subcommand(span);
            if !words.is_empty() && !commands.contains(&words) {
                commands.push(words);
            }
        }
    }
    commands
}

#[test]
fn each_subcommand_in_the_command_line_table_exists() {
    let commands = table_commands(README);
    assert!(commands.len() >= 20, "the table's commands: {commands:?}");
    for must in [&["serve"][..], &["print-batch", "run"], &["token", "revoke"], &["xta-sim", "put"], &["request", "show"]] {
        assert!(commands.iter().any(|c| c == must), "{must:?} in the table: {commands:?}");
    }
    let binary = release_binary();
    for words in &commands {
        let out = scrubbed(&mut Command::new(&binary)).args(words).arg("--help").output().unwrap();
        assert!(out.status.success(), "amtsbote {} --help: {}", words.join(" "), String::from_utf8_lossy(&out.stderr));
    }
}

/// Runs `line` in bash in `cwd`, with the variables exported by the lines before it (kept
/// in `env_file`); returns (exit code, stdout, stderr).
fn run_line(line: &str, cwd: &Path, env_file: &Path, env: &[(&str, String)]) -> (Option<i32>, String, String) {
    let script = format!("set -a; . '{}'; set +a\n{line}\nrc=$?\nexport -p > '{}'\nexit $rc\n", env_file.display(), env_file.display());
    let mut child = scrubbed(&mut Command::new("bash"))
        .args(["--noprofile", "--norc", "-c", &script])
        .current_dir(cwd)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut out, &mut s).ok();
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut err, &mut s).ok();
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("README line ran for more than 2 minutes: {line}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.code(), reader.join().unwrap(), err_reader.join().unwrap())
}

/// Takes the test's own `AMTSBOTE_*` variables out of `command`'s environment: they would
/// change what the README's commands do.
fn scrubbed(command: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("AMTSBOTE_")) {
        command.env_remove(key);
    }
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_start_runs_as_written() {
    let binary = release_binary();
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    std::os::unix::fs::symlink(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples"), cwd.join("examples")).unwrap();
    let env_file = cwd.join(".readme-env");
    std::fs::write(&env_file, "").unwrap();
    let listen = serve_support::free_port();
    let env: Vec<(&str, String)> = vec![("AMTSBOTE_HTTP_LISTEN", listen.clone()), ("AMTSBOTE_TEST_NOW", LATE_EVENING.into())];
    let substitute = |line: &str| line.replace("cargo run --release --", &binary.display().to_string()).replace("127.0.0.1:8080", &listen);

    let lines: Vec<ShellLine> = shell_lines(README).into_iter().filter(|l| l.section.starts_with("Quick start")).collect();
    let (first, rest) = lines.split_first().expect("quick start lines");
    assert_eq!(first.command, "cargo run --release -- serve", "the quick start begins by starting serve");
    let serve_log = cwd.join(".serve.log");
    let mut serve = serve_support::Running(
        scrubbed(&mut Command::new(&binary))
            .arg("serve")
            .current_dir(cwd)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&serve_log).unwrap())
            .spawn()
            .unwrap(),
    );
    let log = || std::fs::read_to_string(&serve_log).unwrap_or_default();
    // Ready: HTTP answers, and the print stage has caught up the night (at 23:00 it does).
    release_support::wait_until_ready(&mut serve, &listen, &serve_log).await;
    let data: PathBuf = cwd.join("amtsbote-data");
    let mut received = 0;
    for line in rest {
        let command = substitute(&line.text);
        println!("$ {}", line.text);
        let (code, out, err) = run_line(&command, cwd, &env_file, &env);
        print!("{out}");
        eprint!("{err}");
        assert_eq!(code, Some(0), "README quick start line failed: {}\nstdout: {out}\nstderr: {err}", line.text);
        if line.command.contains(" xta-sim put ") {
            received += 1;
        }
        settle(&data, received, Duration::from_secs(120)).await;
    }
    assert!(serve.try_wait().unwrap().is_none(), "serve ended during the walk-through: {}", log());
    serve.kill().unwrap();
    serve.wait().unwrap();
}

#[test]
fn the_parser_joins_continuations_and_drops_comments() {
    let readme = "## Quick start\n\n```sh\ncargo run --release -- serve\ncurl -s \\\n     -X POST 'http://x/#frag'   # posts\n# a comment\n```\n\n## Other\n\n```text\nnot shell\n```\n";
    let lines = shell_lines(readme);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[1].command, "curl -s       -X POST 'http://x/#frag'");
    assert_eq!(subcommand("amtsbote print-batch run [--date YYYY-MM-DD]"), ["print-batch", "run"]);
    assert_eq!(subcommand("token revoke N"), ["token", "revoke"]);
    assert_eq!(subcommand("amtsbote directory import …"), ["directory", "import"]);
}
