//! How an email leaves: a [`Transport`] opens [`Session`]s, and a session hands over one
//! email at a time in two steps — [`Session::begin`] (everything up to the server's "go
//! ahead" for the content: MAIL FROM, RCPT TO, DATA) and [`Session::finish`] (the content,
//! and the server's answer). The notify stage records in the ledger between the two that the
//! content is about to go (see `ledger::mail`): that is what lets a crash at any point send
//! nothing twice. lettre's pooled transport sends in one call and leaves no such point, so
//! the sessions here drive lettre's SMTP connection command by command.
//!
//! Two transports: [`SmtpTransport`] (lettre's SMTP client: plain, STARTTLS or implicit TLS
//! over rustls, optional AUTH), and [`EmlFiles`] — the embedded default — which writes each
//! email as `<id>.eml` into a folder (under a temporary name, synced, renamed: the same id
//! written twice leaves one file).

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;

/// Why an email was not accepted, as the sender acts on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Try again later: a 4xx answer, the server unreachable, a connection lost, a timeout.
    #[error("{0}")]
    Transient(String),
    /// Do not try again: a 5xx answer, an address the server refuses, a bad configuration.
    #[error("{0}")]
    Permanent(String),
}

impl Refusal {
    pub fn is_transient(&self) -> bool {
        matches!(self, Refusal::Transient(_))
    }
}

/// Where emails go.
#[async_trait]
pub trait Transport: Send + Sync {
    /// For the start-up log: where emails go (never a password).
    fn describe(&self) -> String;

    /// A session to hand over emails one after the other (an SMTP connection).
    async fn open(&self) -> Result<Box<dyn Session>, Refusal>;
}

/// One connection's worth of emails, handed over one at a time.
#[async_trait]
pub trait Session: Send {
    /// Everything before the content; `Ok` when the server waits for it.
    async fn begin(&mut self, id: &str, from: &str, to: &[String]) -> Result<(), Refusal>;

    /// The content (the whole RFC 5322 message), and the server's answer to it.
    async fn finish(&mut self, content: &[u8]) -> Result<(), Refusal>;

    /// Whether the session can be used for the next email (false after a lost connection
    /// or an answer that leaves the server's state unknown).
    fn usable(&self) -> bool;
}

// ---------------------------------------------------------------------------------------------
// .eml files: the embedded default.

/// Writes each email as `<id>.eml` into `dir`.
pub struct EmlFiles {
    dir: PathBuf,
}

impl EmlFiles {
    pub fn new(dir: impl Into<PathBuf>) -> EmlFiles {
        EmlFiles { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[async_trait]
impl Transport for EmlFiles {
    fn describe(&self) -> String {
        format!("emails are written as .eml files into {} (no smtp.url is set)", self.dir.display())
    }

    async fn open(&self) -> Result<Box<dyn Session>, Refusal> {
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| Refusal::Transient(format!("cannot create {}: {e}", self.dir.display())))?;
        Ok(Box::new(EmlSession { dir: self.dir.clone(), id: None }))
    }
}

struct EmlSession {
    dir: PathBuf,
    id: Option<String>,
}

#[async_trait]
impl Session for EmlSession {
    async fn begin(&mut self, id: &str, _from: &str, _to: &[String]) -> Result<(), Refusal> {
        self.id = Some(file_stem(id));
        Ok(())
    }

    async fn finish(&mut self, content: &[u8]) -> Result<(), Refusal> {
        let Some(stem) = self.id.take() else {
            return Err(Refusal::Permanent("content without a begun email".into()));
        };
        let (dir, content) = (self.dir.clone(), content.to_vec());
        tokio::task::spawn_blocking(move || write_atomically(&dir, &stem, &content))
            .await
            .map_err(|e| Refusal::Transient(format!("writing the .eml file stopped: {e}")))?
            .map_err(|e| Refusal::Transient(format!("cannot write the .eml file: {e}")))
    }

    fn usable(&self) -> bool {
        true
    }
}

/// An id as a file name: letters, digits, `.`, `-` and `_` kept, anything else `_`.
fn file_stem(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' }).collect()
}

/// `<dir>/<stem>.eml`, whole or not at all: a temporary file, synced, renamed, the folder
/// synced.
fn write_atomically(dir: &Path, stem: &str, content: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let target = dir.join(format!("{stem}.eml"));
    let temp = dir.join(format!(".{stem}.{}.part", std::process::id()));
    {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(content)?;
        file.sync_all()?;
    }
    std::fs::rename(&temp, &target)?;
    std::fs::File::open(dir)?.sync_all()
}

// ---------------------------------------------------------------------------------------------
// SMTP.

/// How the connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// Plain text (loopback, tests).
    None,
    /// STARTTLS, required: no email goes out unencrypted if the server does not offer it.
    StartTls,
    /// TLS from the first byte (`smtps://`, port 465).
    Implicit,
}

/// Where and how to reach the SMTP server.
#[derive(Clone)]
pub struct SmtpEndpoint {
    pub host: String,
    pub port: u16,
    pub security: Security,
    /// The TLS settings (trusted roots, the name checked), when `security` is not `None`.
    pub tls: Option<lettre::transport::smtp::client::TlsParameters>,
    /// AUTH (PLAIN or LOGIN), when given.
    pub credentials: Option<(String, String)>,
    /// Longest wait for connecting and for each answer.
    pub timeout: Duration,
    /// Our name in EHLO.
    pub hello: String,
}

/// lettre's SMTP client, command by command.
pub struct SmtpTransport {
    endpoint: SmtpEndpoint,
}

impl SmtpTransport {
    pub fn new(endpoint: SmtpEndpoint) -> SmtpTransport {
        SmtpTransport { endpoint }
    }
}

/// A failed SMTP step as a [`Refusal`]: 5xx permanent; 4xx, network, timeouts, TLS
/// transient.
fn refusal(step: &str, e: &lettre::transport::smtp::Error) -> Refusal {
    let text = format!("{step}: {e}").replace(['\r', '\n'], " ");
    if e.is_permanent() { Refusal::Permanent(text) } else { Refusal::Transient(text) }
}

#[async_trait]
impl Transport for SmtpTransport {
    fn describe(&self) -> String {
        let e = &self.endpoint;
        let security = match e.security {
            Security::None => "no TLS",
            Security::StartTls => "STARTTLS",
            Security::Implicit => "implicit TLS",
        };
        let auth = e.credentials.as_ref().map_or(String::new(), |(user, _)| format!(", AUTH as {user}"));
        format!("emails go to the SMTP server {}:{} ({security}{auth})", e.host, e.port)
    }

