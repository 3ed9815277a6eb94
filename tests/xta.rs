//! The XTA client against the XTA simulator, over real sockets on loopback: every operation,
//! duplicates, injected faults and their classes, transport reports, MTOM, hostile replies,
//! and the envelopes on the wire validated against the published schemas with xmllint
//! (skipped when ../shared/reference/xta2-v3 or xmllint is absent; in CI their absence fails).

use std::path::{Path, PathBuf};
use std::time::Duration;

use amtsbote::xta::client::{ClientConfig, XtaClient};
use amtsbote::xta::fault::{FaultKind, Phase, Retry, XtaError};
use amtsbote::xta::sim::{InjectedFault, PermanentFault, ReaderConfig, SimConfig, SimFile, SimServer, Stats};
use amtsbote::xta::soap::{
    self, Availability, Content, ContentContainer, Identifier, MessageId, MessageMetaData, Reply, Request,
    Response, TransportStatus,
};
use amtsbote::xta::xml::Limits;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SERVICE: &str = "urn:xoev-de:xamtshilfe:xamtshilfe";

fn author() -> Identifier {
    Identifier::xoev("vbk:tenant-a")
}

fn reader() -> Identifier {
    Identifier::xoev("vbk:authority-b")
}

fn request_bytes(uuid: &str, marker: &str) -> Vec<u8> {
    format!(
        "<vollstreckungshilfe.ersuchen.0101><nachrichtenkopf.g2g><identifikation.nachricht><nachrichtenUUID>{uuid}</nachrichtenUUID></identifikation.nachricht></nachrichtenkopf.g2g><x>{marker}</x></vollstreckungshilfe.ersuchen.0101>"
    )
    .into_bytes()
}

fn container(data: Vec<u8>) -> ContentContainer {
    ContentContainer { message: Content { content_type: "application/xml".into(), filename: Some("ersuchen.xml".into()), data }, attachments: Vec::new() }
}

fn metadata(id: &MessageId, to: &Identifier) -> MessageMetaData {
    MessageMetaData::xamtshilfe(author(), to.clone(), id.clone(), SERVICE.into(), "vollstreckungshilfe.ersuchen.0101".into(), true, None)
}

async fn sim(config: SimConfig) -> SimServer {
    SimServer::start("127.0.0.1:0", config).await.expect("the simulator listens")
}

fn client(url: &str, response_timeout: Duration) -> XtaClient {
    let mut config = ClientConfig::new(url);
    config.response_timeout = response_timeout;
    config.connect_timeout = Duration::from_secs(2);
    XtaClient::new(config).expect("a valid client configuration")
}

/// A raw HTTP client, to read /stats and to post to /inbox without the XTA client.
async fn http(method: &str, url: &str, content_type: &str, body: Vec<u8>) -> (u16, Option<String>, Bytes) {
    let http: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = hyper::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("a valid request");
    let resp = http.request(req).await.expect("the server answers");
    let status = resp.status().as_u16();
    let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_owned);
    (status, ct, resp.into_body().collect().await.expect("the whole body").to_bytes())
}

async fn stats(server: &SimServer) -> Stats {
    let (status, _, body) = http("GET", &format!("{}/stats", server.url()), "text/plain", Vec::new()).await;
    assert_eq!(status, 200);
    serde_json::from_slice(&body).expect("stats are JSON")
}

