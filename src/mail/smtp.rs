//! Sending one rendered email: over SMTP (lettre's pooled async transport, STARTTLS or
//! implicit TLS over rustls with the ring provider, optional AUTH) or, in the embedded
//! default without `smtp.url`, as an `.eml` file in `<data_dir>/mail/`.
//!
//! Owns the `smtp.url` forms, the trust of the server's certificate, and the classing of
//! every outcome as accepted, transient (try again later) or permanent (an operator looks).
//! It knows nothing of notifications, retries or the ledger: the notify stage calls
//! [`Mailer::send`] with the notification's stable id and records what comes back.
//!
//! `smtp.url` forms:
//! - `smtp://host[:port]` — port 587 by default, STARTTLS required (a server that does not
//!   offer it is a transient failure, never a fall-back to plain text);
//! - `smtp://host[:port]?tls=none` — plain SMTP, for a relay on loopback and for tests;
//! - `smtp://host[:port]?tls=opportunistic` — STARTTLS when the server offers it, else plain;
//! - `smtps://host[:port]` — implicit TLS (port 465 by default);
//! - `user:password@` before the host — AUTH (PLAIN or LOGIN) with the percent-decoded
//!   user and password; refused on a plain connection to anything but loopback.
//!
//! The server's certificate is checked against `smtp.ca_file` only when it is set (a
//! private CA, the test CA); otherwise against the Mozilla roots compiled into the binary
//! (webpki-roots), which need no system store and work offline.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, Certificate, CertificateStore, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use super::transport::{Refusal, Session, Transport};
use crate::config::SmtpConfig;

/// A pooled connection idle this long is asked with NOOP whether it still stands before it
/// is used; one idle longer than [`IDLE_MAX`] is closed instead.
const NOOP_AFTER: Duration = Duration::from_secs(5);
const IDLE_MAX: Duration = Duration::from_secs(60);

/// What became of one email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The server took it (2xx after DATA), or the `.eml` file is on disk.
    Accepted,
    /// Try again later: a 4xx answer, no connection, a timeout, a failed TLS handshake (the
    /// certificate, no STARTTLS offered), an error writing the file. One line for operators:
    /// the code and the server's text, never the message.
    Transient(String),
    /// Do not try again: the server's 5xx answer (unknown mailbox, refused credentials).
    Permanent(String),
}

/// `smtp.*` settings that cannot be used; each says what to change.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("smtp.url {url:?}: {why}")]
    Url { url: String, why: String },
    #[error("smtp.ca_file {}: {why}", path.display())]
    CaFile { path: PathBuf, why: String },
    #[error("smtp.url: cannot set up TLS for {host}: {why}")]
    Tls { host: String, why: String },
    #[error("smtp.pool_size and smtp.timeout_secs must be at least 1")]
    Limits,
}

/// Sends emails; one per process, shared by the notify stage's tasks.
pub struct Mailer {
    way: Way,
    description: String,
}

enum Way {
    /// The embedded default: one `.eml` file per id in this folder.
    Files { dir: PathBuf },
    Smtp(Box<Pool>),
}

/// The TLS modes of `smtp.url`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TlsMode {
    None,
    Opportunistic,
    StartTls,
    Implicit,
}

impl Mailer {
    /// The mailer `cfg` asks for. With a url it reads the CA file and sets up TLS (no
    /// connection is opened yet: a server that is down shows on the first send, as a
    /// transient outcome); without, it sends into `<data_dir>/mail/`, created on the first
    /// send.
    pub fn from_config(cfg: &SmtpConfig, data_dir: &Path) -> Result<Mailer, MailError> {
        if cfg.pool_size == 0 || cfg.timeout_secs == 0 {
            return Err(MailError::Limits);
        }
        let Some(url) = cfg.url.as_deref() else {
            let dir = data_dir.join("mail");
            let description = format!("emails are written as .eml files into {} (no smtp.url set)", dir.display());
            return Ok(Mailer { way: Way::Files { dir }, description });
        };
        let target = Target::parse(url)?;
        let trust = Trust::load(&target.host, cfg.ca_file.as_deref(), target.mode)?;
        let server = format!("{}://{}:{}", target.scheme, target.host_for_display(), target.port);
        let mut description = format!("emails go to {server} ({}", target.mode.describe());
        if let Some((user, _)) = &target.credentials {
            description.push_str(&format!(", auth as user {user}"));
        }
        if target.mode != TlsMode::None {
            match &cfg.ca_file {
                Some(ca) => description.push_str(&format!(", trusting the CA(s) in {}", ca.display())),
                None => description.push_str(", trusting the built-in Mozilla roots"),
            }
        }
        description.push_str(&format!("; up to {} connections, {} s a send)", cfg.pool_size, cfg.timeout_secs));
        let pool = Pool {
            credentials: target.credentials.as_ref().map(|(user, password)| Credentials::new(user.clone(), password.clone())),
            target,
            trust,
            hello: hello_name().unwrap_or_default(),
            timeout: Duration::from_secs(cfg.timeout_secs),
            idle: std::sync::Mutex::new(Vec::new()),
            permits: Semaphore::new(cfg.pool_size as usize),
            server,
        };
        Ok(Mailer { way: Way::Smtp(Box::new(pool)), description })
    }

