//! The print centre's feedback (`amtsbote print-batch reconcile FILE`): what it did with each
//! letter of a batch, read from its CSV and recorded in the ledger.
//!
//! The file (UTF-8, a byte-order mark is skipped, LF or CRLF):
//!
//! ```text
//! letter_number;status;timestamp[;reason]
//! 17;printed;2026-12-02T06:10:00+01:00
//! 17;handed_over;2026-12-02T11:00:00Z
//! B20261201/18;error;2026-12-02T06:11:30.5+01:00;paper jam, sheet 2 torn
//! ```
//!
//! - The header line is optional (a first line whose first field is `letter_number`); empty
//!   lines are skipped; fields are separated by `;` and trimmed.
//! - `letter_number`: the number printed in the letter's DataMatrix and listed in the
//!   manifest, either alone (`17`) or with its batch (`B20261201/17`). A number alone belongs
//!   to the batch given with `--batch B20261201` or `--date 2026-12-01`, or else to the batch
//!   the file is named after (`B20261201…`, e.g. `B20261201-001.feedback.csv`).
//! - `status`: `printed`, `enveloped`, `handed_over` or `error`.
//! - `timestamp`: RFC 3339 with its offset (`2026-12-02T06:10:00+01:00`, `…Z`, fractions of a
//!   second up to microseconds; a space may stand for the `T`). No local times without offset.
//! - `reason`: only on `error` lines, the rest of the line (it may hold `;`).
//!
//! What a line does: `printed` and `enveloped` are recorded (the request stays `printed`);
//! `handed_over` moves the request to `posted`; `error` sends it back to `awaiting_print` with
//! the reason in its journal and out of its batch, so that the next night's batch prints it
//! again. Every line is kept in `print_feedback`.
//!
//! Nothing is half-applied: the whole file is checked first — its form, and each line against
//! the ledger (an unknown batch or letter, a letter not handed off yet, a test letter, an
//! error after the letter was handed over or the other way round). If any line is bad,
//! nothing is recorded and every bad line is reported with its number. Otherwise all of it is
//! recorded in one transaction. A line recorded before (the same letter, status and time)
//! changes nothing: importing a file again is harmless.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use chrono::{DateTime, SubsecRound, Utc};

use crate::ledger::{Actor, FeedbackEffect, FeedbackEntry, FeedbackRecorded, FeedbackStatus, Ledger, LedgerError, PrintFeedback, RequestState};

/// The largest feedback file taken (a night of 100,000 letters with four lines each is about
/// 20 MB).
pub const MAX_BYTES: u64 = 64 << 20;

/// The longest reason kept, in characters.
const MAX_REASON: usize = 500;

/// A bad line: its number (from 1) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LineError {
    pub line: u32,
    pub message: String,
}

/// Why a feedback file was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum FeedbackError {
    #[error("{} bad lines; nothing was recorded", .0.len())]
    BadLines(Vec<LineError>),
    #[error("{}", path.display())]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error("{} is larger than {} MiB", path.display(), MAX_BYTES >> 20)]
    TooLarge { path: std::path::PathBuf },
    #[error("ledger: {0}")]
    Ledger(#[from] LedgerError),
}

/// A line as read, before the ledger is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub line: u32,
    pub batch_id: String,
    pub letter_number: u32,
    pub status: FeedbackStatus,
    pub at: DateTime<Utc>,
    pub reason: Option<String>,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Imported {
    /// Lines in the file (header and empty lines not counted).
    pub lines: usize,
    /// Lines recorded before (or twice in the file): nothing done for them.
    pub before: usize,
    /// What was recorded now.
    pub recorded: FeedbackRecorded,
    /// New lines on letters whose request had moved on (withdrawn, failed): recorded only.
    pub unchanged: usize,
    /// The batches the file speaks of.
    pub batches: Vec<String>,
}

/// The batch a file is named after: `B20261201-001.feedback.csv` → `B20261201`.
pub fn batch_of_file_name(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let digits = name.strip_prefix('B')?.get(..8)?;
    let after = name.as_bytes().get(9);
    (digits.bytes().all(|b| b.is_ascii_digit()) && !after.is_some_and(u8::is_ascii_digit) && chrono::NaiveDate::parse_from_str(digits, "%Y%m%d").is_ok())
        .then(|| format!("B{digits}"))
}

