//! The letter font: DejaVu Sans (regular and bold), vendored in `fonts/` with its licence and
//! compiled in, so a machine needs no font package. Owns measuring text with the font's own
//! advance widths (printpdf does no shaping), for right-aligned amounts and line wrapping.
//!
//! DejaVu Sans covers Latin, Greek and Cyrillic, which is what DIN 91379 needs for names; a
//! character it lacks is refused ([`Fonts::missing`]) rather than printed as an empty box.
//! No kerning, no ligatures: each character is one glyph at its advance width.

use std::sync::OnceLock;

use printpdf::ParsedFont;

static REGULAR_TTF: &[u8] = include_bytes!("../../fonts/DejaVuSans.ttf");
static BOLD_TTF: &[u8] = include_bytes!("../../fonts/DejaVuSans-Bold.ttf");
/// The font programs as embedded in every file (regular, bold).
pub(crate) static PROGRAMS: [&[u8]; 2] = [REGULAR_TTF, BOLD_TTF];

/// A piece of a line of text ([`Fonts::pieces`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    /// Set as it is.
    Text(String),
    /// A combining mark, moved `dx` across and raised by `rise` (both in em) from where it
    /// would fall; the pen is where it was before the mark afterwards.
    Mark { mark: char, dx: f32, rise: f32 },
}

/// How far a mark is moved across at most, in em ([`Fonts::pieces`]).
const MAX_MARK_SHIFT: f32 = 0.18;

#[derive(Debug, Clone, Copy)]
enum MarkKind {
    Above { centred: bool },
    Below { centred: bool },
    AsDesigned,
}

/// The combining marks we place (the DIN 91379 ones and their neighbours in the block).
fn mark_kind(c: char) -> Option<MarkKind> {
    match u32::from(c) {
        0x0315 | 0x031B => Some(MarkKind::Above { centred: false }),
        0x0328 => Some(MarkKind::Below { centred: false }),
        0x035C..=0x0362 => Some(MarkKind::AsDesigned),
        0x0316..=0x0319 | 0x031C..=0x0333 | 0x0339..=0x033C => Some(MarkKind::Below { centred: true }),
        0x0300..=0x036F => Some(MarkKind::Above { centred: true }),
        _ => None,
    }
}

/// A glyph's box from the `glyf` table of a TrueType font, through `head` and `loca`. The
/// fonts are compiled in; every read is bounds-checked all the same.
fn glyph_box(ttf: &[u8], gid: u16) -> Option<[i16; 4]> {
    let u16_at = |at: usize| ttf.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let u32_at = |at: usize| ttf.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    let table = |tag: &[u8; 4]| -> Option<usize> {
        (0..usize::from(u16_at(4)?)).find_map(|i| {
            let record = 12 + 16 * i;
            (ttf.get(record..record + 4)? == tag).then(|| u32_at(record + 8).map(|o| o as usize)).flatten()
        })
    };
    let (head, loca, glyf) = (table(b"head")?, table(b"loca")?, table(b"glyf")?);
    let long = u16_at(head + 50)? != 0;
    let offset = |i: usize| -> Option<usize> {
        if long { u32_at(loca + 4 * i).map(|o| o as usize) } else { u16_at(loca + 2 * i).map(|o| usize::from(o) * 2) }
    };
    let (start, end) = (offset(usize::from(gid))?, offset(usize::from(gid) + 1)?);
    if end <= start {
        return None;
    }
    let at = glyf + start;
    let v = |k: usize| u16_at(at + 2 + 2 * k).map(|x| x as i16);
    Some([v(0)?, v(1)?, v(2)?, v(3)?])
}

/// Regular or bold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Regular,
    Bold,
}

/// Both faces, parsed once per process.
#[derive(Debug)]
pub struct Fonts {
    pub regular: ParsedFont,
    pub bold: ParsedFont,
    /// Per face (regular, bold): its cmap and advances as flat tables.
    tables: [Table; 2],
}

/// A face's cmap for the Basic Multilingual Plane and its advance widths, as flat tables:
/// measuring and encoding text look a character up once per glyph set, and printpdf's
/// maps are trees.
#[derive(Debug)]
struct Table {
    /// Glyph id by code point below U+10000 (0: the face has none).
    gid: Vec<u16>,
    /// Advance width in font units by glyph id.
    advance: Vec<u16>,
}

