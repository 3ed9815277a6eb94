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
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use tokio::sync::Semaphore;

use crate::config::SmtpConfig;

/// What became of one email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The server took it (2xx after DATA), or the `.eml` file is on disk.
    Accepted,
    /// Try again later: a 4xx answer, no connection, a timeout, a failed TLS handshake (the
    /// certificate, no STARTTLS offered), an error writing the file. One line for operators: the code and the server's text.
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
    #[error("the mailer must be built inside the tokio runtime (lettre's connection pool starts a task)")]
    NoRuntime,
}

/// Sends emails; one per process, shared by the notify stage's tasks.
pub struct Mailer {
    way: Way,
    description: String,
}

enum Way {
    /// The embedded default: one `.eml` file per id in this folder.
    Files { dir: PathBuf },
    /// One pooled transport; `permits` holds the sends in flight to `pool_size` (lettre's
    /// pool caps the idle connections it keeps, not the ones it opens).
    /// `transport` is `None` only while the mailer is dropped (see `Drop`).
    Smtp { transport: Option<AsyncSmtpTransport<Tokio1Executor>>, permits: Semaphore, overall: Duration, server: String },
}

/// lettre's pool spawns a task when it is dropped, which panics outside a tokio runtime:
/// there (the end of `main`, after the runtime) it is left to the process's exit instead.
impl Drop for Mailer {
    fn drop(&mut self) {
        if let Way::Smtp { transport, .. } = &mut self.way
            && tokio::runtime::Handle::try_current().is_err()
        {
            std::mem::forget(transport.take());
        }
    }
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
    /// The mailer `cfg` asks for. With a url it builds the pooled transport (no connection
    /// is opened yet: a server that is down shows on the first send, as a transient
    /// outcome); without, it sends into `<data_dir>/mail/`, created on the first send.
    pub fn from_config(cfg: &SmtpConfig, data_dir: &Path) -> Result<Mailer, MailError> {
        if cfg.pool_size == 0 || cfg.timeout_secs == 0 {
            return Err(MailError::Limits);
        }
        let Some(url) = cfg.url.as_deref() else {
            let dir = data_dir.join("mail");
            let description = format!("emails are written as .eml files into {} (no smtp.url set)", dir.display());
            return Ok(Mailer { way: Way::Files { dir }, description });
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(MailError::NoRuntime);
        }
        let target = Target::parse(url)?;
        let tls = match target.mode {
            TlsMode::None => Tls::None,
            mode => {
                let params = tls_parameters(&target.host, cfg.ca_file.as_deref())?;
                match mode {
                    TlsMode::Opportunistic => Tls::Opportunistic(params),
                    TlsMode::StartTls => Tls::Required(params),
                    _ => Tls::Wrapper(params),
                }
            }
        };
        let timeout = Duration::from_secs(cfg.timeout_secs);
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(target.host.clone())
            .port(target.port)
            .tls(tls)
            .timeout(Some(timeout))
            .pool_config(PoolConfig::new().max_size(cfg.pool_size));
        if let Some(name) = hello_name() {
            builder = builder.hello_name(name);
        }
        if let Some((user, password)) = &target.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone())).authentication(vec![Mechanism::Plain, Mechanism::Login]);
        }
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
        description.push_str(&format!("; up to {} connections, {} s timeout)", cfg.pool_size, cfg.timeout_secs));
        // Each step (connect, greeting, STARTTLS, AUTH, MAIL, RCPT, DATA) has `timeout`; the
        // whole send is bounded too, so a server that answers by the drop cannot hold a task.
        let overall = timeout * 4;
        Ok(Mailer { way: Way::Smtp { transport: Some(builder.build()), permits: Semaphore::new(cfg.pool_size as usize), overall, server }, description })
    }

    /// For the start-up log: where emails go, how, and as whom (never the password).
    pub fn describe(&self) -> String {
        self.description.clone()
    }

    /// Sends `message`, whose stable id is `id` (the notification's; it names the `.eml`
    /// file and appears in log lines, never the content). Safe to call concurrently.
    pub async fn send(&self, message: &lettre::Message, id: &str) -> Outcome {
        match &self.way {
            Way::Files { dir } => write_eml(dir, id, message.formatted()).await,
            Way::Smtp { transport, permits, overall, server } => {
                let (Ok(_permit), Some(transport)) = (permits.acquire().await, transport.as_ref()) else {
                    return Outcome::Transient("the mailer is shutting down".into());
                };
                let sent = tokio::time::timeout(*overall, transport.send_raw(message.envelope(), &message.formatted())).await;
                let outcome = match sent {
                    Ok(Ok(_)) => Outcome::Accepted,
                    Ok(Err(e)) => classify(&e, server),
                    Err(_) => Outcome::Transient(format!("{server}: no answer within {} s", overall.as_secs())),
                };
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
    let mut next = Some(e);
    while let Some(s) = next {
        if s.is::<rustls::Error>() {
            return true;
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && io.get_ref().is_some_and(|inner| inner.is::<rustls::Error>())
        {
            return true;
        }
        next = s.source();
    }
    false
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

/// The trust for the server's certificate: only `ca_file` when it is given, else the
/// compiled-in Mozilla roots.
fn tls_parameters(host: &str, ca_file: Option<&Path>) -> Result<TlsParameters, MailError> {
    let tls_err = |why: String| MailError::Tls { host: host.to_string(), why };
    let mut builder = TlsParameters::builder(host.to_string());
    match ca_file {
        Some(path) => {
            let ca_err = |why: String| MailError::CaFile { path: path.to_path_buf(), why };
            let pem = std::fs::read(path).map_err(|e| ca_err(format!("cannot be read: {e}")))?;
            if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
                return Err(ca_err("holds no PEM certificate (-----BEGIN CERTIFICATE-----): name the PEM file of the CA(s) that sign the SMTP server's certificate".into()));
            }
            let certificate = Certificate::from_pem(&pem).map_err(|e| ca_err(format!("is not a usable PEM certificate bundle: {e}")))?;
            builder = builder.certificate_store(CertificateStore::None).add_root_certificate(certificate);
        }
        None => builder = builder.certificate_store(CertificateStore::WebpkiRoots),
    }
    builder.build_rustls().map_err(|e| tls_err(one_line(&e)))
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
    static NEXT: AtomicU64 = AtomicU64::new(0);
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create the mail folder {}: {e}", dir.display()))?;
    let tmp = dir.join(format!(".{name}.{}-{}.tmp", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
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
}