    /// For the start-up log: where emails go, how, and as whom (never the password).
    pub fn describe(&self) -> String {
        self.description.clone()
    }

    /// Sends `message`, whose stable id is `id` (the notification's; it names the `.eml`
    /// file and appears in log lines, never the content). Safe to call concurrently: at most
    /// `smtp.pool_size` sends are on the way at once, the others wait their turn.
    pub async fn send(&self, message: &lettre::Message, id: &str) -> Outcome {
        match &self.way {
            Way::Files { dir } => write_eml(dir, id, message.formatted()).await,
            Way::Smtp(pool) => {
                let outcome = pool.send(message.envelope(), &message.formatted()).await;
                match &outcome {
                    Outcome::Accepted => tracing::debug!(id, "email accepted"),
                    Outcome::Transient(why) => tracing::debug!(id, why, "email deferred"),
                    Outcome::Permanent(why) => tracing::debug!(id, why, "email refused"),
                }
                outcome
            }
        }
    }
}

/// The connections to the SMTP server: at most `permits` in use, the idle ones kept for the
/// next send. Our own rather than lettre's pool, which (0.11) sends NOOP before every reuse,
/// caps only the idle connections (not the ones it opens) and hands a connection back in a
/// spawned task; and lettre's own connections leave Nagle's algorithm on, so the end of each
/// message (`.` in a write of its own) waits for the server's delayed ACK — 40 ms an email
/// on Linux. Here every connection is opened by us with TCP_NODELAY and handed to lettre's
/// `AsyncSmtpConnection`, which speaks SMTP on it.
struct Pool {
    target: Target,
    trust: Trust,
    credentials: Option<Credentials>,
    hello: ClientId,
    /// For one send: connecting (TLS and AUTH included) and the email until its answer.
    timeout: Duration,
    idle: std::sync::Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
    permits: Semaphore,
    /// `smtp://host:port`, for reasons.
    server: String,
}

/// How the server's certificate is checked: lettre's parameters for STARTTLS, a rustls
/// configuration for implicit TLS (its handshake is ours); both from the same roots.
enum Trust {
    None,
    StartTls(TlsParameters),
    Implicit(tokio_rustls::TlsConnector, ServerName<'static>),
}

impl Pool {
    async fn send(&self, envelope: &Envelope, email: &[u8]) -> Outcome {
        let Ok(_permit) = self.permits.acquire().await else {
            return Outcome::Transient("the mailer is shutting down".into());
        };
        match tokio::time::timeout(self.timeout, self.send_on_a_connection(envelope, email)).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::Transient(format!("{}: no answer within {} s (smtp.timeout_secs)", self.server, self.timeout.as_secs())),
        }
    }

    async fn send_on_a_connection(&self, envelope: &Envelope, email: &[u8]) -> Outcome {
        let mut conn = match self.idle_connection().await {
            Some(conn) => conn,
            None => match self.connect().await {
                Ok(conn) => conn,
                Err(outcome) => return outcome,
            },
        };
        match conn.send(envelope, email).await {
            Ok(_) => {
                self.park(conn);
                Outcome::Accepted
            }
            // lettre closes the connection on every error (QUIT): it is not kept.
            Err(e) => classify(&e, &self.server),
        }
    }

    /// The most recently used idle connection that still stands.
    async fn idle_connection(&self) -> Option<AsyncSmtpConnection> {
        loop {
            let (mut conn, since) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()?;
            let idle = since.elapsed();
            if idle > IDLE_MAX || conn.has_broken() {
                continue;
            }
            if idle < NOOP_AFTER || conn.test_connected().await {
                return Some(conn);
            }
        }
    }