#[tokio::test]
async fn every_operation_on_the_happy_path() {
    let server = sim(SimConfig { report_delay: Duration::from_secs(3600), ..SimConfig::default() }).await;
    let c = client(&server.url(), Duration::from_secs(5));

    c.check_account_active(&author()).await.expect("the account is active");
    let lookup = c.lookup_service(&author(), &reader(), SERVICE).await.expect("lookup answers");
    assert_eq!(lookup.availability, Availability::Available);
    let id = c.create_message_id(&author()).await.expect("a MessageID");
    assert!(id.as_str().starts_with("urn:de:xta:messageid:"));

    let data = request_bytes("0e0b3c1a-2d2b-4a0e-9f43-7d8f3c1b2a10", "1");
    c.send_message(&metadata(&id, &reader()), &container(data.clone())).await.expect("sent");
    let report = c.get_transport_report(&author(), &id).await.expect("a report");
    assert_eq!(report.status, TransportStatus::Open);
    assert_eq!(report.metadata.message_id, id);
    assert!(report.metadata.test_msg, "TestMsg travels with the message");

    let (msgbox, entries) = c.get_status_list(&reader(), Some(10)).await.expect("a status list");
    assert_eq!(entries.iter().map(|m| &m.message_id).collect::<Vec<_>>(), vec![&id]);
    assert!(!msgbox.request_id.is_empty());
    let fetched = c.get_message(&reader(), &id).await.expect("the message");
    assert_eq!(fetched.container.message.data, data);
    assert_eq!(fetched.metadata.author, author());
    c.close(&reader(), &fetched.msgbox.request_id, std::slice::from_ref(&id)).await.expect("closed");
    let (_, entries) = c.get_status_list(&reader(), None).await.expect("a status list");
    assert!(entries.is_empty(), "a closed message leaves the box");

    let s = stats(&server).await;
    assert_eq!((s.accepted, s.delivered, s.resends, s.same_content_twice, s.fetched, s.closed), (1, 1, 0, 0, 1, 1));
    assert!(s.faults.is_empty(), "{:?}", s.faults);
}

#[tokio::test]
async fn lookup_answers_false_and_unknown() {
    let file = SimFile {
        accounts: None,
        readers: vec![ReaderConfig { id: reader().value, available: vec!["urn:other".into()], unknown: vec![SERVICE.into()], permanent_fault: None, report: Default::default() }],
    };
    let server = sim(SimConfig { file, ..SimConfig::default() }).await;
    let c = client(&server.url(), Duration::from_secs(5));
    let unknown = c.lookup_service(&author(), &reader(), SERVICE).await.expect("lookup answers");
    assert_eq!(unknown.availability, Availability::Unknown);
    let other = c.lookup_service(&author(), &reader(), "urn:other").await.expect("lookup answers");
    assert_eq!(other.availability, Availability::Available);
    let not = c.lookup_service(&author(), &reader(), "urn:third").await.expect("lookup answers");
    assert_eq!(not.availability, Availability::NotAvailable);
    let nobody = c.lookup_service(&author(), &Identifier::xoev("vbk:nobody"), SERVICE).await.expect("lookup answers");
    assert_eq!(nobody.availability, Availability::NotAvailable);
}

#[tokio::test]
async fn a_resent_message_id_is_delivered_once_and_same_content_is_noticed() {
    let server = sim(SimConfig::default()).await;
    let c = client(&server.url(), Duration::from_secs(5));
    let id = c.create_message_id(&author()).await.expect("a MessageID");
    let data = request_bytes("1e0b3c1a-2d2b-4a0e-9f43-7d8f3c1b2a10", "1");
    c.send_message(&metadata(&id, &reader()), &container(data.clone())).await.expect("sent");
    c.send_message(&metadata(&id, &reader()), &container(data)).await.expect("a re-send is accepted");
    let s = stats(&server).await;
    assert_eq!((s.accepted, s.delivered, s.resends, s.same_content_twice), (2, 1, 1, 0));
    let (_, entries) = c.get_status_list(&reader(), None).await.expect("a status list");
    assert_eq!(entries.len(), 1, "never delivered twice");

    // A second MessageID with the same Nachrichten-UUID (other bytes) is the failure to count.
    let id2 = c.create_message_id(&author()).await.expect("a MessageID");
    c.send_message(&metadata(&id2, &reader()), &container(request_bytes("1E0B3C1A-2D2B-4A0E-9F43-7D8F3C1B2A10", "2"))).await.expect("sent");
    let s = stats(&server).await;
    assert_eq!((s.delivered, s.same_content_twice), (2, 1));
}

/// A simulator whose every SOAP request gets `kind`.
async fn faulty(kind: InjectedFault) -> SimServer {
    sim(SimConfig { fault_rate: 1.0, faults: vec![kind], slow: Duration::from_secs(3), ..SimConfig::default() }).await
}

