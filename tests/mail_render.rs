//! The notification emails as rendered from templates/mail/ (mail::render): what each kind
//! says, the operators' overrides and their errors, HTML escaping, and the MIME message parsed
//! back.

use amtsbote::mail::render::{Rendered, TemplateError, Templates, build_message};
use amtsbote::mail::{Authority, Debtor, Event, Item, MailContent, ReceivedInfo};
use base64::Engine as _;
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use std::path::Path;

fn at() -> DateTime<Utc> {
    // 01.12.2026 19:12 in Berlin (CET, UTC+1).
    Utc.with_ymd_and_hms(2026, 12, 1, 18, 12, 0).single().expect("valid time")
}

fn item(event: Event) -> Item {
    Item {
        event,
        at: at(),
        request_id: Some(4711),
        aktenzeichen: Some("VH-2026-0815".into()),
        nachrichten_uuid: Some("0b7e5c1e-3a52-4c1b-9d7a-1f0e2d3c4b5a".into()),
        test: false,
        debtors: vec![Debtor { name: "Erika Mustermann".into(), address: Some("Musterstraße 1, 32657 Lemgo".into()) }],
        total_cents: Some(123_456),
        authority: None,
        xta_message_id: None,
        report: None,
        batch_date: None,
        letter_number: None,
        reasons: Vec::new(),
        received: None,
    }
}

fn koeln() -> Authority {
    Authority { name: "Stadt Köln".into(), kennung: "vbh:053150000000".into() }
}

/// An item of the kind with the facts its event carries.
fn item_of(event: Event) -> Item {
    let mut item = item(event);
    match event {
        Event::Transmitted => {
            item.authority = Some(koeln());
            item.xta_message_id = Some("urn:de:xta:messageid:abc-123".into());
        }
        Event::Delivered => {
            item.authority = Some(koeln());
            item.xta_message_id = Some("urn:de:xta:messageid:abc-123".into());
            item.report = Some("gelb: Empfänger hat verspätet abgeholt".into());
        }
        Event::Printed | Event::Posted => {
            item.authority = Some(koeln());
            item.batch_date = NaiveDate::from_ymd_opt(2026, 11, 30);
            item.letter_number = Some(17);
        }
        Event::Rejected => {
            item.reasons = vec!["Gesamtbetrag fehlt".into(), "PLZ 1234 hat nicht fünf Ziffern".into()];
        }
        Event::Unroutable => item.reasons = vec!["keine Zuständigkeit für PLZ 99999".into()],
        Event::Failed => {
            item.authority = Some(koeln());
            item.reasons = vec!["Transportbericht rot: Postfach unbekannt".into()];
        }
        Event::Received => {
            item.request_id = None;
            item.aktenzeichen = None;
            item.debtors = Vec::new();
            item.total_cents = None;
            item.received = Some(ReceivedInfo {
                message_id: "urn:de:xta:messageid:in-9".into(),
                file_name: "vbh_0b7e5c1e.xml".into(),
                message_type: Some("vollstreckungshilfe.Rueckmeldung.0201".into()),
                from: Some("Stadt Köln".into()),
                valid: true,
                reasons: Vec::new(),
            });
        }
    }
    item
}

fn content(items: Vec<Item>) -> MailContent {
    MailContent {
        tenant_name: "Stadt Lemgo".into(),
        tenant_kennung: "vbh:057660440000".into(),
        contact: Some("Leitstelle, 05261 213-0".into()),
        items,
    }
}

fn builtin() -> Templates {
    let dir = tempfile::tempdir().expect("tempdir");
    Templates::load(dir.path()).expect("built-in templates load")
}

fn render(items: Vec<Item>) -> Rendered {
    builtin().render(&content(items)).expect("render")
}

/// Each fact appears in the subject, text or HTML as the test says.
fn assert_parts_contain(r: &Rendered, facts: &[&str]) {
    for fact in facts {
        assert!(r.text.contains(fact), "text lacks {fact:?}:\n{}", r.text);
        assert!(r.html.contains(fact), "html lacks {fact:?}:\n{}", r.html);
    }
}

