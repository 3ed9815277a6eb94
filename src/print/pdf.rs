//! A print file's PDF, written as it is made: every object goes to the output as soon as it
//! is complete, so a file of a thousand pages never sits in memory (printpdf and lopdf each
//! hold a whole document, about 200 MB for a file of 500 letters).
//!
//! Owns the file's structure: the header, the objects and their cross-reference offsets, the
//! page tree, the two embedded faces (written once per file, at its end, with the widths and
//! the ToUnicode map of the glyphs the file used: printpdf's own `generate_cmap_string`), the
//! document information and the trailer. A page's content is written as it is drawn
//! ([`Content`]: text runs, lines, rectangles and grey levels, as `print::letter` and
//! `print::marks` draw them), straight into the content stream's bytes: text as the glyph
//! ids of the face's cmap in an Identity-H font, as printpdf writes it. (printpdf's page
//! operations were built and then serialised here before; building them cost more than
//! writing the bytes.)
//! An attachment's objects (`print::attachment::Importer`, imported into a scratch lopdf
//! document) are written with their numbers moved behind the file's.
//!
//! The same calls give the same bytes: object numbers, dates and the document ID (a hash of
//! the content) depend on nothing else. Nothing here logs; no error carries page content.

use std::io::Write;

use printpdf::FontId;
use sha2::Digest as _;

use super::font::{Fonts, PROGRAMS, Style};

/// Why the file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PdfError {
    #[error("writing the PDF: {0}")]
    Io(#[from] std::io::Error),
    #[error("the page uses {0}, which the print file's writer does not write")]
    Unsupported(&'static str),
    #[error("the page selects the font {0:?}; the print file has F1 and F2")]
    UnknownFont(String),
    #[error("text shown before a font was selected")]
    NoFont,
}

/// The resource names of the two faces in every page's resources.
pub const FONT_NAMES: [&str; 2] = ["F1", "F2"];
/// How hard page content is compressed: the fastest level. Pages are mostly numbers and
/// glyph ids; a higher level buys a few per cent of size for several times the time.
const CONTENT_LEVEL: u32 = 1;

// Fixed object numbers. Each face takes four: Type0 font, ToUnicode, descriptor, program.
const CATALOG: u32 = 1;
const PAGES: u32 = 2;
const INFO: u32 = 3;
const RESOURCES: u32 = 4;
const FACE_OBJECTS: [u32; 2] = [5, 9];
const FIRST_FREE: u32 = 13;

/// Counts and hashes what goes out.
struct Out<W: Write> {
    inner: W,
    at: u64,
    sha: sha2::Sha256,
}

impl<W: Write> Out<W> {
    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.inner.write_all(bytes)?;
        self.sha.update(bytes);
        self.at += bytes.len() as u64;
        Ok(())
    }
}

/// What a file has used of a face: for each glyph id, the character it was first set for.
struct Used {
    first: Vec<u32>,
}

/// The writer of one file.
pub struct PdfFile<W: Write> {
    out: Out<W>,
    /// Offset of object n at n - 1; 0 while it is not written.
    offsets: Vec<u64>,
    pages: Vec<u32>,
    used: [Used; 2],
    /// Set when an attachment declares a version above the header's.
    version: Option<String>,
    /// Scratch space for one page's content, reused.
    content: Vec<u8>,
    /// The page streams' compressor and its output, reused from page to page (a new
    /// compressor's state is larger than a page and was most of the cost of a small one).
    z: flate2::Compress,
    zout: Vec<u8>,
}

/// The version in the header: what the file's own objects need is 1.3; 1.7 also covers
/// every attachment up to it (their objects are copied as they are).
const HEADER_VERSION: &str = "1.7";

impl<W: Write> PdfFile<W> {
    /// Starts a file: its header.
    pub fn new(out: W) -> Result<PdfFile<W>, PdfError> {
        let fonts = Fonts::get().map_err(|_| PdfError::Unsupported("a font that cannot be parsed"))?;
        let used = [Style::Regular, Style::Bold].map(|s| Used { first: vec![0; fonts.glyph_count(s).max(1)] });
        let mut file = PdfFile {
            out: Out { inner: out, at: 0, sha: sha2::Sha256::new() },
            offsets: vec![0; FIRST_FREE as usize - 1],
            pages: Vec::new(),
            used,
            version: None,
            content: Vec::with_capacity(64 * 1024),
            z: flate2::Compress::new(flate2::Compression::new(CONTENT_LEVEL), true),
            zout: Vec::with_capacity(32 * 1024),
        };
        file.out.put(format!("%PDF-{HEADER_VERSION}\n").as_bytes())?;
        // A comment of bytes above 127: the file is binary (ISO 32000-1, 7.5.2).
        file.out.put(b"%\xE2\xE3\xCF\xD3\n")?;
        Ok(file)
    }

