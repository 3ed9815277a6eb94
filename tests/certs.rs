//! Peer certificates: end dates read from PEM, warnings 30 days before, expired and broken
//! files named; `amtsbote directory certs` exits 1 when one needs attention.

use std::path::Path;

use amtsbote::directory::certs::{CertStatus, read_file, scan};

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/certs/kreis-lippe-sample.pem");

#[test]
fn status_follows_the_end_date() {
    let certs = read_file(Path::new(SAMPLE), chrono::Utc::now());
    assert_eq!(certs.len(), 1);
    let c = &certs[0];
    assert!(c.subject.contains("lippe-kreiskasse.sample"), "{}", c.subject);
    let end = c.not_after.unwrap();
    let at = |days_before: i64| read_file(Path::new(SAMPLE), end - chrono::Duration::days(days_before))[0].status;
    assert_eq!(at(60), CertStatus::Valid);
    assert_eq!(at(29), CertStatus::Expiring);
    assert_eq!(at(-1), CertStatus::Expired);
    assert_eq!(read_file(Path::new(SAMPLE), end - chrono::Duration::days(10))[0].days_left, Some(10));
}

#[test]
fn chains_broken_files_and_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let pem = std::fs::read_to_string(SAMPLE).unwrap();
    std::fs::write(certs.join("chain.pem"), format!("{pem}{pem}")).unwrap();
    std::fs::write(certs.join("broken.pem"), "-----BEGIN CERTIFICATE-----\nbm9wZQ==\n-----END CERTIFICATE-----\n").unwrap();
    std::fs::write(certs.join("notes.txt"), "ignored").unwrap();
    let found = scan(&certs, chrono::Utc::now());
    assert_eq!(found.len(), 3, "{found:?}");
    assert_eq!(found.iter().filter(|c| c.status == CertStatus::Unreadable).count(), 1);

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_amtsbote"))
        .args(["directory", "certs"])
        .env("AMTSBOTE_DATA_DIR", dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("unreadable") && text.contains("lippe-kreiskasse.sample"), "{text}");

    std::fs::remove_file(certs.join("broken.pem")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_amtsbote"))
        .args(["directory", "certs", "--json"])
        .env("AMTSBOTE_DATA_DIR", dir.path())
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2);
    // The sample is valid for over a year from when it was made: exit 0 until 30 days before.
    let days = json[0]["days_left"].as_i64().unwrap();
    assert_eq!(out.status.code(), Some(if days >= 30 { 0 } else { 1 }));
}
