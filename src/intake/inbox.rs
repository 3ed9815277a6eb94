//! The inbox watcher: takes files that enforcement software drops into a tenant's folder.
//!
//! Per tenant folder `inbox/<tenant>/`:
//! - dotfiles, `*.part` and `*.tmp` are someone still writing: ignored;
//! - a regular file is taken only when its size and mtime did not change between two scans
//!   at least `settle_ms` apart;
//! - it is claimed by an atomic rename into `processing/<ulid>--<name>` — the claim is the
//!   durable queue of this stage: whatever sits in `processing/` is (re)done, at start-up
//!   and after any failure, and recording is idempotent by the claim's name;
//! - then it moves to `done/<claim>` or to `error/<claim>` beside `<claim>.error.txt`, which
//!   names the reason (rejected, duplicate, refused).
//!
//! Symlinks, FIFOs, sockets and devices are refused into `error/` without being opened.
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
#[derive(Debug, Clone, Copy)]
pub struct WatchConfig {
    pub poll_interval: Duration,
    pub settle: Duration,
    /// Files processed at once.
    pub concurrency: usize,
    pub limits: Limits,
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
}

/// Watches the inbox folders until `shutdown` turns true.
pub struct Watcher {
    intake: Intake,
    dirs: Vec<InboxDirs>,
    config: WatchConfig,
    pub stats: Arc<Stats>,
}

/// A file seen in an inbox, waiting to be stable.
struct Seen {
    size: u64,
    mtime: SystemTime,
    since: Instant,
}

impl Watcher {
    pub fn new(intake: Intake, dirs: Vec<InboxDirs>, config: WatchConfig) -> Self {
        Watcher { intake, dirs, config, stats: Arc::new(Stats::default()) }
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
                let (waiting, oldest) = this.scan(dirs, &mut seen, &permits, &in_flight).await;
                let oldest_waiting_secs = oldest.and_then(|t| t.elapsed().ok()).map_or(0, |age| age.as_secs());
                if let Ok(mut backlog) = this.stats.backlog.lock() {
                    backlog.insert(dirs.tenant.clone(), Backlog { waiting, processing, oldest_waiting_secs });
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

    /// One pass over the inbox: claims the files that settled. Returns how many files were
    /// left waiting, and the oldest one's mtime.
    async fn scan(
        self: &Arc<Self>,
        dirs: &InboxDirs,
        seen: &mut HashMap<PathBuf, Seen>,
        permits: &Arc<Semaphore>,
        in_flight: &Arc<std::sync::Mutex<HashSet<PathBuf>>>,
    ) -> (u64, Option<SystemTime>) {
        let Ok(entries) = std::fs::read_dir(&dirs.inbox) else {
            tracing::warn!(tenant = %dirs.tenant, folder = %dirs.inbox.display(), "inbox folder cannot be read");
            return (0, None);
        };
        let now = Instant::now();
        let mut present = HashSet::new();
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
        // What is left in `seen` for this inbox is what still waits there.
        let oldest = seen.iter().filter(|(p, _)| p.starts_with(&dirs.inbox)).map(|(_, s)| s.mtime).min();
        (present.len() as u64, oldest)
    }

    /// Moves a file that must not be read to `error/` with the reason.
    fn refuse(&self, dirs: &InboxDirs, name: &OsStr, reason: &str) {
        let claim = claim_name(name);
        let from = dirs.inbox.join(name);
        let to = dirs.error().join(&claim);
        if std::fs::rename(&from, &to).is_ok() {
            write_reason(&dirs.error(), &claim, reason, None);
            self.stats.refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(tenant = %dirs.tenant, file = %claim.to_string_lossy(), "{reason}");
        }
    }

    /// Records one claimed file and moves it on. Returns false when it must be tried again.
    async fn process(&self, dirs: &InboxDirs, claim: &OsStr, path: &Path) -> bool {
        let original = original_name(claim);
        let source = format!("inbox:{}:{}", dirs.tenant, claim.to_string_lossy());
        let limits = self.config.limits;
        let bytes = match read::read_file(path, &limits) {
            Ok(b) => b,
            Err(ReadError::Io(e)) if !path.exists() => {
                tracing::debug!(error = %e, "claimed file already moved on");
                return true;
            }
            // Too large or unreadable: recorded as rejected without its content.
            Err(e) => {
                let outcome = self.intake.accept_unreadable(&dirs.tenant, &source, Some(&original), e).await;
                return self.finish(dirs, claim, path, outcome);
            }
        };
        let outcome = self.intake.accept(&dirs.tenant, &source, Some(&original), bytes).await;
        self.finish(dirs, claim, path, outcome)
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
        let name = claim.to_string_lossy();
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
    /// Files in the inbox not taken yet (without dotfiles, `*.part` and `*.tmp`).
    pub waiting: u64,
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
    pub fn report(&self) -> InboxReport {
        let files: Vec<std::fs::DirEntry> = std::fs::read_dir(&self.inbox)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| !ignored(&e.file_name()) && e.file_type().is_ok_and(|t| t.is_file()))
            .collect();
        let waiting = files.len() as u64;
        let oldest_waiting = files.iter().filter_map(|e| e.metadata().and_then(|m| m.modified()).ok()).min();
        let processing = list_files(&self.processing()).len() as u64;
        let lock = self.inbox.join(LOCK_FILE);
        let taken_in_by = std::fs::File::open(&lock).ok().and_then(|file| match file.try_lock_shared() {
            Err(std::fs::TryLockError::WouldBlock) => Some(std::fs::read_to_string(&lock).unwrap_or_default().trim().to_owned()),
            _ => None,
        });
        InboxReport { waiting, processing, oldest_waiting, taken_in_by }
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
}
