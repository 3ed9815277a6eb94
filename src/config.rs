//! Configuration: one TOML file plus `AMTSBOTE_*` environment variables, over built-in
//! defaults that run the embedded mode under `./amtsbote-data` with no file at all.
//!
//! Unknown keys are errors, in the file and in the environment (`AMTSBOTE_HTTP_LISEN` is a
//! typo, not a setting to ignore). Variables starting with `AMTSBOTE_TEST_` belong to the
//! test suite and are not read here. A variable names its section and key:
//! `AMTSBOTE_DATA_DIR`, `AMTSBOTE_LEDGER_URL`, `AMTSBOTE_HTTP_LISTEN`,
//! `AMTSBOTE_MESSAGES_MIN_AMOUNT`, `AMTSBOTE_INTAKE_POLL_INTERVAL_MS`, …; lists are
//! comma-separated (`AMTSBOTE_MESSAGES_NAMESPACES=xAmtshilfe110,xAmtshilfe120`).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::xamtshilfe::{Cents, Checker, CodeLists, Limits, ReaderConfig, Validator};

/// The whole configuration, as `amtsbote config check` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where everything lives in embedded mode: databases, inbox folders, overrides of the
    /// compiled-in jobs, templates and code lists.
    pub data_dir: PathBuf,
    pub ledger: LedgerConfig,
    pub queue: QueueConfig,
    pub http: HttpConfig,
    pub messages: MessagesConfig,
    pub intake: IntakeConfig,
    pub xta: XtaConfig,
    pub print: PrintConfig,
    pub mail: MailConfig,
    pub smtp: SmtpConfig,
    /// The authorities using this installation. Empty: one sample tenant, `demo`.
    pub tenants: Vec<Tenant>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerConfig {
    /// `sqlite:PATH` or `postgres://…`; default `sqlite:<data_dir>/ledger.sqlite`.
    pub url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// SQLite file of the job queues; default `<data_dir>/queue.sqlite`.
    pub url: Option<String>,
    /// Finished jobs (done, or killed) are deleted this many hours after they ended
    /// (hourly, by `serve`); dead jobs are kept until an operator acts. The ledger keeps
    /// every request's history; a finished job holds nothing more. Default 168 (a week).
    pub keep_finished_hours: u64,
    /// How often the relay looks for triggers written by other processes (its own it
    /// pushes at once). Default 250 ms.
    pub relay_poll_ms: u64,
    /// A request that has waited this long in a stage's input state with neither a trigger
    /// nor a job is triggered again by the sweeper. Default 300 s.
    pub sweep_after_secs: u64,
    /// How often the sweeper looks. Default 60 s.
    pub sweep_interval_secs: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig { url: None, keep_finished_hours: 168, relay_poll_ms: 250, sweep_after_secs: 300, sweep_interval_secs: 60 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub listen: String,
    /// Largest accepted request body (default: the message size limit).
    pub max_body_bytes: Option<u64>,
    /// A client must send a request's headers within this time, or the connection is
    /// closed; an idle keep-alive connection is closed after it too.
    pub header_timeout_ms: u64,
    /// A client must send a request's body within this time, or it gets 408 and nothing
    /// is recorded. Long enough for the largest message over a slow line.
    pub body_timeout_ms: u64,
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// Connections one client address may hold open at once; more are closed at once, so
    /// one client stalling its bodies cannot take every connection (`/healthz` and the other
    /// clients keep being served).
    pub max_connections_per_client: usize,
    /// Bytes of request bodies held at once, over all requests in flight (each counted at
    /// its announced length, or at `max_body_bytes` when it announces none): beyond it, 503
    /// with Retry-After, so a burst of large posts cannot take the memory.
    pub max_bytes_in_flight: u64,
    /// HTTPS instead of HTTP: the server's certificate chain (PEM, leaf first), with
    /// `tls_key`. Unset: plain HTTP (listen on loopback or behind a proxy that speaks TLS).
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, RSA or SEC1).
    pub tls_key: Option<PathBuf>,
}

impl HttpConfig {
    /// The TLS settings of the server, when `tls_cert` and `tls_key` are set.
    pub fn server_tls(&self) -> Option<crate::xta::tls::ServerTls> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(crate::xta::tls::ServerTls::named(("http.tls_cert", cert.clone()), ("http.tls_key", key.clone()))),
            _ => None,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: None,
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            max_connections: 1_024,
            max_connections_per_client: 64,
            max_bytes_in_flight: 256 * 1024 * 1024,
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// How messages are read and checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MessagesConfig {
    pub namespaces: Vec<String>,
    /// Smallest total of a request, in EUR (`"36.00"`).
    pub min_amount: String,
    pub max_bytes: u64,
    pub max_depth: usize,
    pub max_attributes: usize,
    /// Most debtors, claims, measures and attachments in one message (defaults 100, 1,000,
    /// 100, 100): reading stops at the cap.
    pub max_debtors: usize,
    pub max_claims: usize,
    pub max_measures: usize,
    pub max_attachments: usize,
    /// Reasons listed for one rejected message; the rest are counted ("… and 1,234 more").
    pub max_reasons: usize,
    /// The longest text per element, in characters, where it should differ from the XSD's
    /// `maxLength` (`[messages.max_length]`, e.g. `familienname = 300`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub max_length: std::collections::BTreeMap<String, u32>,
    /// Genericode files replacing the built-in code lists; default `<data_dir>/codelists`.
    pub codelists_dir: Option<PathBuf>,
}