    fn park(&self, conn: AsyncSmtpConnection) {
        if !conn.has_broken() {
            self.idle.lock().unwrap_or_else(|p| p.into_inner()).push((conn, Instant::now()));
        }
    }

    /// A new connection: TCP (no Nagle), implicit TLS or STARTTLS, EHLO, AUTH.
    async fn connect(&self) -> Result<AsyncSmtpConnection, Outcome> {
        let server = &self.server;
        let tcp = TcpStream::connect((self.target.host.as_str(), self.target.port)).await.map_err(|e| Outcome::Transient(format!("cannot connect to {server}: {e}")))?;
        tcp.set_nodelay(true).map_err(|e| Outcome::Transient(format!("{server}: {e}")))?;
        let stream: Box<dyn AsyncTokioStream> = match &self.trust {
            Trust::Implicit(connector, name) => match connector.connect(name.clone(), tcp).await {
                Ok(tls) => Box::new(ImplicitTls(tls)),
                Err(e) => return Err(tls_failure(&e, server)),
            },
            _ => Box::new(tcp),
        };
        let lettre_err = |e: lettre::transport::smtp::Error| classify(&e, server);
        let mut conn = AsyncSmtpConnection::connect_with_transport(stream, &self.hello).await.map_err(lettre_err)?;
        if let Trust::StartTls(params) = &self.trust
            && (self.target.mode == TlsMode::StartTls || conn.can_starttls())
        {
            conn.starttls(params.clone(), &self.hello).await.map_err(lettre_err)?;
        }
        if let Some(credentials) = &self.credentials {
            conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials).await.map_err(lettre_err)?;
        }
        Ok(conn)
    }
}

/// A TLS stream from the first byte, for lettre (which wants its own trait on the stream).
#[derive(Debug)]
struct ImplicitTls(tokio_rustls::client::TlsStream<TcpStream>);

