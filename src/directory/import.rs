//! Reading the directory files, building a [`Directory`] from them, and keeping them under
//! `<data_dir>/directory/`.
//!
//! Files (UTF-8, an optional BOM is skipped, `;`-separated; a header line with `,` switches
//! to `,`; fields may be quoted with `"…"` and `""` inside, but not span lines):
//! - `authorities.csv`: `kennung;name;strasse;hausnummer;plz;ort;email;kanal;xta_reader;xta_service;tenant`
//! - `jurisdictions.csv`: `schluessel;einnahmeart;kennung;gueltig_ab;gueltig_bis`
//!   (dates `YYYY-MM-DD` or `DD.MM.YYYY`, empty = open, both inclusive)
//! - `streets.csv` (OpenPLZ): `Name;PostalCode;Locality;RegionalKey;Borough;Suburb`
//! - GV100AD (Destatis, fixed width; UTF-8 or, when not valid UTF-8, ISO-8859-1). Only
//!   record type `60` (municipality) is read. The spec's positions "AGS 10–18, Verband 18–22,
//!   name 22–72, PLZ 165–170" are read as 0-based, end-exclusive character offsets, which is
//!   the same as Destatis' 1-based inclusive columns 11–18 (8-digit AGS), 19–22 (4-digit
//!   Verband), 23–72 (50 characters of name) and 166–170 (PLZ of the seat). Read 1-based
//!   inclusive, "10–18" would be 9 characters and could not be an 8-digit AGS. Errors name
//!   the 1-based column.
//!
//! Errors name file, line and column (the 1-based field number and the header name; for
//! GV100AD the character column). Nothing is stored or swapped unless every file is valid.
//!
//! Storage: each import is written to a fresh `gen-<time>` folder under
//! `<data_dir>/directory/` (files written, synced, folder renamed into place), then the
//! one-line file `CURRENT` naming it is replaced by write-to-temp + rename. Readers follow
//! `CURRENT`; the previous generation is kept (a reader may still be opening it), older ones
//! are removed.

use std::borrow::Cow;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;

use super::{Authority, Cands, Directory, Ebene, FxMap, MULTI, Municipality, Rule, normalize_place, normalize_street};
use crate::xamtshilfe::{Anschrift, Kanal};

/// A bad input: which file, line and column, and why.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{file}:{line}: column {column} ({field}): {message}")]
    Row { file: String, line: usize, column: usize, field: String, message: String },
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
}

impl ImportError {
    /// Whether the input was at fault (as opposed to reading or writing files).
    pub fn is_data_error(&self) -> bool {
        matches!(self, ImportError::Row { .. })
    }
}

/// The files of one import.
#[derive(Debug, Clone, Default)]
pub struct ImportSources {
    pub authorities: PathBuf,
    pub jurisdictions: PathBuf,
    pub streets: Option<PathBuf>,
    pub gv100: Option<PathBuf>,
}

/// What an import loaded, and what looked odd.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportSummary {
    pub authorities: usize,
    pub tenants: usize,
    pub rules: usize,
    /// Rows of the street file.
    pub streets: usize,
    /// Distinct (street, PLZ, Ort) keys.
    pub street_keys: usize,
    /// Street keys naming more than one municipality (lookups answer "ambiguous").
    pub ambiguous_streets: usize,
    pub municipalities: usize,
    pub postcodes: usize,
    /// Where the data was stored (None for in-memory builds).
    pub stored_in: Option<PathBuf>,
    pub warnings: Vec<String>,
}

impl fmt::Display for ImportSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} authorities ({} tenants), {} rules, {} street rows ({} keys, {} ambiguous), {} municipalities, {} postcodes",
            self.authorities,
            self.tenants,
            self.rules,
            self.streets,
            self.street_keys,
            self.ambiguous_streets,
            self.municipalities,
            self.postcodes
        )?;
        if let Some(dir) = &self.stored_in {
            write!(f, "; stored in {}", dir.display())?;
        }
        for w in &self.warnings {
            write!(f, "\nwarning: {w}")?;
        }
        Ok(())
    }
}

/// One input file's text with the name errors use.
pub(crate) struct Text {
    pub label: String,
    pub body: String,
}

