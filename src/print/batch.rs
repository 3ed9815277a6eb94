//! The nightly print batch: every request awaiting print becomes a letter in the batch of
//! its night, sorted by postcode, written as PDF files with their manifests into the print
//! centre's handoff folder.
//!
//! The batch of a date is decided in the ledger ([`Ledger::open_print_batch`]): the first
//! run numbers the letters (sorted by the recipient's postcode, Leitregion first), every
//! later run — a restart, a second process, an operator's `amtsbote print-batch run` — gets
//! that batch back and writes only what is missing. One writer at a time holds the batch's
//! lease. Each file is rendered, written under a temporary name, synced, and renamed into
//! the handoff folder together with its manifests (JSON and CSV, with the file's SHA-256);
//! then, in one transaction, the file is recorded and its letters move to `printed`
//! ([`Ledger::print_file_done`]). A crash at any point leaves no partial file in the handoff
//! folder, and the next run completes the batch. A run that finds nothing awaiting print
//! records no batch: its date stays open, so `serve` starting after 22:00 with nothing to
//! print (and catching up the night) does not close the date to the requests that come
//! after it.
//!
//! Test messages never reach the handoff folder: their letters (marked "MUSTER – nicht
//! versenden") go to `<data_dir>/print/test/`. The manifests carry the recipient
//! authority's postcode, never a debtor's address.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use chrono::NaiveDate;

use crate::config::Config;
use crate::directory::SharedDirectory;
use crate::ledger::{Actor, Ledger, LedgerError, ListFilter, Request, RequestId};
use crate::print::letter::{self, LetterError, Recipient, Sender, Templates};

/// Why a batch could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("ledger: {0}")]
    Ledger(#[from] LedgerError),
    // The causes are sources: shown after the message by whoever prints the chain.
    #[error("{}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("letter {letter_number} (request {request})")]
    Letter { letter_number: u32, request: RequestId, source: LetterError },
    #[error("another process is writing the batch {0} now; try again when it is done")]
    Busy(String),
    #[error("request {0} of the batch is no longer in the ledger")]
    Missing(RequestId),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BatchError + '_ {
    move |source| BatchError::Io { path: path.to_path_buf(), source }
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub batch_id: String,
    pub date: NaiveDate,
    /// Letters in the batch (test letters included).
    pub letters: usize,
    pub test_letters: usize,
    /// Files written by this run, and pages in them.
    pub files_written: usize,
    pub pages_written: u64,
    /// Files of the batch in all (written now or before).
    pub files: usize,
    /// The batch was complete before this run: nothing was written.
    pub already_complete: bool,
    /// Nothing awaited print and the date had no batch: none was recorded, and the date
    /// stays open (a later run of it makes the batch of what waits then).
    pub nothing_to_print: bool,
    pub seconds_millis: u64,
}

/// How far a run is: handed to the progress callback of [`BatchRunner::run`] once before
/// the first file and after each one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Letters in files done (written now or before), of all letters.
    pub letters_done: usize,
    pub letters: usize,
    /// Files done, of all files.
    pub files_done: usize,
    pub files: usize,
    /// Pages written by this run so far.
    pub pages_written: u64,
}

/// Makes the batches of one installation.
pub struct BatchRunner {
    pub ledger: Arc<dyn Ledger>,
    pub directory: Arc<SharedDirectory>,
    pub config: Config,
    pub templates: Templates,
    /// Who writes (for the lease): process and host.
    pub owner: String,
    /// How long the lease on a batch lasts: longer than writing it takes (`timeout_secs` of
    /// `jobs/print.toml`); a writer that died lets go after it.
    pub lease: std::time::Duration,
}

/// One file of the batch: its number, where it goes, and its letters (request, number).
struct Planned<'a> {
    file_no: u32,
    dir: PathBuf,
    name: String,
    letters: &'a [(RequestId, u32)],
}

/// What is known of a letter before its file is written: its request and whether it is a
/// test message's. The requests themselves are read when their file is written: a batch of
/// 100,000 letters is not held in memory.
type Lean = (RequestId, bool);

/// `B20261201`.
pub fn batch_id(date: NaiveDate) -> String {
    format!("B{}", date.format("%Y%m%d"))
}