#[tokio::test]
async fn injected_faults_are_transient() {
    let s503 = faulty(InjectedFault::Unavailable).await;
    let e = client(&s503.url(), Duration::from_secs(5)).check_account_active(&author()).await.expect_err("503");
    assert!(matches!(e, XtaError::Http { status: 503 }), "{e:?}");
    assert_eq!(e.retry(), Retry::Transient);

    let tech = faulty(InjectedFault::Technical).await;
    let e = client(&tech.url(), Duration::from_secs(5)).create_message_id(&author()).await.expect_err("technical fault");
    assert_eq!(e.fault_kind(), Some(FaultKind::TechnicalProblem), "{e:?}");
    assert!(matches!(&e, XtaError::Fault(f) if f.code == Some(9030)));
    assert_eq!(e.retry(), Retry::Transient);

    let slow = faulty(InjectedFault::Slow).await;
    let e = client(&slow.url(), Duration::from_millis(300)).check_account_active(&author()).await.expect_err("too slow");
    assert!(matches!(e, XtaError::Timeout { phase: Phase::Response, .. }), "{e:?}");
    assert_eq!(e.retry(), Retry::Transient);

    let drop = faulty(InjectedFault::Drop).await;
    let c = client(&drop.url(), Duration::from_secs(5));
    let id = MessageId::generate("test").expect("a MessageID");
    let e = c.send_message(&metadata(&id, &reader()), &container(b"<a/>".to_vec())).await.expect_err("dropped");
    assert!(matches!(e, XtaError::Connection(_)), "{e:?}");
    assert_eq!(e.retry(), Retry::Transient);
    // The request was processed before its answer was lost: a re-send is a resend.
    let e2 = c.send_message(&metadata(&id, &reader()), &container(b"<a/>".to_vec())).await.expect_err("dropped again");
    assert!(e2.is_transient());
    let s = stats(&drop).await;
    assert_eq!((s.delivered, s.resends, s.faults.get("drop").copied()), (1, 1, Some(2)));
    assert_eq!(stats(&s503).await.faults.get("503").copied(), Some(1));
}

#[tokio::test]
async fn permission_and_reader_faults_are_permanent() {
    let file = SimFile {
        accounts: Some(vec![author().value]),
        readers: vec![
            ReaderConfig { id: reader().value, available: vec!["*".into()], unknown: vec![], permanent_fault: Some(PermanentFault::Schema), report: Default::default() },
            ReaderConfig { id: "vbk:virus".into(), available: vec!["*".into()], unknown: vec![], permanent_fault: Some(PermanentFault::Virus), report: Default::default() },
        ],
    };
    let server = sim(SimConfig { file, ..SimConfig::default() }).await;
    let c = client(&server.url(), Duration::from_secs(5));
    let e = c.check_account_active(&Identifier::xoev("vbk:stranger")).await.expect_err("not an account");
    assert_eq!(e.fault_kind(), Some(FaultKind::PermissionDenied), "{e:?}");
    assert_eq!(e.retry(), Retry::Permanent);
    c.check_account_active(&author()).await.expect("an account");

    let id = c.create_message_id(&author()).await.expect("a MessageID");
    let e = c.send_message(&metadata(&id, &reader()), &container(b"<a/>".to_vec())).await.expect_err("schema fault");
    assert_eq!(e.fault_kind(), Some(FaultKind::MessageSchemaViolation), "{e:?}");
    assert_eq!(e.retry(), Retry::Permanent);
    let e = c.send_message(&metadata(&id, &Identifier::xoev("vbk:virus")), &container(b"<a/>".to_vec())).await.expect_err("virus fault");
    assert_eq!(e.fault_kind(), Some(FaultKind::MessageVirusDetection), "{e:?}");
    assert_eq!(e.retry(), Retry::Permanent);
    let e = c.get_transport_report(&author(), &id).await.expect_err("never accepted");
    assert_eq!(e.fault_kind(), Some(FaultKind::InvalidMessageId), "{e:?}");
    assert_eq!(stats(&server).await.faults.get("permanent").copied(), Some(2));
}

#[tokio::test]
async fn an_outage_answers_503_until_it_ends() {
    let server = sim(SimConfig { outage_after: Some(Duration::ZERO), outage_for: Duration::from_millis(700), ..SimConfig::default() }).await;
    let c = client(&server.url(), Duration::from_secs(5));
    let e = c.check_account_active(&author()).await.expect_err("outage");
    assert!(matches!(e, XtaError::Http { status: 503 }) && e.is_transient(), "{e:?}");
    tokio::time::sleep(Duration::from_millis(900)).await;
    c.check_account_active(&author()).await.expect("over");
    assert_eq!(stats(&server).await.faults.get("outage").copied(), Some(1));
}