pub(crate) struct Texts {
    pub authorities: Text,
    pub jurisdictions: Text,
    pub streets: Option<Text>,
    pub gv100: Option<Text>,
}

const AUTHORITIES_HEADER: &[&str] = &[
    "kennung",
    "name",
    "strasse",
    "hausnummer",
    "plz",
    "ort",
    "email",
    "kanal",
    "xta_reader",
    "xta_service",
    "tenant",
];
const JURISDICTIONS_HEADER: &[&str] = &["schluessel", "einnahmeart", "kennung", "gueltig_ab", "gueltig_bis"];
const STREETS_HEADER: &[&str] = &["Name", "PostalCode", "Locality", "RegionalKey", "Borough", "Suburb"];

const PROGRESS_EVERY: usize = 100_000;

fn io_err(path: &Path, source: std::io::Error) -> ImportError {
    ImportError::Io { file: path.display().to_string(), source }
}

fn row_err(file: &str, line: usize, column: usize, field: &str, message: impl Into<String>) -> ImportError {
    ImportError::Row { file: file.to_string(), line, column, field: field.to_string(), message: message.into() }
}

/// Reads a file as UTF-8 (BOM skipped). With `latin1`, text that is not valid UTF-8 is read
/// as ISO-8859-1 instead of being an error.
fn read_text(path: &Path, latin1: bool) -> Result<Text, ImportError> {
    let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
    let label = path.display().to_string();
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").map(<[u8]>::to_vec).unwrap_or(bytes);
    match String::from_utf8(bytes) {
        Ok(body) => Ok(Text { label, body }),
        Err(e) if latin1 => Ok(Text { label, body: e.into_bytes().iter().map(|&b| b as char).collect() }),
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let bytes = e.as_bytes();
            let line = bytes[..valid].iter().filter(|&&b| b == b'\n').count() + 1;
            let line_start = bytes[..valid].iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
            Err(row_err(&label, line, valid - line_start + 1, "-", "not valid UTF-8"))
        }
    }
}

/// Splits one line into fields (see the module doc). Error: (1-based field number, message).
fn split<'a>(line: &'a str, delim: char, out: &mut Vec<Cow<'a, str>>) -> Result<(), (usize, String)> {
    out.clear();
    if !line.contains('"') {
        out.extend(line.split(delim).map(|f| Cow::Borrowed(f.trim())));
        return Ok(());
    }
    let mut rest = line;
    loop {
        let col = out.len() + 1;
        let trimmed = rest.trim_start();
        if let Some(q) = trimmed.strip_prefix('"') {
            let mut field = String::new();
            let mut chars = q.char_indices();
            let after;
            loop {
                match chars.next() {
                    None => return Err((col, "unterminated quote (fields may not span lines)".into())),
                    Some((i, '"')) => {
                        if q[i + 1..].starts_with('"') {
                            field.push('"');
                            chars.next();
                        } else {
                            after = &q[i + 1..];
                            break;
                        }
                    }
                    Some((_, c)) => field.push(c),
                }
            }
            out.push(Cow::Owned(field));
            let after = after.trim_start();
            if after.is_empty() {
                return Ok(());
            }
            match after.strip_prefix(delim) {
                Some(r) => rest = r,
                None => return Err((col, "text after the closing quote".into())),
            }
        } else {
            match rest.find(delim) {
                Some(p) => {
                    out.push(Cow::Borrowed(rest[..p].trim()));
                    rest = &rest[p + delim.len_utf8()..];
                }
                None => {
                    out.push(Cow::Borrowed(rest.trim()));
                    return Ok(());
                }
            }
        }
    }
}

