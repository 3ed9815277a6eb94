//! What the pipeline benches share (included by `#[path]`): the sample requests, the data
//! directory's configuration, the runtime and logging, counting files and states, and the
//! [`Rate`] every timed part reports. Not every bench uses every item.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use amtsbote::config::Config;
use amtsbote::ledger::RequestState;

/// The sample request; each copy gets its own Nachrichten-UUID in place of [`UUID`].
pub const EXAMPLE: &str = include_str!("../../examples/messages/ersuchen.xml");
pub const UUID: &str = "7d3c1f0e-2b7a-4c55-9a51-0c2f5f7e9b11";

/// How often the counters are read while something is timed.
pub const TICK: Duration = Duration::from_millis(5);
/// Progress on stderr this often.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// The sample request with the Nachrichten-UUID `<group>-<i as 12 hex digits>`, `group`
/// four hex digits (requests of different groups never collide).
pub fn request(group: &str, i: usize) -> String {
    EXAMPLE.replace(UUID, &format!("7d3c1f0e-2b7a-4c55-{group}-{i:012x}"))
}

/// The number a Nachrichten-UUID made by [`request`] with `group` carries.
pub fn request_number(group: &str, uuid: &str) -> Option<usize> {
    let rest = uuid.strip_prefix("7d3c1f0e-2b7a-4c55-")?.strip_prefix(group)?.strip_prefix('-')?;
    usize::from_str_radix(rest, 16).ok()
}

/// Writes requests `range` of `group` into `dir` as `<prefix>-<i>.xml`; their names.
pub fn write_requests(dir: &Path, prefix: &str, group: &str, range: std::ops::Range<usize>) -> Vec<String> {
    std::fs::create_dir_all(dir).unwrap();
    range
        .map(|i| {
            let name = format!("{prefix}-{i:06}.xml");
            std::fs::write(dir.join(&name), request(group, i)).unwrap();
            name
        })
        .collect()
}

pub fn env_secs(name: &str, default: u64) -> Duration {
    Duration::from_secs(std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default))
}

/// Entries in a folder (0 when it is missing).
pub fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// The configuration of a fresh data directory at `root`: the defaults, but for `env`
/// (`AMTSBOTE_*` variables).
pub fn config(root: &Path, env: &[(&str, String)]) -> Config {
    let mut vars: Vec<(String, String)> = vec![("AMTSBOTE_DATA_DIR".into(), root.display().to_string())];
    vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.clone())));
    Config::load_with(None, &vars).expect("config")
}

/// `jobs/print.toml` without its `[schedule]` in the data directory at `root`: `serve`'s
/// stages then make no nightly batch of their own, whatever the time of day.
pub fn no_print_schedule(root: &Path) {
    let jobs = root.join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    let shipped = amtsbote::queue::Queue::Print.default_config();
    let cut = shipped.find("[schedule]").unwrap_or(shipped.len());
    std::fs::write(jobs.join("print.toml"), &shipped[..cut]).unwrap();
}

pub fn in_state(by_state: &[(RequestState, u64)], s: RequestState) -> usize {
    by_state.iter().find(|(st, _)| *st == s).map_or(0, |(_, c)| *c) as usize
}

/// The states that hold requests, with their counts.
pub fn states(by_state: &[(RequestState, u64)]) -> String {
    by_state.iter().filter(|(_, c)| *c > 0).map(|(s, c)| format!("{s} {c}")).collect::<Vec<_>>().join(", ")
}

/// Warnings of the stages (a failed stage, a retried job) on stderr; `AMTSBOTE_LOG` overrides.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("AMTSBOTE_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,sqlx=error")))
        .with_writer(std::io::stderr)
        .try_init();
}

/// tokio with two worker threads, as on the 2-core machine the goals are set for.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// What one timed part measured.
#[derive(Debug, Default)]
pub struct Rate {
    /// Items finished when the clock stopped: N unless it stopped early.
    pub done: usize,
    pub seconds: f64,
    pub rate: f64,
    /// Why it stopped early, if it did.
    pub incomplete: Option<String>,
}

impl Rate {
    pub fn of(done: usize, elapsed: Duration, incomplete: Option<String>) -> Rate {
        Rate { done, seconds: elapsed.as_secs_f64(), rate: done as f64 / elapsed.as_secs_f64().max(1e-9), incomplete }
    }
}

/// `*` beside a figure that did not finish.
pub fn star(incomplete: &Option<String>) -> &'static str {
    if incomplete.is_some() { "*" } else { " " }
}