    /// A new object number.
    fn allocate(&mut self) -> u32 {
        self.offsets.push(0);
        self.offsets.len() as u32
    }

    /// Writes object `id` whose body is `body`.
    fn object(&mut self, id: u32, body: &[u8]) -> Result<(), PdfError> {
        self.offsets[id as usize - 1] = self.out.at;
        self.out.put(format!("{id} 0 obj\n").as_bytes())?;
        self.out.put(body)?;
        self.out.put(b"\nendobj\n")?;
        Ok(())
    }

    /// Writes object `id`, a stream of `dict` entries (without `/Length`) and `data`.
    fn stream(&mut self, id: u32, dict: &str, data: &[u8]) -> Result<(), PdfError> {
        self.offsets[id as usize - 1] = self.out.at;
        self.out.put(format!("{id} 0 obj\n<<{dict}/Length {}>>\nstream\n", data.len()).as_bytes())?;
        self.out.put(data)?;
        self.out.put(b"\nendstream\nendobj\n")?;
        Ok(())
    }

    /// Adds an A4 page drawn by `page`; with `form`, an attachment's page (a Form XObject
    /// written by [`PdfFile::attachment`]) is drawn first with the matrix given.
    pub fn page(&mut self, page: &mut Content, form: Option<(u32, [f32; 6])>) -> Result<(), PdfError> {
        page.flush();
        if let Some(e) = page.error.take() {
            return Err(e);
        }
        for &(face, gid, c) in &page.glyphs {
            if let Some(first) = self.used[usize::from(face)].first.get_mut(usize::from(gid))
                && *first == 0
            {
                *first = u32::from(c);
            }
        }
        let mut z = std::mem::take(&mut self.zout);
        let written = match form {
            Some((_, m)) => {
                let mut content = std::mem::take(&mut self.content);
                content.clear();
                content.extend_from_slice(b"q ");
                for v in m {
                    number(&mut content, v, 5);
                    content.push(b' ');
                }
                content.extend_from_slice(b"cm /Anlage Do Q\n");
                content.extend_from_slice(&page.bytes);
                let done = deflate_into(&mut self.z, &content, &mut z);
                self.content = content;
                done
            }
            None => deflate_into(&mut self.z, &page.bytes, &mut z),
        }
        .and_then(|()| self.page_objects(&z, form));
        self.zout = z;
        written
    }

    /// A page's content stream (`z`, compressed) and its page object.
    fn page_objects(&mut self, z: &[u8], form: Option<(u32, [f32; 6])>) -> Result<(), PdfError> {
        let (page, contents) = (self.allocate(), self.allocate());
        self.stream(contents, "/Filter/FlateDecode", z)?;
        let resources = match form {
            Some((id, _)) => format!("<</Font<</F1 {} 0 R/F2 {} 0 R>>/XObject<</Anlage {id} 0 R>>>>", FACE_OBJECTS[0], FACE_OBJECTS[1]),
            None => format!("{RESOURCES} 0 R"),
        };
        let body = format!("<</Type/Page/Parent {PAGES} 0 R/MediaBox[0 0 {A4_WIDTH} {A4_HEIGHT}]/Resources {resources}/Contents {contents} 0 R>>");
        self.object(page, body.as_bytes())?;
        self.pages.push(page);
        Ok(())
    }

