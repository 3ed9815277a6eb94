//! The printed letter (print::letter) read back with poppler-utils and qpdf: the text a reader
//! gets, where the words lie (the envelope window, the franking strip), names in DIN 91379
//! letters, the structure of a file of several letters, and the test mark.
//! The inserter's marks are read from rendered pages (pdftoppm) as the machine reads them: the
//! OMR bars by sampling pixel rows, the DataMatrix with dmtxread (dmtx-utils).
//! Skipped when pdftotext, pdfinfo, pdftoppm, qpdf or dmtxread is absent; in CI (CI=true) their
//! absence fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use amtsbote::print::attachment::{AttachmentFault, MAX_PAGES};
use amtsbote::print::letter::{AttachmentOutcome, Debtor, LetterError, LetterInput, Recipient, RenderedLetter, Sender, Templates, compose, render_file};
use base64::Engine as _;
use chrono::NaiveDate;
use unicode_normalization::UnicodeNormalization as _;

const MM: f64 = 72.0 / 25.4;

fn tools_present() -> bool {
    present(&[("pdftotext", "-v"), ("pdfinfo", "-v"), ("pdftoppm", "-v"), ("qpdf", "--version")], "poppler-utils, qpdf")
}

/// Whether every tool answers its version call; their absence fails under CI=true.
fn present(tools: &[(&str, &str)], packages: &str) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .filter(|(tool, arg)| !Command::new(tool).arg(arg).output().is_ok_and(|o| o.status.success()))
        .map(|(tool, _)| *tool)
        .collect();
    if !missing.is_empty() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI must have {missing:?} ({packages})");
        eprintln!("SKIPPED: {missing:?} absent (apt-get install {packages})");
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
    words_of_page(pdf, 1)
}

/// The words of a page with their boxes in mm from the top-left corner.
fn words_of_page(pdf: &Path, page: u32) -> Vec<(String, f64, f64, f64, f64)> {
    let n = page.to_string();
    let html = run("pdftotext", &["-enc", "UTF-8", "-bbox", "-f", &n, "-l", &n, pdf.to_str().expect("a path"), "-"]);
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
    assert!(!words.is_empty(), "page {page} has words");
    words
}

#[test]
fn a_letter_reads_back_with_its_content() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (pdf, rendered) = write(dir.path(), &[letter(&example("ersuchen.xml"), 1, false)]);
    // The sample's attachment is a stub, not a PDF that can be printed: the letter names it
    // with a note, which takes it onto a second page.
    assert_eq!(rendered, vec![RenderedLetter { letter_number: 1, first_page: 1, pages: 2, sheets: 2 }]);
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
        "Seite 1 von 2",
        "Seite 2 von 2",
        "Datum: 01.12.2026",
        "Anlagen",
        "Die Anlage „bescheid.pdf“ konnte nicht gedruckt werden; sie wird auf Anfrage nachgereicht.",
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

