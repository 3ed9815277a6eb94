//! The inbox watcher: takes files that enforcement software drops into a tenant's folder.
//!
//! Per tenant folder `inbox/<tenant>/`:
//! - dotfiles, `*.part` and `*.tmp` are someone still writing: ignored;
//! - only names matching `intake.patterns` (default `*.xml`, without regard to case) are
//!   taken; any other file is left where it is, named once in the log and counted in
//!   `amtsbote queues` and `/metrics` (`amtsbote_inbox_not_taken_files`);
//! - a regular file is taken only when its size and mtime did not change between two scans
//!   at least `settle_ms` apart;
//! - a claimed file that looks cut off (an XML start without the end of its root element)
//!   while it was written to within `intake.incomplete_wait_secs` is not rejected but
//!   waited for: a producer still copying it (slowly, over a network share, or appending
//!   through a handle it keeps open) finishes it in `processing/`, and it is read again;
//! - an error reading it that may pass (permission denied, too many open files, an I/O
//!   error) is retried for `intake.read_retry_secs` after the claim before the file is
//!   rejected as unreadable;
//! - it is claimed by an atomic rename into `processing/<ulid>--<name>` — the claim is the
//!   durable queue of this stage: whatever sits in `processing/` is (re)done, at start-up
//!   and after any failure, and recording is idempotent by the claim's name;
//! - then it moves to `done/<claim>` or to `error/<claim>` beside `<claim>.error.txt`, which
//!   names the reason (rejected, duplicate, refused).
//!
//! Symlinks, FIFOs, sockets and devices are refused into `error/` without being opened.
//! File names are shown escaped (`\n`, `\u{202e}`) in the log and the command line: a name
//! is the sender's text and must not forge a log line.
//!
//! One process takes each inbox in: the watcher holds an exclusive lock on
//! `inbox/<tenant>/.amtsbote-watcher.lock` while it works there (the kernel lets go of it when
//! the process ends, however it ends). A second `amtsbote serve` on the same folders leaves
//! that inbox alone, says so once, and takes over when the first one stops. Without the lock
//! both would resume each other's claims in `processing/`.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Semaphore, watch};

use super::{Intake, Outcome};
use crate::ledger::RequestState;
use crate::xamtshilfe::read::FileError;
use crate::xamtshilfe::{Limits, ReadError, read};

/// The folders of one tenant's inbox.
#[derive(Debug, Clone)]
pub struct InboxDirs {
    pub tenant: String,
    pub inbox: PathBuf,
}

impl InboxDirs {
    pub fn processing(&self) -> PathBuf {
        self.inbox.join("processing")
    }
    pub fn done(&self) -> PathBuf {
        self.inbox.join("done")
    }
    pub fn error(&self) -> PathBuf {
        self.inbox.join("error")
    }

    /// Creates the folders.
    pub fn create(&self) -> std::io::Result<()> {
        for d in [self.inbox.clone(), self.processing(), self.done(), self.error()] {
            std::fs::create_dir_all(d)?;
        }
        Ok(())
    }
}

/// Settings of the watcher.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    pub poll_interval: Duration,
    pub settle: Duration,
    /// Files processed at once.
    pub concurrency: usize,
    pub limits: Limits,
    /// The names taken in.
    pub patterns: Patterns,
    /// How long a file that looks cut off is waited for after its last write.
    pub incomplete_wait: Duration,
    /// How long an error reading a claimed file that may pass is retried.
    pub read_retry: Duration,
}

impl Default for WatchConfig {
    /// The defaults of `[intake]` (see `config::IntakeConfig`).
    fn default() -> Self {
        WatchConfig {
            poll_interval: Duration::from_millis(200),
            settle: Duration::from_millis(100),
            concurrency: 4,
            limits: Limits::default(),
            patterns: Patterns::default(),
            incomplete_wait: Duration::from_secs(600),
            read_retry: Duration::from_secs(600),
        }
    }
}

/// Which file names are taken: shell-style patterns (`*` any run of characters, `?` one
/// character), each matched against the whole name without regard to case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patterns(Arc<[String]>);

