//! TLS for XTA: HTTPS with client certificates (mutual TLS), keys and chains as PEM, rustls
//! with the ring provider.
//!
//! This module owns reading the PEM files (certificate chains leaf first, private keys as
//! PKCS#8, RSA or SEC1, CA bundles) and building the two rustls configurations: the client's
//! ([`ClientTls`]: trusts only the configured CA — no webpki or system roots — and presents
//! its client certificate) and the simulator's ([`ServerTls`]: its certificate; with a client
//! CA, every connection must present a certificate signed by it, or the handshake is
//! refused), and the client with which `amtsbote queues` reads the local serve over HTTPS
//! ([`pinned_client_config`]: it trusts `http.tls_cert` alone). It also says what a failed handshake means for an operator
//! ([`client_handshake_failure`]).
//!
//! Every error names the setting and the path of the file, never any key material.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{AlertDescription, RootCertStore};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A PEM file and the setting that named it (`xta.ca_file`, `--tls-cert`, …), for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemFile {
    pub setting: &'static str,
    pub path: PathBuf,
}

impl PemFile {
    pub fn new(setting: &'static str, path: impl Into<PathBuf>) -> PemFile {
        PemFile { setting, path: path.into() }
    }
}

impl fmt::Display for PemFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.setting, self.path.display())
    }
}

/// A TLS setting that cannot be used. Its message is whole (causes included, none chained
/// as `source`), so that it reads once wherever it is shown.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{file}: cannot read the file: {cause}")]
    Read { file: PemFile, cause: std::io::Error },
    #[error("{file}: not readable as PEM: {reason}")]
    BadPem { file: PemFile, reason: &'static str },
    #[error("{file}: no PEM certificate in the file")]
    NoCertificate { file: PemFile },
    #[error("{file}: no PEM private key in the file (PKCS#8, RSA or SEC1)")]
    NoKey { file: PemFile },
    #[error("{key}: the private key does not belong to the first certificate of {cert}")]
    KeyMismatch { cert: PemFile, key: PemFile },
    #[error("{file}: cannot be used: {reason}")]
    Unusable { file: PemFile, reason: String },
    #[error("TLS setup: {0}")]
    Rustls(rustls::Error),
}

/// The client side: the CA(s) that sign the XTA server's certificate, and the client
/// certificate this installation presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTls {
    /// A PEM bundle of the CA certificates to trust; nothing else is trusted.
    pub ca: PemFile,
    /// The client certificate; without it the client presents none.
    pub identity: Option<Identity>,
}

/// A certificate chain (leaf first) and its private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub cert_chain: PemFile,
    pub key: PemFile,
}

impl ClientTls {
    /// Trusting `ca_file` (named `xta.ca_file` in messages), with no client certificate.
    pub fn new(ca_file: impl Into<PathBuf>) -> ClientTls {
        ClientTls { ca: PemFile::new("xta.ca_file", ca_file), identity: None }
    }

    /// Presenting `cert_chain` with `key` (named `xta.client_cert`, `xta.client_key`).
    pub fn with_client_cert(mut self, cert_chain: impl Into<PathBuf>, key: impl Into<PathBuf>) -> ClientTls {
        self.identity = Some(Identity { cert_chain: PemFile::new("xta.client_cert", cert_chain), key: PemFile::new("xta.client_key", key) });
        self
    }

    /// Reads the files into a rustls client configuration.
    pub fn rustls_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let roots = root_store(&self.ca)?;
        let builder = rustls::ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions().map_err(TlsError::Rustls)?.with_root_certificates(roots);
        match &self.identity {
            None => Ok(builder.with_no_client_auth()),
            Some(identity) => {
                let (chain, key) = identity.load()?;
                builder.with_client_auth_cert(chain, key).map_err(|e| identity.key_error(e))
            }
        }
    }
}

/// The server side (the simulator): its certificate and key, and the CA whose certificates
/// clients must present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    pub identity: Identity,
    /// With it, a connection without a certificate signed by one of these CAs is refused.
    pub client_ca: Option<PemFile>,
    /// A connection that has not finished its handshake by then is closed.
    pub handshake_timeout: Duration,
}

impl ServerTls {
    /// `cert_chain` and `key` (named `--tls-cert`, `--tls-key`, as `amtsbote xta-sim` calls
    /// them), no client certificates asked for, a 10 s handshake timeout.
    pub fn new(cert_chain: impl Into<PathBuf>, key: impl Into<PathBuf>) -> ServerTls {
        ServerTls::named(("--tls-cert", cert_chain.into()), ("--tls-key", key.into()))
    }

    /// The same, with the names of the settings the files come from (`http.tls_cert`, …).
    pub fn named(cert_chain: (&'static str, PathBuf), key: (&'static str, PathBuf)) -> ServerTls {
        ServerTls {
            identity: Identity { cert_chain: PemFile::new(cert_chain.0, cert_chain.1), key: PemFile::new(key.0, key.1) },
            client_ca: None,
            handshake_timeout: Duration::from_secs(10),
        }
    }

    /// Every client must present a certificate signed by a CA of `ca_file` (`--client-ca`).
    pub fn with_client_ca(mut self, ca_file: impl Into<PathBuf>) -> ServerTls {
        self.client_ca = Some(PemFile::new("--client-ca", ca_file));
        self
    }

    /// Reads the files into a rustls server configuration.
    pub fn rustls_config(&self) -> Result<rustls::ServerConfig, TlsError> {
        let builder = rustls::ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions().map_err(TlsError::Rustls)?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(root_store(ca)?), provider())
                    .build()
                    .map_err(|e| TlsError::Unusable { file: ca.clone(), reason: e.to_string() })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let (chain, key) = self.identity.load()?;
        builder.with_single_cert(chain, key).map_err(|e| self.identity.key_error(e))
    }
}

