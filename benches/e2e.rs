//! Benchmark: the whole pipeline, end to end, on the embedded default with its durable
//! settings (SQLite ledger, WAL, `synchronous=FULL`, group commits; SQLite job queues),
//! every stage started as `amtsbote serve` starts it ([`amtsbote::serve::start_stages`]):
//! inbox → intake → route → transmit (XTA) → report → notify (emails as `.eml` files, the
//! embedded default without `smtp.url`).
//!
//! Run: `cargo bench --bench e2e` (bursts of 1,000, 10,000 and 100,000; `-- --quick`
//! 1,000 and 10,000; `-- --smoke` 200 and a steady phase of 3 s). Run as a test (`cargo test
//! --bench e2e`, no `--bench` argument) it is the smoke run, checking that every request is
//! delivered and every email written.
//!
//! For each burst size N, in a fresh data directory:
//! - the XTA simulator on loopback, started by this benchmark with its report delay 0
//!   (`xta.url` points to it; the built-in one `serve` starts without `xta.url` makes every
//!   transport report wait 2 s, a property of the far side that would only add a fixed
//!   tail); `jobs/print.toml` without `[schedule]` (no nightly batch, whatever the time);
//!   the inbox scanned every 20 ms with a settle time of 10 ms (defaults 200 and 100 ms,
//!   as in `benches/pipeline.rs`: otherwise waiting for files to settle dominates latency);
//! - the burst: N request files (the sample request, each its own Nachrichten-UUID) are
//!   written beside the inbox, the stages started, and the files renamed into `inbox/demo`
//!   at once. Timed from the first rename until the ledger holds every request `delivered`
//!   (or `awaiting_print`) and every email of their notifications (transmitted, delivered)
//!   is accepted, i.e. written as a synced `.eml` file. The stages' in-process counters are
//!   read every 5 ms (when each stage had done N is printed: where the burst waits); the
//!   ledger only once the email counter says all;
//! - after the 10,000 burst (and after the smoke's 200), in the same running pipeline: a
//!   steady 100 requests/s for 60 s (smoke: 3 s), each file renamed into the inbox on its
//!   own schedule by a thread of its own. Latency per request from its rename to its
//!   `transmitted` journal event (the ledger's timestamps; the steps between are printed
//!   too): p50, p99, max.
//!
//! The baselines, in the same run and for each N: the queue engine on no-op work
//! ([`baseline::noop_drain`]: N route jobs drained by `run_worker` with a handler that does
//! nothing) and the simulator's no-op SOAP round trip ([`baseline::noop_calls`]: N
//! `checkAccountActive` calls). A request costs 5 jobs (route, transmit, report, and 2
//! emails, which are not jobs), 4 SOAP calls and about 7 ledger commits' worth of writes.
//!
//! A phase that makes no progress for `E2E_BENCH_STALL_SECS` (default 30) or has not
//! finished after `E2E_BENCH_BUDGET_SECS` (default 600) stops there: its row is marked `*`,
//! and what every stage had counted by then is printed to stderr.

#[path = "support/sizes.rs"]
mod sizes;
#[path = "support/common.rs"]
mod common;
#[path = "support/baseline.rs"]
mod baseline;

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use amtsbote::app::App;
use amtsbote::intake::inbox::InboxDirs;
use amtsbote::ledger::{ListFilter, MailStatus, RequestState};
use amtsbote::queue::Queue;
use amtsbote::queue::metrics::Outcome;
use amtsbote::serve::{Started, inbox_dirs, start_stages};
use amtsbote::supervise::{Health, Supervisor};
use amtsbote::xta::sim::SimServer;
use chrono::{DateTime, Utc};
use common::{PROGRESS_EVERY, Rate, TICK, count, env_secs, in_state, star, states};

