//! Reading, validating and writing messages: valid examples, broken rules, hostile input.

use std::time::{Duration, Instant};

use amtsbote::xamtshilfe::{Checker, Limits, Message, ReadError, ReaderConfig, Rejection, Rule, read};

fn example(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/examples/messages/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn example_text(name: &str) -> String {
    String::from_utf8(example(name)).unwrap()
}

fn check(bytes: &[u8]) -> Result<Message, Rejection> {
    Checker::with_defaults().check(bytes)
}

fn unreadable(bytes: &[u8]) -> ReadError {
    match check(bytes) {
        Err(Rejection::Unreadable(e)) => e,
        other => panic!("expected unreadable, got {other:?}"),
    }
}

fn violations(text: &str) -> Vec<(String, Rule, String)> {
    match check(text.as_bytes()) {
        Err(Rejection::Invalid(v)) => v.into_iter().map(|v| (v.path, v.rule, v.message)).collect(),
        other => panic!("expected violations, got {other:?}"),
    }
}

/// Asserts that a check finishes quickly: hostile input must be refused, not chewed on.
fn quickly<T>(f: impl FnOnce() -> T) -> T {
    // Generous bound against hangs only (a debug build on a loaded 2-core machine); speed is
    // measured by the benchmark, not here.
    let start = Instant::now();
    let out = f();
    assert!(start.elapsed() < Duration::from_secs(20), "took {:?}", start.elapsed());
    out
}

#[test]
fn every_example_is_valid_and_round_trips() {
    let dir = format!("{}/examples/messages", env!("CARGO_MANIFEST_DIR"));
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "xml") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let message = check(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let written = message.to_xml("xAmtshilfe110").unwrap();
        let again = check(written.as_bytes()).unwrap_or_else(|e| panic!("{} rewritten: {e}\n{written}", path.display()));
        assert_eq!(message, again, "{}", path.display());
        // Writing is deterministic: the rewritten message writes to the same text.
        assert_eq!(written, again.to_xml("xAmtshilfe110").unwrap());
        seen += 1;
    }
    assert!(seen >= 1);
}

#[test]
fn the_spec_request_reads_into_the_model() {
    let Message::Ersuchen(m) = check(&example("ersuchen.xml")).unwrap() else { panic!("kind") };
    assert_eq!(m.kopf.identifikation.nachrichten_uuid.to_string(), "7d3c1f0e-2b7a-4c55-9a51-0c2f5f7e9b11");
    assert_eq!(m.ersuchen.aktenzeichen, "VH-2026-000123");
    assert_eq!(m.ersuchen.forderung[0].summe().unwrap().to_string(), "445.00");
    assert_eq!(m.ersuchen.massnahme.len(), 2);
    assert!(!m.ersuchen.schuldner[0].auskunftssperre);
    assert_eq!(m.ersuchen.schuldner[0].anschrift.ort, "Köln");
    assert!(m.kopf.leser.is_none());
    let pdf = m.ersuchen.anhang[0].decode().unwrap();
    assert!(pdf.starts_with(b"%PDF-"));
    assert_eq!(m.ersuchen.anhang[0].check_base64().unwrap(), pdf.len());
}

#[test]
fn namespace_is_configurable_and_default_xmlns_is_accepted() {
    let text = example_text("ersuchen.xml");
    let v120 = text.replace("xmlns:xamt=\"xAmtshilfe110\"", "xmlns:xamt=\"xAmtshilfe120\"");
    assert!(matches!(unreadable(v120.as_bytes()), ReadError::Namespace { .. }));
    let mut checker = Checker::with_defaults();
    checker.reader.namespaces.push("xAmtshilfe120".into());
    checker.check(v120.as_bytes()).unwrap();

    // Children in the root's namespace through a default xmlns are accepted too.
    let default_ns = text
        .replace("<xamt:vollstreckungshilfe.Ersuchen.0101 xmlns:xamt=", "<vollstreckungshilfe.Ersuchen.0101 xmlns=")
        .replace("</xamt:vollstreckungshilfe.Ersuchen.0101>", "</vollstreckungshilfe.Ersuchen.0101>");
    check(default_ns.as_bytes()).unwrap();

    let none = text.replace(" xmlns:xamt=\"xAmtshilfe110\"", "").replace("xamt:", "");
    let err = unreadable(none.as_bytes()).to_string();
    assert!(err.contains("(none)") && err.contains("xAmtshilfe110"), "{err}");
}

#[test]
fn the_kind_is_told_by_the_root_element() {
    let text = example_text("ersuchen.xml").replace("Ersuchen.0101", "Ersuchen.0199");
    let err = unreadable(text.as_bytes()).to_string();
    assert!(err.contains("unknown message kind") && err.contains("vollstreckungshilfe.Ersuchen.0199"), "{err}");
}

