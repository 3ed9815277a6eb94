//! `amtsbote xta-sim --listen ADDR [flags]`: runs the XTA test server (`xta::sim`) until
//! Ctrl-C, after printing its address. With `--tls-cert/--tls-key` it speaks HTTPS, and with
//! `--client-ca` as well it refuses every client without a certificate signed by that CA.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::xta::ServerTls;
use crate::xta::sim::{InjectedFault, SimConfig, SimFile, SimServer};

#[derive(Debug, clap::Args)]
pub struct XtaSimArgs {
    /// Address to listen on, e.g. 127.0.0.1:8480 (port 0: any free port).
    #[arg(long, value_name = "ADDR")]
    listen: String,
    /// Accounts and readers (TOML: `accounts = [..]`, `[[readers]] id, available, unknown,
    /// permanent_fault`). Without it every author may send and every service is available.
    #[arg(long, value_name = "FILE")]
    readers: Option<PathBuf>,
    /// Share of SOAP requests answered with an injected fault (0.0–1.0).
    #[arg(long, default_value_t = 0.0, value_name = "R")]
    fault_rate: f64,
    /// The injected kinds, comma-separated: 503, technical, slow, drop.
    #[arg(long, value_delimiter = ',', default_value = "503,technical,slow,drop", value_name = "KINDS")]
    faults: Vec<InjectedFault>,
    /// How long a `slow` answer waits (set it beyond the client's response timeout).
    #[arg(long, default_value_t = 90_000, value_name = "MS")]
    slow_ms: u64,
    /// Seconds after the start when an outage begins (every request answered 503).
    #[arg(long, value_name = "S")]
    outage_after: Option<u64>,
    /// Seconds the outage lasts.
    #[arg(long, default_value_t = 60, value_name = "S")]
    outage_for: u64,
    /// Seed of the fault choice, for repeatable runs.
    #[arg(long, default_value_t = 1, value_name = "N")]
    seed: u64,
    /// Writes every SOAP request body it receives into this directory.
    #[arg(long, value_name = "DIR")]
    record: Option<PathBuf>,
    /// Keeps what it accepted in this file (JSON lines) and reads it again at start, so a
    /// restarted simulator still answers transport reports and still counts re-sends.
    #[arg(long, value_name = "FILE")]
    state_file: Option<PathBuf>,
    /// Keeps the content of the messages in its boxes in files of this directory (emptied
    /// at start), not in memory.
    #[arg(long, value_name = "DIR")]
    box_dir: Option<PathBuf>,
    /// Milliseconds until a transport report turns green (status 0 before).
    #[arg(long, default_value_t = 2_000, value_name = "MS")]
    report_delay_ms: u64,
    /// Answer getMessage with MTOM (multipart/related, XOP) instead of inline base64.
    #[arg(long)]
    mtom: bool,
    /// HTTPS: the server's certificate chain (PEM, leaf first). Needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// HTTPS: the server's private key (PEM: PKCS#8, RSA or SEC1). Needs --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Mutual TLS: every client must present a certificate signed by a CA of this PEM bundle.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    client_ca: Option<PathBuf>,
}

pub async fn run(args: XtaSimArgs) -> anyhow::Result<ExitCode> {
    if !(0.0..=1.0).contains(&args.fault_rate) {
        anyhow::bail!("--fault-rate must be between 0 and 1");
    }
    let file = match &args.readers {
        Some(path) => SimFile::load(path)?,
        None => SimFile::default(),
    };
    let client_ca = args.client_ca.clone();
    let config = SimConfig {
        file,
        report_delay: Duration::from_millis(args.report_delay_ms),
        fault_rate: args.fault_rate,
        faults: args.faults,
        slow: Duration::from_millis(args.slow_ms),
        outage_after: args.outage_after.map(Duration::from_secs),
        outage_for: Duration::from_secs(args.outage_for),
        seed: args.seed,
        record: args.record,
        state_file: args.state_file,
        box_dir: args.box_dir,
        mtom: args.mtom,
        tls: match (args.tls_cert, args.tls_key) {
            (Some(cert), Some(key)) => {
                let tls = ServerTls::new(cert, key);
                Some(match args.client_ca {
                    Some(ca) => tls.with_client_ca(ca),
                    None => tls,
                })
            }
            _ => None,
        },
        ..SimConfig::default()
    };
    let server = SimServer::start(&args.listen, config).await.map_err(|e| anyhow::anyhow!("cannot start on {}: {e}", args.listen))?;
    println!("xta-sim listening on {}", server.url());
    if let Some(ca) = &client_ca {
        println!("client certificates: required, signed by a CA of {}", ca.display());
    }
    println!("ports: {0}/ManagementPort {0}/SendXtaPort {0}/MsgBoxPort; statistics: GET {0}/stats", server.url());
    tokio::signal::ctrl_c().await?;
    server.stop().await?;
    Ok(ExitCode::SUCCESS)
}