impl Default for MessagesConfig {
    fn default() -> Self {
        let limits = Limits::default();
        MessagesConfig {
            namespaces: vec![crate::xamtshilfe::read::DEFAULT_NAMESPACE.into()],
            min_amount: "36.00".into(),
            max_bytes: limits.max_bytes,
            max_depth: limits.max_depth,
            max_attributes: limits.max_attributes,
            max_debtors: limits.max_debtors,
            max_claims: limits.max_claims,
            max_measures: limits.max_measures,
            max_attachments: limits.max_attachments,
            max_reasons: crate::xamtshilfe::validate::DEFAULT_MAX_REASONS,
            max_length: Default::default(),
            codelists_dir: None,
        }
    }
}

/// The inbox watcher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntakeConfig {
    /// How often the inbox folders are scanned.
    pub poll_interval_ms: u64,
    /// A file is taken only when its size and mtime did not change between two scans at
    /// least this far apart. Short, so a request is taken in at once: a slower writer (a
    /// network share) is covered by `incomplete_wait_secs`, not by a long settle time.
    pub settle_ms: u64,
    /// The file names taken in (`*` and `?`, without regard to case). Other files are left
    /// in the inbox and reported.
    pub patterns: Vec<String>,
    /// A claimed file that looks cut off (no end of its root element) and was written to
    /// less than this long ago is waited for, not rejected.
    pub incomplete_wait_secs: u64,
    /// An error reading a claimed file that may pass (permission denied, too many open
    /// files, I/O error) is retried this long before the file is rejected as unreadable.
    pub read_retry_secs: u64,
    /// The bytes of a rejected message kept in the ledger (its first ones); the rest is
    /// dropped, its size and SHA-256 recorded.
    pub keep_rejected_bytes: usize,
}

impl Default for IntakeConfig {
    fn default() -> Self {
        IntakeConfig { poll_interval_ms: 200, settle_ms: 100, patterns: vec!["*.xml".into()], incomplete_wait_secs: 600, read_retry_secs: 600, keep_rejected_bytes: 64 * 1024 }
    }
}

/// The XTA 2 server requests are sent to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct XtaConfig {
    /// The server's base URL (its ports under `/ManagementPort`, `/SendXtaPort`,
    /// `/MsgBoxPort`). Unset: `serve` starts the built-in simulator on loopback and sends
    /// there (the embedded default; nothing leaves the machine).
    pub url: Option<String>,
    /// Time to open a connection.
    pub connect_timeout_ms: u64,
    /// Time for a whole answer; a slower one is a transient failure, tried again.
    pub response_timeout_ms: u64,
    /// Calls in flight to the server at once, from all stages of this process together.
    pub max_connections: u32,
    /// The circuit breaker: after this many transient failures in a row (no answer, 5xx, a
    /// technical fault) the server gets no calls for `breaker_open_secs`, then one probe; a
    /// failed probe doubles the pause, up to `breaker_max_open_secs`.
    pub breaker_failures: u32,
    pub breaker_open_secs: u64,
    pub breaker_max_open_secs: u64,
    /// How often a reader whose availability the server does not know (lookupService:
    /// unknown) is asked before the request goes by post.
    pub unknown_availability_attempts: u32,
    /// A request whose transmission failed for good (a permanent fault, or every attempt of
    /// `jobs/transmit.toml` used up) goes to print (`true`) or stays `failed` for an
    /// operator (`false`).
    pub print_when_failed: bool,
    /// For an `https://` url (required there): a PEM bundle of the CA(s) that sign the
    /// server's certificate. Only these are trusted, no system roots.
    pub ca_file: Option<PathBuf>,
    /// The client certificate for mutual TLS: a PEM chain, leaf first. With `client_key`.
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM: PKCS#8, RSA or SEC1).
    pub client_key: Option<PathBuf>,
    /// The receive stage looks into the message boxes this often instead of on the
    /// `[schedule]` of `jobs/receive.toml` (unset: the schedule, every five minutes as
    /// shipped). For tests and for installations that want answers within seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receive_interval_ms: Option<u64>,
}

impl Default for XtaConfig {
    fn default() -> Self {
        XtaConfig {
            url: None,
            connect_timeout_ms: 10_000,
            response_timeout_ms: 60_000,
            max_connections: 16,
            breaker_failures: 5,
            breaker_open_secs: 10,
            breaker_max_open_secs: 300,
            unknown_availability_attempts: 3,
            print_when_failed: true,
            ca_file: None,
            client_cert: None,
            client_key: None,
            receive_interval_ms: None,
        }
    }
}

