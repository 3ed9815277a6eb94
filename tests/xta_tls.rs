//! HTTPS with client certificates (mutual TLS) between the XTA client and the simulator,
//! over real sockets on loopback, with certificates made at test time (rcgen): a test CA, a
//! server certificate for 127.0.0.1/localhost and a client certificate signed by it, and a
//! second, unrelated CA with its own client and server certificates (the "wrong" ones).
//! Also: TLS settings that cannot be used, the handshake timeout, and `amtsbote xta-sim`
//! with `--tls-cert/--tls-key/--client-ca`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use amtsbote::xta::client::{ClientConfig, XtaClient};
use amtsbote::xta::fault::{Retry, XtaError};
use amtsbote::xta::sim::{SimConfig, SimServer};
use amtsbote::xta::soap::{Content, ContentContainer, Identifier, MessageId, MessageMetaData};
use amtsbote::xta::{ClientTls, ServerTls};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose};

const SERVICE: &str = "urn:xoev-de:xamtshilfe:xamtshilfe";

fn author() -> Identifier {
    Identifier::xoev("vbk:tenant-a")
}

fn reader() -> Identifier {
    Identifier::xoev("vbk:authority-b")
}

fn metadata(id: &MessageId) -> MessageMetaData {
    MessageMetaData::xamtshilfe(author(), reader(), id.clone(), SERVICE.into(), "vollstreckungshilfe.ersuchen.0101".into(), true, None)
}

fn container() -> ContentContainer {
    ContentContainer { message: Content { content_type: "application/xml".into(), filename: Some("ersuchen.xml".into()), data: b"<ersuchen/>".to_vec() }, attachments: Vec::new() }
}

/// A certificate chain and key written as PEM files.
struct Pair {
    cert: PathBuf,
    key: PathBuf,
}

/// The test PKI, in a temporary directory.
struct Pki {
    _dir: tempfile::TempDir,
    /// The CA that signs the server's and the right client's certificate.
    ca: PathBuf,
    server: Pair,
    client: Pair,
    /// An unrelated CA, and what it signed.
    other_ca: PathBuf,
    other_client: Pair,
    other_server: Pair,
}

fn make_ca(dir: &Path, name: &str) -> (PathBuf, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate().expect("a key");
    let cert = params.self_signed(&key).expect("a CA certificate");
    let path = dir.join(format!("{name}.pem"));
    std::fs::write(&path, cert.pem()).expect("write");
    (path, Issuer::new(params, key))
}

fn leaf(dir: &Path, name: &str, names: &[&str], usage: ExtendedKeyUsagePurpose, issuer: &Issuer<'_, KeyPair>) -> Pair {
    let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("leaf params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![usage];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate().expect("a key");
    let cert = params.signed_by(&key, issuer).expect("a signed certificate");
    let pair = Pair { cert: dir.join(format!("{name}.pem")), key: dir.join(format!("{name}.key")) };
    std::fs::write(&pair.cert, cert.pem()).expect("write");
    std::fs::write(&pair.key, key.serialize_pem()).expect("write");
    pair
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (ca_path, ca) = make_ca(dir.path(), "test-ca");
    let (other_ca_path, other_ca) = make_ca(dir.path(), "other-ca");
    let server = leaf(dir.path(), "server", &["127.0.0.1", "localhost"], ExtendedKeyUsagePurpose::ServerAuth, &ca);
    let client = leaf(dir.path(), "client", &[], ExtendedKeyUsagePurpose::ClientAuth, &ca);
    let other_client = leaf(dir.path(), "other-client", &[], ExtendedKeyUsagePurpose::ClientAuth, &other_ca);
    let other_server = leaf(dir.path(), "other-server", &["127.0.0.1", "localhost"], ExtendedKeyUsagePurpose::ServerAuth, &other_ca);
    Pki { _dir: dir, ca: ca_path, server, client, other_ca: other_ca_path, other_client, other_server }
}

/// The simulator over TLS with `pair`, checking client certificates against `client_ca`.
async fn tls_sim(pair: &Pair, client_ca: Option<&Path>) -> SimServer {
    let tls = ServerTls::new(&pair.cert, &pair.key);
    let tls = match client_ca {
        Some(ca) => tls.with_client_ca(ca),
        None => tls,
    };
    SimServer::start("127.0.0.1:0", SimConfig { tls: Some(tls), ..SimConfig::default() }).await.expect("the simulator listens")
}

fn client(url: &str, tls: Option<ClientTls>) -> Result<XtaClient, XtaError> {
    let mut config = ClientConfig::new(url);
    config.connect_timeout = Duration::from_secs(2);
    config.response_timeout = Duration::from_secs(5);
    config.tls = tls;
    XtaClient::new(config)
}

/// The simulator's count of refused handshakes once it reaches `n` (the client may read the
/// alert before the simulator's task has counted it), or what it is after 2 s.
async fn refused(server: &SimServer, n: u64) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while server.handshakes_refused() < n && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.handshakes_refused()
}

