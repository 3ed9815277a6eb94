//! The project's XSDs (schemas/xamtshilfe/) and the Rust checker agree:
//!
//! - every example in examples/messages/ validates against the XSD (and passes the checker);
//! - every file in tests/data/invalid/ is rejected by xmllint AND by the checker;
//! - every file in tests/data/invalid-rules/ passes xmllint but is rejected by the checker's
//!   rules (what the code checks beyond the schema);
//! - every example, re-written with `Message::to_xml`, validates against the XSD and reads back
//!   to an equal value.
//!
//! xmllint (Debian: `apt-get install libxml2-utils`) is needed for the schema half. Without it
//! the schema checks are skipped with a loud warning, except when `CI=true`, where its absence
//! is a failure. xmllint is run once per batch of files, so the whole suite stays fast.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use amtsbote::xamtshilfe::{Checker, Message, Rejection};

const NAMESPACE: &str = "xAmtshilfe110";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The schema for a message, chosen by the root element's local name. All nine roots are
/// declared in one schema file today; a split (e.g. once the official schema arrives) only
/// changes this function.
fn schema_for(root_local_name: &str) -> PathBuf {
    assert!(
        root_local_name.starts_with("vollstreckungshilfe."),
        "not an xAmtshilfe root element: {root_local_name}"
    );
    root().join("schemas/xamtshilfe/xamtshilfe.xsd")
}

/// The local name of a document's root element (a cheap scan: skip the declaration,
/// comments and processing instructions, take the first start tag).
fn root_local_name(text: &str) -> String {
    let mut rest = text;
    loop {
        let start = rest.find('<').expect("no element in document");
        rest = &rest[start..];
        if rest.starts_with("<?") {
            rest = &rest[rest.find("?>").expect("unterminated PI") + 2..];
        } else if rest.starts_with("<!--") {
            rest = &rest[rest.find("-->").expect("unterminated comment") + 3..];
        } else {
            let name: String = rest[1..].chars().take_while(|c| !c.is_whitespace() && *c != '>' && *c != '/').collect();
            return name.rsplit(':').next().unwrap_or_default().to_string();
        }
    }
}

/// Finds xmllint on PATH. `None` (after a loud warning) when it is absent and we are not in
/// CI; in CI (`CI=true`) its absence fails the test.
fn xmllint() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths).map(|dir| dir.join("xmllint")).find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("xmllint not found on PATH, and CI=true: install libxml2-utils");
        }
        // Written to the stderr handle directly, not with eprintln!, so that libtest's output
        // capture does not swallow it (under nextest: shown with --success-output=immediate).
        let _ = writeln!(
            std::io::stderr(),
            "\n==================================================================\n  \
             WARNING: xmllint not found on PATH: XSD checks SKIPPED.\n  \
             Install it (apt-get install libxml2-utils) to run them.\n\
             ==================================================================\n"
        );
    }
    found
}

/// xmllint's verdict on one file: accepted, and what it said about the file.
#[derive(Debug)]
struct Verdict {
    valid: bool,
    output: String,
}

/// Validates files against their schemas, one xmllint run per schema. xmllint reports
/// `<file> validates` for each valid file; anything else (validity or parse errors) counts as
/// a rejection.
fn xmllint_verdicts(xmllint: &Path, files: &[PathBuf]) -> HashMap<PathBuf, Verdict> {
    let mut by_schema: HashMap<PathBuf, Vec<&PathBuf>> = HashMap::new();
    for f in files {
        let text = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        by_schema.entry(schema_for(&root_local_name(&text))).or_default().push(f);
    }
    let mut verdicts = HashMap::new();
    for (schema, files) in by_schema {
        let out = Command::new(xmllint)
            .arg("--noout")
            .arg("--nonet")
            .arg("--schema")
            .arg(&schema)
            .args(&files)
            .output()
            .expect("running xmllint");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("failed to compile") && !stderr.contains("Schemas parser error"),
            "the schema {} does not compile:\n{stderr}",
            schema.display()
        );
        for f in files {
            let name = f.display().to_string();
            let valid = stderr.lines().any(|l| l == format!("{name} validates"));
            let output = stderr
                .lines()
                .filter(|l| l.starts_with(&format!("{name}:")) || l.starts_with(&format!("{name} ")))
                .collect::<Vec<_>>()
                .join("\n");
            verdicts.insert(f.clone(), Verdict { valid, output });
        }
    }
    verdicts
}