/// The date of a batch id ([`batch_id`] backwards): `B20261201` → 2026-12-01.
pub fn batch_date(batch_id: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(batch_id.strip_prefix('B')?, "%Y%m%d").ok()
}

impl BatchRunner {
    /// The recipient of a request: the postal address of the authority it was routed to.
    fn recipient(&self, request: &Request) -> Option<Recipient> {
        let routed = request.routed.as_ref()?;
        let directory = self.directory.get();
        let a = directory.authority(&routed.kennung)?;
        Some(Recipient { name: a.name.clone(), street: a.anschrift.street_line().unwrap_or_default(), postcode: a.anschrift.postleitzahl.clone(), city: a.anschrift.ort.clone() })
    }

    /// The sender of a tenant's letters: its directory entry, or its name alone.
    fn sender(&self, tenant: &str) -> Sender {
        let t = self.config.tenants.iter().find(|t| t.id == tenant);
        let directory = self.directory.get();
        match t.and_then(|t| directory.authority(&t.kennung)) {
            Some(a) => Sender { name: a.name.clone(), street: a.anschrift.street_line().unwrap_or_default(), postcode: a.anschrift.postleitzahl.clone(), city: a.anschrift.ort.clone(), email: a.email.clone() },
            None => Sender { name: t.map_or(tenant.to_string(), |t| t.name.clone()), street: String::new(), postcode: String::new(), city: String::new(), email: None },
        }
    }

    /// Everything awaiting print and in no batch, sorted by the recipient's postcode
    /// (Leitregion = its first two digits, first), then by request: each with its test flag.
    async fn candidates(&self) -> Result<Vec<Lean>, BatchError> {
        let mut waiting = Vec::new();
        // Keyset paging (ids above the last page's): each page costs the same, where an
        // offset makes reading 100,000 candidates quadratic.
        let mut after = RequestId(0);
        loop {
            let page = self.ledger.awaiting_print_after(after, ListFilter::MAX_LIMIT).await?;
            let Some(last) = page.last() else { break };
            after = last.id;
            for r in page {
                if r.print_batch.is_some() {
                    continue;
                }
                match self.recipient(&r) {
                    Some(to) => waiting.push((to.postcode, r.id, r.test)),
                    None => tracing::warn!(request = %r.id, "awaiting print, but the directory has no postal address for its authority; left for an operator"),
                }
            }
        }
        waiting.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        Ok(waiting.into_iter().map(|(_, id, test)| (id, test)).collect())
    }