#[test]
fn broken_rules_name_the_element_and_the_rule() {
    let text = example_text("ersuchen.xml");
    let v = violations(&text.replace("<gesamtbetrag waehrung=\"EUR\">445.00", "<gesamtbetrag waehrung=\"EUR\">445.01"));
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!((v[0].0.as_str(), v[0].1), ("ersuchen/gesamtbetrag", Rule::Sum));
    assert!(v[0].2.contains("445.00"), "{v:?}");

    let small = text
        .replace(">412.50<", ">3.50<")
        .replace(">20.50<", ">0.00<")
        .replace(">12.00<", ">0.00<")
        .replace(">445.00<", ">3.50<");
    let v = violations(&small);
    assert_eq!(v[0].1, Rule::MinimumAmount, "{v:?}");
    let mut lenient = Checker::with_defaults();
    lenient.validator.min_amount = "1.00".parse().unwrap();
    lenient.check(small.as_bytes()).unwrap();

    let v = violations(&text.replace("<code>GRST</code>", "<code>KFZST</code>"));
    assert_eq!((v[0].0.as_str(), v[0].1), ("ersuchen/forderung[1]/einnahmeart", Rule::CodeList));
    assert!(v[0].2.contains("KFZST"));

    let v = violations(&text.replace("DE02120300000000202051", "DE02120300000000202052"));
    assert_eq!((v[0].0.as_str(), v[0].1), ("ersuchen/ersuchendeBehoerde/bankverbindung/iban", Rule::Iban));

    let v = violations(&text.replace("<ende>2026-06-30</ende>", "<ende>2025-06-30</ende>"));
    assert_eq!((v[0].0.as_str(), v[0].1), ("ersuchen/forderung[1]/zeitraum", Rule::Date));

    let v = violations(&text.replace("<code>0101</code>", "<code>0102</code>"));
    assert_eq!(v[0].1, Rule::Header, "{v:?}");

    let v = violations(&text.replace("<code>VAK</code>", "<code>VBV</code>"));
    assert_eq!((v[0].0.as_str(), v[0].1), ("ersuchen/massnahme[2]", Rule::CodeList), "{v:?}");

    // Several broken rules are reported together.
    let v = violations(&text.replace("<code>GRST</code>", "<code>X</code>").replace(">445.00<", ">1.00<"));
    assert!(v.len() >= 2, "{v:?}");
}