impl XtaConfig {
    /// The TLS settings for the client, when `ca_file` is set.
    pub fn client_tls(&self) -> Option<crate::xta::ClientTls> {
        let tls = crate::xta::ClientTls::new(self.ca_file.clone()?);
        Some(match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => tls.with_client_cert(cert, key),
            _ => tls,
        })
    }

    /// What `complete` checks without reading any file: https needs a CA, a client
    /// certificate needs its key and the other way round.
    fn check(&self) -> anyhow::Result<()> {
        if self.connect_timeout_ms == 0 || self.response_timeout_ms == 0 {
            bail!("xta.connect_timeout_ms and xta.response_timeout_ms must be at least 1");
        }
        if self.max_connections == 0 || self.breaker_failures == 0 || self.breaker_open_secs == 0 || self.unknown_availability_attempts == 0 {
            bail!("xta.max_connections, xta.breaker_failures, xta.breaker_open_secs and xta.unknown_availability_attempts must be at least 1");
        }
        if self.breaker_max_open_secs < self.breaker_open_secs {
            bail!("xta.breaker_max_open_secs must not be less than xta.breaker_open_secs");
        }
        if let Some(url) = &self.url
            && url.trim_start().to_ascii_lowercase().starts_with("https://")
            && self.ca_file.is_none()
        {
            bail!("xta.url is https, but xta.ca_file is not set: name the PEM file of the CA(s) that sign the XTA server's certificate");
        }
        match (&self.client_cert, &self.client_key) {
            (Some(cert), None) => bail!("xta.client_cert ({}) is set, but xta.client_key is not", cert.display()),
            (None, Some(key)) => bail!("xta.client_key ({}) is set, but xta.client_cert is not", key.display()),
            _ => {}
        }
        if self.client_cert.is_some() && self.ca_file.is_none() {
            bail!("xta.client_cert is set, but xta.ca_file is not: a client certificate is only presented over https, which needs the CA");
        }
        Ok(())
    }
}

/// The nightly print batches (src/print).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrintConfig {
    /// Where finished batch files (PDF and manifests) are handed to the print centre;
    /// default `<data_dir>/print/handoff`. Test messages never go here: they go to
    /// `<data_dir>/print/test`.
    pub handoff_dir: Option<PathBuf>,
    /// Letters per PDF file of a batch.
    pub letters_per_file: u32,
}

impl Default for PrintConfig {
    fn default() -> Self {
        PrintConfig { handoff_dir: None, letters_per_file: 500 }
    }
}

impl PrintConfig {
    /// The handoff folder, with the default filled in from `data_dir`.
    pub fn handoff(&self, data_dir: &Path) -> PathBuf {
        self.handoff_dir.clone().unwrap_or_else(|| data_dir.join("print/handoff"))
    }
}

/// The notifications (src/mail): who an email is from, whom to call, and how long a "try
/// later" is tried again. Where emails go is `[smtp]`; how many go out at once and the
/// spacing of retries are in `jobs/notify.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailConfig {
    /// The From address; default `amtsbote@<this machine's name>`.
    pub from: Option<String>,
    /// Whom a requester calls when a request needs a person (unroutable, failed): a line such
    /// as "Leitstelle Vollstreckungshilfe, Tel. 05261 213-0, vollstreckung@lemgo.de".
    pub contact: Option<String>,
    /// The right part of every Message-ID (`<r42-7-transmitted@…>`); default the From
    /// address's domain.
    pub message_id_domain: Option<String>,
    /// After this long without acceptance an email is failed (RFC 5321: 4–5 days).
    pub give_up_hours: u64,
}

impl Default for MailConfig {
    fn default() -> Self {
        MailConfig {
            from: None,
            contact: None,
            message_id_domain: None,
            give_up_hours: 96,
        }
    }
}

impl MailConfig {
    /// The From address, with the default filled in.
    pub fn from_address(&self) -> String {
        self.from.clone().unwrap_or_else(|| format!("amtsbote@{}", crate::hostname()))
    }

    /// The Message-IDs' domain, with the default filled in.
    pub fn id_domain(&self) -> String {
        self.message_id_domain.clone().unwrap_or_else(|| {
            let from = self.from_address();
            from.rsplit_once('@').map_or_else(crate::hostname, |(_, d)| d.trim_end_matches('>').to_owned())
        })
    }
}