    /// Writes the objects of `scratch` (a document an attachment's pages were imported into,
    /// numbered from 1) behind the file's own; returns the number added to each of them
    /// (object n of `scratch` is object n + base of the file).
    pub fn attachment(&mut self, scratch: &lopdf::Document, version: &str) -> Result<u32, PdfError> {
        let base = self.offsets.len() as u32;
        let count = scratch.max_id;
        for _ in 0..count {
            self.allocate();
        }
        let mut body = Vec::new();
        for id in 1..=count {
            body.clear();
            match scratch.objects.get(&(id, 0)) {
                Some(lopdf::Object::Stream(s)) => {
                    let (mut dict, data) = if s.dict.get(b"Filter").is_err() && s.allows_compression {
                        let mut dict = s.dict.clone();
                        dict.set("Filter", lopdf::Object::Name(b"FlateDecode".to_vec()));
                        (dict, deflate(&s.content, CONTENT_LEVEL)?)
                    } else {
                        (s.dict.clone(), s.content.clone())
                    };
                    dict.remove(b"Length");
                    dict.set("Length", lopdf::Object::Integer(data.len() as i64));
                    lopdf_object(&mut body, &lopdf::Object::Dictionary(dict), base);
                    body.extend_from_slice(b"\nstream\n");
                    body.extend_from_slice(&data);
                    body.extend_from_slice(b"\nendstream");
                }
                Some(o) => lopdf_object(&mut body, o, base),
                None => body.extend_from_slice(b"null"),
            }
            self.object(base + id, &body)?;
        }
        if version.len() == 3 && version.as_bytes()[1] == b'.' && version > HEADER_VERSION && self.version.as_deref().is_none_or(|v| version > v) {
            self.version = Some(version.to_owned());
        }
        Ok(base)
    }

    /// The number of pages so far.
    pub fn page_count(&self) -> usize {
        self.pages.len()
    }

    /// Writes the fonts, the page tree, the catalog, the document information (dated
    /// `created`, a Unix time) and the trailer; returns the output and the SHA-256 of all
    /// that was written.
    pub fn finish(mut self, created: i64, title: &str) -> Result<(W, [u8; 32]), PdfError> {
        let fonts = Fonts::get().map_err(|_| PdfError::Unsupported("a font that cannot be parsed"))?;
        for (i, style) in [Style::Regular, Style::Bold].into_iter().enumerate() {
            self.face(fonts, style, i)?;
        }
        let fonts_dict = format!("<</Font<</F1 {} 0 R/F2 {} 0 R>>>>", FACE_OBJECTS[0], FACE_OBJECTS[1]);
        self.object(RESOURCES, fonts_dict.as_bytes())?;
        let mut kids = String::with_capacity(self.pages.len() * 8);
        for p in &self.pages {
            kids.push_str(&format!("{p} 0 R "));
        }
        let pages = format!("<</Type/Pages/Count {}/Kids[{}]>>", self.pages.len(), kids.trim_end());
        self.object(PAGES, pages.as_bytes())?;
        let version = self.version.as_ref().map(|v| format!("/Version/{v}")).unwrap_or_default();
        self.object(CATALOG, format!("<</Type/Catalog/Pages {PAGES} 0 R/PageLayout/OneColumn{version}>>").as_bytes())?;
        let date = pdf_date(created);
        let mut info = b"<</Title".to_vec();
        literal(&mut info, title.as_bytes());
        info.extend_from_slice(format!("/Producer(amtsbote, printpdf 0.12.8)/CreationDate({date})/ModDate({date})>>").as_bytes());
        self.object(INFO, &info)?;

        let xref = self.out.at;
        let mut table = format!("xref\n0 {}\n0000000000 65535 f \n", self.offsets.len() + 1).into_bytes();
        for o in &self.offsets {
            table.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
        }
        self.out.put(&table)?;
        // The document ID: the first 16 bytes of the SHA-256 of everything before the
        // trailer. The same content gives the same ID.
        let id = hex::encode_upper(&self.out.sha.clone().finalize()[..16]);
        let trailer = format!("trailer\n<</Size {}/Root {CATALOG} 0 R/Info {INFO} 0 R/ID[<{id}><{id}>]>>\nstartxref\n{xref}\n%%EOF\n", self.offsets.len() + 1);
        self.out.put(trailer.as_bytes())?;
        let sha: [u8; 32] = self.out.sha.finalize().into();
        let mut inner = self.out.inner;
        inner.flush()?;
        Ok((inner, sha))
    }

