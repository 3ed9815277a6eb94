//! The printed letter: turns a Vollstreckungshilfeersuchen into a DIN 5008 letter (Form B, A4
//! portrait, for a DL window envelope) and sets many letters into one PDF file.
//!
//! Owns the letter's content ([`compose`]: what the request says, in the texts of
//! `templates/letters/`) and its page geometry ([`LetterFile`], [`render_file`]): where the
//! window, the fold and hole marks, the franking strip and the areas kept free for the
//! inserter's marks lie, drawn into each page's content (`print::pdf::Content`), which
//! `print::pdf` writes into the file a page at a time. The batch around it (ledger, sorting, files, manifest) lives in
//! `print::batch`.
//!
//! Geometry, in millimetres from the top-left corner of the sheet (PDF's origin is bottom-left;
//! [`pt_x`]/[`pt_y`] convert):
//! - window (address field) 20–105 × 45–90: the return-address line (8 pt) at 45–50, then
//!   the franking strip 53–66 kept empty *across the whole width* (hybrid mail prints the
//!   Frankiervermerk there, inside the window), then up to 6 address lines at 66–90;
//! - sender block top right (above 45), reference and date right of the window (below 66);
//! - body text 25–190 from 98 down to 262; footer "Seite n von m" on every page at 285, on the
//!   left (a one-page letter says "Seite 1 von 1" too: the inserter's reconciliation and a
//!   reader both find the count in the same place);
//! - kept free for the inserter: the left 15 mm below the hole mark ([`OMR_STRIP`]) and the
//!   bottom-right corner ([`CODE_AREA`]), where `print::marks` sets the OMR code and the
//!   DataMatrix of every sheet.
//!
//! Attached PDFs (`print::attachment`) follow their letter in the same file, a sheet for each
//! of their pages, counted in the letter's sheets (OMR code, DataMatrix, manifest). Each
//! attachment page is drawn *scaled into* [`ATTACHMENT_AREA`] (upright: a landscape page is
//! turned), which keeps the inserter's areas, the fold marks and the footer line free; the
//! sheet's own marks and a footer "Anlage n: name · Seite i von j" are drawn over it. The
//! letter's "Seite n von m" counts its own pages. An attachment that cannot be printed is
//! named under "Anlagen" with the note of `templates/letters/anlage-fehlt.txt` instead.
//!
//! Privacy: a letter holds debtor data. Nothing here logs, and no [`LetterError`] carries a
//! value taken from the request.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use printpdf::Pt;

use super::attachment::{self, AttachedPdf, AttachmentFault, FormPage, Importer};
use super::font::{FontError, Fonts, Piece, Style};
use super::marks::{self, MarkError};
use super::pdf::{Content, PdfError, PdfFile, TextPart};
use crate::xamtshilfe::model::{Anschrift, Ersuchen, Schuldner};
use crate::xamtshilfe::read::{ReaderConfig, parse};
use crate::xamtshilfe::values::Cents;
use crate::xamtshilfe::{Message, MessageKind};

// ---------------------------------------------------------------------------------------------
// Geometry (mm from the top-left corner).

pub const PAGE_WIDTH: f32 = 210.0;
pub const PAGE_HEIGHT: f32 = 297.0;
/// A rectangle in mm from the top-left corner: left, top, right, bottom.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Area {
    pub left: f32,
    pub top: f32,
    pub right: f32,
    pub bottom: f32,
}
/// The address field of a DL window envelope (DIN 5008 Form B).
pub const WINDOW: Area = Area { left: 20.0, top: 45.0, right: 105.0, bottom: 90.0 };
/// Kept free of everything for the franking (hybrid-mail convention), across the page.
pub const FRANKING_STRIP: Area = Area { left: 0.0, top: 53.0, right: PAGE_WIDTH, bottom: 66.0 };
/// Kept free for the inserter's OMR marks: the left edge below the hole mark.
pub const OMR_STRIP: Area = Area { left: 0.0, top: 155.0, right: 15.0, bottom: PAGE_HEIGHT };
/// Kept free for the inserter's 2D code (DataMatrix): the bottom-right corner.
pub const CODE_AREA: Area = Area { left: 150.0, top: 264.0, right: PAGE_WIDTH, bottom: PAGE_HEIGHT };
/// Where an attached PDF's page is drawn (scaled to fit, centred): clear of the OMR strip and
/// the fold marks on the left, of the code area and the footer line at the bottom.
pub const ATTACHMENT_AREA: Area = Area { left: 17.0, top: 5.0, right: 205.0, bottom: 262.0 };
/// Fold marks (DIN 5008 Form B) and the hole mark, from the top.
pub const FOLD_MARKS: [f32; 2] = [105.0, 210.0];
pub const HOLE_MARK: f32 = 148.5;

const TEXT_LEFT: f32 = 25.0;
const TEXT_RIGHT: f32 = 190.0;
const INFO_LEFT: f32 = 125.0;
const BODY_TOP_FIRST: f32 = 98.0;
const BODY_TOP_NEXT: f32 = 20.0;
const BODY_BOTTOM: f32 = 262.0;
const FOOTER_BASELINE: f32 = 285.0;
const RETURN_BASELINE: f32 = 48.8;
const ADDRESS_TOP: f32 = 66.0;
const ADDRESS_LINE: f32 = 4.0;
const ADDRESS_LINES: usize = 6;
const ADDRESS_SIZE: f32 = 9.0;
/// Minimum type size (DIN 5008 / the print centre): nothing is set smaller.
pub const MIN_SIZE: f32 = 8.0;
const BODY_SIZE: f32 = 10.0;
const BODY_LEADING: f32 = 4.4;
const SMALL_LEADING: f32 = 3.6;

#[cfg(test)]
const FONT_REGULAR: &str = super::pdf::FONT_NAMES[0];

fn mm_to_pt(mm: f32) -> f32 {
    mm * 72.0 / 25.4
}
/// PDF x in points from mm from the left.
pub fn pt_x(mm: f32) -> Pt {
    Pt(mm_to_pt(mm))
}
/// PDF y in points (from the bottom) from mm from the top.
pub fn pt_y(mm: f32) -> Pt {
    Pt(mm_to_pt(PAGE_HEIGHT - mm))
}

// ---------------------------------------------------------------------------------------------
// The interface.

/// Who sends, for the sender block and the return-address line (from the tenant's directory entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    pub name: String,
    pub street: String,
    pub postcode: String,
    pub city: String,
    pub email: Option<String>,
}

/// Who receives (the requested authority's postal address from the directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub name: String,
    pub street: String,
    pub postcode: String,
    pub city: String,
}

/// A debtor as the letter names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Debtor {
    /// "Familienname, Vorname" or the firm.
    pub name: String,
    pub geburtsname: Option<String>,
    pub geburtsdatum: Option<NaiveDate>,
    /// Street line, "PLZ Ort", and the country when not Germany.
    pub address: Vec<String>,
    pub auskunftssperre: bool,
}

/// One row of the claims table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The Einnahmeart's name, or its code when the message gives no name.
    pub einnahmeart: String,
    pub kassenzeichen: String,
    pub zeitraum: Option<(NaiveDate, NaiveDate)>,
    pub hauptforderung: Cents,
    pub saeumniszuschlaege: Option<Cents>,
    pub saeumniszuschlaege_bis: Option<NaiveDate>,
    pub kosten: Option<Cents>,
    pub summe: Cents,
    pub waehrung: String,
}

/// Where to pay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bank {
    pub iban: String,
    pub bic: Option<String>,
    pub kontoinhaber: Option<String>,
}