/// Where notification emails go (src/mail/smtp.rs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    /// The SMTP server: `smtp://host[:port]` (port 587, STARTTLS required; `?tls=none` plain,
    /// for a relay on loopback; `?tls=opportunistic` STARTTLS when offered), `smtps://host[:port]`
    /// (implicit TLS, port 465); `user:password@` before the host for AUTH (percent-encoded).
    /// Unset: the embedded default, every email written as an `.eml` file into
    /// `<data_dir>/mail/` (nothing leaves the machine). `config check` shows the password
    /// as `***`.
    #[serde(serialize_with = "url_without_password")]
    pub url: Option<String>,
    /// A PEM bundle of the CA(s) that sign the server's certificate; then only these are
    /// trusted. Unset: the Mozilla roots built into amtsbote (no system store is read).
    pub ca_file: Option<PathBuf>,
    /// Connections to the server at once (and emails in flight). Default 4.
    pub pool_size: u32,
    /// Time for one email: connecting (TLS and AUTH included, when no pooled connection is
    /// free) and sending it until the server's answer; longer is a transient failure.
    /// Default 30 s.
    pub timeout_secs: u64,
}

fn url_without_password<S: serde::Serializer>(url: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match url {
        Some(url) => s.serialize_some(&crate::mail::smtp::redact(url)),
        None => s.serialize_none(),
    }
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig { url: None, ca_file: None, pool_size: 4, timeout_secs: 30 }
    }
}

/// A tenant (Mandant): an authority using amtsbote, with its folders.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tenant {
    /// Short name used in folder names and URLs: letters, digits, `-` and `_`.
    pub id: String,
    pub name: String,
    /// The authority's identifier, e.g. `vbh:057660440000`.
    pub kennung: String,
    /// Drop folder; default `<data_dir>/inbox/<id>`.
    #[serde(default)]
    pub inbox: Option<PathBuf>,
    /// Where messages for the tenant are delivered; default `<data_dir>/outbox/<id>`.
    #[serde(default)]
    pub outbox: Option<PathBuf>,
    /// Where the emails about the tenant's requests go; empty: to the `email` of the
    /// requesting authority in each request.
    #[serde(default)]
    pub notify: Vec<String>,
    /// Which events the tenant is told about by email; absent: all of them.
    #[serde(default)]
    pub notify_events: Option<Vec<crate::mail::Event>>,
    /// Events within this many minutes go out as one email listing them (a digest);
    /// 0 (the default): one email per event.
    #[serde(default)]
    pub digest_minutes: u32,
    /// First day the tenant may deliver (inclusive).
    #[serde(default)]
    pub valid_from: Option<chrono::NaiveDate>,
    /// Last day the tenant may deliver (inclusive): a trial ends by itself.
    #[serde(default)]
    pub valid_to: Option<chrono::NaiveDate>,
    /// `false` deactivates the tenant at once.
    #[serde(default = "yes")]
    pub active: bool,
}

fn yes() -> bool {
    true
}

impl Default for Tenant {
    fn default() -> Self {
        Tenant {
            id: String::new(),
            name: String::new(),
            kennung: String::new(),
            inbox: None,
            outbox: None,
            notify: Vec::new(),
            notify_events: None,
            digest_minutes: 0,
            valid_from: None,
            valid_to: None,
            active: true,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./amtsbote-data"),
            ledger: LedgerConfig::default(),
            queue: QueueConfig::default(),
            http: HttpConfig::default(),
            messages: MessagesConfig::default(),
            intake: IntakeConfig::default(),
            xta: XtaConfig::default(),
            print: PrintConfig::default(),
            mail: MailConfig::default(),
            smtp: SmtpConfig::default(),
            tenants: Vec::new(),
        }
    }
}

/// Sections that environment variables can address.
const SECTIONS: [&str; 9] = ["messages", "intake", "ledger", "queue", "http", "xta", "print", "mail", "smtp"];

/// What an environment variable's text is read as: the type of its setting, never a guess
/// from the text (`AMTSBOTE_MESSAGES_MIN_AMOUNT=50.00` is the string "50.00", not a float).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Number,
    /// Comma-separated.
    List,
}

