//! The directory (the "Authority-Server"): who is responsible for a debtor's address and a
//! kind of claim (Einnahmeart), and how to reach them.
//!
//! This module owns:
//! - the in-memory [`Directory`]: authorities (with the tenant flag), jurisdiction rules and
//!   the address indexes (normalised street + PLZ + Ort, PLZ + Ort, PLZ → municipalities);
//! - [`Directory::lookup`], the lookup contract of the directory spec: street + PLZ +
//!   Ort first, then PLZ + Ort, a PLZ alone only when it maps to exactly one municipality;
//!   then the most specific valid rule (municipality → Gemeindeverband → Kreis, specific
//!   Einnahmeart before `*`). Several answers are [`LookupResult::Ambiguous`], never a guess;
//! - name normalisation ([`normalize_street`], [`normalize_place`], [`split_house_number`]);
//! - imports ([`import()`], [`open`], [`open_or_sample`]): `authorities.csv`, `jurisdictions.csv`, OpenPLZ `streets.csv`,
//!   Destatis GV100AD; all-or-nothing, persisted under `<data_dir>/directory/`, and
//!   [`SharedDirectory`] to swap a new directory in while lookups keep answering;
//! - the compiled-in sample data of `examples/directory/` ([`Directory::sample`]).
//!
//! Municipalities are keyed by their 12-digit ARS internally; a rule may name the 8-digit AGS
//! or the 12-digit ARS of a municipality, a 9-digit Gemeindeverband or a 5-digit Kreis.

mod import;
mod normalize;

pub mod certs;

pub use import::{
    ImportError, ImportSources, ImportSummary, import, open, open_or_sample, store_dir, stored_generation,
};
pub use normalize::{normalize_place, normalize_street, split_house_number};

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, RwLock};

use chrono::NaiveDate;
use serde::Serialize;
use serde_json::{Value, json};

use crate::xamtshilfe::{Anschrift, Kanal, ZustaendigeBehoerde, ZustaendigkeitAnfrage, ZustaendigkeitAntwort};

/// An authority that may be asked for enforcement help (or one of our tenants).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Authority {
    /// e.g. `vbh:053150000000`.
    pub kennung: String,
    pub name: String,
    /// Postal address (letters are printed to it).
    pub anschrift: Anschrift,
    pub email: Option<String>,
    pub kanal: Kanal,
    /// XTA reader identifier (required when `kanal` is `xta`).
    pub xta_reader: Option<String>,
    pub xta_service: Option<String>,
    /// One of the authorities using this installation.
    pub tenant: bool,
}

/// The kind of area a rule names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ebene {
    /// 8-digit AGS or 12-digit ARS.
    Gemeinde,
    /// 9 digits: Kreis key + 4-digit Verband.
    Gemeindeverband,
    /// 5 digits.
    Kreis,
}

/// One row of `jurisdictions.csv`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub schluessel: String,
    pub ebene: Ebene,
    /// A code, or `*` for every kind of claim.
    pub einnahmeart: String,
    pub kennung: String,
    pub gueltig_ab: Option<NaiveDate>,
    /// Inclusive.
    pub gueltig_bis: Option<NaiveDate>,
    /// Line in the imported file.
    #[serde(skip)]
    pub line: usize,
    /// Index of the authority `kennung` names.
    #[serde(skip)]
    pub(crate) authority: u32,
}

impl Rule {
    /// Whether the rule applies on `date` (both bounds inclusive, open when absent).
    pub fn valid_on(&self, date: NaiveDate) -> bool {
        self.gueltig_ab.is_none_or(|d| d <= date) && self.gueltig_bis.is_none_or(|d| date <= d)
    }
}

/// A municipality known from the street file or GV100AD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Municipality {
    /// 12 digits.
    pub ars: String,
    /// 8 digits: the first 5 and the last 3 of the ARS.
    pub ags: String,
    /// From GV100AD when loaded, otherwise the first Locality seen in the street file.
    pub name: String,
}