impl Table {
    fn of(face: &ParsedFont) -> Table {
        let mut gid = vec![0u16; 0x10000];
        for (&c, &g) in face.codepoint_to_glyph.range(..0x10000) {
            gid[c as usize] = g;
        }
        let glyphs = face.glyph_widths.keys().next_back().map_or(0, |&g| usize::from(g) + 1);
        let mut advance = vec![0u16; glyphs];
        for (&g, &w) in &face.glyph_widths {
            advance[usize::from(g)] = w;
        }
        Table { gid, advance }
    }
}

/// The compiled-in faces could not be parsed (only a broken build can cause this).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the compiled-in font DejaVu Sans cannot be parsed")]
pub struct FontError;

impl Fonts {
    /// The process-wide fonts; parsed on first use.
    pub fn get() -> Result<&'static Fonts, FontError> {
        static FONTS: OnceLock<Option<Fonts>> = OnceLock::new();
        FONTS
            .get_or_init(|| {
                let mut warnings = Vec::new();
                let regular = ParsedFont::from_bytes(REGULAR_TTF, 0, &mut warnings)?;
                let bold = ParsedFont::from_bytes(BOLD_TTF, 0, &mut warnings)?;
                let tables = [Table::of(&regular), Table::of(&bold)];
                Some(Fonts { regular, bold, tables })
            })
            .as_ref()
            .ok_or(FontError)
    }

    pub fn face(&self, style: Style) -> &ParsedFont {
        match style {
            Style::Regular => &self.regular,
            Style::Bold => &self.bold,
        }
    }

    fn table(&self, style: Style) -> &Table {
        match style {
            Style::Regular => &self.tables[0],
            Style::Bold => &self.tables[1],
        }
    }

    /// The glyph id of `c` in `style` (0, the missing glyph, when the face has none), as
    /// printpdf looks it up.
    pub fn glyph(&self, style: Style, c: char) -> u16 {
        let code = u32::from(c);
        match self.table(style).gid.get(code as usize) {
            Some(&g) => g,
            None => self.face(style).lookup_glyph_index(code).unwrap_or(0),
        }
    }

    /// The advance width of glyph `gid` in font units (0 for a glyph the face lacks).
    pub fn glyph_advance(&self, style: Style, gid: u16) -> u16 {
        self.table(style).advance.get(usize::from(gid)).copied().unwrap_or(0)
    }

    /// The number of glyph ids of `style` that have an advance (its highest id plus one).
    pub fn glyph_count(&self, style: Style) -> usize {
        self.table(style).advance.len()
    }

    /// Width of `text` set in `style` at `size` points, in points.
    pub fn width(&self, style: Style, text: &str, size: f32) -> f32 {
        let units: u32 = text.chars().map(|c| u32::from(self.glyph_advance(style, self.glyph(style, c)))).sum();
        units as f32 * size / f32::from(self.face(style).units_per_em.max(1))
    }

    /// The first character of `text` that `style` has no glyph for (control characters
    /// included), if any.
    pub fn missing(&self, style: Style, text: &str) -> Option<char> {
        text.chars().find(|&c| c.is_control() || self.glyph(style, c) == 0)
    }

    /// The ink box of `c`'s glyph in font units (x min, y min, x max, y max), read from the
    /// face's `glyf` table; None for an empty glyph or one the face lacks.
    pub fn ink(&self, style: Style, c: char) -> Option<[i16; 4]> {
        let gid = Some(self.glyph(style, c)).filter(|&g| g != 0)?;
        let ttf = match style {
            Style::Regular => REGULAR_TTF,
            Style::Bold => BOLD_TTF,
        };
        glyph_box(ttf, gid)
    }

    /// `text` cut where combining marks follow a base letter, each mark with where to set it.
    ///
    /// printpdf does no shaping and DejaVu Sans's marks have no advance: drawn at the pen after
    /// their base, they sit where the font's designers put them for a lowercase letter of
    /// average width. Placed here instead from the glyphs' ink boxes: a mark above or below is
    /// centred on its base's ink; one above is raised by as much as the base (or the mark
    /// below it in a stack) stands above the x-height, so it clears a capital; one below is
    /// lowered by the base's descender. Marks that attach at the right (comma above right,
    /// horn, ogonek) keep their place across; the double macron below spans the next letter
    /// as designed.
    pub fn pieces(&self, style: Style, text: &str) -> Vec<Piece> {
        let mut pieces = Vec::new();
        let mut plain = String::new();
        let x_height = self.ink(style, 'x').map_or(0, |b| b[3]);
        // Round letters overshoot the x-height a little; only a base standing clearly above
        // it (a capital, an ascender, a mark below a stack) raises a mark.
        let clear = i32::from(self.face(style).units_per_em) / 20;
        // The current base's advance and ink, and the top and bottom of its stack so far.
        let mut base: Option<(i32, [i16; 4], i16, i16)> = None;
        for c in text.chars() {
            let Some(kind) = mark_kind(c) else {
                plain.push(c);
                base = self.ink(style, c).map(|b| (self.advance(style, c), b, b[3], b[1]));
                continue;
            };
            let (Some((advance, b, top, bottom)), Some(m)) = (base.as_mut(), self.ink(style, c)) else {
                plain.push(c);
                continue;
            };
            let centre = |x0: i16, x1: i16| (i32::from(x0) + i32::from(x1)) / 2;
            let (dx, rise) = match kind {
                MarkKind::Above { centred } => {
                    let dx = if centred { centre(b[0], b[2]) - *advance - centre(m[0], m[2]) } else { 0 };
                    let rise = Some(i32::from(*top) - i32::from(x_height)).filter(|&r| r > clear).unwrap_or(0);
                    *top = i16::try_from(i32::from(m[3]) + rise).unwrap_or(i16::MAX);
                    (dx, rise)
                }
                MarkKind::Below { centred } => {
                    let dx = if centred { centre(b[0], b[2]) - *advance - centre(m[0], m[2]) } else { 0 };
                    let rise = i32::from(*bottom).min(0);
                    *bottom = i16::try_from(i32::from(m[1]) + rise).unwrap_or(i16::MIN);
                    (dx, rise)
                }
                MarkKind::AsDesigned => (0, 0),
            };
            if !plain.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut plain)));
            }
            let em = f32::from(self.face(style).units_per_em.max(1));
            // Text extraction (poppler) breaks the word where the pen goes back by more than
            // 0.2 em, and the mark would read as a line of its own: a mark is moved back by less.
            let dx = (dx as f32 / em).clamp(-MAX_MARK_SHIFT, MAX_MARK_SHIFT);
            pieces.push(Piece::Mark { mark: c, dx, rise: rise as f32 / em });
        }
        if !plain.is_empty() || pieces.is_empty() {
            pieces.push(Piece::Text(plain));
        }
        pieces
    }

    fn advance(&self, style: Style, c: char) -> i32 {
        i32::from(self.glyph_advance(style, self.glyph(style, c)))
    }

    /// `text` broken into lines no wider than `max` points, at spaces; a word wider than a
    /// line is broken between characters. Never returns an empty list.
    pub fn wrap(&self, style: Style, text: &str, size: f32, max: f32) -> Vec<String> {
        let mut lines = Vec::new();
        let mut line = String::new();
        for word in text.split_whitespace() {
            let candidate = if line.is_empty() { word.to_owned() } else { format!("{line} {word}") };
            if self.width(style, &candidate, size) <= max {
                line = candidate;
                continue;
            }
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            // The word alone: break it between characters while it is too wide.
            let mut rest = word;
            while self.width(style, rest, size) > max {
                let mut cut = 0;
                for (i, c) in rest.char_indices() {
                    let end = i + c.len_utf8();
                    if self.width(style, &rest[..end], size) > max {
                        break;
                    }
                    cut = end;
                }
                if cut == 0 {
                    // Not even one character fits: put it on its own line.
                    cut = rest.chars().next().map_or(rest.len(), char::len_utf8);
                }
                lines.push(rest[..cut].to_owned());
                rest = &rest[cut..];
            }
            line = rest.to_owned();
        }
        if !line.is_empty() || lines.is_empty() {
            lines.push(line);
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn has_the_german_and_din_91379_letters_we_print() {
        let fonts = Fonts::get().expect("fonts");
        for style in [Style::Regular, Style::Bold] {
            assert_eq!(fonts.missing(style, "ÄÖÜäöüßẞ ŁłȘșŽžĆć € – · §"), None);
        }
        assert_eq!(fonts.missing(Style::Regular, "a\u{7}"), Some('\u{7}'));
    }

    #[test]
    fn measures_with_advance_widths() {
        let fonts = Fonts::get().expect("fonts");
        let w1 = fonts.width(Style::Regular, "0", 10.0);
        // DejaVu Sans digits are 1303/2048 em.
        assert!((w1 - 1303.0 * 10.0 / 2048.0).abs() < 0.01, "{w1}");
        assert!((fonts.width(Style::Regular, "0000", 10.0) - 4.0 * w1).abs() < 0.01);
        assert!(fonts.width(Style::Bold, "Wm", 10.0) > fonts.width(Style::Regular, "Wm", 10.0));
    }

    /// The combining marks of DIN 91379's sequences.
    const DIN_91379_MARKS: [char; 20] = [
        '\u{300}', '\u{301}', '\u{302}', '\u{304}', '\u{306}', '\u{307}', '\u{308}', '\u{30B}', '\u{30C}', '\u{30D}',
        '\u{310}', '\u{315}', '\u{31B}', '\u{323}', '\u{325}', '\u{326}', '\u{327}', '\u{328}', '\u{331}', '\u{35F}',
    ];

    #[test]
    fn combining_marks_take_no_advance() {
        // The PDF viewer advances by the font's own widths (printpdf writes them into /W), so
        // a mark measures zero here exactly when it is set over its base there.
        let fonts = Fonts::get().expect("fonts");
        for style in [Style::Regular, Style::Bold] {
            for mark in DIN_91379_MARKS {
                assert_eq!(fonts.missing(style, &mark.to_string()), None, "U+{:04X}", u32::from(mark));
                assert_eq!(fonts.width(style, &mark.to_string(), 10.0), 0.0, "U+{:04X}", u32::from(mark));
            }
            let c = fonts.width(style, "C", 10.0);
            assert_eq!(fonts.width(style, "C\u{328}\u{306}", 10.0), c);
            assert_eq!(fonts.width(style, "K\u{35F}H", 10.0), fonts.width(style, "K", 10.0) + fonts.width(style, "H", 10.0));
        }
    }

    #[test]
    fn combining_marks_are_placed_on_their_base() {
        let fonts = Fonts::get().expect("fonts");
        let mark = |text: &str| -> Vec<(char, f32, f32)> {
            fonts.pieces(Style::Regular, text).into_iter().filter_map(|p| if let Piece::Mark { mark, dx, rise } = p { Some((mark, dx, rise)) } else { None }).collect()
        };
        assert_eq!(fonts.pieces(Style::Regular, "Łódź"), vec![Piece::Text("Łódź".into())]);
        // Above a capital: raised clear of it; above a lowercase letter: where designed.
        let [(_, _, capital)] = mark("D\u{302}")[..] else { panic!("one mark") };
        assert!(capital > 0.15, "{capital}");
        let [(_, dx, lower)] = mark("m\u{302}")[..] else { panic!("one mark") };
        assert_eq!(lower, 0.0);
        assert!((-MAX_MARK_SHIFT..0.0).contains(&dx), "centred back over the wide m: {dx}");
        // A stack: the ring below stays, the macron above clears the L's stem.
        let stack = mark("L\u{325}\u{304}");
        assert_eq!(stack.len(), 2);
        assert_eq!(stack[0].2, 0.0);
        assert!(stack[1].2 > 0.15, "{stack:?}");
        // The double macron below spans K and H as designed; a mark with no base stays put.
        assert_eq!(mark("K\u{35F}H"), vec![('\u{35F}', 0.0, 0.0)]);
        assert_eq!(fonts.pieces(Style::Regular, "\u{301}a"), vec![Piece::Text("\u{301}a".into())]);
    }

    #[test]
    fn wraps_at_spaces_and_breaks_long_words() {
        let fonts = Fonts::get().expect("fonts");
        let max = fonts.width(Style::Regular, "aaaa aaaa", 10.0) + 0.1;
        assert_eq!(fonts.wrap(Style::Regular, "aaaa aaaa aaaa", 10.0, max), vec!["aaaa aaaa", "aaaa"]);
        let long = fonts.wrap(Style::Regular, "aaaaaaaaaaaaaaaaaaaa", 10.0, max);
        assert!(long.len() > 1 && long.iter().all(|l| fonts.width(Style::Regular, l, 10.0) <= max));
        assert_eq!(fonts.wrap(Style::Regular, "", 10.0, max), vec![String::new()]);
    }
}
