//! Benchmark: reading and validating messages on one core.
//!
//! Run: `cargo bench --bench messages` (add `-- --quick` for a short run).
//!
//! Prints, measured in the same run:
//! - the baseline: quick-xml's raw pull reader walking the same bytes and doing nothing (the
//!   floor no XML reader built on it can beat); the serde reader (guard pre-scan + serde
//!   model) and its guard alone; the single-pass reader; and single-pass + validation (what
//!   `amtsbote validate` and intake do per message);
//! - how the cost grows with the work: 1k, 10k and 100k distinct messages;
//! - a message with a 10 MB attachment: time, and the bytes allocated while checking it,
//!   counted by a global allocator, against the attachment's size (the attachment is copied
//!   at most once when allocation is ≈ 1× its base64 size).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use amtsbote::xamtshilfe::{Checker, ReaderConfig, read};
use base64::Engine;

/// Counts the bytes allocated, to show how many copies of an attachment are made.
struct Counting;
static ALLOCATED: AtomicUsize = AtomicUsize::new(0);
static PEAK_LIVE: AtomicUsize = AtomicUsize::new(0);
static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK_LIVE.fetch_max(live, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            ALLOCATED.fetch_add(new_size - layout.size(), Ordering::Relaxed);
            let live = LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size - layout.size();
            PEAK_LIVE.fetch_max(live, Ordering::Relaxed);
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const EXAMPLE: &str = include_str!("../examples/messages/ersuchen.xml");

/// A typical request of about 5 KB: the spec's example with a small scanned-letter attachment.
fn typical_request(uuid_seed: u32) -> String {
    let start = EXAMPLE.find("application/pdf\">").unwrap() + "application/pdf\">".len();
    let end = EXAMPLE[start..].find("</anhang>").unwrap() + start;
    let mut pdf = b"%PDF-1.4\n".to_vec();
    let target_len = 5 * 1024;
    let attachment_bytes = (target_len - (EXAMPLE.len() - (end - start))) * 3 / 4;
    pdf.resize(attachment_bytes.max(16), b'x');
    let b64 = base64::engine::general_purpose::STANDARD.encode(&pdf);
    let doc = format!("{}{}{}", &EXAMPLE[..start], b64, &EXAMPLE[end..]);
    doc.replace("7d3c1f0e-2b7a-4c55-9a51-0c2f5f7e9b11", &format!("7d3c1f0e-2b7a-4c55-9a51-{uuid_seed:012x}"))
}

/// Runs `f` over the messages repeatedly for about `budget`; returns messages per second.
fn rate(messages: &[String], budget: Duration, mut f: impl FnMut(&[u8])) -> f64 {
    let start = Instant::now();
    let mut done = 0usize;
    while start.elapsed() < budget || done == 0 {
        for m in messages {
            f(black_box(m.as_bytes()));
        }
        done += messages.len();
    }
    done as f64 / start.elapsed().as_secs_f64()
}

fn raw_scan(bytes: &[u8]) {
    // The same borrowing reader over &str that both readers use.
    let text = std::str::from_utf8(bytes).unwrap();
    let mut reader = quick_xml::Reader::from_str(text);
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Eof) | Err(_) => break,
            Ok(e) => {
                black_box(e);
            }
        }
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let budget = Duration::from_millis(if quick { 300 } else { 2000 });
    let checker = Checker::with_defaults();
    let config = ReaderConfig::default();

    let sample: Vec<String> = (0..1000).map(typical_request).collect();
    let size = sample[0].len();
    assert!(checker.check(sample[0].as_bytes()).is_ok(), "the sample must be valid");
    println!("amtsbote message benchmark — one thread, typical request of {size} bytes");
    println!("(each figure: repeated passes over 1,000 distinct messages for ~{budget:?})\n");
    println!("{:<44} {:>12} {:>10} {:>10}", "stage", "messages/s", "MB/s", "µs/msg");
    type Stage<'a> = (&'static str, Box<dyn Fn(&[u8]) + 'a>);
    let stages: [Stage; 5] = [
        ("baseline: quick-xml raw event scan", Box::new(raw_scan)),
        ("serde reader: guard + serde model", Box::new(|b| {
            black_box(read::parse_with_serde(b, &config).unwrap());
        })),
        ("  of which the guard pre-scan alone", Box::new(|b| {
            black_box(read::guard(b, &config).unwrap());
        })),
        ("single-pass reader: parse", Box::new(|b| {
            black_box(read::parse(b, &config).unwrap());
        })),
        ("single-pass parse + validation (check)", Box::new(|b| {
            black_box(checker.check(b).unwrap());
        })),
    ];
    let mut check_rate = 0.0;
    for (name, f) in &stages {
        let r = rate(&sample, budget, f);
        println!("{name:<44} {r:>12.0} {:>10.1} {:>10.2}", r * size as f64 / 1e6, 1e6 / r);
        check_rate = r;
    }
    println!("\ngoal: parse + validate ≥ 50,000 messages/s on one core → {}", if check_rate >= 50_000.0 { "met" } else { "NOT met" });

    println!("\nhow the cost grows with the work (check, one pass each):");
    println!("{:>9} {:>12} {:>12} {:>10}", "messages", "seconds", "messages/s", "µs/msg");
    for n in [1_000usize, 10_000, 100_000] {
        if quick && n > 10_000 {
            continue;
        }
        let messages: Vec<String> = (0..n as u32).map(typical_request).collect();
        let start = Instant::now();
        for m in &messages {
            black_box(checker.check(m.as_bytes()).unwrap());
        }
        let s = start.elapsed().as_secs_f64();
        println!("{n:>9} {s:>12.3} {:>12.0} {:>10.2}", n as f64 / s, s * 1e6 / n as f64);
    }

    println!("\na request with a 10 MB attachment:");
    let start = EXAMPLE.find("application/pdf\">").unwrap() + "application/pdf\">".len();
    let end = EXAMPLE[start..].find("</anhang>").unwrap() + start;
    let mut pdf = b"%PDF-1.4\n".to_vec();
    pdf.resize(10 * 1024 * 1024, b'x');
    let b64 = base64::engine::general_purpose::STANDARD.encode(&pdf);
    let big = format!("{}{}{}", &EXAMPLE[..start], b64, &EXAMPLE[end..]);
    let runs = if quick { 3 } else { 10 };
    let mut best = Duration::MAX;
    let mut allocated = 0;
    let mut peak = 0;
    for _ in 0..runs {
        let before = ALLOCATED.load(Ordering::Relaxed);
        PEAK_LIVE.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
        let live_before = LIVE.load(Ordering::Relaxed);
        let t = Instant::now();
        let m = checker.check(big.as_bytes()).unwrap();
        best = best.min(t.elapsed());
        allocated = ALLOCATED.load(Ordering::Relaxed) - before;
        peak = PEAK_LIVE.load(Ordering::Relaxed) - live_before;
        drop(black_box(m));
    }
    let mb = b64.len() as f64 / 1e6;
    println!("  message {:.1} MB (attachment {:.1} MB base64), best of {runs}: {:.1} ms = {:.0} MB/s", big.len() as f64 / 1e6, mb, best.as_secs_f64() * 1e3, big.len() as f64 / 1e6 / best.as_secs_f64());
    println!(
        "  allocated while checking: {:.1} MB total, {:.1} MB peak = {:.2}× the attachment (copies of it held at once)",
        allocated as f64 / 1e6,
        peak as f64 / 1e6,
        peak as f64 / b64.len() as f64
    );
}