/// The `.xml` files of a folder, sorted; at least `min` of them (guards against a wrong path
/// making a test vacuous).
fn xml_files(folder: &str, min: usize) -> Vec<PathBuf> {
    let dir = root().join(folder);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "xml"))
        .collect();
    files.sort();
    assert!(files.len() >= min, "{}: expected at least {min} .xml files, found {}", dir.display(), files.len());
    files
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Each corpus file says in a comment at its top which rule it breaks.
fn assert_has_reason_comment(path: &Path) {
    let text = String::from_utf8_lossy(&read(path)).into_owned();
    let first_after_decl = text.lines().find(|l| !l.starts_with("<?xml")).unwrap_or_default();
    assert!(
        first_after_decl.starts_with("<!--") && first_after_decl.ends_with("-->"),
        "{}: the first line (after the XML declaration) must be a one-line comment naming the broken rule",
        path.display()
    );
}

#[test]
fn examples_pass_the_checker_and_the_xsd() {
    let files = xml_files("examples/messages", 10);
    let checker = Checker::with_defaults();
    for f in &files {
        if let Err(e) = checker.check(&read(f)) {
            panic!("{}: rejected by the checker: {}", f.display(), e.reasons().join("; "));
        }
    }
    let Some(xmllint) = xmllint() else { return };
    let verdicts = xmllint_verdicts(&xmllint, &files);
    let failures: Vec<String> = files
        .iter()
        .filter(|f| !verdicts[*f].valid)
        .map(|f| format!("{}:\n{}", f.display(), verdicts[f].output))
        .collect();
    assert!(failures.is_empty(), "examples that fail the XSD:\n{}", failures.join("\n"));
}

#[test]
fn invalid_corpus_is_rejected_by_xsd_and_checker() {
    let files = xml_files("tests/data/invalid", 15);
    let checker = Checker::with_defaults();
    let mut failures = Vec::new();
    for f in &files {
        assert_has_reason_comment(f);
        if let Ok(m) = checker.check(&read(f)) {
            failures.push(format!("{}: accepted by the checker as {}", f.display(), m.kind()));
        }
    }
    if let Some(xmllint) = xmllint() {
        let verdicts = xmllint_verdicts(&xmllint, &files);
        for f in &files {
            if verdicts[f].valid {
                failures.push(format!("{}: accepted by xmllint", f.display()));
            }
        }
    }
    assert!(failures.is_empty(), "files in tests/data/invalid that were not rejected:\n{}", failures.join("\n"));
}

#[test]
fn rule_corpus_passes_xsd_but_not_the_checker() {
    let files = xml_files("tests/data/invalid-rules", 10);
    let checker = Checker::with_defaults();
    let mut failures = Vec::new();
    for f in &files {
        assert_has_reason_comment(f);
        match checker.check(&read(f)) {
            Ok(m) => failures.push(format!("{}: accepted by the checker as {}", f.display(), m.kind())),
            // These files are structurally fine: the rejection must come from the rules.
            Err(Rejection::Unreadable(e)) => {
                failures.push(format!("{}: rejected while reading, not by a rule: {e}", f.display()));
            }
            Err(Rejection::Invalid(_)) => {}
        }
    }
    if let Some(xmllint) = xmllint() {
        let verdicts = xmllint_verdicts(&xmllint, &files);
        for f in &files {
            if !verdicts[f].valid {
                failures.push(format!("{}: rejected by xmllint (must be XSD-valid):\n{}", f.display(), verdicts[f].output));
            }
        }
    }
    assert!(failures.is_empty(), "files in tests/data/invalid-rules that do not behave:\n{}", failures.join("\n"));
}