impl Identity {
    fn load(&self) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
        let chain = certificates(&self.cert_chain)?;
        let bytes = read(&self.key)?;
        let key = PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
            pem::Error::NoItemsFound => TlsError::NoKey { file: self.key.clone() },
            e => TlsError::BadPem { file: self.key.clone(), reason: pem_reason(&e) },
        })?;
        Ok((chain, key))
    }

    /// A key rustls refused: not the leaf's, or not usable. rustls' messages about keys
    /// carry no key material.
    fn key_error(&self, e: rustls::Error) -> TlsError {
        match e {
            rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch { cert: self.cert_chain.clone(), key: self.key.clone() },
            e => TlsError::Unusable { file: self.key.clone(), reason: e.to_string() },
        }
    }
}

/// A client that trusts exactly one server certificate: the first of `cert_chain` (the
/// HTTP server's own `http.tls_cert`), whatever name it carries. For `amtsbote queues`
/// reading the local serve's `/metrics`: the command runs on the machine whose certificate
/// it reads, so pinning that certificate is the strongest trust there is, and it works for
/// a self-signed certificate, for one signed by a CA not in the file, and for any
/// `http.listen` address (the certificate need not name it).
pub fn pinned_client_config(cert_chain: &PemFile) -> Result<rustls::ClientConfig, TlsError> {
    let leaf = certificates(cert_chain)?.swap_remove(0);
    let verifier = PinnedServer { leaf, algorithms: provider().signature_verification_algorithms };
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Rustls)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// Accepts the one pinned certificate (compared whole, byte for byte) and the handshake
/// signatures made with its key; refuses every other certificate.
#[derive(Debug)]
struct PinnedServer {
    leaf: CertificateDer<'static>,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl rustls::client::danger::ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.leaf.as_ref() {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer))
        }
    }

    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &rustls::DigitallySignedStruct) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &rustls::DigitallySignedStruct) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The one crypto provider: ring.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(file: &PemFile) -> Result<Vec<u8>, TlsError> {
    std::fs::read(&file.path).map_err(|cause| TlsError::Read { file: file.clone(), cause })
}

/// Every certificate of a PEM file, in order; other sections are skipped.
fn certificates(file: &PemFile) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(file)?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem { file: file.clone(), reason: pem_reason(&e) })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { file: file.clone() });
    }
    Ok(chain)
}

fn root_store(file: &PemFile) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(file)? {
        roots.add(cert).map_err(|e| TlsError::Unusable { file: file.clone(), reason: format!("a CA certificate is not usable as a trust anchor: {e}") })?;
    }
    Ok(roots)
}

/// What is wrong with a PEM file, in words that quote nothing of it (it may be a key).
fn pem_reason(e: &pem::Error) -> &'static str {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a section has no END line",
        pem::Error::IllegalSectionStart { .. } => "a BEGIN line is malformed",
        pem::Error::Base64Decode(_) => "a section is not valid base64",
        pem::Error::SectionTooLarge => "a section is too large",
        pem::Error::NoItemsFound => "nothing of the expected kind in it",
        _ => "unreadable",
    }
}

/// What a failed handshake means, from the XTA client's side, in words an operator can act
/// on. `presented` says whether the client has a client certificate configured.
pub fn client_handshake_failure(e: &rustls::Error, presented: bool) -> String {
    use AlertDescription as A;
    match e {
        rustls::Error::InvalidCertificate(reason) => {
            format!("TLS: the XTA server's certificate is not trusted ({reason}); xta.ca_file must hold the CA that signs it")
        }
        rustls::Error::AlertReceived(A::CertificateRequired) | rustls::Error::AlertReceived(A::HandshakeFailure) if !presented => {
            "TLS: the XTA server requires a client certificate; set xta.client_cert and xta.client_key".to_owned()
        }
        rustls::Error::AlertReceived(
            alert @ (A::BadCertificate
            | A::UnsupportedCertificate
            | A::CertificateRevoked
            | A::CertificateExpired
            | A::CertificateUnknown
            | A::UnknownCA
            | A::AccessDenied
            | A::CertificateRequired),
        ) => format!("TLS: the XTA server refused our client certificate (alert: {alert:?}); check xta.client_cert and whether the server trusts its CA"),
        other => format!("TLS handshake with the XTA server failed: {other}"),
    }
}

/// The rustls error somewhere in an error's chain of causes, also inside `io::Error`s (whose
/// `source` skips the error they wrap).
pub fn find_rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut source = Some(e);
    while let Some(s) = source {
        if let Some(found) = s.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        if let Some(inner) = s.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref())
            && let Some(found) = find_rustls_error(inner)
        {
            return Some(found);
        }
        source = s.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_broken_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = ClientTls::new(&missing).rustls_config().unwrap_err().to_string();
        assert!(e.contains("xta.ca_file") && e.contains("missing.pem") && e.contains("cannot read"), "{e}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no pem here\n").unwrap();
        let e = ClientTls::new(&empty).rustls_config().unwrap_err().to_string();
        assert!(e.contains("xta.ca_file") && e.contains("no PEM certificate"), "{e}");

        let broken = dir.path().join("broken-key.pem");
        std::fs::write(&broken, "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n").unwrap();
        let e = ServerTls::new(&empty, &broken).rustls_config().unwrap_err().to_string();
        assert!(e.contains("--tls-cert"), "the certificate is read first: {e}");
    }

    #[test]
    fn a_pem_error_quotes_nothing_of_the_file() {
        let e = pem::Error::IllegalSectionStart { line: b"-----BEGIN secret".to_vec() };
        assert!(!pem_reason(&e).contains("secret"));
    }
}