impl AsyncRead for ImplicitTls {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ImplicitTls {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for ImplicitTls {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

impl Trust {
    /// Only the CAs of `ca_file` when it is given, else the compiled-in Mozilla roots.
    fn load(host: &str, ca_file: Option<&Path>, mode: TlsMode) -> Result<Trust, MailError> {
        let tls_err = |why: String| MailError::Tls { host: host.to_string(), why };
        let pem = match ca_file {
            Some(path) if mode != TlsMode::None => {
                let ca_err = |why: String| MailError::CaFile { path: path.to_path_buf(), why };
                let pem = std::fs::read(path).map_err(|e| ca_err(format!("cannot be read: {e}")))?;
                if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
                    return Err(ca_err("holds no PEM certificate (-----BEGIN CERTIFICATE-----): name the PEM file of the CA(s) that sign the SMTP server's certificate".into()));
                }
                Some((path, pem))
            }
            _ => None,
        };
        match mode {
            TlsMode::None => Ok(Trust::None),
            TlsMode::StartTls | TlsMode::Opportunistic => {
                let mut builder = TlsParameters::builder(host.to_string());
                match &pem {
                    Some((path, pem)) => {
                        let certificate = Certificate::from_pem(pem).map_err(|e| MailError::CaFile { path: path.to_path_buf(), why: format!("is not a usable PEM certificate bundle: {e}") })?;
                        builder = builder.certificate_store(CertificateStore::None).add_root_certificate(certificate);
                    }
                    None => builder = builder.certificate_store(CertificateStore::WebpkiRoots),
                }
                Ok(Trust::StartTls(builder.build_rustls().map_err(|e| tls_err(one_line(&e)))?))
            }
            TlsMode::Implicit => {
                let mut roots = rustls::RootCertStore::empty();
                match &pem {
                    Some((path, pem)) => {
                        let ca_err = |why: String| MailError::CaFile { path: path.to_path_buf(), why };
                        for cert in CertificateDer::pem_slice_iter(pem) {
                            let cert = cert.map_err(|_| ca_err("is not a readable PEM certificate bundle".into()))?;
                            roots.add(cert).map_err(|e| ca_err(format!("a CA certificate is not usable as a trust anchor: {e}")))?;
                        }
                    }
                    None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
                }
                let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                    .with_safe_default_protocol_versions()
                    .map_err(|e| tls_err(e.to_string()))?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                let name = ServerName::try_from(host.to_string()).map_err(|e| tls_err(format!("not a host name for TLS: {e}")))?;
                Ok(Trust::Implicit(tokio_rustls::TlsConnector::from(Arc::new(config)), name))
            }
        }
    }
}

/// A failed implicit-TLS handshake: transient, with what to check.
fn tls_failure(e: &std::io::Error, server: &str) -> Outcome {
    let detail = match crate::xta::tls::find_rustls_error(e) {
        Some(rustls_error) => rustls_error.to_string(),
        None => one_line(e),
    };
    Outcome::Transient(format!("TLS with {server} failed: {detail} (is smtp.ca_file the CA that signs the server's certificate, and does it name this host?)"))
}

/// Transient or permanent, from lettre's error: only the server's own 5xx is permanent.
/// Its 4xx, and everything on the way — no connection, a timeout, a refused certificate, no
/// STARTTLS offered, no AUTH mechanism in common, an unreadable answer — is transient: it
/// may pass, or an operator fixes a setting while the retries go on (and give up after
/// their time, like any transient fault).
fn classify(e: &lettre::transport::smtp::Error, server: &str) -> Outcome {
    let detail = one_line(e);
    if let Some(code) = e.status() {
        let text = e.source_text().unwrap_or_default();
        let why = format!("{server} answered {code}: {}", one_line_text(&text));
        return if e.is_permanent() { Outcome::Permanent(why) } else { Outcome::Transient(why) };
    }
    if e.is_tls() || is_tls_failure(e) {
        return Outcome::Transient(format!("TLS with {server} failed: {detail} (is smtp.ca_file the CA that signs the server's certificate, and does it name this host?)"));
    }
    Outcome::Transient(format!("{server}: {detail}"))
}

/// Whether a rustls error is among the causes (lettre reports a refused certificate as a
/// connection error; the io::Error it wraps holds the rustls error).
fn is_tls_failure(e: &(dyn std::error::Error + 'static)) -> bool {
    crate::xta::tls::find_rustls_error(e).is_some()
}

trait SourceText {
    fn source_text(&self) -> Option<String>;
}

impl SourceText for lettre::transport::smtp::Error {
    /// The server's text of a negative answer (lettre keeps it as the error's source).
    fn source_text(&self) -> Option<String> {
        std::error::Error::source(self).map(|s| s.to_string())
    }
}

/// An error and its causes on one line, capped.
fn one_line(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    // lettre nests its errors: "Connection error: Connection error: …" said once.
    let mut parts: Vec<&str> = Vec::new();
    for part in text.split(": ") {
        if parts.last().is_none_or(|last| !last.eq_ignore_ascii_case(part)) {
            parts.push(part);
        }
    }
    one_line_text(&parts.join(": "))
}

/// Control characters (the server's line breaks) as spaces, at most 300 characters.
fn one_line_text(text: &str) -> String {
    let flat: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let flat = flat.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &flat[..i]),
        None => flat,
    }
}

/// The EHLO name: the machine's host name when it can be read, else lettre's `[127.0.0.1]`.
fn hello_name() -> Option<ClientId> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    let fine = !name.is_empty() && name.len() <= 253 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    fine.then(|| ClientId::Domain(name.to_string()))
}

/// A parsed `smtp.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    scheme: &'static str,
    host: String,
    port: u16,
    mode: TlsMode,
    credentials: Option<(String, String)>,
}