/// Runs `row` over the data lines of a CSV text after checking its header. `row` gets the
/// line number and the fields and returns (1-based column, message) on error.
fn parse_csv<'a>(
    text: &'a Text,
    header: &[&str],
    progress: &mut dyn FnMut(&str),
    mut row: impl FnMut(usize, &[Cow<'a, str>]) -> Result<(), (usize, String)>,
) -> Result<usize, ImportError> {
    let file = text.label.as_str();
    let mut lines = text.body.split('\n').enumerate();
    let first = lines.next().map(|(_, l)| l.trim_end_matches('\r')).unwrap_or("");
    let delim = if first.contains(';') || !first.contains(',') { ';' } else { ',' };
    let mut fields = Vec::with_capacity(header.len() + 1);
    split(first, delim, &mut fields).map_err(|(c, m)| row_err(file, 1, c, "header", m))?;
    for (i, want) in header.iter().enumerate() {
        match fields.get(i) {
            Some(got) if got.eq_ignore_ascii_case(want) => {}
            Some(got) => {
                return Err(row_err(file, 1, i + 1, want, format!("header should be {want:?}, found {got:?}")));
            }
            None => return Err(row_err(file, 1, i + 1, want, format!("header {want:?} missing"))),
        }
    }
    if fields.len() > header.len() {
        return Err(row_err(
            file,
            1,
            header.len() + 1,
            "header",
            format!("unexpected column {:?}", fields[header.len()]),
        ));
    }
    let mut count = 0;
    for (i, line) in lines {
        let line_no = i + 1;
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let field_name = |c: usize| header.get(c.wrapping_sub(1)).copied().unwrap_or("-");
        split(line, delim, &mut fields).map_err(|(c, m)| row_err(file, line_no, c, field_name(c), m))?;
        if fields.len() < header.len() {
            let c = fields.len() + 1;
            return Err(row_err(
                file,
                line_no,
                c,
                field_name(c),
                format!("missing: expected {} fields, found {}", header.len(), fields.len()),
            ));
        }
        if fields.len() > header.len() {
            return Err(row_err(
                file,
                line_no,
                header.len() + 1,
                "-",
                format!("expected {} fields, found {}", header.len(), fields.len()),
            ));
        }
        row(line_no, &fields).map_err(|(c, m)| row_err(file, line_no, c, field_name(c), m))?;
        count += 1;
        if count % PROGRESS_EVERY == 0 {
            progress(&format!("{file}: {count} rows"));
        }
    }
    Ok(count)
}

fn digits(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_digit())
}

fn opt(s: &str) -> Option<String> {
    if s.is_empty() { None } else { Some(s.to_string()) }
}

fn parse_date(s: &str) -> Result<Option<NaiveDate>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .or_else(|_| NaiveDate::parse_from_str(s, "%d.%m.%Y"))
        .map(Some)
        .map_err(|_| format!("{s:?} is not a date (YYYY-MM-DD or DD.MM.YYYY)"))
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "" | "0" | "false" | "no" | "nein" | "n" => Ok(false),
        "1" | "true" | "yes" | "ja" | "j" | "x" | "y" => Ok(true),
        _ => Err(format!("{s:?} is not a yes/no value (1/0, true/false, ja/nein, x or empty)")),
    }
}

/// Collects (key, municipality) pairs and turns them into key → set maps.
#[derive(Default)]
struct Builder {
    municipalities: Vec<Municipality>,
    by_ars: FxMap<String, u32>,
    street_names: FxMap<Box<str>, u32>,
    ort_names: FxMap<Box<str>, u32>,
    places: FxMap<u64, u32>,
    place_pairs: Vec<(u32, u32)>,
    street_pairs: Vec<(u64, u32)>,
    plz_pairs: Vec<(u32, u32)>,
    /// first original spelling per street id, for warnings only
    street_display: Vec<Box<str>>,
}

impl Builder {
    fn muni(&mut self, ars: &str, name: &str, name_is_official: bool) -> u32 {
        if let Some(&i) = self.by_ars.get(ars) {
            if name_is_official {
                self.municipalities[i as usize].name = name.to_string();
            }
            return i;
        }
        let i = self.municipalities.len() as u32;
        let ags = format!("{}{}", &ars[..5], &ars[9..]);
        self.municipalities.push(Municipality { ars: ars.to_string(), ags, name: name.to_string() });
        self.by_ars.insert(ars.to_string(), i);
        i
    }

    fn intern(map: &mut FxMap<Box<str>, u32>, key: String) -> u32 {
        let n = map.len() as u32;
        *map.entry(key.into_boxed_str()).or_insert(n)
    }