/// What is asked: the debtor's address, the kind of claim and the day the answer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query<'a> {
    pub plz: &'a str,
    pub ort: &'a str,
    /// Street, possibly with a house number ("Hohe Straße 12a").
    pub strasse: Option<&'a str>,
    /// Einnahmeart code; `None` matches only `*` rules.
    pub einnahmeart: Option<&'a str>,
    pub date: NaiveDate,
}

impl<'a> Query<'a> {
    /// The query of a `ZustaendigkeitAnfrage.001` (street without its separate house number).
    pub fn from_anfrage(anfrage: &'a ZustaendigkeitAnfrage, date: NaiveDate) -> Self {
        Query {
            plz: &anfrage.anschrift.postleitzahl,
            ort: &anfrage.anschrift.ort,
            strasse: anfrage.anschrift.strasse.as_deref(),
            einnahmeart: Some(anfrage.einnahmeart.code.as_str()),
            date,
        }
    }
}

/// One possible answer of an ambiguous lookup: a municipality, and the authority its rules
/// name (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate<'d> {
    pub municipality: &'d Municipality,
    pub authority: Option<&'d Authority>,
    pub rule: Option<&'d Rule>,
}

/// The answer of [`Directory::lookup`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupResult<'d> {
    Found {
        authority: &'d Authority,
        rule: &'d Rule,
        ags: &'d str,
    },
    /// Several municipalities, or several authorities named by equally specific rules.
    Ambiguous {
        candidates: Vec<Candidate<'d>>,
    },
    NotFound,
}

impl LookupResult<'_> {
    /// The JSON of the lookup contract: `{"status":"found",…}`, `{"status":"ambiguous",
    /// "candidates":[…]}` or `{"status":"not_found"}`.
    pub fn to_json(&self) -> Value {
        match self {
            LookupResult::Found { authority, rule, ags } => json!({
                "status": "found",
                "kennung": authority.kennung,
                "name": authority.name,
                "kanal": authority.kanal,
                "anschrift": authority.anschrift,
                "ags": ags,
                "rule": rule_json(rule),
            }),
            LookupResult::Ambiguous { candidates } => {
                let list: Vec<Value> = candidates
                    .iter()
                    .map(|c| {
                        let mut v = json!({
                            "ags": c.municipality.ags,
                            "ars": c.municipality.ars,
                            "gemeinde": c.municipality.name,
                        });
                        if let Some(a) = c.authority {
                            v["kennung"] = json!(a.kennung);
                            v["name"] = json!(a.name);
                            v["kanal"] = json!(a.kanal);
                        }
                        if let Some(r) = c.rule {
                            v["rule"] = rule_json(r);
                        }
                        v
                    })
                    .collect();
                json!({"status": "ambiguous", "candidates": list})
            }
            LookupResult::NotFound => json!({"status": "not_found"}),
        }
    }

    /// The `ZustaendigkeitAntwort.002`: the authority when found, nothing otherwise
    /// (ambiguous and unknown both answer without a Behörde).
    pub fn to_antwort(&self) -> ZustaendigkeitAntwort {
        let behoerde = match self {
            LookupResult::Found { authority, .. } => Some(ZustaendigeBehoerde {
                kennung: authority.kennung.clone(),
                name: authority.name.clone(),
                anschrift: authority.anschrift.clone(),
                kanal: authority.kanal,
            }),
            _ => None,
        };
        ZustaendigkeitAntwort { behoerde }
    }

    pub fn is_found(&self) -> bool {
        matches!(self, LookupResult::Found { .. })
    }
}

fn rule_json(r: &Rule) -> Value {
    json!({
        "schluessel": r.schluessel,
        "ebene": r.ebene,
        "einnahmeart": r.einnahmeart,
        "gueltig_ab": r.gueltig_ab,
        "gueltig_bis": r.gueltig_bis,
    })
}