/// A rendered page in grey (0 black … 255 white).
struct Gray {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

const DPI: f64 = 150.0;

impl Gray {
    fn px(mm: f64) -> usize {
        (mm / 25.4 * DPI).round() as usize
    }
    fn at(&self, x_mm: f64, y_mm: f64) -> u8 {
        let (x, y) = (Self::px(x_mm).min(self.width - 1), Self::px(y_mm).min(self.height - 1));
        self.pixels[y * self.width + x]
    }
    /// Whether any pixel of the rectangle (mm, top-left origin) is dark.
    fn dark_in(&self, left: f64, top: f64, right: f64, bottom: f64) -> Option<(f64, f64)> {
        for y in Self::px(top)..Self::px(bottom).min(self.height) {
            for x in Self::px(left)..Self::px(right).min(self.width) {
                if self.pixels[y * self.width + x] < 128 {
                    return Some((x as f64 * 25.4 / DPI, y as f64 * 25.4 / DPI));
                }
            }
        }
        None
    }
}

/// Page `page` of `pdf` rendered in grey at [`DPI`] (pdftoppm's PGM).
fn render_gray(pdf: &Path, page: u32) -> Gray {
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = dir.path().join("page");
    let n = page.to_string();
    run("pdftoppm", &["-r", "150", "-gray", "-f", &n, "-l", &n, "-singlefile", pdf.to_str().expect("a path"), prefix.to_str().expect("a path")]);
    let bytes = std::fs::read(dir.path().join("page.pgm")).expect("the PGM");
    // "P5\n<w> <h>\n255\n" then one byte a pixel.
    let mut fields = Vec::new();
    let mut at = 0;
    while fields.len() < 4 {
        while bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        let start = at;
        while !bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        fields.push(String::from_utf8(bytes[start..at].to_vec()).expect("a header field"));
    }
    assert_eq!(fields[0], "P5");
    let (width, height): (usize, usize) = (fields[1].parse().expect("width"), fields[2].parse().expect("height"));
    let pixels = bytes[at + 1..].to_vec();
    assert_eq!(pixels.len(), width * height);
    Gray { width, height, pixels }
}

/// The OMR tracks as the inserter reads them: (mm from the top) of the start mark and the five after it.
const OMR_TRACKS_MM: [f64; 6] = [160.0, 164.233, 168.467, 172.7, 176.933, 181.167];

/// The bars the inserter must see on sheet `n` of `m`, worked out here from the definition:
/// start, close envelope on the last sheet, n mod 8 in three bits (4-2-1), even parity.
fn expected_bars(n: u32, m: u32) -> [bool; 6] {
    let s = n % 8;
    let mut b = [true, n == m, s & 4 != 0, s & 2 != 0, s & 1 != 0, false];
    b[5] = b.iter().filter(|&&x| x).count() % 2 == 1;
    b
}

#[test]
fn every_sheet_carries_its_omr_code() {
    if !tools_present() {
        return;
    }
    let inputs = vec![letter(&example("ersuchen.xml"), 7, false), letter(&with_claims(250), 8, false), letter(&example("ersuchen-firma.xml"), 9, true)];
    let dir = tempfile::tempdir().expect("tempdir");
    let (pdf, rendered) = write(dir.path(), &inputs);
    assert!(rendered[1].sheets >= 9, "the sequence wraps: {rendered:?}");
    for r in &rendered {
        for n in 1..=r.sheets {
            let page = render_gray(&pdf, r.first_page + n - 1);
            let read: Vec<bool> = OMR_TRACKS_MM
                .iter()
                .map(|&y| (-2..=2).any(|d| page.at(9.0, y + f64::from(d) * 25.4 / DPI / 2.0) < 128))
                .collect();
            assert_eq!(read, expected_bars(n, r.sheets), "letter {} sheet {n} of {}", r.letter_number, r.sheets);
            // A bar is a bar: 8 mm long, thin, and nothing else is dark in the strip.
            for (&y, bar) in OMR_TRACKS_MM.iter().zip(read) {
                if bar {
                    assert!(page.at(5.5, y) < 128 && page.at(12.5, y) < 128, "bar at {y} mm is 8 mm long");
                    assert!(page.at(3.5, y) > 200 && page.at(14.5, y) > 200, "bar at {y} mm ends");
                }
            }
            let mut top = 155.0;
            for &y in &OMR_TRACKS_MM {
                assert_eq!(page.dark_in(0.0, top, 15.0, y - 0.6), None, "letter {} sheet {n}: a stray mark in the OMR strip", r.letter_number);
                top = y + 0.6;
            }
            // Below the code only the lower fold mark (210 mm, 3–8 mm from the edge: left of
            // the reading head at 9 mm).
            assert_eq!(page.dark_in(0.0, top, 15.0, 209.4), None, "letter {} sheet {n}: a stray mark below the OMR code", r.letter_number);
            assert_eq!(page.dark_in(8.6, 209.4, 15.0, 210.6), None, "letter {} sheet {n}: the fold mark reaches the reading head", r.letter_number);
            assert_eq!(page.dark_in(0.0, 210.6, 15.0, 297.0), None, "letter {} sheet {n}: a stray mark below the OMR code", r.letter_number);
        }
    }
}

#[test]
fn every_sheet_s_datamatrix_decodes_to_its_letter_and_sheet() {
    if !tools_present() || !present(&[("dmtxread", "--version")], "dmtx-utils") {
        return;
    }
    let inputs = vec![letter(&example("ersuchen.xml"), 41, false), letter(&with_claims(40), 42, false), letter(&example("ersuchen-firma.xml"), 12345, false)];
    let dir = tempfile::tempdir().expect("tempdir");
    let (pdf, rendered) = write(dir.path(), &inputs);
    assert!(rendered[1].sheets > 1, "{rendered:?}");
    let p = pdf.to_str().expect("a path");
    for r in &rendered {
        for n in 1..=r.sheets {
            // The code area only (150–210 × 264–297 mm), as the camera sees it.
            let page = (r.first_page + n - 1).to_string();
            let png = dir.path().join(format!("code-{page}"));
            let (x, y, w, h) = (Gray::px(150.0), Gray::px(264.0), Gray::px(60.0), Gray::px(33.0));
            run("pdftoppm", &["-r", "150", "-gray", "-png", "-singlefile", "-f", &page, "-l", &page, "-x", &x.to_string(), "-y", &y.to_string(), "-W", &w.to_string(), "-H", &h.to_string(), p, png.to_str().expect("a path")]);
            let decoded = run("dmtxread", &["-N", "1", "-m", "5000", png.with_extension("png").to_str().expect("a path")]);
            assert_eq!(decoded.trim_end(), format!("B-2026-12-01;L{:05};S{n}/{}", r.letter_number, r.sheets), "page {page}");
        }
    }
}

/// Every character and sequence of DIN 91379 (the shared reference list, read at test time:
/// `../shared/reference/din91379/latin_list_1.3.txt` from the crate root) that a name or an
/// address line can hold: all groups but the lone combining marks (they occur only inside
/// the sequences) and the whitespace and control characters of N4. None when the list is
/// absent (a failure under CI=true).
fn din_91379() -> Option<Vec<String>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/din91379/latin_list_1.3.txt");
    let Ok(list) = std::fs::read_to_string(&path) else {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI must have the DIN 91379 list at {}", path.display());
        eprintln!("SKIPPED: no DIN 91379 list at {}", path.display());
        return None;
    };
    let mut entries = Vec::new();
    for line in list.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split(';').map(str::trim).collect();
        let text: String = fields[2].split_whitespace().map(|h| char::from_u32(u32::from_str_radix(h, 16).expect("hex")).expect("a char")).collect();
        if fields[0] == "dc" || text.chars().all(char::is_whitespace) || text.chars().any(char::is_control) {
            continue;
        }
        entries.push(text);
    }
    assert!(entries.len() > 900, "{} entries", entries.len());
    Some(entries)
}