    fn place(&mut self, plz: u32, ort: &str) -> u32 {
        let o = Self::intern(&mut self.ort_names, normalize_place(ort));
        let n = self.places.len() as u32;
        *self.places.entry((plz as u64) << 32 | o as u64).or_insert(n)
    }

    fn add_place(&mut self, plz: u32, ort: &str, m: u32) -> u32 {
        let p = self.place(plz, ort);
        self.place_pairs.push((p, m));
        self.plz_pairs.push((plz, m));
        p
    }

    fn add_street(&mut self, name: &str, plz: u32, locality: &str, m: u32) {
        let p = self.add_place(plz, locality, m);
        let key = normalize_street(name);
        let before = self.street_names.len();
        let s = Self::intern(&mut self.street_names, key);
        if self.street_names.len() > before {
            self.street_display.push(name.into());
        }
        self.street_pairs.push(((s as u64) << 32 | p as u64, m));
    }
}

/// Sorts and groups pairs into key → set, putting sets of more than one into `multi`.
/// Returns the map and the keys with more than one member.
fn group<K: Copy + Ord + std::hash::Hash>(
    mut pairs: Vec<(K, u32)>,
    multi: &mut Vec<Box<[u32]>>,
) -> (FxMap<K, Cands>, Vec<K>) {
    pairs.sort_unstable();
    pairs.dedup();
    let mut map = FxMap::default();
    map.reserve(pairs.len());
    let mut many = Vec::new();
    let mut i = 0;
    while i < pairs.len() {
        let k = pairs[i].0;
        let mut j = i + 1;
        while j < pairs.len() && pairs[j].0 == k {
            j += 1;
        }
        let c = if j - i == 1 {
            pairs[i].1
        } else {
            many.push(k);
            multi.push(pairs[i..j].iter().map(|p| p.1).collect());
            (multi.len() - 1) as u32 | MULTI
        };
        map.insert(k, c);
        i = j;
    }
    (map, many)
}

