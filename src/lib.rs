//! amtsbote carries enforcement-assistance requests (Vollstreckungshilfeersuchen) between
//! German enforcement authorities.
//!
//! One module per part of the domain; docs/ARCHITECTURE.md shows how data flows through them.
//! - [`xamtshilfe`]: the messages — typed model, reading with limits, writing, validation.
//! - [`intake`]: taking messages in from inbox folders and HTTP, once each.
//! - [`route`]: the routing stage — validated requests to the responsible authority.
//! - [`ledger`]: the truth — requests, their journal, the outbox of triggers.
//! - [`queue`]: the job queues behind one backend interface, the stage-worker harness, the
//!   relay and the sweeper.
//! - [`directory`]: the Authority-Server — who is responsible for an address.
//! - [`mail`]: notifications — emails to the requesting authority about its request.
//! - [`print`]: the print step — requests as DIN 5008 letters in PDF files for the print centre.
//! - [`supervise`]: every stage of `serve` restarted when it fails, and its health.
//! - [`app`]: the wiring — opens the stores and builds the parts; `serve` and the CLI start
//!   from it.
//! - [`config`]: the configuration file and `AMTSBOTE_*` variables.
//! - [`cli`]: the `amtsbote` command line.
//! - [`web`]: the HTTP API (`/api/v1`), `/healthz` and `/metrics`.
//! - [`access`]: roles and bearer tokens — who may use the HTTP interface.
//! - [`xta`]: the XTA 2 transport — SOAP envelopes, typed faults, the client and the `xta-sim` test
//!   server; the transmit stage, and the receive stage (message boxes → outbox folders).

pub mod access;
pub mod app;
pub mod cli;
pub mod config;
pub mod directory;
pub mod intake;
pub mod ledger;
pub mod mail;
pub mod memory;
pub mod print;
pub mod queue;
pub mod route;
pub mod serve;
pub mod supervise;
pub mod web;
pub mod xamtshilfe;
pub mod xta;

/// This machine's name, reduced to letters, digits, `.`, `-` and `_` so that it can stand in
/// identifiers: in worker names (`queue::worker_name`) and in an inbox's lock file.
pub(crate) fn hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let name: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() {
        "localhost".to_owned()
    } else {
        name
    }
}

/// Whether the process that signs its claims `<role>-<host>-<pid>` ran on this machine and
/// is gone (a print batch's writer, a mail sender): what it held may be taken over at once,
/// without waiting for its lease to run out.
pub(crate) fn owner_gone_here(owner: &str) -> bool {
    let Some((rest, pid)) = owner.rsplit_once('-') else { return false };
    let Ok(pid) = pid.parse::<u32>() else { return false };
    cfg!(target_os = "linux")
        && rest.ends_with(&format!("-{}", hostname()))
        && pid != std::process::id()
        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}
