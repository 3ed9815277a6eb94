//! Attached PDFs of a printed letter: each `anhang` of the request checked once, when the letter
//! is composed ([`check`]), and the pages of those that pass imported as Form XObjects
//! ([`Importer`], into a scratch document that `print::letter::LetterFile` writes into the
//! letter's file, just before the sheets that show them).
//!
//! An attachment is printed when it is a PDF that lopdf reads, is not encrypted, has at least
//! one and at most [`MAX_PAGES`] pages, and every page has a usable page box and content within
//! [`MAX_PAGE_CONTENT`]. Anything else is an [`AttachmentFault`]: the letter goes out without
//! it, with a note in its text (`templates/letters/anlage-fehlt.txt`), and the batch records
//! the fault in the request's journal. A fault never stops the letter or its file.
//!
//! Importing copies the objects a page needs (its resources, reachable by reference, each once
//! per attachment) into the target document in a fixed order, so the same letters give the
//! same bytes. The page itself becomes a Form XObject whose bounding box is the page's crop box
//! (its media box when it has none); the caller draws it scaled into the part of the sheet the
//! inserter's marks leave free.
//!
//! Privacy: an attachment holds debtor data. Nothing here logs, and no fault carries a value
//! taken from the attachment (the MIME type is the message's, shortened and printable).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use lopdf::{Dictionary, Document, LoadOptions, Object, ObjectId, Stream};

use crate::xamtshilfe::model::Anhang;

/// An attachment of more pages than this is not printed (it is sent on request): a letter
/// with a whole file behind it would block the inserter's envelope (its sheet count is read
/// mod 8 by the OMR code, and a DL envelope takes about ten sheets).
pub const MAX_PAGES: u32 = 20;
/// The most a single page's content may decompress to (a decompression bomb is a damaged PDF).
pub const MAX_PAGE_CONTENT: usize = 16 * 1024 * 1024;
/// The most any stream may decompress to while the attachment is loaded.
const MAX_LOAD_STREAM: usize = 64 * 1024 * 1024;
/// Page-tree inheritance and object nesting are followed this deep, no further.
const MAX_DEPTH: usize = 32;

/// Why an attachment is not printed. No variant carries content of the attachment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachmentFault {
    #[error("of type {0}, not a PDF")]
    NotPdfType(String),
    #[error("its base64 content cannot be decoded")]
    Undecodable,
    #[error("not a PDF (does not start with %PDF-)")]
    NotPdf,
    #[error("a damaged PDF (it cannot be read)")]
    Damaged,
    #[error("an encrypted PDF")]
    Encrypted,
    #[error("a PDF without pages")]
    NoPages,
    #[error("{0} pages, more than the {MAX_PAGES} printed")]
    TooManyPages(u32),
    #[error("a damaged PDF (page {0} cannot be read)")]
    DamagedPage(u32),
}

/// The decoded bytes of an attachment that passed [`check`]. Shown by length only.
#[derive(Clone, PartialEq, Eq)]
pub struct PdfBytes(Arc<[u8]>);

impl std::fmt::Debug for PdfBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PdfBytes({} bytes)", self.0.len())
    }
}

/// An attachment that will be printed: its bytes and how many sheets it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedPdf {
    pub bytes: PdfBytes,
    pub pages: u32,
}

/// Checks an attachment of the request: decodes it and reads it as a PDF.
pub fn check(anhang: &Anhang) -> Result<AttachedPdf, AttachmentFault> {
    if !anhang.mime_type.trim().eq_ignore_ascii_case("application/pdf") {
        let shown: String = anhang.mime_type.chars().filter(|c| c.is_ascii_graphic()).take(60).collect();
        return Err(AttachmentFault::NotPdfType(shown));
    }
    let bytes = anhang.decode().map_err(|_| AttachmentFault::Undecodable)?;
    let opened = open(&bytes)?;
    let pages = u32::try_from(opened.pages.len()).map_err(|_| AttachmentFault::TooManyPages(u32::MAX))?;
    Ok(AttachedPdf { bytes: PdfBytes(bytes.into()), pages })
}

/// A page of an attachment as the importer sees it.
struct SourcePage {
    id: ObjectId,
    /// Crop box (else media box): left, bottom, right, top in the page's units.
    bbox: [f32; 4],
    /// 0, 90, 180 or 270 (clockwise, as the page is shown).
    rotate: u16,
}