/// Reads the file's lines; `batch` is the batch of plain letter numbers. Returns the lines
/// and the bad ones.
pub fn parse(bytes: &[u8], batch: Option<&str>) -> (Vec<Line>, Vec<LineError>) {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut lines = Vec::new();
    let mut errors = Vec::new();
    let mut first = true;
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let number = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let Ok(text) = std::str::from_utf8(raw) else {
            errors.push(LineError { line: number, message: "not UTF-8 text".into() });
            first = false;
            continue;
        };
        if text.trim().is_empty() {
            continue;
        }
        let is_header = first && text.split(';').next().is_some_and(|f| f.trim().eq_ignore_ascii_case("letter_number"));
        first = false;
        if is_header {
            continue;
        }
        match parse_line(text, batch) {
            Ok((batch_id, letter_number, status, at, reason)) => lines.push(Line { line: number, batch_id, letter_number, status, at, reason }),
            Err(message) => errors.push(LineError { line: number, message }),
        }
    }
    (lines, errors)
}

type Fields = (String, u32, FeedbackStatus, DateTime<Utc>, Option<String>);

fn parse_line(text: &str, batch: Option<&str>) -> Result<Fields, String> {
    let fields: Vec<&str> = text.splitn(4, ';').map(str::trim).collect();
    if fields.len() < 3 {
        return Err(format!("{} fields; expected letter_number;status;timestamp[;reason]", fields.len()));
    }
    let (batch_id, number) = match fields[0].split_once('/') {
        Some((b, n)) => {
            let b = b.trim();
            if b.is_empty() || b.len() > 64 || !b.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-') {
                return Err(format!("{:?} names no batch (expected e.g. B20261201/17)", shorten(fields[0])));
            }
            (b.to_string(), n.trim())
        }
        None => match batch {
            Some(b) => (b.to_string(), fields[0]),
            None => {
                return Err(format!(
                    "letter number {:?} without its batch: write B20261201/{0}, give --batch or --date, or name the file after its batch",
                    shorten(fields[0])
                ))
            }
        },
    };
    let letter_number = match number.parse::<u32>() {
        Ok(n) if n > 0 && number.bytes().all(|b| b.is_ascii_digit()) => n,
        _ => return Err(format!("letter number {:?} is not a positive whole number", shorten(number))),
    };
    let status = match fields[1].to_ascii_lowercase().as_str() {
        "printed" => FeedbackStatus::Printed,
        "enveloped" => FeedbackStatus::Enveloped,
        "handed_over" => FeedbackStatus::HandedOver,
        "error" => FeedbackStatus::Error,
        _ => return Err(format!("status {:?} is none of printed, enveloped, handed_over, error", shorten(fields[1]))),
    };
    let at = DateTime::parse_from_rfc3339(fields[2])
        .map_err(|_| format!("timestamp {:?} is not RFC 3339 with an offset (e.g. 2026-12-02T06:10:00+01:00)", shorten(fields[2])))?
        .with_timezone(&Utc)
        .trunc_subsecs(6);
    let reason = fields.get(3).copied().filter(|r| !r.is_empty());
    let reason = match (status, reason) {
        (FeedbackStatus::Error, r) => r.map(clean_reason),
        (_, None) => None,
        (_, Some(_)) => return Err(format!("a reason is taken only on error lines, not on {status}")),
    };
    Ok((batch_id, letter_number, status, at, reason))
}

/// Control characters out, and at most [`MAX_REASON`] characters.
fn clean_reason(reason: &str) -> String {
    reason.chars().map(|c| if c.is_control() { ' ' } else { c }).take(MAX_REASON).collect()
}

/// A field as quoted in a message: at most 40 characters.
fn shorten(field: &str) -> String {
    field.chars().take(40).collect()
}

/// Where a letter stands for its feedback, as the lines are gone through in time order.
#[derive(Debug, Clone, Copy)]
enum Standing {
    /// Its file is not handed off yet.
    NotHandedOff,
    /// A test letter: never at the print centre.
    Test,
    /// Printed, at the print centre.
    Open,
    /// Handed over to the post, at this time.
    Posted(DateTime<Utc>),
    /// Came back as an error, at this time: its request waits for the next batch.
    SentBack(DateTime<Utc>),
    /// Its request moved on otherwise (withdrawn, failed): lines are recorded only.
    Elsewhere,
}

