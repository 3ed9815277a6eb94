//! The inserter's marks on every sheet of a letter: the OMR code in the left strip
//! ([`letter::OMR_STRIP`]) and the DataMatrix in the bottom-right corner ([`letter::CODE_AREA`]).
//! Owns what the marks say ([`omr`], [`code_text`]) as pure functions, and drawing them into
//! a page's content ([`draw`]).
//!
//! Letters are printed simplex: a sheet is a page, and "sheet n of m" counts the pages of one
//! letter. The inserter reads the OMR code to collate (it closes the envelope after the sheet
//! that says so, and stops when the sequence skips or the parity is wrong); the DataMatrix
//! names the batch, the letter and the sheet, so the print centre's camera can stop on a
//! mixed-up sheet and the feedback can prove every letter went out.
//!
//! # OMR code
//! Horizontal bars, [`OMR_THICKNESS`] thick, from [`OMR_LEFT`] to [`OMR_RIGHT`] mm from the
//! left edge, on the tracks of [`OMR_TRACKS`] one sixth of an inch ([`OMR_PITCH`]) apart,
//! starting [`OMR_FIRST`] mm from the top (below the hole mark, inside the OMR strip). A track
//! with a bar reads 1:
//!
//! | track | mark | bar when |
//! |---|---|---|
//! | 0 | start | always (the reading gate opens on it) |
//! | 1 | close envelope | the last sheet of the letter |
//! | 2, 3, 4 | sequence, bits 2, 1, 0 | the sheet number n (1-based) mod 8 in binary |
//! | 5 | parity | needed to make the number of bars on the sheet **even** |
//!
//! # DataMatrix
//! ECC 200, square, printable ASCII ([`code_text`]): `<batch id>;L<letter number, 5 digits or
//! more>;S<n>/<m>`, e.g. `B20261201;L00042;S1/2`. Modules are [`MODULE`] mm squares (filled
//! rectangles, one per horizontal run), the symbol's bottom-right corner at
//! [`CODE_RIGHT`] × [`CODE_BOTTOM`]; the code area around it is kept empty, which leaves at least
//! [`QUIET_ZONE`] modules of quiet zone on every side.
//!
//! Nothing here carries debtor data: the marks hold only numbers and the batch id.

use datamatrix::{DataMatrix, SymbolList};
use super::letter::{CODE_AREA, OMR_STRIP, pt_x, pt_y};
use super::pdf::Content;

/// One sixth of an inch, the usual OMR track pitch.
pub const OMR_PITCH: f32 = 25.4 / 6.0;
/// The first track (start mark), mm from the top.
pub const OMR_FIRST: f32 = 160.0;
/// Bars run from here to [`OMR_RIGHT`], mm from the left edge.
pub const OMR_LEFT: f32 = 5.0;
pub const OMR_RIGHT: f32 = 13.0;
/// Bar thickness in mm.
pub const OMR_THICKNESS: f32 = 0.4;

/// What a track means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Track {
    Start,
    CloseEnvelope,
    /// A bit of the sheet sequence: 2 (most significant), 1, 0.
    Sequence(u8),
    Parity,
}

/// The tracks top to bottom: their meaning and the centre line of their bar, mm from the top.
pub const OMR_TRACKS: [(Track, f32); 6] = [
    (Track::Start, OMR_FIRST),
    (Track::CloseEnvelope, OMR_FIRST + OMR_PITCH),
    (Track::Sequence(2), OMR_FIRST + 2.0 * OMR_PITCH),
    (Track::Sequence(1), OMR_FIRST + 3.0 * OMR_PITCH),
    (Track::Sequence(0), OMR_FIRST + 4.0 * OMR_PITCH),
    (Track::Parity, OMR_FIRST + 5.0 * OMR_PITCH),
];

/// DataMatrix module size in mm.
pub const MODULE: f32 = 0.6;
/// The symbol's right and bottom edges, mm from the left and top.
pub const CODE_RIGHT: f32 = 198.0;
pub const CODE_BOTTOM: f32 = 290.0;
/// Quiet zone in modules, kept free on every side (checked against the code area).
pub const QUIET_ZONE: f32 = 3.0;

