//! Benchmark: the nightly print batch on the embedded default (SQLite ledger, WAL,
//! `synchronous=FULL`): two-page letters through [`BatchRunner::run`] — candidates read from
//! the ledger, sorted, numbered, composed, laid out, written by printpdf into files of
//! `print.letters_per_file` (500) letters, hashed, their manifests written, each file
//! renamed into the handoff folder and recorded (its letters moved to printed).
//!
//! Run: `cargo bench --bench print` (`-- --quick` stops at 10,000 letters, `-- --smoke` or
//! `PRINT_BENCH_SMOKE=1` runs 200 only). Run as a test (`cargo test --bench print`, no
//! `--bench` argument) it is the smoke run, checking that every letter is printed once.
//!
//! For each N (1,000, 10,000, 100,000), in a fresh data directory:
//! - setup (not timed): N requests (the sample request with its claim repeated until the
//!   letter has two pages, each request with its own Nachrichten-UUID) recorded, routed and
//!   moved to `awaiting_print` through the ledger API (32 at once: the ledger's group
//!   commit), all to the authority the router picks for the first one.
//! - timed: one `BatchRunner::run` for 2026-12-01, as `amtsbote print-batch run` does it.
//!   Printed: letters, pages, files, seconds, pages/s, and the process's peak RSS during the
//!   run: `VmHWM` of `/proc/self/status`, reset just before the run by writing `5` to
//!   `/proc/self/clear_refs` (Linux: the high-water mark starts again from the current RSS),
//!   so each size's peak is its own although all sizes run in one process. The RSS before
//!   the run (the setup's leftovers: SQLite's cache, the allocator's free lists) is shown too.
//! - checked: N letters in the summary, 2·N pages, every request printed, one PDF and two
//!   manifests a file in the handoff folder.
//!
//! The baseline, in the same run: what printpdf alone costs. The same number of pages of
//! one fixed page (the first page of a letter: the same number of text runs in both
//! fonts, and as many filled rectangles as the letter's marks), laid out once and cloned,
//! written by printpdf with both fonts embedded in full like ours, in documents of as many
//! pages as one of our files holds (one document of 200,000 pages would not fit in memory:
//! printpdf holds a document whole), on one thread, nothing else: pages/s and peak RSS. At
//! most 20,000 pages ([`BASELINE_PAGES`]): its documents are all alike, its rate stays.

#[path = "support/sizes.rs"]
mod sizes;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Instant;

use amtsbote::app::App;
use amtsbote::config::Config;
use amtsbote::ledger::{Actor, NewRequest, Recorded, RequestState, RoutedTo};
use amtsbote::print::batch::{self, BatchRunner};
use amtsbote::print::font::Fonts;
use amtsbote::print::letter::{Recipient, Sender, Templates, compose, render_file};
use amtsbote::queue::Queue;
use chrono::NaiveDate;
use sha2::Digest as _;

const EXAMPLE: &str = include_str!("../examples/messages/ersuchen.xml");
const UUID: &str = "7d3c1f0e-2b7a-4c55-9a51-0c2f5f7e9b11";
const TENANT: &str = "demo";
/// The baseline writes at most this many pages (20 documents of 1,000): its documents are
/// all alike, so its rate is the same for more, and 200,000 pages would take minutes.
const BASELINE_PAGES: u64 = 20_000;
/// Requests recorded and moved along at once during the setup.
const SETUP_TASKS: usize = 32;

fn date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 12, 1).expect("a date")
}

/// The sample request with its claim repeated `n` times (and the total to match).
fn with_claims(n: usize) -> String {
    let start = EXAMPLE.find("<forderung>").expect("a claim");
    let end = EXAMPLE.find("</forderung>").expect("a claim") + "</forderung>".len();
    let claim = &EXAMPLE[start..end];
    let one: f64 = EXAMPLE.split("<gesamtbetrag").nth(1).and_then(|s| s.split('>').nth(1)).and_then(|s| s.split('<').next()).and_then(|s| s.parse().ok()).expect("gesamtbetrag");
    let old = format!(">{one:.2}<");
    EXAMPLE.replacen(claim, &claim.repeat(n), 1).replace(&old, &format!(">{:.2}<", one * n as f64))
}