/// The sample letter with two debtors: the first named with the whole list (set bold), the
/// second living at it (set regular).
fn din_91379_letter(entries: &[String]) -> LetterInput {
    let mut l = letter(&example("ersuchen.xml"), 1, false);
    let all = entries.join(" ");
    l.debtors = vec![
        Debtor { name: all.clone(), geburtsname: None, geburtsdatum: None, address: vec!["Hohe Straße 12a".into(), "50667 Köln".into()], auskunftssperre: false },
        Debtor { name: "Mustermann, Erika".into(), geburtsname: None, geburtsdatum: None, address: vec![all], auskunftssperre: false },
    ];
    l
}

fn flat(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ").nfc().collect()
}

#[test]
fn the_whole_din_91379_list_prints_and_reads_back() {
    if !tools_present() {
        return;
    }
    let Some(entries) = din_91379() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let (pdf, rendered) = write(dir.path(), &[din_91379_letter(&entries)]);
    // -raw: in its layout mode pdftotext takes a line of one-letter words for letter-spaced
    // text and drops the spaces.
    // The list runs over a page break: the footer and the next page's running head go.
    let mut text = run("pdftotext", &["-raw", "-enc", "UTF-8", pdf.to_str().expect("a path"), "-"]);
    for page in 1..=rendered[0].pages {
        text = text.replace(&format!("Seite {page} von {}", rendered[0].pages), "");
    }
    let text = flat(&text.replace("Vollstreckungshilfeersuchen, Az. VH-2026-000123 (Fortsetzung)", ""));
    let all: String = entries.join(" ").nfc().collect();
    for (style, at) in [("bold", 0), ("regular", 1)] {
        let found = text.match_indices(&all).count();
        if found <= at {
            // Name the first entry that does not come back, with its code points.
            let mut prefix = String::new();
            for e in &entries {
                let next = if prefix.is_empty() { e.nfc().collect::<String>() } else { format!("{prefix} {}", e.nfc().collect::<String>()) };
                if !text.contains(&next) {
                    let cps: Vec<String> = e.chars().map(|c| format!("U+{:04X}", u32::from(c))).collect();
                    panic!("set {style}: {e:?} ({}) does not read back after {:?}", cps.join(" "), prefix.chars().rev().take(30).collect::<String>().chars().rev().collect::<String>());
                }
                prefix = next;
            }
            panic!("set {style}: the list does not read back ({found} found)");
        }
    }
    // PNGs to look at: DIN91379_KEEP=<dir>.
    if let Ok(keep) = std::env::var("DIN91379_KEEP") {
        for page in 1..=rendered[0].pages {
            let n = page.to_string();
            let prefix = Path::new(&keep).join(format!("din91379-{page}"));
            run("pdftoppm", &["-r", "200", "-png", "-singlefile", "-f", &n, "-l", &n, pdf.to_str().expect("a path"), prefix.to_str().expect("a path")]);
        }
    }
}

