//! `amtsbote xta-sim --listen ADDR [flags]`: runs the XTA test server (`xta::sim`) until
//! Ctrl-C, after printing its address. With `--tls-cert/--tls-key` it speaks HTTPS, and with
//! `--client-ca` as well it refuses every client without a certificate signed by that CA.
//!
//! `amtsbote xta-sim put FILE [--tenant T]`: puts a message into a tenant's XTA message box
//! on a simulator (`POST /inbox/<reader>`; by default the built-in one of the running
//! `serve`, whose URL it reads from `<data_dir>/xta-sim/url`), as if another authority had
//! sent it: `serve` receives it into the tenant's outbox folder.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::xta::ServerTls;
use crate::xta::sim::{InjectedFault, SimConfig, SimFile, SimServer};

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct XtaSimArgs {
    #[command(subcommand)]
    command: Option<SimCommand>,
    /// Address to listen on, e.g. 127.0.0.1:8480 (port 0: any free port).
    #[arg(long, value_name = "ADDR", required = true)]
    listen: Option<String>,
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

#[derive(Debug, clap::Subcommand)]
pub enum SimCommand {
    /// Put a message into a tenant's XTA message box on a simulator, as if another
    /// authority had sent it (`POST /inbox/<reader>`); `serve` receives it into the tenant's
    /// outbox folder. Prints the simulator's MessageID.
    Put {
        /// The message (an xAmtshilfe XML file; it is delivered as it is, valid or not).
        file: PathBuf,
        /// The tenant whose box gets it (its kennung is the reader). Default: the only
        /// configured tenant.
        #[arg(long, value_name = "ID", conflicts_with = "reader")]
        tenant: Option<String>,
        /// The reader's identity itself, instead of a tenant's kennung.
        #[arg(long, value_name = "KENNUNG")]
        reader: Option<String>,
        /// The simulator (http://…). Default: the built-in simulator of the running serve
        /// (`<data_dir>/xta-sim/url`).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
    },
}

impl XtaSimArgs {
    /// This needs the configuration (data directory, tenants): `put`.
    pub fn needs_config(&self) -> bool {
        self.command.is_some()
    }
}

pub async fn run(args: XtaSimArgs, config: Option<&crate::config::Config>) -> anyhow::Result<ExitCode> {
    if let Some(SimCommand::Put { file, tenant, reader, url }) = args.command {
        let config = config.ok_or_else(|| anyhow::anyhow!("xta-sim put needs the configuration"))?;
        return put(config, &file, tenant.as_deref(), reader.as_deref(), url.as_deref()).await;
    }
    let Some(listen) = args.listen else { anyhow::bail!("--listen ADDR is required") };
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
    let server = SimServer::start(&listen, config).await.map_err(|e| anyhow::anyhow!("cannot start on {listen}: {e}"))?;
    println!("xta-sim listening on {}", server.url());
    if let Some(ca) = &client_ca {
        println!("client certificates: required, signed by a CA of {}", ca.display());
    }
    println!("ports: {0}/ManagementPort {0}/SendXtaPort {0}/MsgBoxPort; statistics: GET {0}/stats", server.url());
    tokio::signal::ctrl_c().await?;
    server.stop().await?;
    Ok(ExitCode::SUCCESS)
}

/// `amtsbote xta-sim put`: the message of `file` into the box of `reader` (or the tenant's
/// kennung) on the simulator at `url` (or the running serve's built-in one).
async fn put(config: &crate::config::Config, file: &std::path::Path, tenant: Option<&str>, reader: Option<&str>, url: Option<&str>) -> anyhow::Result<ExitCode> {
    use anyhow::Context as _;
    let reader = match (reader, tenant) {
        (Some(reader), _) => reader.to_owned(),
        (None, Some(id)) => match config.tenants.iter().find(|t| t.id == id) {
            Some(t) => t.kennung.clone(),
            None => anyhow::bail!("no tenant '{id}' is configured (tenants: {})", config.tenants.iter().map(|t| t.id.as_str()).collect::<Vec<_>>().join(", ")),
        },
        (None, None) => match &config.tenants[..] {
            [only] => only.kennung.clone(),
            _ => anyhow::bail!("several tenants are configured: name one with --tenant"),
        },
    };
    let url = match url {
        Some(url) => url.to_owned(),
        None => {
            let path = crate::xta::sim::url_file(&config.data_dir);
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!("cannot read {}: is `amtsbote serve` running with the built-in simulator (xta.url unset)? Or name a simulator with --url", path.display())
            })?;
            text.trim().to_owned()
        }
    };
    let Some(authority) = url.strip_prefix("http://").map(|rest| rest.trim_end_matches('/')) else {
        anyhow::bail!("{url}: xta-sim put speaks plain http:// only (the built-in simulator's)");
    };
    let body = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let (status, answer) = post(authority, &format!("/inbox/{reader}"), body).await.with_context(|| format!("cannot reach the simulator at {url}: is `amtsbote serve` running?"))?;
    if status != 201 {
        anyhow::bail!("the simulator at {url} answered {status}: {}", answer.trim());
    }
    let message_id = serde_json::from_str::<serde_json::Value>(&answer).ok().and_then(|v| v["message_id"].as_str().map(str::to_owned)).unwrap_or_default();
    println!("{message_id}");
    eprintln!("put into the XTA message box of {reader} at {url}; serve receives it into the tenant's outbox folder");
    Ok(ExitCode::SUCCESS)
}

/// POST `body` to `path` on `authority` (host:port) over plain HTTP/1.1: (status, body).
async fn post(authority: &str, path: &str, body: Vec<u8>) -> anyhow::Result<(u16, String)> {
    use http_body_util::BodyExt as _;
    let stream = tokio::time::timeout(Duration::from_secs(10), tokio::net::TcpStream::connect(authority)).await??;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = hyper::Request::post(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/xml")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))?;
    let response = tokio::time::timeout(Duration::from_secs(30), sender.send_request(request)).await??;
    let status = response.status().as_u16();
    let bytes = tokio::time::timeout(Duration::from_secs(30), response.into_body().collect()).await??.to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}