#[tokio::test]
async fn the_right_client_certificate_sends_over_mutual_tls() {
    let pki = pki();
    let server = tls_sim(&pki.server, Some(&pki.ca)).await;
    assert!(server.url().starts_with("https://127.0.0.1:"), "{}", server.url());
    let c = client(&server.url(), Some(ClientTls::new(&pki.ca).with_client_cert(&pki.client.cert, &pki.client.key))).expect("a client");

    c.check_account_active(&author()).await.expect("the account is active");
    let id = c.create_message_id(&author()).await.expect("a MessageID");
    c.send_message(&metadata(&id), &container()).await.expect("sent");
    let report = c.get_transport_report(&author(), &id).await.expect("a report");
    assert_eq!(report.metadata.message_id, id);

    let s = server.stats().await;
    assert_eq!((s.accepted, s.delivered), (1, 1));
    assert_eq!(server.handshakes_refused(), 0);
    // Pooled and kept alive over TLS too: four calls, one connection, one handshake.
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn localhost_is_a_name_of_the_server_certificate() {
    let pki = pki();
    let server = tls_sim(&pki.server, Some(&pki.ca)).await;
    let url = format!("https://localhost:{}", server.addr().port());
    let c = client(&url, Some(ClientTls::new(&pki.ca).with_client_cert(&pki.client.cert, &pki.client.key))).expect("a client");
    c.create_message_id(&author()).await.expect("a MessageID over https://localhost");
}

/// The refusal test: switch the simulator's client-CA check off (`with_no_client_auth` in
/// `ServerTls::rustls_config`) and this fails, the foreign certificate getting through.
#[tokio::test]
async fn a_client_certificate_of_another_ca_is_refused() {
    let pki = pki();
    let server = tls_sim(&pki.server, Some(&pki.ca)).await;
    let c = client(&server.url(), Some(ClientTls::new(&pki.ca).with_client_cert(&pki.other_client.cert, &pki.other_client.key))).expect("a client");

    let e = c.create_message_id(&author()).await.expect_err("refused");
    assert!(matches!(e, XtaError::Tls(_)), "{e:?}");
    let text = e.to_string();
    assert!(text.starts_with("TLS") && text.contains("refused our client certificate") && text.contains("xta.client_cert"), "{text}");
    assert_eq!(e.retry(), Retry::Transient, "a refused certificate is retried, nothing goes to print for it");
    let id = MessageId::generate("test").expect("a MessageID");
    let e = c.send_message(&metadata(&id), &container()).await.expect_err("refused");
    assert!(matches!(e, XtaError::Tls(_)), "{e:?}");

    let s = server.stats().await;
    assert_eq!((s.accepted, s.delivered), (0, 0), "nothing reached the operations");
    assert_eq!(refused(&server, 2).await, 2);
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let pki = pki();
    let server = tls_sim(&pki.server, Some(&pki.ca)).await;
    let c = client(&server.url(), Some(ClientTls::new(&pki.ca))).expect("a client");
    let e = c.check_account_active(&author()).await.expect_err("refused");
    assert!(matches!(e, XtaError::Tls(_)), "{e:?}");
    assert!(e.to_string().contains("requires a client certificate"), "{e}");
    assert_eq!(server.stats().await.accepted, 0);
    assert_eq!(refused(&server, 1).await, 1);

    // Without a client CA the same client is served (the check is what refused it).
    let open = tls_sim(&pki.server, None).await;
    client(&open.url(), Some(ClientTls::new(&pki.ca))).expect("a client").check_account_active(&author()).await.expect("served");
}

#[tokio::test]
async fn a_server_certificate_not_signed_by_the_configured_ca_is_refused() {
    let pki = pki();
    let server = tls_sim(&pki.other_server, None).await;
    let c = client(&server.url(), Some(ClientTls::new(&pki.ca).with_client_cert(&pki.client.cert, &pki.client.key))).expect("a client");
    let e = c.create_message_id(&author()).await.expect_err("not trusted");
    assert!(matches!(e, XtaError::Tls(_)), "{e:?}");
    assert!(e.to_string().contains("server's certificate is not trusted") && e.to_string().contains("xta.ca_file"), "{e}");
    assert_eq!(e.retry(), Retry::Transient);
    assert_eq!(server.stats().await.accepted, 0);

    // Trusting the other CA, it is served.
    let c = client(&server.url(), Some(ClientTls::new(&pki.other_ca))).expect("a client");
    c.create_message_id(&author()).await.expect("trusted now");
}

#[tokio::test]
async fn tls_settings_that_cannot_be_used_are_named() {
    let pki = pki();
    // https without a CA.
    let e = client("https://127.0.0.1:1", None).err().expect("no CA");
    assert!(matches!(e, XtaError::Config(_)) && e.to_string().contains("xta.ca_file"), "{e}");
    assert_eq!(e.retry(), Retry::Permanent);
    // An unreadable key file.
    let missing = pki.server.key.with_file_name("no-such.key");
    let e = client("https://127.0.0.1:1", Some(ClientTls::new(&pki.ca).with_client_cert(&pki.client.cert, &missing))).err().expect("no key");
    assert!(matches!(e, XtaError::TlsSetup(_)), "{e:?}");
    let text = e.to_string();
    assert!(text.contains("xta.client_key") && text.contains(&missing.display().to_string()) && text.contains("cannot read"), "{text}");
    // A key that is not the certificate's.
    let e = client("https://127.0.0.1:1", Some(ClientTls::new(&pki.ca).with_client_cert(&pki.client.cert, &pki.other_client.key))).err().expect("mismatch");
    assert!(e.to_string().contains("does not belong") && e.to_string().contains("xta.client_key"), "{e}");
    // A file with no key in it, and a CA file with no certificate.
    let e = client("https://127.0.0.1:1", Some(ClientTls::new(&pki.ca).with_client_cert(&pki.client.cert, &pki.client.cert))).err().expect("no key");
    assert!(e.to_string().contains("no PEM private key"), "{e}");
    let e = client("https://127.0.0.1:1", Some(ClientTls::new(&pki.client.key))).err().expect("no certificate");
    assert!(e.to_string().contains("xta.ca_file") && e.to_string().contains("no PEM certificate"), "{e}");
    // The simulator's own: an error before it binds.
    let tls = ServerTls::new(&pki.server.cert, &missing);
    let e = SimServer::start("127.0.0.1:0", SimConfig { tls: Some(tls), ..SimConfig::default() }).await.err().expect("no key");
    assert!(e.to_string().contains("--tls-key"), "{e}");
    // Nothing of a key in any message.
    let key_text = std::fs::read_to_string(&pki.client.key).expect("read");
    let body = key_text.lines().nth(1).expect("a base64 line");
    assert!(!text.contains(body));
}

/// A client that opens a connection and never says a word: it holds neither the accept loop
/// (another client is served meanwhile) nor its connection past the handshake timeout.
#[tokio::test]
async fn a_stalled_handshake_blocks_nobody_and_times_out() {
    use tokio::io::AsyncReadExt;
    let pki = pki();
    let mut tls = ServerTls::new(&pki.server.cert, &pki.server.key).with_client_ca(&pki.ca);
    tls.handshake_timeout = Duration::from_millis(300);
    let server = SimServer::start("127.0.0.1:0", SimConfig { tls: Some(tls), ..SimConfig::default() }).await.expect("listens");
    let mut silent = tokio::net::TcpStream::connect(server.addr()).await.expect("connects");
    let c = client(&server.url(), Some(ClientTls::new(&pki.ca).with_client_cert(&pki.client.cert, &pki.client.key))).expect("a client");
    c.create_message_id(&author()).await.expect("served while the other one stalls");
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf)).await.expect("closed within 5 s");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert_eq!(refused(&server, 1).await, 1);
}