const TENANT: &str = "demo";
const POLL_MS: u64 = 20;
const SETTLE_MS: u64 = 10;
/// Emails per delivered request: its `transmitted` and its `delivered` notification.
const EMAILS_PER_REQUEST: usize = 2;
/// The steady phase: requests a second.
const STEADY_RATE: u32 = 100;
/// The Nachrichten-UUID groups of the burst's and the steady phase's requests.
const BURST_GROUP: &str = "9a51";
const STEADY_GROUP: &str = "9a52";

/// The pipeline as `serve` runs it, in a data directory of its own.
struct Stack {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    app: App,
    sim: SimServer,
    inbox: InboxDirs,
    started: Started,
    health: std::sync::Arc<Health>,
    stop_tx: tokio::sync::watch::Sender<bool>,
    supervisor: Supervisor,
}

/// The stages' counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    taken_in: usize,
    routed: usize,
    transmit: usize,
    report: usize,
    emails: usize,
}

impl Stack {
    async fn start() -> Stack {
        let sim = SimServer::start("127.0.0.1:0", baseline::sim_config()).await.expect("the simulator starts");
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        common::no_print_schedule(&root);
        let config = common::config(
            &root,
            &[("AMTSBOTE_XTA_URL", sim.url()), ("AMTSBOTE_INTAKE_POLL_INTERVAL_MS", POLL_MS.to_string()), ("AMTSBOTE_INTAKE_SETTLE_MS", SETTLE_MS.to_string())],
        );
        let app = App::open(config).await.expect("App::open");
        let inbox = inbox_dirs(&app.config).into_iter().find(|d| d.tenant == TENANT).expect("the demo tenant");
        inbox.create().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut supervisor = Supervisor::new(stop_rx);
        let health = supervisor.health();
        let started = start_stages(&app, &mut supervisor).await.expect("the stages start");
        // Let the stages start: the watcher takes the inbox's lock and scans it (empty), the
        // workers register and poll once.
        tokio::time::sleep(Duration::from_millis(300)).await;
        Stack { _dir: dir, root, app, sim, inbox, started, health, stop_tx, supervisor }
    }

    fn counts(&self) -> Counts {
        let done = |q: Queue| self.app.metrics.queue(q).count(Outcome::Done) as usize;
        Counts {
            taken_in: self.started.inbox_stats.accepted.load(Relaxed) as usize,
            routed: done(Queue::Route),
            transmit: done(Queue::Transmit),
            report: done(Queue::Report),
            emails: self.started.mails.accepted.load(Relaxed) as usize,
        }
    }

    /// Requests finished per the ledger (delivered or awaiting print), emails still to write,
    /// and the emails accepted; `None` while the ledger is not there yet.
    async fn finished(&self, n: usize) -> Option<(usize, usize)> {
        let by_state = self.app.ledger.count_by_state().await.ok()?;
        let through = in_state(&by_state, RequestState::Delivered) + in_state(&by_state, RequestState::AwaitingPrint);
        if through < n {
            return None;
        }
        if self.app.ledger.open_notification_count().await.ok()? > 0 {
            return None;
        }
        let mails = self.app.ledger.mail_counts().await.ok()?;
        let of = |s: MailStatus| mails.iter().find(|(m, _)| *m == s).map_or(0, |(_, c)| *c as usize);
        if [MailStatus::Pending, MailStatus::Claimed, MailStatus::Sending, MailStatus::Deferred].into_iter().any(|s| of(s) > 0) {
            return None;
        }
        Some((through, of(MailStatus::Accepted)))
    }