/// FxHash (rustc's hasher) with a finaliser: the keys are our own imported data, so no
/// flooding defence is needed, and it is several times faster than SipHash on short keys.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, w: u64) {
        self.hash = (self.hash.rotate_left(5) ^ w).wrapping_mul(FX_SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, mut bytes: &[u8]) {
        while bytes.len() >= 8 {
            self.add(u64::from_le_bytes(bytes[..8].try_into().unwrap()));
            bytes = &bytes[8..];
        }
        if bytes.len() >= 4 {
            self.add(u32::from_le_bytes(bytes[..4].try_into().unwrap()) as u64);
            bytes = &bytes[4..];
        }
        for &b in bytes {
            self.add(b as u64);
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        // Fx alone leaves the low bits depending only on the low bits of the input (a key
        // `street << 32 | place` would put all streets of one place in one bucket); the
        // murmur3 finaliser spreads every input bit over the whole hash.
        let mut h = self.hash;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^ (h >> 33)
    }
}

pub(crate) type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// A set of municipality ids: one id inline, or (top bit set) an index into `Directory::multi`.
pub(crate) type Cands = u32;
const MULTI: u32 = 1 << 31;

/// The whole directory, immutable once built; replace it as a whole ([`SharedDirectory`]).
/// `Debug` prints counts only.
#[derive(Default)]
pub struct Directory {
    pub(crate) authorities: Vec<Authority>,
    pub(crate) by_kennung: FxMap<String, u32>,
    pub(crate) rules: Vec<Rule>,
    /// municipality id → (level 0 municipality / 1 Gemeindeverband / 2 Kreis, rule index)
    /// of every rule naming its area, sorted by level.
    pub(crate) muni_rules: Vec<Box<[(u8, u32)]>>,
    pub(crate) municipalities: Vec<Municipality>,
    pub(crate) by_ars: FxMap<String, u32>,
    /// normalised street name → street id
    pub(crate) street_names: FxMap<Box<str>, u32>,
    /// normalised place name → ort id
    pub(crate) ort_names: FxMap<Box<str>, u32>,
    /// plz << 32 | ort id → place id
    pub(crate) places: FxMap<u64, u32>,
    /// place id → municipalities
    pub(crate) place_munis: Vec<Cands>,
    /// street id << 32 | place id → municipalities
    pub(crate) streets: FxMap<u64, Cands>,
    /// plz → municipalities
    pub(crate) plz_munis: FxMap<u32, Cands>,
    pub(crate) multi: Vec<Box<[u32]>>,
    pub(crate) street_rows: usize,
    pub(crate) sample: bool,
    /// The stored generation (`<data_dir>/directory/gen-…`) this was read from or written to.
    pub(crate) generation: Option<String>,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("authorities", &self.authorities.len())
            .field("rules", &self.rules.len())
            .field("municipalities", &self.municipalities.len())
            .field("street_rows", &self.street_rows)
            .field("street_keys", &self.streets.len())
            .field("sample", &self.sample)
            .finish()
    }
}

impl Directory {
    /// The authority with this kennung.
    pub fn authority(&self, kennung: &str) -> Option<&Authority> {
        self.by_kennung.get(kennung).map(|&i| &self.authorities[i as usize])
    }

    pub fn authorities(&self) -> &[Authority] {
        &self.authorities
    }