#[tokio::test]
async fn the_transport_report_turns_green_after_the_delay() {
    let server = sim(SimConfig { report_delay: Duration::from_millis(400), ..SimConfig::default() }).await;
    let c = client(&server.url(), Duration::from_secs(5));
    let id = c.create_message_id(&author()).await.expect("a MessageID");
    c.send_message(&metadata(&id, &reader()), &container(b"<a/>".to_vec())).await.expect("sent");
    assert_eq!(c.get_transport_report(&author(), &id).await.expect("a report").status, TransportStatus::Open);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = c.get_transport_report(&author(), &id).await.expect("a report");
    assert_eq!(report.status, TransportStatus::Green);
    assert_eq!(report.status.code(), 1);
}

#[tokio::test]
async fn a_restarted_simulator_with_a_state_file_still_knows_what_it_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("sim/accepted.jsonl");
    let config = || SimConfig { report_delay: Duration::ZERO, state_file: Some(state_file.clone()), ..SimConfig::default() };
    let first = sim(config()).await;
    let c = client(&first.url(), Duration::from_secs(5));
    let id = c.create_message_id(&author()).await.expect("a MessageID");
    let content = request_bytes("5a1c7e2b-3d4f-4a6b-8c9d-0e1f2a3b4c5d", "kept");
    c.send_message(&metadata(&id, &reader()), &container(content.clone())).await.expect("sent");
    first.stop().await.unwrap();

    let second = sim(config()).await;
    let c = client(&second.url(), Duration::from_secs(5));
    assert_eq!(c.get_transport_report(&author(), &id).await.expect("a report of the first run").status, TransportStatus::Green);
    // Sent again under its MessageID: a re-send; under a new one: the same content twice.
    c.send_message(&metadata(&id, &reader()), &container(content.clone())).await.expect("re-sent");
    let other = c.create_message_id(&author()).await.expect("a MessageID");
    c.send_message(&metadata(&other, &reader()), &container(content)).await.expect("sent");
    let s = stats(&second).await;
    assert_eq!((s.resends, s.delivered, s.same_content_twice), (1, 1, 1), "{s:?}");
}

#[tokio::test]
async fn an_mtom_reply_is_read() {
    let server = sim(SimConfig { mtom: true, ..SimConfig::default() }).await;
    // Binary content with bytes that would break a text reading.
    let mut data = request_bytes("2e0b3c1a-2d2b-4a0e-9f43-7d8f3c1b2a10", "mtom");
    data.extend_from_slice(&[0, 159, 146, 150, 13, 10, 45, 45]);
    let (status, _, body) = http("POST", &format!("{}/inbox/{}", server.url(), reader().value), "application/xml", data.clone()).await;
    assert_eq!(status, 201);
    let posted: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    let id = MessageId::parse(posted["message_id"].as_str().expect("a message_id")).expect("a MessageID");

    let c = client(&server.url(), Duration::from_secs(5));
    let fetched = c.get_message(&reader(), &id).await.expect("the message");
    assert_eq!(fetched.container.message.data, data);

    // And the raw answer really was multipart/related with an xop:Include.
    let request = soap::write_request(&Request::GetMessage { author: reader(), message_id: id }, "x");
    let (_, ct, body) = http("POST", &format!("{}/MsgBoxPort", server.url()), &request.content_type, request.body).await;
    assert!(ct.as_deref().is_some_and(|ct| ct.starts_with("multipart/related")), "{ct:?}");
    assert!(memchr::memmem::find(&body, b"xop:Include").is_some());
}

/// A server that answers every request with `response` (raw HTTP) and then closes.
async fn hostile(response: Vec<u8>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let response = response.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let _ = stream.read(&mut buf).await;
                let _ = stream.write_all(&response).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

fn http_response(body: &str) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\ncontent-type: application/soap+xml; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len()).into_bytes()
}

