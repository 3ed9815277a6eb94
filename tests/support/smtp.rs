//! The real SMTP server of the mail tests and the mail benchmark (included with `#[path]`):
//! `tests/support/smtp_server.py` (aiosmtpd, under Debian's /usr/bin/python3) on a free
//! loopback port, optionally with STARTTLS or implicit TLS (a test CA made by rcgen at test
//! time) and AUTH, killed when dropped. It stores every message it accepts; the fault rules
//! by recipient address (`fail451`, `fail451x2`, `fail550`, `fail552`, `@down.test`) are
//! documented at the top of the .py file.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;

/// Debian's python, which has python3-aiosmtpd (another python3 may come first on PATH).
pub const PYTHON: &str = "/usr/bin/python3";
pub const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/smtp_server.py");

/// The user and password of a server started with [`Options::auth`].
pub const USER: &str = "amtsbote";
pub const PASSWORD: &str = "geheim:123 %";

/// How the server talks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Security {
    #[default]
    Plain,
    StartTls,
    Implicit,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    pub tls: Security,
    /// AUTH required, with [`USER`] and [`PASSWORD`].
    pub auth: bool,
}

/// One message the server accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Its Message-ID header without `<>` ("" when it has none).
    pub message_id: String,
    pub mail_from: String,
    pub rcpt: Vec<String>,
    /// What came after DATA, as sent.
    pub raw: Vec<u8>,
}

/// The test PKI: a CA that signs the server's certificate (127.0.0.1, localhost) and an
/// unrelated CA.
pub struct Pki {
    pub ca: PathBuf,
    pub other_ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub struct SmtpServer {
    pub port: u16,
    pub options: Options,
    /// Where the accepted messages are (and the server's stderr, `server.log`).
    store: tempfile::TempDir,
    /// The certificates, when it speaks TLS.
    pub pki: Option<Pki>,
    _pki_dir: tempfile::TempDir,
    child: Option<Child>,
}

impl SmtpServer {
    /// Plain SMTP, no AUTH.
    pub fn start() -> SmtpServer {
        SmtpServer::with(Options::default())
    }

    pub fn starttls() -> SmtpServer {
        SmtpServer::with(Options { tls: Security::StartTls, auth: false })
    }

    pub fn implicit_tls() -> SmtpServer {
        SmtpServer::with(Options { tls: Security::Implicit, auth: false })
    }

    /// Started on a free port; returns once it accepts connections.
    pub fn with(options: Options) -> SmtpServer {
        let store = tempfile::tempdir().expect("a temp dir for the SMTP store");
        let pki_dir = tempfile::tempdir().expect("a temp dir for the certificates");
        let pki = (options.tls != Security::Plain).then(|| make_pki(pki_dir.path()));
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let mut server = SmtpServer { port, options, store, pki, _pki_dir: pki_dir, child: None };
        server.start_again();
        server
    }

    /// The `smtp.url` for a mailer: with the user and password when it requires AUTH.
    pub fn url(&self) -> String {
        self.url_as(USER, PASSWORD)
    }

    /// [`SmtpServer::url`] with other credentials (used only when it requires AUTH).
    pub fn url_as(&self, user: &str, password: &str) -> String {
        let credentials = if self.options.auth { format!("{}:{}@", encode(user), encode(password)) } else { String::new() };
        match self.options.tls {
            Security::Plain => format!("smtp://{credentials}127.0.0.1:{}?tls=none", self.port),
            Security::StartTls => format!("smtp://{credentials}127.0.0.1:{}", self.port),
            Security::Implicit => format!("smtps://{credentials}127.0.0.1:{}", self.port),
        }
    }

    /// The settings a mailer needs for it: the url and, with TLS, the test CA.
    pub fn config(&self) -> amtsbote::config::SmtpConfig {
        amtsbote::config::SmtpConfig { url: Some(self.url()), ca_file: self.pki.as_ref().map(|p| p.ca.clone()), ..Default::default() }
    }