/// The requester's clerk, for the information block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    pub name: String,
    pub telefon: Option<String>,
    pub email: Option<String>,
}

/// One letter, ready to render: every text already in its final form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LetterInput {
    pub recipient: Recipient,
    pub sender: Sender,
    pub contact: Option<Contact>,
    /// Prints "MUSTER – nicht versenden" across every page.
    pub test: bool,
    pub batch_id: String,
    pub letter_number: u32,
    pub date: NaiveDate,
    pub aktenzeichen: String,
    /// "Vollstreckungshilfeersuchen, Az. <Aktenzeichen>".
    pub subject: String,
    /// Paragraphs; each a list of hard lines.
    pub einleitung: Vec<Vec<String>>,
    pub debtors: Vec<Debtor>,
    pub claims: Vec<Claim>,
    pub gesamtbetrag: Cents,
    pub waehrung: String,
    pub massnahmen_intro: Vec<Vec<String>>,
    pub massnahmen: Vec<String>,
    pub bank: Option<Bank>,
    /// The distinct Kassenzeichen of the claims: the payment reference.
    pub kassenzeichen: Vec<String>,
    pub zahlung: Vec<Vec<String>>,
    pub bemerkung: Option<String>,
    pub schluss: Vec<Vec<String>>,
    /// The request's attachments, in their order: printed after the letter, or named in it
    /// with a note.
    pub attachments: Vec<Attachment>,
}

/// An attachment of the request, as the letter has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// 1-based, in the order of the request.
    pub position: u32,
    /// The file name as printed: characters the font lacks and control characters as '?'.
    pub file_name: String,
    pub outcome: AttachmentOutcome,
}

/// Whether an attachment is printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachmentOutcome {
    /// Its pages follow the letter.
    Printed(AttachedPdf),
    /// Not printed: why, and the note the letter carries instead (one line, from the template).
    NotPrinted { fault: AttachmentFault, note: String },
}

impl Attachment {
    /// For the journal, when the attachment is not printed: "Anlage 2 (rechnung.pdf) nicht
    /// gedruckt: an encrypted PDF".
    pub fn journal_note(&self) -> Option<String> {
        match &self.outcome {
            AttachmentOutcome::Printed(_) => None,
            AttachmentOutcome::NotPrinted { fault, .. } => Some(format!("Anlage {} ({}) nicht gedruckt: {fault}", self.position, self.file_name)),
        }
    }

    /// The sheets it adds to its letter.
    pub fn pages(&self) -> u32 {
        match &self.outcome {
            AttachmentOutcome::Printed(pdf) => pdf.pages,
            AttachmentOutcome::NotPrinted { .. } => 0,
        }
    }
}

/// What rendering produced for one letter of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderedLetter {
    pub letter_number: u32,
    /// 1-based page of the file the letter starts on.
    pub first_page: u32,
    pub pages: u32,
    /// Simplex: one page per sheet.
    pub sheets: u32,
}