/// Builds a directory from texts; nothing is stored.
pub(crate) fn build(texts: &Texts, progress: &mut dyn FnMut(&str)) -> Result<(Directory, ImportSummary), ImportError> {
    let mut summary = ImportSummary::default();

    // authorities
    let mut authorities: Vec<Authority> = Vec::new();
    let mut by_kennung: FxMap<String, u32> = FxMap::default();
    let mut first_line: FxMap<String, usize> = FxMap::default();
    parse_csv(&texts.authorities, AUTHORITIES_HEADER, progress, |line, f| {
        let kennung = &*f[0];
        if kennung.is_empty() || kennung.contains(char::is_whitespace) {
            return Err((1, format!("{kennung:?} is not a kennung (non-empty, no spaces)")));
        }
        if let Some(prev) = first_line.get(kennung) {
            return Err((1, format!("duplicate kennung {kennung:?} (first on line {prev})")));
        }
        if f[1].is_empty() {
            return Err((2, "name missing".into()));
        }
        if !digits(&f[4], 5) {
            return Err((5, format!("{:?} is not a 5-digit postcode", f[4])));
        }
        if f[5].is_empty() {
            return Err((6, "ort missing".into()));
        }
        if !f[6].is_empty() && !f[6].contains('@') {
            return Err((7, format!("{:?} is not an email address", f[6])));
        }
        let kanal = match f[7].to_ascii_lowercase().as_str() {
            "xta" => Kanal::Xta,
            "post" => Kanal::Post,
            other => return Err((8, format!("{other:?}: expected \"xta\" or \"post\""))),
        };
        if kanal == Kanal::Xta && f[8].is_empty() {
            return Err((9, "xta_reader is required when kanal is xta".into()));
        }
        let tenant = parse_bool(&f[10]).map_err(|m| (11, m))?;
        first_line.insert(kennung.to_string(), line);
        by_kennung.insert(kennung.to_string(), authorities.len() as u32);
        authorities.push(Authority {
            kennung: kennung.to_string(),
            name: f[1].to_string(),
            anschrift: Anschrift {
                strasse: opt(&f[2]),
                hausnummer: opt(&f[3]),
                postfach: None,
                postleitzahl: f[4].to_string(),
                ort: f[5].to_string(),
                staat: None,
            },
            email: opt(&f[6]),
            kanal,
            xta_reader: opt(&f[8]),
            xta_service: opt(&f[9]),
            tenant,
        });
        Ok(())
    })?;

    // jurisdictions
    let mut rules: Vec<Rule> = Vec::new();
    parse_csv(&texts.jurisdictions, JURISDICTIONS_HEADER, progress, |line, f| {
        let s = &*f[0];
        let ebene = if s.bytes().all(|b| b.is_ascii_digit()) {
            match s.len() {
                5 => Some(Ebene::Kreis),
                8 | 12 => Some(Ebene::Gemeinde),
                9 => Some(Ebene::Gemeindeverband),
                _ => None,
            }
        } else {
            None
        };
        let Some(ebene) = ebene else {
            return Err((1, format!("{s:?}: expected 5 (Kreis), 8 (AGS), 9 (Gemeindeverband) or 12 (ARS) digits")));
        };
        let ea = &*f[1];
        if ea.is_empty() || ea.contains(char::is_whitespace) {
            return Err((2, format!("{ea:?}: expected an Einnahmeart code or *")));
        }
        let Some(&authority) = by_kennung.get(&*f[2]) else {
            return Err((3, format!("unknown authority {:?} (not in {})", f[2], texts.authorities.label)));
        };
        let ab = parse_date(&f[3]).map_err(|m| (4, m))?;
        let bis = parse_date(&f[4]).map_err(|m| (5, m))?;
        if let (Some(a), Some(b)) = (ab, bis)
            && b < a
        {
            return Err((5, format!("gueltig_bis {b} is before gueltig_ab {a}")));
        }
        rules.push(Rule {
            schluessel: s.to_string(),
            ebene,
            einnahmeart: ea.to_string(),
            kennung: f[2].to_string(),
            gueltig_ab: ab,
            gueltig_bis: bis,
            line,
            authority,
        });
        Ok(())
    })?;
    let mut rules_by_key: FxMap<String, Vec<u32>> = FxMap::default();
    for (i, r) in rules.iter().enumerate() {
        rules_by_key.entry(r.schluessel.clone()).or_default().push(i as u32);
    }
    // overlapping rules naming different authorities for the same area and Einnahmeart
    for list in rules_by_key.values() {
        for (x, &a) in list.iter().enumerate() {
            for &b in &list[x + 1..] {
                let (ra, rb) = (&rules[a as usize], &rules[b as usize]);
                let start = ra.gueltig_ab.unwrap_or(NaiveDate::MIN).max(rb.gueltig_ab.unwrap_or(NaiveDate::MIN));
                let end = ra.gueltig_bis.unwrap_or(NaiveDate::MAX).min(rb.gueltig_bis.unwrap_or(NaiveDate::MAX));
                let overlap = start <= end;
                if ra.einnahmeart == rb.einnahmeart && ra.kennung != rb.kennung && overlap {
                    summary.warnings.push(format!(
                        "{}: lines {} and {} name different authorities for {} / {} in overlapping periods (lookups there answer \"ambiguous\")",
                        texts.jurisdictions.label, ra.line, rb.line, ra.schluessel, ra.einnahmeart
                    ));
                }
            }
        }
    }

    // municipalities and addresses
    let mut b = Builder::default();
    if let Some(gv) = &texts.gv100 {
        read_gv100(gv, &mut b, progress)?;
    }
    let mut street_rows = 0;
    if let Some(st) = &texts.streets {
        street_rows = parse_csv(st, STREETS_HEADER, progress, |_, f| {
            if f[0].is_empty() {
                return Err((1, "street name missing".into()));
            }
            if !digits(&f[1], 5) {
                return Err((2, format!("{:?} is not a 5-digit postcode", f[1])));
            }
            if f[2].is_empty() {
                return Err((3, "locality missing".into()));
            }
            if !digits(&f[3], 12) {
                return Err((4, format!("{:?} is not a 12-digit regional key (ARS)", f[3])));
            }
            let m = b.muni(&f[3], &f[2], false);
            b.add_street(&f[0], f[1].parse().unwrap_or(0), &f[2], m);
            Ok(())
        })?;
    }

    let mut multi = Vec::new();
    let (streets, ambiguous) = group(std::mem::take(&mut b.street_pairs), &mut multi);
    let (place_map, _) = group(std::mem::take(&mut b.place_pairs), &mut multi);
    let (plz_munis, _) = group(std::mem::take(&mut b.plz_pairs), &mut multi);
    let mut place_munis = vec![0u32; b.places.len()];
    for (p, c) in place_map {
        place_munis[p as usize] = c;
    }

    summary.ambiguous_streets = ambiguous.len();
    if !ambiguous.is_empty() {
        // examples: the first few, with their spellings and candidate municipalities
        let mut examples = Vec::new();
        let place_of: FxMap<u32, u64> = {
            let wanted: std::collections::HashSet<u32> = ambiguous.iter().take(5).map(|k| *k as u32).collect();
            b.places.iter().filter(|(_, p)| wanted.contains(p)).map(|(k, p)| (*p, *k)).collect()
        };
        for k in ambiguous.iter().take(5) {
            let (sid, pid) = ((k >> 32) as usize, *k as u32);
            let name = &b.street_display[sid];
            let plz = place_of.get(&pid).map(|k| (k >> 32) as u32).unwrap_or(0);
            let Some(c) = streets.get(k) else { continue };
            let arss: Vec<&str> =
                multi[(c & !MULTI) as usize].iter().map(|&m| b.municipalities[m as usize].ars.as_str()).collect();
            examples.push(format!("{name} ({plz:05}) → {}", arss.join(", ")));
        }
        summary.warnings.push(format!(
            "{} street keys (street, PLZ, Ort) lie in more than one municipality; lookups for them answer \"ambiguous\" (e.g. {})",
            ambiguous.len(),
            examples.join("; ")
        ));
    }

    summary.authorities = authorities.len();
    summary.tenants = authorities.iter().filter(|a| a.tenant).count();
    summary.rules = rules.len();
    summary.streets = street_rows;
    summary.street_keys = streets.len();
    summary.municipalities = b.municipalities.len();
    summary.postcodes = plz_munis.len();

    let muni_rules = b
        .municipalities
        .iter()
        .map(|m| {
            let keys: [(u8, &str); 4] = [(0, &m.ars), (0, &m.ags), (1, &m.ars[..9]), (2, &m.ars[..5])];
            keys.iter()
                .flat_map(|&(level, key)| rules_by_key.get(key).into_iter().flatten().map(move |&r| (level, r)))
                .collect()
        })
        .collect();
    let directory = Directory {
        authorities,
        by_kennung,
        rules,
        muni_rules,
        municipalities: b.municipalities,
        by_ars: b.by_ars,
        street_names: b.street_names,
        ort_names: b.ort_names,
        places: b.places,
        place_munis,
        streets,
        plz_munis,
        multi,
        street_rows,
        sample: false,
        generation: None,
    };
    Ok((directory, summary))
}