    /// One face: its Type0 font with the widths of the glyphs used, their ToUnicode map
    /// (printpdf's), its descriptor and its program (compressed once per process).
    fn face(&mut self, fonts: &Fonts, style: Style, i: usize) -> Result<(), PdfError> {
        let [font, to_unicode, descriptor, program] = [0, 1, 2, 3].map(|k| FACE_OBJECTS[i] + k);
        let face = fonts.face(style);
        let used: Vec<(u16, String)> = self.used[i]
            .first
            .iter()
            .enumerate()
            .filter(|(_, c)| **c != 0)
            .filter_map(|(gid, &c)| Some((u16::try_from(gid).ok()?, char::from_u32(c)?.to_string())))
            .collect();
        let upm = i64::from(face.units_per_em.max(1));
        // /W: runs of consecutive glyph ids, widths in thousandths of an em.
        let mut widths = String::from("[");
        let mut previous: Option<u16> = None;
        for (gid, _) in &used {
            let w = i64::from(fonts.glyph_advance(style, *gid)) * 1000 / upm;
            match previous {
                Some(p) if p + 1 == *gid => widths.push_str(&format!(" {w}")),
                Some(_) => widths.push_str(&format!("]{gid}[{w}")),
                None => widths.push_str(&format!("{gid}[{w}")),
            }
            previous = Some(*gid);
        }
        widths.push_str(if previous.is_some() { "]]" } else { "]" });
        let name = face.font_name.clone().unwrap_or_else(|| FONT_NAMES[i].to_owned());
        let mut base = Vec::new();
        pdf_name(&mut base, name.as_bytes());
        let base = String::from_utf8_lossy(&base).into_owned();
        let body = format!(
            "<</Type/Font/Subtype/Type0/BaseFont{base}/Encoding/Identity-H/ToUnicode {to_unicode} 0 R/DescendantFonts[<</Type/Font/Subtype/CIDFontType2/BaseFont{base}/CIDSystemInfo<</Registry(Adobe)/Ordering(Identity)/Supplement 0>>/W{widths}/DW 1000/FontDescriptor {descriptor} 0 R/CIDToGIDMap/Identity>>]>>"
        );
        self.object(font, body.as_bytes())?;
        let cmap = printpdf::generate_cmap_string(face, &FontId(FONT_NAMES[i].to_owned()), &used);
        let z = deflate(cmap.as_bytes(), CONTENT_LEVEL)?;
        self.stream(to_unicode, "/Filter/FlateDecode", &z)?;
        let scale = |v: i64| (v as f64 * 1000.0 / upm as f64).round() as i64;
        let m = &face.pdf_font_metrics;
        let (ascent, descent) = (scale(i64::from(face.font_metrics.ascent)), scale(i64::from(face.font_metrics.descent)));
        let italic = if m.caret_slope_rise == 0 { 0.0 } else { -(f64::from(m.caret_slope_run)).atan2(f64::from(m.caret_slope_rise)).to_degrees() };
        // Non-symbolic, italic when slanted; the stem width estimated from the weight class.
        let flags = 32 + if italic.round() != 0.0 { 64 } else { 0 };
        let stem = if m.us_weight_class == 0 { 80 } else { 50 + (f64::from(m.us_weight_class) / 65.0).powi(2).round() as i64 };
        let body = format!(
            "<</Type/FontDescriptor/FontName{base}/Ascent {ascent}/Descent {descent}/CapHeight {ascent}/ItalicAngle {}/Flags {flags}/StemV {stem}/FontBBox[{} {} {} {}]/FontFile2 {program} 0 R>>",
            italic.round() as i64,
            scale(i64::from(m.x_min)),
            scale(i64::from(m.y_min)),
            scale(i64::from(m.x_max)),
            scale(i64::from(m.y_max)),
        );
        self.object(descriptor, body.as_bytes())?;
        let (raw, z) = compressed_program(i)?;
        self.stream(program, &format!("/Length1 {}/Filter/FlateDecode", raw.len()), z)?;
        Ok(())
    }
}

/// A piece of a text run shown with [`Content::show_parts`].
#[derive(Debug, Clone, Copy)]
pub enum TextPart<'a> {
    /// Set in the current face.
    Text(&'a str),
    /// Moved back by thousandths of an em (the `TJ` array's numbers; negative moves on).
    Offset(f32),
}