/// Why a letter could not be made. No variant carries a value from the request.
#[derive(Debug, thiserror::Error)]
pub enum LetterError {
    #[error("the stored request cannot be read as xAmtshilfe (it passed intake: is the payload damaged?)")]
    Unreadable,
    #[error("the message is a {0:?}, not an Ersuchen: only requests are printed")]
    NotAnErsuchen(MessageKind),
    #[error("the request names no debtor")]
    NoDebtor,
    #[error("the request has no claim")]
    NoClaim,
    #[error("an amount of the request overflows")]
    Overflow,
    #[error("the letter font has no glyph for U+{codepoint:04X} (in the {field})")]
    MissingGlyph { codepoint: u32, field: &'static str },
    #[error("the {which} address needs {lines} lines in the window; it takes {ADDRESS_LINES}")]
    AddressTooLong { which: &'static str, lines: usize },
    #[error("the sender's name and town do not fit the return-address line at 8 pt")]
    ReturnAddressTooLong,
    #[error("cannot read the letter template {path}: {source}")]
    TemplateIo { path: PathBuf, source: std::io::Error },
    #[error("letter template {file}: unknown placeholder {{{name}}} (known: {known})")]
    UnknownPlaceholder { file: String, name: String, known: String },
    #[error("letter template {file}: a '{{' without its '}}'")]
    UnclosedPlaceholder { file: String },
    #[error("no letters to render")]
    NoLetters,
    #[error("rendering the PDF failed: {0}")]
    Pdf(String),
    #[error(transparent)]
    Font(#[from] FontError),
    #[error("the inserter marks: {0}")]
    Marks(#[from] MarkError),
    #[error(transparent)]
    File(#[from] PdfError),
}

// ---------------------------------------------------------------------------------------------
// Templates.

const TEMPLATE_FILES: [&str; 5] = ["einleitung.txt", "massnahmen.txt", "zahlung.txt", "schluss.txt", "anlage-fehlt.txt"];
const SHIPPED: [&str; 5] = [
    include_str!("../../templates/letters/einleitung.txt"),
    include_str!("../../templates/letters/massnahmen.txt"),
    include_str!("../../templates/letters/zahlung.txt"),
    include_str!("../../templates/letters/schluss.txt"),
    include_str!("../../templates/letters/anlage-fehlt.txt"),
];
/// The placeholders a template may use (`dateiname`, the attachment's file name, is empty
/// outside `anlage-fehlt.txt`).
pub const PLACEHOLDERS: [&str; 11] = [
    "aktenzeichen",
    "behoerde",
    "datum",
    "gesamtbetrag",
    "kassenzeichen",
    "iban",
    "bic",
    "kontoinhaber",
    "angeordnet_von",
    "sachbearbeiter",
    "dateiname",
];

/// The letter texts (`templates/letters/*.txt`), checked when loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Templates {
    pub einleitung: String,
    pub massnahmen: String,
    pub zahlung: String,
    pub schluss: String,
    /// The note for an attachment that is not printed.
    pub anlage_fehlt: String,
}

impl Templates {
    /// The texts from `<data_dir>/templates/letters/`, each file that is absent there from the
    /// shipped ones. Refuses unknown or unclosed placeholders.
    pub fn load(data_dir: &Path) -> Result<Templates, LetterError> {
        let dir = data_dir.join("templates").join("letters");
        let mut texts = Vec::with_capacity(TEMPLATE_FILES.len());
        for (file, shipped) in TEMPLATE_FILES.iter().zip(SHIPPED) {
            let path = dir.join(file);
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => shipped.to_owned(),
                Err(source) => return Err(LetterError::TemplateIo { path, source }),
            };
            check_template(file, &text)?;
            texts.push(text);
        }
        let mut texts = texts.into_iter();
        let mut next = || texts.next().unwrap_or_default();
        Ok(Templates { einleitung: next(), massnahmen: next(), zahlung: next(), schluss: next(), anlage_fehlt: next() })
    }

    /// The texts compiled in.
    pub fn shipped() -> Templates {
        Templates {
            einleitung: SHIPPED[0].to_owned(),
            massnahmen: SHIPPED[1].to_owned(),
            zahlung: SHIPPED[2].to_owned(),
            schluss: SHIPPED[3].to_owned(),
            anlage_fehlt: SHIPPED[4].to_owned(),
        }
    }
}

fn check_template(file: &str, text: &str) -> Result<(), LetterError> {
    let empty: BTreeMap<&str, String> = PLACEHOLDERS.iter().map(|p| (*p, String::new())).collect();
    fill(file, text, &empty).map(|_| ())
}

/// `text` with each `{name}` replaced from `values`.
fn fill(file: &str, text: &str, values: &BTreeMap<&str, String>) -> Result<String, LetterError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or_else(|| LetterError::UnclosedPlaceholder { file: file.to_owned() })?;
        let name = &after[..close];
        let value = values.get(name).ok_or_else(|| LetterError::UnknownPlaceholder {
            file: file.to_owned(),
            name: name.chars().take(40).collect(),
            known: PLACEHOLDERS.join(", "),
        })?;
        out.push_str(value);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Paragraphs (split at empty lines), each a list of its hard lines.
fn paragraphs(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut current: Vec<String> = Vec::new();
    for line in text.lines() {
        let line = line.trim_end();
        if line.trim().is_empty() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
        } else {
            current.push(line.to_owned());
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Composing.

/// Builds a letter from the request as received (its xAmtshilfe payload bytes). A test letter
/// when `test` is set or the message itself says `test="true"`. Checks that the font has every
/// character, so that a letter that cannot be printed fails here, alone, not its whole file.
#[allow(clippy::too_many_arguments)]
pub fn compose(
    payload: &[u8],
    sender: &Sender,
    recipient: &Recipient,
    date: NaiveDate,
    templates: &Templates,
    batch_id: &str,
    letter_number: u32,
    test: bool,
) -> Result<LetterInput, LetterError> {
    let message = parse(payload, &ReaderConfig::default()).map_err(|_| LetterError::Unreadable)?;
    let nachricht = match message {
        Message::Ersuchen(n) => n,
        other => return Err(LetterError::NotAnErsuchen(other.kind())),
    };
    let test = test || nachricht.test == Some(true);
    let e: &Ersuchen = &nachricht.ersuchen;
    if e.schuldner.is_empty() {
        return Err(LetterError::NoDebtor);
    }
    if e.forderung.is_empty() {
        return Err(LetterError::NoClaim);
    }

    let debtors: Vec<Debtor> = e.schuldner.iter().map(debtor).collect();
    let mut claims = Vec::with_capacity(e.forderung.len());
    for f in &e.forderung {
        claims.push(Claim {
            einnahmeart: f.einnahmeart.name.clone().unwrap_or_else(|| f.einnahmeart.code.clone()),
            kassenzeichen: f.kassenzeichen.clone(),
            zeitraum: f.zeitraum.as_ref().map(|z| (z.beginn.0, z.ende.0)),
            hauptforderung: f.hauptforderung.wert,
            saeumniszuschlaege: f.saeumniszuschlaege.as_ref().map(|s| s.wert),
            saeumniszuschlaege_bis: f.saeumniszuschlaege.as_ref().and_then(|s| s.bis.map(|d| d.0)),
            kosten: f.kosten.as_ref().map(|k| k.wert),
            summe: f.summe().ok_or(LetterError::Overflow)?,
            waehrung: f.hauptforderung.waehrung.clone(),
        });
    }
    let mut kassenzeichen: Vec<String> = Vec::new();
    for f in &e.forderung {
        if !kassenzeichen.contains(&f.kassenzeichen) {
            kassenzeichen.push(f.kassenzeichen.clone());
        }
    }
    let behoerde = &e.ersuchende_behoerde;
    let bank = behoerde.bankverbindung.as_ref().map(|b| Bank {
        iban: group_iban(&b.iban),
        bic: b.bic.clone(),
        kontoinhaber: b.kontoinhaber.clone(),
    });
    let contact = behoerde.sachbearbeiter.as_ref().map(|s| Contact {
        name: s.name.clone(),
        telefon: s.telefon.clone(),
        email: s.email.clone().or_else(|| behoerde.email.clone()),
    });

    let values: BTreeMap<&str, String> = [
        ("aktenzeichen", e.aktenzeichen.clone()),
        ("behoerde", behoerde.name.clone()),
        ("datum", german_date(date)),
        ("gesamtbetrag", amount(e.gesamtbetrag.wert, &e.gesamtbetrag.waehrung)),
        ("kassenzeichen", kassenzeichen.join(", ")),
        ("iban", bank.as_ref().map(|b| b.iban.clone()).unwrap_or_default()),
        ("bic", bank.as_ref().and_then(|b| b.bic.clone()).unwrap_or_default()),
        ("kontoinhaber", bank.as_ref().and_then(|b| b.kontoinhaber.clone()).unwrap_or_default()),
        ("angeordnet_von", e.angeordnet_von.clone()),
        ("sachbearbeiter", contact.as_ref().map(|c| c.name.clone()).unwrap_or_default()),
        ("dateiname", String::new()),
    ]
    .into_iter()
    .collect();
    let text = |file: &str, t: &str| fill(file, t, &values).map(|s| paragraphs(&s));
    let fonts = Fonts::get()?;
    let mut attachments = Vec::with_capacity(e.anhang.len());
    for (i, a) in e.anhang.iter().enumerate() {
        let file_name = shown_name(fonts, &a.dateiname);
        let outcome = match attachment::check(a) {
            Ok(pdf) => AttachmentOutcome::Printed(pdf),
            Err(fault) => {
                let mut values = values.clone();
                values.insert("dateiname", file_name.clone());
                let note = fill(TEMPLATE_FILES[4], &templates.anlage_fehlt, &values)?;
                AttachmentOutcome::NotPrinted { fault, note: note.split_whitespace().collect::<Vec<_>>().join(" ") }
            }
        };
        attachments.push(Attachment { position: u32::try_from(i + 1).unwrap_or(u32::MAX), file_name, outcome });
    }

    let letter = LetterInput {
        recipient: recipient.clone(),
        sender: sender.clone(),
        contact,
        test,
        batch_id: batch_id.to_owned(),
        letter_number,
        date,
        aktenzeichen: e.aktenzeichen.clone(),
        subject: format!("Vollstreckungshilfeersuchen, Az. {}", e.aktenzeichen),
        einleitung: text(TEMPLATE_FILES[0], &templates.einleitung)?,
        debtors,
        claims,
        gesamtbetrag: e.gesamtbetrag.wert,
        waehrung: e.gesamtbetrag.waehrung.clone(),
        massnahmen_intro: text(TEMPLATE_FILES[1], &templates.massnahmen)?,
        massnahmen: e.massnahme.iter().map(|m| m.name.clone().unwrap_or_else(|| m.code.clone())).collect(),
        zahlung: if bank.is_some() { text(TEMPLATE_FILES[2], &templates.zahlung)? } else { Vec::new() },
        bank,
        kassenzeichen,
        bemerkung: e.bemerkung.clone(),
        schluss: text(TEMPLATE_FILES[3], &templates.schluss)?,
        attachments,
    };
    check_glyphs(&letter)?;
    // The window lines are checked here too, so a letter that cannot be addressed fails alone.
    address_lines(fonts, &letter.recipient)?;
    return_line(fonts, &letter.sender)?;
    Ok(letter)
}

/// An attachment's file name as the letter prints it: what the font cannot set, and control
/// characters, as '?' (a file name never stops a letter).
fn shown_name(fonts: &Fonts, name: &str) -> String {
    let name = name.trim();
    name.chars()
        .map(|c| {
            let mut buf = [0u8; 4];
            let missing = [Style::Regular, Style::Bold].iter().any(|s| fonts.missing(*s, c.encode_utf8(&mut buf)).is_some());
            if c.is_control() || missing { '?' } else { c }
        })
        .collect()
}

fn debtor(s: &Schuldner) -> Debtor {
    let name = match (&s.firma, &s.familienname, &s.vorname) {
        (Some(firma), _, _) => firma.clone(),
        (None, Some(fam), Some(vor)) => format!("{fam}, {vor}"),
        (None, Some(fam), None) => fam.clone(),
        (None, None, Some(vor)) => vor.clone(),
        (None, None, None) => String::new(),
    };
    Debtor {
        name,
        geburtsname: s.geburtsname.clone(),
        geburtsdatum: s.geburtsdatum.map(|d| d.0),
        address: anschrift_lines(&s.anschrift),
        auskunftssperre: s.auskunftssperre,
    }
}

fn anschrift_lines(a: &Anschrift) -> Vec<String> {
    let mut lines: Vec<String> = a.street_line().into_iter().collect();
    lines.push(format!("{} {}", a.postleitzahl, a.ort));
    if let Some(staat) = a.staat.as_deref().filter(|s| !s.eq_ignore_ascii_case("DE")) {
        lines.push(staat.to_owned());
    }
    lines
}

/// Every text of the letter has its glyphs in the font it is set in (bold is checked for all:
/// names are set bold).
fn check_glyphs(l: &LetterInput) -> Result<(), LetterError> {
    let fonts = Fonts::get()?;
    let check = |field: &'static str, text: &str| -> Result<(), LetterError> {
        for style in [Style::Regular, Style::Bold] {
            if let Some(c) = fonts.missing(style, text) {
                return Err(LetterError::MissingGlyph { codepoint: u32::from(c), field });
            }
        }
        Ok(())
    };
    let r = &l.recipient;
    for t in [&r.name, &r.street, &r.postcode, &r.city] {
        check("recipient", t)?;
    }
    let s = &l.sender;
    for t in [&s.name, &s.street, &s.postcode, &s.city] {
        check("sender", t)?;
    }
    if let Some(email) = &s.email {
        check("sender", email)?;
    }
    if let Some(c) = &l.contact {
        check("contact", &c.name)?;
        for t in [&c.telefon, &c.email].into_iter().flatten() {
            check("contact", t)?;
        }
    }
    check("Aktenzeichen", &l.subject)?;
    for d in &l.debtors {
        check("Schuldner", &d.name)?;
        for t in d.geburtsname.iter().chain(&d.address) {
            check("Schuldner", t)?;
        }
    }
    for c in &l.claims {
        check("Forderung", &c.einnahmeart)?;
        check("Forderung", &c.kassenzeichen)?;
        check("Forderung", &c.waehrung)?;
    }
    check("Forderung", &l.waehrung)?;
    for m in &l.massnahmen {
        check("Maßnahme", m)?;
    }
    if let Some(b) = &l.bank {
        check("Bankverbindung", &b.iban)?;
        for t in [&b.bic, &b.kontoinhaber].into_iter().flatten() {
            check("Bankverbindung", t)?;
        }
    }
    if let Some(b) = &l.bemerkung {
        // A remark may hold line breaks; they are kept as such.
        for line in b.lines() {
            check("Bemerkung", line)?;
        }
    }
    for p in [&l.einleitung, &l.massnahmen_intro, &l.zahlung, &l.schluss] {
        for line in p.iter().flatten() {
            check("letter text", line)?;
        }
    }
    for a in &l.attachments {
        check("Anlage", &a.file_name)?;
        if let AttachmentOutcome::NotPrinted { note, .. } = &a.outcome {
            check("letter text", note)?;
        }
    }
    Ok(())
}

/// `DE02120300000000202051` → `DE02 1203 0000 0000 2020 51`.
fn group_iban(iban: &str) -> String {
    let compact: Vec<char> = iban.chars().filter(|c| !c.is_whitespace()).collect();
    compact.chunks(4).map(|c| c.iter().collect::<String>()).collect::<Vec<_>>().join(" ")
}

/// `12.04.1980`.
pub fn german_date(d: NaiveDate) -> String {
    d.format("%d.%m.%Y").to_string()
}

/// `1.234,56 €` (other currencies by their code).
pub fn amount(c: Cents, waehrung: &str) -> String {
    let sign = if c.0 < 0 { "-" } else { "" };
    let abs = c.0.unsigned_abs();
    let euros = (abs / 100).to_string();
    let mut grouped = String::new();
    for (i, ch) in euros.chars().enumerate() {
        if i > 0 && (euros.len() - i).is_multiple_of(3) {
            grouped.push('.');
        }
        grouped.push(ch);
    }
    let unit = if waehrung == "EUR" { "€" } else { waehrung };
    format!("{sign}{grouped},{:02} {unit}", abs % 100)
}

// ---------------------------------------------------------------------------------------------
// Rendering.

/// Renders `letters` into one PDF (simplex: sheets = pages), in the given order, in memory
/// (the batch writes its files with [`LetterFile`] straight to disk).
pub fn render_file(letters: &[LetterInput]) -> Result<(Vec<u8>, Vec<RenderedLetter>), LetterError> {
    if letters.is_empty() {
        return Err(LetterError::NoLetters);
    }
    let mut file = LetterFile::new(Vec::new())?;
    for letter in letters {
        file.add(letter)?;
    }
    let (bytes, _, rendered) = file.finish()?;
    Ok((bytes, rendered))
}

/// A print file being written: letters are laid out and written one after the other, each
/// page as soon as it is laid out, so what a file holds in memory is one letter, not the
/// file (`print::pdf`). The file's dates are those of its first letter (midnight UTC), not
/// the time of writing: the same letters give the same bytes, whenever and however often
/// they are rendered.
pub struct LetterFile<W: std::io::Write> {
    pdf: PdfFile<W>,
    /// The first letter's date, as a Unix time.
    created: Option<i64>,
    rendered: Vec<RenderedLetter>,
}

impl<W: std::io::Write> LetterFile<W> {
    /// Starts a file on `out`.
    pub fn new(out: W) -> Result<LetterFile<W>, LetterError> {
        Ok(LetterFile { pdf: PdfFile::new(out)?, created: None, rendered: Vec::new() })
    }

    /// Lays out `letter` and writes its sheets, its attachments' pages among them.
    pub fn add(&mut self, letter: &LetterInput) -> Result<RenderedLetter, LetterError> {
        let fonts = Fonts::get()?;
        check_glyphs(letter)?;
        let mut pages = layout(fonts, letter)?;
        let count = u32::try_from(pages.len()).map_err(|_| LetterError::Pdf("too many pages".into()))?;
        let first_page = u32::try_from(self.pdf.page_count()).unwrap_or(u32::MAX).saturating_add(1);
        // The printed attachments' pages, imported before the sheets that show them.
        let mut forms: Vec<(u32, [f32; 6])> = Vec::new();
        for a in &letter.attachments {
            if let AttachmentOutcome::Printed(pdf) = &a.outcome {
                forms.extend(self.attachment(pdf)?);
            }
        }
        let own = pages.len().checked_sub(forms.len()).ok_or_else(|| LetterError::Pdf("an attachment's sheet is missing".into()))?;
        for (i, page) in pages.iter_mut().enumerate() {
            let form = i.checked_sub(own).and_then(|k| forms.get(k)).copied();
            self.pdf.page(page, form)?;
        }
        if self.created.is_none() {
            self.created = Some(letter.date.and_hms_opt(0, 0, 0).map_or(0, |t| t.and_utc().timestamp()));
        }
        let rendered = RenderedLetter { letter_number: letter.letter_number, first_page, pages: count, sheets: count };
        self.rendered.push(rendered);
        Ok(rendered)
    }

    /// Writes an attachment's pages as Form XObjects; each with the matrix that draws it
    /// scaled into [`ATTACHMENT_AREA`].
    fn attachment(&mut self, pdf: &AttachedPdf) -> Result<Vec<(u32, [f32; 6])>, LetterError> {
        let (left, right) = (pt_x(ATTACHMENT_AREA.left).0, pt_x(ATTACHMENT_AREA.right).0);
        let (bottom, top) = (pt_y(ATTACHMENT_AREA.bottom).0, pt_y(ATTACHMENT_AREA.top).0);
        // Checked when the letter was composed; the same bytes read the same way again.
        let importer = Importer::new(pdf).map_err(|e| LetterError::Pdf(format!("an attachment checked before: {e}")))?;
        let version = importer.version().to_owned();
        let mut scratch = lopdf::Document::new();
        let forms = importer.import(&mut scratch);
        let base = self.pdf.attachment(&scratch, &version)?;
        Ok(forms
            .into_iter()
            .map(|form| {
                let form = upright(form);
                let (w, h) = form.size();
                let scale = ((right - left) / w).min((top - bottom) / h);
                let (x, y) = (left + (right - left - w * scale) / 2.0, bottom + (top - bottom - h * scale) / 2.0);
                (form.form.0 + base, form.matrix(scale, x, y))
            })
            .collect())
    }

    /// Ends the file: returns the output, the SHA-256 of the file and its letters.
    pub fn finish(self) -> Result<(W, [u8; 32], Vec<RenderedLetter>), LetterError> {
        if self.rendered.is_empty() {
            return Err(LetterError::NoLetters);
        }
        let (out, sha) = self.pdf.finish(self.created.unwrap_or(0), "Vollstreckungshilfeersuchen")?;
        Ok((out, sha, self.rendered))
    }
}

/// A landscape page turned a quarter to the left, so it fills the portrait sheet (a portrait
/// page that only its `/Rotate` shows landscape comes back upright).
fn upright(form: FormPage) -> FormPage {
    let (w, h) = form.size();
    if w > h { form.turned() } else { form }
}

/// The pages of one letter, drawn.
fn layout(fonts: &Fonts, l: &LetterInput) -> Result<Vec<Content>, LetterError> {
    let mut w = Writer { fonts, pages: vec![Content::new()], y: BODY_TOP_FIRST, running_head: format!("{} (Fortsetzung)", l.subject) };

    // --- First page: window, sender block, information block.
    let ret = return_line(fonts, &l.sender)?;
    w.text(WINDOW.left + 5.0, RETURN_BASELINE, Style::Regular, MIN_SIZE, &ret);
    for (i, line) in address_lines(fonts, &l.recipient)?.iter().enumerate() {
        let baseline = ADDRESS_TOP + ADDRESS_LINE * i as f32 + 3.1;
        w.text(WINDOW.left + 5.0, baseline, Style::Regular, ADDRESS_SIZE, line);
    }
    let mut y = 16.0;
    let sender_width = mm_to_pt(TEXT_RIGHT - INFO_LEFT);
    for line in fonts.wrap(Style::Bold, &l.sender.name, 9.0, sender_width) {
        w.text(INFO_LEFT, y, Style::Bold, 9.0, &line);
        y += 4.0;
    }
    let mut sender_lines = vec![l.sender.street.clone(), format!("{} {}", l.sender.postcode, l.sender.city)];
    sender_lines.extend(l.sender.email.clone());
    for line in sender_lines.iter().filter(|s| !s.is_empty()) {
        if y > 43.0 {
            break;
        }
        w.text(INFO_LEFT, y, Style::Regular, MIN_SIZE, line);
        y += SMALL_LEADING;
    }
    let mut info: Vec<(String, String)> = Vec::new();
    if let Some(c) = &l.contact {
        info.push(("Ansprechpartner".into(), c.name.clone()));
        if let Some(t) = &c.telefon {
            info.push(("Telefon".into(), t.clone()));
        }
        if let Some(e) = &c.email {
            info.push(("E-Mail".into(), e.clone()));
        }
    }
    info.push(("Aktenzeichen".into(), l.aktenzeichen.clone()));
    info.push(("Datum".into(), german_date(l.date)));
    let mut y = FRANKING_STRIP.bottom + 3.0;
    for (label, value) in &info {
        w.text(INFO_LEFT, y, Style::Regular, MIN_SIZE, &format!("{label}: {value}"));
        y += SMALL_LEADING;
    }

    // --- Body.
    w.y = BODY_TOP_FIRST;
    w.paragraph(&l.subject, Style::Bold, BODY_SIZE, BODY_LEADING);
    w.y += BODY_LEADING;
    for p in &l.einleitung {
        w.hard_lines(p, Style::Regular);
        w.y += BODY_LEADING * 0.5;
    }

    w.heading(if l.debtors.len() > 1 { "Schuldner" } else { "Schuldner/in" });
    for d in &l.debtors {
        let mut lines = vec![(d.name.clone(), Style::Bold)];
        if let Some(g) = &d.geburtsname {
            lines.push((format!("geb. {g}"), Style::Regular));
        }
        if let Some(date) = d.geburtsdatum {
            lines.push((format!("geboren am {}", german_date(date)), Style::Regular));
        }
        lines.push((d.address.join(", "), Style::Regular));
        if d.auskunftssperre {
            lines.push(("Auskunftssperre: die Anschrift darf nicht an Dritte weitergegeben werden.".into(), Style::Regular));
        }
        w.keep(lines.len() as f32 * BODY_LEADING);
        for (text, style) in &lines {
            w.paragraph(text, *style, BODY_SIZE, BODY_LEADING);
        }
        w.y += BODY_LEADING * 0.5;
    }

    w.heading("Forderungen");
    w.claims(l);

    if !l.massnahmen.is_empty() {
        w.y += BODY_LEADING * 0.5;
        w.keep(BODY_LEADING * 2.0);
        for p in &l.massnahmen_intro {
            w.hard_lines(p, Style::Regular);
        }
        for m in &l.massnahmen {
            w.bullet(m);
        }
    }

    if let Some(b) = &l.bank {
        w.heading("Bankverbindung");
        let mut lines = Vec::new();
        if let Some(k) = &b.kontoinhaber {
            lines.push(("Kontoinhaber", k.clone()));
        }
        lines.push(("IBAN", b.iban.clone()));
        if let Some(bic) = &b.bic {
            lines.push(("BIC", bic.clone()));
        }
        lines.push(("Kassenzeichen", l.kassenzeichen.join(", ")));
        w.keep(lines.len() as f32 * BODY_LEADING);
        for (label, value) in &lines {
            w.label_value(label, value);
        }
        w.y += BODY_LEADING * 0.5;
        for p in &l.zahlung {
            w.hard_lines(p, Style::Regular);
            w.y += BODY_LEADING * 0.5;
        }
    }

    if let Some(b) = &l.bemerkung {
        w.heading("Bemerkung");
        let lines: Vec<String> = b.lines().map(str::to_owned).collect();
        w.hard_lines(&lines, Style::Regular);
    }

    // The closing and signature stay together.
    w.y += BODY_LEADING;
    let closing_lines: usize = l.schluss.iter().map(|p| p.len() + 1).sum();
    w.keep(closing_lines as f32 * BODY_LEADING);
    for p in &l.schluss {
        w.hard_lines(p, Style::Regular);
        w.y += BODY_LEADING;
    }

    // The attachments (DIN 5008: "Anlagen" after the signature): printed ones by name, the
    // others with their note.
    if !l.attachments.is_empty() {
        w.heading("Anlagen");
        for a in &l.attachments {
            match &a.outcome {
                AttachmentOutcome::Printed(pdf) => {
                    let pages = if pdf.pages == 1 { "1 Seite".to_owned() } else { format!("{} Seiten", pdf.pages) };
                    w.bullet(&format!("{} ({pages}, anbei)", a.file_name));
                }
                AttachmentOutcome::NotPrinted { note, .. } => w.bullet(note),
            }
        }
    }

    // --- The attachments' sheets: their pages are drawn into them by `render_file`.
    let text_pages = w.pages.len();
    let mut pages = w.pages;
    for a in &l.attachments {
        for page in 1..=a.pages() {
            let mut ops = Content::new();
            let label = format!("Anlage {}: {} · Seite {page} von {}", a.position, "{}", a.pages());
            let room = mm_to_pt(CODE_AREA.left - 2.0 - TEXT_LEFT) - fonts.width(Style::Regular, &label.replace("{}", ""), MIN_SIZE);
            let footer = label.replace("{}", &shortened(fonts, &a.file_name, room));
            text_ops(&mut ops, TEXT_LEFT, FOOTER_BASELINE, Style::Regular, MIN_SIZE, &footer);
            pages.push(ops);
        }
    }

    // --- Every sheet: marks, footer, test mark.
    let sheets = u32::try_from(pages.len()).map_err(|_| LetterError::Pdf("too many pages".into()))?;
    for (i, ops) in pages.iter_mut().enumerate() {
        let mut extra = Content::new();
        if l.test {
            test_mark(&mut extra);
        }
        fold_and_hole_marks(&mut extra);
        let sheet = u32::try_from(i + 1).map_err(|_| LetterError::Pdf("too many pages".into()))?;
        marks::draw(&mut extra, &l.batch_id, l.letter_number, sheet, sheets)?;
        extra.append(std::mem::take(ops));
        *ops = extra;
        if i < text_pages {
            let footer = format!("Seite {} von {}", i + 1, text_pages);
            text_ops(ops, TEXT_LEFT, FOOTER_BASELINE, Style::Regular, MIN_SIZE, &footer);
        }
    }
    Ok(pages)
}

/// `text` as far as it fits `max` points at the footer's size, ending in "…" when cut.
fn shortened(fonts: &Fonts, text: &str, max: f32) -> String {
    if fonts.width(Style::Regular, text, MIN_SIZE) <= max {
        return text.to_owned();
    }
    let mut chars: Vec<char> = text.chars().collect();
    while !chars.is_empty() {
        chars.pop();
        let cut = format!("{}…", chars.iter().collect::<String>());
        if fonts.width(Style::Regular, &cut, MIN_SIZE) <= max {
            return cut;
        }
    }
    "…".to_owned()
}

/// "Name · Straße · PLZ Ort", shortened to "Name · PLZ Ort" when it is too wide for the window.
fn return_line(fonts: &Fonts, s: &Sender) -> Result<String, LetterError> {
    let max = mm_to_pt(WINDOW.right - WINDOW.left - 5.0 - 1.0);
    let town = format!("{} {}", s.postcode, s.city);
    let full: Vec<&str> = [s.name.as_str(), s.street.as_str(), town.as_str()].into_iter().filter(|p| !p.trim().is_empty()).collect();
    let short: Vec<&str> = [s.name.as_str(), town.as_str()].into_iter().filter(|p| !p.trim().is_empty()).collect();
    for parts in [full, short] {
        let line = parts.join(" · ");
        if fonts.width(Style::Regular, &line, MIN_SIZE) <= max {
            return Ok(line);
        }
    }
    // A long authority name: as much of it as fits, with the town, then the name alone,
    // shortened with "…". The sender block above names it in full; an over-long return
    // line must not keep a letter from going out.
    for suffix in [format!(" · {town}"), String::new()] {
        let mut name: Vec<char> = s.name.chars().collect();
        while !name.is_empty() {
            let line = format!("{}…{suffix}", name.iter().collect::<String>().trim_end());
            if fonts.width(Style::Regular, &line, MIN_SIZE) <= max {
                return Ok(line);
            }
            name.pop();
        }
    }
    Err(LetterError::ReturnAddressTooLong)
}

/// The recipient's lines in the window: the name (wrapped), street, "PLZ Ort"; no empty lines.
fn address_lines(fonts: &Fonts, r: &Recipient) -> Result<Vec<String>, LetterError> {
    let max = mm_to_pt(WINDOW.right - WINDOW.left - 5.0 - 1.0);
    let mut lines = Vec::new();
    let town = format!("{} {}", r.postcode.trim(), r.city.trim());
    for part in [r.name.as_str(), r.street.as_str(), town.as_str()] {
        if part.trim().is_empty() {
            continue;
        }
        lines.extend(fonts.wrap(Style::Regular, part, ADDRESS_SIZE, max));
    }
    if lines.len() > ADDRESS_LINES {
        return Err(LetterError::AddressTooLong { which: "recipient's", lines: lines.len() });
    }
    Ok(lines)
}

/// Fold marks and the hole mark: short lines at the left edge.
fn fold_and_hole_marks(page: &mut Content) {
    page.save();
    page.stroke_grey(0.0);
    page.line_width(0.5);
    for (y, length) in [(FOLD_MARKS[0], 5.0), (HOLE_MARK, 8.0), (FOLD_MARKS[1], 5.0)] {
        page.line((pt_x(3.0).0, pt_y(y).0), (pt_x(3.0 + length).0, pt_y(y).0));
    }
    page.restore();
}

/// "MUSTER – nicht versenden", light grey, diagonally across the body (below the window), and
/// upright in the letterhead.
fn test_mark(page: &mut Content) {
    let text = "MUSTER – nicht versenden";
    let size = 36.0;
    let Ok(fonts) = Fonts::get() else { return };
    let width = fonts.width(Style::Bold, text, size);
    let angle = 45f32.to_radians();
    let (sin, cos) = angle.sin_cos();
    // Centre of the text at (105, 190) mm; start point half the width back along the slope.
    let cx = mm_to_pt(105.0);
    let cy = mm_to_pt(PAGE_HEIGHT - 190.0);
    let x = cx - width / 2.0 * cos;
    let y = cy - width / 2.0 * sin;
    page.save();
    page.fill_grey(0.8);
    page.begin_text();
    page.font(Style::Bold, size);
    page.text_matrix([cos, sin, -sin, cos, x, y]);
    page.show(text);
    page.end_text();
    page.restore();
    // And once upright in the letterhead: text extraction (poppler) drops diagonal text, and
    // the print centre's checks read the page's text.
    text_ops(page, TEXT_LEFT, 14.0, Style::Bold, 12.0, text);
}

fn text_ops(page: &mut Content, x: f32, baseline: f32, style: Style, size: f32, text: &str) {
    page.begin_text();
    page.font(style, size.max(MIN_SIZE));
    page.text_cursor(pt_x(x).0, pt_y(baseline).0);
    let fonts = match Fonts::get() {
        Ok(f) if text.chars().any(|c| ('\u{300}'..='\u{36F}').contains(&c)) => f,
        _ => {
            page.show(text);
            page.end_text();
            return;
        }
    };
    let pieces = fonts.pieces(style, text);
    // Combining marks placed on their bases (Fonts::pieces): moved across with the text's own
    // spacing numbers (thousandths of an em; positive moves left), raised with the text rise.
    let mut marks = [0u8; 4];
    let mut items: Vec<(Option<&str>, f32)> = Vec::new();
    let mut mark_texts: Vec<String> = Vec::new();
    // The marks as strings first: the parts borrow them.
    for piece in &pieces {
        if let Piece::Mark { mark, .. } = piece {
            mark_texts.push(mark.encode_utf8(&mut marks).to_owned());
        }
    }
    let mut next_mark = mark_texts.iter();
    fn show(page: &mut Content, items: &mut Vec<(Option<&str>, f32)>) {
        let parts: Vec<TextPart<'_>> = items.iter().map(|&(t, o)| t.map_or(TextPart::Offset(o), TextPart::Text)).collect();
        page.show_parts(&parts);
        items.clear();
    }
    for piece in &pieces {
        match piece {
            Piece::Text(t) => items.push((Some(t.as_str()), 0.0)),
            Piece::Mark { dx, rise, .. } => {
                let mark = next_mark.next().map_or("", String::as_str);
                if *dx != 0.0 {
                    items.push((None, -dx * 1000.0));
                }
                if *rise != 0.0 {
                    show(page, &mut items);
                    page.rise(rise * size.max(MIN_SIZE));
                    page.show(mark);
                    page.rise(0.0);
                } else {
                    items.push((Some(mark), 0.0));
                }
                if *dx != 0.0 {
                    items.push((None, dx * 1000.0));
                }
            }
        }
    }
    if !items.is_empty() {
        show(page, &mut items);
    }
    page.end_text();
}

/// Sets the body, top to bottom, starting a new page when a line does not fit.
struct Writer<'a> {
    fonts: &'a Fonts,
    pages: Vec<Content>,
    /// The top of the next line, mm from the top.
    y: f32,
    /// Set at the top of every page after the first.
    running_head: String,
}

/// Claims table columns: width in mm, right-aligned.
const COLUMNS: [(f32, bool); 6] = [(37.0, false), (41.0, false), (22.0, true), (25.0, true), (17.0, true), (23.0, true)];
const TABLE_SIZE: f32 = 8.0;
const TABLE_LEADING: f32 = 3.6;
const CELL_PAD: f32 = 1.0;

impl Writer<'_> {
    fn ops(&mut self) -> &mut Content {
        if self.pages.is_empty() {
            self.pages.push(Content::new());
        }
        let last = self.pages.len() - 1;
        &mut self.pages[last]
    }

    fn text(&mut self, x: f32, baseline: f32, style: Style, size: f32, text: &str) {
        text_ops(self.ops(), x, baseline, style, size, text);
    }

    fn new_page(&mut self) {
        self.pages.push(Content::new());
        let head = std::mem::take(&mut self.running_head);
        self.text(TEXT_LEFT, BODY_TOP_NEXT - 6.0, Style::Regular, MIN_SIZE, &head);
        self.running_head = head;
        self.y = BODY_TOP_NEXT;
    }

    /// Starts a new page unless `height` mm fit below the cursor. Returns whether it did.
    fn keep(&mut self, height: f32) -> bool {
        if self.y + height > BODY_BOTTOM && self.y > BODY_TOP_NEXT {
            self.new_page();
            true
        } else {
            false
        }
    }

    fn line(&mut self, x: f32, text: &str, style: Style, size: f32, leading: f32) {
        self.keep(leading);
        let baseline = self.y + leading * 0.75;
        self.text(x, baseline, style, size, text);
        self.y += leading;
    }

    fn paragraph(&mut self, text: &str, style: Style, size: f32, leading: f32) {
        for line in self.fonts.wrap(style, text, size, mm_to_pt(TEXT_RIGHT - TEXT_LEFT)) {
            self.line(TEXT_LEFT, &line, style, size, leading);
        }
    }

    fn hard_lines(&mut self, lines: &[String], style: Style) {
        for line in lines {
            self.paragraph(line, style, BODY_SIZE, BODY_LEADING);
        }
    }

    fn heading(&mut self, text: &str) {
        self.y += BODY_LEADING * 0.5;
        // A heading is not left alone at the bottom of a page.
        self.keep(BODY_LEADING * 3.0);
        self.line(TEXT_LEFT, text, Style::Bold, BODY_SIZE, BODY_LEADING);
    }

    fn bullet(&mut self, text: &str) {
        let indent = 5.0;
        let lines = self.fonts.wrap(Style::Regular, text, BODY_SIZE, mm_to_pt(TEXT_RIGHT - TEXT_LEFT - indent));
        for (i, line) in lines.iter().enumerate() {
            self.keep(BODY_LEADING);
            if i == 0 {
                let baseline = self.y + BODY_LEADING * 0.75;
                self.text(TEXT_LEFT + 1.0, baseline, Style::Regular, BODY_SIZE, "–");
            }
            self.line(TEXT_LEFT + indent, line, Style::Regular, BODY_SIZE, BODY_LEADING);
        }
    }

    fn label_value(&mut self, label: &str, value: &str) {
        let tab = 35.0;
        let lines = self.fonts.wrap(Style::Regular, value, BODY_SIZE, mm_to_pt(TEXT_RIGHT - TEXT_LEFT - tab));
        for (i, line) in lines.iter().enumerate() {
            self.keep(BODY_LEADING);
            if i == 0 {
                let baseline = self.y + BODY_LEADING * 0.75;
                self.text(TEXT_LEFT, baseline, Style::Regular, BODY_SIZE, &format!("{label}:"));
            }
            self.line(TEXT_LEFT + tab, line, Style::Regular, BODY_SIZE, BODY_LEADING);
        }
    }

    fn rule(&mut self, y: f32, thickness: f32) {
        let page = self.ops();
        page.save();
        page.line_width(thickness);
        page.line((pt_x(TEXT_LEFT).0, pt_y(y).0), (pt_x(TEXT_RIGHT).0, pt_y(y).0));
        page.restore();
    }

    /// One table row: each cell's lines (already split at hard breaks), wrapped in its column.
    fn row(&mut self, cells: &[Vec<String>; 6], style: Style) -> f32 {
        let wrapped: Vec<Vec<String>> = cells
            .iter()
            .zip(COLUMNS)
            .map(|(lines, (width, _))| {
                lines
                    .iter()
                    .flat_map(|l| self.fonts.wrap(style, l, TABLE_SIZE, mm_to_pt(width - 2.0 * CELL_PAD)))
                    .collect()
            })
            .collect();
        let height = wrapped.iter().map(Vec::len).max().unwrap_or(1) as f32 * TABLE_LEADING + 1.0;
        let mut x = TEXT_LEFT;
        for (lines, (width, right)) in wrapped.iter().zip(COLUMNS) {
            for (i, line) in lines.iter().enumerate() {
                let baseline = self.y + 0.5 + TABLE_LEADING * i as f32 + TABLE_LEADING * 0.75;
                let left = if right {
                    x + width - CELL_PAD - self.fonts.width(style, line, TABLE_SIZE) * 25.4 / 72.0
                } else {
                    x + CELL_PAD
                };
                self.text(left, baseline, style, TABLE_SIZE, line);
            }
            x += width;
        }
        self.y += height;
        height
    }

    fn claims_header(&mut self) {
        let header = [
            vec!["Einnahmeart".to_owned(), "Kassenzeichen".to_owned()],
            vec!["Zeitraum".to_owned()],
            vec!["Haupt-".to_owned(), "forderung".to_owned()],
            vec!["Säumnis-".to_owned(), "zuschläge".to_owned()],
            vec!["Kosten".to_owned()],
            vec!["Summe".to_owned()],
        ];
        self.row(&header, Style::Bold);
        let y = self.y;
        self.rule(y, 0.5);
    }

    fn claims(&mut self, l: &LetterInput) {
        self.keep(TABLE_LEADING * 5.0);
        self.claims_header();
        for c in &l.claims {
            let mut sz = vec![c.saeumniszuschlaege.map(|s| amount(s, &c.waehrung)).unwrap_or_else(|| "–".into())];
            if let Some(bis) = c.saeumniszuschlaege_bis {
                sz.push(format!("bis {}", german_date(bis)));
            }
            let cells = [
                vec![c.einnahmeart.clone(), c.kassenzeichen.clone()],
                vec![c.zeitraum.map(|(b, e)| format!("{} – {}", german_date(b), german_date(e))).unwrap_or_else(|| "–".into())],
                vec![amount(c.hauptforderung, &c.waehrung)],
                sz,
                vec![c.kosten.map(|k| amount(k, &c.waehrung)).unwrap_or_else(|| "–".into())],
                vec![amount(c.summe, &c.waehrung)],
            ];
            let lines = cells.iter().map(Vec::len).max().unwrap_or(1) + 1;
            if self.keep(lines as f32 * TABLE_LEADING + 1.0) {
                self.claims_header();
            }
            self.row(&cells, Style::Regular);
        }
        self.keep(TABLE_LEADING + 2.0);
        let y = self.y;
        self.rule(y, 0.5);
        let total = [
            vec!["Gesamtbetrag".to_owned()],
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            vec![amount(l.gesamtbetrag, &l.waehrung)],
        ];
        self.row(&total, Style::Bold);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_written_page_by_page_and_reads_back() {
        use sha2::Digest as _;
        let mut ops = Content::new();
        text_ops(&mut ops, TEXT_LEFT, 100.0, Style::Regular, BODY_SIZE, "Łódź, Straße");
        text_ops(&mut ops, TEXT_LEFT, 110.0, Style::Bold, BODY_SIZE, "C\u{328}\u{306}ernik");
        marks::draw(&mut ops, "B20261201", 1, 1, 2).expect("marks");
        let mut pdf = PdfFile::new(Vec::new()).expect("a file");
        pdf.page(&mut ops, None).expect("page 1");
        pdf.page(&mut ops, None).expect("page 2");
        let (bytes, sha) = pdf.finish(1_796_083_200, "t").expect("finished");
        assert_eq!(sha, <[u8; 32]>::from(sha2::Sha256::digest(&bytes)), "the hash is of the whole file");
        assert!(bytes.len() < 1_400_000, "the fonts are compressed: {} bytes", bytes.len());
        let doc = lopdf::Document::load_mem(&bytes).expect("lopdf reads it");
        assert_eq!(doc.get_pages().len(), 2);
        // Each face's widths name exactly the glyphs the pages used.
        let fonts = Fonts::get().expect("fonts");
        let regular: std::collections::BTreeSet<u16> = "Łódź, Straße".chars().map(|c| fonts.glyph(Style::Regular, c)).collect();
        let page = *doc.get_pages().get(&1).expect("page 1");
        let fonts_of_page = doc.get_page_fonts(page).expect("the page's fonts");
        let type0 = fonts_of_page.get(FONT_REGULAR.as_bytes()).expect("F1");
        let font = type0.get(b"DescendantFonts").and_then(|d| d.as_array()).ok().and_then(|d| d.first()).and_then(|d| d.as_dict().ok()).expect("its CID font");
        let w = font.get(b"W").and_then(|w| w.as_array()).expect("/W");
        let mut listed = std::collections::BTreeSet::new();
        for pair in w.chunks(2) {
            let first = pair[0].as_i64().expect("a glyph id") as u16;
            for (k, _) in pair[1].as_array().expect("widths").iter().enumerate() {
                listed.insert(first + k as u16);
            }
        }
        assert_eq!(listed, regular);
        // Written twice, the same bytes.
        let mut again = PdfFile::new(Vec::new()).expect("a file");
        again.page(&mut ops, None).expect("page 1");
        again.page(&mut ops, None).expect("page 2");
        assert!(again.finish(1_796_083_200, "t").expect("finished").0 == bytes);
    }

    #[test]
    fn amounts_in_german_form() {
        assert_eq!(amount(Cents(44500), "EUR"), "445,00 €");
        assert_eq!(amount(Cents(123456789), "EUR"), "1.234.567,89 €");
        assert_eq!(amount(Cents(5), "EUR"), "0,05 €");
        assert_eq!(amount(Cents(-100050), "CHF"), "-1.000,50 CHF");
    }

    #[test]
    fn iban_in_groups_of_four() {
        assert_eq!(group_iban("DE02120300000000202051"), "DE02 1203 0000 0000 2020 51");
    }

    #[test]
    fn templates_fill_known_placeholders_and_refuse_others() {
        let values: BTreeMap<&str, String> = [("aktenzeichen", "VH-1".to_owned())].into_iter().collect();
        assert_eq!(fill("t", "Az. {aktenzeichen}.", &values).expect("filled"), "Az. VH-1.");
        assert!(matches!(fill("t", "{nope}", &values), Err(LetterError::UnknownPlaceholder { .. })));
        assert!(matches!(fill("t", "a {aktenzeichen", &values), Err(LetterError::UnclosedPlaceholder { .. })));
        for (file, text) in TEMPLATE_FILES.iter().zip(SHIPPED) {
            check_template(file, text).expect("the shipped templates are valid");
        }
    }

    #[test]
    fn templates_from_the_data_dir_take_precedence() {
        let dir = tempfile::tempdir().expect("tempdir");
        let letters = dir.path().join("templates/letters");
        std::fs::create_dir_all(&letters).expect("mkdir");
        std::fs::write(letters.join("schluss.txt"), "Hochachtungsvoll\n\n{angeordnet_von}\n").expect("write");
        let t = Templates::load(dir.path()).expect("load");
        assert!(t.schluss.starts_with("Hochachtungsvoll"));
        assert_eq!(t.einleitung, Templates::shipped().einleitung);
        std::fs::write(letters.join("zahlung.txt"), "{iban} {betrag}").expect("write");
        assert!(matches!(Templates::load(dir.path()), Err(LetterError::UnknownPlaceholder { .. })));
    }

    #[test]
    fn paragraphs_split_at_empty_lines() {
        assert_eq!(paragraphs("a\nb\n\n\nc\n"), vec![vec!["a".to_owned(), "b".to_owned()], vec!["c".to_owned()]]);
    }

    fn recipient(name: &str) -> Recipient {
        Recipient { name: name.into(), street: "Am Markt 1".into(), postcode: "50667".into(), city: "Köln".into() }
    }

    #[test]
    fn address_fits_six_lines_or_is_refused() {
        let fonts = Fonts::get().expect("fonts");
        let lines = address_lines(fonts, &recipient("Stadt Köln, Kassen- und Steueramt, Vollstreckung")).expect("fits");
        assert!(lines.len() <= ADDRESS_LINES && lines.len() >= 3, "{lines:?}");
        let long = "Sehr lange Behördenbezeichnung ".repeat(8);
        assert!(matches!(address_lines(fonts, &recipient(&long)), Err(LetterError::AddressTooLong { .. })));
        let empty_street = Recipient { street: String::new(), ..recipient("Stadt Köln") };
        assert_eq!(address_lines(fonts, &empty_street).expect("fits"), vec!["Stadt Köln", "50667 Köln"]);
    }

    #[test]
    fn the_window_is_clear_of_the_franking_strip() {
        // The last address line ends above the window's bottom, the first below the strip.
        let first_top = ADDRESS_TOP + 3.1 - ADDRESS_SIZE * 0.93 * 25.4 / 72.0;
        let last_bottom = ADDRESS_TOP + ADDRESS_LINE * 5.0 + 3.1 + ADDRESS_SIZE * 0.24 * 25.4 / 72.0;
        assert!(first_top >= FRANKING_STRIP.bottom, "{first_top}");
        assert!(last_bottom <= WINDOW.bottom, "{last_bottom}");
        const { assert!(RETURN_BASELINE + 1.0 < FRANKING_STRIP.top) };
        const { assert!(TEXT_LEFT > OMR_STRIP.right && BODY_BOTTOM < CODE_AREA.top) };
    }
}
