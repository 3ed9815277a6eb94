//! The `amtsbote` command line. Each subcommand is a thin shell around the part it drives;
//! the command names, exit codes and output are an interface scripts rely on
//! (DESIGN.md, "Interfaces that must stay stable").
//!
//! Exit codes: 0 success, 1 the command's own "no" (an invalid message, an unknown id),
//! 2 usage or configuration errors and failures of the machinery.

mod directory;
mod mail;
mod ops;
mod validate;
mod print;
mod token;
mod xta_sim;


use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;

#[derive(Debug, Parser)]
#[command(name = "amtsbote", version, about = "Carries enforcement-assistance requests between German enforcement authorities")]
struct Cli {
    /// Configuration file (TOML); AMTSBOTE_* variables override it. Without one, the
    /// embedded default runs under ./amtsbote-data.
    #[arg(long, global = true, value_name = "FILE", env = "AMTSBOTE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run everything: inbox watchers, HTTP API and dashboard, workers and schedules.
    Serve,
    /// Check xAmtshilfe messages: exit 0 when all are valid, 1 when any is not
    /// (one line per invalid file on stderr: `path: invalid: reason`).
    Validate(validate::ValidateArgs),
    /// Create or update the ledger and queue databases.
    Migrate,
    /// Configuration commands.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// A request with its journal.
    #[command(subcommand)]
    Request(RequestCommand),
    /// List requests (newest first), e.g. `--state validated`.
    Requests(ops::RequestsArgs),
    /// Per queue: pending, running, failed, dead, done.
    Queues,
    /// List jobs; `--failed` for those that failed (attempts left or dead).
    Jobs(ops::JobsArgs),
    /// Run a failed or dead job again now.
    Retry {
        /// The job's id (from `amtsbote jobs`).
        id: String,
    },
    /// Route a request again (an unroutable one, after the directory was fixed).
    Route {
        /// The request's id.
        id: String,
    },
    /// Give up a job for good.
    Discard {
        /// The job's id (from `amtsbote jobs`).
        id: String,
    },
    /// The directory of authorities: import its files, look up who is responsible.
    #[command(subcommand)]
    Directory(directory::DirectoryCommand),
    /// The XTA 2 test server: prints its address and runs until Ctrl-C. `xta-sim put FILE`:
    /// a message into a tenant's box (of the running serve's built-in simulator).
    XtaSim(xta_sim::XtaSimArgs),
    /// The nightly print batches: build one now, import the print centre's feedback, list
    /// and show them.
    #[command(subcommand)]
    PrintBatch(print::PrintCommand),
    /// The emails telling requesting authorities what became of their requests; `--failed`
    /// for those an operator must look at, `retry ID`, `discard ID`.
    Notifications(mail::NotificationsArgs),
    /// The HTTP interface's bearer tokens: create (printed once), revoke, list.
    #[command(subcommand)]
    Token(token::TokenCommand),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration (file + environment + defaults) and check it.
    Check,
}

#[derive(Debug, Subcommand)]
enum RequestCommand {
    /// Print a request's state and journal.
    Show {
        id: String,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Runs the command line and returns the process exit code. Never panics outward.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    if !matches!(cli.command, Command::Serve | Command::XtaSim(_)) {
        exit_quietly_on_a_closed_pipe();
    }
    let result = match cli.command {
        Command::Validate(args) => validate::run(args),
        // The test server needs no configuration of amtsbote itself; `xta-sim put` does
        // (the data directory and the tenants).
        Command::XtaSim(args) => {
            let config = if args.needs_config() { Config::load(cli.config.as_deref()).map(Some) } else { Ok(None) };
            config.and_then(|config| {
                tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()
                    .map_err(anyhow::Error::from)
                    .and_then(|runtime| runtime.block_on(xta_sim::run(args, config.as_ref())))
            })
        }
        command => Config::load(cli.config.as_deref()).and_then(|config| run_async(config, command)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("amtsbote: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// `amtsbote requests | head` closes the pipe early; a command-line tool then ends
/// quietly, as `ls` does, instead of panicking in `println!` (Rust ignores SIGPIPE, so every
/// write would fail). Not for `serve`: there a client that goes away must only fail its own
/// connection.
fn exit_quietly_on_a_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: sets the disposition of one signal to its default before any thread of ours
    // writes to a pipe; no handler is installed.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn run_async(config: Config, command: Command) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        match command {
            Command::Serve => crate::serve::run(config).await,
            Command::Migrate => ops::migrate(&config).await,
            Command::Config(ConfigCommand::Check) => ops::config_check(&config),
            Command::Request(RequestCommand::Show { id, json }) => ops::request_show(&config, &id, json).await,
            Command::Requests(args) => ops::requests(&config, args).await,
            Command::Queues => ops::queues(&config).await,
            Command::Jobs(args) => ops::jobs(&config, args).await,
            Command::Retry { id } => ops::job_action(&config, &id, ops::JobAction::Retry).await,
            Command::Discard { id } => ops::job_action(&config, &id, ops::JobAction::Discard).await,
            Command::Route { id } => ops::route(&config, &id).await,
            Command::Directory(command) => directory::run(&config, command),
            Command::PrintBatch(command) => print::run(&config, command).await,
            Command::Token(command) => token::run(&config, command).await,
            Command::Notifications(args) => mail::run(&config, args).await,
            Command::Validate(_) | Command::XtaSim(_) => unreachable!("handled before the configuration is loaded"),
        }
    })
}