    /// The authorities flagged as tenants.
    pub fn tenants(&self) -> impl Iterator<Item = &Authority> {
        self.authorities.iter().filter(|a| a.tenant)
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn municipalities(&self) -> &[Municipality] {
        &self.municipalities
    }

    /// A municipality by its 12-digit ARS (hashed) or 8-digit AGS (a linear scan: for
    /// administration, not for the lookup path).
    pub fn municipality(&self, ars_or_ags: &str) -> Option<&Municipality> {
        match ars_or_ags.len() {
            12 => self.by_ars.get(ars_or_ags).map(|&i| &self.municipalities[i as usize]),
            8 => self.municipalities.iter().find(|m| m.ags == ars_or_ags),
            _ => None,
        }
    }

    /// Whether this is the compiled-in sample data (nothing was imported).
    pub fn is_sample(&self) -> bool {
        self.sample
    }

    /// The stored generation under `<data_dir>/directory/` this directory was read from or
    /// written to (`None` for the sample and for in-memory builds).
    pub fn generation(&self) -> Option<&str> {
        self.generation.as_deref()
    }

    /// Rows of the street file that were loaded.
    pub fn street_rows(&self) -> usize {
        self.street_rows
    }

    fn set<'a>(&'a self, c: &'a Cands) -> &'a [u32] {
        if c & MULTI != 0 { &self.multi[(c & !MULTI) as usize] } else { std::slice::from_ref(c) }
    }

    /// The municipalities an address may belong to (empty: unknown), by street + PLZ + Ort,
    /// then PLZ + Ort, then PLZ alone (the caller treats several as ambiguous).
    pub fn municipalities_for(&self, plz: &str, ort: &str, strasse: Option<&str>) -> Vec<&Municipality> {
        self.find(plz, ort, strasse).iter().map(|&m| &self.municipalities[m as usize]).collect()
    }

    fn find(&self, plz: &str, ort: &str, strasse: Option<&str>) -> &[u32] {
        let plz = plz.trim();
        if plz.len() != 5 || !plz.bytes().all(|b| b.is_ascii_digit()) {
            return &[];
        }
        let plz: u32 = plz.parse().unwrap_or(0);
        let ort_key = normalize_place(ort);
        let place =
            self.ort_names.get(ort_key.as_str()).and_then(|&o| self.places.get(&((plz as u64) << 32 | o as u64)));
        if let (Some(strasse), Some(&place)) = (strasse, place) {
            let probe = |s: &str| {
                let key = normalize_street(s);
                self.street_names
                    .get(key.as_str())
                    .and_then(|&sid| self.streets.get(&((sid as u64) << 32 | place as u64)))
            };
            let hit = probe(strasse).or_else(|| match split_house_number(strasse) {
                (name, Some(_)) => probe(name),
                _ => None,
            });
            if let Some(c) = hit {
                return self.set(c);
            }
        }
        if let Some(&place) = place {
            return self.set(&self.place_munis[place as usize]);
        }
        match self.plz_munis.get(&plz) {
            Some(c) => self.set(c),
            None => &[],
        }
    }

    /// The most specific rules valid on `date` for a municipality: level by level
    /// (municipality ARS/AGS → Gemeindeverband → Kreis), the specific Einnahmeart before `*`.
    /// Returns the rules of the first level that has any; more than one naming different
    /// authorities means ambiguity.
    fn resolve(&self, m: u32, einnahmeart: Option<&str>, date: NaiveDate) -> (Option<u32>, Vec<u32>) {
        let list = &self.muni_rules[m as usize];
        for level in 0..3u8 {
            for ea in [einnahmeart, Some("*")] {
                let Some(ea) = ea else { continue };
                let mut first: Option<u32> = None;
                let mut others: Vec<u32> = Vec::new();
                for &(l, ri) in list.iter() {
                    let r = &self.rules[ri as usize];
                    if l != level || r.einnahmeart != ea || !r.valid_on(date) {
                        continue;
                    }
                    match first {
                        None => first = Some(ri),
                        Some(f) => {
                            let fk = &self.rules[f as usize].kennung;
                            if *fk != r.kennung && others.iter().all(|&o| self.rules[o as usize].kennung != r.kennung) {
                                others.push(ri);
                            }
                        }
                    }
                }
                if first.is_some() {
                    return (first, others);
                }
            }
        }
        (None, Vec::new())
    }

    /// Who is responsible for this address and kind of claim on `q.date`.
    pub fn lookup<'d>(&'d self, q: &Query<'_>) -> LookupResult<'d> {
        let munis = self.find(q.plz, q.ort, q.strasse);
        let einnahmeart = q.einnahmeart.map(str::trim).filter(|e| !e.is_empty());
        match munis {
            [] => LookupResult::NotFound,
            [mi] => {
                let m = &self.municipalities[*mi as usize];
                match self.resolve(*mi, einnahmeart, q.date) {
                    (None, _) => LookupResult::NotFound,
                    (Some(r), others) if others.is_empty() => {
                        let rule = &self.rules[r as usize];
                        let authority = &self.authorities[rule.authority as usize];
                        LookupResult::Found { authority, rule, ags: &m.ags }
                    }
                    (Some(r), others) => LookupResult::Ambiguous {
                        candidates: std::iter::once(r).chain(others).map(|ri| self.candidate(m, Some(ri))).collect(),
                    },
                }
            }
            many => {
                let mut candidates = Vec::new();
                for &mi in many {
                    let m = &self.municipalities[mi as usize];
                    match self.resolve(mi, einnahmeart, q.date) {
                        (None, _) => candidates.push(self.candidate(m, None)),
                        (Some(r), others) => {
                            candidates.extend(std::iter::once(r).chain(others).map(|ri| self.candidate(m, Some(ri))))
                        }
                    }
                }
                LookupResult::Ambiguous { candidates }
            }
        }
    }

    fn candidate<'d>(&'d self, m: &'d Municipality, rule: Option<u32>) -> Candidate<'d> {
        let rule = rule.map(|r| &self.rules[r as usize]);
        Candidate { municipality: m, authority: rule.map(|r| &self.authorities[r.authority as usize]), rule }
    }
}

/// Today in Europe/Berlin: the day a lookup answers for unless told otherwise (rules change
/// at German midnight, not at UTC midnight).
pub fn today() -> NaiveDate {
    chrono::Utc::now().with_timezone(&chrono_tz::Europe::Berlin).date_naive()
}

/// The directory a running process answers from; [`SharedDirectory::replace`] swaps in a
/// fully built new one, so a lookup sees either the old or the new data, never a mixture,
/// and never waits for an import.
#[derive(Debug)]
pub struct SharedDirectory {
    current: RwLock<Arc<Directory>>,
}

impl SharedDirectory {
    pub fn new(directory: Directory) -> Self {
        SharedDirectory { current: RwLock::new(Arc::new(directory)) }
    }