#[test]
fn every_event_renders_its_facts() {
    for event in Event::ALL {
        let r = render(vec![item_of(event)]);
        assert!(!r.subject.is_empty() && !r.subject.contains('\n'), "{event}: subject {:?}", r.subject);
        assert!(r.html.contains("<html") && r.html.contains("</html>"), "{event}");
        assert!(r.text.contains("Leitstelle, 05261 213-0"), "{event}: contact missing");
        assert!(!r.text.contains("none") && !r.html.contains("none"), "{event}: prints none");
        assert!(!r.subject.contains("Testnachricht") && !r.text.contains("Testnachricht"), "{event}");
        let facts: &[&str] = match event {
            Event::Transmitted => &["Stadt Köln", "vbh:053150000000", "urn:de:xta:messageid:abc-123", "01.12.2026", "19:12 Uhr"],
            Event::Delivered => &["Stadt Köln", "urn:de:xta:messageid:abc-123", "gelb: Empfänger hat verspätet abgeholt"],
            Event::Printed => &["Stadt Köln", "30.11.2026", "17"],
            Event::Posted => &["Stadt Köln", "30.11.2026", "17", "01.12.2026"],
            Event::Rejected => &["Gesamtbetrag fehlt", "PLZ 1234 hat nicht fünf Ziffern", "erneut"],
            Event::Unroutable => &["keine Zuständigkeit für PLZ 99999", "nicht erneut senden", "Leitstelle"],
            Event::Failed => &["Transportbericht rot: Postfach unbekannt", "Stadt Köln", "Leitstelle"],
            Event::Received => &["vollstreckungshilfe.Rueckmeldung.0201", "Stadt Köln", "vbh_0b7e5c1e.xml", "urn:de:xta:messageid:in-9", "bestanden"],
        };
        assert_parts_contain(&r, facts);
        if event != Event::Received {
            assert_parts_contain(&r, &["VH-2026-0815", "Erika Mustermann", "Musterstraße 1, 32657 Lemgo", "1.234,56 €", "4711"]);
            assert!(r.subject.contains("VH-2026-0815"), "{event}: subject {:?}", r.subject);
        }
    }
}

#[test]
fn an_invalid_received_message_names_its_reasons() {
    let mut item = item_of(Event::Received);
    let received = item.received.as_mut().expect("received");
    received.valid = false;
    received.file_name = "error/vbh_kaputt.xml".into();
    received.message_type = None;
    received.from = None;
    received.reasons = vec!["Element Betrag fehlt".into(), "Datum 31.02. ungültig".into()];
    let r = render(vec![item]);
    assert_parts_contain(&r, &["Element Betrag fehlt", "Datum 31.02. ungültig", "nicht bestanden"]);
    // The HTML part escapes the slash too.
    assert!(r.text.contains("error/vbh_kaputt.xml") && r.html.contains("error&#x2f;vbh_kaputt.xml"));
    assert!(r.subject.contains("fehlerhaft"), "{}", r.subject);
}

#[test]
fn a_debtor_under_auskunftssperre_has_no_address_in_either_part() {
    let mut item = item_of(Event::Transmitted);
    item.debtors = vec![
        Debtor { name: "Max Gesperrt".into(), address: None },
        Debtor { name: "Erika Mustermann".into(), address: Some("Musterstraße 1, 32657 Lemgo".into()) },
    ];
    let r = render(vec![item]);
    assert!(r.text.contains("Schuldner:         Max Gesperrt\n"), "{}", r.text);
    assert!(r.html.contains("<td>Max Gesperrt</td>"), "{}", r.html);
    assert_parts_contain(&r, &["Erika Mustermann, Musterstraße 1, 32657 Lemgo"]);
}

#[test]
fn a_test_message_is_marked_in_subject_and_both_parts() {
    for event in Event::ALL {
        let mut item = item_of(event);
        item.test = true;
        let r = render(vec![item]);
        assert!(r.subject.starts_with("[Testnachricht]"), "{event}: {}", r.subject);
        assert_parts_contain(&r, &["Testnachricht"]);
    }
}

