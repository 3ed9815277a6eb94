//! `amtsbote serve`: starts every part this installation runs and stops them cleanly on
//! Ctrl-C or SIGTERM. The wiring lives here; each part lives in its own module.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;

use crate::cli::{open_ledger, open_queues};
use crate::config::Config;
use crate::intake::Intake;
use crate::intake::inbox::{InboxDirs, WatchConfig, Watcher};
use crate::queue::Queue;

pub async fn run(config: Config) -> anyhow::Result<ExitCode> {
    init_logging();
    std::fs::create_dir_all(&config.data_dir).with_context(|| format!("cannot create the data directory {}", config.data_dir.display()))?;
    let ledger = open_ledger(&config).await?;
    let queues = open_queues(&config).await?;
    let checker = Arc::new(config.checker().context("messages: code lists")?);
    let limits = checker.reader.limits;
    let intake = Intake::new(ledger.clone(), checker).with_tenants(config.tenants.clone());

    let dirs: Vec<InboxDirs> = config.tenants.iter().map(|t| InboxDirs { tenant: t.id.clone(), inbox: t.inbox().to_path_buf() }).collect();
    let intake_jobs = queues.configs().get(Queue::Intake);
    let watch_config = WatchConfig {
        poll_interval: Duration::from_millis(config.intake.poll_interval_ms.max(10)),
        settle: Duration::from_millis(config.intake.settle_ms),
        concurrency: intake_jobs.concurrency.max(1),
        limits,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let watcher = Watcher::new(intake.clone(), dirs.clone(), watch_config);
    let inbox_stats = watcher.stats.clone();
    let watcher_task = tokio::spawn(watcher.run(stop_rx.clone()));

    let listener = tokio::net::TcpListener::bind(&config.http.listen)
        .await
        .with_context(|| format!("cannot listen on {} (http.listen); is another amtsbote running?", config.http.listen))?;
    let http_addr = listener.local_addr()?;
    let directory = crate::directory::open_or_sample(&config.data_dir).context("the directory (import it again with `amtsbote directory import`)")?;
    if directory.is_sample() {
        tracing::warn!("no directory imported: lookups answer from the sample data (amtsbote directory import …)");
    }
    let directory = Arc::new(crate::directory::SharedDirectory::new(directory));
    crate::directory::certs::warn_about(&crate::directory::certs::scan(&crate::directory::certs::certs_dir(&config.data_dir), chrono::Utc::now()));
    // An import by `amtsbote directory import` (another process) is picked up here.
    let reload = {
        let (directory, data_dir, mut stop) = (directory.clone(), config.data_dir.clone(), stop_rx.clone());
        let certs = crate::directory::certs::certs_dir(&config.data_dir);
        tokio::spawn(async move {
            let mut certs_checked = std::time::Instant::now();
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = stop.changed() => return,
                }
                // Certificates are looked at again once a day, so a long-running process
                // still warns 30 days ahead.
                if certs_checked.elapsed() >= Duration::from_secs(24 * 3600) {
                    certs_checked = std::time::Instant::now();
                    crate::directory::certs::warn_about(&crate::directory::certs::scan(&certs, chrono::Utc::now()));
                }
                let (d, dir) = (directory.clone(), data_dir.clone());
                // Re-indexing a full street file takes a second: not on the runtime's threads.
                let reloaded = tokio::task::spawn_blocking(move || d.reload_if_changed(&dir)).await;
                match reloaded.unwrap_or(Ok(false)) {
                    Ok(true) => tracing::info!("directory reloaded after an import"),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot reload the directory; keeping the one in use"),
                }
            }
        })
    };
    let router = crate::route::Router { ledger: ledger.clone(), checker: intake.checker.clone(), directory: directory.clone() };
    let router_task = tokio::spawn(router.run(Duration::from_millis(config.intake.poll_interval_ms.max(10)), stop_rx.clone()));
    let purge_task = tokio::spawn(crate::queue::purge_every_hour(
        queues.admin(),
        Duration::from_secs(config.queue.keep_finished_hours.saturating_mul(3600)),
        stop_rx.clone(),
    ));
    let state = crate::web::AppState::from_config(intake, &config).with_directory(directory).with_queues(queues.admin()).with_inbox_stats(inbox_stats);
    let mut http_stop = stop_rx.clone();
    let http_task = tokio::spawn(crate::web::serve(listener, state, async move {
        let _ = http_stop.wait_for(|stop| *stop).await;
    }));

    print_where_everything_is(&config, http_addr, &dirs);

    shutdown_signal().await;
    eprintln!("amtsbote: stopping (finishing the files being taken in)…");
    let _ = stop_tx.send(true);
    watcher_task.await.context("inbox watcher")??;
    http_task.await.context("HTTP server")??;
    router_task.await.context("routing")?;
    purge_task.await.context("job purge")?;
    reload.abort();
    eprintln!("amtsbote: stopped");
    Ok(ExitCode::SUCCESS)
}

fn print_where_everything_is(config: &Config, http: std::net::SocketAddr, dirs: &[InboxDirs]) {
    let mut out = String::new();
    out.push_str("amtsbote is running.\n");
    out.push_str(&format!("  data directory   {}\n", config.data_dir.display()));
    out.push_str(&format!("  ledger           {}\n", config.ledger_url()));
    out.push_str(&format!("  job queues       {}\n", config.queue_path().display()));
    for d in dirs {
        out.push_str(&format!("  inbox {:<10} {}  (drop .xml files here; results in done/ and error/)\n", d.tenant, d.inbox.display()));
    }
    out.push_str(&format!("  HTTP             http://{http}/api/v1/nachrichten (POST), /api/v1/requests/ID, /healthz, /metrics\n"));
    out.push_str("Next: drop examples/messages/ersuchen.xml into an inbox, then `amtsbote requests` and `amtsbote request show ID`.\n");
    out.push_str("Stop with Ctrl-C.\n");
    eprint!("{out}");
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