impl Default for Patterns {
    fn default() -> Self {
        Patterns(Arc::from(vec!["*.xml".to_owned()]))
    }
}

impl Patterns {
    /// Refuses an empty list, an empty pattern and a pattern with a `/` (names only).
    pub fn new(patterns: &[String]) -> Result<Patterns, String> {
        if patterns.is_empty() {
            return Err("intake.patterns is empty: no file would ever be taken in (the default is [\"*.xml\"])".into());
        }
        for p in patterns {
            if p.is_empty() || p.contains('/') {
                return Err(format!("intake.patterns: {p:?} is not a file name pattern (like \"*.xml\")"));
            }
        }
        Ok(Patterns(patterns.iter().map(|p| p.to_lowercase()).collect()))
    }

    pub fn matches(&self, name: &OsStr) -> bool {
        let name = name.to_string_lossy().to_lowercase();
        self.0.iter().any(|p| glob(p.as_bytes(), name.as_bytes()))
    }
}

impl std::fmt::Display for Patterns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(", "))
    }
}

/// Whether `name` matches `pattern` (`*`, `?`), byte by byte: the last `*` is backtracked to,
/// so the cost stays linear in practice and a hostile name cannot make it explode.
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == b'?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Counters for progress reports and metrics.
#[derive(Debug, Default)]
pub struct Stats {
    pub accepted: std::sync::atomic::AtomicU64,
    pub rejected: std::sync::atomic::AtomicU64,
    pub duplicates: std::sync::atomic::AtomicU64,
    pub refused: std::sync::atomic::AtomicU64,
    pub retried: std::sync::atomic::AtomicU64,
    /// Per tenant whose inbox this process takes in: what waits there, as of its last scan.
    pub backlog: std::sync::Mutex<std::collections::BTreeMap<String, Backlog>>,
}

/// What waits in one inbox: the answer to "is anything stuck?".
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Backlog {
    /// Files in the inbox not taken yet (settling, or waiting for a free worker).
    pub waiting: u64,
    /// Claims in `processing/`: being recorded, or waiting for the ledger to come back.
    pub processing: u64,
    /// Seconds since the oldest waiting file was last written (0 when none waits).
    pub oldest_waiting_secs: u64,
    /// Files left in the inbox because their names match none of `intake.patterns`.
    pub not_taken: u64,
}

/// Watches the inbox folders until `shutdown` turns true.
pub struct Watcher {
    intake: Intake,
    dirs: Vec<InboxDirs>,
    config: WatchConfig,
    pub stats: Arc<Stats>,
    /// Claims this process already said it waits for (said once, not at every retry).
    waiting_said: std::sync::Mutex<HashSet<PathBuf>>,
}

/// A file seen in an inbox, waiting to be stable.
struct Seen {
    size: u64,
    mtime: SystemTime,
    since: Instant,
}

impl Watcher {
    pub fn new(intake: Intake, dirs: Vec<InboxDirs>, config: WatchConfig) -> Self {
        Watcher { intake, dirs, config, stats: Arc::new(Stats::default()), waiting_said: std::sync::Mutex::default() }
    }

    /// Counts into `stats` (kept across restarts of the watcher by its supervisor).
    pub fn with_stats(mut self, stats: Arc<Stats>) -> Self {
        self.stats = stats;
        self
    }