#[tokio::test]
async fn hostile_replies_are_refused_with_a_clear_error() {
    let doctype = r#"<?xml version="1.0"?><!DOCTYPE lol [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]><s12:Envelope xmlns:s12="http://www.w3.org/2003/05/soap-envelope"><s12:Body>&lol2;</s12:Body></s12:Envelope>"#;
    let url = hostile(http_response(doctype)).await;
    let e = client(&url, Duration::from_secs(5)).check_account_active(&author()).await.expect_err("DOCTYPE refused");
    assert!(matches!(e, XtaError::InvalidReply(_)) && e.to_string().contains("DOCTYPE"), "{e}");

    let entity = r#"<s12:Envelope xmlns:s12="http://www.w3.org/2003/05/soap-envelope"><s12:Body><x>&ext;</x></s12:Body></s12:Envelope>"#;
    let url = hostile(http_response(entity)).await;
    let e = client(&url, Duration::from_secs(5)).check_account_active(&author()).await.expect_err("entity refused");
    assert!(matches!(e, XtaError::InvalidReply(_)) && e.to_string().contains("entity"), "{e}");

    let deep = format!(
        r#"<s12:Envelope xmlns:s12="http://www.w3.org/2003/05/soap-envelope"><s12:Body>{}{}</s12:Body></s12:Envelope>"#,
        "<a>".repeat(100),
        "</a>".repeat(100)
    );
    let url = hostile(http_response(&deep)).await;
    let e = client(&url, Duration::from_secs(5)).check_account_active(&author()).await.expect_err("too deep");
    assert!(e.to_string().contains("nesting deeper than 64"), "{e}");

    let big = format!(r#"<s12:Envelope xmlns:s12="http://www.w3.org/2003/05/soap-envelope"><s12:Body><x>{}</x></s12:Body></s12:Envelope>"#, "A".repeat(20_000));
    let url = hostile(http_response(&big)).await;
    let mut config = ClientConfig::new(&url);
    config.limits = Limits { max_bytes: 10_000, ..Limits::default() };
    let e = XtaClient::new(config).expect("client").check_account_active(&author()).await.expect_err("too large");
    assert!(matches!(e, XtaError::InvalidReply(_)) && e.to_string().contains("too large"), "{e}");

    // Announced small, sent large (chunked, no length): cut off while it arrives.
    let chunked = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/soap+xml\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
        big.len()
    );
    let url = hostile(chunked.into_bytes()).await;
    let mut config = ClientConfig::new(&url);
    config.limits = Limits { max_bytes: 10_000, ..Limits::default() };
    let e = XtaClient::new(config).expect("client").check_account_active(&author()).await.expect_err("too large");
    assert!(e.to_string().contains("too large"), "{e}");

    let garbage = hostile(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n<a><".to_vec()).await;
    let e = client(&garbage, Duration::from_secs(5)).check_account_active(&author()).await.expect_err("garbage");
    assert!(e.is_transient(), "{e}");
}

// ───────────────────── the wire against the published schemas ─────────────────────

fn reference_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/xta2-v3");
    if dir.join("XTA.wsdl").is_file() {
        return Some(dir.canonicalize().unwrap_or(dir));
    }
    assert!(std::env::var("CI").as_deref() != Ok("true"), "CI must have ../shared/reference/xta2-v3");
    eprintln!("SKIPPED: ../shared/reference/xta2-v3 is absent, the envelopes are not checked against the schemas");
    None
}

fn xmllint_present() -> bool {
    let ok = std::process::Command::new("xmllint").arg("--version").output().is_ok_and(|o| o.status.success());
    if !ok {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI must have xmllint");
        eprintln!("SKIPPED: xmllint is absent");
    }
    ok
}

/// A schema that pulls in every namespace of the envelopes, so that xmllint validates the
/// SOAP envelope and, through its lax wildcards, every header block and body element.
fn wrapper_xsd(reference: &Path, dir: &Path) -> PathBuf {
    let r = |f: &str| format!("file://{}", reference.join(f).display());
    let xsd = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="http://xoev.de/transport/xta/211" elementFormDefault="qualified">
  <xs:import namespace="http://www.w3.org/2003/05/soap-envelope" schemaLocation="{}"/>
  <xs:import namespace="http://www.w3.org/2005/08/addressing" schemaLocation="{}"/>
  <xs:import namespace="http://www.osci.eu/ws/2014/10/transport" schemaLocation="{}"/>
  <xs:import namespace="http://www.osci.eu/ws/2008/05/transport" schemaLocation="{}"/>
  <xs:include schemaLocation="{}"/>
  <xs:include schemaLocation="{}"/>
</xs:schema>
"#,
        r(".xsd"),
        r("ws-addr.xsd"),
        r("OSCI_MessageMetaData_V2.02.xsd"),
        r("OSCI2_02.xsd"),
        r("XTA-Webservice-Globale-Elemente.xsd"),
        r("XTA-Webservice-Exceptions.xsd"),
    );
    let path = dir.join("xta-envelope.xsd");
    std::fs::write(&path, xsd).expect("write the wrapper schema");
    path
}