struct Opened {
    doc: Document,
    pages: Vec<SourcePage>,
}

/// Reads `bytes` as a PDF and checks every page. lopdf is a parser of untrusted input here: a
/// panic in it is a damaged PDF, not a dead batch.
fn open(bytes: &[u8]) -> Result<Opened, AttachmentFault> {
    std::panic::catch_unwind(|| open_unguarded(bytes)).unwrap_or(Err(AttachmentFault::Damaged))
}

fn open_unguarded(bytes: &[u8]) -> Result<Opened, AttachmentFault> {
    if !bytes.starts_with(b"%PDF-") {
        return Err(AttachmentFault::NotPdf);
    }
    let options = LoadOptions { max_decompressed_size: Some(MAX_LOAD_STREAM), ..LoadOptions::default() };
    let doc = match Document::load_mem_with_options(bytes, options) {
        Ok(doc) => doc,
        Err(_) if declares_encryption(bytes) => return Err(AttachmentFault::Encrypted),
        Err(_) => return Err(AttachmentFault::Damaged),
    };
    if doc.trailer.get(b"Encrypt").is_ok() || doc.was_encrypted() {
        return Err(AttachmentFault::Encrypted);
    }
    let ids: Vec<ObjectId> = doc.page_iter().take(MAX_PAGES as usize + 1).collect();
    if ids.is_empty() {
        return Err(AttachmentFault::NoPages);
    }
    if ids.len() > MAX_PAGES as usize {
        let all = u32::try_from(doc.page_iter().count()).unwrap_or(u32::MAX);
        return Err(AttachmentFault::TooManyPages(all));
    }
    let mut pages = Vec::with_capacity(ids.len());
    for (i, id) in ids.into_iter().enumerate() {
        let number = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let damaged = || AttachmentFault::DamagedPage(number);
        let media = inherited(&doc, id, b"MediaBox").and_then(|o| rectangle(&doc, o)).ok_or_else(damaged)?;
        let bbox = inherited(&doc, id, b"CropBox").and_then(|o| rectangle(&doc, o)).and_then(|c| intersect(c, media)).unwrap_or(media);
        let rotate = inherited(&doc, id, b"Rotate").and_then(|o| o.as_i64().ok()).unwrap_or(0).rem_euclid(360);
        let rotate = match rotate {
            0 | 90 | 180 | 270 => rotate as u16,
            _ => return Err(damaged()),
        };
        doc.get_page_content_with_limit(id, MAX_PAGE_CONTENT).map_err(|_| damaged())?;
        pages.push(SourcePage { id, bbox, rotate });
    }
    Ok(Opened { doc, pages })
}

/// Whether a file lopdf could not read names an `/Encrypt` dictionary (one it read says so in
/// its trailer, or lopdf decrypted it with the empty user password on loading).
fn declares_encryption(bytes: &[u8]) -> bool {
    bytes.windows(8).any(|w| w == b"/Encrypt")
}

/// A page attribute, looked up the page tree upwards (MediaBox, CropBox, Resources, Rotate).
fn inherited<'a>(doc: &'a Document, page: ObjectId, key: &[u8]) -> Option<&'a Object> {
    let mut node = doc.get_dictionary(page).ok()?;
    for _ in 0..MAX_DEPTH {
        if let Ok(value) = node.get(key) {
            return doc.dereference(value).ok().map(|(_, o)| o);
        }
        let parent = node.get(b"Parent").and_then(Object::as_reference).ok()?;
        node = doc.get_dictionary(parent).ok()?;
    }
    None
}

/// `[x0 y0 x1 y1]` normalised (left, bottom, right, top), with an area.
fn rectangle(doc: &Document, o: &Object) -> Option<[f32; 4]> {
    let items = o.as_array().ok()?;
    if items.len() != 4 {
        return None;
    }
    let mut v = [0f32; 4];
    for (slot, item) in v.iter_mut().zip(items) {
        let (_, item) = doc.dereference(item).ok()?;
        *slot = item.as_float().ok().filter(|f| f.is_finite())?;
    }
    let r = [v[0].min(v[2]), v[1].min(v[3]), v[0].max(v[2]), v[1].max(v[3])];
    (r[2] - r[0] >= 1.0 && r[3] - r[1] >= 1.0).then_some(r)
}

