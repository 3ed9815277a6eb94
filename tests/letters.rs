//! The printed letter (print::letter) read back with poppler-utils and qpdf: the text a reader
//! gets, where the words lie (the envelope window, the franking strip), names in DIN 91379
//! letters, the structure of a file of several letters, and the test mark.
//! Skipped when pdftotext, pdfinfo or qpdf is absent; in CI (CI=true) their absence fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use amtsbote::print::letter::{LetterInput, Recipient, RenderedLetter, Sender, Templates, compose, render_file};
use chrono::NaiveDate;

const MM: f64 = 72.0 / 25.4;

fn tools_present() -> bool {
    let missing: Vec<&str> = [("pdftotext", "-v"), ("pdfinfo", "-v"), ("qpdf", "--version")]
        .into_iter()
        .filter(|(tool, arg)| !Command::new(tool).arg(arg).output().is_ok_and(|o| o.status.success()))
        .map(|(tool, _)| tool)
        .collect();
    if !missing.is_empty() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI must have {missing:?} (poppler-utils, qpdf)");
        eprintln!("SKIPPED: {missing:?} absent (apt-get install poppler-utils qpdf)");
        return false;
    }
    true
}

fn example(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/messages").join(name);
    std::fs::read_to_string(path).expect("the example message")
}

fn sender() -> Sender {
    Sender {
        name: "Stadt Lemgo, Stadtkasse".into(),
        street: "Marktplatz 1".into(),
        postcode: "32657".into(),
        city: "Lemgo".into(),
        email: Some("stadtkasse@lemgo.example".into()),
    }
}

fn recipient() -> Recipient {
    Recipient {
        name: "Stadt Köln, Kassen- und Steueramt, Vollstreckungsstelle".into(),
        street: "Willy-Brandt-Platz 2".into(),
        postcode: "50679".into(),
        city: "Köln".into(),
    }
}

fn letter(payload: &str, number: u32, test: bool) -> LetterInput {
    let date = NaiveDate::from_ymd_opt(2026, 12, 1).expect("a date");
    compose(payload.as_bytes(), &sender(), &recipient(), date, &Templates::shipped(), "B-2026-12-01", number, test).expect("composed")
}

/// The sample request with its claim repeated `n` times (a letter of more than one page).
fn with_claims(n: usize) -> String {
    let xml = example("ersuchen.xml");
    let start = xml.find("<forderung>").expect("a claim");
    let end = xml.find("</forderung>").expect("a claim") + "</forderung>".len();
    let claim = &xml[start..end];
    let total = format!("{}.00", 445 * n);
    xml.replacen(claim, &claim.repeat(n), 1).replace(">445.00<", &format!(">{total}<"))
}

fn write(dir: &Path, letters: &[LetterInput]) -> (PathBuf, Vec<RenderedLetter>) {
    let (pdf, rendered) = render_file(letters).expect("rendered");
    let path = dir.join("letters.pdf");
    std::fs::write(&path, &pdf).expect("write the PDF");
    // LETTERS_KEEP=<dir>: keep each file to look at (named by its first letter number).
    if let Ok(keep) = std::env::var("LETTERS_KEEP") {
        let name = format!("letters-{}-{}.pdf", letters[0].aktenzeichen, letters[0].letter_number);
        std::fs::write(Path::new(&keep).join(name), &pdf).expect("keep the PDF");
    }
    (path, rendered)
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().expect("run the tool");
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn text_of(pdf: &Path, page: Option<u32>) -> String {
    let p = pdf.to_str().expect("a path");
    match page {
        Some(n) => {
            let n = n.to_string();
            run("pdftotext", &["-enc", "UTF-8", "-f", &n, "-l", &n, p, "-"])
        }
        None => run("pdftotext", &["-enc", "UTF-8", p, "-"]),
    }
}

fn pages_of(pdf: &Path) -> u32 {
    let info = run("pdfinfo", &[pdf.to_str().expect("a path")]);
    let line = info.lines().find(|l| l.starts_with("Pages:")).expect("a page count");
    line["Pages:".len()..].trim().parse().expect("a number")
}

/// The words of page 1 with their boxes in mm from the top-left corner.
fn words_of_page_1(pdf: &Path) -> Vec<(String, f64, f64, f64, f64)> {
    let html = run("pdftotext", &["-enc", "UTF-8", "-bbox", "-f", "1", "-l", "1", pdf.to_str().expect("a path"), "-"]);
    let attr = |tag: &str, name: &str| -> f64 {
        let key = format!("{name}=\"");
        let at = tag.find(&key).expect("an attribute") + key.len();
        let end = tag[at..].find('"').expect("its end") + at;
        tag[at..end].parse::<f64>().expect("a number") / MM
    };
    let mut words = Vec::new();
    for chunk in html.split("<word ").skip(1) {
        let close = chunk.find('>').expect("tag end");
        let tag = &chunk[..close];
        let text = &chunk[close + 1..chunk.find("</word>").expect("word end")];
        let text = text.replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"");
        words.push((text, attr(tag, "xMin"), attr(tag, "yMin"), attr(tag, "xMax"), attr(tag, "yMax")));
    }
    assert!(!words.is_empty(), "page 1 has words");
    words
}