    /// Runs until `shutdown` is true; files being processed then are finished first.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        for d in &self.dirs {
            d.create().map_err(|e| anyhow::anyhow!("cannot create inbox folders under {}: {e}", d.inbox.display()))?;
        }
        let this = Arc::new(self);
        let permits = Arc::new(Semaphore::new(this.config.concurrency.max(1)));
        let in_flight: Arc<std::sync::Mutex<HashSet<PathBuf>>> = Arc::default();
        let mut seen: HashMap<PathBuf, Seen> = HashMap::new();
        let mut not_taken: HashSet<PathBuf> = HashSet::new();
        let mut owners: HashMap<PathBuf, InboxOwner> = HashMap::new();
        loop {
            for dirs in &this.dirs {
                if !owners.entry(dirs.inbox.clone()).or_default().try_own(dirs) {
                    continue;
                }
                // Claimed earlier and not finished (a crash, a database outage): do again.
                let claims = list_files(&dirs.processing());
                let processing = claims.len() as u64;
                for claim in claims {
                    let path = dirs.processing().join(&claim);
                    if in_flight.lock().map(|mut s| s.insert(path.clone())).unwrap_or(false) {
                        spawn_process(&this, dirs.clone(), claim, path, &permits, &in_flight).await;
                    }
                }
                let scan = this.scan(dirs, &mut seen, &mut not_taken, &permits, &in_flight).await;
                let oldest_waiting_secs = scan.oldest.and_then(|t| t.elapsed().ok()).map_or(0, |age| age.as_secs());
                if let Ok(mut backlog) = this.stats.backlog.lock() {
                    let b = Backlog { waiting: scan.waiting, processing, oldest_waiting_secs, not_taken: scan.not_taken };
                    backlog.insert(dirs.tenant.clone(), b);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(this.config.poll_interval) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                break;
            }
        }
        // Wait for the files being processed.
        let _all = permits.acquire_many(this.config.concurrency.max(1) as u32).await;
        Ok(())
    }

    /// One pass over the inbox: claims the files that settled, and tells what was left.
    async fn scan(
        self: &Arc<Self>,
        dirs: &InboxDirs,
        seen: &mut HashMap<PathBuf, Seen>,
        not_taken: &mut HashSet<PathBuf>,
        permits: &Arc<Semaphore>,
        in_flight: &Arc<std::sync::Mutex<HashSet<PathBuf>>>,
    ) -> Scan {
        let Ok(entries) = std::fs::read_dir(&dirs.inbox) else {
            tracing::warn!(tenant = %dirs.tenant, folder = %dirs.inbox.display(), "inbox folder cannot be read");
            return Scan::default();
        };
        let now = Instant::now();
        let mut present = HashSet::new();
        let mut left = HashSet::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            if ignored(&name) {
                continue;
            }
            let Ok(file_type) = entry.file_type() else { continue };
            if file_type.is_dir() {
                continue;
            }
            let path = entry.path();
            if !self.config.patterns.matches(&name) {
                // Not ours to take (a readme, a report the producer keeps there): left alone,
                // and said once.
                if !not_taken.contains(&path) {
                    tracing::warn!(
                        tenant = %dirs.tenant, file = %shown(&name), patterns = %self.config.patterns,
                        "file left in the inbox: its name matches none of intake.patterns; rename it or add a pattern"
                    );
                }
                left.insert(path);
                continue;
            }
            if !file_type.is_file() {
                let what = if file_type.is_symlink() { "a symbolic link" } else { "not a regular file (FIFO, socket or device)" };
                self.refuse(dirs, &name, &format!("refused: {what}; only regular files are taken"));
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            let (size, mtime) = (meta.len(), meta.modified().unwrap_or(SystemTime::UNIX_EPOCH));
            present.insert(path.clone());
            match seen.get(&path) {
                Some(s) if s.size == size && s.mtime == mtime && now.duration_since(s.since) >= self.config.settle => {
                    seen.remove(&path);
                    present.remove(&path);
                    let claim = claim_name(&name);
                    let target = dirs.processing().join(&claim);
                    match std::fs::rename(&path, &target) {
                        Ok(()) => {
                            if in_flight.lock().map(|mut s| s.insert(target.clone())).unwrap_or(false) {
                                spawn_process(self, dirs.clone(), claim, target, permits, in_flight).await;
                            }
                        }
                        // Taken by another process, or gone: nothing to do.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => tracing::warn!(tenant = %dirs.tenant, error = %e, "cannot claim a file from the inbox"),
                    }
                }
                Some(s) if s.size == size && s.mtime == mtime => {}
                _ => {
                    seen.insert(path, Seen { size, mtime, since: now });
                }
            }
        }
        seen.retain(|p, _| !p.starts_with(&dirs.inbox) || present.contains(p));
        not_taken.retain(|p| !p.starts_with(&dirs.inbox));
        let not_taken_here = left.len() as u64;
        not_taken.extend(left);
        // What is left in `seen` for this inbox is what still waits there.
        let oldest = seen.iter().filter(|(p, _)| p.starts_with(&dirs.inbox)).map(|(_, s)| s.mtime).min();
        Scan { waiting: present.len() as u64, oldest, not_taken: not_taken_here }
    }

    /// Moves a file that must not be read to `error/` with the reason.
    fn refuse(&self, dirs: &InboxDirs, name: &OsStr, reason: &str) {
        let claim = claim_name(name);
        let from = dirs.inbox.join(name);
        let to = dirs.error().join(&claim);
        if std::fs::rename(&from, &to).is_ok() {
            write_reason(&dirs.error(), &claim, reason, None);
            self.stats.refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(tenant = %dirs.tenant, file = %shown(&claim), "{reason}");
        }
    }

    /// Records one claimed file and moves it on. Returns false when it must be tried again.
    async fn process(&self, dirs: &InboxDirs, claim: &OsStr, path: &Path) -> bool {
        let original = original_name(claim);
        let source = format!("inbox:{}:{}", dirs.tenant, claim.to_string_lossy());
        let limits = self.config.limits;
        let bytes = match read::read_file_io(path, &limits) {
            Ok(b) => b,
            Err(FileError::Io(e)) if !path.exists() => {
                tracing::debug!(error = %e, "claimed file already moved on");
                return true;
            }
            Err(FileError::Io(e)) if may_pass(&e) && claimed_for(claim) < self.config.read_retry => {
                self.say_waiting(dirs, claim, path, &format!("cannot read it ({e}); trying again"));
                return false;
            }
            // Too large or unreadable: recorded as rejected without its content.
            Err(e) => {
                let e = match e {
                    FileError::Io(e) => ReadError::Io(e.to_string()),
                    FileError::Refused(e) => e,
                };
                let outcome = self.intake.accept_unreadable(&dirs.tenant, &source, Some(&original), e).await;
                return self.finish(dirs, claim, path, outcome);
            }
        };
        if looks_cut_off(&bytes) && written_within(path, self.config.incomplete_wait) {
            self.say_waiting(dirs, claim, path, "it looks cut off and was written to recently; waiting for its writer to finish");
            return false;
        }
        if let Ok(mut said) = self.waiting_said.lock() {
            said.remove(path);
        }
        let outcome = self.intake.accept(&dirs.tenant, &source, Some(&original), bytes).await;
        self.finish(dirs, claim, path, outcome)
    }

    /// Logs, once per claim, why it stays in `processing/` for now.
    fn say_waiting(&self, dirs: &InboxDirs, claim: &OsStr, path: &Path, why: &str) {
        let first = self.waiting_said.lock().map(|mut said| said.insert(path.to_path_buf())).unwrap_or(true);
        if first {
            tracing::info!(tenant = %dirs.tenant, file = %shown(claim), "claimed file not taken in yet: {why}");
        }
    }

    fn finish(&self, dirs: &InboxDirs, claim: &OsStr, path: &Path, outcome: Result<Outcome, crate::ledger::LedgerError>) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                // The ledger is unreachable: the claim stays in processing/ and is retried.
                self.stats.retried.fetch_add(1, Relaxed);
                tracing::warn!(tenant = %dirs.tenant, error = %e, "cannot record a message; will retry");
                return false;
            }
        };
        let name = shown(claim);
        let moved = match &outcome {
            Outcome::Accepted { id } | Outcome::AlreadyRecorded { id, state: None } => {
                self.stats.accepted.fetch_add(1, Relaxed);
                tracing::info!(tenant = %dirs.tenant, request = %id, file = %name, "message accepted");
                std::fs::rename(path, dirs.done().join(claim))
            }
            Outcome::AlreadyRecorded { id, state: Some(state) } if *state != RequestState::Rejected => {
                self.stats.accepted.fetch_add(1, Relaxed);
                tracing::info!(tenant = %dirs.tenant, request = %id, file = %name, "message was recorded before the restart");
                std::fs::rename(path, dirs.done().join(claim))
            }
            Outcome::Rejected { id, reasons } => {
                self.stats.rejected.fetch_add(1, Relaxed);
                tracing::warn!(tenant = %dirs.tenant, request = %id, file = %name, "message rejected");
                write_reason(&dirs.error(), claim, &format!("rejected: {}", reasons.join("\n")), Some(*id));
                std::fs::rename(path, dirs.error().join(claim))
            }
            Outcome::AlreadyRecorded { id, .. } => {
                self.stats.rejected.fetch_add(1, Relaxed);
                write_reason(&dirs.error(), claim, "rejected (see the request's journal for the reasons)", Some(*id));
                std::fs::rename(path, dirs.error().join(claim))
            }
            Outcome::Duplicate { existing, uuid } => {
                self.stats.duplicates.fetch_add(1, Relaxed);
                tracing::warn!(tenant = %dirs.tenant, existing = %existing, file = %name, "duplicate message refused");
                let reason = format!(
                    "duplicate: a message with nachrichtenUUID {uuid} was already taken in as request {existing}; it is not processed twice"
                );
                write_reason(&dirs.error(), claim, &reason, Some(*existing));
                std::fs::rename(path, dirs.error().join(claim))
            }
        };
        match moved {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(tenant = %dirs.tenant, file = %name, error = %e, "cannot move a processed file; will retry");
                false
            }
        }
    }
}