    /// What every stage had counted: printed when a phase stalls.
    async fn diagnose(&self) {
        let c = self.counts();
        eprintln!("    counters: {c:?}; relay pushed {}", self.app.metrics.relayed.load(Relaxed));
        eprintln!(
            "    inbox: {} waiting, {} in processing/, {} in done/, {} in error/",
            count(&self.inbox.inbox).saturating_sub(4),
            count(&self.inbox.processing()),
            count(&self.inbox.done()),
            count(&self.inbox.error())
        );
        eprintln!("    ledger by state: {:?}", self.app.ledger.count_by_state().await.map(|s| states(&s)));
        eprintln!("    ledger outbox: {:?} triggers; open notifications: {:?}", self.app.ledger.outbox_len().await, self.app.ledger.open_notification_count().await);
        eprintln!("    emails: {:?}", self.app.ledger.mail_counts().await);
        for queue in [Queue::Route, Queue::Transmit, Queue::Report] {
            let m = self.app.metrics.queue(queue);
            eprintln!(
                "    {queue}: {}; queue: {:?}",
                Outcome::ALL.iter().map(|o| format!("{} {}", o.name(), m.count(*o))).collect::<Vec<_>>().join(", "),
                self.app.queues.admin().queue_counts(queue).await
            );
        }
        eprintln!("    stages down: {:?}", self.health.down());
    }

    async fn stop(self) {
        self.stop_tx.send(true).unwrap();
        self.supervisor.join(Duration::from_secs(30)).await;
        let _ = self.sim.stop().await;
    }
}

/// What the burst measured.
#[derive(Debug, Default)]
struct Burst {
    rate: Rate,
    /// Seconds from the drop until each stage had done N (emails: 2 N): taken in, routed,
    /// transmit, report, emails.
    stage_done: [Option<f64>; 5],
    emails: usize,
}

/// Waits until `n` requests (all there are) are through and their emails written; `target`
/// is what the counters must reach first. The guard stops it on a stall or the budget.
async fn until_through(stack: &Stack, n: usize, what: &str, start: Instant, budget: Duration, stall: Duration, mut seen: impl FnMut(Counts, f64)) -> (Option<(usize, usize)>, Option<String>) {
    let mut last_report = Instant::now();
    let (mut last_progress, mut last_change) = (Counts::default(), Instant::now());
    let mut last_ledger_look: Option<Instant> = None;
    loop {
        let c = stack.counts();
        seen(c, start.elapsed().as_secs_f64());
        // The ledger only once the counters say all, then every 100 ms (a report still open
        // counts as a done job but leaves the request where it was).
        if c.emails >= EMAILS_PER_REQUEST * n && last_ledger_look.is_none_or(|t| t.elapsed() >= Duration::from_millis(100)) {
            last_ledger_look = Some(Instant::now());
            if let Some(through) = stack.finished(n).await {
                return (Some(through), None);
            }
        }
        if c != last_progress {
            last_progress = c;
            last_change = Instant::now();
        }
        let why = if last_change.elapsed() >= stall {
            Some(format!("no stage made progress for {} s", stall.as_secs()))
        } else if start.elapsed() >= budget {
            Some(format!("budget of {} s spent", budget.as_secs()))
        } else {
            None
        };
        if let Some(why) = why {
            eprintln!("  ! {what} stopped: {why}; {c:?}");
            stack.diagnose().await;
            return (None, Some(why));
        }
        if last_report.elapsed() >= PROGRESS_EVERY {
            eprintln!("  … {what}, {:.0} s: {c:?}", start.elapsed().as_secs_f64());
            last_report = Instant::now();
        }
        tokio::time::sleep(TICK).await;
    }
}