#[test]
fn a_letter_reads_back_with_its_content() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (pdf, rendered) = write(dir.path(), &[letter(&example("ersuchen.xml"), 1, false)]);
    assert_eq!(rendered, vec![RenderedLetter { letter_number: 1, first_page: 1, pages: 1, sheets: 1 }]);
    let text = text_of(&pdf, None);
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    for expected in [
        "Vollstreckungshilfeersuchen, Az. VH-2026-000123",
        "Mustermann, Erika",
        "geboren am 12.04.1980",
        "Hohe Straße 12a, 50667 Köln",
        "Grundsteuer",
        "01.01.2026 – 30.06.2026",
        "412,50 €",
        "20,50 €",
        "12,00 €",
        "445,00 €",
        "Gesamtbetrag",
        "Vollstreckung in das bewegliche Vermögen",
        "Abnahme der Vermögensauskunft",
        "DE02 1203 0000 0000 2020 51",
        "BYLADEM1001",
        "Kontoinhaber: Stadt Lemgo",
        "5.0123.456789.1",
        "Gezeichnet: Der Bürgermeister, im Auftrag Beispiel",
        "Seite 1 von 1",
        "Datum: 01.12.2026",
    ] {
        assert!(flat.contains(expected), "{expected:?} not in the letter's text:\n{text}");
    }
    assert!(!flat.contains("MUSTER"), "a production letter carries no test mark");
}

#[test]
fn only_the_address_and_the_return_line_lie_in_the_window() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (pdf, _) = write(dir.path(), &[letter(&example("ersuchen.xml"), 1, false)]);
    let words = words_of_page_1(&pdf);
    let r = recipient();
    let address: Vec<String> = format!("{} {} {} {}", r.name, r.street, r.postcode, r.city).split_whitespace().map(str::to_owned).collect();
    let s = sender();
    let return_words: Vec<String> = format!("{} · {} · {} {}", s.name, s.street, s.postcode, s.city).split_whitespace().map(str::to_owned).collect();

    let inside = |&(_, x0, y0, x1, y1): &(String, f64, f64, f64, f64)| x0 >= 20.0 && x1 <= 105.0 && y0 >= 45.0 && y1 <= 90.0;
    let overlaps = |(_, x0, y0, x1, y1): &(String, f64, f64, f64, f64), l: f64, t: f64, r: f64, b: f64| *x0 < r && *x1 > l && *y0 < b && *y1 > t;

    // Every address word is inside the window, below the franking strip.
    let mut found = 0;
    for w in words.iter().filter(|w| w.2 > 60.0 && w.2 < 95.0 && w.1 < 110.0) {
        assert!(address.contains(&w.0), "{:?} lies in the address zone but is not part of the address", w.0);
        assert!(inside(w), "address word {:?} outside the window: {w:?}", w.0);
        assert!(w.2 >= 66.0, "address word {:?} in the franking strip: {w:?}", w.0);
        found += 1;
    }
    assert_eq!(found, address.len(), "all address words found: {words:?}");
    // Whatever else overlaps the window is the return-address line, in its 5 mm.
    for w in words.iter().filter(|w| overlaps(w, 20.0, 45.0, 105.0, 90.0)) {
        if address.contains(&w.0) && w.2 >= 66.0 {
            continue;
        }
        assert!(return_words.contains(&w.0), "{:?} is in the window: {w:?}", w.0);
        assert!(inside(w) && w.2 >= 45.0 && w.4 <= 50.5, "return-address word {:?} outside its line: {w:?}", w.0);
    }
    // The franking strip is empty across the page.
    for w in &words {
        assert!(!overlaps(w, 0.0, 53.0, 210.0, 66.0), "{:?} lies in the franking strip: {w:?}", w.0);
    }
    // The inserter's areas are empty: the left 15 mm below the hole mark, the bottom right.
    for w in &words {
        assert!(!overlaps(w, 0.0, 148.5, 15.0, 297.0), "{:?} in the OMR strip: {w:?}", w.0);
        assert!(!overlaps(w, 150.0, 264.0, 210.0, 297.0), "{:?} in the code area: {w:?}", w.0);
    }
}