#[test]
fn a_digest_lists_every_item() {
    let mut items: Vec<Item> = Event::ALL.iter().map(|e| item_of(*e)).collect();
    for (n, item) in items.iter_mut().enumerate() {
        if item.event != Event::Received {
            item.aktenzeichen = Some(format!("AZ-{n}"));
        }
    }
    items[2].test = true;
    let r = render(items);
    assert!(r.subject.contains("8 Meldungen") && r.subject.contains("Testnachricht"), "{}", r.subject);
    for n in [0, 1, 2, 3, 4, 5, 6] {
        assert_parts_contain(&r, &[&format!("AZ-{n}")]);
    }
    assert_parts_contain(
        &r,
        &[
            "elektronisch übermittelt",
            "von der Behörde abgeholt",
            "zum Druck gegeben",
            "zur Post gegeben",
            "zurückgewiesen",
            "keine zuständige Behörde gefunden",
            "Zustellung gescheitert",
            "Nachricht eingegangen",
            "urn:de:xta:messageid:abc-123",
            "Gesamtbetrag fehlt",
            "PLZ 1234 hat nicht fünf Ziffern",
            "vbh_0b7e5c1e.xml",
            "01.12.2026, 19:12 Uhr",
        ],
    );
    // A digest names no debtors: the Aktenzeichen identifies each request.
    assert!(!r.text.contains("Erika") && !r.html.contains("Erika"));
}

#[test]
fn values_are_html_escaped_in_the_html_part_only() {
    let mut item = item_of(Event::Rejected);
    item.debtors = vec![Debtor { name: "<script>alert(1)</script> & Co".into(), address: None }];
    item.reasons = vec!["Feld \"<b>\" unzulässig".into()];
    let r = render(vec![item]);
    assert!(!r.html.contains("<script>") && !r.html.contains("<b>"), "{}", r.html);
    assert!(r.html.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt; &amp; Co"), "{}", r.html);
    assert!(r.text.contains("<script>alert(1)</script> & Co"), "{}", r.text);
}

#[test]
fn content_without_items_is_refused() {
    assert!(matches!(builtin().render(&content(Vec::new())), Err(TemplateError::NoItems)));
}

// --- Overrides -------------------------------------------------------------------------------

fn override_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let mail = dir.path().join("templates").join("mail");
    std::fs::create_dir_all(&mail).expect("mkdir");
    for (name, text) in files {
        std::fs::write(mail.join(name), text).expect("write override");
    }
    dir
}