#[test]
fn structural_errors_name_the_path() {
    let text = example_text("ersuchen.xml");
    let cases = [
        (text.replace(">412.50<", ">412.505<"), "ersuchen/forderung[1]/hauptforderung", "two decimal"),
        (text.replace(">412.50<", ">viel<"), "ersuchen/forderung[1]/hauptforderung", "not a decimal"),
        (text.replace("7d3c1f0e-2b7a-4c55-9a51-0c2f5f7e9b11", "7d3c1f0e2b7a4c559a510c2f5f7e9b11"), "nachrichtenUUID", "UUID"),
        (text.replace("2026-11-27T10:15:00.000+01:00", "2026-11-27T10:15:00.000"), "erstellungszeitpunkt", "time zone"),
        (text.replace("<aktenzeichen>VH-2026-000123</aktenzeichen>", ""), "ersuchen", "missing element `aktenzeichen`"),
        (text.replace("<angeordnetVon>", "<unbekannt>x</unbekannt><angeordnetVon>"), "ersuchen", "unknown element `unbekannt`"),
    ];
    for (input, path, words) in cases {
        match unreadable(input.as_bytes()) {
            ReadError::Structure { path: p, message } => {
                assert!(p.contains(path) && message.contains(words), "{p}: {message}");
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn debtor_data_is_withheld_from_reasons() {
    let text = example_text("ersuchen.xml");
    let e = unreadable(text.replace("1980-04-12", "1980-04-31").as_bytes()).to_string();
    assert!(e.contains("schuldner[1]/geburtsdatum") && !e.contains("1980-04-31"), "{e}");
    let v = violations(&text.replace("<postleitzahl>50667</postleitzahl>", "<postleitzahl>5066X</postleitzahl>"));
    assert!(v[0].0.contains("schuldner") && !v[0].2.contains("5066X"), "{v:?}");
}

#[test]
fn the_test_flag_is_recognised() {
    let text = example_text("ersuchen.xml");
    assert!(!check(text.as_bytes()).unwrap().is_test());
    let test = text.replace("version=\"1.1.0\">", "version=\"1.1.0\" test=\"true\">");
    assert!(check(test.as_bytes()).unwrap().is_test());
}

#[test]
fn attachments_are_checked_without_decoding() {
    let text = example_text("ersuchen.xml");
    let start = text.find("application/pdf\">").unwrap() + "application/pdf\">".len();
    let end = text[start..].find("</anhang>").unwrap() + start;
    let with = |content: &str| format!("{}{}{}", &text[..start], content, &text[end..]);
    for (content, words) in [("not*base64!", "not base64"), ("QUJD", "not a PDF"), ("JVBERi0xLjQK\nJVBERi0", "not base64"), ("JVBERi0=xLjQK", "not base64"), ("", "empty")] {
        let v = violations(&with(content));
        assert!(v.iter().any(|(p, r, m)| p == "ersuchen/anhang[1]" && *r == Rule::Attachment && m.contains(words)), "{content}: {v:?}");
    }
    // Line-wrapped base64, as many encoders write it, is fine.
    let pdf = &text[start..end];
    let wrapped: String = pdf.as_bytes().chunks(20).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join("\n");
    check(with(&wrapped).as_bytes()).unwrap();
}

// ------------------------------------------------------------------------------------------
// Hostile and broken input: refused quickly, with a reason, never a panic.

#[test]
fn billion_laughs_is_refused_at_the_doctype() {
    let mut doc = String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n<!ENTITY lol \"lol\">\n");
    for i in 1..10 {
        let prev = if i == 1 { "lol".to_string() } else { format!("lol{}", i - 1) };
        doc.push_str(&format!("<!ENTITY lol{i} \"{}\">\n", format!("&{prev};").repeat(10)));
    }
    doc.push_str("]>\n<xamt:vollstreckungshilfe.Ersuchen.0101 xmlns:xamt=\"xAmtshilfe110\">&lol9;</xamt:vollstreckungshilfe.Ersuchen.0101>");
    let e = quickly(|| unreadable(doc.as_bytes()));
    assert!(matches!(e, ReadError::Doctype { line: 2 }), "{e:?}");
}

#[test]
fn external_entities_are_refused() {
    let doc = "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]><x>&xxe;</x>";
    assert!(matches!(unreadable(doc.as_bytes()), ReadError::Doctype { .. }));
    // An entity reference without any declaration is refused too.
    let text = example_text("ersuchen.xml").replace("Marktplatz", "Markt&xxe;platz");
    let e = unreadable(text.as_bytes());
    assert!(matches!(&e, ReadError::Entity { name, .. } if name == "xxe"), "{e:?}");
    // The predefined entities and character references are fine.
    let text = example_text("ersuchen.xml").replace("Marktplatz", "Markt&amp;platz &#228;&#x00DF;");
    let Message::Ersuchen(m) = check(text.as_bytes()).unwrap() else { panic!() };
    assert_eq!(m.ersuchen.ersuchende_behoerde.anschrift.strasse.as_deref(), Some("Markt&platz äß"));
}

#[test]
fn oversized_input_is_refused_before_parsing() {
    let limits = Limits { max_bytes: 1024, ..Limits::default() };
    let config = ReaderConfig { limits, ..ReaderConfig::default() };
    let e = read::parse(&example("ersuchen.xml"), &config).unwrap_err();
    assert!(matches!(e, ReadError::TooLarge { limit: 1024, .. }), "{e:?}");

    // The default limit is the XTA container size, 40 MB.
    let mut big = example("ersuchen.xml");
    big.resize(40 * 1024 * 1024 + 1, b' ');
    assert!(matches!(quickly(|| unreadable(&big)), ReadError::TooLarge { .. }));

    // Files are not read whole when they are too big.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.xml");
    std::fs::write(&path, vec![b' '; 2048]).unwrap();
    assert!(matches!(read::read_file(&path, &limits), Err(ReadError::TooLarge { .. })));
}

#[test]
fn deep_nesting_is_refused() {
    let depth = 100_000;
    let mut doc = String::from("<xamt:vollstreckungshilfe.Ersuchen.0101 xmlns:xamt=\"xAmtshilfe110\">");
    doc.push_str(&"<a>".repeat(depth));
    doc.push_str(&"</a>".repeat(depth));
    doc.push_str("</xamt:vollstreckungshilfe.Ersuchen.0101>");
    // The single-pass reader refuses the first unknown element; the pre-scan of the serde
    // reader refuses the depth.
    let e = quickly(|| unreadable(doc.as_bytes()));
    assert!(matches!(e, ReadError::Structure { .. }), "{e:?}");
    let e = quickly(|| read::guard(doc.as_bytes(), &ReaderConfig::default()).unwrap_err());
    assert!(matches!(e, ReadError::TooDeep { limit: 32, .. }), "{e:?}");
    // The limit holds for known elements too.
    let config = ReaderConfig { limits: Limits { max_depth: 3, ..Limits::default() }, ..ReaderConfig::default() };
    let e = read::parse(&example("ersuchen.xml"), &config).unwrap_err();
    assert!(matches!(e, ReadError::TooDeep { limit: 3, line: 7 }), "{e:?}");
}

#[test]
fn attribute_floods_are_refused() {
    // Checking attributes for duplicates is quadratic in their count: a flood must be cut
    // off at the limit, on the root as on any other element.
    let flood: String = (0..200_000).map(|i| format!(" xmlns:p{i}=\"x\"")).collect();
    let on_root = format!("<xamt:vollstreckungshilfe.Ersuchen.0101 xmlns:xamt=\"xAmtshilfe110\"{flood}/>");
    let e = quickly(|| unreadable(on_root.as_bytes()));
    assert!(matches!(e, ReadError::TooManyAttributes { limit: 32, .. }), "{e:?}");
    let on_child = format!("<xamt:vollstreckungshilfe.Ersuchen.0101 xmlns:xamt=\"xAmtshilfe110\"><nachrichtenkopf.g2g{flood}/></xamt:vollstreckungshilfe.Ersuchen.0101>");
    let e = quickly(|| unreadable(on_child.as_bytes()));
    assert!(matches!(e, ReadError::Structure { .. }), "{e:?}");
    let e = quickly(|| read::guard(on_child.as_bytes(), &ReaderConfig::default()).unwrap_err());
    assert!(matches!(e, ReadError::TooManyAttributes { limit: 32, .. }), "{e:?}");
}

#[test]
fn encodings_other_than_utf8_are_refused() {
    let text = example_text("ersuchen.xml");
    // Latin-1 bytes (Köln as 0xF6) in a file that says UTF-8.
    let latin1: Vec<u8> = text.chars().map(|c| if (c as u32) < 256 { c as u8 } else { b'?' }).collect();
    let e = unreadable(&latin1);
    assert!(matches!(e, ReadError::NotUtf8 { line, .. } if line > 1), "{e:?}");
    // Declared as another encoding.
    let declared = text.replace("encoding=\"UTF-8\"", "encoding=\"ISO-8859-1\"");
    let e = unreadable(declared.as_bytes()).to_string();
    assert!(e.contains("ISO-8859-1") && e.contains("UTF-8"), "{e}");
    // UTF-16 with its byte-order mark.
    let utf16: Vec<u8> = [0xFF, 0xFE].into_iter().chain(text.encode_utf16().flat_map(u16::to_le_bytes)).collect();
    assert!(matches!(unreadable(&utf16), ReadError::Encoding(_)));
    // A UTF-8 byte-order mark is fine.
    let bom: Vec<u8> = [0xEF, 0xBB, 0xBF].into_iter().chain(text.bytes()).collect();
    check(&bom).unwrap();
}

#[test]
fn truncated_files_say_so() {
    let text = example_text("ersuchen.xml");
    for cut in [text.len() / 2, text.len() - 10, 200] {
        let e = unreadable(&text.as_bytes()[..cut]);
        assert!(matches!(e, ReadError::Truncated { .. } | ReadError::Malformed { .. }), "cut {cut}: {e:?}");
    }
    let cut = text.find("<forderung>").unwrap() + "<forderung>".len() + 5;
    let e = unreadable(&text.as_bytes()[..cut]).to_string();
    assert!(e.contains("truncated") && e.contains("forderung"), "{e}");
}

#[test]
fn non_xml_and_broken_xml_get_reasons() {
    let second = format!("{}<second/>", example_text("ersuchen.xml"));
    let trailing = format!("{}trailing", example_text("ersuchen.xml"));
    let cases: [(&[u8], &str); 8] = [
        (b"", "empty"),
        (b"   \n ", "empty"),
        (b"%PDF-1.4 binary", "not xml"),
        (b"{\"json\": true}", "not xml"),
        (b"<xamt:vollstreckungshilfe.Ersuchen.0101 xmlns:xamt=\"xAmtshilfe110\"><nachrichtenkopf.g2g></ersuchen></xamt:vollstreckungshilfe.Ersuchen.0101>", "malformed"),
        (second.as_bytes(), "second root"),
        (trailing.as_bytes(), "outside the root"),
        (b"\x00\x01\x02\x03", "not xml"),
    ];
    for (input, words) in cases {
        let e = quickly(|| unreadable(input)).to_string();
        assert!(e.to_lowercase().contains(words), "{input:?}: {e}");
    }
}

#[test]
fn a_ten_megabyte_attachment_is_read() {
    let text = example_text("ersuchen.xml");
    let start = text.find("application/pdf\">").unwrap() + "application/pdf\">".len();
    let end = text[start..].find("</anhang>").unwrap() + start;
    let mut pdf = b"%PDF-1.4\n".to_vec();
    pdf.resize(10 * 1024 * 1024, b'x');
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&pdf);
    let doc = format!("{}{}{}", &text[..start], b64, &text[end..]);
    let Message::Ersuchen(m) = quickly(|| check(doc.as_bytes())).unwrap() else { panic!() };
    assert_eq!(m.ersuchen.anhang[0].check_base64().unwrap(), pdf.len());
    assert_eq!(m.ersuchen.anhang[0].decode().unwrap(), pdf);
}

// ------------------------------------------------------------------------------------------
// Characters: the Char production of XML 1.0, and what may come before the declaration.

/// The line (1-based) on which `needle` first occurs in `text`.
fn line_of(text: &str, needle: &str) -> usize {
    text[..text.find(needle).unwrap()].matches('\n').count() + 1
}

#[test]
fn characters_xml_forbids_are_refused_by_code_point_and_position() {
    let text = example_text("ersuchen.xml");
    let forbidden = ['\u{0}', '\u{1}', '\u{8}', '\u{B}', '\u{C}', '\u{E}', '\u{1F}', '\u{FFFE}', '\u{FFFF}'];
    for ch in forbidden {
        let code = format!("U+{:04X}", ch as u32);
        // In an authority's street and in a debtor's name: the reason names where and which
        // character, never the text around it.
        for (at, value) in [("Marktplatz", "Markt{}platz"), ("Mustermann", "Muster{}mann")] {
            let doc = text.replace(at, &value.replace("{}", &ch.to_string()));
            let e = quickly(|| unreadable(doc.as_bytes())).to_string();
            let line = format!("line {}", line_of(&text, at));
            assert!(e.contains(&code) && e.contains(&line) && e.contains("column"), "{code}: {e}");
            assert!(!e.contains("Markt") && !e.contains("Muster") && !e.contains(ch), "{code}: {e}");
        }
    }
    // The same characters as references, in text and in an attribute.
    for reference in ["&#x1;", "&#1;", "&#x8;", "&#xB;", "&#x1F;", "&#xFFFE;", "&#xFFFF;", "&#0;", "&#x0;", "&#xD800;", "&#x110000;"] {
        let digits = reference.trim_start_matches("&#").trim_end_matches(';');
        let number = match digits.strip_prefix('x') {
            Some(hex) => u32::from_str_radix(hex, 16).unwrap(),
            None => digits.parse().unwrap(),
        };
        let code = format!("U+{number:04X}");
        let doc = text.replace("Mustermann", &format!("Muster{reference}mann"));
        let e = unreadable(doc.as_bytes()).to_string();
        assert!(e.contains(&code) && e.contains(&format!("line {}", line_of(&text, "Mustermann"))), "{reference}: {e}");
        assert!(!e.contains("Muster"), "{reference}: {e}");
        let doc = text.replace("dateiname=\"bescheid.pdf\"", &format!("dateiname=\"besch{reference}eid.pdf\""));
        let e = unreadable(doc.as_bytes()).to_string();
        assert!(e.contains(&code), "{reference} in an attribute: {e}");
    }
    // Tab, line feed and carriage return are characters of XML, raw and as references.
    let fine = text.replace("</angeordnetVon>", "</angeordnetVon><bemerkung>Zeile&#x9;1&#xA;Zeile 2&#xD;\r\n\tEnde</bemerkung>");
    check(fine.as_bytes()).unwrap();
}

/// Attribute values are held as texts are: the Char production (also through references),
/// a length limit and the DIN 91379 type, refused by attribute, length and code point,
/// never quoted — also for the attributes read as values (`test`, `auskunftssperre`).
#[test]
fn hostile_attribute_values_are_refused_without_the_value() {
    let text = example_text("ersuchen.xml");
    let attrs = [
        ("produkt=\"avviso\"", "produkt", "avviso"),
        ("produktversion=\"5.2\"", "produktversion", "5.2"),
        ("listURI=\"urn:xoev-de:xamtshilfe:codeliste:nachrichtentyp\"", "listURI", "urn:xoev-de:xamtshilfe:codeliste:nachrichtentyp"),
        ("listVersionID=\"1.1.1\"", "listVersionID", "1.1.1"),
        ("auskunftssperre=\"false\"", "auskunftssperre", "false"),
        ("waehrung=\"EUR\"", "waehrung", "EUR"),
        ("dateiname=\"bescheid.pdf\"", "dateiname", "bescheid.pdf"),
        ("mimeType=\"application/pdf\"", "mimeType", "application/pdf"),
    ];
    let with = |at: &str, name: &str, value: &str| {
        let doc = text.replacen(at, &format!("{name}=\"{value}\""), 1);
        assert_ne!(doc, text, "{at}");
        doc
    };
    let huge = "x".repeat(2 * 1024 * 1024);
    for (at, name, value) in attrs {
        // A control character through a reference, raw or as a reference to it.
        let e = unreadable(with(at, name, &format!("{value}&#x1;")).as_bytes()).to_string();
        assert!(e.contains("U+0001"), "{name}: {e}");
        // 2 MB: refused by length, the value not quoted.
        let doc = with(at, name, &huge);
        let e = quickly(|| unreadable(doc.as_bytes())).to_string();
        assert!(e.contains(&format!("attribute `{name}`")) && e.contains("characters long") && e.contains("limit"), "{name}: {e}");
        assert!(!e.contains("xxxx") && e.len() < 300, "{name}: {e}");
        // A right-to-left override (raw and as a reference) and a zero-width space: refused
        // by code point, the value not quoted.
        for (inserted, code) in [("\u{202E}", "U+202E"), ("&#x202E;", "U+202E"), ("\u{200B}", "U+200B")] {
            let hostile = format!("{}{inserted}{}", &value[..1], &value[1..]);
            let e = unreadable(with(at, name, &hostile).as_bytes()).to_string();
            assert!(e.contains(&format!("attribute `{name}`")) && e.contains(code), "{name} with {inserted}: {e}");
            assert!(!e.contains(&value[1..]) || value.len() < 4, "{name}: the value is not quoted: {e}");
            assert!(!e.contains('\u{202E}') && !e.contains('\u{200B}'), "{name}: {e}");
        }
    }
    // On the root: namespace declarations are held to a length too.
    let doc = text.replacen("xmlns:xamt=\"xAmtshilfe110\"", &format!("xmlns:xamt=\"xAmtshilfe110\" xmlns:big=\"{huge}\""), 1);
    let e = quickly(|| unreadable(doc.as_bytes())).to_string();
    assert!(e.contains("characters long") && !e.contains("xxxx"), "{e}");
    // A file name with an umlaut (decomposed or not) and the sample's values are fine.
    check(with("dateiname=\"bescheid.pdf\"", "dateiname", "Bescheid-Müller.pdf").as_bytes()).unwrap();
    check(with("dateiname=\"bescheid.pdf\"", "dateiname", "Bescheid-Mu\u{308}ller.pdf").as_bytes()).unwrap();
    check(text.as_bytes()).unwrap();
}

#[test]
fn nothing_but_a_byte_order_mark_precedes_the_declaration() {
    let text = example_text("ersuchen.xml");
    for before in [" ", "\n", "\t\r\n", "<!-- a comment -->"] {
        let doc = format!("{before}{text}");
        let e = unreadable(doc.as_bytes()).to_string();
        assert!(e.contains("declaration") && e.contains("first"), "{before:?}: {e}");
        let bom: Vec<u8> = [0xEF, 0xBB, 0xBF].into_iter().chain(doc.bytes()).collect();
        assert!(matches!(unreadable(&bom), ReadError::Malformed { .. }), "{before:?} after a BOM");
    }
    // Without a declaration, whitespace before the root is XML (the prolog's Misc).
    let bare = text.replacen("<?xml version=\"1.0\" encoding=\"UTF-8\"?>", "", 1);
    check(format!("\n  {bare}").as_bytes()).unwrap();
}

#[test]
fn a_file_that_is_not_xml_is_described_never_quoted() {
    for content in [&b"Mustermann, Erika; Hohe Strasse 12a; 50667 Koeln"[..], b"  Erika Mustermann\x01\x02 1980-04-12", b"%PDF-1.4 Mustermann"] {
        let e = unreadable(content).to_string();
        assert!(e.to_lowercase().contains("not xml") && e.contains("offset"), "{e}");
        assert!(!e.contains("Muster") && !e.contains("Erika") && !e.contains("PDF"), "{e}");
    }
    let e = unreadable(b"  Erika Mustermann\x01\x02").to_string();
    assert!(e.contains("offset 2") && e.contains("binary"), "{e}");
    assert!(unreadable(b"Erika Mustermann").to_string().contains("text"));
}

// ------------------------------------------------------------------------------------------
// Limits on lengths, on repeated elements and on the reasons reported.

/// The request with its one claim (or `schuldner`, …) block repeated `n` times, the total
/// adjusted when the claims are repeated.
fn repeated(element: &str, n: usize, edit: impl Fn(&str) -> String) -> String {
    let text = example_text("ersuchen.xml");
    let (open, close) = (format!("<{element}"), format!("</{element}>"));
    let start = text.find(&open).unwrap();
    let end = text.find(&close).unwrap() + close.len();
    let block = edit(&text[start..end]);
    let mut doc = String::with_capacity(text.len() + block.len() * n);
    doc.push_str(&text[..start]);
    for _ in 0..n {
        doc.push_str(&block);
    }
    doc.push_str(&text[end..]);
    doc
}

#[test]
fn texts_longer_than_their_limit_are_refused_without_the_value() {
    let text = example_text("ersuchen.xml");
    let huge = "x".repeat(2 * 1024 * 1024);
    for (element, value, path) in [
        ("Mustermann", format!("M{huge}"), "ersuchen/schuldner[1]/familienname"),
        ("5.0123.456789.1", huge.clone(), "ersuchen/forderung[1]/kassenzeichen"),
        ("Stadt Lemgo, Stadtkasse</name>\n      <anschrift>", format!("{huge}</name>\n      <anschrift>"), "ersuchen/ersuchendeBehoerde/name"),
    ] {
        let doc = text.replacen(element, &value, 1);
        let e = quickly(|| unreadable(doc.as_bytes())).to_string();
        assert!(e.starts_with(path) && e.contains("characters long") && e.contains("limit"), "{e}");
        assert!(!e.contains("xxxx") && e.len() < 300, "{e}");
    }
    // The limit counts characters, not bytes: 200 umlauts are a name of 200 characters.
    let ok = text.replace("Mustermann", &"Ä".repeat(200));
    check(ok.as_bytes()).unwrap();
    let e = unreadable(text.replace("Mustermann", &"Ä".repeat(201)).as_bytes()).to_string();
    assert!(e.contains("201 characters") && e.contains("limit is 200"), "{e}");
    // Free text may be long, up to 2,000 characters.
    let remark = text.replace("</angeordnetVon>", &format!("</angeordnetVon><bemerkung>{}</bemerkung>", "Bitte beachten. ".repeat(125)));
    check(remark.as_bytes()).unwrap();
    // Configurable per element.
    let mut wider = Checker::with_defaults();
    wider.reader.limits.lengths.set("familienname", 300).unwrap();
    wider.check(text.replace("Mustermann", &"a".repeat(300)).as_bytes()).unwrap();
    assert!(wider.reader.limits.lengths.set("nachname", 300).unwrap_err().contains("familienname"));
}

#[test]
fn repeated_elements_are_capped_while_reading() {
    // 200,000 claims (about 90 MB, so the size limit is raised): refused at the 1,001st,
    // with one short reason.
    let doc = repeated("forderung", 200_000, str::to_string);
    let mut checker = Checker::with_defaults();
    checker.reader.limits.max_bytes = 1 << 30;
    let e = quickly(|| checker.check(doc.as_bytes())).unwrap_err();
    let reasons = e.reasons();
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].starts_with("ersuchen") && reasons[0].contains("more than 1000 `forderung`"), "{reasons:?}");
    // Reading stopped at the cap, and says where: on the line of the 1,001st claim.
    let block_lines = repeated("forderung", 2, str::to_string).lines().count() - example_text("ersuchen.xml").lines().count();
    let first = line_of(&doc, "<forderung>");
    let line: usize = reasons[0].split("line ").nth(1).and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next()).unwrap().parse().unwrap();
    assert!((first + 1000 * block_lines..first + 1001 * block_lines).contains(&line), "{line}: {reasons:?}");
    for (element, n, words) in [("schuldner", 101, "more than 100 `schuldner`"), ("anhang", 101, "more than 100 `anhang`")] {
        let e = unreadable(repeated(element, n, str::to_string).as_bytes()).to_string();
        assert!(e.contains(words), "{e}");
    }
    let mut measures = String::new();
    for i in 0..101 {
        measures.push_str(&format!("<massnahme listURI=\"urn:xoev-de:xamtshilfe:codeliste:massnahme\" listVersionID=\"1\"><code>M{i}</code></massnahme>"));
    }
    let text = example_text("ersuchen.xml");
    let start = text.find("<massnahme").unwrap();
    let end = text.rfind("</massnahme>").unwrap() + "</massnahme>".len();
    let doc = format!("{}{measures}{}", &text[..start], &text[end..]);
    assert!(unreadable(doc.as_bytes()).to_string().contains("more than 100 `massnahme`"));
    // Up to the cap is fine (as far as the reader goes).
    let mut exact = Checker::with_defaults();
    exact.reader.limits.max_claims = 3;
    assert!(matches!(exact.check(repeated("forderung", 3, str::to_string).as_bytes()), Err(Rejection::Invalid(_))));
    assert!(matches!(exact.check(repeated("forderung", 4, str::to_string).as_bytes()), Err(Rejection::Unreadable(_))));
}