    /// The current directory; hold the `Arc` for as long as one answer needs it.
    pub fn get(&self) -> Arc<Directory> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Puts `directory` in place and returns the previous one.
    pub fn replace(&self, directory: Directory) -> Arc<Directory> {
        let new = Arc::new(directory);
        let mut guard = self.current.write().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *guard, new)
    }

    /// Picks up an import made by another process (`amtsbote directory import` while
    /// `serve` runs): when `<data_dir>/directory/CURRENT` names another generation than the
    /// current directory's, reads it and swaps it in. Returns whether it did. Cheap when
    /// nothing changed (one small file read), so it can run on a timer. On error the
    /// current directory stays.
    pub fn reload_if_changed(&self, data_dir: &std::path::Path) -> Result<bool, ImportError> {
        let Some(stored) = stored_generation(data_dir)? else { return Ok(false) };
        if self.get().generation() == Some(stored.as_str()) {
            return Ok(false);
        }
        match open(data_dir)? {
            Some(directory) => {
                self.replace(directory);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Imports the files (all-or-nothing), persists them under `<data_dir>/directory/` and
    /// swaps the result in. On error nothing changes, neither in memory nor on disk.
    pub fn import(
        &self,
        data_dir: &std::path::Path,
        sources: &ImportSources,
        progress: &mut dyn FnMut(&str),
    ) -> Result<ImportSummary, ImportError> {
        let (directory, summary) = import(data_dir, sources, progress)?;
        self.replace(directory);
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn the_hasher_spreads_keys_that_differ_only_in_high_bits() {
        let build = BuildHasherDefault::<FxHasher>::default();
        let low: std::collections::HashSet<u64> = (0..1000u64).map(|i| build.hash_one(i << 32 | 7) & 0xffff).collect();
        assert!(low.len() > 950, "{}", low.len());
    }
}