    /// Makes (or completes) the batch of `date`.
    pub async fn run(&self, date: NaiveDate, progress: &(dyn Fn(Progress) + Sync)) -> Result<Summary, BatchError> {
        let started = Instant::now();
        let candidates = self.candidates().await?;
        let order: Vec<RequestId> = candidates.iter().map(|(id, _)| *id).collect();
        let opened = self.ledger.open_print_batch(date, &batch_id(date), &order).await?;
        let mut summary = Summary {
            batch_id: batch_id(date),
            date,
            letters: 0,
            test_letters: 0,
            files_written: 0,
            pages_written: 0,
            files: 0,
            already_complete: false,
            nothing_to_print: false,
            seconds_millis: 0,
        };
        let Some(batch) = opened else {
            summary.nothing_to_print = true;
            summary.seconds_millis = started.elapsed().as_millis() as u64;
            return Ok(summary);
        };
        summary.batch_id = batch.batch_id.clone();
        summary.letters = batch.letters.len();
        summary.already_complete = batch.finished;
        if batch.finished {
            summary.files = batch.files_done.len();
            return Ok(summary);
        }
        let lease = chrono::Utc::now() + chrono::Duration::from_std(self.lease).unwrap_or(chrono::Duration::hours(1));
        if let Some(holder) = self.ledger.claim_print_batch(&batch.batch_id, &self.owner, lease, None).await? {
            // A writer of this machine whose process died lets go at once; any other holds
            // its lease until it ends.
            if !crate::owner_gone_here(&holder) || self.ledger.claim_print_batch(&batch.batch_id, &self.owner, lease, Some(&holder)).await?.is_some() {
                return Err(BatchError::Busy(batch.batch_id));
            }
            tracing::info!(batch = %batch.batch_id, "took the batch over from a writer whose process died");
        }
        // The letters, real ones first, then test ones, in batch order. Their test flags were
        // read above when this run opened the batch; a batch opened before is read now.
        let flags: std::collections::HashMap<RequestId, bool> = if batch.created { candidates.into_iter().collect() } else { Default::default() };
        let mut real = Vec::new();
        let mut test = Vec::new();
        for (id, number) in &batch.letters {
            let is_test = match flags.get(id) {
                Some(t) => *t,
                None => self.ledger.get(*id).await?.ok_or(BatchError::Missing(*id))?.test,
            };
            if is_test { test.push((*id, *number)) } else { real.push((*id, *number)) }
        }
        drop(flags);
        summary.test_letters = test.len();
        let per_file = self.config.print.letters_per_file.max(1) as usize;
        let handoff = self.config.print.handoff(&self.config.data_dir);
        let test_dir = self.config.data_dir.join("print/test");
        let mut planned = Vec::new();
        let mut file_no = 0u32;
        for (letters, dir, infix) in [(&real, &handoff, ""), (&test, &test_dir, "muster-")] {
            for chunk in letters.chunks(per_file) {
                file_no += 1;
                planned.push(Planned { file_no, dir: dir.clone(), name: format!("{}-{infix}{file_no:03}", batch.batch_id), letters: chunk });
            }
        }
        summary.files = planned.len();
        let done = std::sync::Mutex::new(Progress { letters_done: 0, letters: summary.letters, files_done: 0, files: planned.len(), pages_written: 0 });
        let written = std::sync::atomic::AtomicUsize::new(0);
        let report = |letters: usize, pages: u64, wrote: bool| {
            let now = {
                let mut d = done.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                d.letters_done += letters;
                d.files_done += 1;
                d.pages_written += pages;
                *d
            };
            if wrote {
                written.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            progress(now);
        };
        progress(*done.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        // Files are written side by side, as many at once as there are cores (each renders
        // on the blocking pool), each recorded as soon as it is handed off: the order of
        // recording need not be the file order. The first error stops the writers (each
        // finishes the file it has); the files done so far stay done.
        let next = std::sync::atomic::AtomicUsize::new(0);
        let failed = std::sync::atomic::AtomicBool::new(false);
        let (planned, next, failed, report, batch) = (&planned, &next, &failed, &report, &batch);
        let writer = || async move {
            loop {
                if failed.load(std::sync::atomic::Ordering::Relaxed) {
                    return Ok(());
                }
                let Some(file) = planned.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)) else { return Ok(()) };
                if batch.files_done.contains(&file.file_no) {
                    report(file.letters.len(), 0, false);
                    continue;
                }
                match self.write_file(&batch.batch_id, date, file).await {
                    Ok(pages) => report(file.letters.len(), pages, true),
                    Err(e) => {
                        failed.store(true, std::sync::atomic::Ordering::Relaxed);
                        return Err(e);
                    }
                }
            }
        };
        let writers = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, planned.len().max(1));
        for result in join_all((0..writers).map(|_| Box::pin(writer())).collect()).await {
            result?;
        }
        let done = *done.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        summary.pages_written = done.pages_written;
        summary.files_written = written.into_inner();
        self.ledger.finish_print_batch(&batch.batch_id).await?;
        summary.seconds_millis = started.elapsed().as_millis() as u64;
        Ok(summary)
    }

    /// Renders one file and hands it off with its manifests; returns its pages. Its requests
    /// are read now (one file's at a time in memory); composing, rendering, hashing and
    /// writing run on the blocking pool.
    async fn write_file(&self, batch_id: &str, date: NaiveDate, file: &Planned<'_>) -> Result<u64, BatchError> {
        // The file's requests and payloads at once (two statements, not two a letter).
        let mut found: std::collections::HashMap<RequestId, (Request, Vec<u8>)> =
            self.ledger.print_inputs(batch_id, file.letters).await?.into_iter().map(|(r, p)| (r.id, (r, p))).collect();
        let mut letters = Vec::with_capacity(file.letters.len());
        for &(id, number) in file.letters {
            let (request, payload) = found.remove(&id).ok_or(BatchError::Missing(id))?;
            let recipient = self.recipient(&request).ok_or(BatchError::Missing(id))?;
            letters.push(ToCompose { id, number, test: request.test, payload, sender: self.sender(&request.tenant), recipient });
        }
        drop(found);
        let job = FileJob { batch_id: batch_id.to_owned(), date, dir: file.dir.clone(), name: file.name.clone(), templates: self.templates.clone(), letters };
        let dir = file.dir.clone();
        let Made { pdf_name, sha256, pages, notes } = tokio::task::spawn_blocking(move || job.make())
            .await
            .map_err(|e| BatchError::Io { path: dir, source: std::io::Error::other(e.to_string()) })??;
        crate::supervise::crash_point("print-before-record");
        self.ledger.print_file_done(batch_id, file.file_no, &pdf_name, &sha256, file.letters, &notes, &Actor::system("print")).await?;
        tracing::info!(batch = batch_id, file = %pdf_name, letters = file.letters.len(), pages, "print file handed off");
        Ok(pages)
    }
}

