//! `amtsbote validate` as scripts use it: exit codes, one line per invalid file on stderr,
//! the JSON report, odd file names, and no panic on anything.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn amtsbote(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_amtsbote")).args(args).output().unwrap()
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/messages/ersuchen.xml")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_valid_file_exits_zero() {
    let out = amtsbote(&["validate", example().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid: vollstreckungshilfe.Ersuchen.0101"));
    assert!(out.stderr.is_empty());
}

#[test]
fn an_invalid_file_exits_one_with_a_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.xml");
    let text = std::fs::read_to_string(example()).unwrap().replace(">445.00<", ">445.01<");
    std::fs::write(&bad, text).unwrap();
    let out = amtsbote(&["validate", example().to_str().unwrap(), bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with(&format!("{}: invalid: ersuchen/gesamtbetrag:", bad.display())), "{err}");
    assert!(err.contains("[rule: sum]"), "{err}");
}

#[test]
fn hostile_and_missing_files_are_reasons_not_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("laughs.xml", b"<?xml version=\"1.0\"?><!DOCTYPE l [<!ENTITY a \"aaaa\">]><l>&a;</l>".to_vec()),
        ("binary.xml", vec![0, 159, 146, 150, 255]),
        ("empty.xml", vec![]),
        ("truncated.xml", std::fs::read(example()).unwrap()[..700].to_vec()),
    ];
    let mut args = vec!["validate".to_string()];
    for (name, bytes) in &files {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        args.push(p.display().to_string());
    }
    args.push(dir.path().join("missing.xml").display().to_string());
    args.push(dir.path().display().to_string()); // a directory
    let out = Command::new(env!("CARGO_BIN_EXE_amtsbote")).args(&args).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 6, "{err}");
    assert!(err.lines().all(|l| l.contains(": invalid: ")), "{err}");
    assert!(err.contains("DOCTYPE") && err.contains("not UTF-8") && err.contains("empty") && err.contains("truncated"), "{err}");
    assert!(err.contains("not a regular file"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn odd_file_names_work() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["mit leerzeichen.xml", "Grüße-ß.xml", "-leading-dash.xml", &format!("{}.xml", "x".repeat(200))];
    for name in names {
        let p = dir.path().join(name);
        std::fs::copy(example(), &p).unwrap();
        let out = amtsbote(&["validate", "--", p.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", stderr(&out));
    }
}

#[test]
fn the_json_report_is_machine_readable() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.xml");
    std::fs::write(&bad, std::fs::read_to_string(example()).unwrap().replace("<code>GRST</code>", "<code>NOPE</code>")).unwrap();
    let out = amtsbote(&["validate", "--json", example().to_str().unwrap(), bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["valid"], 1);
    assert_eq!(report["invalid"], 1);
    assert_eq!(report["files"][0]["kind"], "ersuchen");
    assert_eq!(report["files"][0]["nachrichtenUUID"], "7d3c1f0e-2b7a-4c55-9a51-0c2f5f7e9b11");
    let reason = &report["files"][1]["reasons"][0];
    assert_eq!(reason["rule"], "code-list");
    assert_eq!(reason["path"], "ersuchen/forderung[1]/einnahmeart");
}

#[test]
fn limits_and_namespaces_come_from_flags() {
    let ex = example();
    let out = amtsbote(&["validate", "--max-bytes", "100", ex.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("too large"));
    let out = amtsbote(&["validate", "--min-amount", "500.00", ex.to_str().unwrap()]);
    assert!(stderr(&out).contains("minimum-amount"), "{}", stderr(&out));
    let out = amtsbote(&["validate", "--namespace", "xAmtshilfe120", ex.to_str().unwrap()]);
    assert!(stderr(&out).contains("accepted: xAmtshilfe120"), "{}", stderr(&out));
}

#[test]
fn standard_input_is_read_with_a_dash() {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_amtsbote"))
        .args(["validate", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&std::fs::read(example()).unwrap()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn usage_errors_exit_two() {
    assert_eq!(amtsbote(&["validate"]).status.code(), Some(2));
    assert_eq!(amtsbote(&["no-such-command"]).status.code(), Some(2));
}