/// Every setting a variable may set: its dotted key and its kind.
const ENV_SETTINGS: &[(&str, Kind)] = &[
    ("data_dir", Kind::Text),
    ("ledger.url", Kind::Text),
    ("queue.url", Kind::Text),
    ("queue.keep_finished_hours", Kind::Number),
    ("queue.relay_poll_ms", Kind::Number),
    ("queue.sweep_after_secs", Kind::Number),
    ("queue.sweep_interval_secs", Kind::Number),
    ("http.listen", Kind::Text),
    ("http.max_body_bytes", Kind::Number),
    ("http.header_timeout_ms", Kind::Number),
    ("http.body_timeout_ms", Kind::Number),
    ("http.max_connections", Kind::Number),
    ("http.max_connections_per_client", Kind::Number),
    ("http.max_bytes_in_flight", Kind::Number),
    ("http.tls_cert", Kind::Text),
    ("http.tls_key", Kind::Text),
    ("messages.namespaces", Kind::List),
    ("messages.min_amount", Kind::Text),
    ("messages.max_bytes", Kind::Number),
    ("messages.max_depth", Kind::Number),
    ("messages.max_attributes", Kind::Number),
    ("messages.max_debtors", Kind::Number),
    ("messages.max_claims", Kind::Number),
    ("messages.max_measures", Kind::Number),
    ("messages.max_attachments", Kind::Number),
    ("messages.max_reasons", Kind::Number),
    ("messages.codelists_dir", Kind::Text),
    ("intake.poll_interval_ms", Kind::Number),
    ("intake.settle_ms", Kind::Number),
    ("intake.patterns", Kind::List),
    ("intake.incomplete_wait_secs", Kind::Number),
    ("intake.read_retry_secs", Kind::Number),
    ("intake.keep_rejected_bytes", Kind::Number),
    ("xta.url", Kind::Text),
    ("xta.connect_timeout_ms", Kind::Number),
    ("xta.response_timeout_ms", Kind::Number),
    ("xta.max_connections", Kind::Number),
    ("xta.breaker_failures", Kind::Number),
    ("xta.breaker_open_secs", Kind::Number),
    ("xta.breaker_max_open_secs", Kind::Number),
    ("xta.unknown_availability_attempts", Kind::Number),
    ("xta.ca_file", Kind::Text),
    ("xta.client_cert", Kind::Text),
    ("xta.client_key", Kind::Text),
    ("xta.receive_interval_ms", Kind::Number),
    ("print.handoff_dir", Kind::Text),
    ("print.letters_per_file", Kind::Number),
    ("mail.from", Kind::Text),
    ("mail.contact", Kind::Text),
    ("mail.message_id_domain", Kind::Text),
    ("mail.give_up_hours", Kind::Number),
    ("smtp.url", Kind::Text),
    ("smtp.ca_file", Kind::Text),
    ("smtp.pool_size", Kind::Number),
    ("smtp.timeout_secs", Kind::Number),
];

impl Config {
    /// Reads the file (if any), applies the environment, fills in derived defaults and
    /// checks the result.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        let env: Vec<(String, String)> = std::env::vars().filter(|(k, _)| k.starts_with("AMTSBOTE_")).collect();
        Self::load_with(file, &env)
    }

    /// [`Config::load`] with the environment given (for tests).
    pub fn load_with(file: Option<&Path>, env: &[(String, String)]) -> anyhow::Result<Config> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
                text.parse::<toml::Table>().with_context(|| format!("{} is not valid TOML", path.display()))?
            }
            None => toml::Table::new(),
        };
        for (key, value) in env {
            apply_env(&mut table, key, value)?;
        }
        let origin = file.map_or("the defaults".to_string(), |p| p.display().to_string());
        let mut config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| anyhow::anyhow!("{origin}: {}", e.message()))?;
        config.complete()?;
        Ok(config)
    }

    /// Fills in what derives from `data_dir` and checks values that serde cannot.
    fn complete(&mut self) -> anyhow::Result<()> {
        if self.tenants.is_empty() {
            self.tenants.push(Tenant {
                id: "demo".into(),
                name: "Stadt Lemgo, Stadtkasse (sample tenant)".into(),
                kennung: "vbh:057660440000".into(),
                ..Tenant::default()
            });
        }
        let data = self.data_dir.clone();
        if self.ledger.url.is_none() {
            self.ledger.url = Some(format!("sqlite:{}", data.join("ledger.sqlite").display()));
        }
        if self.queue.url.is_none() {
            self.queue.url = Some(data.join("queue.sqlite").display().to_string());
        }
        let mut seen = std::collections::HashSet::new();
        for t in &mut self.tenants {
            if t.id.is_empty() || !t.id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                bail!("tenant id '{}' may only use letters, digits, '-' and '_'", t.id);
            }
            if !seen.insert(t.id.clone()) {
                bail!("tenant id '{}' appears twice", t.id);
            }
            t.inbox.get_or_insert_with(|| data.join("inbox").join(&t.id));
            t.outbox.get_or_insert_with(|| data.join("outbox").join(&t.id));
            if let (Some(from), Some(to)) = (t.valid_from, t.valid_to)
                && from > to
            {
                bail!("tenant '{}': valid_from {from} lies after valid_to {to}", t.id);
            }
        }
        self.min_amount()?;
        if self.http.header_timeout_ms == 0 || self.http.body_timeout_ms == 0 {
            bail!("http.header_timeout_ms and http.body_timeout_ms must be at least 1");
        }
        if self.http.max_connections_per_client == 0 {
            bail!("http.max_connections_per_client must be at least 1");
        }
        if self.http.max_bytes_in_flight == 0 {
            bail!("http.max_bytes_in_flight must be at least 1");
        }
        if self.http.max_connections == 0 {
            bail!("http.max_connections must be at least 1");
        }
        match (&self.http.tls_cert, &self.http.tls_key) {
            (Some(cert), None) => bail!("http.tls_cert ({}) is set, but http.tls_key is not", cert.display()),
            (None, Some(key)) => bail!("http.tls_key ({}) is set, but http.tls_cert is not", key.display()),
            _ => {}
        }
        self.xta.check()?;
        if self.xta.receive_interval_ms == Some(0) {
            bail!("xta.receive_interval_ms must be at least 1 (or unset: the schedule of jobs/receive.toml)");
        }
        self.limits()?;
        let m = &self.messages;
        if m.max_debtors == 0 || m.max_claims == 0 || m.max_measures == 0 || m.max_attachments == 0 || m.max_reasons == 0 {
            bail!("messages.max_debtors, max_claims, max_measures, max_attachments and max_reasons must be at least 1");
        }
        if self.messages.namespaces.is_empty() {
            bail!("messages.namespaces: at least one namespace must be accepted");
        }
        if self.print.letters_per_file == 0 {
            bail!("print.letters_per_file must be at least 1");
        }
        if self.smtp.pool_size == 0 || self.smtp.timeout_secs == 0 {
            bail!("smtp.pool_size and smtp.timeout_secs must be at least 1");
        }
        Ok(())
    }

    pub fn min_amount(&self) -> anyhow::Result<Cents> {
        self.messages.min_amount.parse().map_err(|e| anyhow::anyhow!("messages.min_amount: {e}"))
    }

    pub fn ledger_url(&self) -> &str {
        self.ledger.url.as_deref().unwrap_or_default()
    }

    pub fn queue_path(&self) -> PathBuf {
        PathBuf::from(self.queue.url.as_deref().unwrap_or_default())
    }

    /// The reader and validator this configuration asks for, with the code lists loaded.
    pub fn checker(&self) -> anyhow::Result<Checker> {
        let dir = self.messages.codelists_dir.clone().unwrap_or_else(|| self.data_dir.join("codelists"));
        let codelists = CodeLists::load(Some(&dir))?;
        let mut validator = Validator::new(codelists);
        validator.min_amount = self.min_amount()?;
        validator.max_reasons = self.messages.max_reasons;
        let reader = ReaderConfig { namespaces: self.messages.namespaces.clone(), limits: self.limits()? };
        Ok(Checker::new(reader, validator))
    }

    /// The reader's limits from `[messages]`.
    pub fn limits(&self) -> anyhow::Result<Limits> {
        let m = &self.messages;
        let mut limits = Limits {
            max_bytes: m.max_bytes,
            max_depth: m.max_depth,
            max_attributes: m.max_attributes,
            max_debtors: m.max_debtors,
            max_claims: m.max_claims,
            max_measures: m.max_measures,
            max_attachments: m.max_attachments,
            ..Limits::default()
        };
        for (element, &max) in &m.max_length {
            limits.lengths.set(element, max).map_err(|e| anyhow::anyhow!("messages.{e}"))?;
        }
        Ok(limits)
    }

    pub fn tenant(&self, id: &str) -> Option<&Tenant> {
        self.tenants.iter().find(|t| t.id == id)
    }
}