fn read_gv100(text: &Text, b: &mut Builder, progress: &mut dyn FnMut(&str)) -> Result<(), ImportError> {
    let file = text.label.as_str();
    let mut count = 0;
    for (i, line) in text.body.split('\n').enumerate() {
        let line_no = i + 1;
        let line = line.trim_end_matches('\r');
        if !line.starts_with("60") {
            continue;
        }
        let chars: Vec<char> = line.chars().collect();
        let cols =
            |from: usize, to: usize| -> String { chars.get(from..to.min(chars.len())).unwrap_or(&[]).iter().collect() };
        let ags = cols(10, 18);
        if !digits(&ags, 8) {
            return Err(row_err(file, line_no, 11, "AGS", format!("{ags:?} is not an 8-digit AGS (columns 11–18)")));
        }
        let verband = cols(18, 22);
        if !digits(&verband, 4) {
            return Err(row_err(
                file,
                line_no,
                19,
                "Gemeindeverband",
                format!("{verband:?} is not 4 digits (columns 19–22)"),
            ));
        }
        let name = cols(22, 72);
        let name = name.trim();
        if name.is_empty() {
            return Err(row_err(file, line_no, 23, "Name", "municipality name missing (columns 23–72)"));
        }
        let plz = cols(165, 170);
        let plz = plz.trim();
        if !plz.is_empty() && !digits(plz, 5) {
            return Err(row_err(
                file,
                line_no,
                166,
                "PLZ",
                format!("{plz:?} is not a 5-digit postcode (columns 166–170)"),
            ));
        }
        let ars = format!("{}{}{}", &ags[..5], verband, &ags[5..]);
        let m = b.muni(&ars, name, true);
        if let Ok(plz) = plz.parse::<u32>() {
            b.add_place(plz, name, m);
            // "Lemgo, Alte Hansestadt", "Köln, Stadt": also as the part before the comma
            if let Some((short, _)) = name.split_once(',') {
                b.add_place(plz, short.trim(), m);
            }
        }
        count += 1;
        if count % PROGRESS_EVERY == 0 {
            progress(&format!("{file}: {count} municipalities"));
        }
    }
    Ok(())
}