fn intersect(a: [f32; 4], b: [f32; 4]) -> Option<[f32; 4]> {
    let r = [a[0].max(b[0]), a[1].max(b[1]), a[2].min(b[2]), a[3].min(b[3])];
    (r[2] - r[0] >= 1.0 && r[3] - r[1] >= 1.0).then_some(r)
}

/// A page of an attachment, imported as a Form XObject of the target document.
#[derive(Debug, Clone, Copy)]
pub struct FormPage {
    pub form: ObjectId,
    bbox: [f32; 4],
    rotate: u16,
}

impl FormPage {
    /// The page's size as shown (rotation applied), in points.
    pub fn size(&self) -> (f32, f32) {
        let (w, h) = (self.bbox[2] - self.bbox[0], self.bbox[3] - self.bbox[1]);
        if self.rotate.is_multiple_of(180) { (w, h) } else { (h, w) }
    }

    /// The page turned a further quarter anticlockwise.
    pub fn turned(self) -> FormPage {
        FormPage { rotate: (self.rotate + 270) % 360, ..self }
    }

    /// The matrix (`cm`) that shows the page, rotated as its `/Rotate` says, scaled by `scale`
    /// with its bottom-left corner at (`x`, `y`) points.
    pub fn matrix(&self, scale: f32, x: f32, y: f32) -> [f32; 6] {
        let [x0, y0, x1, y1] = self.bbox;
        let (w, h) = (x1 - x0, y1 - y0);
        let s = scale;
        match self.rotate {
            90 => [0.0, -s, s, 0.0, x - s * y0, y + s * (w + x0)],
            180 => [-s, 0.0, 0.0, -s, x + s * (w + x0), y + s * (h + y0)],
            270 => [0.0, s, -s, 0.0, x + s * (h + y0), y - s * x0],
            _ => [s, 0.0, 0.0, s, x - s * x0, y - s * y0],
        }
    }
}

/// Imports the pages of one attachment into a target document.
pub struct Importer {
    source: Document,
    pages: Vec<SourcePage>,
    /// Source object → its copy in the target.
    copied: BTreeMap<ObjectId, ObjectId>,
    /// Copies allocated whose content is still to be written.
    pending: VecDeque<(ObjectId, ObjectId)>,
}

impl Importer {
    /// Reads an attachment that passed [`check`] again (the same bytes read the same way).
    pub fn new(pdf: &AttachedPdf) -> Result<Importer, AttachmentFault> {
        let Opened { doc, pages } = open(&pdf.bytes.0)?;
        Ok(Importer { source: doc, pages, copied: BTreeMap::new(), pending: VecDeque::new() })
    }

    /// The PDF version the attachment declares ("1.7").
    pub fn version(&self) -> &str {
        &self.source.version
    }

    /// Every page as a Form XObject of `target`, in page order.
    pub fn import(mut self, target: &mut Document) -> Vec<FormPage> {
        let pages = std::mem::take(&mut self.pages);
        let mut forms = Vec::with_capacity(pages.len());
        for page in pages {
            let content = self.source.get_page_content_with_limit(page.id, MAX_PAGE_CONTENT).unwrap_or_default();
            let resources = inherited(&self.source, page.id, b"Resources").cloned().unwrap_or(Object::Dictionary(Dictionary::new()));
            let resources = self.object(target, &resources, 0);
            let mut dict = Dictionary::new();
            dict.set("Type", Object::Name(b"XObject".to_vec()));
            dict.set("Subtype", Object::Name(b"Form".to_vec()));
            dict.set("FormType", 1);
            dict.set("BBox", Object::Array(page.bbox.iter().map(|v| Object::Real(*v)).collect()));
            dict.set("Resources", resources);
            if let Some(group) = self.source.get_dictionary(page.id).ok().and_then(|p| p.get(b"Group").ok()).cloned() {
                let group = self.object(target, &group, 0);
                dict.set("Group", group);
            }
            self.drain(target);
            let form = target.add_object(Object::Stream(Stream::new(dict, content)));
            forms.push(FormPage { form, bbox: page.bbox, rotate: page.rotate });
        }
        forms
    }

