//! Large messages through the real `amtsbote serve` and the XTA simulator (issue 13):
//! nothing stuck when an attempt outlasts its queue's timeout, and the simulator keeps the
//! content of what it accepted on disk, not in memory.

#[path = "support/serve.rs"]
mod serve_support;

use std::path::Path;
use std::time::Duration;

use amtsbote::ledger::{self, RequestState};
use amtsbote::queue::Queue;
use amtsbote::xta::client::{ClientConfig, XtaClient};
use amtsbote::xta::sim::{SimConfig, SimServer};
use amtsbote::xta::soap::{Content, ContentContainer, Identifier, MessageMetaData};
use serve_support::*;

/// The sample request with an attached "PDF" of `raw_bytes` (base64 in the message).
fn large_request(n: u32, raw_bytes: usize) -> String {
    use base64::Engine as _;
    let text = request(n);
    let start = text.find("application/pdf\">").expect("the sample has a PDF attachment") + "application/pdf\">".len();
    let end = start + text[start..].find("</anhang>").expect("the attachment ends");
    let mut raw = b"%PDF-1.4\n".to_vec();
    raw.resize(raw_bytes, b'x');
    format!("{}{}{}", &text[..start], base64::engine::general_purpose::STANDARD.encode(raw), &text[end..])
}

/// Files in `dir` (none when it does not exist).
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir).map(|rd| rd.flatten().map(|e| e.path()).collect()).unwrap_or_default()
}

/// Several large requests at once, each of whose first routing attempt outlasts the route
/// queue's timeout (`AMTSBOTE_TEST_STALL` holds it 8 s; the timeout is 5 s), as a 38 MB
/// message did on a loaded machine: every one is routed by its next attempt and transmitted
/// to the built-in simulator. Before the harness enforced the timeout itself, apalis'
/// timeout left each such job `Running` for good and its request in `validated`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_requests_whose_routing_outlasts_the_timeout_are_not_stuck() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let jobs = root.join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    // A test independent of the time of day: no nightly print batch in this serve.
    let shipped = Queue::Print.default_config();
    std::fs::write(jobs.join("print.toml"), &shipped[..shipped.find("[schedule]").unwrap()]).unwrap();
    let route = quick_backoff(Queue::Route, 0.2).replace("timeout_secs = 300", "timeout_secs = 5");
    assert!(route.contains("timeout_secs = 5\n"), "the shipped route.toml changed: {route}");
    std::fs::write(jobs.join("route.toml"), route).unwrap();

    let url = format!("sqlite:{}", root.join("ledger.sqlite").display());
    // No AMTSBOTE_XTA_URL: the embedded default, with the built-in simulator.
    let serve = Serve::new(root, &url).env("AMTSBOTE_TEST_STALL", "route:8000");
    let _child = serve.start_and_wait().await;

    const N: u32 = 4;
    let inbox = root.join("inbox/demo");
    let staging = root.join("staging");
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::create_dir_all(&staging).unwrap();
    for n in 0..N {
        std::fs::write(staging.join(format!("large{n}.xml")), large_request(n, 2 << 20)).unwrap();
    }
    for n in 0..N {
        std::fs::rename(staging.join(format!("large{n}.xml")), inbox.join(format!("large{n}.xml"))).unwrap();
    }

    let ledger = ledger::open(&url).await.unwrap();
    wait_for(Duration::from_secs(60), "the large requests taken in", || async { ledger.count_by_state().await.map(|c| c.iter().map(|(_, n)| n).sum::<u64>()).unwrap_or(0) == u64::from(N) }).await;
    assert_eq!(count(&*ledger, RequestState::Rejected).await, 0, "the large requests are valid");
    wait_for(Duration::from_secs(180), "every large request out of validated and sent to the simulator", || async {
        count(&*ledger, RequestState::Transmitted).await + count(&*ledger, RequestState::Delivered).await == u64::from(N)
    })
    .await;
    assert_eq!(count(&*ledger, RequestState::Validated).await, 0);

    // The simulator inside serve keeps what it accepted in files of the data directory.
    let boxed = files(&root.join("xta-sim/boxes"));
    assert_eq!(boxed.len(), N as usize, "one box file per accepted message: {boxed:?}");
    for file in &boxed {
        assert!(std::fs::metadata(file).unwrap().len() > 2 << 20, "{} holds the message", file.display());
    }
}

/// With a box directory the simulator holds no content in memory after accepting a
/// message; getMessage reads it back whole, and close removes its file.
#[tokio::test]
async fn the_simulator_keeps_accepted_content_on_disk_not_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let boxes = dir.path().join("boxes");
    let server = SimServer::start("127.0.0.1:0", SimConfig { box_dir: Some(boxes.clone()), ..SimConfig::default() }).await.unwrap();
    let mut config = ClientConfig::new(&server.url());
    config.response_timeout = Duration::from_secs(60);
    let client = XtaClient::new(config).unwrap();

    let author = Identifier::xoev("vbk:tenant-a");
    let reader = Identifier::xoev("vbk:authority-b");
    let data = large_request(1, 2 << 20).into_bytes();
    let attachment = vec![7u8; 1000];
    let id = client.create_message_id(&author).await.unwrap();
    let metadata = MessageMetaData::xamtshilfe(author, reader.clone(), id.clone(), "urn:xoev-de:xamtshilfe:xamtshilfe".into(), "vollstreckungshilfe.ersuchen.0101".into(), false, None);
    let container = ContentContainer {
        message: Content { content_type: "application/xml".into(), filename: Some("ersuchen.xml".into()), data: data.clone() },
        attachments: vec![Content { content_type: "application/octet-stream".into(), filename: Some("a.bin".into()), data: attachment.clone() }],
    };
    client.send_message(&metadata, &container).await.unwrap();
    // A re-send (same MessageID) keeps nothing more.
    client.send_message(&metadata, &container).await.unwrap();

    assert_eq!(server.content_bytes_in_memory().await, 0, "the accepted content is not held in memory");
    assert_eq!(files(&boxes).len(), 1, "one file for the one message");

    let (_, listed) = client.get_status_list(&reader, None).await.unwrap();
    assert_eq!(listed.len(), 1);
    let fetched = client.get_message(&reader, &id).await.unwrap();
    assert_eq!(fetched.container.message.data, data, "the message read back whole");
    assert_eq!(fetched.container.attachments.len(), 1);
    assert_eq!(fetched.container.attachments[0].data, attachment);
    assert_eq!(server.content_bytes_in_memory().await, 0, "fetching does not keep it in memory");

    client.close(&reader, &fetched.msgbox.request_id, &[id]).await.unwrap();
    assert!(files(&boxes).is_empty(), "close removes the file");
}
