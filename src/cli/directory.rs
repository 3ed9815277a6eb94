//! `amtsbote directory import …` and `amtsbote directory lookup …`.
//!
//! `import` validates all files (all-or-nothing), stores them under
//! `<data_dir>/directory/` and prints a summary on stderr (progress every 100,000 rows).
//! Exit 0 imported, 1 a file is invalid (`file:line: column n (field): reason` on stderr,
//! nothing changed), 2 reading or writing failed.
//!
//! `lookup` prints the JSON of the lookup contract on stdout. Exit 0 `found`, 1 `ambiguous`
//! or `not_found`, 2 errors. Without an import under the data directory it answers from the
//! compiled-in sample data of `examples/directory/` and says so on stderr.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use chrono::NaiveDate;
use clap::{Args, Subcommand};

use crate::config::Config;
use crate::directory::{self, ImportSources, Query};

#[derive(Debug, Subcommand)]
pub(crate) enum DirectoryCommand {
    /// Import authorities, jurisdiction rules and (optionally) streets and GV100AD;
    /// replaces the previous data as a whole.
    Import(ImportArgs),
    /// Who is responsible for an address and kind of claim (JSON on stdout; exit 0 found,
    /// 1 ambiguous or not found).
    Lookup(LookupArgs),
    /// Peer certificates in <data_dir>/certs: subject, end date, days left; exit 1 when one
    /// has expired, expires within 30 days or cannot be read.
    Certs {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub(crate) struct ImportArgs {
    /// authorities.csv
    #[arg(long, value_name = "FILE")]
    authorities: PathBuf,
    /// jurisdictions.csv
    #[arg(long, value_name = "FILE")]
    jurisdictions: PathBuf,
    /// OpenPLZ streets.csv
    #[arg(long, value_name = "FILE")]
    streets: Option<PathBuf>,
    /// Destatis GV100AD file (fixed width)
    #[arg(long, value_name = "FILE")]
    gv100: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct LookupArgs {
    /// Postcode (5 digits) of the debtor's address.
    #[arg(long)]
    plz: String,
    /// Place (Ort) of the debtor's address.
    #[arg(long)]
    ort: String,
    /// Street, with or without house number.
    #[arg(long)]
    strasse: Option<String>,
    /// Einnahmeart code; without it only `*` rules apply.
    #[arg(long)]
    einnahmeart: Option<String>,
    /// The day the answer is for (YYYY-MM-DD); default today in Europe/Berlin.
    #[arg(long)]
    date: Option<NaiveDate>,
}

pub(crate) fn run(config: &Config, command: DirectoryCommand) -> anyhow::Result<ExitCode> {
    match command {
        DirectoryCommand::Certs { json } => {
            let dir = directory::certs::certs_dir(&config.data_dir);
            let certs = directory::certs::scan(&dir, chrono::Utc::now());
            if json {
                println!("{}", serde_json::to_string_pretty(&certs)?);
            } else {
                println!("{:<11} {:>9}  {:<20} {:<40} file", "status", "days left", "expires (UTC)", "subject");
                for c in &certs {
                    let status = serde_json::to_value(c.status)?.as_str().unwrap_or_default().to_string();
                    let days = c.days_left.map(|d| d.to_string()).unwrap_or_default();
                    let until = c.not_after.map(|t| t.format("%Y-%m-%d %H:%M").to_string()).unwrap_or_default();
                    let subject = if c.subject.is_empty() { c.problem.clone().unwrap_or_default() } else { c.subject.clone() };
                    println!("{status:<11} {days:>9}  {until:<20} {subject:<40} {}", c.file.display());
                }
                if certs.is_empty() {
                    eprintln!("no certificates in {} (*.pem, *.crt)", dir.display());
                }
            }
            let attention = certs.iter().any(|c| c.status != directory::certs::CertStatus::Valid);
            Ok(if attention { ExitCode::from(1) } else { ExitCode::SUCCESS })
        }
        DirectoryCommand::Import(args) => {
            let sources = ImportSources {
                authorities: args.authorities,
                jurisdictions: args.jurisdictions,
                streets: args.streets,
                gv100: args.gv100,
            };
            let started = std::time::Instant::now();
            match directory::import(&config.data_dir, &sources, &mut |line| eprintln!("directory: {line}")) {
                Ok((_, summary)) => {
                    eprintln!("directory: imported in {:.1?}: {summary}", started.elapsed());
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) if e.is_data_error() => {
                    eprintln!("amtsbote: directory import: {e}; nothing was changed");
                    Ok(ExitCode::from(1))
                }
                Err(e) => Err(e).context("directory import; nothing was changed"),
            }
        }
        DirectoryCommand::Lookup(args) => {
            let dir = directory::open_or_sample(&config.data_dir).with_context(|| {
                format!("reading the directory under {}", directory::store_dir(&config.data_dir).display())
            })?;
            if dir.is_sample() {
                eprintln!(
                    "directory: nothing imported under {}; answering from the compiled-in sample data",
                    directory::store_dir(&config.data_dir).display()
                );
            }
            let date =
                args.date.unwrap_or_else(crate::directory::today);
            let result = dir.lookup(&Query {
                plz: &args.plz,
                ort: &args.ort,
                strasse: args.strasse.as_deref(),
                einnahmeart: args.einnahmeart.as_deref(),
                date,
            });
            println!("{}", result.to_json());
            Ok(if result.is_found() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
    }
}