/// One page's content stream, written as it is drawn: the bytes of its operators, and the
/// glyphs its text used (for the file's widths and ToUnicode map). Coordinates in points
/// from the bottom-left corner. Filled rectangles in a row are one path, filled once (they
/// do not overlap). The same calls give the same bytes.
pub struct Content {
    bytes: Vec<u8>,
    /// (face, glyph id, character) of every glyph set, in order.
    glyphs: Vec<(u8, u16, char)>,
    fill_pending: bool,
    /// The face of the last [`Content::font`].
    face: Option<Style>,
    fonts: Option<&'static Fonts>,
    /// The first thing that could not be drawn; [`PdfFile::page`] returns it.
    error: Option<PdfError>,
}

impl Default for Content {
    fn default() -> Content {
        Content::new()
    }
}

impl Content {
    pub fn new() -> Content {
        Content { bytes: Vec::with_capacity(16 * 1024), glyphs: Vec::new(), fill_pending: false, face: None, fonts: Fonts::get().ok(), error: None }
    }

    /// Ends a path of filled rectangles before anything else is drawn.
    fn flush(&mut self) {
        if self.fill_pending {
            self.bytes.extend_from_slice(b"f\n");
            self.fill_pending = false;
        }
    }

    fn op(&mut self, op: &[u8]) {
        self.flush();
        self.bytes.extend_from_slice(op);
    }

    /// `q`: saves the graphics state.
    pub fn save(&mut self) {
        self.op(b"q\n");
    }

    /// `Q`: restores it.
    pub fn restore(&mut self) {
        self.op(b"Q\n");
    }

    pub fn begin_text(&mut self) {
        self.op(b"BT\n");
    }

    pub fn end_text(&mut self) {
        self.op(b"ET\n");
    }

    /// Selects a face (`F1` regular, `F2` bold) at `size` points.
    pub fn font(&mut self, style: Style, size: f32) {
        self.flush();
        self.face = Some(style);
        self.bytes.push(b'/');
        self.bytes.extend_from_slice(FONT_NAMES[face_index(style)].as_bytes());
        self.bytes.push(b' ');
        number(&mut self.bytes, size, 3);
        self.bytes.extend_from_slice(b" Tf\n");
    }

    /// `Td`: the start of the next line of text.
    pub fn text_cursor(&mut self, x: f32, y: f32) {
        self.flush();
        number(&mut self.bytes, x, 3);
        self.bytes.push(b' ');
        number(&mut self.bytes, y, 3);
        self.bytes.extend_from_slice(b" Td\n");
    }

    /// `Tm`: the text matrix.
    pub fn text_matrix(&mut self, m: [f32; 6]) {
        self.flush();
        for v in m {
            number(&mut self.bytes, v, 5);
            self.bytes.push(b' ');
        }
        self.bytes.extend_from_slice(b"Tm\n");
    }

    /// `Ts`: the text rise in points.
    pub fn rise(&mut self, rise: f32) {
        self.flush();
        number(&mut self.bytes, rise, 3);
        self.bytes.extend_from_slice(b" Ts\n");
    }

    /// `Tj`: `text` in the current face.
    pub fn show(&mut self, text: &str) {
        self.show_parts(&[TextPart::Text(text)]);
    }