async fn spawn_process(
    watcher: &Arc<Watcher>,
    dirs: InboxDirs,
    claim: OsString,
    path: PathBuf,
    permits: &Arc<Semaphore>,
    in_flight: &Arc<std::sync::Mutex<HashSet<PathBuf>>>,
) {
    let Ok(permit) = permits.clone().acquire_owned().await else { return };
    let watcher = watcher.clone();
    let in_flight = in_flight.clone();
    tokio::spawn(async move {
        let done = watcher.process(&dirs, &claim, &path).await;
        if !done {
            // Back off a little before the next scan picks it up again.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if let Ok(mut s) = in_flight.lock() {
            s.remove(&path);
        }
        drop(permit);
    });
}

/// What one scan of an inbox left there.
#[derive(Debug, Default)]
struct Scan {
    /// Files waiting to settle or for a worker.
    waiting: u64,
    /// The last write of the oldest of them.
    oldest: Option<SystemTime>,
    /// Files whose names match none of the patterns.
    not_taken: u64,
}

/// A file name as the log and the command line show it: control characters, bidirectional
/// overrides and other invisible characters escaped (`\n`, `\u{202e}`), so that a name
/// cannot break a log line in two or reorder what is shown; letters of any script as they are.
pub fn shown(name: &OsStr) -> String {
    shown_str(&name.to_string_lossy())
}