#[test]
fn a_character_the_font_lacks_is_refused_not_printed_as_a_box() {
    let Some(entries) = din_91379() else { return };
    // U+6F22 (a CJK ideograph) is in no DIN 91379 group and not in DejaVu Sans.
    let mut l = din_91379_letter(&entries);
    l.debtors[1].address.push("Grüße \u{6F22}".into());
    let Err(err) = render_file(&[l]) else { panic!("a letter with a character the font lacks was rendered") };
    assert!(matches!(err, LetterError::MissingGlyph { codepoint: 0x6F22, field: "Schuldner" }), "{err}");
    assert!(!err.to_string().contains("Grüße"), "{err}");
}

#[test]
fn the_same_letters_give_the_same_bytes() {
    let digest = |letters: &[LetterInput]| {
        use sha2::Digest as _;
        let (pdf, _) = render_file(letters).expect("rendered");
        hex::encode(sha2::Sha256::digest(&pdf))
    };
    let letters = vec![letter(&example("ersuchen.xml"), 7, false), letter(&with_claims(40), 8, true)];
    let first = digest(&letters);
    assert_eq!(digest(&letters), first, "rendered twice");
    assert_eq!(digest(&letters), first, "rendered three times");
    // Another letter number is another file (the DataMatrix), with another document ID.
    let mut other = letters.clone();
    other[0].letter_number = 9;
    assert_ne!(digest(&other), first);
    if tools_present() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (pdf, _) = write(dir.path(), &letters);
        run("qpdf", &["--check", pdf.to_str().expect("a path")]);
        let info = run("pdfinfo", &[pdf.to_str().expect("a path")]);
        assert!(info.lines().any(|l| l.starts_with("CreationDate:") && l.contains("2026")), "{info}");
    }
}

/// A small PDF written here, one page per text (US Letter, Helvetica; text at 72/700). A page
/// whose text starts with "DARK" is filled black from edge to edge first (its text white):
/// the attachment's content must not reach the inserter's marks.
fn tiny_pdf(pages: &[&str]) -> Vec<u8> {
    let mut objects: Vec<String> = vec![String::new(); 3 + 2 * pages.len()];
    objects[0] = "<< /Type /Catalog /Pages 2 0 R >>".into();
    let kids: Vec<String> = (0..pages.len()).map(|i| format!("{} 0 R", 4 + 2 * i)).collect();
    objects[1] = format!("<< /Type /Pages /Kids [{}] /Count {} /MediaBox [0 0 612 792] >>", kids.join(" "), pages.len());
    objects[2] = "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>".into();
    for (i, text) in pages.iter().enumerate() {
        let content = if text.starts_with("DARK") {
            format!("0 g 0 0 612 792 re f BT 1 g /F1 24 Tf 72 700 Td ({text}) Tj ET")
        } else {
            format!("BT /F1 24 Tf 72 700 Td ({text}) Tj ET")
        };
        objects[3 + 2 * i] = format!("<< /Type /Page /Parent 2 0 R /Resources << /Font << /F1 3 0 R >> >> /Contents {} 0 R >>", 5 + 2 * i);
        objects[4 + 2 * i] = format!("<< /Length {} >>\nstream\n{content}\nendstream", content.len());
    }
    let mut pdf = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, o) in objects.iter().enumerate() {
        offsets.push(pdf.len());
        pdf.extend_from_slice(format!("{} 0 obj\n{o}\nendobj\n", i + 1).as_bytes());
    }
    let xref = pdf.len();
    pdf.extend_from_slice(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes());
    for o in offsets {
        pdf.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
    }
    pdf.extend_from_slice(format!("trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n", objects.len() + 1).as_bytes());
    pdf
}