impl Target {
    fn parse(text: &str) -> Result<Target, MailError> {
        // The error names the url without its password.
        let shown = redact(text);
        let bad = |why: &str| MailError::Url { url: shown.clone(), why: why.to_string() };
        let url = url::Url::parse(text.trim()).map_err(|e| bad(&format!("not a URL ({e}); expected smtp://host:port or smtps://host:port")))?;
        let (scheme, default_port, mut mode) = match url.scheme() {
            "smtp" => ("smtp", 587, TlsMode::StartTls),
            "smtps" => ("smtps", 465, TlsMode::Implicit),
            other => return Err(bad(&format!("unknown scheme {other:?}; use smtp:// (STARTTLS) or smtps:// (implicit TLS)"))),
        };
        let host = match url.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => d.to_string(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            _ => return Err(bad("no host")),
        };
        if !(url.path().is_empty() || url.path() == "/") || url.fragment().is_some() {
            return Err(bad("a path or fragment means nothing here; expected smtp://host:port"));
        }
        for (key, value) in url.query_pairs() {
            match (key.as_ref(), value.as_ref(), scheme) {
                ("tls", "none", "smtp") => mode = TlsMode::None,
                ("tls", "opportunistic", "smtp") => mode = TlsMode::Opportunistic,
                ("tls", "starttls", "smtp") => mode = TlsMode::StartTls,
                ("tls", "implicit", "smtps") => mode = TlsMode::Implicit,
                ("tls", _, "smtps") => return Err(bad("smtps:// is always implicit TLS; for STARTTLS or plain use smtp://")),
                ("tls", other, _) => return Err(bad(&format!("tls={other:?}: use tls=starttls (the default), tls=opportunistic or tls=none"))),
                (other, _, _) => return Err(bad(&format!("unknown parameter {other:?} (known: tls)"))),
            }
        }
        let credentials = if url.username().is_empty() {
            if url.password().is_some() {
                return Err(bad("a password without a user name"));
            }
            None
        } else {
            let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8().map(|c| c.into_owned()).map_err(|_| bad("the user name or password is not UTF-8 after percent-decoding"));
            Some((decode(url.username())?, decode(url.password().unwrap_or_default())?))
        };
        let target = Target { scheme, port: url.port().unwrap_or(default_port), host, mode, credentials };
        if target.credentials.is_some() && target.mode != TlsMode::StartTls && target.mode != TlsMode::Implicit && !target.is_loopback() {
            return Err(bad("AUTH over a connection that may be unencrypted would send the password in clear: use tls=starttls or smtps://"));
        }
        Ok(target)
    }

    fn is_loopback(&self) -> bool {
        self.host == "localhost" || self.host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    fn host_for_display(&self) -> String {
        if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() }
    }
}

impl TlsMode {
    fn describe(self) -> &'static str {
        match self {
            TlsMode::None => "plain, unencrypted",
            TlsMode::Opportunistic => "STARTTLS when offered, else unencrypted",
            TlsMode::StartTls => "STARTTLS",
            TlsMode::Implicit => "implicit TLS",
        }
    }
}

/// `text` with the password of its user info replaced by `***` (for messages and
/// `config check`).
pub fn redact(text: &str) -> String {
    match url::Url::parse(text.trim()) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("***"));
            url.to_string()
        }
        Ok(_) => text.trim().to_string(),
        // Unparsable: cut at the last '@' of the authority, which may hide a password.
        Err(_) => match text.rfind('@') {
            Some(at) => format!("…{}", &text[at..]),
            None => text.trim().to_string(),
        },
    }
}

/// The temporary files' numbers in this process.
static NEXT_TMP: AtomicU64 = AtomicU64::new(0);

/// Writes `<dir>/<file name of id>.eml` under a temporary name, synced, renamed into place
/// and the folder synced: the same id written twice leaves one whole file.
async fn write_eml(dir: &Path, id: &str, bytes: Vec<u8>) -> Outcome {
    let dir = dir.to_path_buf();
    let name = format!("{}.eml", file_name_of(id));
    let written = tokio::task::spawn_blocking(move || write_synced(&dir, &name, &bytes)).await;
    match written {
        Ok(Ok(())) => Outcome::Accepted,
        Ok(Err(why)) => Outcome::Transient(why),
        Err(e) => Outcome::Transient(format!("writing the .eml file did not finish: {e}")),
    }
}

fn write_synced(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create the mail folder {}: {e}", dir.display()))?;
    let tmp = dir.join(format!(".{name}.{}-{}.tmp", std::process::id(), NEXT_TMP.fetch_add(1, Ordering::Relaxed)));
    let target = dir.join(name);
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &target)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {}: {e}", target.display())
    })
}

/// A safe file name for `id`: letters, digits and `-_.+@=` kept, anything else `_`, no
/// leading dot, at most 150 characters; when that changed the id, 16 hex digits of its
/// SHA-256 are appended, so two different ids never share a file.
pub fn file_name_of(id: &str) -> String {
    use sha2::Digest;
    let mut name: String = id.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.+@=".contains(c) { c } else { '_' }).take(150).collect();
    if name.starts_with('.') {
        name.replace_range(..1, "_");
    }
    if name != id || name.is_empty() {
        let hash = sha2::Sha256::digest(id.as_bytes());
        name.push('-');
        name.push_str(&hex::encode(&hash[..8]));
    }
    name
}

// ---------------------------------------------------------------------------------------------
// Sessions for the notify stage: one email at a time in two steps (see mail::transport).

impl From<Outcome> for Result<(), Refusal> {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Accepted => Ok(()),
            Outcome::Transient(why) => Err(Refusal::Transient(why)),
            Outcome::Permanent(why) => Err(Refusal::Permanent(why)),
        }
    }
}

