//! `amtsbote serve`: starts every part this installation runs, each stage under the
//! [`Supervisor`], and stops them cleanly on Ctrl-C or SIGTERM. The stores are opened by
//! [`crate::app`]; each part lives in its own module.
//!
//! Stages: `intake` (the inbox watcher), `relay` (outbox → queues), `route`, `transmit` and
//! `report` (the workers of those queues), `receive` (the XTA message boxes → outbox
//! folders, on its schedule), `sweeper` (work that lost its job), `purge` (finished jobs),
//! `directory` (picks up imports made by another process). HTTP runs beside them, and
//! in the embedded default (`xta.url` unset) the XTA simulator on loopback.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;

use crate::app::App;
use crate::config::Config;
use crate::intake::inbox::{InboxDirs, Stats, WatchConfig, Watcher};
use crate::queue::Queue;
use crate::queue::relay::{SweepConfig, run_relay, run_sweeper};
use crate::queue::stage::run_worker;
use crate::route::RouteStage;
use crate::supervise::Supervisor;

pub async fn run(config: Config) -> anyhow::Result<ExitCode> {
    init_logging();
    let app = App::open(config).await?;
    let config = app.config.clone();
    if app.directory.get().is_sample() {
        tracing::warn!("no directory imported: lookups answer from the sample data (amtsbote directory import …)");
    }
    crate::directory::certs::warn_about(&crate::directory::certs::scan(&crate::directory::certs::certs_dir(&config.data_dir), chrono::Utc::now()));
    let listener = tokio::net::TcpListener::bind(&config.http.listen)
        .await
        .with_context(|| format!("cannot listen on {} (http.listen); is another amtsbote running?", config.http.listen))?;
    let http_addr = listener.local_addr()?;
    let http_tls = match config.http.server_tls() {
        Some(tls) => Some(tls.rustls_config()?),
        None => None,
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut supervisor = Supervisor::new(stop_rx.clone());
    let dirs = inbox_dirs(&config);
    let started = start_stages(&app, &mut supervisor).await?;
    let inbox_stats = started.inbox_stats.clone();

    // The machine's own token, for `amtsbote queues` (an operator's rights; see crate::access).
    let local_token = crate::access::local_token(&config.data_dir).context("the local token")?;
    let tokens = app.ledger.tokens().await.context("reading the access tokens")?;
    let state = crate::web::AppState::from_config(app.intake(), &config)
        .with_local_token(&local_token)
        .with_directory(app.directory.clone())
        .with_queues(app.queues.admin())
        .with_inbox_stats(inbox_stats)
        .with_stages(supervisor.health(), app.metrics.clone())
        .with_xta(started.xta.clone())
        .with_mails(started.mails.clone());
    let state = match http_tls {
        Some(tls) => state.with_tls(tls),
        None => state,
    };
    // Memory freed after large messages goes back to the system (see crate::memory).
    tokio::spawn(crate::memory::run_trimmer(stop_rx.clone()));
    let mut http_stop = stop_rx.clone();
    let http_task = tokio::spawn(crate::web::serve(listener, state, async move {
        let _ = http_stop.wait_for(|stop| *stop).await;
    }));

    print_where_everything_is(&config, http_addr, &dirs, &started, tokens.iter().filter(|t| t.revoked_at.is_none()).count());

    shutdown_signal().await;
    eprintln!("amtsbote: stopping (finishing the files and jobs in hand)…");
    let _ = stop_tx.send(true);
    supervisor.join(Duration::from_secs(30)).await;
    http_task.await.context("HTTP server")??;
    eprintln!("amtsbote: stopped");
    Ok(ExitCode::SUCCESS)
}

/// The inbox folders of the configured tenants.
pub fn inbox_dirs(config: &Config) -> Vec<InboxDirs> {
    config.tenants.iter().map(|t| InboxDirs { tenant: t.id.clone(), inbox: t.inbox().to_path_buf() }).collect()
}

/// What [`start_stages`] started beside the stages.
pub struct Started {
    /// The inbox watcher's counters.
    pub inbox_stats: Arc<Stats>,
    /// Where the transmit stage sends: `xta.url`, or the built-in simulator's address.
    pub xta_url: String,
    /// The built-in XTA simulator (the embedded default, `xta.url` unset); it runs as long
    /// as this is kept.
    pub xta_sim: Option<crate::xta::sim::SimServer>,
    /// The XTA server's breaker and limit of calls in flight (for `/metrics`).
    pub xta: Arc<crate::xta::breaker::Destination>,
    /// What the notify stage counted (for `/metrics`).
    pub mails: Arc<crate::mail::notify::MailCounters>,
    /// Where emails go (for the start-up banner).
    pub mail_transport: String,
}

/// Starts every stage of the pipeline under `supervisor`, as `serve` runs them (the
/// pipeline benchmark runs the same): intake, relay, route, transmit, report, receive,
/// sweeper, purge, directory; and the built-in XTA simulator when `xta.url` is unset.
pub async fn start_stages(app: &App, supervisor: &mut Supervisor) -> anyhow::Result<Started> {
    let config = &app.config;
    // The XTA server: the configured one, or the simulator on loopback.
    let (xta_url, xta_sim, wake_receive) = match &config.xta.url {
        Some(url) => (url.clone(), None, None),
        None => {
            if !config.ledger_url().starts_with("sqlite") {
                tracing::warn!("xta.url is unset, so this process sends to a simulator of its own; processes sharing a PostgreSQL ledger need one shared XTA server (set xta.url)");
            }
            // What it accepted is kept under the data directory: after a restart it still
            // answers the transport reports of what the last run sent.
            // The messages in its boxes are kept in files, not in memory (issue 13). A message
            // put into one of its boxes wakes the receive stage: it is received at once, not
            // on the next beat of the schedule.
            let wake = Arc::new(tokio::sync::Notify::new());
            let sim_config = crate::xta::sim::SimConfig {
                state_file: Some(config.data_dir.join("xta-sim/accepted.jsonl")),
                box_dir: Some(config.data_dir.join("xta-sim/boxes")),
                on_inbox: Some(wake.clone()),
                ..crate::xta::sim::SimConfig::default()
            };
            let sim = crate::xta::sim::SimServer::start("127.0.0.1:0", sim_config)
                .await
                .context("cannot start the built-in XTA simulator")?;
            // Where it listens, for `amtsbote xta-sim put` (a message for a tenant).
            let url_file = crate::xta::sim::url_file(&config.data_dir);
            std::fs::write(&url_file, format!("{}\n", sim.url())).with_context(|| format!("cannot write {}", url_file.display()))?;
            (sim.url(), Some(sim), Some(wake))
        }
    };
    let client = xta_client(&config.xta, &xta_url, xta_sim.is_none())?;
    let authors: std::collections::HashMap<String, String> = config.tenants.iter().map(|t| (t.id.clone(), t.kennung.clone())).collect();
    let policy = |queue: Queue| {
        let jobs = app.queues.configs().get(queue);
        crate::xta::attempts::AttemptPolicy { max_attempts: jobs.max_attempts.max(1), backoff: jobs.backoff.clone() }
    };
    // intake: the inbox watcher.
    let dirs = inbox_dirs(config);
    let intake_jobs = app.queues.configs().get(Queue::Intake);
    let watch_config = WatchConfig {
        poll_interval: Duration::from_millis(config.intake.poll_interval_ms.max(10)),
        settle: Duration::from_millis(config.intake.settle_ms),
        concurrency: intake_jobs.concurrency.max(1),
        limits: app.checker.reader.limits,
        patterns: crate::intake::inbox::Patterns::new(&config.intake.patterns).map_err(anyhow::Error::msg)?,
        incomplete_wait: Duration::from_secs(config.intake.incomplete_wait_secs),
        read_retry: Duration::from_secs(config.intake.read_retry_secs),
    };
    let inbox_stats = Arc::new(Stats::default());
    {
        let (intake, dirs, stats) = (app.intake(), dirs.clone(), inbox_stats.clone());
        supervisor.spawn("intake", move |stop| Watcher::new(intake.clone(), dirs.clone(), watch_config.clone()).with_stats(stats.clone()).run(stop));
    }
    // relay: the ledger's outbox to the job queues.
    {
        let (ledger, jobs, metrics) = (app.ledger.clone(), app.queues.jobs(), app.metrics.clone());
        let poll = Duration::from_millis(config.queue.relay_poll_ms.max(1));
        supervisor.spawn("relay", move |stop| run_relay(ledger.clone(), jobs.clone(), metrics.clone(), poll, stop));
    }
    // route: the route queue's worker.
    {
        let (queues, stage, metrics) = (app.queues.clone(), Arc::new(RouteStage { router: app.router() }), app.metrics.clone());
        supervisor.spawn("route", move |stop| run_worker(queues.clone(), stage.clone(), metrics.clone(), stop));
    }
    // transmit: the transmit queue's worker.
    {
        let stage = Arc::new(crate::xta::transmit::TransmitStage {
            ledger: app.ledger.clone(),
            client: client.clone(),
            authors: authors.clone(),
            attempts: policy(Queue::Transmit),
            unknown_availability_attempts: config.xta.unknown_availability_attempts,
            print_when_failed: config.xta.print_when_failed,
        });
        let (queues, metrics) = (app.queues.clone(), app.metrics.clone());
        supervisor.spawn("transmit", move |stop| run_worker(queues.clone(), stage.clone(), metrics.clone(), stop));
    }
    // report: the report queue's worker (transport reports of transmitted requests).
    {
        let stage = Arc::new(crate::xta::report::ReportStage { ledger: app.ledger.clone(), client: client.clone(), authors: authors.clone(), attempts: policy(Queue::Report) });
        let (queues, metrics) = (app.queues.clone(), app.metrics.clone());
        supervisor.spawn("report", move |stop| run_worker(queues.clone(), stage.clone(), metrics.clone(), stop));
    }
    // print: the nightly batch on the schedule of jobs/print.toml, caught up at start.
    let print_jobs = app.queues.configs().get(Queue::Print);
    if let Some(schedule) = print_jobs.schedule.clone() {
        let runner = Arc::new(crate::print::batch::runner(config, app.ledger.clone(), app.directory.clone(), print_jobs, "serve")?);
        supervisor.spawn("print", move |stop| crate::print::batch::run_nightly(runner.clone(), schedule.clone(), stop));
    }
    // receive: the tenants' XTA message boxes into their outbox folders, on the schedule.
    {
        use crate::xta::receive::{Cadence, ReceiveStage, ReceiveTenant, owner_name, run};
        let jobs = app.queues.configs().get(Queue::Receive);
        let cadence = match (config.xta.receive_interval_ms, &jobs.schedule) {
            (Some(ms), _) => Cadence::Every(Duration::from_millis(ms)),
            (None, Some(schedule)) => Cadence::Schedule(Box::new(schedule.clone())),
            (None, None) => Cadence::Every(Duration::from_secs(300)),
        };
        for t in ReceiveTenant::active(&config.tenants) {
            app.metrics.received.tenant(&t.id);
        }
        let stage = Arc::new(ReceiveStage {
            ledger: app.ledger.clone(),
            client: client.clone(),
            checker: app.checker.clone(),
            tenants: config.tenants.clone(),
            metrics: app.metrics.clone(),
            owner: owner_name(),
            claim_for: jobs.timeout(),
            max_items: u32::try_from(jobs.batch_size).unwrap_or(u32::MAX).max(1),
        });
        supervisor.spawn("receive", move |stop| run(stage.clone(), cadence.clone(), wake_receive.clone(), stop));
    }
    // sweeper: work that lost its job.
    {
        let (ledger, jobs, metrics) = (app.ledger.clone(), app.queues.jobs(), app.metrics.clone());
        let sweep = SweepConfig { after: Duration::from_secs(config.queue.sweep_after_secs), every: Duration::from_secs(config.queue.sweep_interval_secs.max(1)) };
        supervisor.spawn("sweeper", move |stop| run_sweeper(ledger.clone(), jobs.clone(), metrics.clone(), sweep, stop));
    }
    // purge: finished jobs older than queue.keep_finished_hours.
    {
        let admin = app.queues.admin();
        let keep = Duration::from_secs(config.queue.keep_finished_hours.saturating_mul(3600));
        supervisor.spawn("purge", move |stop| {
            let admin = admin.clone();
            async move {
                crate::queue::purge_every_hour(admin, keep, stop).await;
                Ok(())
            }
        });
    }
    // directory: an import by `amtsbote directory import` (another process) is picked up.
    {
        let (directory, data_dir) = (app.directory.clone(), config.data_dir.clone());
        supervisor.spawn("directory", move |stop| reload_directory(directory.clone(), data_dir.clone(), stop));
    }
    // notify: the ledger's notifications into emails, each handed to the server once.
    let (mails, mail_transport) = {
        let notifier = Arc::new(crate::mail::notify::notifier(app, app.queues.configs().get(Queue::Notify).clone())?);
        let described = notifier.transport.describe();
        tracing::info!("notify: {described}");
        let counters = notifier.counters.clone();
        supervisor.spawn("notify", move |stop| crate::mail::notify::run(notifier.clone(), stop));
        (counters, described)
    };
    Ok(Started { inbox_stats, xta_url, xta_sim, xta: client.destination().clone(), mails, mail_transport })
}

/// The XTA client for `url` as `[xta]` configures it; with `tls`, its CA and client
/// certificate (read now: a missing file or a key that is not the certificate's is an error
/// naming the setting and the path). The built-in simulator speaks plain HTTP and gets none.
pub fn xta_client(xta: &crate::config::XtaConfig, url: &str, tls: bool) -> anyhow::Result<crate::xta::XtaClient> {
    let mut client_config = crate::xta::ClientConfig::new(url);
    client_config.connect_timeout = Duration::from_millis(xta.connect_timeout_ms);
    client_config.response_timeout = Duration::from_millis(xta.response_timeout_ms);
    client_config.tls = if tls { xta.client_tls() } else { None };
    client_config.breaker = crate::xta::breaker::BreakerConfig {
        max_in_flight: xta.max_connections as usize,
        failures: xta.breaker_failures,
        open: Duration::from_secs(xta.breaker_open_secs),
        max_open: Duration::from_secs(xta.breaker_max_open_secs),
    };
    crate::xta::XtaClient::new(client_config).context("the XTA client")
}

/// Every 5 s: a newer directory generation on disk is loaded; certificates are looked at
/// again once a day, so a long-running process still warns 30 days ahead.
async fn reload_directory(directory: Arc<crate::directory::SharedDirectory>, data_dir: std::path::PathBuf, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    let certs = crate::directory::certs::certs_dir(&data_dir);
    let mut certs_checked = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = stop.wait_for(|s| *s) => return Ok(()),
        }
        if certs_checked.elapsed() >= Duration::from_secs(24 * 3600) {
            certs_checked = std::time::Instant::now();
            crate::directory::certs::warn_about(&crate::directory::certs::scan(&certs, chrono::Utc::now()));
        }
        let (d, dir) = (directory.clone(), data_dir.clone());
        // Re-indexing a full street file takes a second: not on the runtime's threads.
        match tokio::task::spawn_blocking(move || d.reload_if_changed(&dir)).await? {
            Ok(true) => tracing::info!("directory reloaded after an import"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "cannot reload the directory; keeping the one in use"),
        }
    }
}