/// The sample request with its attachment replaced by `attachments` (file name, MIME type, bytes).
fn with_attachments(attachments: &[(&str, &str, &[u8])]) -> String {
    let xml = example("ersuchen.xml");
    let start = xml.find("<anhang").expect("an attachment");
    let end = xml.find("</anhang>").expect("an attachment") + "</anhang>".len();
    let elements: String = attachments
        .iter()
        .map(|(name, mime, bytes)| format!("<anhang dateiname=\"{name}\" mimeType=\"{mime}\">{}</anhang>", base64::engine::general_purpose::STANDARD.encode(bytes)))
        .collect();
    format!("{}{elements}{}", &xml[..start], &xml[end..])
}

/// The DataMatrix of a page of `pdf`, as the camera reads it.
fn datamatrix_of(dir: &Path, pdf: &Path, page: u32) -> String {
    let page = page.to_string();
    let png = dir.join(format!("code-{page}"));
    let (x, y, w, h) = (Gray::px(150.0), Gray::px(264.0), Gray::px(60.0), Gray::px(33.0));
    let p = pdf.to_str().expect("a path");
    run("pdftoppm", &["-r", "150", "-gray", "-png", "-singlefile", "-f", &page, "-l", &page, "-x", &x.to_string(), "-y", &y.to_string(), "-W", &w.to_string(), "-H", &h.to_string(), p, png.to_str().expect("a path")]);
    run("dmtxread", &["-N", "1", "-m", "5000", png.with_extension("png").to_str().expect("a path")]).trim_end().to_owned()
}

#[test]
fn a_pdf_attachment_follows_its_letter_on_sheets_of_its_own() {
    if !tools_present() || !present(&[("dmtxread", "--version")], "dmtx-utils") {
        return;
    }
    let attachment = tiny_pdf(&["Rechnung 4711 Blatt eins", "DARK Rechnung 4711 Blatt zwei"]);
    let payload = with_attachments(&[("rechnung.pdf", "application/pdf", &attachment)]);
    let inputs = vec![letter(&example("ersuchen-firma.xml"), 3, false), letter(&payload, 4, false)];
    let dir = tempfile::tempdir().expect("tempdir");
    let (pdf, rendered) = write(dir.path(), &inputs);
    run("qpdf", &["--check", pdf.to_str().expect("a path")]);

    // The letter's own pages, then the attachment's two, all counted as its sheets.
    let r = rendered[1];
    let own = r.pages - 2;
    assert_eq!(r, RenderedLetter { letter_number: 4, first_page: rendered[0].pages + 1, pages: own + 2, sheets: own + 2 }, "{rendered:?}");
    assert_eq!(pages_of(&pdf), rendered[0].pages + own + 2);
    let letter_text = flat(&(r.first_page..r.first_page + own).map(|p| text_of(&pdf, Some(p))).collect::<String>());
    assert!(letter_text.contains("Anlagen") && letter_text.contains("rechnung.pdf (2 Seiten, anbei)"), "{letter_text}");
    assert!(letter_text.contains(&format!("Seite {own} von {own}")), "the letter counts its own pages: {letter_text}");
    for (i, text) in ["Rechnung 4711 Blatt eins", "Rechnung 4711 Blatt zwei"].iter().enumerate() {
        let page = r.first_page + own + i as u32;
        let got = flat(&text_of(&pdf, Some(page)));
        assert!(got.contains(text), "page {page}: {got}");
        assert!(got.contains(&format!("Anlage 1: rechnung.pdf · Seite {} von 2", i + 1)), "page {page}: {got}");
        // The attachment's words lie in the area kept for it (scaled in), clear of the marks.
        for w in words_of_page(&pdf, page).iter().filter(|w| w.0 == "4711") {
            assert!(w.1 >= 17.0 && w.3 <= 205.0 && w.2 >= 5.0 && w.4 <= 262.0, "page {page}: {w:?}");
        }
    }
    // Every sheet of the file says its letter and "n of m", the attachment's sheets included.
    for letter in &rendered {
        for n in 1..=letter.sheets {
            let page = letter.first_page + n - 1;
            assert_eq!(datamatrix_of(dir.path(), &pdf, page), format!("B-2026-12-01;L{:05};S{n}/{}", letter.letter_number, letter.sheets), "page {page}");
        }
    }
    // The last sheet (the attachment's black page) closes the envelope; its OMR strip holds
    // only the bars and the code area only the code (the black page stays in its area).
    let last = render_gray(&pdf, r.first_page + r.pages - 1);
    let read: Vec<bool> = OMR_TRACKS_MM.iter().map(|&y| (-2..=2).any(|d| last.at(9.0, y + f64::from(d) * 25.4 / DPI / 2.0) < 128)).collect();
    assert_eq!(read, expected_bars(r.sheets, r.sheets));
    assert_eq!(last.dark_in(0.0, 182.0, 15.0, 209.4), None, "the black page reaches the OMR strip");
    // (The code itself: its bottom-right corner at 198 × 290 mm, about 15 mm a side.)
    assert_eq!(last.dark_in(150.0, 264.0, 210.0, 273.0), None, "the black page reaches the code area");
    assert_eq!(last.dark_in(150.0, 264.0, 181.0, 297.0), None, "the black page reaches the code area");
    assert!(last.dark_in(100.0, 100.0, 110.0, 110.0).is_some(), "the black page is drawn");
}