/// The pages of the sample request with `claims` claims, as one letter.
fn pages(claims: usize) -> u32 {
    let sender = Sender { name: "Stadt Lemgo".into(), street: "Marktplatz 1".into(), postcode: "32657".into(), city: "Lemgo".into(), email: None };
    let recipient = Recipient { name: "Stadt Köln".into(), street: "Willy-Brandt-Platz 2".into(), postcode: "50679".into(), city: "Köln".into() };
    let letter = compose(with_claims(claims).as_bytes(), &sender, &recipient, date(), &Templates::shipped(), "B20261201", 1, false).expect("composed");
    render_file(&[letter]).expect("rendered").1[0].pages
}

/// A request of two pages: the middle of the claim counts that give two.
fn two_page_request() -> (String, usize) {
    let first = (1..200).find(|&n| pages(n) == 2).expect("some claims give two pages");
    let last = (first..400).take_while(|&n| pages(n) == 2).last().unwrap_or(first);
    let claims = (first + last) / 2;
    (with_claims(claims), claims)
}

/// A field of `/proc/self/status` in kB (`VmHWM`, `VmRSS`).
fn status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':')?.trim().strip_suffix("kB")?.trim().parse().ok()).unwrap_or(0)
}

/// Starts the peak-RSS mark again from the current RSS (Linux); false when it cannot.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// What one batch run measured.
struct Run {
    setup_s: f64,
    letters: usize,
    pages: u64,
    files: usize,
    seconds: f64,
    /// RSS before the run and its peak during it, kB.
    rss_before: u64,
    peak: u64,
    problems: Vec<String>,
}

/// The config of a fresh data directory: the defaults otherwise.
fn config(root: &std::path::Path) -> Config {
    let env: Vec<(String, String)> = vec![("AMTSBOTE_DATA_DIR".into(), root.display().to_string())];
    Config::load_with(None, &env).expect("config")
}

/// N requests awaiting print, routed to where the router routes the first one.
async fn fill(app: &App, n: usize, payload: &str) {
    let payload: Arc<str> = payload.into();
    let new = move |i: usize| {
        let text = payload.replace(UUID, &format!("7d3c1f0e-2b7a-4c55-9a51-{i:012x}"));
        NewRequest {
            tenant: TENANT.into(),
            source: format!("bench:{i}"),
            sha256: hex::encode(sha2::Sha256::digest(text.as_bytes())),
            nachrichten_uuid: Some(format!("7d3c1f0e-2b7a-4c55-9a51-{i:012x}")),
            kind: "ersuchen".into(),
            test: false,
            payload: text.into_bytes(),
            file_name: None,
        }
    };
    let intake = Actor::system("intake");
    let Recorded::New(first) = app.ledger.record(new(0), RequestState::Validated, &intake, None).await.expect("record") else { panic!("not new") };
    let routed = app.router().route(first, RequestState::Validated, &Actor::system("route")).await.expect("route");
    assert_eq!(routed, RequestState::Routed, "the sample request is routed");
    let to: RoutedTo = app.ledger.get(first).await.expect("get").and_then(|r| r.routed).expect("its route");
    app.ledger.transition(first, RequestState::Routed, RequestState::AwaitingPrint, &Actor::system("transmit"), None).await.expect("to print");
    let next = Arc::new(AtomicUsize::new(1));
    let mut tasks = Vec::new();
    for _ in 0..SETUP_TASKS {
        let (ledger, next, to, new) = (app.ledger.clone(), next.clone(), to.clone(), new.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Relaxed);
                if i >= n {
                    return;
                }
                let Recorded::New(id) = ledger.record(new(i), RequestState::Validated, &Actor::system("intake"), None).await.expect("record") else { panic!("request {i} not new") };
                ledger.route(id, RequestState::Validated, &to, &Actor::system("route"), None).await.expect("route");
                ledger.transition(id, RequestState::Routed, RequestState::AwaitingPrint, &Actor::system("transmit"), None).await.expect("to print");
            }
        }));
    }
    for t in tasks {
        t.await.expect("a setup task");
    }
}

fn in_state(by_state: &[(RequestState, u64)], s: RequestState) -> usize {
    by_state.iter().find(|(st, _)| *st == s).map_or(0, |(_, c)| *c) as usize
}