/// A letter of a file, read from the ledger, to be composed.
struct ToCompose {
    id: RequestId,
    number: u32,
    test: bool,
    payload: Vec<u8>,
    sender: Sender,
    recipient: Recipient,
}

/// A file handed off by [`FileJob::make`].
struct Made {
    pdf_name: String,
    sha256: String,
    pages: u64,
    /// The journal notes of attachments not printed, per request.
    notes: Vec<(RequestId, String)>,
}

/// One file's work off the runtime: everything it needs, owned.
struct FileJob {
    batch_id: String,
    date: NaiveDate,
    dir: PathBuf,
    name: String,
    templates: Templates,
    letters: Vec<ToCompose>,
}

impl FileJob {
    /// Composes and renders the letters, writes the PDF and its manifests under temporary
    /// names, and renames them into the folder.
    fn make(self) -> Result<Made, BatchError> {
        let FileJob { batch_id, date, dir, name, templates, letters } = self;
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let pdf_name = format!("{name}.pdf");
        // The PDF is written under its temporary name as its letters are laid out (the
        // print centre ignores dotfiles and `.part`); a failed file leaves nothing behind.
        let tmp = dir.join(format!(".{pdf_name}.part"));
        let written = write_pdf(&tmp, &batch_id, date, &templates, &letters);
        let (sha256, rendered, notes) = match written {
            Ok(done) => done,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        let pages: u64 = rendered.iter().map(|r| u64::from(r.pages)).sum();
        let sheets: u64 = rendered.iter().map(|r| u64::from(r.sheets)).sum();
        let rows: Vec<serde_json::Value> = rendered
            .iter()
            .zip(&letters)
            .map(|(r, l)| {
                serde_json::json!({
                    "letter_number": l.number,
                    "request_id": l.id,
                    "postcode": l.recipient.postcode,
                    "first_page": r.first_page,
                    "pages": r.pages,
                    "sheets": r.sheets,
                    "envelope": "DL",
                })
            })
            .collect();
        let manifest = serde_json::json!({
            "batch_id": batch_id,
            "date": date,
            "file": pdf_name,
            "sha256": sha256,
            "letters": rows,
            "totals": {"letters": rows.len(), "pages": pages, "sheets": sheets},
        });
        let mut csv = String::from("letter_number;request_id;postcode;first_page;pages;sheets;envelope\n");
        for row in &rows {
            csv.push_str(&format!("{};{};{};{};{};{};{}\n", row["letter_number"], row["request_id"], row["postcode"].as_str().unwrap_or_default(), row["first_page"], row["pages"], row["sheets"], "DL"));
        }
        // The manifests under temporary names too, then the PDF renamed, then its
        // manifests: a manifest in the folder means its file is complete.
        let manifests = [
            (format!("{name}.manifest.json"), serde_json::to_vec_pretty(&manifest).unwrap_or_default()),
            (format!("{name}.manifest.csv"), csv.into_bytes()),
        ];
        for (name, bytes) in &manifests {
            let tmp = dir.join(format!(".{name}.part"));
            let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
            f.write_all(bytes).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
        }
        for name in std::iter::once(&pdf_name).chain(manifests.iter().map(|(n, _)| n)) {
            let (tmp, to) = (dir.join(format!(".{name}.part")), dir.join(name));
            std::fs::rename(&tmp, &to).map_err(io(&to))?;
        }
        std::fs::File::open(&dir).and_then(|d| d.sync_all()).map_err(io(&dir))?;
        Ok(Made { pdf_name, sha256, pages, notes })
    }
}

/// What writing a file's PDF gave: its SHA-256 (hex), its letters, and the journal notes
/// of attachments not printed.
type WrittenPdf = (String, Vec<letter::RenderedLetter>, Vec<(RequestId, String)>);

/// Composes each letter and writes it into the PDF at `tmp` at once (one letter laid out
/// in memory at a time); the file synced.
fn write_pdf(tmp: &Path, batch_id: &str, date: NaiveDate, templates: &Templates, letters: &[ToCompose]) -> Result<WrittenPdf, BatchError> {
    let f = std::fs::File::create(tmp).map_err(io(tmp))?;
    let mut file = letter::LetterFile::new(std::io::BufWriter::with_capacity(1 << 18, f)).map_err(|e| pdf_error(tmp, letters.first(), e))?;
    // Attachments that are not printed: a warning now (position only, the file name may
    // name the debtor), the journal when the letter moves to printed.
    let mut notes = Vec::new();
    for l in letters {
        let failed = |source| BatchError::Letter { letter_number: l.number, request: l.id, source };
        let input = letter::compose(&l.payload, &l.sender, &l.recipient, date, templates, batch_id, l.number, l.test).map_err(failed)?;
        for a in &input.attachments {
            if let (letter::AttachmentOutcome::NotPrinted { fault, .. }, Some(note)) = (&a.outcome, a.journal_note()) {
                tracing::warn!(request = %l.id, letter = l.number, attachment = a.position, reason = %fault, "attachment not printed: the letter goes out with a note instead");
                notes.push((l.id, note));
            }
        }
        file.add(&input).map_err(|e| pdf_error(tmp, Some(l), e))?;
    }
    let (out, sha, rendered) = file.finish().map_err(|e| pdf_error(tmp, letters.first(), e))?;
    let f = out.into_inner().map_err(|e| BatchError::Io { path: tmp.to_path_buf(), source: e.into_error() })?;
    f.sync_all().map_err(io(tmp))?;
    Ok((hex::encode(sha), rendered, notes))
}

/// A failure writing the PDF: the disk's as an I/O error of the file, any other as the
/// letter's (the file's first when no letter is to blame).
fn pdf_error(tmp: &Path, letter: Option<&ToCompose>, e: LetterError) -> BatchError {
    match e {
        LetterError::File(crate::print::pdf::PdfError::Io(source)) => BatchError::Io { path: tmp.to_path_buf(), source },
        source => {
            let (letter_number, request) = letter.map_or((0, RequestId(0)), |l| (l.number, l.id));
            BatchError::Letter { letter_number, request, source }
        }
    }
}

/// Runs `futures` side by side on the current task; their results in order.
async fn join_all<F: std::future::Future + Unpin>(mut futures: Vec<F>) -> Vec<F::Output> {
    let mut results: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in futures.iter_mut().zip(results.iter_mut()) {
            if slot.is_none() {
                match std::pin::Pin::new(f).poll(cx) {
                    std::task::Poll::Ready(out) => *slot = Some(out),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    })
    .await;
    results.into_iter().flatten().collect()
}

/// A runner over the stores `config` names, writing as `role` (`cli`, `serve`) of this
/// process.
pub async fn open(config: &Config, role: &str) -> anyhow::Result<BatchRunner> {
    let ledger = crate::app::open_ledger(config).await?;
    let directory = crate::app::open_directory(config)?;
    let jobs = crate::queue::load_job_configs(Some(&config.data_dir))?;
    runner(config, ledger, directory, jobs.get(crate::queue::Queue::Print), role)
}

/// A runner over open stores, with the lease of `jobs` (`jobs/print.toml`: `timeout_secs`).
pub fn runner(config: &Config, ledger: Arc<dyn Ledger>, directory: Arc<SharedDirectory>, jobs: &crate::queue::JobConfig, role: &str) -> anyhow::Result<BatchRunner> {
    use anyhow::Context as _;
    let templates = Templates::load(&config.data_dir).context("the letter templates")?;
    let lease = jobs.timeout();
    let owner = format!("{role}-{}-{}", crate::hostname(), std::process::id());
    Ok(BatchRunner { ledger, directory, config: config.clone(), templates, owner, lease })
}

/// The print stage's clock: the system's. For tests of the time of day only,
/// `AMTSBOTE_TEST_NOW` (RFC 3339, e.g. `2026-12-01T23:00:00+01:00`) sets the time of the
/// first reading; the clock runs on from there. Read by `serve`'s print schedule and by the
/// default date of `amtsbote print-batch run`.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    static OFFSET: std::sync::OnceLock<chrono::Duration> = std::sync::OnceLock::new();
    let offset = OFFSET.get_or_init(|| {
        let Ok(at) = std::env::var("AMTSBOTE_TEST_NOW") else { return chrono::Duration::zero() };
        match chrono::DateTime::parse_from_rfc3339(&at) {
            Ok(at) => at.with_timezone(&chrono::Utc) - chrono::Utc::now(),
            Err(e) => {
                tracing::warn!(value = %at, error = %e, "AMTSBOTE_TEST_NOW is no RFC 3339 time; the system's clock is used");
                chrono::Duration::zero()
            }
        }
    });
    chrono::Utc::now() + *offset
}

/// Today in Europe/Berlin by [`now`]: the default date of a batch run by hand.
pub fn today() -> NaiveDate {
    now().with_timezone(&chrono_tz::Europe::Berlin).date_naive()
}

/// The latest time `schedule` fired at or before `now`, within the last two days.
fn last_fire(schedule: &crate::queue::JobSchedule, now: chrono::DateTime<chrono::Utc>) -> Option<chrono::DateTime<chrono_tz::Tz>> {
    let mut at = now - chrono::Duration::hours(48);
    let mut last = None;
    while let Some(next) = schedule.next_after(at) {
        if next.with_timezone(&chrono::Utc) > now {
            break;
        }
        at = next.with_timezone(&chrono::Utc);
        last = Some(next);
    }
    last
}

/// `serve`'s print stage: the batch on the schedule of `jobs/print.toml` (its date is the
/// day it fires, in the schedule's time zone). At start it catches up: if the last time
/// it should have fired has passed (a night with no process running), that batch is made
/// now — or found complete. A batch that fails ends the stage with the error; the
/// supervisor reports it and starts it again, which tries again.
pub async fn run_nightly(runner: Arc<BatchRunner>, schedule: crate::queue::JobSchedule, mut stop: tokio::sync::watch::Receiver<bool>) -> anyhow::Result<()> {
    let nothing = |_: Progress| {};
    if let Some(last) = last_fire(&schedule, now()) {
        let summary = runner.run(last.date_naive(), &nothing).await?;
        if summary.nothing_to_print {
            tracing::info!(batch = %summary.batch_id, "print batch caught up at start: nothing awaits print, no batch recorded (its date stays open)");
        } else if !summary.already_complete {
            tracing::info!(batch = %summary.batch_id, letters = summary.letters, files = summary.files_written, "print batch made (caught up at start)");
        }
    }
    loop {
        let Some(next) = schedule.next_after(now()) else {
            return Ok(());
        };
        let wait = (next.with_timezone(&chrono::Utc) - now()).to_std().unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return Ok(()),
        }
        let summary = runner.run(next.date_naive(), &nothing).await?;
        if summary.nothing_to_print {
            tracing::info!(batch = %summary.batch_id, "nothing awaits print: no batch recorded");
        } else {
            tracing::info!(batch = %summary.batch_id, letters = summary.letters, files = summary.files_written, "print batch made");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_ids_and_their_dates() {
        let date = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
        assert_eq!(batch_id(date), "B20261201");
        assert_eq!(batch_date(&batch_id(date)), Some(date));
        assert_eq!(batch_date("X"), None);
    }
}