impl Tenant {
    /// Why the tenant may not deliver on `day`, if it may not.
    pub fn refusal_on(&self, day: chrono::NaiveDate) -> Option<String> {
        if !self.active {
            return Some(format!("tenant '{}' is deactivated", self.id));
        }
        if let Some(from) = self.valid_from
            && day < from
        {
            return Some(format!("tenant '{}' may deliver from {from} on", self.id));
        }
        if let Some(to) = self.valid_to
            && day > to
        {
            return Some(format!("tenant '{}' could deliver until {to} (its term has ended)", self.id));
        }
        None
    }

    pub fn inbox(&self) -> &Path {
        self.inbox.as_deref().unwrap_or(Path::new("."))
    }

    pub fn outbox(&self) -> &Path {
        self.outbox.as_deref().unwrap_or(Path::new("."))
    }
}

fn apply_env(table: &mut toml::Table, key: &str, value: &str) -> anyhow::Result<()> {
    let Some(rest) = key.strip_prefix("AMTSBOTE_") else { return Ok(()) };
    if rest.starts_with("TEST_") || rest == "LOG" || rest == "CONFIG" {
        return Ok(());
    }
    let rest = rest.to_ascii_lowercase();
    let (section, field) = match SECTIONS.iter().find(|s| rest.starts_with(&format!("{s}_"))) {
        Some(s) => (Some(*s), rest[s.len() + 1..].to_string()),
        None => (None, rest.clone()),
    };
    let dotted = section.map_or(field.clone(), |s| format!("{s}.{field}"));
    let Some(&(_, kind)) = ENV_SETTINGS.iter().find(|(k, _)| *k == dotted) else {
        bail!("{key}: unknown setting (known: {})", known_vars());
    };
    let parsed = match kind {
        Kind::Text => toml::Value::String(value.to_string()),
        Kind::List => toml::Value::Array(value.split(',').map(|v| toml::Value::String(v.trim().to_string())).collect()),
        Kind::Number => match value.trim().parse::<i64>() {
            Ok(n) => toml::Value::Integer(n),
            Err(_) => bail!("{key}={value:?}: expected a whole number"),
        },
    };
    let target = match section {
        Some(s) => match table.entry(s).or_insert_with(|| toml::Value::Table(toml::Table::new())) {
            toml::Value::Table(t) => t,
            _ => bail!("{key}: [{s}] in the config file is not a table"),
        },
        None => table,
    };
    target.insert(field, parsed);
    Ok(())
}