fn print_where_everything_is(config: &Config, http: std::net::SocketAddr, dirs: &[InboxDirs], started: &Started, tokens: usize) {
    let mut out = String::new();
    out.push_str("amtsbote is running.\n");
    out.push_str(&format!("  data directory   {}\n", config.data_dir.display()));
    out.push_str(&format!("  ledger           {}\n", redact(config.ledger_url())));
    out.push_str(&format!("  job queues       {}\n", config.queue_path().display()));
    let patterns = config.intake.patterns.join(", ");
    for d in dirs {
        out.push_str(&format!("  inbox {:<10} {}  (drop {patterns} files here; results in done/ and error/)\n", d.tenant, d.inbox.display()));
    }
    for t in &config.tenants {
        out.push_str(&format!("  outbox {:<9} {}  (messages received over XTA; invalid ones in error/)\n", t.id, t.outbox().display()));
    }
    let scheme = if config.http.server_tls().is_some() { "https" } else { "http" };
    out.push_str(&format!("  HTTP             {scheme}://{http}/api/v1/nachrichten (POST), /api/v1/requests/ID, /healthz, /metrics\n"));
    if tokens == 0 {
        out.push_str("  access           every endpoint but /healthz needs a bearer token, and there is none yet. Create the first:\n");
        out.push_str("                     TOKEN=$(amtsbote token create --role admin)   # printed once; send it as Authorization: Bearer $TOKEN\n");
    } else {
        out.push_str(&format!("  access           {tokens} bearer token(s) (amtsbote token list); every endpoint but /healthz needs one\n"));
    }
    if started.xta_sim.is_some() {
        out.push_str(&format!("  XTA              {}  (built-in simulator: nothing leaves this machine; set xta.url for a real server; statistics at /stats; a message for a tenant: amtsbote xta-sim put FILE)\n", started.xta_url));
    } else {
        out.push_str(&format!("  XTA              {}\n", redact(&started.xta_url)));
    }
    out.push_str(&format!("  email            {}  (amtsbote notifications)\n", started.mail_transport));
    out.push_str("Next: drop examples/messages/ersuchen.xml into an inbox, then `amtsbote requests` and `amtsbote request show ID`.\n");
    out.push_str("Stop with Ctrl-C.\n");
    eprint!("{out}");
}

/// A URL without its password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => match url[scheme + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
            None => url.to_string(),
        },
        _ => url.to_string(),
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AMTSBOTE_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal();
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).try_init();
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
