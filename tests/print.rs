//! The nightly print batch with the real binary: requests that went to print (their reader
//! takes no XTA) become letters in one batch per date — `amtsbote print-batch run` twice
//! makes one batch; a crash while the files are written leaves nothing partial in the
//! handoff folder and the next run completes it; test messages go to `print/test`, never
//! to the handoff folder.

use std::path::{Path, PathBuf};

use amtsbote::ledger::{Ledger, ListFilter, Request, RequestState};
use sha2::Digest as _;

#[path = "support/serve.rs"]
mod serve_support;
use serve_support::*;
#[path = "support/print.rs"]
mod print_support;
use print_support::*;

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir).map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default();
    names.sort();
    names
}

async fn all(ledger: &dyn Ledger) -> Vec<Request> {
    ledger.list(&ListFilter::default().limit(1000)).await.unwrap()
}

/// Each manifest's file is there with its SHA-256; returns the request ids they list.
fn check_manifests(dir: &Path) -> Vec<i64> {
    let mut ids = Vec::new();
    for name in names(dir).iter().filter(|n| n.ends_with(".manifest.json")) {
        let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join(name)).unwrap()).unwrap();
        let pdf = std::fs::read(dir.join(manifest["file"].as_str().unwrap())).unwrap();
        assert_eq!(manifest["sha256"].as_str().unwrap(), hex::encode(sha2::Sha256::digest(&pdf)), "{name}");
        assert!(pdf.starts_with(b"%PDF-"), "{name}");
        let letters = manifest["letters"].as_array().unwrap();
        assert_eq!(manifest["totals"]["letters"].as_u64().unwrap() as usize, letters.len());
        // The CSV lists the same letters.
        let csv = std::fs::read_to_string(dir.join(name.replace(".json", ".csv"))).unwrap();
        assert_eq!(csv.lines().count(), letters.len() + 1, "{name}: header + one line per letter");
        ids.extend(letters.iter().map(|l| l["request_id"].as_i64().unwrap()));
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_date_twice_makes_one_batch_sorted_by_postcode_with_test_letters_kept_apart() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (url, ledger) = awaiting_print(root, 25).await;

    let (code, out) = print_batch(root, &url, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("batch B20261201 of 2026-12-01: 26 letters (1 test letters"), "{out}");
    let handoff = root.join("print/handoff");
    assert_eq!(names(&handoff).iter().filter(|n| n.ends_with(".pdf")).count(), 3, "25 letters, 10 a file: {:?}", names(&handoff));
    assert!(names(&handoff).iter().all(|n| !n.ends_with(".part")), "{:?}", names(&handoff));
    let in_handoff = check_manifests(&handoff);
    assert_eq!(in_handoff.len(), 25);
    let requests = all(&*ledger).await;
    let test = requests.iter().find(|r| r.test).unwrap();
    assert!(!in_handoff.contains(&test.id.0), "a test letter in the handoff folder");
    assert_eq!(check_manifests(&root.join("print/test")), vec![test.id.0]);
    // Every letter printed once, with its batch and number; Hamburg (20095) before Köln (50667).
    assert!(requests.iter().all(|r| r.state == RequestState::Printed && r.print_batch.as_deref() == Some("B20261201")), "{:?}", requests.iter().map(|r| (r.id, r.state)).collect::<Vec<_>>());
    assert_eq!(test.letter_number, Some(1));
    let mut numbers: Vec<u32> = requests.iter().filter_map(|r| r.letter_number).collect();
    numbers.sort();
    assert_eq!(numbers, (1..=26).collect::<Vec<_>>());
    let journal = ledger.journal(test.id).await.unwrap();
    assert_eq!(journal.last().unwrap().detail.as_deref(), Some("batch B20261201, letter 1, file B20261201-muster-004.pdf"));
    // The sample request's attachment is a stub that cannot be printed: the letter went out
    // with a note, and the journal says which attachment stayed behind and why.
    let real = requests.iter().find(|r| !r.test).unwrap();
    let detail = ledger.journal(real.id).await.unwrap().last().unwrap().detail.clone().unwrap();
    assert!(detail.starts_with("batch B20261201, letter ") && detail.ends_with("; Anlage 1 (bescheid.pdf) nicht gedruckt: a damaged PDF (it cannot be read)"), "{detail}");

    // The same date again: nothing written, nothing printed twice.
    let before: Vec<(String, Vec<u8>)> = names(&handoff).into_iter().map(|n| (n.clone(), std::fs::read(handoff.join(&n)).unwrap())).collect();
    let (code, out) = print_batch(root, &url, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("complete before, nothing written"), "{out}");
    let after: Vec<(String, Vec<u8>)> = names(&handoff).into_iter().map(|n| (n.clone(), std::fs::read(handoff.join(&n)).unwrap())).collect();
    assert_eq!(before, after);
    for r in all(&*ledger).await {
        assert_eq!(ledger.journal(r.id).await.unwrap().iter().filter(|e| e.to == RequestState::Printed).count(), 1, "request {}", r.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_while_the_batch_is_written_leaves_nothing_partial_and_the_next_run_completes_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (url, ledger) = awaiting_print(root, 25).await;
    let handoff: PathBuf = root.join("print/handoff");

    // Dies after the first file is in the folder, before the ledger knows it. Files are
    // written side by side (one a core): another may have reached the folder too, whole.
    let (code, _) = print_batch(root, &url, &[("AMTSBOTE_TEST_CRASH", "print-before-record")]);
    assert_ne!(code, Some(0));
    let pdfs = names(&handoff).iter().filter(|n| n.ends_with(".pdf")).count();
    assert!((1..=2).contains(&pdfs), "{:?}", names(&handoff));
    assert_eq!(check_manifests(&handoff).len(), 10 * pdfs, "the files there are whole");
    assert_eq!(count(&*ledger, RequestState::Printed).await, 0);

    let (code, out) = print_batch(root, &url, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(names(&handoff).iter().all(|n| !n.ends_with(".part")), "{:?}", names(&handoff));
    let listed = check_manifests(&handoff);
    assert_eq!(listed.len(), 25);
    let mut unique = listed.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 25, "each letter in one file");
    assert_eq!(count(&*ledger, RequestState::Printed).await, 26);
}