    /// Writes the copies allocated so far (and what they reference), oldest first.
    fn drain(&mut self, target: &mut Document) {
        while let Some((from, to)) = self.pending.pop_front() {
            let copy = match self.source.get_object(from) {
                Ok(o) => {
                    let o = o.clone();
                    self.object(target, &o, 0)
                }
                Err(_) => Object::Null,
            };
            target.set_object(to, copy);
        }
    }

    /// `o` for the target: references mapped to copies (allocated now, written by
    /// [`Importer::drain`]), a page-tree parent dropped.
    fn object(&mut self, target: &mut Document, o: &Object, depth: usize) -> Object {
        if depth > MAX_DEPTH {
            return Object::Null;
        }
        match o {
            Object::Reference(id) => Object::Reference(self.reference(target, *id)),
            Object::Array(items) => Object::Array(items.iter().map(|i| self.object(target, i, depth + 1)).collect()),
            Object::Dictionary(d) => Object::Dictionary(self.dictionary(target, d, depth)),
            Object::Stream(s) => {
                let dict = self.dictionary(target, &s.dict, depth);
                let mut copy = Stream::new(dict, s.content.clone());
                copy.allows_compression = s.allows_compression;
                Object::Stream(copy)
            }
            other => other.clone(),
        }
    }

    fn dictionary(&mut self, target: &mut Document, d: &Dictionary, depth: usize) -> Dictionary {
        let mut out = Dictionary::new();
        for (key, value) in d.iter() {
            if key.as_slice() == b"Parent" || key.as_slice() == b"Length" {
                continue;
            }
            out.set(key.clone(), self.object(target, value, depth + 1));
        }
        out
    }

    fn reference(&mut self, target: &mut Document, id: ObjectId) -> ObjectId {
        if let Some(copy) = self.copied.get(&id) {
            return *copy;
        }
        let copy = target.new_object_id();
        self.copied.insert(id, copy);
        self.pending.push_back((id, copy));
        copy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(bbox: [f32; 4], rotate: u16) -> FormPage {
        FormPage { form: (1, 0), bbox, rotate }
    }

    fn apply(m: [f32; 6], (x, y): (f32, f32)) -> (f32, f32) {
        (m[0] * x + m[2] * y + m[4], m[1] * x + m[3] * y + m[5])
    }

    #[test]
    fn each_rotation_maps_the_box_onto_the_target() {
        // A 100 × 50 box at (10, 20); shown at scale 2 from (300, 400).
        let bbox = [10.0, 20.0, 110.0, 70.0];
        for rotate in [0, 90, 180, 270] {
            let f = form(bbox, rotate);
            let (w, h) = f.size();
            let m = f.matrix(2.0, 300.0, 400.0);
            let corners = [(10.0, 20.0), (110.0, 20.0), (10.0, 70.0), (110.0, 70.0)];
            let mapped: Vec<(f32, f32)> = corners.iter().map(|&c| apply(m, c)).collect();
            let (min_x, max_x) = mapped.iter().fold((f32::MAX, f32::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
            let (min_y, max_y) = mapped.iter().fold((f32::MAX, f32::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
            assert_eq!((min_x, min_y, max_x, max_y), (300.0, 400.0, 300.0 + 2.0 * w, 400.0 + 2.0 * h), "rotate {rotate}");
        }
        // Rotated clockwise by 90: the page's top-left corner is shown top right.
        assert_eq!(apply(form(bbox, 90).matrix(1.0, 0.0, 0.0), (10.0, 70.0)), (50.0, 100.0));
        assert_eq!(form(bbox, 90).size(), (50.0, 100.0));
    }

    #[test]
    fn faults_carry_no_content() {
        let a = |mime: &str, inhalt: &str| Anhang { dateiname: "x.pdf".into(), mime_type: mime.into(), inhalt: inhalt.into() };
        assert_eq!(check(&a("image/png", "iVBORw0KGgo=")), Err(AttachmentFault::NotPdfType("image/png".into())));
        assert_eq!(check(&a("application/pdf", "not base64!")), Err(AttachmentFault::Undecodable));
        // "Hallo Welt"
        assert_eq!(check(&a("application/pdf", "SGFsbG8gV2VsdA==")), Err(AttachmentFault::NotPdf));
        // "%PDF-1.4\n%%EOF\n"
        assert_eq!(check(&a("application/pdf", "JVBERi0xLjQKJSVFT0YK")), Err(AttachmentFault::Damaged));
    }
}