/// N two-page letters through one batch run, in a fresh data directory.
async fn batch_run(n: usize, payload: &str) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = App::open(config(dir.path())).await.expect("App::open");
    let setup = Instant::now();
    fill(&app, n, payload).await;
    let setup_s = setup.elapsed().as_secs_f64();
    let jobs = amtsbote::queue::load_job_configs(None).expect("jobs");
    let runner: BatchRunner = batch::runner(&app.config, app.ledger.clone(), app.directory.clone(), jobs.get(Queue::Print), "bench").expect("runner");

    let rss_before = status_kb("VmRSS");
    reset_peak();
    let start = Instant::now();
    let summary = runner.run(date(), &|_| {}).await.expect("the batch run");
    let seconds = start.elapsed().as_secs_f64();
    let peak = status_kb("VmHWM");

    let mut problems = Vec::new();
    if summary.letters != n || summary.pages_written != 2 * n as u64 {
        problems.push(format!("{} letters, {} pages (expected {n}, {})", summary.letters, summary.pages_written, 2 * n));
    }
    let printed = in_state(&app.ledger.count_by_state().await.expect("count"), RequestState::Printed);
    if printed != n {
        problems.push(format!("{printed} requests printed of {n}"));
    }
    let handoff = app.config.print.handoff(&app.config.data_dir);
    let names: Vec<String> = std::fs::read_dir(&handoff).map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default();
    let per_file = app.config.print.letters_per_file as usize;
    let files = n.div_ceil(per_file);
    let pdfs = names.iter().filter(|n| n.ends_with(".pdf")).count();
    let manifests = names.iter().filter(|n| n.ends_with(".manifest.json") || n.ends_with(".manifest.csv")).count();
    if (pdfs, manifests, summary.files_written) != (files, 2 * files, files) || names.len() != 3 * files {
        problems.push(format!("{pdfs} PDFs, {manifests} manifests, {} files written, {} entries in the handoff folder (expected {files} files)", summary.files_written, names.len()));
    }
    // Every letter once in the manifests.
    let mut listed = 0usize;
    for name in names.iter().filter(|n| n.ends_with(".manifest.csv")) {
        listed += std::fs::read_to_string(handoff.join(name)).map_or(0, |t| t.lines().count().saturating_sub(1));
    }
    if listed != n {
        problems.push(format!("{listed} letters listed in the manifests of {n}"));
    }
    drop(runner);
    drop(app);
    Run { setup_s, letters: summary.letters, pages: summary.pages_written, files: summary.files_written, seconds, rss_before, peak, problems }
}

/// printpdf alone: `total` pages of one fixed page in documents of `per_doc` pages, the
/// two fonts embedded in full; (seconds, peak RSS kB).
fn baseline(total: u64, per_doc: u64) -> (f64, u64) {
    use printpdf::{FontId, Op, PdfDocument, PdfFont, PdfFontHandle, PdfPage, PdfSaveOptions, Point, Pt, Rect, TextItem};
    let fonts = Fonts::get().expect("fonts");
    // The first page of our letters: about 60 text runs, 5 in bold, and 250 rectangles
    // (the DataMatrix's runs and the OMR bars).
    let mut ops = Vec::new();
    for i in 0..60 {
        let font = if i % 12 == 0 { "F2" } else { "F1" };
        ops.push(Op::StartTextSection);
        ops.push(Op::SetFont { font: PdfFontHandle::External(FontId(font.into())), size: Pt(10.0) });
        ops.push(Op::SetTextCursor { pos: Point { x: Pt(70.0), y: Pt(780.0 - 11.0 * i as f32) } });
        ops.push(Op::ShowText { items: vec![TextItem::Text(format!("Zeile {i}: Vollstreckungshilfeersuchen, Forderung 412,50 €, Säumniszuschläge"))] });
        ops.push(Op::EndTextSection);
    }
    for i in 0..250 {
        ops.push(Op::DrawRectangle { rectangle: Rect { x: Pt(450.0 + (i % 16) as f32 * 1.7), y: Pt(20.0 + (i / 16) as f32 * 1.7), width: Pt(1.7), height: Pt(1.7), mode: Some(printpdf::PaintMode::Fill), winding_order: Some(printpdf::WindingOrder::NonZero) } });
    }
    reset_peak();
    let start = Instant::now();
    let mut done = 0;
    while done < total {
        let pages = per_doc.min(total - done);
        let mut doc = PdfDocument::new("baseline");
        doc.resources.fonts.map.insert(FontId("F1".into()), PdfFont::new(fonts.regular.clone()));
        doc.resources.fonts.map.insert(FontId("F2".into()), PdfFont::new(fonts.bold.clone()));
        doc.with_pages((0..pages).map(|_| PdfPage::new(printpdf::Mm(210.0), printpdf::Mm(297.0), ops.clone())).collect());
        let bytes = doc.save(&PdfSaveOptions { subset_fonts: false, ..PdfSaveOptions::default() }, &mut Vec::new());
        assert!(bytes.starts_with(b"%PDF-"));
        done += pages;
    }
    (start.elapsed().as_secs_f64(), status_kb("VmHWM"))
}

