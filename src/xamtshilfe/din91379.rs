//! DIN 91379 (the characters of names and data exchange in German public administration,
//! which XÖV standards require): which characters each data type admits, and the check of a
//! value against its type.
//!
//! The data is the shipped list `schemas/din91379/latin_list_1.3.txt` (CC BY 4.0, licence in
//! `schemas/din91379/LICENSE.md`), compiled in and read once into sorted tables. A value is
//! valid when it splits, longest match first, into permitted characters and sequences (a
//! base letter with combining marks that together count as one character) of its type.
//! Values are checked in NFC, as the reader stores them.

use std::sync::OnceLock;

/// The data types of DIN 91379 that messages use; each admits everything the one before does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DinType {
    /// Names of natural persons: Latin letters (bll) and the non-letters N1 (bnlreq).
    A,
    /// Names of legal persons, streets, places, identifiers: A and the non-letters N2 (bnl).
    B,
    /// Free text: B and the non-letters N3 and N4 (bnlopt, bnlnot: tab, line breaks, …).
    C,
}

impl DinType {
    /// What values of this type are, for reasons.
    pub fn describe(self) -> &'static str {
        match self {
            DinType::A => "names of persons (DIN 91379 type A)",
            DinType::B => "names, addresses and identifiers (DIN 91379 type B)",
            DinType::C => "free text (DIN 91379 type C)",
        }
    }

    /// The type a group of the list belongs to; `None` for the combining diacritics (only
    /// inside sequences) and the extended groups (Greek, Cyrillic, E1: types D and E).
    pub fn of_group(group: &str) -> Option<DinType> {
        match group {
            "bll" | "bnlreq" => Some(DinType::A),
            "bnl" => Some(DinType::B),
            "bnlopt" | "bnlnot" => Some(DinType::C),
            _ => None,
        }
    }
}

/// The shipped list, one entry a line: `group; char|seq; code points; name; glyph…`.
pub const LIST: &str = include_str!("../../schemas/din91379/latin_list_1.3.txt");

/// The permitted characters and sequences, by the smallest type that admits them.
#[derive(Debug)]
pub struct Table {
    /// Single characters, sorted by code point.
    pub chars: Vec<(char, DinType)>,
    /// Sequences (base and combining marks), sorted by their text.
    pub sequences: Vec<(String, DinType)>,
    /// Type of each ASCII character (`None`: not permitted), for the common case.
    ascii: [Option<DinType>; 128],
}

/// One entry of the list: its group and its code points (the entry's first columns).
pub fn parse_line(line: &str) -> Option<(&str, Vec<char>)> {
    let mut cols = line.split(';').map(str::trim);
    let group = cols.next()?;
    let _kind = cols.next()?;
    let points = cols.next()?;
    let chars = points.split_whitespace().map(|hex| u32::from_str_radix(hex, 16).ok().and_then(char::from_u32)).collect::<Option<Vec<char>>>()?;
    (!group.is_empty() && !chars.is_empty()).then_some((group, chars))
}

impl Table {
    /// Builds the table from a list in the shipped format.
    pub fn from_list(list: &str) -> Table {
        let mut chars = Vec::new();
        let mut sequences = Vec::new();
        for (group, points) in list.lines().filter_map(parse_line) {
            let Some(ty) = DinType::of_group(group) else { continue };
            match points.as_slice() {
                [single] => chars.push((*single, ty)),
                _ => sequences.push((points.iter().collect::<String>(), ty)),
            }
        }
        chars.sort_unstable();
        chars.dedup_by_key(|(c, _)| *c);
        sequences.sort_unstable();
        let mut ascii = [None; 128];
        for &(c, ty) in &chars {
            if c.is_ascii() {
                ascii[c as usize] = Some(ty);
            }
        }
        Table { chars, sequences, ascii }
    }

    /// The table of the shipped list, built on first use.
    pub fn get() -> &'static Table {
        static TABLE: OnceLock<Table> = OnceLock::new();
        TABLE.get_or_init(|| Table::from_list(LIST))
    }

    fn char_type(&self, c: char) -> Option<DinType> {
        if c.is_ascii() {
            return self.ascii[c as usize];
        }
        self.chars.binary_search_by_key(&c, |(ch, _)| *ch).ok().map(|i| self.chars[i].1)
    }

    /// The longest permitted sequence at the start of `rest`, when one starts with `base`:
    /// its length in bytes and its type.
    fn sequence_at(&self, rest: &str, base: char) -> Option<(usize, DinType)> {
        let mut buf = [0u8; 4];
        let base = base.encode_utf8(&mut buf);
        let from = self.sequences.partition_point(|(s, _)| s.as_str() < &*base);
        self.sequences[from..]
            .iter()
            .take_while(|(s, _)| s.starts_with(&*base))
            .filter(|(s, _)| rest.starts_with(s.as_str()))
            .map(|(s, ty)| (s.len(), *ty))
            .max_by_key(|(len, _)| *len)
    }

    /// The first code point of `value` that its type does not admit (`value` in NFC).
    pub fn first_disallowed(&self, value: &str, ty: DinType) -> Option<u32> {
        let allowed = |t: Option<DinType>| t.is_some_and(|t| t <= ty);
        if value.is_ascii() {
            return value.bytes().find(|&b| !allowed(self.ascii[b as usize])).map(u32::from);
        }
        let mut rest = value;
        while let Some(c) = rest.chars().next() {
            // A sequence only where the next character is not ASCII (a combining mark).
            let next_is_mark = rest[c.len_utf8()..].chars().next().is_some_and(|n| !n.is_ascii());
            if next_is_mark && let Some((len, t)) = self.sequence_at(rest, c) {
                if t > ty {
                    return Some(u32::from(c));
                }
                rest = &rest[len..];
                continue;
            }
            if !allowed(self.char_type(c)) {
                return Some(u32::from(c));
            }
            rest = &rest[c.len_utf8()..];
        }
        None
    }
}

/// The first code point of `value` (in NFC) that DIN 91379 type `ty` does not admit.
pub fn first_disallowed(value: &str, ty: DinType) -> Option<u32> {
    Table::get().first_disallowed(value, ty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_admit_what_they_should() {
        assert_eq!(first_disallowed("Erika Mustermann-Özdemir d'Alembert", DinType::A), None);
        assert_eq!(first_disallowed("Müller 2", DinType::A), Some(u32::from('2')));
        assert_eq!(first_disallowed("Hohe Straße 12a", DinType::B), None);
        assert_eq!(first_disallowed("Zeile 1\nZeile 2\t½", DinType::B), Some(0x0A));
        assert_eq!(first_disallowed("Zeile 1\nZeile 2\t½", DinType::C), None);
        // Right-to-left override, zero-width space, Cyrillic, emoji: refused everywhere.
        for bad in ['\u{202E}', '\u{200B}', 'Ж', '😀', '\u{FEFF}'] {
            assert_eq!(first_disallowed(&format!("Anna{bad}"), DinType::C), Some(u32::from(bad)), "{bad:?}");
        }
        // A listed sequence counts as one character; a mark after a letter it does not go
        // with is refused by the mark's code point.
        assert_eq!(first_disallowed("C\u{0300}ristina", DinType::A), None);
        assert_eq!(first_disallowed("X\u{0300}", DinType::A), Some(0x0300));
        assert_eq!(first_disallowed("\u{0301}", DinType::C), Some(0x0301));
    }
}