    /// `Tj` for a single text, else `TJ` with the offsets between the texts.
    pub fn show_parts(&mut self, parts: &[TextPart<'_>]) {
        self.flush();
        let (Some(style), Some(fonts)) = (self.face, self.fonts) else {
            self.error.get_or_insert(if self.fonts.is_none() { PdfError::Unsupported("a font that cannot be parsed") } else { PdfError::NoFont });
            return;
        };
        let single = matches!(parts, [TextPart::Text(_)]);
        if !single {
            self.bytes.push(b'[');
        }
        let face = face_index(style) as u8;
        for part in parts {
            match *part {
                TextPart::Text(text) => {
                    self.bytes.push(b'<');
                    for c in text.chars() {
                        let gid = fonts.glyph(style, c);
                        self.glyphs.push((face, gid, c));
                        hex4(&mut self.bytes, gid);
                    }
                    self.bytes.push(b'>');
                }
                TextPart::Offset(o) => {
                    self.bytes.push(b' ');
                    number(&mut self.bytes, o, 3);
                    self.bytes.push(b' ');
                }
            }
        }
        self.bytes.extend_from_slice(if single { b" Tj\n" } else { b"] TJ\n" });
    }

    /// `g`: the grey level of fills (0 black, 1 white).
    pub fn fill_grey(&mut self, level: f32) {
        self.flush();
        number(&mut self.bytes, level, 3);
        self.bytes.extend_from_slice(b" g\n");
    }

    /// `G`: the grey level of strokes.
    pub fn stroke_grey(&mut self, level: f32) {
        self.flush();
        number(&mut self.bytes, level, 3);
        self.bytes.extend_from_slice(b" G\n");
    }

    /// `w`: the line width in points.
    pub fn line_width(&mut self, width: f32) {
        self.flush();
        number(&mut self.bytes, width, 3);
        self.bytes.extend_from_slice(b" w\n");
    }

    /// A straight line from `from` to `to`, stroked.
    pub fn line(&mut self, from: (f32, f32), to: (f32, f32)) {
        self.flush();
        for (k, (x, y)) in [from, to].into_iter().enumerate() {
            number(&mut self.bytes, x, 3);
            self.bytes.push(b' ');
            number(&mut self.bytes, y, 3);
            self.bytes.extend_from_slice(if k == 0 { b" m\n" } else { b" l\n" });
        }
        self.bytes.extend_from_slice(b"S\n");
    }

    /// A filled rectangle: lower-left corner, width and height.
    pub fn fill_rect(&mut self, x: f32, y: f32, width: f32, height: f32) {
        for v in [x, y, width, height] {
            number(&mut self.bytes, v, 3);
            self.bytes.push(b' ');
        }
        self.bytes.extend_from_slice(b"re\n");
        self.fill_pending = true;
    }

    /// `other` drawn after what is drawn here.
    pub fn append(&mut self, mut other: Content) {
        self.flush();
        self.bytes.append(&mut other.bytes);
        self.glyphs.append(&mut other.glyphs);
        self.fill_pending = other.fill_pending;
        self.face = other.face.or(self.face);
        if self.error.is_none() {
            self.error = other.error;
        }
    }

    /// The content stream so far (filled rectangles still open left open).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

fn face_index(style: Style) -> usize {
    match style {
        Style::Regular => 0,
        Style::Bold => 1,
    }
}

/// A4 in points, as printpdf computes it from 210 × 297 mm.
const A4_WIDTH: &str = "595.2756";
const A4_HEIGHT: &str = "841.8898";

/// `v` with at most `decimals` decimals, trailing zeros dropped (`12.5`, `-3`, `0.001`).
fn number(out: &mut Vec<u8>, v: f32, decimals: u32) {
    let v = if v.is_finite() { f64::from(v) } else { 0.0 };
    let scale = 10i64.pow(decimals);
    let fixed = (v * scale as f64).round() as i64;
    if fixed < 0 {
        out.push(b'-');
    }
    let abs = fixed.unsigned_abs();
    let (int, mut frac) = (abs / scale as u64, abs % scale as u64);
    decimal(out, int);
    if frac != 0 {
        let mut digits = decimals;
        while frac % 10 == 0 {
            frac /= 10;
            digits -= 1;
        }
        out.push(b'.');
        let mut width = 1;
        while width < digits && frac >= 10u64.pow(width) {
            width += 1;
        }
        for _ in width..digits {
            out.push(b'0');
        }
        decimal(out, frac);
    }
}

/// `n` in decimal digits, appended (no allocation: numbers are most of a page's content).
fn decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

fn hex4(out: &mut Vec<u8>, v: u16) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for shift in [12, 8, 4, 0] {
        out.push(HEX[usize::from((v >> shift) & 0xF)]);
    }
}

fn deflate(data: &[u8], level: u32) -> Result<Vec<u8>, PdfError> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::with_capacity(data.len() / 3 + 64), flate2::Compression::new(level));
    z.write_all(data)?;
    Ok(z.finish()?)
}

/// `data` as a zlib stream into `out` (cleared first), with `z` reset and reused: the same
/// bytes as a new compressor of its level gives.
fn deflate_into(z: &mut flate2::Compress, data: &[u8], out: &mut Vec<u8>) -> Result<(), PdfError> {
    z.reset();
    out.clear();
    out.reserve(data.len() / 2 + 64);
    loop {
        let consumed = usize::try_from(z.total_in()).unwrap_or(usize::MAX).min(data.len());
        let status = z.compress_vec(&data[consumed..], out, flate2::FlushCompress::Finish).map_err(std::io::Error::other)?;
        match status {
            flate2::Status::StreamEnd => return Ok(()),
            flate2::Status::Ok | flate2::Status::BufError => out.reserve(out.capacity().max(4096)),
        }
    }
}

