//! `amtsbote print-batch`: the nightly print batch, now; the print centre's feedback on it;
//! what each batch holds and what came back.

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::NaiveDate;
use clap::Subcommand;

use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum PrintCommand {
    /// Build the batch of a date now (default: today in Europe/Berlin), or complete it.
    /// Idempotent: the same date again makes no second batch and prints nothing twice.
    Run {
        /// The batch's date (YYYY-MM-DD).
        #[arg(long, value_name = "DATE")]
        date: Option<NaiveDate>,
    },
    /// Import the print centre's feedback file: handed_over → posted, error → printed again
    /// in the next batch (reason in the journal), printed/enveloped recorded. All or nothing:
    /// if any line is bad, nothing is recorded and each bad line is reported (exit 1).
    /// The same file again changes nothing.
    ///
    /// The file: `letter_number;status;timestamp[;reason]` per line, `;`-separated, UTF-8,
    /// an optional header line `letter_number;status;timestamp`. status: printed, enveloped,
    /// handed_over or error (a reason may follow, only there). timestamp: RFC 3339 with its
    /// offset, e.g. 2026-12-02T06:10:00+01:00 or 2026-12-02T05:10:00Z. letter_number: as in
    /// the manifest, with its batch (B20261201/17) or alone (17); a number alone belongs to
    /// the batch of --batch or --date, or else to the batch the file is named after
    /// (B20261201-001.feedback.csv).
    #[command(verbatim_doc_comment)]
    Reconcile {
        /// The feedback file (CSV).
        file: PathBuf,
        /// The batch of letter numbers given alone (e.g. B20261201).
        #[arg(long, value_name = "ID", conflicts_with = "date")]
        batch: Option<String>,
        /// The batch of letter numbers given alone, by its date (YYYY-MM-DD).
        #[arg(long, value_name = "DATE")]
        date: Option<NaiveDate>,
    },
    /// Every batch: date, id, letters, files, finished or not, and what came back (letters
    /// posted, with an error, with no feedback yet).
    List {
        /// JSON for scripts: one object per batch, in an array.
        #[arg(long)]
        json: bool,
    },
    /// One batch: its files (SHA-256, letter numbers) and each letter's request, state and
    /// last feedback.
    Show {
        /// The batch's date (YYYY-MM-DD).
        date: NaiveDate,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

/// The bar of a manual run on stderr: letters written of all, the file, the rate. Hidden
/// when stderr is no terminal (scripts, tests, a log file).
fn progress_bar() -> indicatif::ProgressBar {
    use std::io::IsTerminal as _;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::with_draw_target(Some(0), indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} letters, {msg}, {per_sec}, {elapsed}") {
        bar.set_style(style);
    }
    bar
}

/// Bad lines shown at most; the rest are counted.
const MAX_SHOWN: usize = 100;

pub async fn run(config: &Config, command: PrintCommand) -> anyhow::Result<ExitCode> {
    match command {
        PrintCommand::Run { date } => {
            let date = date.unwrap_or_else(crate::print::batch::today);
            let runner = crate::print::batch::open(config, "cli").await?;
            let bar = progress_bar();
            let progress = |p: crate::print::batch::Progress| {
                bar.set_length(p.letters as u64);
                bar.set_position(p.letters_done as u64);
                bar.set_message(format!("file {} of {}, {} pages written", p.files_done, p.files, p.pages_written));
            };
            let summary = runner.run(date, &progress).await;
            bar.finish_and_clear();
            let summary = summary?;
            if summary.nothing_to_print {
                println!("batch {} of {}: nothing awaits print; no batch recorded (a later run of this date makes it)", summary.batch_id, summary.date);
            } else if summary.already_complete {
                println!("batch {} of {}: complete before, nothing written ({} letters in {} files)", summary.batch_id, summary.date, summary.letters, summary.files);
            } else {
                println!(
                    "batch {} of {}: {} letters ({} test letters, to {}), {} files written with {} pages, {} files in all, in {:.1} s; handoff folder {}",
                    summary.batch_id,
                    summary.date,
                    summary.letters,
                    summary.test_letters,
                    config.data_dir.join("print/test").display(),
                    summary.files_written,
                    summary.pages_written,
                    summary.files,
                    summary.seconds_millis as f64 / 1000.0,
                    config.print.handoff(&config.data_dir).display(),
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        PrintCommand::Reconcile { file, batch, date } => reconcile(config, &file, batch.or(date.map(crate::print::batch::batch_id))).await,
        PrintCommand::List { json } => list(config, json).await,
        PrintCommand::Show { date, json } => show(config, date, json).await,
    }
}

async fn reconcile(config: &Config, file: &std::path::Path, batch: Option<String>) -> anyhow::Result<ExitCode> {
    use crate::print::feedback::{self, FeedbackError};
    let ledger = crate::app::open_ledger(config).await?;
    let operator = std::env::var("USER").unwrap_or_else(|_| "cli".into());
    let actor = crate::ledger::Actor::operator(operator);
    let imported = match feedback::import(&*ledger, file, batch.as_deref(), &actor).await {
        Ok(imported) => imported,
        Err(FeedbackError::BadLines(errors)) => {
            for e in errors.iter().take(MAX_SHOWN) {
                eprintln!("{}:{}: {}", file.display(), e.line, e.message);
            }
            if errors.len() > MAX_SHOWN {
                eprintln!("… and {} more bad lines", errors.len() - MAX_SHOWN);
            }
            eprintln!("{}: {} bad lines; nothing was recorded", file.display(), errors.len());
            return Ok(ExitCode::from(1));
        }
        Err(FeedbackError::Ledger(e @ crate::ledger::LedgerError::LetterMoved { .. })) => {
            anyhow::bail!("{e}; nothing was recorded: import the file again");
        }
        Err(e) => return Err(e.into()),
    };
    let r = imported.recorded;
    if r.new == 0 {
        println!("{}: nothing new: its {} lines were all imported before; nothing changed", file.display(), imported.lines);
    } else {
        println!(
            "{}: {} lines for {}: {} recorded — {} handed over (posted), {} errors (printed again in the next batch), {} printed or enveloped{}; {} imported before",
            file.display(),
            imported.lines,
            imported.batches.join(", "),
            r.new,
            r.posted,
            r.reprint,
            r.new.saturating_sub(r.posted + r.reprint + imported.unchanged),
            if imported.unchanged > 0 { format!(", {} on letters whose request had moved on (recorded only)", imported.unchanged) } else { String::new() },
            imported.before,
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A time as the operators' tables show it.
fn utc(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

async fn list(config: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let ledger = crate::app::open_ledger(config).await?;
    let batches = ledger.print_batches().await?;
    if json {
        let values: Vec<serde_json::Value> = batches
            .iter()
            .map(|b| {
                let mut v = serde_json::to_value(b).unwrap_or_default();
                v["finished"] = b.finished_at.is_some().into();
                v["in_progress"] = b.letters.saturating_sub(b.posted + b.errors + b.no_feedback).into();
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&values)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<10}  {:<10} {:>8} {:>6}  {:<8} {:>7} {:>6} {:>12}", "date", "batch", "letters", "files", "finished", "posted", "error", "no feedback");
    for b in &batches {
        let finished = if b.finished_at.is_some() { "yes" } else { "no" };
        println!("{:<10}  {:<10} {:>8} {:>6}  {:<8} {:>7} {:>6} {:>12}", b.date, b.batch_id, b.letters, b.files, finished, b.posted, b.errors, b.no_feedback);
    }
    if batches.is_empty() {
        eprintln!("no print batches yet");
    }
    Ok(ExitCode::SUCCESS)
}

/// Letter numbers as runs: [1, 2, 3, 5] → [(1, 3), (5, 5)].
fn runs(mut numbers: Vec<u32>) -> Vec<(u32, u32)> {
    numbers.sort_unstable();
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for n in numbers {
        match runs.last_mut() {
            Some(last) if last.1 + 1 == n => last.1 = n,
            _ => runs.push((n, n)),
        }
    }
    runs
}

async fn show(config: &Config, date: NaiveDate, json: bool) -> anyhow::Result<ExitCode> {
    let ledger = crate::app::open_ledger(config).await?;
    let Some(batch) = ledger.print_batches().await?.into_iter().find(|b| b.date == date) else {
        eprintln!("there is no print batch of {date}");
        return Ok(ExitCode::from(1));
    };
    let files = ledger.print_files(&batch.batch_id).await?;
    let letters = ledger.print_letters(&batch.batch_id).await?;
    let numbers_in = |file_no: u32| runs(letters.iter().filter(|l| l.file_no == Some(file_no)).map(|l| l.letter_number).collect());
    if json {
        let files: Vec<serde_json::Value> = files
            .iter()
            .map(|f| {
                let mut v = serde_json::to_value(f).unwrap_or_default();
                v["letter_numbers"] = numbers_in(f.file_no).into_iter().map(|(a, b)| serde_json::json!([a, b])).collect();
                v
            })
            .collect();
        let letters: Vec<serde_json::Value> = letters
            .iter()
            .map(|l| {
                let last = l.feedback.last().map(|f| serde_json::json!({"status": f.status, "at": f.at, "reason": f.reason}));
                serde_json::json!({
                    "letter_number": l.letter_number,
                    "request_id": l.request,
                    "test": l.test,
                    "state": l.state,
                    "in_batch": l.in_batch,
                    "file_no": l.file_no,
                    "last_feedback": last,
                })
            })
            .collect();
        let value = serde_json::json!({
            "batch_id": batch.batch_id,
            "date": batch.date,
            "created_at": batch.created_at,
            "finished_at": batch.finished_at,
            "files": files,
            "letters": letters,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    let finished = batch.finished_at.map_or("not finished".to_string(), |at| format!("finished {}", utc(at)));
    println!("batch {} of {}: {} letters, {} files, {finished}", batch.batch_id, batch.date, batch.letters, batch.files);
    println!("files:");
    println!("  {:>4}  {:<28} {:>7}  {:<20} sha256", "no", "file", "letters", "letter numbers");
    for f in &files {
        let numbers: Vec<String> = numbers_in(f.file_no).into_iter().map(|(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") }).collect();
        let numbers = if numbers.is_empty() { "-".to_string() } else { numbers.join(",") };
        println!("  {:>4}  {:<28} {:>7}  {:<20} {}", f.file_no, f.file_name, f.letters, numbers, f.sha256);
    }
    println!("letters:");
    println!("  {:>6} {:>8}  {:<14} {:>4}  last feedback", "number", "request", "state", "file");
    for l in &letters {
        let state = if l.in_batch { l.state.to_string() } else { format!("{} (left)", l.state) };
        let file = l.file_no.map_or("-".to_string(), |n| n.to_string());
        let last = match l.feedback.last() {
            Some(f) => format!("{} {}{}", f.status, utc(f.at), f.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()),
            None if l.test => "- (test letter)".into(),
            None => "-".into(),
        };
        println!("  {:>6} {:>8}  {:<14} {:>4}  {last}", l.letter_number, l.request, state, file);
    }
    Ok(ExitCode::SUCCESS)
}