fn assert_valid(schema: &Path, files: &[PathBuf]) {
    assert!(!files.is_empty());
    let out = std::process::Command::new("xmllint").arg("--noout").arg("--schema").arg(schema).args(files).output().expect("xmllint runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "schema validation failed:\n{stderr}");
    assert_eq!(stderr.matches(" validates").count(), files.len(), "{stderr}");
}

#[tokio::test]
async fn the_wire_validates_against_the_reference_schemas() {
    let Some(reference) = reference_dir() else { return };
    if !xmllint_present() {
        return;
    }
    let tmp = tempfile::tempdir().expect("a temp dir");
    let schema = wrapper_xsd(&reference, tmp.path());
    let record = tmp.path().join("record");
    let answers = tmp.path().join("answers");
    std::fs::create_dir_all(&answers).expect("mkdir");
    let server = sim(SimConfig { record: Some(record.clone()), ..SimConfig::default() }).await;
    let url = server.url();

    // Every operation, posted raw so that each answer can be kept as it came.
    let mut n = 0;
    let mut post = async |request: Request| -> Response {
        let op = request.operation();
        let port = op.port().name();
        let encoded = soap::write_request(&request, &format!("{url}/{port}"));
        let (_, ct, body) = http("POST", &format!("{url}/{port}"), &encoded.content_type, encoded.body).await;
        n += 1;
        std::fs::write(answers.join(format!("{n:02}-{}.xml", op.name())), &body).expect("write");
        match soap::read_response(op, ct.as_deref(), &body, &Limits::default()).expect("a readable answer") {
            Reply::Ok(r) => r,
            Reply::Fault(f) => panic!("{} faulted: {f}", op.name()),
        }
    };
    post(Request::CheckAccountActive { author: author() }).await;
    post(Request::LookupService { author: author(), lookups: vec![(reader(), SERVICE.into())] }).await;
    let Response::MessageId(id) = post(Request::CreateMessageId { author: author() }).await else { panic!("no MessageID") };
    let data = request_bytes("3e0b3c1a-2d2b-4a0e-9f43-7d8f3c1b2a10", "schema");
    post(Request::SendMessage { metadata: Box::new(metadata(&id, &reader())), container: container(data) }).await;
    post(Request::GetTransportReport { author: author(), message_id: id.clone() }).await;
    post(Request::GetStatusList { author: reader(), max_items: Some(5) }).await;
    let Response::Message { msgbox, .. } = post(Request::GetMessage { author: reader(), message_id: id.clone() }).await else { panic!("no message") };
    post(Request::Close { author: reader(), request_id: msgbox.request_id, message_ids: vec![id] }).await;

    // A fault answer too.
    let unknown = MessageId::generate("test").expect("a MessageID");
    let encoded = soap::write_request(&Request::GetTransportReport { author: author(), message_id: unknown }, "x");
    let (status, _, body) = http("POST", &format!("{url}/ManagementPort"), &encoded.content_type, encoded.body).await;
    assert_eq!(status, 400);
    std::fs::write(answers.join("99-fault.xml"), &body).expect("write");

    let mut files: Vec<PathBuf> = std::fs::read_dir(&record).expect("recorded").chain(std::fs::read_dir(&answers).expect("answers")).map(|e| e.expect("entry").path()).collect();
    files.sort();
    assert_eq!(files.len(), 9 + 9, "{files:?}");
    assert_valid(&schema, &files);

    // The check bites: the send envelope without its Identifier's required @type fails.
    let send = files.iter().find(|f| f.to_string_lossy().ends_with("-sendMessage.xml") && f.starts_with(&record)).expect("a recorded send");
    let broken = std::fs::read_to_string(send).expect("read").replacen(r#"<oscimeta:Identifier type="xoev">"#, "<oscimeta:Identifier>", 1);
    let broken_path = tmp.path().join("broken.xml");
    std::fs::write(&broken_path, broken).expect("write");
    let out = std::process::Command::new("xmllint").arg("--noout").arg("--schema").arg(&schema).arg(&broken_path).output().expect("xmllint runs");
    assert!(!out.status.success(), "a broken envelope must fail the schema");

    // What the client itself sends goes through the same writer: record one client call of
    // each kind and check it too.
    let client_record = tmp.path().join("client-record");
    let server = sim(SimConfig { record: Some(client_record.clone()), ..SimConfig::default() }).await;
    let c = client(&server.url(), Duration::from_secs(5));
    c.check_account_active(&author()).await.expect("ok");
    let id = c.create_message_id(&author()).await.expect("id");
    c.send_message(&metadata(&id, &reader()), &container(b"<a/>".to_vec())).await.expect("sent");
    let fetched = c.get_message(&reader(), &id).await.expect("fetched");
    c.close(&reader(), &fetched.msgbox.request_id, &[id]).await.expect("closed");
    let files: Vec<PathBuf> = std::fs::read_dir(&client_record).expect("recorded").map(|e| e.expect("entry").path()).collect();
    assert_eq!(files.len(), 5);
    assert_valid(&schema, &files);
}

#[tokio::test]
async fn the_same_seed_injects_the_same_faults() {
    async fn outcomes(seed: u64) -> Vec<String> {
        let config = SimConfig { fault_rate: 0.5, faults: vec![InjectedFault::Unavailable, InjectedFault::Technical], seed, ..SimConfig::default() };
        let server = sim(config).await;
        let c = client(&server.url(), Duration::from_secs(5));
        let mut out = Vec::new();
        for _ in 0..40 {
            out.push(match c.check_account_active(&author()).await {
                Ok(()) => "ok".to_owned(),
                Err(XtaError::Http { status }) => status.to_string(),
                Err(e) => format!("{:?}", e.fault_kind()),
            });
        }
        out
    }
    let a = outcomes(42).await;
    assert_eq!(a, outcomes(42).await);
    assert_ne!(a, outcomes(43).await);
    for kind in ["ok", "503", "Some(TechnicalProblem)"] {
        assert!(a.iter().any(|o| o == kind), "{kind} never came: {a:?}");
    }
}

/// The binary itself: `amtsbote xta-sim` with a readers file, reached over its printed address.
#[tokio::test]
async fn the_xta_sim_command_serves_its_readers_file() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let readers = tmp.path().join("readers.toml");
    std::fs::write(
        &readers,
        format!("accounts = [\"{}\"]\n\n[[readers]]\nid = \"{}\"\navailable = [\"{SERVICE}\"]\npermanent_fault = \"virus\"\n", author().value, reader().value),
    )
    .expect("write");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_amtsbote"))
        .args(["xta-sim", "--listen", "127.0.0.1:0", "--readers"])
        .arg(&readers)
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
    assert!(url.starts_with("http://127.0.0.1:"), "{first}");

    let c = client(&url, Duration::from_secs(5));
    let found = c.lookup_service(&author(), &reader(), SERVICE).await.expect("lookup answers");
    assert_eq!(found.availability, Availability::Available);
    let e = c.check_account_active(&Identifier::xoev("vbk:stranger")).await.expect_err("not an account");
    assert_eq!(e.fault_kind(), Some(FaultKind::PermissionDenied));
    let id = c.create_message_id(&author()).await.expect("a MessageID");
    let e = c.send_message(&metadata(&id, &reader()), &container(b"<a/>".to_vec())).await.expect_err("the reader's permanent fault");
    assert_eq!(e.fault_kind(), Some(FaultKind::MessageVirusDetection));
    let (status, _, body) = http("GET", &format!("{url}/stats"), "text/plain", Vec::new()).await;
    assert_eq!(status, 200);
    let s: Stats = serde_json::from_slice(&body).expect("JSON");
    assert_eq!((s.accepted, s.delivered, s.faults.get("permanent").copied()), (0, 0, Some(1)));
    child.kill().await.expect("stopped");
}

#[tokio::test]
async fn calls_share_a_kept_alive_connection() {
    let server = sim(SimConfig::default()).await;
    let c = client(&server.url(), Duration::from_secs(5));
    for _ in 0..20 {
        c.check_account_active(&author()).await.expect("ok");
        c.create_message_id(&author()).await.expect("id");
    }
    // Sequential calls on one client: one connection, kept alive (three ports, one host).
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let e = client(&url, Duration::from_secs(5)).check_account_active(&author()).await.expect_err("nobody listens");
    assert!(matches!(e, XtaError::Connection(_)), "{e:?}");
    assert_eq!(e.retry(), Retry::Transient);
}