#[test]
fn a_damaged_attachment_is_named_with_a_note_and_the_letter_goes_out() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let good = tiny_pdf(&["Rechnung 4711 Blatt eins"]);
    // Encrypted with qpdf, once with a user password and once without one (which lopdf would
    // decrypt on loading): neither is printed.
    let plain = dir.path().join("plain.pdf");
    std::fs::write(&plain, &good).expect("write");
    let mut encrypted = Vec::new();
    for (name, user) in [("locked.pdf", "geheim"), ("open.pdf", "")] {
        let to = dir.path().join(name);
        run("qpdf", &["--encrypt", user, "owner", "256", "--", plain.to_str().expect("a path"), to.to_str().expect("a path")]);
        encrypted.push(std::fs::read(&to).expect("read"));
    }
    let pages: Vec<String> = (1..=MAX_PAGES + 1).map(|i| format!("Blatt {i}")).collect();
    let long = tiny_pdf(&pages.iter().map(String::as_str).collect::<Vec<_>>());
    let mut cut = good.clone();
    cut.truncate(good.len() / 2);
    let attachments: Vec<(&str, &str, &[u8])> = vec![
        ("foto.png", "image/png", b"\x89PNG\r\n\x1a\n"),
        ("kaputt.pdf", "application/pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n"),
        ("halb.pdf", "application/pdf", &cut),
        ("gesperrt.pdf", "application/pdf", &encrypted[0]),
        ("offen.pdf", "application/pdf", &encrypted[1]),
        ("lang.pdf", "application/pdf", &long),
        ("gut.pdf", "application/pdf", &good),
    ];
    let l = letter(&with_attachments(&attachments), 5, false);
    let faults: Vec<Option<AttachmentFault>> = l
        .attachments
        .iter()
        .map(|a| match &a.outcome {
            AttachmentOutcome::Printed(_) => None,
            AttachmentOutcome::NotPrinted { fault, .. } => Some(fault.clone()),
        })
        .collect();
    assert_eq!(
        faults,
        vec![
            Some(AttachmentFault::NotPdfType("image/png".into())),
            Some(AttachmentFault::Damaged),
            Some(AttachmentFault::Damaged),
            Some(AttachmentFault::Encrypted),
            Some(AttachmentFault::Encrypted),
            Some(AttachmentFault::TooManyPages(MAX_PAGES + 1)),
            None,
        ]
    );
    assert_eq!(l.attachments[3].journal_note().as_deref(), Some("Anlage 4 (gesperrt.pdf) nicht gedruckt: an encrypted PDF"));
    assert_eq!(l.attachments[6].journal_note(), None);

    let (pdf, rendered) = write(dir.path(), &[l]);
    run("qpdf", &["--check", pdf.to_str().expect("a path")]);
    let text_pages = rendered[0].pages - 1;
    assert_eq!(pages_of(&pdf), rendered[0].pages, "{rendered:?}");
    let text: String = (1..=text_pages).map(|p| text_of(&pdf, Some(p))).collect::<Vec<_>>().join(" ");
    let text = flat(&text);
    for name in ["foto.png", "kaputt.pdf", "halb.pdf", "gesperrt.pdf", "offen.pdf", "lang.pdf"] {
        let note = format!("Die Anlage „{name}“ konnte nicht gedruckt werden; sie wird auf Anfrage nachgereicht.");
        assert!(text.contains(&note), "{note:?} not in the letter:\n{text}");
    }
    assert!(text.contains("gut.pdf (1 Seite, anbei)"), "{text}");
    assert!(flat(&text_of(&pdf, Some(rendered[0].pages))).contains("Rechnung 4711 Blatt eins"), "the good one is printed");
}