    async fn open(&self) -> Result<Box<dyn Session>, Refusal> {
        use lettre::transport::smtp::authentication::{Credentials, Mechanism};
        use lettre::transport::smtp::client::AsyncSmtpConnection;
        use lettre::transport::smtp::extension::ClientId;
        let e = &self.endpoint;
        let hello = ClientId::Domain(e.hello.clone());
        let implicit = if e.security == Security::Implicit { e.tls.clone() } else { None };
        let connect = AsyncSmtpConnection::connect_tokio1((e.host.as_str(), e.port), Some(e.timeout), &hello, implicit, None);
        let mut conn = tokio::time::timeout(e.timeout + Duration::from_secs(1), connect)
            .await
            .map_err(|_| Refusal::Transient(format!("connect to {}:{}: no answer within {:?}", e.host, e.port, e.timeout)))?
            .map_err(|err| refusal(&format!("connect to {}:{}", e.host, e.port), &err))?;
        if e.security == Security::StartTls {
            let Some(tls) = e.tls.clone() else {
                return Err(Refusal::Permanent("STARTTLS without TLS settings".into()));
            };
            if !conn.can_starttls() {
                return Err(Refusal::Transient(format!("{}:{} does not offer STARTTLS, which smtp.url requires", e.host, e.port)));
            }
            within(e.timeout, "STARTTLS", conn.starttls(tls, &hello)).await?;
        }
        if let Some((user, password)) = &e.credentials {
            let credentials = Credentials::new(user.clone(), password.clone());
            within(e.timeout, "AUTH", conn.auth(&[Mechanism::Plain, Mechanism::Login], &credentials)).await?;
        }
        Ok(Box::new(SmtpSession { conn, timeout: e.timeout, broken: false }))
    }
}

/// `step` within `timeout`, its failure as a refusal.
async fn within<T>(
    timeout: Duration,
    step: &str,
    f: impl std::future::Future<Output = Result<T, lettre::transport::smtp::Error>>,
) -> Result<T, Refusal> {
    match tokio::time::timeout(timeout, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(refusal(step, &e)),
        Err(_) => Err(Refusal::Transient(format!("{step}: no answer within {timeout:?}"))),
    }
}

struct SmtpSession {
    conn: lettre::transport::smtp::client::AsyncSmtpConnection,
    timeout: Duration,
    broken: bool,
}

impl SmtpSession {
    /// After a refused step the server's transaction is reset (RSET), or the connection is
    /// given up when that fails too.
    async fn reset_after(&mut self, refused: Refusal) -> Refusal {
        use lettre::transport::smtp::commands::Rset;
        if self.conn.has_broken() || within(self.timeout, "RSET", self.conn.command(Rset)).await.is_err() {
            self.broken = true;
        }
        refused
    }
}

#[async_trait]
impl Session for SmtpSession {
    async fn begin(&mut self, _id: &str, from: &str, to: &[String]) -> Result<(), Refusal> {
        use lettre::Address;
        use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
        let from: Address = from.parse().map_err(|e| Refusal::Permanent(format!("the From address {from:?}: {e}")))?;
        let step = within(self.timeout, "MAIL FROM", self.conn.command(Mail::new(Some(from), vec![]))).await;
        if let Err(refused) = step {
            return Err(self.reset_after(refused).await);
        }
        for rcpt in to {
            let address: Address = match rcpt.parse() {
                Ok(a) => a,
                Err(e) => return Err(self.reset_after(Refusal::Permanent(format!("the address {rcpt:?}: {e}"))).await),
            };
            if let Err(refused) = within(self.timeout, "RCPT TO", self.conn.command(Rcpt::new(address, vec![]))).await {
                return Err(self.reset_after(refused).await);
            }
        }
        if let Err(refused) = within(self.timeout, "DATA", self.conn.command(Data)).await {
            return Err(self.reset_after(refused).await);
        }
        Ok(())
    }

    async fn finish(&mut self, content: &[u8]) -> Result<(), Refusal> {
        match within(self.timeout, "content", self.conn.message(content)).await {
            Ok(_) => Ok(()),
            Err(refused) => {
                // After the content the transaction is over either way; a lost connection
                // or a timeout leaves the connection unusable.
                if self.conn.has_broken() || refused.is_transient() {
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