/// [`shown`] for a name already read as text (the ledger's `file_name`).
pub fn shown_str(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        let invisible = c.is_control()
            || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}');
        if invisible || c == '\\' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether a read error may pass by itself, so the read is worth trying again.
fn may_pass(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    // EIO 5, EAGAIN 11, ENOMEM 12, ENFILE 23, EMFILE 24, ESTALE 116 (an NFS handle).
    matches!(e.kind(), K::PermissionDenied | K::Interrupted | K::WouldBlock | K::TimedOut | K::OutOfMemory)
        || matches!(e.raw_os_error(), Some(5 | 11 | 12 | 23 | 24 | 116))
}

/// How long ago the file was claimed: the time in its claim's ULID.
fn claimed_for(claim: &OsStr) -> Duration {
    let s = claim.to_string_lossy();
    let Some(stamp) = s.split_once("--").and_then(|(ulid, _)| ulid::Ulid::from_string(ulid).ok()) else {
        return Duration::MAX;
    };
    stamp.datetime().elapsed().unwrap_or_default()
}

/// Whether the file was last written less than `wait` ago.
fn written_within(path: &Path, wait: Duration) -> bool {
    std::fs::metadata(path).and_then(|m| m.modified()).is_ok_and(|t| t.elapsed().unwrap_or_default() < wait)
}

