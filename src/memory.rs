//! Memory given back after large messages. glibc's malloc keeps memory a process freed in
//! its arenas (one per thread that allocated, up to eight per core) and returns it to the
//! system only from the top of a heap: after 16 parallel posts of 38 MB, `serve` sat idle at
//! 750–900 MB (issue 13; `benches/memory_return.py` measures it). This module owns the
//! remedy, in two parts:
//!
//! - [`note_large`]: whoever handles a large payload (intake, routing, transmitting) says so;
//! - [`large_work_permit`]: at most one large payload per core is read (parsed, checked) by
//!   the route stage at a time, so 16 of them do not take 16 copies and their models at
//!   once, nor starve each other of CPU until every attempt times out;
//! - [`run_trimmer`]: a task of `serve` that, every [`TRIM_EVERY`] for a minute after
//!   such work, calls `malloc_trim(0)` on the blocking pool, which hands every free page of every arena
//!   back to the system (glibc ≥ 2.8 also releases pages in the middle of a heap).
//!
//! No other allocator: jemalloc or mimalloc would return memory by themselves but add a C
//! build (or a large crate) to a build we keep lean. On other C libraries (musl, macOS) the
//! calls do nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A payload at least this large marks the process for a trim.
pub const LARGE: usize = 1 << 20;

/// How often the trimmer looks whether large work was done.
pub const TRIM_EVERY: Duration = Duration::from_secs(2);

/// Ticks with a trim after the last large payload was noted (a minute: a payload may be
/// freed long after it was noted, e.g. a 38 MB message sent to a slow XTA server).
const TRIMS_AFTER_LARGE_WORK: u32 = 30;

static LARGE_WORK_DONE: AtomicBool = AtomicBool::new(false);

static LARGE_WORK: OnceLock<Arc<Semaphore>> = OnceLock::new();

/// A slot to read one large payload: one per core in the process. Hold it for as long as
/// the work runs — move it into the blocking task, so that an attempt that timed out (its
/// future dropped, the blocking work still running) keeps its slot until the work ends.
pub async fn large_work_permit() -> OwnedSemaphorePermit {
    let slots = LARGE_WORK.get_or_init(|| Arc::new(Semaphore::new(std::thread::available_parallelism().map_or(1, |n| n.get()))));
    // Never closed: acquiring cannot fail.
    slots.clone().acquire_owned().await.expect("the large-work semaphore is never closed")
}

/// A payload of `bytes` passed through this process: large ones get their memory trimmed
/// back soon after.
pub fn note_large(bytes: usize) {
    if bytes >= LARGE {
        LARGE_WORK_DONE.store(true, Ordering::Relaxed);
    }
}

/// Until `stop` turns true: every [`TRIM_EVERY`], if a large payload was noted since the
/// last look, gives the free memory of the allocator back to the system.
pub async fn run_trimmer(mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(TRIM_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Trims still owed: the payload noted may be freed a few seconds after it was noted
    // (checked, stored, sent), so the trimmer keeps trimming for a while after the last one.
    let mut owed = 0u32;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if LARGE_WORK_DONE.swap(false, Ordering::Relaxed) {
            owed = TRIMS_AFTER_LARGE_WORK;
        }
        if owed > 0 {
            owed -= 1;
            let _ = tokio::task::spawn_blocking(trim).await;
        }
    }
}

/// Gives the allocator's free memory back to the system, where the C library can.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers and only walks the allocator's own lists, under
    // its locks; it is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