/// `<data_dir>/directory`.
pub fn store_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("directory")
}

const FILES: [&str; 4] = ["authorities.csv", "jurisdictions.csv", "streets.csv", "gv100.txt"];

/// Validates and builds the files, then stores them under `<data_dir>/directory/`. On any
/// error nothing is stored. Progress lines (every 100,000 rows) go to `progress`.
pub fn import(
    data_dir: &Path,
    sources: &ImportSources,
    progress: &mut dyn FnMut(&str),
) -> Result<(Directory, ImportSummary), ImportError> {
    let texts = Texts {
        authorities: read_text(&sources.authorities, false)?,
        jurisdictions: read_text(&sources.jurisdictions, false)?,
        streets: sources.streets.as_deref().map(|p| read_text(p, false)).transpose()?,
        gv100: sources.gv100.as_deref().map(|p| read_text(p, true)).transpose()?,
    };
    let (mut directory, mut summary) = build(&texts, progress)?;
    let (generation, dir) = persist(data_dir, &texts)?;
    directory.generation = Some(generation);
    summary.stored_in = Some(dir);
    Ok((directory, summary))
}

fn write_synced(path: &Path, body: &str) -> Result<(), ImportError> {
    let mut f = std::fs::File::create(path).map_err(|e| io_err(path, e))?;
    f.write_all(body.as_bytes()).map_err(|e| io_err(path, e))?;
    f.sync_all().map_err(|e| io_err(path, e))
}

fn persist(data_dir: &Path, texts: &Texts) -> Result<(String, PathBuf), ImportError> {
    let store = store_dir(data_dir);
    std::fs::create_dir_all(&store).map_err(|e| io_err(&store, e))?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.9fZ").to_string();
    let tmp = store.join(format!(".tmp-{}-{stamp}", std::process::id()));
    std::fs::create_dir(&tmp).map_err(|e| io_err(&tmp, e))?;
    let result = (|| {
        let bodies =
            [Some(&texts.authorities), Some(&texts.jurisdictions), texts.streets.as_ref(), texts.gv100.as_ref()];
        for (name, text) in FILES.iter().zip(bodies) {
            if let Some(t) = text {
                write_synced(&tmp.join(name), &t.body)?;
            }
        }
        let generation = format!("gen-{stamp}-{}", std::process::id());
        let dir = store.join(&generation);
        std::fs::rename(&tmp, &dir).map_err(|e| io_err(&dir, e))?;
        let current_tmp = store.join(format!(".CURRENT.tmp-{}", std::process::id()));
        write_synced(&current_tmp, &format!("{generation}\n"))?;
        let current = store.join("CURRENT");
        std::fs::rename(&current_tmp, &current).map_err(|e| io_err(&current, e))?;
        if let Ok(d) = std::fs::File::open(&store) {
            let _ = d.sync_all();
        }
        Ok((generation, dir))
    })();
    let (generation, dir) = match result {
        Ok(x) => x,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    // keep this and the previous generation; remove older ones
    let mut gens: Vec<String> = std::fs::read_dir(&store)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("gen-") && *n != generation)
        .collect();
    gens.sort();
    gens.pop();
    for g in gens {
        let _ = std::fs::remove_dir_all(store.join(g));
    }
    Ok((generation, dir))
}