/// Whether the bytes begin like an XML document but do not end with the end of its root
/// element: a cut-off copy, cheaply told without parsing (the reader decides what is wrong
/// once the writer is done). An empty file counts as cut off (created, not yet written).
/// Bytes that do not begin like XML at all, or whose prolog this look cannot follow (a
/// DOCTYPE), are not: the reader rejects them at once.
fn looks_cut_off(bytes: &[u8]) -> bool {
    let start = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes).trim_ascii_start();
    if start.is_empty() {
        return true;
    }
    if start.first() != Some(&b'<') {
        return false;
    }
    match root(start) {
        Root::Found { empty: true, .. } | Root::Unknown => false,
        Root::Found { name, empty: false } => !ends_root(start, name),
        Root::CutOff => true,
    }
}

/// Whether the last `</name` in `text` closes it and only whitespace, comments and
/// processing instructions follow (what XML allows after the root element).
fn ends_root(text: &[u8], name: &[u8]) -> bool {
    let mut close = b"</".to_vec();
    close.extend_from_slice(name);
    let Some(at) = text.windows(close.len()).rposition(|w| w == close) else { return false };
    let Some(mut rest) = text[at + close.len()..].trim_ascii_start().strip_prefix(b">") else { return false };
    loop {
        rest = rest.trim_ascii_start();
        if rest.is_empty() {
            return true;
        }
        let next = if let Some(r) = rest.strip_prefix(b"<!--") {
            after(r, b"-->")
        } else if let Some(r) = rest.strip_prefix(b"<?") {
            after(r, b"?>")
        } else {
            None
        };
        match next {
            Some(r) => rest = r,
            None => return false,
        }
    }
}

/// What follows the first `close` in `rest`.
fn after<'b>(rest: &'b [u8], close: &[u8]) -> Option<&'b [u8]> {
    rest.windows(close.len()).position(|w| w == close).map(|i| &rest[i + close.len()..])
}

/// The root element as [`root`] found it.
enum Root<'a> {
    /// Its name, and whether its start tag is also its end (`<root/>`).
    Found { name: &'a [u8], empty: bool },
    /// The bytes end inside the prolog or the root's start tag.
    CutOff,
    /// A prolog this look does not follow (a DOCTYPE, something odd).
    Unknown,
}

/// The root element: the first start tag after the XML declaration, processing
/// instructions, comments and whitespace.
fn root(mut rest: &[u8]) -> Root<'_> {
    loop {
        rest = rest.trim_ascii_start();
        let next = if let Some(r) = rest.strip_prefix(b"<?") {
            after(r, b"?>")
        } else if let Some(r) = rest.strip_prefix(b"<!--") {
            after(r, b"-->")
        } else if b"<!--".starts_with(rest) {
            return Root::CutOff;
        } else if rest.starts_with(b"<!") {
            return Root::Unknown;
        } else if let Some(r) = rest.strip_prefix(b"<") {
            let Some(len) = r.iter().position(|&b| b.is_ascii_whitespace() || b == b'>' || b == b'/') else { return Root::CutOff };
            let Some(close) = r.iter().position(|&b| b == b'>') else { return Root::CutOff };
            return if len == 0 { Root::Unknown } else { Root::Found { name: &r[..len], empty: close > 0 && r[close - 1] == b'/' } };
        } else {
            return Root::Unknown;
        };
        match next {
            Some(r) => rest = r,
            None => return Root::CutOff,
        }
    }
}