#[test]
fn din_91379_names_survive() {
    if !tools_present() {
        return;
    }
    let name = "Groß-Łęcka ẞÄÖÜ äöü Șerban";
    let payload = example("ersuchen.xml").replace("<familienname>Mustermann</familienname>", &format!("<familienname>{name}</familienname>"));
    let dir = tempfile::tempdir().expect("tempdir");
    let (pdf, _) = write(dir.path(), &[letter(&payload, 1, false)]);
    let text = text_of(&pdf, None);
    assert!(text.contains(&format!("{name}, Erika")), "the name is not in the text:\n{text}");
}

#[test]
fn three_letters_in_one_file() {
    if !tools_present() {
        return;
    }
    let long = with_claims(40);
    let inputs = vec![
        letter(&example("ersuchen.xml"), 7, false),
        letter(&long, 8, false),
        letter(&example("ersuchen-firma.xml"), 9, false),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let (pdf, rendered) = write(dir.path(), &inputs);
    run("qpdf", &["--check", pdf.to_str().expect("a path")]);

    assert_eq!(rendered.iter().map(|r| r.letter_number).collect::<Vec<_>>(), vec![7, 8, 9]);
    assert!(rendered[1].pages > 1, "40 claims take more than a page: {rendered:?}");
    let total: u32 = rendered.iter().map(|r| r.pages).sum();
    assert_eq!(pages_of(&pdf), total);
    let mut next = 1;
    for (r, input) in rendered.iter().zip(&inputs) {
        assert_eq!(r.first_page, next, "{rendered:?}");
        assert_eq!(r.sheets, r.pages);
        let first = text_of(&pdf, Some(r.first_page)).split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(first.contains(&input.subject), "page {} starts letter {}", r.first_page, r.letter_number);
        assert!(first.contains(&format!("Seite 1 von {}", r.pages)));
        let last = text_of(&pdf, Some(r.first_page + r.pages - 1)).split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(last.contains(&format!("Seite {} von {}", r.pages, r.pages)));
        next += r.pages;
    }
    // The long letter's total (40 × 445,00 €) comes once, after all 40 rows, with the table's
    // header repeated on every page it runs over.
    let long_text: String = (rendered[1].first_page..rendered[1].first_page + rendered[1].pages).map(|p| text_of(&pdf, Some(p))).collect();
    assert_eq!(long_text.matches("17.800,00 €").count(), 1);
    assert_eq!(long_text.matches("412,50 €").count(), 40);
    for p in rendered[1].first_page + 1..rendered[1].first_page + rendered[1].pages {
        let page = text_of(&pdf, Some(p));
        assert!(page.contains("Einnahmeart") && page.contains("(Fortsetzung)"), "page {p} continues the letter");
    }
}

#[test]
fn a_test_message_is_marked_on_every_page() {
    if !tools_present() {
        return;
    }
    let test_message = example("ersuchen-test.xml");
    let marked = letter(&test_message, 1, false);
    assert!(marked.test, "test=\"true\" in the message makes a test letter");
    let long = letter(&with_claims(40), 2, true);
    let dir = tempfile::tempdir().expect("tempdir");
    let (pdf, rendered) = write(dir.path(), &[marked, long]);
    let pages = pages_of(&pdf);
    assert!(pages >= 3, "{rendered:?}");
    for page in 1..=pages {
        let text = text_of(&pdf, Some(page));
        assert!(text.contains("MUSTER"), "page {page} has no test mark");
    }
}

#[test]
fn only_requests_are_printed_and_errors_name_no_debtor_data() {
    let date = NaiveDate::from_ymd_opt(2026, 12, 1).expect("a date");
    let t = Templates::shipped();
    let err = compose(example("ruecknahme.xml").as_bytes(), &sender(), &recipient(), date, &t, "B", 1, false).expect_err("not a request");
    assert!(err.to_string().contains("not an Ersuchen"), "{err}");
    let err = compose(b"<nope", &sender(), &recipient(), date, &t, "B", 1, false).expect_err("not XML");
    assert!(!err.to_string().contains("nope"), "{err}");

    // A name the font cannot set fails this letter, and the message names the character only.
    // (Since the reader holds names to DIN 91379, whose letters the font has, such a name is
    // refused when the payload is read; either way no debtor data is named.)
    let payload = example("ersuchen.xml").replace("<familienname>Mustermann</familienname>", "<familienname>Mustermann漢</familienname>");
    let err = compose(payload.as_bytes(), &sender(), &recipient(), date, &t, "B", 1, false).expect_err("no glyph");
    let message = err.to_string();
    assert!((message.contains("U+6F22") && message.contains("Schuldner")) || message.contains("cannot be read"), "{message}");
    assert!(!message.contains("Mustermann") && !message.contains("Erika"), "{message}");
    assert!(render_file(&[]).is_err(), "an empty file is refused");
}