/// The name of the stored generation `CURRENT` points to, `None` when nothing was imported.
pub fn stored_generation(data_dir: &Path) -> Result<Option<String>, ImportError> {
    let current = store_dir(data_dir).join("CURRENT");
    match std::fs::read_to_string(&current) {
        Ok(s) => Ok(Some(s.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(&current, e)),
    }
}

/// The directory last imported under `data_dir`, or `None` when nothing was imported.
pub fn open(data_dir: &Path) -> Result<Option<Directory>, ImportError> {
    let Some(generation) = stored_generation(data_dir)? else { return Ok(None) };
    let dir = store_dir(data_dir).join(&generation);
    let read_opt = |name: &str, latin1: bool| -> Result<Option<Text>, ImportError> {
        let p = dir.join(name);
        if p.exists() { read_text(&p, latin1).map(Some) } else { Ok(None) }
    };
    let texts = Texts {
        authorities: read_text(&dir.join(FILES[0]), false)?,
        jurisdictions: read_text(&dir.join(FILES[1]), false)?,
        streets: read_opt(FILES[2], false)?,
        gv100: read_opt(FILES[3], true)?,
    };
    let (mut directory, _) = build(&texts, &mut |_| {})?;
    directory.generation = Some(generation);
    Ok(Some(directory))
}

/// The directory last imported under `data_dir`, or the compiled-in sample data.
pub fn open_or_sample(data_dir: &Path) -> Result<Directory, ImportError> {
    match open(data_dir)? {
        Some(d) => Ok(d),
        None => Ok(Directory::sample()),
    }
}

impl Directory {
    /// The sample data of `examples/directory/`, compiled in (invented authorities and
    /// streets with real municipality keys; see the README there).
    pub fn sample() -> Directory {
        let text =
            |label: &str, body: &str| Text { label: format!("examples/directory/{label}"), body: body.to_string() };
        let texts = Texts {
            authorities: text("authorities.csv", include_str!("../../examples/directory/authorities.csv")),
            jurisdictions: text("jurisdictions.csv", include_str!("../../examples/directory/jurisdictions.csv")),
            streets: Some(text("streets.csv", include_str!("../../examples/directory/streets.csv"))),
            gv100: None,
        };
        let (mut d, _) = build(&texts, &mut |_| {}).expect("the compiled-in sample directory is valid");
        d.sample = true;
        d
    }

    /// Builds a directory from in-memory CSV texts (authorities, jurisdictions, optional
    /// streets), with the same checks as an import; nothing is stored. For tests and benches.
    pub fn from_csv(
        authorities: &str,
        jurisdictions: &str,
        streets: Option<&str>,
        progress: &mut dyn FnMut(&str),
    ) -> Result<(Directory, ImportSummary), ImportError> {
        let text = |label: &str, body: &str| Text { label: label.to_string(), body: body.to_string() };
        let texts = Texts {
            authorities: text("authorities.csv", authorities),
            jurisdictions: text("jurisdictions.csv", jurisdictions),
            streets: streets.map(|s| text("streets.csv", s)),
            gv100: None,
        };
        build(&texts, progress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_handles_quotes() {
        let mut out = Vec::new();
        split(r#"a;"b;c";"d ""e""";f"#, ';', &mut out).unwrap();
        assert_eq!(out, vec!["a", "b;c", "d \"e\"", "f"]);
        assert!(split(r#"a;"b"#, ';', &mut out).is_err());
        assert_eq!(split(r#"a;"b"x;c"#, ';', &mut out).unwrap_err().0, 2);
    }

    #[test]
    fn overlapping_rules_warn() {
        let a = "kennung;name;strasse;hausnummer;plz;ort;email;kanal;xta_reader;xta_service;tenant\n\
                 a;A;;;12345;X;;post;;;\nb;B;;;12345;X;;post;;;\n";
        let j = "schluessel;einnahmeart;kennung;gueltig_ab;gueltig_bis\n\
                 05766;*;a;;2026-12-31\n05766;*;b;2027-01-01;\n05315;*;a;;\n05315;*;b;2020-01-01;\n";
        let (_, s) = Directory::from_csv(a, j, None, &mut |_| {}).unwrap();
        assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
        assert!(s.warnings[0].contains("05315"));
    }
}