const _: () = {
    assert!(OMR_LEFT >= OMR_STRIP.left && OMR_RIGHT <= OMR_STRIP.right);
    assert!(OMR_TRACKS[0].1 - OMR_THICKNESS > OMR_STRIP.top);
    assert!(OMR_TRACKS[5].1 + OMR_THICKNESS < OMR_STRIP.bottom);
    assert!(CODE_RIGHT + QUIET_ZONE * MODULE <= CODE_AREA.right && CODE_BOTTOM + QUIET_ZONE * MODULE <= CODE_AREA.bottom);
};

/// Why the marks could not be made. Carries no value of the letter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MarkError {
    #[error("sheet {sheet} of {sheets} is not a sheet of the letter")]
    Sheet { sheet: u32, sheets: u32 },
    #[error("the batch id must be printable ASCII without ';' for the DataMatrix")]
    BatchId,
    #[error("the DataMatrix text does not fit a symbol")]
    TooLong,
    #[error("the DataMatrix does not fit the code area at {MODULE} mm a module")]
    TooLarge,
}

/// The OMR bars of sheet `sheet` (1-based) of a letter of `sheets`, in the order of
/// [`OMR_TRACKS`]: `true` where a bar is printed.
pub fn omr(sheet: u32, sheets: u32) -> Result<[bool; 6], MarkError> {
    if sheet == 0 || sheet > sheets {
        return Err(MarkError::Sheet { sheet, sheets });
    }
    let seq = sheet % 8;
    let mut bars = [true, sheet == sheets, seq & 4 != 0, seq & 2 != 0, seq & 1 != 0, false];
    // Even parity: the parity bar makes the number of bars even.
    bars[5] = bars.iter().filter(|&&b| b).count() % 2 == 1;
    Ok(bars)
}

/// The DataMatrix text of a sheet: `<batch id>;L<letter number>;S<n>/<m>`, the letter number
/// at least five digits.
pub fn code_text(batch_id: &str, letter_number: u32, sheet: u32, sheets: u32) -> Result<String, MarkError> {
    if sheet == 0 || sheet > sheets {
        return Err(MarkError::Sheet { sheet, sheets });
    }
    if batch_id.is_empty() || !batch_id.bytes().all(|b| b.is_ascii_graphic() && b != b';') {
        return Err(MarkError::BatchId);
    }
    Ok(format!("{batch_id};L{letter_number:05};S{sheet}/{sheets}"))
}

/// A row of a symbol: its dark modules as horizontal runs (first column, length).
type Runs = Vec<(usize, usize)>;

/// The symbol of `text`: its width in modules and its rows.
fn symbol(text: &str) -> Result<(usize, Vec<Runs>), MarkError> {
    let code = DataMatrix::encode(text.as_bytes(), SymbolList::default().enforce_square()).map_err(|_| MarkError::TooLong)?;
    let bitmap = code.bitmap();
    let (width, height) = (bitmap.width(), bitmap.height());
    let mut rows = vec![Vec::new(); height];
    for (x, y) in bitmap.pixels() {
        let row: &mut Runs = &mut rows[y];
        match row.last_mut() {
            Some((start, len)) if *start + *len == x => *len += 1,
            _ => row.push((x, 1)),
        }
    }
    Ok((width, rows))
}

/// A filled rectangle, in mm from the top-left corner.
fn filled(page: &mut Content, left: f32, top: f32, width: f32, height: f32) {
    page.fill_rect(pt_x(left).0, pt_y(top + height).0, width * 72.0 / 25.4, height * 72.0 / 25.4);
}