/// `AMTSBOTE_DATA_DIR, AMTSBOTE_LEDGER_URL, …`, from [`ENV_SETTINGS`].
fn known_vars() -> String {
    ENV_SETTINGS.iter().map(|(k, _)| format!("AMTSBOTE_{}", k.replace('.', "_").to_ascii_uppercase())).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_run_the_embedded_mode() {
        let c = Config::load_with(None, &[]).unwrap();
        assert_eq!(c.ledger_url(), "sqlite:./amtsbote-data/ledger.sqlite");
        assert_eq!(c.tenants[0].id, "demo");
        assert_eq!(c.tenants[0].inbox(), Path::new("./amtsbote-data/inbox/demo"));
        assert_eq!(c.http.listen, "127.0.0.1:8080");
    }

    #[test]
    fn file_and_environment_override() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("amtsbote.toml");
        std::fs::write(
            &file,
            "data_dir = \"/srv/amtsbote\"\n[http]\nlisten = \"0.0.0.0:9000\"\n[[tenants]]\nid = \"koeln\"\nname = \"Stadt Köln\"\nkennung = \"vbh:053150000000\"\n",
        )
        .unwrap();
        let c = Config::load_with(
            Some(&file),
            &env(&[("AMTSBOTE_HTTP_LISTEN", "127.0.0.1:9999"), ("AMTSBOTE_MESSAGES_NAMESPACES", "xAmtshilfe110, xAmtshilfe120"), ("AMTSBOTE_INTAKE_POLL_INTERVAL_MS", "50"), ("AMTSBOTE_TEST_POSTGRES_URL", "ignored")]),
        )
        .unwrap();
        assert_eq!(c.http.listen, "127.0.0.1:9999");
        assert_eq!(c.messages.namespaces, vec!["xAmtshilfe110", "xAmtshilfe120"]);
        assert_eq!(c.intake.poll_interval_ms, 50);
        assert_eq!(c.queue.keep_finished_hours, 168);
        assert_eq!(c.tenants[0].inbox(), Path::new("/srv/amtsbote/inbox/koeln"));
        assert_eq!(c.ledger_url(), "sqlite:/srv/amtsbote/ledger.sqlite");
    }

    #[test]
    fn unknown_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("amtsbote.toml");
        std::fs::write(&file, "[http]\nlisen = \"x\"\n").unwrap();
        let e = Config::load_with(Some(&file), &[]).unwrap_err().to_string();
        assert!(e.contains("lisen"), "{e}");
        let e = Config::load_with(None, &env(&[("AMTSBOTE_HTTP_LISEN", "x")])).unwrap_err().to_string();
        assert!(e.contains("AMTSBOTE_HTTP_LISEN") && e.contains("unknown"), "{e}");
        let e = Config::load_with(None, &env(&[("AMTSBOTE_MESSAGES_MIN_AMOUNT", "zwölf")])).unwrap_err().to_string();
        assert!(e.contains("min_amount"), "{e}");
        assert!(Config::load_with(None, &env(&[("AMTSBOTE_INTAKE_POLL_INTERVAL_MS", "soon")])).is_err());
    }

    /// Each variable is read as its setting's type: the README's example sets a decimal
    /// amount, which must stay the text "50.00".
    #[test]
    fn environment_values_take_their_settings_type() {
        let c = Config::load_with(None, &env(&[("AMTSBOTE_MESSAGES_MIN_AMOUNT", "50.00"), ("AMTSBOTE_HTTP_LISTEN", "127.0.0.1:9000"), ("AMTSBOTE_DATA_DIR", "1234"), ("AMTSBOTE_QUEUE_SWEEP_AFTER_SECS", "600")])).unwrap();
        assert_eq!(c.messages.min_amount, "50.00");
        assert_eq!(c.min_amount().unwrap().to_string(), "50.00");
        assert_eq!(c.data_dir, PathBuf::from("1234"));
        assert_eq!(c.queue.sweep_after_secs, 600);
        let e = Config::load_with(None, &env(&[("AMTSBOTE_HTTP_MAX_CONNECTIONS", "many")])).unwrap_err().to_string();
        assert!(e.contains("AMTSBOTE_HTTP_MAX_CONNECTIONS") && e.contains("whole number"), "{e}");
        // Every documented variable is accepted.
        for (key, kind) in ENV_SETTINGS {
            let var = format!("AMTSBOTE_{}", key.replace('.', "_").to_ascii_uppercase());
            let value = match kind {
                Kind::Number => "7",
                Kind::Text if *key == "messages.min_amount" => "40.00",
                Kind::Text if *key == "ledger.url" => "sqlite::memory:",
                _ => "x",
            };
            if let Err(e) = Config::load_with(None, &env(&[(&var, value)])) {
                assert!(!e.to_string().contains("unknown setting"), "{var}: {e}");
            }
        }
    }

    #[test]
    fn message_limits_are_configurable() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("amtsbote.toml");
        std::fs::write(&file, "[messages]\nmax_claims = 5000\n[messages.max_length]\nfamilienname = 300\nbemerkung = 4000\n").unwrap();
        let c = Config::load_with(Some(&file), &env(&[("AMTSBOTE_MESSAGES_MAX_DEBTORS", "7"), ("AMTSBOTE_MESSAGES_MAX_REASONS", "20")])).unwrap();
        let limits = c.limits().unwrap();
        assert_eq!((limits.max_claims, limits.max_debtors, c.messages.max_reasons), (5000, 7, 20));
        assert_eq!((limits.lengths.of("familienname"), limits.lengths.of("bemerkung"), limits.lengths.of("vorname")), (Some(300), Some(4000), Some(200)));
        assert_eq!(Config::load_with(None, &[]).unwrap().limits().unwrap(), Limits::default());
        std::fs::write(&file, "[messages.max_length]\nnachname = 300\n").unwrap();
        let e = Config::load_with(Some(&file), &[]).unwrap_err().to_string();
        assert!(e.contains("nachname") && e.contains("familienname"), "{e}");
        assert!(Config::load_with(None, &env(&[("AMTSBOTE_MESSAGES_MAX_CLAIMS", "0")])).is_err());
    }

    #[test]
    fn https_needs_a_ca_and_a_client_certificate_its_key() {
        let e = Config::load_with(None, &env(&[("AMTSBOTE_XTA_URL", "https://xta.example:8443")])).unwrap_err().to_string();
        assert!(e.contains("xta.ca_file") && e.contains("https"), "{e}");
        let e = Config::load_with(None, &env(&[("AMTSBOTE_XTA_URL", "https://xta.example"), ("AMTSBOTE_XTA_CA_FILE", "/etc/amtsbote/ca.pem"), ("AMTSBOTE_XTA_CLIENT_CERT", "/etc/amtsbote/client.pem")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("xta.client_key") && e.contains("/etc/amtsbote/client.pem"), "{e}");
        let c = Config::load_with(
            None,
            &env(&[
                ("AMTSBOTE_XTA_URL", "https://xta.example"),
                ("AMTSBOTE_XTA_CA_FILE", "/etc/amtsbote/ca.pem"),
                ("AMTSBOTE_XTA_CLIENT_CERT", "/etc/amtsbote/client.pem"),
                ("AMTSBOTE_XTA_CLIENT_KEY", "/etc/amtsbote/client.key"),
            ]),
        )
        .unwrap();
        let tls = c.xta.client_tls().unwrap();
        assert_eq!(tls.ca.path, PathBuf::from("/etc/amtsbote/ca.pem"));
        let identity = tls.identity.unwrap();
        assert_eq!((identity.cert_chain.setting, identity.key.setting), ("xta.client_cert", "xta.client_key"));
        assert_eq!(identity.key.path, PathBuf::from("/etc/amtsbote/client.key"));
        // Plain http needs none of it.
        let c = Config::load_with(None, &env(&[("AMTSBOTE_XTA_URL", "http://127.0.0.1:8480")])).unwrap();
        assert!(c.xta.client_tls().is_none());
    }

    #[test]
    fn smtp_settings_from_file_and_environment() {
        let c = Config::load_with(None, &[]).unwrap();
        assert_eq!(c.smtp, SmtpConfig { url: None, ca_file: None, pool_size: 4, timeout_secs: 30 });
        let c = Config::load_with(
            None,
            &env(&[("AMTSBOTE_SMTP_URL", "smtp://u:geheim@mail.example:587"), ("AMTSBOTE_SMTP_CA_FILE", "/etc/amtsbote/smtp-ca.pem"), ("AMTSBOTE_SMTP_POOL_SIZE", "8"), ("AMTSBOTE_SMTP_TIMEOUT_SECS", "5")]),
        )
        .unwrap();
        assert_eq!(c.smtp.url.as_deref(), Some("smtp://u:geheim@mail.example:587"));
        assert_eq!((c.smtp.ca_file.as_deref(), c.smtp.pool_size, c.smtp.timeout_secs), (Some(Path::new("/etc/amtsbote/smtp-ca.pem")), 8, 5));
        // `config check` prints the configuration: never the password.
        let shown = toml::to_string_pretty(&c).unwrap();
        assert!(shown.contains("mail.example") && !shown.contains("geheim"), "{shown}");
        assert!(!toml::to_string_pretty(&Config::load_with(None, &[]).unwrap()).unwrap().contains("url = \"smtp"));
        let e = Config::load_with(None, &env(&[("AMTSBOTE_SMTP_POOL_SIZE", "0")])).unwrap_err().to_string();
        assert!(e.contains("smtp.pool_size"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("amtsbote.toml");
        std::fs::write(&file, "[smtp]\nurl = \"smtps://mail.example\"\npool = 3\n").unwrap();
        let e = Config::load_with(Some(&file), &[]).unwrap_err().to_string();
        assert!(e.contains("pool"), "{e}");
    }
}