#[test]
fn the_first_hundred_reasons_are_listed_and_the_rest_counted() {
    // 5,000 claims with an unknown code each (the cap on claims raised for the test).
    let doc = repeated("forderung", 5_000, |b| b.replace("<code>GRST</code>", "<code>NOPE</code>"));
    let mut checker = Checker::with_defaults();
    checker.reader.limits.max_claims = 10_000;
    let reasons = checker.check(doc.as_bytes()).unwrap_err().reasons();
    assert_eq!(reasons.len(), 101, "{}", reasons.len());
    assert!(reasons[99].contains("forderung[100]/einnahmeart"), "{}", reasons[99]);
    // 5,000 unknown codes and the sum are 5,001 reasons: 100 listed, 4,901 counted.
    assert!(reasons[100].contains("and 4,901 more"), "{}", reasons[100]);
    assert!(reasons.iter().map(String::len).sum::<usize>() < 30_000);
    checker.validator.max_reasons = 5;
    assert_eq!(checker.check(doc.as_bytes()).unwrap_err().reasons().len(), 6);
}

// ------------------------------------------------------------------------------------------
// DIN 91379: the characters of names, addresses and free text.

#[test]
fn characters_outside_din_91379_are_refused_by_code_point() {
    let text = example_text("ersuchen.xml");
    let cases = [
        ("Mustermann", "Muster\u{202E}nnamr", "ersuchen/schuldner[1]/familienname", "U+202E"),
        ("Erika", "Eri\u{200B}ka", "ersuchen/schuldner[1]/vorname", "U+200B"),
        ("Erika", "Erika2", "ersuchen/schuldner[1]/vorname", "U+0032"),
        ("5.0123.456789.1", "5.0123\u{200B}.456789.1", "ersuchen/forderung[1]/kassenzeichen", "U+200B"),
        ("Hohe Straße", "Хохе Straße", "ersuchen/schuldner[1]/anschrift/strasse", "U+0425"),
        ("<ort>Köln</ort>", "<ort>Kö&#xA;ln</ort>", "ersuchen/schuldner[1]/anschrift/ort", "U+000A"),
        ("Gezeichnet: Der", "Gezeichnet\u{2013} Der", "ersuchen/angeordnetVon", "U+2013"),
        ("</angeordnetVon>", "</angeordnetVon><bemerkung>Bitte \u{1F600}</bemerkung>", "ersuchen/bemerkung", "U+1F600"),
    ];
    for (from, to, path, code) in cases {
        let e = unreadable(text.replacen(from, to, 1).as_bytes()).to_string();
        assert!(e.starts_with(path) && e.contains(code) && e.contains("DIN 91379"), "{to:?}: {e}");
        assert!(!e.contains("Muster") && !e.contains("Eri") && !e.contains("Straße") && !e.contains("0123"), "{e}");
    }
    // What the types admit: digits in a firm's name, line breaks in free text, a listed
    // sequence (C with combining grave) in a person's name.
    let firm = text.replace("<familienname>Mustermann</familienname><vorname>Erika</vorname>", "<firma>Muster &amp; Söhne 2 GmbH</firma>");
    check(firm.as_bytes()).unwrap();
    check(text.replace("</angeordnetVon>", "</angeordnetVon><bemerkung>Zeile 1\nZeile 2\n\u{BD} Seite</bemerkung>").as_bytes()).unwrap();
    check(text.replace("Erika", "C\u{300}ristina").as_bytes()).unwrap();
}