#[async_trait::async_trait]
impl Transport for Mailer {
    fn describe(&self) -> String {
        self.description.clone()
    }

    /// A connection of its own (the notify stage's senders each hold one; `Mailer::send`'s
    /// pool is not used for them), or the `.eml` folder.
    async fn open(&self) -> Result<Box<dyn Session>, Refusal> {
        match &self.way {
            Way::Files { dir } => Ok(Box::new(FileSession { dir: dir.clone(), id: None, unsettled: Vec::new() })),
            Way::Smtp(pool) => match tokio::time::timeout(pool.timeout, pool.connect()).await {
                Ok(Ok(conn)) => Ok(Box::new(SmtpSession { conn, timeout: pool.timeout, server: pool.server.clone(), broken: false })),
                Ok(Err(outcome)) => Err(Result::<(), Refusal>::from(outcome).err().unwrap_or_else(|| Refusal::Transient("no connection".into()))),
                Err(_) => Err(Refusal::Transient(format!("{}: no answer within {} s (smtp.timeout_secs)", pool.server, pool.timeout.as_secs()))),
            },
        }
    }
}

/// The `.eml` folder as a session: each email's file is written under a temporary name by
/// [`Session::finish`]; [`Session::settle`] syncs the batch's files together (concurrently:
/// the disk merges the flushes), renames them into place and syncs the folder once. A file
/// appears under its name only whole and on disk.
struct FileSession {
    dir: PathBuf,
    id: Option<String>,
    /// Written, not yet synced or in place: (the open file, its temporary path, its name).
    unsettled: Vec<(std::fs::File, PathBuf, PathBuf)>,
}

#[async_trait::async_trait]
impl Session for FileSession {
    async fn begin(&mut self, id: &str, _from: &str, _to: &[String], _content: &[u8]) -> Result<(), Refusal> {
        self.id = Some(id.to_owned());
        Ok(())
    }

    async fn finish(&mut self, content: &[u8]) -> Result<(), Refusal> {
        let Some(id) = self.id.take() else {
            return Err(Refusal::Permanent("content without a begun email".into()));
        };
        let (dir, bytes) = (self.dir.clone(), content.to_vec());
        match tokio::task::spawn_blocking(move || write_unsynced(&dir, &format!("{}.eml", file_name_of(&id)), &bytes)).await {
            Ok(Ok(file)) => {
                self.unsettled.push(file);
                Ok(())
            }
            Ok(Err(why)) => Err(Refusal::Transient(why)),
            Err(e) => Err(Refusal::Transient(format!("writing the .eml file did not finish: {e}"))),
        }
    }

    fn usable(&self) -> bool {
        true
    }

    fn defers(&self) -> bool {
        true
    }

    async fn settle(&mut self) -> Result<(), Refusal> {
        let files = std::mem::take(&mut self.unsettled);
        if files.is_empty() {
            return Ok(());
        }
        let mut syncs = tokio::task::JoinSet::new();
        for (file, tmp, target) in files {
            syncs.spawn_blocking(move || match file.sync_all() {
                Ok(()) => Ok((tmp, target)),
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    Err(format!("cannot write {}: {e}", target.display()))
                }
            });
        }
        let mut synced = Vec::new();
        let mut failed = None;
        while let Some(done) = syncs.join_next().await {
            match done {
                Ok(Ok(paths)) => synced.push(paths),
                Ok(Err(why)) => failed = Some(why),
                Err(e) => failed = Some(format!("syncing the .eml files did not finish: {e}")),
            }
        }
        let dir = self.dir.clone();
        let placed = tokio::task::spawn_blocking(move || {
            if let Some(why) = failed {
                for (tmp, _) in &synced {
                    let _ = std::fs::remove_file(tmp);
                }
                return Err(why);
            }
            let result = (|| {
                for (tmp, target) in &synced {
                    std::fs::rename(tmp, target)?;
                }
                std::fs::File::open(&dir)?.sync_all()
            })();
            result.map_err(|e| format!("cannot put the .eml files into {}: {e}", dir.display()))
        })
        .await;
        match placed {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => Err(Refusal::Transient(why)),
            Err(e) => Err(Refusal::Transient(format!("putting the .eml files in place did not finish: {e}"))),
        }
    }
}