/// Whether this process takes an inbox in: the lock on its `.amtsbote-watcher.lock`.
#[derive(Default)]
enum InboxOwner {
    /// Not tried yet.
    #[default]
    Unknown,
    /// Ours while the file stays open.
    Owned(#[allow(dead_code)] std::fs::File),
    /// Another process holds it (and we said so once).
    Elsewhere,
    /// The file system cannot lock (some network file systems): taken in without a lock.
    Unlocked,
}

impl InboxOwner {
    /// Whether this process may work in `dirs` now; tries to take the lock when it does not
    /// hold it, so that it takes over when the other process stops.
    fn try_own(&mut self, dirs: &InboxDirs) -> bool {
        if matches!(self, InboxOwner::Owned(_) | InboxOwner::Unlocked) {
            return true;
        }
        let path = dirs.inbox.join(LOCK_FILE);
        let file = match std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path) {
            Ok(file) => file,
            Err(e) => {
                tracing::warn!(tenant = %dirs.tenant, error = %e, "cannot open the inbox's lock file; taking the inbox in without it (run one amtsbote per inbox)");
                *self = InboxOwner::Unlocked;
                return true;
            }
        };
        match file.try_lock() {
            Ok(()) => {
                let holder = format!("pid {} on {}, since {}\n", std::process::id(), crate::hostname(), chrono::Utc::now().to_rfc3339());
                let _ = file.set_len(0).and_then(|()| std::io::Write::write_all(&mut &file, holder.as_bytes()));
                if matches!(self, InboxOwner::Elsewhere) {
                    tracing::info!(tenant = %dirs.tenant, "the other process stopped: this one takes the inbox in now");
                }
                *self = InboxOwner::Owned(file);
                true
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                if !matches!(self, InboxOwner::Elsewhere) {
                    let holder = std::fs::read_to_string(&path).unwrap_or_default();
                    tracing::info!(tenant = %dirs.tenant, holder = %holder.trim(), "another amtsbote process takes this inbox in; this one leaves it alone and takes over if that one stops");
                    *self = InboxOwner::Elsewhere;
                }
                false
            }
            Err(std::fs::TryLockError::Error(e)) => {
                tracing::warn!(tenant = %dirs.tenant, error = %e, "the inbox's file system cannot lock; taking the inbox in without a lock (run one amtsbote per inbox)");
                *self = InboxOwner::Unlocked;
                true
            }
        }
    }
}

/// An inbox as another process sees it (`amtsbote queues`): what waits, and which process
/// takes it in, read from the folders and the lock file.
#[derive(Debug, Clone, PartialEq)]
pub struct InboxReport {
    /// Files in the inbox not taken yet (matching the patterns; without dotfiles, `*.part`
    /// and `*.tmp`).
    pub waiting: u64,
    /// Files whose names match none of the patterns: left there.
    pub not_taken: u64,
    /// Claims in `processing/`.
    pub processing: u64,
    /// The last write of the oldest waiting file.
    pub oldest_waiting: Option<SystemTime>,
    /// Who holds the lock (pid, host, since), or None when no process takes the inbox in.
    pub taken_in_by: Option<String>,
}

impl InboxDirs {
    /// Looks at the folders and the lock, without taking anything. (Testing the lock holds
    /// it for an instant; a watcher starting in that instant takes the inbox a poll later.)
    pub fn report(&self, patterns: &Patterns) -> InboxReport {
        let (files, others): (Vec<std::fs::DirEntry>, Vec<std::fs::DirEntry>) = std::fs::read_dir(&self.inbox)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| !ignored(&e.file_name()) && e.file_type().is_ok_and(|t| t.is_file()))
            .partition(|e| patterns.matches(&e.file_name()));
        let waiting = files.len() as u64;
        let not_taken = others.len() as u64;
        let oldest_waiting = files.iter().filter_map(|e| e.metadata().and_then(|m| m.modified()).ok()).min();
        let processing = list_files(&self.processing()).len() as u64;
        let lock = self.inbox.join(LOCK_FILE);
        let taken_in_by = std::fs::File::open(&lock).ok().and_then(|file| match file.try_lock_shared() {
            Err(std::fs::TryLockError::WouldBlock) => Some(std::fs::read_to_string(&lock).unwrap_or_default().trim().to_owned()),
            _ => None,
        });
        InboxReport { waiting, not_taken, processing, oldest_waiting, taken_in_by }
    }
}

/// The lock file in each inbox (a dotfile: never taken as a message).
pub const LOCK_FILE: &str = ".amtsbote-watcher.lock";

/// Files being written by their sender: dotfiles, `*.part`, `*.tmp`.
fn ignored(name: &OsStr) -> bool {
    let b = name.as_bytes();
    let lower = b.to_ascii_lowercase();
    b.first() == Some(&b'.') || lower.ends_with(b".part") || lower.ends_with(b".tmp")
}