async fn burst(stack: &Stack, n: usize, budget: Duration, stall: Duration) -> Burst {
    // Written beside the inbox (same file system), moved in at once.
    let staging = stack.root.join("staging");
    let names = common::write_requests(&staging, "ersuchen", BURST_GROUP, 0..n);
    let start = Instant::now();
    for name in &names {
        std::fs::rename(staging.join(name), stack.inbox.inbox.join(name)).unwrap();
    }
    let dropped = start.elapsed();
    let mut stage_done = [None; 5];
    let (through, incomplete) = until_through(stack, n, &format!("{n}-request burst"), start, budget, stall, |c, t| {
        let targets = [(c.taken_in, n), (c.routed, n), (c.transmit, n), (c.report, n), (c.emails, EMAILS_PER_REQUEST * n)];
        for (slot, (got, want)) in stage_done.iter_mut().zip(targets) {
            if slot.is_none() && got >= want {
                *slot = Some(t);
            }
        }
    })
    .await;
    let elapsed = start.elapsed();
    let mut incomplete = incomplete;
    let (done, emails) = through.unwrap_or((0, stack.counts().emails));
    if incomplete.is_none() && emails != EMAILS_PER_REQUEST * done {
        incomplete = Some(format!("{emails} emails accepted in the ledger for {done} requests (expected {EMAILS_PER_REQUEST} each)"));
    }
    let files = std::fs::read_dir(stack.root.join("mail")).map_or(0, |d| d.flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".eml")).count());
    if incomplete.is_none() && files != emails {
        incomplete = Some(format!("{files} .eml files for {emails} accepted emails"));
    }
    eprintln!("  ({n}-request burst: the drop took {:.0} ms; {files} .eml files)", dropped.as_secs_f64() * 1000.0);
    Burst { rate: Rate::of(done, elapsed, incomplete), stage_done, emails }
}

/// Percentiles of latencies in milliseconds.
#[derive(Debug, Default, Clone, Copy)]
struct Spread {
    p50: f64,
    p99: f64,
    max: f64,
}