/// `name`'s content written under a temporary name in `dir`, not synced: the open file, its
/// temporary path and its final path.
fn write_unsynced(dir: &Path, name: &str, bytes: &[u8]) -> Result<(std::fs::File, PathBuf, PathBuf), String> {
    use std::io::Write;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create the mail folder {}: {e}", dir.display()))?;
    let tmp = dir.join(format!(".{name}.{}-{}.tmp", std::process::id(), NEXT_TMP.fetch_add(1, Ordering::Relaxed)));
    let target = dir.join(name);
    let written = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        Ok::<_, std::io::Error>(file)
    })();
    match written {
        Ok(file) => Ok((file, tmp, target)),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(format!("cannot write {}: {e}", target.display()))
        }
    }
}

struct SmtpSession {
    conn: AsyncSmtpConnection,
    timeout: Duration,
    /// `smtp://host:port`, for reasons.
    server: String,
    broken: bool,
}

/// `f` within `timeout`; a failure classified as `Mailer::send` does. The flag says whether
/// it timed out (the connection is then of no more use).
async fn within<T>(
    timeout: Duration,
    server: &str,
    what: &str,
    f: impl std::future::Future<Output = Result<T, lettre::transport::smtp::Error>>,
) -> Result<T, (Refusal, bool)> {
    match tokio::time::timeout(timeout, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err((Result::<(), Refusal>::from(classify(&e, server)).err().unwrap_or_else(|| Refusal::Transient(format!("{what} failed"))), false)),
        Err(_) => Err((Refusal::Transient(format!("{server}: no answer to {what} within {} s (smtp.timeout_secs)", timeout.as_secs())), true)),
    }
}

impl SmtpSession {
    /// A failed step's refusal; a timeout leaves the connection unusable.
    fn failed(&mut self, (refused, timed_out): (Refusal, bool)) -> Refusal {
        self.broken |= timed_out;
        refused
    }

    /// After a refused command: the transaction reset (RSET), or the connection given up.
    async fn reset(&mut self) {
        use lettre::transport::smtp::commands::Rset;
        if self.broken || self.conn.has_broken() {
            self.broken = true;
            return;
        }
        let reset = tokio::time::timeout(self.timeout, self.conn.command(Rset)).await;
        if !matches!(reset, Ok(Ok(_))) {
            self.broken = true;
        }
    }
}

