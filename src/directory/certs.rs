//! Peer certificates: the PEM files under `<data_dir>/certs/` that reaching other
//! authorities needs (XTA client certificates, readers' encryption certificates). What this
//! owns is knowing when they expire: every certificate of every file, its subject and end
//! date, and a warning 30 days before (`amtsbote directory certs`, and the log at start-up).

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;
use x509_cert::Certificate;
use x509_cert::der::DecodePem;

/// Warn this many days before a certificate expires.
pub const WARN_DAYS: i64 = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CertStatus {
    Valid,
    /// Expires within [`WARN_DAYS`].
    Expiring,
    Expired,
    /// The file holds no certificate that can be read.
    Unreadable,
}

/// One certificate (or one unreadable file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerCert {
    pub file: PathBuf,
    pub subject: String,
    pub not_after: Option<DateTime<Utc>>,
    pub days_left: Option<i64>,
    pub status: CertStatus,
    /// Why a file is unreadable.
    pub problem: Option<String>,
}

/// The certificates directory of a data directory.
pub fn certs_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("certs")
}

/// Reads every `*.pem` / `*.crt` file in `dir` (a missing folder holds none) and tells each
/// certificate's state on `now`.
pub fn scan(dir: &Path, now: DateTime<Utc>) -> Vec<PeerCert> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "pem" || e == "crt"))
        .collect();
    files.sort();
    files.iter().flat_map(|f| read_file(f, now)).collect()
}

fn unreadable(file: &Path, problem: String) -> PeerCert {
    PeerCert { file: file.to_path_buf(), subject: String::new(), not_after: None, days_left: None, status: CertStatus::Unreadable, problem: Some(problem) }
}

/// Every certificate in one PEM file (a chain holds several).
pub fn read_file(file: &Path, now: DateTime<Utc>) -> Vec<PeerCert> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => return vec![unreadable(file, e.to_string())],
    };
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            out.push(unreadable(file, "a certificate is not terminated (END CERTIFICATE missing)".into()));
            break;
        };
        let block = &rest[start..start + len + END.len()];
        rest = &rest[start + len + END.len()..];
        match Certificate::from_pem(block) {
            Ok(cert) => {
                let tbs = &cert.tbs_certificate;
                let secs = tbs.validity.not_after.to_unix_duration().as_secs();
                let not_after = DateTime::<Utc>::from_timestamp(i64::try_from(secs).unwrap_or(i64::MAX), 0);
                let days_left = not_after.map(|t| (t - now).num_days());
                let status = match not_after {
                    Some(t) if t <= now => CertStatus::Expired,
                    Some(t) if (t - now).num_days() < WARN_DAYS => CertStatus::Expiring,
                    Some(_) => CertStatus::Valid,
                    None => CertStatus::Unreadable,
                };
                out.push(PeerCert { file: file.to_path_buf(), subject: tbs.subject.to_string(), not_after, days_left, status, problem: None });
            }
            Err(e) => out.push(unreadable(file, format!("not an X.509 certificate: {e}"))),
        }
    }
    if out.is_empty() {
        out.push(unreadable(file, "no certificate in the file".into()));
    }
    out
}

/// Logs a warning for each certificate that has expired, expires soon or cannot be read.
pub fn warn_about(certs: &[PeerCert]) {
    for c in certs {
        match c.status {
            CertStatus::Valid => {}
            CertStatus::Expiring => tracing::warn!(
                file = %c.file.display(), subject = %c.subject, days_left = c.days_left.unwrap_or(0),
                "peer certificate expires soon; renew it"
            ),
            CertStatus::Expired => tracing::warn!(file = %c.file.display(), subject = %c.subject, "peer certificate has expired; renew it"),
            CertStatus::Unreadable => tracing::warn!(file = %c.file.display(), problem = c.problem.as_deref().unwrap_or(""), "peer certificate file cannot be read"),
        }
    }
}