/// Checks `lines` against the ledger: the entries to record, or every bad line. Lines
/// recorded before (or twice in the file) are left out and counted in `before`.
pub async fn plan(ledger: &dyn Ledger, lines: &[Line], file_name: &str) -> Result<(Vec<FeedbackEntry>, Imported), FeedbackError> {
    let mut imported = Imported { lines: lines.len(), ..Imported::default() };
    let known: HashSet<String> = ledger.print_batches().await?.into_iter().map(|b| b.batch_id).collect();
    let mut wanted: Vec<&str> = lines.iter().map(|l| l.batch_id.as_str()).collect();
    wanted.sort_unstable();
    wanted.dedup();
    // Per letter: its request, where it stands, and the (status, time) recorded for it.
    type Key = (String, u32);
    let mut letters: HashMap<Key, (crate::ledger::RequestId, Standing)> = HashMap::new();
    let mut seen: HashSet<(String, u32, FeedbackStatus, DateTime<Utc>)> = HashSet::new();
    for batch in &wanted {
        if !known.contains(*batch) {
            continue;
        }
        imported.batches.push(batch.to_string());
        for letter in ledger.print_letters(batch).await? {
            let last = |s: FeedbackStatus| letter.feedback.iter().filter(|f| f.status == s).map(|f| f.at).max();
            let standing = if letter.test {
                Standing::Test
            } else if let Some(at) = last(FeedbackStatus::Error) {
                Standing::SentBack(at)
            } else if let Some(at) = last(FeedbackStatus::HandedOver) {
                Standing::Posted(at)
            } else if letter.in_batch && letter.state == RequestState::Printed {
                Standing::Open
            } else if letter.in_batch && letter.state == RequestState::AwaitingPrint {
                Standing::NotHandedOff
            } else {
                Standing::Elsewhere
            };
            for f in &letter.feedback {
                seen.insert((f.batch_id.clone(), f.letter_number, f.status, f.at));
            }
            letters.insert((letter.batch_id.clone(), letter.letter_number), (letter.request, standing));
        }
    }
    // In the print centre's time order (a letter is printed before it is handed over),
    // ties in the file's order.
    let mut order: Vec<&Line> = lines.iter().collect();
    order.sort_by_key(|l| (l.at, l.line));
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    let when = |at: DateTime<Utc>| at.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    for l in order {
        let bad = |message: String| LineError { line: l.line, message };
        if !known.contains(&l.batch_id) {
            errors.push(bad(format!("there is no print batch {}", l.batch_id)));
            continue;
        }
        let Some((request, standing)) = letters.get_mut(&(l.batch_id.clone(), l.letter_number)) else {
            errors.push(bad(format!("unknown letter number {}: batch {} has no such letter", l.letter_number, l.batch_id)));
            continue;
        };
        let letter = format!("letter {} of batch {}", l.letter_number, l.batch_id);
        if !seen.insert((l.batch_id.clone(), l.letter_number, l.status, l.at)) {
            imported.before += 1;
            continue;
        }
        let effect = match (*standing, l.status) {
            (Standing::NotHandedOff, _) => {
                errors.push(bad(format!("{letter} has not been handed off to the print centre yet")));
                continue;
            }
            (Standing::Test, _) => {
                errors.push(bad(format!("{letter} is a test letter (MUSTER), never handed to the print centre")));
                continue;
            }
            (Standing::Open, FeedbackStatus::HandedOver) => {
                *standing = Standing::Posted(l.at);
                FeedbackEffect::Posted
            }
            (Standing::Open, FeedbackStatus::Error) => {
                *standing = Standing::SentBack(l.at);
                FeedbackEffect::Reprint
            }
            (Standing::Posted(at), FeedbackStatus::Error) => {
                errors.push(bad(format!("{letter} was handed over to the post at {}; an error after that is not taken", when(at))));
                continue;
            }
            (Standing::SentBack(at), FeedbackStatus::HandedOver) => {
                errors.push(bad(format!("{letter} came back as an error at {} and is printed again; it cannot be handed over", when(at))));
                continue;
            }
            (Standing::Elsewhere, _) => {
                imported.unchanged += 1;
                FeedbackEffect::Record
            }
            _ => FeedbackEffect::Record,
        };
        let feedback = PrintFeedback {
            batch_id: l.batch_id.clone(),
            letter_number: l.letter_number,
            status: l.status,
            at: l.at,
            reason: l.reason.clone(),
            file_name: file_name.to_string(),
            line: l.line,
        };
        entries.push(FeedbackEntry { feedback, request: *request, effect });
    }
    if !errors.is_empty() {
        errors.sort_by_key(|e| e.line);
        return Err(FeedbackError::BadLines(errors));
    }
    Ok((entries, imported))
}