/// The binary: `amtsbote xta-sim --tls-cert --tls-key --client-ca` answers over TLS to the
/// right client certificate and refuses a client without one.
#[tokio::test]
async fn the_xta_sim_command_speaks_mutual_tls() {
    let pki = pki();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_amtsbote"))
        .args(["xta-sim", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&pki.server.cert)
        .arg("--tls-key")
        .arg(&pki.server.key)
        .arg("--client-ca")
        .arg(&pki.ca)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("amtsbote starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout);
    let mut first = String::new();
    tokio::time::timeout(Duration::from_secs(20), tokio::io::AsyncBufReadExt::read_line(&mut lines, &mut first))
        .await
        .expect("the address within 20 s")
        .expect("a line");
    let url = first.trim().rsplit(' ').next().expect("an address").to_owned();
    assert!(url.starts_with("https://127.0.0.1:"), "{first}");

    let c = client(&url, Some(ClientTls::new(&pki.ca).with_client_cert(&pki.client.cert, &pki.client.key))).expect("a client");
    let id = c.create_message_id(&author()).await.expect("a MessageID over mutual TLS");
    c.send_message(&metadata(&id), &container()).await.expect("sent");
    let e = client(&url, Some(ClientTls::new(&pki.ca))).expect("a client").create_message_id(&author()).await.expect_err("no certificate");
    assert!(matches!(e, XtaError::Tls(_)), "{e:?}");
    child.kill().await.expect("stopped");

    // A key file that cannot be read: a clear error, exit code not 0.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_amtsbote"))
        .args(["xta-sim", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&pki.server.cert)
        .args(["--tls-key", "/nonexistent/server.key"])
        .output()
        .await
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--tls-key") && err.contains("/nonexistent/server.key"), "{err}");
}