#[async_trait::async_trait]
impl Session for SmtpSession {
    async fn begin(&mut self, _id: &str, from: &str, to: &[String], content: &[u8]) -> Result<(), Refusal> {
        use lettre::Address;
        use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
        use lettre::transport::smtp::extension::{Extension, MailBodyParameter, MailParameter};
        let from: Address = from.parse().map_err(|e| Refusal::Permanent(format!("the From address {from:?} (mail.from): {e}")))?;
        let mut parameters = Vec::new();
        if !content.is_ascii() {
            if !self.conn.server_info().supports_feature(Extension::EightBitMime) {
                return Err(Refusal::Permanent(format!("{}: the email is not 7-bit and the server does not take 8BITMIME", self.server)));
            }
            parameters.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        let mut recipients = Vec::with_capacity(to.len());
        for rcpt in to {
            recipients.push(rcpt.parse::<Address>().map_err(|e| Refusal::Permanent(format!("the address {rcpt:?}: {e}")))?);
        }
        if let Err(e) = within(self.timeout, &self.server, "MAIL FROM", self.conn.command(Mail::new(Some(from), parameters))).await {
            let refused = self.failed(e);
            self.reset().await;
            return Err(refused);
        }
        for rcpt in recipients {
            if let Err(e) = within(self.timeout, &self.server, "RCPT TO", self.conn.command(Rcpt::new(rcpt, vec![]))).await {
                let refused = self.failed(e);
                self.reset().await;
                return Err(refused);
            }
        }
        if let Err(e) = within(self.timeout, &self.server, "DATA", self.conn.command(Data)).await {
            let refused = self.failed(e);
            self.reset().await;
            return Err(refused);
        }
        Ok(())
    }

    async fn finish(&mut self, content: &[u8]) -> Result<(), Refusal> {
        match within(self.timeout, &self.server, "the content", self.conn.message(content)).await {
            Ok(_) => Ok(()),
            Err(e) => {
                let refused = self.failed(e);
                // A lost connection or a "try later" after the content: a fresh one next.
                if refused.is_transient() {
                    self.broken = true;
                }
                Err(refused)
            }
        }
    }

    fn usable(&self) -> bool {
        !self.broken && !self.conn.has_broken()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<Target, String> {
        Target::parse(url).map_err(|e| e.to_string())
    }

    #[test]
    fn url_forms() {
        let t = parse("smtp://mail.example").unwrap();
        assert_eq!((t.scheme, t.host.as_str(), t.port, t.mode, t.credentials), ("smtp", "mail.example", 587, TlsMode::StartTls, None));
        let t = parse("smtp://127.0.0.1:2525?tls=none").unwrap();
        assert_eq!((t.port, t.mode), (2525, TlsMode::None));
        assert_eq!(parse("smtp://mail.example?tls=opportunistic").unwrap().mode, TlsMode::Opportunistic);
        let t = parse("smtps://mail.example").unwrap();
        assert_eq!((t.port, t.mode), (465, TlsMode::Implicit));
        let t = parse("smtp://amts%40bote:p%3Ass%20w@mail.example:587").unwrap();
        assert_eq!(t.credentials, Some(("amts@bote".into(), "p:ss w".into())));
        let t = parse("smtp://[::1]:25?tls=none").unwrap();
        assert_eq!((t.host.as_str(), t.host_for_display()), ("::1", "[::1]".to_string()));
    }

    #[test]
    fn urls_that_cannot_be_used_say_why_and_hide_the_password() {
        let e = parse("http://mail.example").unwrap_err();
        assert!(e.contains("smtps://"), "{e}");
        let e = parse("smtp://mail.example?tls=maybe").unwrap_err();
        assert!(e.contains("tls=starttls"), "{e}");
        let e = parse("smtp://mail.example?port=25").unwrap_err();
        assert!(e.contains("unknown parameter"), "{e}");
        let e = parse("smtps://mail.example?tls=none").unwrap_err();
        assert!(e.contains("implicit"), "{e}");
        let e = parse("smtp://u:secret@mail.example?tls=none").unwrap_err();
        assert!(e.contains("in clear") && !e.contains("secret"), "{e}");
        // On loopback a plain AUTH is allowed (a local relay, the tests).
        assert!(parse("smtp://u:secret@127.0.0.1:2525?tls=none").is_ok());
        let e = parse("smtp://u:secret@/x").unwrap_err();
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn file_names_are_safe_and_distinct() {
        assert_eq!(file_name_of("n-42-transmitted"), "n-42-transmitted");
        let a = file_name_of("../etc/passwd");
        assert!(!a.contains('/') && !a.starts_with('.'), "{a}");
        assert_ne!(file_name_of("a/b"), file_name_of("a_b"));
        assert_ne!(file_name_of("a/b"), file_name_of("a\\b"));
        assert!(!file_name_of("").is_empty());
        assert!(file_name_of(&"x".repeat(1000)).len() < 200);
    }

    #[test]
    fn server_text_becomes_one_short_line() {
        assert_eq!(one_line_text("4.7.1 try\r\nlater  again"), "4.7.1 try later again");
        assert!(one_line_text(&"y".repeat(1000)).chars().count() <= 301);
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir).map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default();
        names.sort();
        names
    }

    #[tokio::test]
    async fn a_batch_of_eml_files_appears_whole_once_settled() {
        let dir = tempfile::tempdir().unwrap();
        let mailer = Mailer::from_config(&SmtpConfig::default(), dir.path()).unwrap();
        let mut session = mailer.open().await.unwrap();
        assert!(session.defers(), "the .eml folder keeps a batch's files for good together");
        for (id, text) in [("r1-4-transmitted", "first"), ("r2-4-transmitted", "second")] {
            session.begin(id, "a@amtsbote.test", &["b@lemgo.test".to_string()], text.as_bytes()).await.unwrap();
            session.finish(text.as_bytes()).await.unwrap();
        }
        let mail = dir.path().join("mail");
        // Taken, not yet kept: no file under its name.
        assert!(names_in(&mail).iter().all(|n| !n.ends_with(".eml")), "{:?}", names_in(&mail));
        session.settle().await.unwrap();
        assert_eq!(names_in(&mail), vec!["r1-4-transmitted.eml".to_string(), "r2-4-transmitted.eml".to_string()], "both in place, no temporary file left");
        assert_eq!(std::fs::read_to_string(mail.join("r2-4-transmitted.eml")).unwrap(), "second");
        // Nothing taken since: settling again is nothing to do.
        session.settle().await.unwrap();
        assert_eq!(names_in(&mail).len(), 2);
    }
}