/// Imports the feedback file at `path` (see the module doc); `batch` is the batch of plain
/// letter numbers (else the one the file is named after). All or nothing.
pub async fn import(ledger: &dyn Ledger, path: &Path, batch: Option<&str>, actor: &Actor) -> Result<Imported, FeedbackError> {
    let io = |source| FeedbackError::Io { path: path.to_path_buf(), source };
    let size = std::fs::metadata(path).map_err(io)?.len();
    if size > MAX_BYTES {
        return Err(FeedbackError::TooLarge { path: path.to_path_buf() });
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let batch = batch.map(str::to_string).or_else(|| batch_of_file_name(path));
    let (lines, mut errors) = parse(&bytes, batch.as_deref());
    let file_name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    // The ledger's check, too, so that every bad line is reported at once.
    let planned = plan(ledger, &lines, &file_name).await;
    let (entries, mut imported) = match planned {
        Ok(planned) if errors.is_empty() => planned,
        Ok(_) => return Err(FeedbackError::BadLines(errors)),
        Err(FeedbackError::BadLines(more)) => {
            errors.extend(more);
            errors.sort_by_key(|e| e.line);
            return Err(FeedbackError::BadLines(errors));
        }
        Err(e) => return Err(e),
    };
    imported.recorded = ledger.record_print_feedback(&entries, actor).await?;
    imported.before += imported.recorded.before;
    Ok(imported)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_format() {
        let text = "\u{feff}letter_number;status;timestamp\r\n1;printed;2026-12-02T06:10:00+01:00\r\n\r\nB20261130/2;ERROR;2026-12-02 06:11:30.5Z; jam; sheet 2 \r\n3;handed_over;2026-12-02T11:00:00.1234567Z\n";
        let (lines, errors) = parse(text.as_bytes(), Some("B20261201"));
        assert_eq!(errors, vec![]);
        assert_eq!(lines.len(), 3);
        assert_eq!((lines[0].line, lines[0].batch_id.as_str(), lines[0].letter_number, lines[0].status), (2, "B20261201", 1, FeedbackStatus::Printed));
        assert_eq!(lines[0].at.to_rfc3339(), "2026-12-02T05:10:00+00:00");
        assert_eq!((lines[1].batch_id.as_str(), lines[1].status, lines[1].reason.as_deref()), ("B20261130", FeedbackStatus::Error, Some("jam; sheet 2")));
        assert_eq!(lines[2].at.timestamp_subsec_micros(), 123456, "to the microsecond");
    }

    #[test]
    fn bad_lines_are_named_by_number() {
        let text = "1;printed\nx;printed;2026-12-02T06:10:00Z\n0;printed;2026-12-02T06:10:00Z\n2;lost;2026-12-02T06:10:00Z\n3;printed;2026-12-02 06:10\n4;printed;2026-12-02T06:10:00Z;why\n5;printed;2026-12-02T06:10:00Z\n";
        let (lines, errors) = parse(text.as_bytes(), Some("B20261201"));
        assert_eq!(lines.len(), 1);
        assert_eq!(errors.iter().map(|e| e.line).collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6]);
        assert!(errors[3].message.contains("\"lost\""), "{errors:?}");
        // A plain number needs its batch.
        let (_, errors) = parse(b"7;printed;2026-12-02T06:10:00Z\n", None);
        assert!(errors[0].message.contains("without its batch"), "{errors:?}");
        let (_, errors) = parse(b"\xff;printed;2026-12-02T06:10:00Z\n", None);
        assert_eq!(errors[0].message, "not UTF-8 text");
    }

    #[test]
    fn batch_from_the_file_name() {
        assert_eq!(batch_of_file_name(Path::new("/in/B20261201-001.feedback.csv")).as_deref(), Some("B20261201"));
        assert_eq!(batch_of_file_name(Path::new("B20261201.csv")).as_deref(), Some("B20261201"));
        assert_eq!(batch_of_file_name(Path::new("B202612011.csv")), None);
        assert_eq!(batch_of_file_name(Path::new("B20261399.csv")), None);
        assert_eq!(batch_of_file_name(Path::new("feedback.csv")), None);
    }
}
