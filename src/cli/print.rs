//! `amtsbote print-batch`: the nightly print batch, now.

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
}

pub async fn run(config: &Config, command: PrintCommand) -> anyhow::Result<ExitCode> {
    match command {
        PrintCommand::Run { date } => {
            let date = date.unwrap_or_else(crate::directory::today);
            let runner = crate::print::batch::open(config, "cli").await?;
            let progress = |done: usize, total: usize| {
                if total > 0 {
                    eprint!("\r  {done} of {total} letters");
                }
            };
            let summary = runner.run(date, &progress).await?;
            if summary.letters > 0 {
                eprintln!();
            }
            if summary.already_complete {
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
    }
}