#[test]
fn a_name_arriving_decomposed_is_read_in_nfc() {
    let text = example_text("ersuchen.xml").replace("Mustermann", "Mu\u{0308}ller-Lu\u{0308}denscheid");
    let Message::Ersuchen(m) = check(text.as_bytes()).unwrap() else { panic!("kind") };
    assert_eq!(m.ersuchen.schuldner[0].familienname.as_deref(), Some("Müller-Lüdenscheid"));
    // As character references too.
    let text = example_text("ersuchen.xml").replace("<ort>Köln", "<ort>Ko&#x308;ln");
    let Message::Ersuchen(m) = check(text.as_bytes()).unwrap() else { panic!("kind") };
    assert_eq!(m.ersuchen.schuldner[0].anschrift.ort, "Köln");
}

/// The shipped list (schemas/din91379/) is the reference list, and the table built from it
/// admits each entry in its type and not in the type below; the extended groups and lone
/// combining marks are refused. Needs the reference folder (`AMTSBOTE_TEST_DIN91379_DIR`, by
/// default ../shared/reference/din91379 beside the crate); without it, skipped loudly.
#[test]
fn din91379_table_matches_the_reference() {
    use amtsbote::xamtshilfe::din91379::{DinType, LIST, first_disallowed, parse_line};
    let dir = std::env::var("AMTSBOTE_TEST_DIN91379_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/din91379"));
    let Ok(reference) = std::fs::read_to_string(dir.join("latin_list_1.3.txt")) else {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "WARNING: {} not found: the DIN 91379 comparison is SKIPPED", dir.display());
        return;
    };
    assert_eq!(LIST, reference, "schemas/din91379/latin_list_1.3.txt differs from the reference");
    let shipped_licence = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/din91379/LICENSE.md")).unwrap();
    assert_eq!(shipped_licence, std::fs::read_to_string(dir.join("LICENSE.md")).unwrap());
    let mut seen = 0;
    for line in reference.lines() {
        let (group, points) = parse_line(line).unwrap_or_else(|| panic!("unreadable line {line:?}"));
        let value: String = points.iter().collect();
        let ty = match group {
            "bll" | "bnlreq" => DinType::A,
            "bnl" => DinType::B,
            "bnlopt" | "bnlnot" => DinType::C,
            _ => {
                assert!(first_disallowed(&value, DinType::C).is_some(), "{group} {value:?} must be refused");
                continue;
            }
        };
        assert_eq!(first_disallowed(&value, ty), None, "{line}");
        let below = match ty {
            DinType::A => None,
            DinType::B => Some(DinType::A),
            DinType::C => Some(DinType::B),
        };
        if let Some(below) = below {
            assert!(first_disallowed(&value, below).is_some(), "{line} must not be admitted by {below:?}");
        }
        seen += 1;
    }
    assert!(seen > 700, "{seen}");
}