/// The OMR bars and the DataMatrix of sheet `sheet` of `sheets` of letter `letter_number`.
pub fn draw(page: &mut Content, batch_id: &str, letter_number: u32, sheet: u32, sheets: u32) -> Result<(), MarkError> {
    let bars = omr(sheet, sheets)?;
    let text = code_text(batch_id, letter_number, sheet, sheets)?;
    let (width, rows) = symbol(&text)?;
    let size = width as f32 * MODULE;
    let (left, top) = (CODE_RIGHT - size, CODE_BOTTOM - rows.len() as f32 * MODULE);
    if left - QUIET_ZONE * MODULE < CODE_AREA.left || top - QUIET_ZONE * MODULE < CODE_AREA.top {
        return Err(MarkError::TooLarge);
    }
    page.save();
    page.fill_grey(0.0);
    for ((_, y), _) in OMR_TRACKS.iter().zip(bars).filter(|(_, bar)| *bar) {
        filled(page, OMR_LEFT, y - OMR_THICKNESS / 2.0, OMR_RIGHT - OMR_LEFT, OMR_THICKNESS);
    }
    for (y, runs) in rows.iter().enumerate() {
        for &(x, len) in runs {
            filled(page, left + x as f32 * MODULE, top + y as f32 * MODULE, len as f32 * MODULE, MODULE);
        }
    }
    page.restore();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bars(sheet: u32, sheets: u32) -> String {
        omr(sheet, sheets).expect("a sheet").iter().map(|&b| if b { '1' } else { '0' }).collect()
    }

    #[test]
    fn omr_pattern_of_each_sheet() {
        // start, close, seq 4-2-1, parity (even).
        assert_eq!(bars(1, 1), "110011");
        assert_eq!(bars(1, 2), "100010");
        assert_eq!(bars(2, 2), "110101");
        assert_eq!(bars(3, 9), "100111");
        assert_eq!(bars(7, 9), "101110");
        assert_eq!(bars(8, 9), "100001", "the sequence wraps at 8");
        assert_eq!(bars(9, 9), "110011");
        for sheets in 1..20 {
            for sheet in 1..=sheets {
                let b = omr(sheet, sheets).expect("a sheet");
                assert!(b[0], "always a start mark");
                assert_eq!(b[1], sheet == sheets, "close on the last sheet only");
                assert_eq!(b.iter().filter(|&&x| x).count() % 2, 0, "even parity");
                assert_eq!(u32::from(b[2]) * 4 + u32::from(b[3]) * 2 + u32::from(b[4]), sheet % 8);
            }
        }
        assert_eq!(omr(0, 1), Err(MarkError::Sheet { sheet: 0, sheets: 1 }));
        assert_eq!(omr(3, 2), Err(MarkError::Sheet { sheet: 3, sheets: 2 }));
    }

    #[test]
    fn tracks_are_a_sixth_of_an_inch_apart() {
        for pair in OMR_TRACKS.windows(2) {
            assert!((pair[1].1 - pair[0].1 - 4.2333).abs() < 0.001);
        }
    }

    #[test]
    fn code_text_names_batch_letter_and_sheet() {
        assert_eq!(code_text("B20261201", 42, 1, 2).expect("text"), "B20261201;L00042;S1/2");
        assert_eq!(code_text("B20261201", 1234567, 3, 3).expect("text"), "B20261201;L1234567;S3/3");
        assert_eq!(code_text("B;1", 1, 1, 1), Err(MarkError::BatchId));
        assert_eq!(code_text("Bä", 1, 1, 1), Err(MarkError::BatchId));
        assert_eq!(code_text("B", 1, 2, 1), Err(MarkError::Sheet { sheet: 2, sheets: 1 }));
    }

    #[test]
    fn the_symbol_fits_the_code_area_for_large_numbers() {
        let mut ops = Content::new();
        draw(&mut ops, "B20261201", u32::MAX, 999, 999).expect("fits");
        let (width, rows) = symbol("B20261201;L4294967295;S999/999").expect("a symbol");
        assert_eq!(rows.len(), width, "square");
        assert!(width as f32 * MODULE >= 10.0, "{width} modules");
        assert_eq!(draw(&mut ops, "B".repeat(200).as_str(), 1, 1, 1), Err(MarkError::TooLarge));
    }
}