fn load_error(dir: &Path) -> String {
    match Templates::load(dir) {
        Ok(_) => panic!("the broken override was accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn an_override_replaces_the_builtin_template() {
    let dir = override_dir(&[
        ("rejected.subject", "Zurückgewiesen: {{ item.aktenzeichen or \"?\" }} ({{ tenant.name }})\n"),
        ("rejected.txt", "Eigener Text\n{% for r in item.reasons %}* {{ r }}\n{% endfor %}"),
    ]);
    let templates = Templates::load(dir.path()).expect("load");
    let r = templates.render(&content(vec![item_of(Event::Rejected)])).expect("render");
    assert_eq!(r.subject, "Zurückgewiesen: VH-2026-0815 (Stadt Lemgo)");
    assert_eq!(r.text, "Eigener Text\n* Gesamtbetrag fehlt\n* PLZ 1234 hat nicht fünf Ziffern\n");
    // The HTML part was not overridden: the built-in one.
    assert!(r.html.contains("nicht angenommen"));
    assert!(templates.unknown_overrides().is_empty());
}

#[test]
fn a_test_message_keeps_its_mark_when_an_override_forgets_it() {
    let dir = override_dir(&[("posted.subject", "Brief zur Post: {{ item.aktenzeichen or \"?\" }}\n")]);
    let templates = Templates::load(dir.path()).expect("load");
    let mut item = item_of(Event::Posted);
    let real = templates.render(&content(vec![item.clone()])).expect("render");
    assert_eq!(real.subject, "Brief zur Post: VH-2026-0815");
    item.test = true;
    let test = templates.render(&content(vec![item])).expect("render");
    assert_eq!(test.subject, "[Testnachricht] Brief zur Post: VH-2026-0815");
}

#[test]
fn an_unclosed_block_in_an_override_names_its_file_and_line() {
    let dir = override_dir(&[("rejected.txt", "Zeile eins\nZeile zwei\n{% if item.test %}\nTest\n")]);
    let error = load_error(dir.path());
    let path = dir.path().join("templates/mail/rejected.txt");
    assert_eq!(error, format!("{}:4: syntax error: unexpected end of input, expected end of block", path.display()));
}

#[test]
fn an_unknown_variable_in_an_override_names_its_file_and_line() {
    let dir = override_dir(&[("delivered.html", "<p>\n{{ item.report or \"–\" }}\n{{ item.nonesuch }}\n</p>\n")]);
    let error = load_error(dir.path());
    let path = dir.path().join("templates/mail/delivered.html");
    assert_eq!(error, format!("{}:3: undefined value: `item.nonesuch` is undefined", path.display()));
}

#[test]
fn an_unknown_filter_in_an_override_is_found_at_load() {
    let dir = override_dir(&[("digest.subject", "{{ items|length|nonesuch }} Meldungen\n")]);
    let error = load_error(dir.path());
    let path = dir.path().join("templates/mail/digest.subject");
    assert!(error.starts_with(&format!("{}:1: unknown filter", path.display())), "{error}");
    assert!(error.contains("nonesuch"), "{error}");
}

#[test]
fn an_absent_value_printed_without_a_test_is_found_at_load() {
    // Fine for a request with an Aktenzeichen, "none" for one without: refused at start-up.
    let dir = override_dir(&[("posted.txt", "Brief\n\nAktenzeichen {{ item.aktenzeichen }}\n")]);
    let error = load_error(dir.path());
    let path = dir.path().join("templates/mail/posted.txt");
    assert!(error.starts_with(&format!("{}:3: invalid operation: a value that can be absent", path.display())), "{error}");
    assert!(error.ends_with(" in `item.aktenzeichen`"), "{error}");
}

#[test]
fn unknown_files_in_the_override_folder_are_listed_not_fatal() {
    let dir = override_dir(&[("rejectd.txt", "Tippfehler"), ("README.md", "Notizen"), ("failed.eml", "x")]);
    let templates = Templates::load(dir.path()).expect("load");
    let mail = dir.path().join("templates/mail");
    assert_eq!(templates.unknown_overrides(), [mail.join("failed.eml"), mail.join("rejectd.txt")]);
}

#[test]
fn an_override_subject_that_can_render_empty_is_refused_at_load() {
    let dir = override_dir(&[("printed.subject", "{% if item.test %}Test{% endif %}\n")]);
    let error = load_error(dir.path());
    let path = dir.path().join("templates/mail/printed.subject");
    assert_eq!(error, format!("{}: the subject is empty", path.display()));
}

// --- The message -----------------------------------------------------------------------------

/// Headers (unfolded, names lower-case) and body of a MIME entity.
fn split_entity(raw: &str) -> (Vec<(String, String)>, String) {
    let (head, body) = raw.split_once("\r\n\r\n").expect("header/body separator");
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = headers.last_mut() {
                last.1.push_str(line);
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    (headers, body.to_owned())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str()).unwrap_or_else(|| panic!("no {name} header"))
}

/// An RFC 2047 header value, decoded (B and Q encoded words in UTF-8).
fn decode_words(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("=?") {
        let before = &rest[..start];
        if !before.trim().is_empty() {
            out.push_str(before);
        }
        let word = &rest[start + 2..];
        let end = word.find("?=").expect("end of encoded word");
        let mut parts = word[..end].splitn(3, '?');
        let (charset, encoding, text) = (parts.next(), parts.next(), parts.next().expect("encoded text"));
        assert_eq!(charset.map(str::to_ascii_lowercase).as_deref(), Some("utf-8"));
        let bytes = match encoding {
            Some("b" | "B") => base64::engine::general_purpose::STANDARD.decode(text).expect("base64 word"),
            _ => quoted_printable::decode(text.replace('_', " "), quoted_printable::ParseMode::Strict).expect("q word"),
        };
        out.push_str(&String::from_utf8(bytes).expect("utf-8 word"));
        rest = &word[end + 2..];
    }
    out.push_str(rest);
    out
}

fn decode_body(headers: &[(String, String)], body: &str) -> String {
    let bytes = match header(headers, "content-transfer-encoding").to_ascii_lowercase().as_str() {
        "quoted-printable" => quoted_printable::decode(body, quoted_printable::ParseMode::Strict).expect("qp body"),
        "base64" => base64::engine::general_purpose::STANDARD.decode(body.replace("\r\n", "")).expect("base64 body"),
        _ => body.as_bytes().to_vec(),
    };
    String::from_utf8(bytes).expect("utf-8 body").replace("\r\n", "\n")
}

#[test]
fn the_built_message_has_both_parts_and_the_exact_message_id() {
    let mut item = item_of(Event::Rejected);
    item.test = true;
    let rendered = render(vec![item]);
    let message = build_message(
        &rendered,
        "amtsbote <amtsbote@lemgo.example>",
        &["poststelle@lemgo.example".to_owned(), "Vollstreckung <vollstreckung@lemgo.example>".to_owned()],
        "n42.rejected@amtsbote.host",
        at(),
    )
    .expect("build");
    let formatted = String::from_utf8(message.formatted()).expect("ascii message");
    let (headers, body) = split_entity(&formatted);
    assert_eq!(header(&headers, "message-id"), "<n42.rejected@amtsbote.host>");
    assert_eq!(header(&headers, "auto-submitted"), "auto-generated");
    assert_eq!(header(&headers, "from"), "amtsbote <amtsbote@lemgo.example>");
    let to = header(&headers, "to");
    assert!(to.contains("poststelle@lemgo.example") && to.contains("<vollstreckung@lemgo.example>"), "{to}");
    assert_eq!(header(&headers, "date"), "Tue, 01 Dec 2026 18:12:00 +0000");
    assert_eq!(decode_words(header(&headers, "subject")), rendered.subject);
    assert!(rendered.subject.contains("zurückgewiesen"), "the subject is not ASCII, so it was encoded");

    let content_type = header(&headers, "content-type");
    assert!(content_type.starts_with("multipart/alternative;"), "{content_type}");
    let boundary = content_type.split("boundary=").nth(1).expect("boundary").trim_matches('"');
    let parts: Vec<&str> = body
        .split(&format!("--{boundary}"))
        .map(|p| p.trim_start_matches("\r\n"))
        .filter(|p| !p.is_empty() && !p.starts_with("--"))
        .collect();
    assert_eq!(parts.len(), 2, "{body}");
    let (plain_headers, plain_body) = split_entity(parts[0]);
    let (html_headers, html_body) = split_entity(parts[1]);
    assert_eq!(header(&plain_headers, "content-type").to_ascii_lowercase(), "text/plain; charset=utf-8");
    assert_eq!(header(&html_headers, "content-type").to_ascii_lowercase(), "text/html; charset=utf-8");
    assert_eq!(decode_body(&plain_headers, plain_body.trim_end_matches("\r\n")), rendered.text.trim_end());
    assert_eq!(decode_body(&html_headers, html_body.trim_end_matches("\r\n")), rendered.html.trim_end());
}

#[test]
fn invalid_addresses_and_ids_are_refused_with_which() {
    let rendered = render(vec![item_of(Event::Posted)]);
    let to = ["ok@lemgo.example".to_owned(), "kein-at-zeichen".to_owned()];
    let e = build_message(&rendered, "amtsbote@host.example", &to, "n1.posted@host", at()).expect_err("bad to");
    assert!(e.to_string().starts_with("recipient 1 (\"kein-at-zeichen\")"), "{e}");
    let e = build_message(&rendered, "nicht gültig", &to[..1], "n1.posted@host", at()).expect_err("bad from");
    assert!(e.to_string().contains("mail.from"), "{e}");
    for id in ["n1 posted@host", "<n1@host>", "ohne-at", "n1@host\r\nBcc: x@y"] {
        assert!(build_message(&rendered, "amtsbote@host.example", &to[..1], id, at()).is_err(), "{id:?}");
    }
    assert!(build_message(&rendered, "amtsbote@host.example", &[], "n1.posted@host", at()).is_err());
}