#[test]
fn reasons_do_not_quote_personal_data() {
    // The address a Zuständigkeit request asks about is the debtor's.
    let text = example_text("zustaendigkeit-anfrage.xml");
    let plz = text.split("<postleitzahl>").nth(1).unwrap().split('<').next().unwrap().to_string();
    let v = violations(&text.replace(&format!("<postleitzahl>{plz}"), "<postleitzahl>5066X"));
    assert!(v.iter().any(|(p, _, _)| p == "anschrift/postleitzahl"), "{v:?}");
    assert!(v.iter().all(|(_, _, m)| !m.contains("5066X")), "{v:?}");
    // A clerk's e-mail address is a person's name.
    let text = example_text("ersuchen.xml").replace("stadtkasse@lemgo.example", "erika.beispiel@lemgo");
    let v = violations(&text);
    assert!(v.iter().any(|(p, r, m)| p.ends_with("email") && *r == Rule::Format && !m.contains("beispiel")), "{v:?}");
    // A tag that lost its '>' carries the value in its "name" (found by tests/fuzz.rs).
    let e = unreadable(example_text("ersuchen.xml").replace("<vorname>Erika", "<vornameErika").as_bytes()).to_string();
    assert!(e.contains("schuldner[1]") && !e.contains("Erika"), "{e}");
}

#[test]
fn a_message_arriving_decomposed_is_stored_in_nfc() {
    let text = example_text("ersuchen.xml").replace("Mustermann", "Mu\u{0308}ller");
    let (m, payload) = Checker::with_defaults().check_to_store(text.as_bytes()).unwrap();
    let payload = String::from_utf8(payload.expect("the payload to store, in NFC")).unwrap();
    assert!(payload.contains("<familienname>Müller</familienname>") && !payload.contains('\u{0308}'), "{payload}");
    assert_eq!(check(payload.as_bytes()).unwrap(), m);
    // A message in NFC is stored as it came.
    assert!(Checker::with_defaults().check_to_store(&example("ersuchen.xml")).unwrap().1.is_none());
}