/// `<ulid>--<name>`, the name cut (at a character boundary where it is UTF-8) so that the
/// whole stays within the 255 bytes a file name may have.
fn claim_name(name: &OsStr) -> OsString {
    const MAX_NAME: usize = 255 - 28;
    let bytes = name.as_bytes();
    let mut cut = bytes.len().min(MAX_NAME);
    if let Ok(s) = std::str::from_utf8(bytes) {
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
    }
    let mut out = format!("{}--", ulid::Ulid::generate()).into_bytes();
    out.extend_from_slice(&bytes[..cut]);
    OsString::from_vec(out)
}

/// The name the sender gave the file (as far as it was kept), for the ledger.
fn original_name(claim: &OsStr) -> String {
    let s = claim.to_string_lossy();
    s.split_once("--").map_or(s.to_string(), |(_, rest)| rest.to_string())
}

/// Regular files directly in `dir`.
fn list_files(dir: &Path) -> Vec<OsString> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file() || t.is_symlink()))
        .map(|e| e.file_name())
        .collect()
}

/// Writes `<claim>.error.txt` beside the refused file.
fn write_reason(error_dir: &Path, claim: &OsStr, reason: &str, request: Option<crate::ledger::RequestId>) {
    let mut name = claim.to_os_string();
    name.push(".error.txt");
    let mut text = String::new();
    text.push_str(reason);
    text.push('\n');
    if let Some(id) = request {
        text.push_str(&format!("request: {id} (amtsbote request show {id})\n"));
    }
    if let Err(e) = std::fs::write(error_dir.join(name), text) {
        tracing::warn!(error = %e, "cannot write the reason file");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(ignored(OsStr::new(".hidden.xml")));
        assert!(ignored(OsStr::new("a.xml.part")));
        assert!(ignored(OsStr::new("a.TMP")));
        assert!(!ignored(OsStr::new("a.xml")));
        let long = "ä".repeat(200);
        let claim = claim_name(OsStr::new(&long));
        assert!(claim.len() <= 255, "{}", claim.len());
        assert!(claim.to_str().is_some(), "cut at a character boundary");
        let claim = claim_name(OsStr::new("-leading dash.xml"));
        assert_eq!(original_name(&claim), "-leading dash.xml");
    }

    #[test]
    fn patterns_match_whole_names_without_regard_to_case() {
        let p = Patterns::default();
        assert!(p.matches(OsStr::new("a.xml")) && p.matches(OsStr::new("A.XML")) && p.matches(OsStr::new(".xml")));
        assert!(!p.matches(OsStr::new("readme.txt")) && !p.matches(OsStr::new("a.xml.bak")) && !p.matches(OsStr::new("axml")));
        let p = Patterns::new(&["ersuchen-??.xml".into(), "*.XAH".into()]).unwrap();
        assert!(p.matches(OsStr::new("ersuchen-01.xml")) && p.matches(OsStr::new("x.xah")));
        assert!(!p.matches(OsStr::new("ersuchen-1.xml")));
        assert!(!glob(b"*a*a*a*a*b", "a".repeat(64).as_bytes()));
        assert!(Patterns::new(&[]).is_err() && Patterns::new(&["a/*.xml".into()]).is_err());
    }

    #[test]
    fn a_cut_off_document_is_told_from_a_whole_one() {
        let whole = "<?xml version=\"1.0\"?>\n<!-- c --><x:nachricht xmlns:x=\"u\"><a/><b>t</b></x:nachricht>\n";
        assert!(!looks_cut_off(whole.as_bytes()));
        for cut in [0, 5, 25, 40, 60, 70, whole.len() - 3] {
            assert!(looks_cut_off(&whole.as_bytes()[..cut]), "cut at {cut}: {:?}", &whole[..cut]);
        }
        assert!(!looks_cut_off(b"<leer/>") && !looks_cut_off(b"\xEF\xBB\xBF<r></r>"));
        // Not XML at all, or a prolog left to the reader: rejected at once, not waited for.
        assert!(!looks_cut_off(b"hello") && !looks_cut_off(b"<!DOCTYPE l [<!ENTITY a \"a\">]><l>&a;</l>"));
    }

    #[test]
    fn names_are_shown_escaped() {
        assert_eq!(shown_str("a\nb\u{202e}c\\ äß.xml"), "a\\nb\\u{202e}c\\\\ äß.xml");
    }
}