#[test]
fn the_same_letters_with_an_attachment_give_the_same_bytes() {
    let digest = |letters: &[LetterInput]| {
        use sha2::Digest as _;
        let (pdf, _) = render_file(letters).expect("rendered");
        hex::encode(sha2::Sha256::digest(&pdf))
    };
    let attachment = tiny_pdf(&["Rechnung 4711 Blatt eins", "Rechnung 4711 Blatt zwei"]);
    // And a file as printpdf writes it (an embedded TrueType font, compressed streams): a
    // letter of ours.
    let (ours, _) = render_file(&[letter(&example("ersuchen-firma.xml"), 1, false)]).expect("rendered");
    let payload = with_attachments(&[("rechnung.pdf", "application/pdf", &attachment), ("schreiben.pdf", "application/pdf", &ours)]);
    let letters = vec![letter(&payload, 7, false), letter(&example("ersuchen.xml"), 8, true), letter(&payload, 9, true)];
    let first = digest(&letters);
    assert_eq!(digest(&letters), first, "rendered twice");
    assert_eq!(digest(&letters), first, "rendered three times");
    let other_attachment = tiny_pdf(&["Rechnung 4712 Blatt eins", "Rechnung 4711 Blatt zwei"]);
    let other = vec![letter(&with_attachments(&[("rechnung.pdf", "application/pdf", &other_attachment), ("schreiben.pdf", "application/pdf", &ours)]), 7, false), letters[1].clone(), letters[2].clone()];
    assert_ne!(digest(&other), first, "another attachment is another file");
    if tools_present() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (pdf, rendered) = write(dir.path(), &letters);
        run("qpdf", &["--check", pdf.to_str().expect("a path")]);
        assert_eq!(rendered[0].sheets, rendered[0].pages);
        assert_eq!(rendered.iter().map(|r| r.pages).sum::<u32>(), pages_of(&pdf));
        // The attached letter (two pages) reads back on its sheets, in its own embedded font.
        let last = rendered[0].first_page + rendered[0].pages - 1;
        let attached = flat(&format!("{} {}", text_of(&pdf, Some(last - 1)), text_of(&pdf, Some(last))));
        for expected in ["Vollstreckungshilfeersuchen, Az.", "Mit freundlichen Grüßen", "Anlage 2: schreiben.pdf · Seite 1 von 2", "Anlage 2: schreiben.pdf · Seite 2 von 2"] {
            assert!(attached.contains(expected), "{expected:?} not in {attached}");
        }
        // The test letter's attachment pages carry the test mark too.
        for page in rendered[2].first_page..rendered[2].first_page + rendered[2].pages {
            assert!(text_of(&pdf, Some(page)).contains("MUSTER"), "page {page} has no test mark");
        }
    }
}

#[test]
fn a_rotated_page_in_object_streams_comes_back_upright() {
    if !tools_present() {
        return;
    }
    // A portrait page shown landscape by its /Rotate, its objects in object streams (PDF 1.5).
    let dir = tempfile::tempdir().expect("tempdir");
    let (plain, turned) = (dir.path().join("plain.pdf"), dir.path().join("turned.pdf"));
    std::fs::write(&plain, tiny_pdf(&["Rechnung 4711 quer gestellt"])).expect("write");
    run("qpdf", &["--rotate=+90", "--object-streams=generate", plain.to_str().expect("a path"), turned.to_str().expect("a path")]);
    let bytes = std::fs::read(&turned).expect("read");
    let l = letter(&with_attachments(&[("quer.pdf", "application/pdf", &bytes)]), 6, false);
    assert!(matches!(l.attachments[0].outcome, AttachmentOutcome::Printed(_)), "{:?}", l.attachments[0]);
    let (pdf, rendered) = write(dir.path(), &[l]);
    run("qpdf", &["--check", pdf.to_str().expect("a path")]);
    let sheet = rendered[0].pages;
    let words = words_of_page(&pdf, sheet);
    let word = words.iter().find(|w| w.0 == "4711").unwrap_or_else(|| panic!("not on sheet {sheet}: {words:?}"));
    // Upright: the word runs across the sheet, at the top of the attachment area.
    assert!(word.3 - word.1 > 2.0 * (word.4 - word.2), "{word:?}");
    assert!(word.2 < 60.0 && word.1 >= 17.0, "{word:?}");
}