impl Spread {
    fn of(mut ms: Vec<f64>) -> Spread {
        if ms.is_empty() {
            return Spread { p50: f64::NAN, p99: f64::NAN, max: f64::NAN };
        }
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms[((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1];
        Spread { p50: at(0.5), p99: at(0.99), max: ms[ms.len() - 1] }
    }
}

/// What the steady phase measured.
#[derive(Debug, Default)]
struct Steady {
    dropped: usize,
    /// Requests a second the drops achieved.
    drop_rate: f64,
    /// From the rename to: recorded (taken in), routed, transmitting, transmitted.
    steps: [Spread; 4],
    incomplete: Option<String>,
}

/// `m` requests, one every 1/STEADY_RATE s, into the running pipeline that has `before`
/// requests already; latency from each rename to its journal events.
async fn steady(stack: &Stack, before: usize, seconds: u64, budget: Duration, stall: Duration) -> Steady {
    let m = (u64::from(STEADY_RATE) * seconds) as usize;
    let staging = stack.root.join("staging-steady");
    let names = common::write_requests(&staging, "steady", STEADY_GROUP, 0..m);
    let inbox = stack.inbox.inbox.clone();
    // The drops on a thread of their own, each at its time, whatever the runtime does.
    let dropper = std::thread::spawn(move || {
        let every = Duration::from_secs(1) / STEADY_RATE;
        let start = Instant::now();
        let mut at: Vec<DateTime<Utc>> = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let due = start + every * i as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            at.push(Utc::now());
            std::fs::rename(staging.join(name), inbox.join(name)).unwrap();
        }
        (at, start.elapsed())
    });
    let start = Instant::now();
    let (through, incomplete) = until_through(stack, before + m, "steady phase", start, budget + Duration::from_secs(seconds), stall, |_, _| {}).await;
    let (at, took) = dropper.join().expect("the dropper");
    let mut result = Steady { dropped: at.len(), drop_rate: at.len() as f64 / took.as_secs_f64().max(1e-9), incomplete, ..Steady::default() };
    if through.is_none() {
        return result;
    }
    // The steady requests' journals: every step's time against the rename's.
    let mut steps: [Vec<f64>; 4] = Default::default();
    let mut offset = 0;
    loop {
        let page = stack.app.ledger.list(&ListFilter { limit: ListFilter::MAX_LIMIT, offset, ..ListFilter::default() }).await.expect("the ledger's list");
        offset += page.len() as u64;
        for request in &page {
            let Some(i) = request.nachrichten_uuid.as_deref().and_then(|u| common::request_number(STEADY_GROUP, u)) else { continue };
            let dropped = at[i];
            let journal = stack.app.ledger.journal(request.id).await.expect("a journal");
            let when = |s: RequestState| journal.iter().find(|e| e.to == s).map(|e| e.at);
            let recorded = journal.first().map(|e| e.at);
            for (k, t) in [recorded, when(RequestState::Routed), when(RequestState::Transmitting), when(RequestState::Transmitted)].into_iter().enumerate() {
                if let Some(t) = t {
                    steps[k].push((t - dropped).num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0);
                }
            }
        }
        if page.len() < ListFilter::MAX_LIMIT as usize {
            break;
        }
    }
    if steps[3].len() != m && result.incomplete.is_none() {
        result.incomplete = Some(format!("{} of {m} steady requests have a transmitted event", steps[3].len()));
    }
    result.steps = steps.map(Spread::of);
    result
}

/// Emails per writer batch and writers in the disk baseline: `jobs/notify.toml`'s batch
/// size and senders.
fn notify_shape() -> (usize, usize) {
    let notify = amtsbote::queue::load_job_configs(None).unwrap().get(Queue::Notify).clone();
    (notify.batch_size.max(1), notify.concurrency.max(1))
}

/// The disk's own rate for `.eml` files, no ledger: `n` emails (about 1 KB) from as many
/// writers as the notify stage has senders, (a) one synced file at a time through
/// `Mailer::send` (file and folder synced for each email, as the file transport did for the
/// notify stage before), (b) through the notify stage's file sessions, a batch of files
/// synced together. Emails/s for both.
async fn eml_baseline(n: usize) -> (f64, f64) {
    use amtsbote::mail::transport::Transport;
    let (batch, writers) = notify_shape();
    let dir = tempfile::tempdir().unwrap();
    let mailer = std::sync::Arc::new(amtsbote::mail::smtp::Mailer::from_config(&amtsbote::config::SmtpConfig::default(), dir.path()).expect("the mailer"));
    let body = "Ihr Ersuchen wurde übermittelt. ".repeat(30);
    let message = |id: &str| {
        lettre::Message::builder()
            .message_id(Some(format!("<{id}@amtsbote.test>")))
            .from("amtsbote <noreply@amtsbote.test>".parse().expect("an address"))
            .to("stadtkasse@lemgo.test".parse().expect("an address"))
            .subject("Ersuchen übermittelt")
            .body(body.clone())
            .expect("a message")
    };
    let each = n.div_ceil(writers);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..writers {
        let (mailer, messages) = (mailer.clone(), (0..each).map(|i| message(&format!("one-{w}-{i}"))).collect::<Vec<_>>());
        tasks.spawn(async move {
            for (i, m) in messages.iter().enumerate() {
                assert_eq!(mailer.send(m, &format!("one-{w}-{i}")).await, amtsbote::mail::smtp::Outcome::Accepted);
            }
        });
    }
    while let Some(t) = tasks.join_next().await {
        t.expect("a writer");
    }
    let one_by_one = (each * writers) as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    for w in 0..writers {
        let (mailer, messages) = (mailer.clone(), (0..each).map(|i| message(&format!("batch-{w}-{i}")).formatted()).collect::<Vec<_>>());
        tasks.spawn(async move {
            let mut session = mailer.open().await.expect("a session");
            for (k, chunk) in messages.chunks(batch).enumerate() {
                for (i, m) in chunk.iter().enumerate() {
                    let id = format!("batch-{w}-{k}-{i}");
                    session.begin(&id, "noreply@amtsbote.test", &["stadtkasse@lemgo.test".to_string()], m).await.expect("begin");
                    session.finish(m).await.expect("finish");
                }
                session.settle().await.expect("settle");
            }
        });
    }
    while let Some(t) = tasks.join_next().await {
        t.expect("a writer");
    }
    let batched = (each * writers) as f64 / start.elapsed().as_secs_f64();
    (one_by_one, batched)
}

fn main() {
    // `--list`: a test runner asking for tests (none here). Without `--bench` (`cargo test
    // --bench e2e`): the smoke run.
    let Some(sizes::Sizes { smoke, sizes }) = sizes::from_args("E2E_BENCH_SMOKE") else { return };
    let budget = env_secs("E2E_BENCH_BUDGET_SECS", 600);
    let stall = env_secs("E2E_BENCH_STALL_SECS", 30);
    let steady_secs = if smoke { 3 } else { env_secs("E2E_BENCH_STEADY_SECS", 60).as_secs() };
    common::init_logging();
    let runtime = common::runtime();
    let jobs = amtsbote::queue::load_job_configs(None).unwrap();
    let callers = baseline::sim_callers();
    println!(
        "amtsbote end-to-end benchmark — inbox → intake → route → transmit → report → notify on the embedded default: SQLite ledger (WAL, synchronous=FULL), SQLite queues, emails as synced .eml files; every stage as `amtsbote serve` starts it; XTA simulator on loopback (report delay 0); 2 threads, {} cores",
        common::cores()
    );
    let cfg = |q: Queue| {
        let j = jobs.get(q);
        format!("{q} {}×{}", j.concurrency, j.batch_size)
    };
    println!(
        "inbox scanned every {POLL_MS} ms, settle {SETTLE_MS} ms (defaults 200/100 ms); workers (concurrency×batch, jobs/*.toml): {}, {}, {}, {}",
        cfg(Queue::Route),
        cfg(Queue::Transmit),
        cfg(Queue::Report),
        cfg(Queue::Notify)
    );
    println!(
        "burst: N files renamed into inbox/demo at once, timed until every request is delivered and its {EMAILS_PER_REQUEST} emails written; steady: {STEADY_RATE} requests/s for {steady_secs} s after the {} burst, latency from the rename to the `transmitted` journal event",
        if smoke { "smoke" } else { "10,000" }
    );
    println!("baselines (same run, each N): the queue engine's no-op drain (N route jobs, run_worker, a handler that does nothing) and the simulator's no-op SOAP call (N checkAccountActive from {callers} callers)\n");

    let eml_n = if smoke { 200 } else { 2_000 };
    let (eml_one, eml_batched) = runtime.block_on(eml_baseline(eml_n));
    let (batch, writers) = notify_shape();
    println!(
        "the disk, same run: {eml_n} .eml files of about 1 KB from {writers} writers: {eml_one:.0}/s one synced file at a time (file and folder synced for each), {eml_batched:.0}/s in batches of {batch} synced together (the notify stage's file sessions)\n"
    );

    let mut rows = Vec::new();
    let mut steady_result = None;
    for &n in &sizes {
        let (burst, steady) = runtime.block_on(async {
            let stack = Stack::start().await;
            let burst = burst(&stack, n, budget, stall).await;
            let steady = if (n == 10_000 || smoke) && burst.rate.incomplete.is_none() { Some(steady(&stack, n, steady_secs, budget, stall).await) } else { None };
            stack.stop().await;
            (burst, steady)
        });
        if steady.is_some() {
            steady_result = steady;
        }
        let noop = runtime.block_on(baseline::noop_drain(n, budget));
        let calls = runtime.block_on(baseline::noop_calls(n, callers, TENANT, budget));
        rows.push((n, burst, noop, calls));
    }

    println!(
        "{:>8} {:>8} {:>10} {:>7} | {:>50} | {:>19} {:>19}",
        "requests", "seconds", "requests/s", "vs 10k", "each stage done after s: taken in, routed, transmit, report, emails", "no-op jobs/s (s)", "no-op calls/s (s)"
    );
    let base = rows.iter().find(|(n, ..)| *n == 10_000).map(|(_, b, ..)| b.rate.rate);
    for (n, b, q, c) in &rows {
        let vs = base.map_or("-".to_string(), |base| format!("{:.0}%", b.rate.rate / base * 100.0));
        let stages = b.stage_done.iter().map(|t| t.map_or("-".to_string(), |t| format!("{t:.2}"))).collect::<Vec<_>>().join(", ");
        println!(
            "{n:>8} {:>8.2} {:>9.0}{} {:>7} | {:>50} | {:>18}{} {:>18}{}",
            b.rate.seconds,
            b.rate.rate,
            star(&b.rate.incomplete),
            vs,
            stages,
            format!("{:.0} ({:.2})", q.rate, q.seconds),
            star(&q.incomplete),
            format!("{:.0} ({:.2})", c.rate, c.seconds),
            star(&c.incomplete)
        );
    }
    println!("(a request is 3 jobs — route, transmit, report — 4 SOAP calls and {EMAILS_PER_REQUEST} emails; the stage columns are the in-process counters of done jobs and written emails)");
    if let Some(s) = &steady_result {
        println!(
            "\nsteady: {} requests dropped at {:.1}/s{}; ms from the rename to: recorded p50 {:.0} p99 {:.0} max {:.0}; routed p50 {:.0} p99 {:.0} max {:.0}; transmitting p50 {:.0} p99 {:.0} max {:.0}",
            s.dropped,
            s.drop_rate,
            if s.incomplete.is_some() { " *" } else { "" },
            s.steps[0].p50,
            s.steps[0].p99,
            s.steps[0].max,
            s.steps[1].p50,
            s.steps[1].p99,
            s.steps[1].max,
            s.steps[2].p50,
            s.steps[2].p99,
            s.steps[2].max
        );
        println!("steady: drop → transmitted: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms", s.steps[3].p50, s.steps[3].p99, s.steps[3].max);
    }

    // A smoke run (a debug build, 200 requests) is no measurement: it checks that every
    // request goes through and every email is written.
    let verdict = |ok: bool| match (ok, smoke) {
        (true, _) => "met",
        (false, true) => "not judged on a smoke run",
        (false, false) => "NOT met",
    };
    println!();
    let ten = rows.iter().find(|(n, ..)| *n == 10_000);
    println!(
        "goal ≥ 1,000 requests/s for the 10,000 burst: {} ({})",
        verdict(ten.is_some_and(|(_, b, ..)| b.rate.incomplete.is_none() && b.rate.rate >= 1_000.0)),
        rows.iter().map(|(n, b, ..)| format!("{n}: {:.0}/s", b.rate.rate)).collect::<Vec<_>>().join(", ")
    );
    if let Some(s) = &steady_result {
        println!("goal p99 ≤ 250 ms from drop to transmitted at {STEADY_RATE}/s: {} (p99 {:.0} ms)", verdict(s.incomplete.is_none() && s.steps[3].p99 <= 250.0), s.steps[3].p99);
    }
    if let (Some(base), Some((_, b, ..))) = (base, rows.iter().find(|(n, ..)| *n == 100_000)) {
        println!("goal 100k burst ≥ 70% of the 10k rate: {} ({:.0}%)", verdict(b.rate.incomplete.is_none() && b.rate.rate >= 0.7 * base), b.rate.rate / base * 100.0);
    }
    let mut failed = false;
    for (n, b, q, c) in &rows {
        for (what, r) in [("burst", &b.rate), ("no-op drain", q), ("no-op calls", c)] {
            if let Some(why) = &r.incomplete {
                println!("* {n}: {what} incomplete ({} of {n}): {why}", r.done);
                failed = true;
            }
        }
        if b.rate.incomplete.is_none() && b.emails != EMAILS_PER_REQUEST * n {
            println!("* {n}: {} emails written, expected {}", b.emails, EMAILS_PER_REQUEST * n);
            failed = true;
        }
    }
    if let Some(why) = steady_result.as_ref().and_then(|s| s.incomplete.as_ref()) {
        println!("* steady phase incomplete: {why}");
        failed = true;
    }
    if smoke {
        assert!(!failed, "the smoke run must deliver every request, write every email and finish every baseline");
        assert!(steady_result.is_some(), "the smoke run has a steady phase");
        println!("\ne2e smoke: {} requests delivered with {} emails, a steady phase, both baselines (run `cargo bench --bench e2e` to measure)", sizes[0], EMAILS_PER_REQUEST * sizes[0]);
    }
}