#[test]
fn written_examples_validate_and_read_back_equal() {
    let files = xml_files("examples/messages", 10);
    let checker = Checker::with_defaults();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut written = Vec::new();
    let mut failures = Vec::new();
    for f in &files {
        let original: Message = checker
            .check(&read(f))
            .unwrap_or_else(|e| panic!("{}: rejected: {}", f.display(), e.reasons().join("; ")));
        let xml = original.to_xml(NAMESPACE).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let out = dir.path().join(f.file_name().expect("file name"));
        std::fs::write(&out, &xml).expect("writing the re-written message");
        match checker.check(xml.as_bytes()) {
            Ok(back) if back == original => {}
            Ok(back) => failures.push(format!("{}: reads back different:\n  was {original:?}\n  now {back:?}", f.display())),
            Err(e) => failures.push(format!("{}: the written form is rejected: {}\n{xml}", f.display(), e.reasons().join("; "))),
        }
        written.push(out);
    }
    if let Some(xmllint) = xmllint() {
        let verdicts = xmllint_verdicts(&xmllint, &written);
        for w in &written {
            if !verdicts[w].valid {
                let xml = std::fs::read_to_string(w).unwrap_or_default();
                failures.push(format!("{} (as written by to_xml) fails the XSD:\n{}\n{xml}", w.display(), verdicts[w].output));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The lengths the reader enforces (src/xamtshilfe/fields.rs) are the XSD's `maxLength`
/// facets, element by element; and every element whose type has a `maxLength` is in the
/// reader's table.
#[test]
fn field_lengths_agree_with_the_xsd() {
    use amtsbote::xamtshilfe::fields::FIELDS;
    let xsd = std::fs::read_to_string(root().join("schemas/xamtshilfe/xamtshilfe.xsd")).expect("reading the XSD");
    let attr = |tag: &str, name: &str| -> Option<String> {
        let at = tag.find(&format!(" {name}=\""))? + name.len() + 3;
        Some(tag[at..at + tag[at..].find('"')?].to_string())
    };
    // simple type → its maxLength
    let mut max_length: HashMap<String, u32> = HashMap::new();
    for block in xsd.split("<xs:simpleType ").skip(1) {
        let block = &block[..block.find("</xs:simpleType>").expect("closed simpleType")];
        let name = attr(&format!(" {block}"), "name").expect("named simpleType");
        if let Some(at) = block.find("<xs:maxLength ") {
            let value = attr(&block[at..], "value").expect("maxLength value");
            max_length.insert(name, value.parse().expect("a number"));
        }
    }
    // element name → the types it is declared with
    let mut declared: HashMap<String, Vec<String>> = HashMap::new();
    for tag in xsd.split("<xs:element ").skip(1) {
        let tag = format!(" {}", &tag[..tag.find('>').expect("closed tag")]);
        if let (Some(name), Some(ty)) = (attr(&tag, "name"), attr(&tag, "type")) {
            declared.entry(name).or_default().push(ty.trim_start_matches("xamt:").to_string());
        }
    }
    let mut failures = Vec::new();
    for f in FIELDS {
        let Some(types) = declared.get(f.element) else {
            failures.push(format!("{}: not declared in the XSD", f.element));
            continue;
        };
        if !types.iter().any(|t| t == f.xsd_type) {
            failures.push(format!("{}: declared as {types:?}, the table says {}", f.element, f.xsd_type));
        }
        for t in types {
            if max_length.get(t) != Some(&f.max_chars) {
                failures.push(format!("{} ({t}): maxLength {:?} in the XSD, {} in the table", f.element, max_length.get(t), f.max_chars));
            }
        }
    }
    for (element, types) in &declared {
        if types.iter().any(|t| max_length.contains_key(t)) && !FIELDS.iter().any(|f| f.element == element) {
            failures.push(format!("{element}: has a maxLength in the XSD but is not in the reader's table"));
        }
    }
    assert!(failures.is_empty(), "fields.rs and the XSD disagree:\n{}", failures.join("\n"));
}