    /// The server's process is gone: connections are refused until [`SmtpServer::start_again`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it (again) on the same port with the same store; returns once it accepts
    /// connections. Panics with the server's log when it does not come up.
    pub fn start_again(&mut self) {
        self.stop();
        let log_path = self.store.path().join("server.log");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).expect("the server log");
        let mut command = Command::new(PYTHON);
        command.arg(SCRIPT).arg("--port").arg(self.port.to_string()).arg("--store").arg(self.store.path());
        if let Some(pki) = &self.pki {
            let mode = if self.options.tls == Security::StartTls { "starttls" } else { "implicit" };
            command.args(["--tls", mode]).arg("--cert").arg(&pki.cert).arg("--key").arg(&pki.key);
        }
        if self.options.auth {
            command.arg("--auth").arg(format!("{USER}:{PASSWORD}"));
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {PYTHON} {SCRIPT}: {e} (scripts/test installs python3-aiosmtpd)"));
        let stdout = child.stdout.take().expect("its stdout");
        let (ready, wait) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = ready.send(line);
        });
        self.child = Some(child);
        match wait.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line.starts_with("READY") => {}
            other => {
                self.stop();
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!("the test SMTP server did not come up on port {} ({other:?}); its log:\n{log}\n(is python3-aiosmtpd installed for {PYTHON}? scripts/test installs it)", self.port);
            }
        }
    }

    /// Every message it accepted, oldest first.
    pub fn messages(&self) -> Vec<Received> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.store.path())
            .expect("the SMTP store")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("msg-") && n.ends_with(".json")))
            .collect();
        // msg-<ns>-<pid>-<n>.json: by time, then by its counter.
        names.sort_by_key(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default().trim_end_matches(".json").to_string();
            let parts: Vec<u128> = name.split('-').skip(1).filter_map(|x| x.parse().ok()).collect();
            parts
        });
        names
            .iter()
            .map(|path| {
                let text = std::fs::read_to_string(path).expect("a stored message");
                let value: serde_json::Value = serde_json::from_str(&text).expect("a stored message is JSON");
                let text_of = |key: &str| value[key].as_str().unwrap_or_default().to_string();
                Received {
                    message_id: text_of("message_id"),
                    mail_from: text_of("mail_from"),
                    rcpt: value["rcpt"].as_array().map(|a| a.iter().filter_map(|r| r.as_str().map(str::to_string)).collect()).unwrap_or_default(),
                    raw: base64::engine::general_purpose::STANDARD.decode(text_of("raw")).expect("base64"),
                }
            })
            .collect()
    }

    /// How often each Message-ID was accepted.
    pub fn count_by_message_id(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for m in self.messages() {
            *counts.entry(m.message_id).or_insert(0) += 1;
        }
        counts
    }

    /// Waits until it accepted at least `n` messages (at most `limit`); returns how many.
    pub fn wait_for_messages(&self, n: usize, limit: Duration) -> usize {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let count = self.messages().len();
            if count >= n || std::time::Instant::now() >= deadline {
                return count;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// How many connections it accepted (over all its starts).
    pub fn connections_opened(&self) -> usize {
        std::fs::read_to_string(self.store.path().join("connections")).ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0)
    }

    pub fn store(&self) -> &Path {
        self.store.path()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Percent-encodes what may not stand in a URL's user info.
fn encode(text: &str) -> String {
    text.bytes().map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

/// A test CA, the server's certificate signed by it, and an unrelated CA, as PEM files.
pub fn make_pki(dir: &Path) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let ca = |name: &str| {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().expect("a key");
        let cert = params.self_signed(&key).expect("a CA certificate");
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, cert.pem()).expect("write the CA");
        (path, Issuer::new(params, key))
    };
    let (ca_path, issuer) = ca("smtp-test-ca");
    let (other_ca, _) = ca("smtp-other-ca");
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).expect("server params");
    params.distinguished_name.push(DnType::CommonName, "smtp.test");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    let key = KeyPair::generate().expect("a key");
    let cert = params.signed_by(&key, &issuer).expect("the server certificate");
    let (cert_path, key_path) = (dir.join("smtp-server.pem"), dir.join("smtp-server.key"));
    std::fs::write(&cert_path, cert.pem()).expect("write the certificate");
    std::fs::write(&key_path, key.serialize_pem()).expect("write the key");
    Pki { ca: ca_path, other_ca, cert: cert_path, key: key_path }
}
