//! Benchmark: a burst of files dropped into an inbox, taken in on the embedded default
//! (SQLite ledger, real folders, the real watcher).
//!
//! Run: `cargo bench --bench intake` (`-- --quick` stops at 10,000 files).
//!
//! For each burst size (1,000, 10,000, 100,000 files) it prints files/s from the drop until
//! the last file is in done/, the time to the first file, and the rate at two backlogs
//! within the burst: while the whole burst still waits (from the first file done until a
//! tenth is done; the first scan is not counted) and while the last tenth waits. So a rate
//! that falls as the backlog grows shows twice: across bursts, against the 1,000-file burst
//! (the baseline, measured in the same run), and within a burst.
//!
//! The ledger runs with its default, `synchronous=FULL` (a file reaches done/ only once its
//! commit is on disk). The cost of that durability: the 10,000-file burst again with the
//! ledger at `?synchronous=normal`, in the same run, both rates and the cost in %.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use amtsbote::intake::Intake;
use amtsbote::intake::inbox::{InboxDirs, WatchConfig, Watcher};
use amtsbote::xamtshilfe::{Checker, Limits};

const EXAMPLE: &str = include_str!("../examples/messages/ersuchen.xml");

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// What one burst measured.
struct Burst {
    seconds: f64,
    rate: f64,
    /// From the drop to the first file in done/: the first scan and the settle time.
    first_file_ms: f64,
    /// Files/s while 100% to 90% of the burst waited (from the first file on).
    at_full_backlog: f64,
    /// Files/s while the last 10% waited.
    at_last_tenth: f64,
}

/// Drops `n` files at once and times them through the inbox; `options` are the ledger
/// URL's (`""` for the default, `?synchronous=normal`).
async fn burst(n: usize, options: &str) -> Burst {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let ledger = amtsbote::ledger::open(&format!(
        "sqlite:{}{options}",
        root.join("ledger.sqlite").display()
    ))
    .await
    .unwrap();
    ledger.migrate().await.unwrap();
    let dirs = InboxDirs {
        tenant: "bench".into(),
        inbox: root.join("inbox/bench"),
    };
    dirs.create().unwrap();
    // Write the files beside the inbox, then move them in at once: a burst.
    let staging = root.join("staging");
    std::fs::create_dir_all(&staging).unwrap();
    for i in 0..n {
        let text = EXAMPLE.replace(
            "7d3c1f0e-2b7a-4c55-9a51-0c2f5f7e9b11",
            &format!("7d3c1f0e-2b7a-4c55-9a51-{i:012x}"),
        );
        std::fs::write(staging.join(format!("ersuchen-{i:06}.xml")), text).unwrap();
    }
    let intake = Intake::new(ledger, Arc::new(Checker::with_defaults()));
    let config = WatchConfig {
        poll_interval: Duration::from_millis(50),
        settle: Duration::from_millis(20),
        concurrency: 8,
        limits: Limits::default(),
        ..WatchConfig::default()
    };
    let watcher = Watcher::new(intake, vec![dirs.clone()], config);
    let stats = watcher.stats.clone();
    let (stop, rx) = tokio::sync::watch::channel(false);

    for entry in std::fs::read_dir(&staging).unwrap().flatten() {
        std::fs::rename(entry.path(), dirs.inbox.join(entry.file_name())).unwrap();
    }
    let start = Instant::now();
    let task = tokio::spawn(watcher.run(rx));
    let tenth = (n / 10).max(1);
    let (mut t_one, mut t_first, mut t_last_start) = (None, None, None);
    let mut last_report = Instant::now();
    loop {
        let done = stats.accepted.load(Ordering::Relaxed) as usize;
        if t_one.is_none() && done >= 1 {
            t_one = Some((start.elapsed(), done));
        }
        if t_first.is_none() && done >= tenth {
            t_first = Some(start.elapsed());
        }
        if t_last_start.is_none() && done >= n - tenth {
            t_last_start = Some(start.elapsed());
        }
        if done >= n {
            break;
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!("  … {done} of {n} files taken in");
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let total = start.elapsed();
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(count(&dirs.done()), n, "every file in done/");
    let (t_one, done_then) = t_one.unwrap();
    let at_full_backlog = (tenth.saturating_sub(done_then)) as f64
        / (t_first.unwrap() - t_one).as_secs_f64().max(1e-9);
    let at_last_tenth = tenth as f64 / (total - t_last_start.unwrap()).as_secs_f64().max(1e-9);
    Burst {
        seconds: total.as_secs_f64(),
        rate: n as f64 / total.as_secs_f64(),
        first_file_ms: t_one.as_secs_f64() * 1000.0,
        at_full_backlog,
        at_last_tenth,
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "amtsbote intake benchmark — embedded default (SQLite ledger, WAL, synchronous=FULL), 8 files at once, 2 threads"
    );
    println!(
        "each file: the sample request ({} bytes), its own Nachrichten-UUID; time from the drop to the last file in done/\n",
        EXAMPLE.len()
    );
    println!(
        "{:>8} {:>9} {:>9} {:>12} {:>22} {:>22} {:>8}",
        "files",
        "seconds",
        "files/s",
        "first file",
        "while 100-90% wait /s",
        "while last 10% wait /s",
        "vs 1k"
    );
    let mut baseline = None;
    let mut ten_k = None;
    for n in [1_000usize, 10_000, 100_000] {
        if quick && n > 10_000 {
            continue;
        }
        let b = runtime.block_on(burst(n, ""));
        let base = *baseline.get_or_insert(b.rate);
        println!(
            "{n:>8} {:>9.2} {:>9.0} {:>9.0} ms {:>22.0} {:>22.0} {:>7.0}%",
            b.seconds,
            b.rate,
            b.first_file_ms,
            b.at_full_backlog,
            b.at_last_tenth,
            b.rate / base * 100.0
        );
        if n == 10_000 {
            ten_k = Some((b, base));
        }
    }
    if let Some((b, base)) = ten_k {
        let within = b.at_full_backlog / b.at_last_tenth;
        let across = b.rate / base;
        let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
        println!(
            "\n10,000-file burst: {:.0} files/s (goal ≥ 2,000: {})",
            b.rate,
            verdict(b.rate >= 2_000.0)
        );
        println!(
            "rate at a 10k backlog vs at 1k (goal ≥ 70%): within the burst {:.0} vs {:.0} files/s = {:.0}% ({}); against the 1,000-file burst {:.0}% ({})",
            b.at_full_backlog,
            b.at_last_tenth,
            within * 100.0,
            verdict(within >= 0.7),
            across * 100.0,
            verdict(across >= 0.7)
        );
        // The durability cost: the same burst with the ledger at synchronous=NORMAL.
        let normal = runtime.block_on(burst(10_000, "?synchronous=normal"));
        println!(
            "durability cost (10,000-file burst): synchronous=FULL {:.0} files/s ({:.2} s), synchronous=NORMAL {:.0} files/s ({:.2} s): FULL costs {:.0}% of the NORMAL rate",
            b.rate,
            b.seconds,
            normal.rate,
            normal.seconds,
            (1.0 - b.rate / normal.rate) * 100.0
        );
    }
}
