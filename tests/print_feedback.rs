//! The print centre's feedback with the real binary: `amtsbote print-batch reconcile FILE`
//! moves letters handed over to `posted` and sends those with an error back into the next
//! night's batch; a file with any bad line records nothing and names each bad line; the
//! same file twice changes nothing; `print-batch list` and `show --json` tell what came back.

use std::path::Path;

use amtsbote::ledger::{Ledger, RequestId, RequestState};

#[path = "support/serve.rs"]
mod serve_support;
#[path = "support/print.rs"]
mod print_support;
use print_support::*;

/// Three requests for Köln (letters 2, 3, 4 of B20261201; the test letter for Hamburg is 1),
/// printed in the batch of 2026-12-01.
async fn printed(root: &Path) -> (String, std::sync::Arc<dyn Ledger>) {
    let (url, ledger) = awaiting_print(root, 3).await;
    let (code, out, err) = amtsbote_out(root, &url, &["print-batch", "run", "--date", "2026-12-01"], &[]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("4 letters (1 test letters"), "the summary at the end: {out}");
    // stderr is no terminal here: no progress bar, nothing at all.
    assert_eq!(err, "", "stderr of a run that is not on a terminal");
    (url, ledger)
}

fn json(root: &Path, url: &str, args: &[&str]) -> serde_json::Value {
    let (code, out, err) = amtsbote_out(root, url, args, &[]);
    assert_eq!(code, Some(0), "{out}{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The request of a letter of B20261201, from `show --json`.
fn request_of(show: &serde_json::Value, letter: u64) -> RequestId {
    let l = show["letters"].as_array().unwrap().iter().find(|l| l["letter_number"] == letter).unwrap();
    RequestId(l["request_id"].as_i64().unwrap())
}

async fn state(ledger: &dyn Ledger, id: RequestId) -> RequestState {
    ledger.get(id).await.unwrap().unwrap().state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handed_over_is_posted_an_error_goes_into_the_next_batch_and_the_same_file_twice_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (url, ledger) = printed(root).await;
    let show = json(root, &url, &["print-batch", "show", "2026-12-01", "--json"]);
    let (two, three, four) = (request_of(&show, 2), request_of(&show, 3), request_of(&show, 4));

    // Named after its batch, so plain letter numbers are B20261201's; one line names its
    // batch itself. CRLF, as a print centre on Windows writes it.
    let file = root.join("B20261201-001.feedback.csv");
    std::fs::write(
        &file,
        "letter_number;status;timestamp\r\n\
         2;printed;2026-12-02T06:10:00+01:00\r\n\
         3;printed;2026-12-02T06:10:01+01:00\r\n\
         4;printed;2026-12-02T06:10:02+01:00\r\n\
         2;enveloped;2026-12-02T06:20:00+01:00\r\n\
         B20261201/3;error;2026-12-02T06:21:00+01:00;Papierstau; Blatt 2 zerrissen\r\n\
         2;handed_over;2026-12-02T11:00:00Z\r\n",
    )
    .unwrap();
    let (code, out) = amtsbote(root, &url, &["print-batch", "reconcile", file.to_str().unwrap()], &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("6 lines for B20261201: 6 recorded — 1 handed over (posted), 1 errors (printed again in the next batch), 4 printed or enveloped; 0 imported before"), "{out}");
    assert_eq!(state(&*ledger, two).await, RequestState::Posted);
    assert_eq!(state(&*ledger, four).await, RequestState::Printed);
    let r3 = ledger.get(three).await.unwrap().unwrap();
    assert_eq!((r3.state, r3.print_batch.as_deref()), (RequestState::AwaitingPrint, None));
    let last = ledger.journal(three).await.unwrap().pop().unwrap();
    assert_eq!(
        last.detail.as_deref(),
        Some("batch B20261201, letter 3: print centre error at 2026-12-02 05:21:00 UTC: Papierstau; Blatt 2 zerrissen; printed again in the next batch")
    );

    // The same file again: nothing changes, and it says so.
    let journals = [ledger.journal(two).await.unwrap(), ledger.journal(three).await.unwrap()];
    let (code, out) = amtsbote(root, &url, &["print-batch", "reconcile", file.to_str().unwrap()], &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("nothing new: its 6 lines were all imported before; nothing changed"), "{out}");
    assert_eq!([ledger.journal(two).await.unwrap(), ledger.journal(three).await.unwrap()], journals);

    // The next night's batch prints the letter that came back, and only that one.
    let (code, out) = amtsbote(root, &url, &["print-batch", "run", "--date", "2026-12-02"], &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("batch B20261202 of 2026-12-02: 1 letters"), "{out}");
    let r3 = ledger.get(three).await.unwrap().unwrap();
    assert_eq!((r3.state, r3.print_batch.as_deref(), r3.letter_number), (RequestState::Printed, Some("B20261202"), Some(1)));

    // What list and show tell.
    let list = json(root, &url, &["print-batch", "list", "--json"]);
    // (serve, bringing the requests to print, may have made an empty batch of its own night.)
    let batches: Vec<&serde_json::Value> = list.as_array().unwrap().iter().filter(|b| b["letters"] != 0).collect();
    assert_eq!(batches.iter().map(|b| b["batch_id"].as_str().unwrap()).collect::<Vec<_>>(), ["B20261202", "B20261201"], "newest first");
    let first = batches[1];
    assert_eq!(first["date"], "2026-12-01");
    assert_eq!((first["letters"].as_u64(), first["files"].as_u64(), first["finished"].as_bool()), (Some(4), Some(2), Some(true)));
    assert_eq!((first["posted"].as_u64(), first["errors"].as_u64(), first["no_feedback"].as_u64(), first["in_progress"].as_u64()), (Some(1), Some(1), Some(1), Some(1)));
    assert_eq!((batches[0]["letters"].as_u64(), batches[0]["no_feedback"].as_u64()), (Some(1), Some(1)));

    let show = json(root, &url, &["print-batch", "show", "2026-12-01", "--json"]);
    let files = show["files"].as_array().unwrap();
    assert_eq!(files.len(), 2, "{show}");
    assert_eq!((files[0]["file_name"].as_str(), files[0]["letter_numbers"].clone()), (Some("B20261201-001.pdf"), serde_json::json!([[2, 4]])));
    assert_eq!((files[1]["file_name"].as_str(), files[1]["letter_numbers"].clone()), (Some("B20261201-muster-002.pdf"), serde_json::json!([[1, 1]])));
    let pdf = std::fs::read(root.join("print/handoff/B20261201-001.pdf")).unwrap();
    assert_eq!(files[0]["sha256"].as_str().unwrap(), hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&pdf)));
    let letters = show["letters"].as_array().unwrap();
    let brief: Vec<(u64, &str, bool, Option<&str>)> = letters
        .iter()
        .map(|l| (l["letter_number"].as_u64().unwrap(), l["state"].as_str().unwrap(), l["in_batch"].as_bool().unwrap(), l["last_feedback"]["status"].as_str()))
        .collect();
    assert_eq!(brief, [(1, "printed", true, None), (2, "posted", true, Some("handed_over")), (3, "printed", false, Some("error")), (4, "printed", true, Some("printed"))]);
    assert_eq!(letters[1]["last_feedback"]["at"], "2026-12-02T11:00:00Z");
    assert_eq!(letters[2]["last_feedback"]["reason"], "Papierstau; Blatt 2 zerrissen");
    // No debtor, no address: only numbers, states and feedback.
    for l in letters {
        let mut keys: Vec<&str> = l.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["file_no", "in_batch", "last_feedback", "letter_number", "request_id", "state", "test"]);
    }
    // The text forms answer too.
    let (code, out) = amtsbote(root, &url, &["print-batch", "show", "2026-12-01"], &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("B20261201-001.pdf") && out.contains("2-4"), "{out}");
    let (code, out) = amtsbote(root, &url, &["print-batch", "list"], &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("B20261201"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_with_an_unknown_letter_and_a_malformed_line_records_nothing_and_names_both_lines() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (url, ledger) = printed(root).await;
    let show = json(root, &url, &["print-batch", "show", "2026-12-01", "--json"]);
    let two = request_of(&show, 2);

    let file = root.join("feedback.csv");
    std::fs::write(
        &file,
        "2;handed_over;2026-12-02T11:00:00Z\n\
         99;handed_over;2026-12-02T11:00:00Z\n\
         3;printed;yesterday\n\
         4;printed;2026-12-02T06:10:02+01:00\n",
    )
    .unwrap();
    let (code, out, err) = amtsbote_out(root, &url, &["print-batch", "reconcile", "--date", "2026-12-01", file.to_str().unwrap()], &[]);
    assert_eq!(code, Some(1), "{out}{err}");
    let name = file.display().to_string();
    assert!(err.contains(&format!("{name}:2: unknown letter number 99: batch B20261201 has no such letter")), "{err}");
    assert!(err.contains(&format!("{name}:3: timestamp \"yesterday\" is not RFC 3339")), "{err}");
    assert!(err.contains("2 bad lines; nothing was recorded"), "{err}");
    assert!(!err.contains(":1:") && !err.contains(":4:"), "{err}");
    // Nothing applied: the good lines neither.
    assert_eq!(state(&*ledger, two).await, RequestState::Printed);
    let show = json(root, &url, &["print-batch", "show", "2026-12-01", "--json"]);
    assert!(show["letters"].as_array().unwrap().iter().all(|l| l["last_feedback"].is_null()), "{show}");

    // Without a batch (no option, a file not named after one), plain numbers are refused.
    let (code, out) = amtsbote(root, &url, &["print-batch", "reconcile", file.to_str().unwrap()], &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(&format!("{name}:1: letter number \"2\" without its batch")), "{out}");
}