fn main() {
    // `--list`: a test runner asking for tests (none here). Without `--bench` (`cargo test
    // --bench print`): the smoke run.
    let Some(sizes::Sizes { smoke, sizes }) = sizes::from_args("PRINT_BENCH_SMOKE") else { return };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("AMTSBOTE_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,sqlx=error")))
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let (payload, claims) = two_page_request();
    let per_file = u64::from(amtsbote::config::PrintConfig::default().letters_per_file);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("amtsbote print benchmark — BatchRunner::run on the embedded default: SQLite ledger (WAL, synchronous=FULL); tokio with 2 worker threads, {cores} cores");
    println!("each letter: the sample request with {claims} claims ({} bytes), two pages; {per_file} letters a file; recorded, routed and awaiting print before the clock starts", payload.len());
    println!("peak RSS: VmHWM of the process during the run, reset before it (clear_refs 5){}", if reset_peak() { "" } else { " — CANNOT reset here: the peaks are the process's" });
    println!("baseline: printpdf alone, the same pages (at most {BASELINE_PAGES}) of one fixed page (cloned ops), {} pages a document, both fonts in full, one thread\n", 2 * per_file);

    // Each row as soon as it is measured.
    println!("{:>8} {:>8} {:>6} {:>8} {:>9} {:>11} {:>10} | {:>16} {:>15} {:>8}", "letters", "pages", "files", "seconds", "pages/s", "RSS before", "peak RSS", "baseline pages/s", "baseline peak", "vs base");
    let mut rows = Vec::new();
    for &n in &sizes {
        let r = runtime.block_on(batch_run(n, &payload));
        // The baseline's documents are all alike: beyond BASELINE_PAGES its rate stays.
        let base_pages = r.pages.clamp(1, BASELINE_PAGES);
        let (bs, bpeak) = baseline(base_pages, 2 * per_file);
        let rate = r.pages as f64 / r.seconds.max(1e-9);
        let brate = base_pages as f64 / bs.max(1e-9);
        println!(
            "{:>8} {:>8} {:>6} {:>8.2} {:>9.0} {:>8.0} MB {:>7.0} MB | {:>16.0} {:>12.0} MB {:>7.0}%   (setup {:.1} s)",
            r.letters,
            r.pages,
            r.files,
            r.seconds,
            rate,
            mb(r.rss_before),
            mb(r.peak),
            brate,
            mb(bpeak),
            rate / brate * 100.0,
            r.setup_s
        );
        rows.push((n, r));
    }
    let verdict = |ok: bool| match (ok, smoke) {
        (true, _) => "met",
        (false, true) => "not judged on a smoke run (cargo bench --bench print judges it)",
        (false, false) => "NOT met",
    };
    let rate_ok = rows.iter().all(|(_, r)| r.pages as f64 / r.seconds.max(1e-9) >= 4_000.0);
    println!("\ngoal ≥ 4,000 pages/s: {} ({})", verdict(rate_ok), rows.iter().map(|(n, r)| format!("{n}: {:.0}/s", r.pages as f64 / r.seconds.max(1e-9))).collect::<Vec<_>>().join(", "));
    let mem_ok = rows.iter().all(|(_, r)| mb(r.peak) <= 256.0);
    println!("goal peak RSS ≤ 256 MB, flat: {} ({})", verdict(mem_ok), rows.iter().map(|(n, r)| format!("{n}: {:.0} MB", mb(r.peak))).collect::<Vec<_>>().join(", "));
    let mut failed = false;
    for (n, r) in &rows {
        for p in &r.problems {
            println!("* {n}: {p}");
            failed = true;
        }
    }
    if smoke {
        assert!(!failed, "the smoke run must print every letter once");
        println!("\nprint smoke: {} letters printed once each, {} pages (run `cargo bench --bench print` to measure)", sizes[0], rows[0].1.pages);
    }
}
