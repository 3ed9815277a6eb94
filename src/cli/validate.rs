//! `amtsbote validate FILE...`: checks messages; exit 0 when all are valid, 1 when any is
//! not (one line per invalid file on stderr), 2 on a usage error.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

use crate::xamtshilfe::{Cents, Checker, CodeLists, Limits, MessageKind, ReadError, ReaderConfig, Rejection, Validator, read};

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Message files; `-` reads standard input.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Print a machine-readable JSON report on stdout instead of lines.
    #[arg(long)]
    json: bool,
    /// Accepted namespace of the root element (repeat for several).
    #[arg(long = "namespace", value_name = "NS", default_value = read::DEFAULT_NAMESPACE)]
    namespaces: Vec<String>,
    /// Smallest total a request may have, in EUR.
    #[arg(long, value_name = "EUR", default_value = "36.00")]
    min_amount: Cents,
    /// Largest accepted file in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_bytes)]
    max_bytes: u64,
    /// Deepest accepted element nesting.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_depth)]
    max_depth: usize,
    /// Most attributes accepted on one element.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_attributes)]
    max_attributes: usize,
    /// Directory with genericode files that replace the built-in code lists.
    #[arg(long, value_name = "DIR")]
    codelists: Option<PathBuf>,
}

/// One file's result in the JSON report.
#[derive(Debug, Serialize)]
struct FileReport {
    path: String,
    valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<MessageKind>,
    #[serde(rename = "nachrichtenUUID", skip_serializing_if = "Option::is_none")]
    uuid: Option<String>,
    test: bool,
    reasons: Vec<Reason>,
}

#[derive(Debug, Serialize)]
struct Reason {
    path: String,
    rule: String,
    message: String,
}

#[derive(Debug, Serialize)]
struct Report {
    valid: usize,
    invalid: usize,
    files: Vec<FileReport>,
}

pub fn run(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let codelists = CodeLists::load(args.codelists.as_deref())?;
    let mut validator = Validator::new(codelists);
    validator.min_amount = args.min_amount;
    let reader = ReaderConfig {
        namespaces: args.namespaces.clone(),
        limits: Limits { max_bytes: args.max_bytes, max_depth: args.max_depth, max_attributes: args.max_attributes, ..Limits::default() },
    };
    let checker = Checker::new(reader, validator);

    let mut files = Vec::with_capacity(args.files.len());
    for path in &args.files {
        files.push(check_one(&checker, path));
    }
    let invalid = files.iter().filter(|f| !f.valid).count();
    let report = Report { valid: files.len() - invalid, invalid, files };

    if args.json {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        let mut out = std::io::stdout().lock();
        let mut err = std::io::stderr().lock();
        for f in &report.files {
            if f.valid {
                let kind = f.kind.map(|k| k.root_name()).unwrap_or_default();
                let test = if f.test { " (test message)" } else { "" };
                writeln!(out, "{}: valid: {kind}{test}", f.path)?;
            } else {
                let reasons = f.reasons.iter().map(|r| format!("{}: {} [rule: {}]", r.path, r.message, r.rule)).collect::<Vec<_>>();
                writeln!(err, "{}: invalid: {}", f.path, reasons.join("; "))?;
            }
        }
    }
    Ok(if invalid == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn check_one(checker: &Checker, path: &std::path::Path) -> FileReport {
    let label = path.display().to_string();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let bytes = if label == "-" {
            let mut buf = Vec::new();
            let limit = checker.reader.limits.max_bytes;
            std::io::stdin().lock().take(limit + 1).read_to_end(&mut buf).map_err(|e| Rejection::Unreadable(ReadError::Io(e.to_string())))?;
            buf
        } else {
            read::read_file(path, &checker.reader.limits)?
        };
        checker.check(&bytes)
    }));
    let outcome = outcome.unwrap_or_else(|_| {
        Err(Rejection::Unreadable(ReadError::Io("internal error while checking (a defect in amtsbote; please report it with the file)".into())))
    });
    match outcome {
        Ok(message) => FileReport {
            path: label,
            valid: true,
            kind: Some(message.kind()),
            uuid: message.uuid().map(|u| u.to_string()),
            test: message.is_test(),
            reasons: vec![],
        },
        Err(Rejection::Invalid(violations)) => FileReport {
            path: label,
            valid: false,
            kind: None,
            uuid: None,
            test: false,
            reasons: violations
                .into_iter()
                .map(|v| Reason { path: v.path, rule: v.rule.as_str().into(), message: v.message })
                .collect(),
        },
        Err(Rejection::Unreadable(e)) => {
            let (path, rule, message) = match &e {
                ReadError::Structure { path, message } => (path.clone(), "structure", message.clone()),
                other => ("/".to_string(), "readable", other.to_string()),
            };
            FileReport { path: label, valid: false, kind: None, uuid: None, test: false, reasons: vec![Reason { path, rule: rule.into(), message }] }
        }
    }
}
