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
                Some(Fonts { regular, bold })
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

    /// Width of `text` set in `style` at `size` points, in points.
    pub fn width(&self, style: Style, text: &str, size: f32) -> f32 {
        let face = self.face(style);
        let units: u32 = text
            .chars()
            .map(|c| {
                let gid = face.lookup_glyph_index(u32::from(c)).unwrap_or(0);
                u32::from(face.get_glyph_width(gid).unwrap_or(0))
            })
            .sum();
        units as f32 * size / f32::from(face.units_per_em.max(1))
    }

    /// The first character of `text` that `style` has no glyph for (control characters
    /// included), if any.
    pub fn missing(&self, style: Style, text: &str) -> Option<char> {
        let face = self.face(style);
        text.chars().find(|&c| c.is_control() || face.lookup_glyph_index(u32::from(c)).is_none_or(|g| g == 0))
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
    fn wraps_at_spaces_and_breaks_long_words() {
        let fonts = Fonts::get().expect("fonts");
        let max = fonts.width(Style::Regular, "aaaa aaaa", 10.0) + 0.1;
        assert_eq!(fonts.wrap(Style::Regular, "aaaa aaaa aaaa", 10.0, max), vec!["aaaa aaaa", "aaaa"]);
        let long = fonts.wrap(Style::Regular, "aaaaaaaaaaaaaaaaaaaa", 10.0, max);
        assert!(long.len() > 1 && long.iter().all(|l| fonts.width(Style::Regular, l, 10.0) <= max));
        assert_eq!(fonts.wrap(Style::Regular, "", 10.0, max), vec![String::new()]);
    }
}