/// A face's program and its zlib stream at the best level: made once per process (1.4 MB
/// of font compressed for every file took as long as laying out a hundred letters).
fn compressed_program(i: usize) -> Result<(&'static [u8], &'static [u8]), PdfError> {
    static PROGRAMS_Z: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    let all = PROGRAMS_Z.get_or_init(|| PROGRAMS.iter().map(|p| deflate(p, 9).unwrap_or_default()).collect());
    match (PROGRAMS.get(i), all.get(i)) {
        (Some(raw), Some(z)) if !z.is_empty() => Ok((raw, z)),
        _ => Err(PdfError::Unsupported("a font program that cannot be compressed")),
    }
}

/// `D:20261201000000Z` for a Unix time.
fn pdf_date(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0).map_or_else(|| "D:19700101000000Z".to_owned(), |t| t.format("D:%Y%m%d%H%M%SZ").to_string())
}

/// A literal string, `(` … `)`, escaped.
fn literal(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'(');
    for &b in s {
        match b {
            b'(' | b')' | b'\\' => {
                out.push(b'\\');
                out.push(b);
            }
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\n' => out.extend_from_slice(b"\\n"),
            _ => out.push(b),
        }
    }
    out.push(b')');
}

/// A name, `/` and its bytes, anything but regular characters as `#xx`.
fn pdf_name(out: &mut Vec<u8>, name: &[u8]) {
    out.push(b'/');
    for &b in name {
        if b.is_ascii_graphic() && !b"()<>[]{}/%#".contains(&b) {
            out.push(b);
        } else {
            out.extend_from_slice(format!("#{b:02X}").as_bytes());
        }
    }
}

/// A lopdf object (of an attachment's scratch document) with its references moved by `base`.
fn lopdf_object(out: &mut Vec<u8>, o: &lopdf::Object, base: u32) {
    use lopdf::Object;
    match o {
        Object::Null => out.extend_from_slice(b"null"),
        Object::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Object::Integer(i) => out.extend_from_slice(i.to_string().as_bytes()),
        Object::Real(r) => number(out, *r, 6),
        Object::Name(n) => pdf_name(out, n),
        Object::String(s, lopdf::StringFormat::Literal) => literal(out, s),
        Object::String(s, lopdf::StringFormat::Hexadecimal) => {
            out.push(b'<');
            out.extend_from_slice(hex::encode_upper(s).as_bytes());
            out.push(b'>');
        }
        Object::Array(items) => {
            out.push(b'[');
            for (k, item) in items.iter().enumerate() {
                if k > 0 {
                    out.push(b' ');
                }
                lopdf_object(out, item, base);
            }
            out.push(b']');
        }
        Object::Dictionary(d) => {
            out.extend_from_slice(b"<<");
            for (key, value) in d.iter() {
                pdf_name(out, key);
                out.push(b' ');
                lopdf_object(out, value, base);
            }
            out.extend_from_slice(b">>");
        }
        // A stream inside another object cannot be: the scratch document holds streams only
        // as objects of their own, which `PdfFile::attachment` writes.
        Object::Stream(_) => out.extend_from_slice(b"null"),
        Object::Reference((id, _)) => out.extend_from_slice(format!("{} 0 R", id + base).as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(v: f32, d: u32) -> String {
        let mut out = Vec::new();
        number(&mut out, v, d);
        String::from_utf8(out).expect("ascii")
    }

    #[test]
    fn numbers_are_short_and_exact_to_their_decimals() {
        assert_eq!(num(12.5, 3), "12.5");
        assert_eq!(num(-3.0, 3), "-3");
        assert_eq!(num(0.001, 3), "0.001");
        assert_eq!(num(0.0004, 3), "0");
        assert_eq!(num(-0.25, 5), "-0.25");
        assert_eq!(num(595.2756, 3), "595.276");
        assert_eq!(num(f32::NAN, 3), "0");
        assert_eq!(num(1.0203, 4), "1.0203");
    }

    #[test]
    fn names_and_strings_are_escaped() {
        let mut out = Vec::new();
        pdf_name(&mut out, b"DejaVu Sans#1");
        literal(&mut out, b"a(b)\\");
        assert_eq!(out, b"/DejaVu#20Sans#231(a\\(b\\)\\\\)".to_vec());
    }
}
