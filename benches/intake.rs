//! Benchmark: a burst of files dropped into an inbox, taken in on the embedded default
//! (SQLite ledger, real folders, the real watcher).
//!
//! Run: `cargo bench --bench intake` (`-- --quick` stops at 10,000 files).
//!
//! For each burst size (1,000, 10,000, 100,000 files) it prints files/s from the drop until
//! the last file is in done/, and the rate over the first and the last tenth of the burst,
//! so a rate that falls as the backlog grows shows. The 1,000-file burst is the baseline the
//! others are compared with, measured in the same run.

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

/// Drops `n` files at once and returns (seconds, files/s, first-tenth rate, last-tenth rate).
async fn burst(n: usize) -> (f64, f64, f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let ledger = amtsbote::ledger::open(&format!("sqlite:{}", root.join("ledger.sqlite").display())).await.unwrap();
    ledger.migrate().await.unwrap();
    let dirs = InboxDirs { tenant: "bench".into(), inbox: root.join("inbox/bench") };
    dirs.create().unwrap();
    // Write the files beside the inbox, then move them in at once: a burst.
    let staging = root.join("staging");
    std::fs::create_dir_all(&staging).unwrap();
    for i in 0..n {
        let text = EXAMPLE.replace("7d3c1f0e-2b7a-4c55-9a51-0c2f5f7e9b11", &format!("7d3c1f0e-2b7a-4c55-9a51-{i:012x}"));
        std::fs::write(staging.join(format!("ersuchen-{i:06}.xml")), text).unwrap();
    }
    let intake = Intake::new(ledger, Arc::new(Checker::with_defaults()));
    let config = WatchConfig { poll_interval: Duration::from_millis(50), settle: Duration::from_millis(20), concurrency: 8, limits: Limits::default() };
    let watcher = Watcher::new(intake, vec![dirs.clone()], config);
    let stats = watcher.stats.clone();
    let (stop, rx) = tokio::sync::watch::channel(false);

    for entry in std::fs::read_dir(&staging).unwrap().flatten() {
        std::fs::rename(entry.path(), dirs.inbox.join(entry.file_name())).unwrap();
    }
    let start = Instant::now();
    let task = tokio::spawn(watcher.run(rx));
    let tenth = (n / 10).max(1);
    let (mut t_first, mut t_last_start) = (None, None);
    let mut last_report = Instant::now();
    loop {
        let done = stats.accepted.load(Ordering::Relaxed) as usize;
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
    let first = tenth as f64 / t_first.unwrap().as_secs_f64();
    let last = tenth as f64 / (total - t_last_start.unwrap()).as_secs_f64().max(1e-9);
    (total.as_secs_f64(), n as f64 / total.as_secs_f64(), first, last)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    println!("amtsbote intake benchmark — embedded default (SQLite ledger, WAL, synchronous=NORMAL), 8 files at once, 2 threads");
    println!("each file: the sample request ({} bytes), its own Nachrichten-UUID; time from the drop to the last file in done/\n", EXAMPLE.len());
    println!("{:>8} {:>10} {:>10} {:>16} {:>16} {:>12}", "files", "seconds", "files/s", "first 10% /s", "last 10% /s", "vs 1k");
    let mut baseline = None;
    for n in [1_000usize, 10_000, 100_000] {
        if quick && n > 10_000 {
            continue;
        }
        let (secs, rate, first, last) = runtime.block_on(burst(n));
        let base = *baseline.get_or_insert(rate);
        println!("{n:>8} {secs:>10.2} {rate:>10.0} {first:>16.0} {last:>16.0} {:>11.0}%", rate / base * 100.0);
    }
    println!("\ngoal: ≥ 2,000 files/s, and the rate at a 10k backlog ≥ 70% of the rate at 1k");
}
