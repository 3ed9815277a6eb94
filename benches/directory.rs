//! Directory load time, memory and lookup rate at German scale.
//!
//! `cargo bench --bench directory` (release profile). What it does, and how it measures:
//! 1. Generates synthetic input of the real sizes into a temp dir (not timed): 10,800
//!    municipalities in 400 Kreise, about 8,200 postcodes (some shared by neighbouring
//!    municipalities, every 10th with three), 1.2 million street rows (OpenPLZ layout,
//!    names from random syllables + "straße"/"weg"/…, so ~hundreds of thousands of distinct
//!    names; every 1,000th row repeated under a neighbouring municipality, i.e. ambiguous), 2,400 authorities, 3,500 rules (Kreis `*`, municipality `*`, some Einnahmeart).
//! 2. Times `directory::import` (read + validate + index + store a copy under the data
//!    dir) and `directory::open` (what a restarting process does: read the stored copy and
//!    index it), wall clock with `Instant`. Goal: ≤ 5 s.
//! 3. Memory: `VmRSS` from /proc/self/status before and after `open` (the delta is the size
//!    of one directory), and `VmHWM` (peak, includes the generator and the import).
//! 4. Lookups: 1,000,000 queries (80% street + PLZ + Ort, a third of those with a house
//!    number and a different spelling "Str."/lowercase; 10% PLZ + Ort only; 10% unknown)
//!    in a loop on one thread, wall clock; goal ≥ 1,000,000/s. Baseline in the same run: a
//!    plain `std::collections::HashMap<String, u32>` holding all 1.2 million raw
//!    (street|plz|ort) keys, probed with the raw keys of the same queries: no
//!    normalisation, no fallback, no rules. `all_keys` (~80 MB) is alive during `open`, so
//!    it is in VmHWM but not in the RSS delta.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::time::Instant;

use amtsbote::directory::{self, ImportSources, LookupResult, Query};

const MUNICIPALITIES: usize = 10_800;
const STREET_ROWS: usize = 1_200_000;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const SYLLABLES: [&str; 32] = [
    "Ahorn",
    "Birken",
    "Buchen",
    "Eichen",
    "Linden",
    "Tannen",
    "Rosen",
    "Mühlen",
    "Kirch",
    "Schul",
    "Bahnhof",
    "Markt",
    "Garten",
    "Wiesen",
    "Feld",
    "Berg",
    "Tal",
    "Wald",
    "Bach",
    "See",
    "Brunnen",
    "Schloss",
    "Burg",
    "Hof",
    "Dorf",
    "Sonnen",
    "Grün",
    "Lerchen",
    "Falken",
    "Weiden",
    "Erlen",
    "Kastanien",
];
const SUFFIXES: [&str; 6] = ["straße", "weg", "allee", "gasse", "platz", "ring"];

fn ars(m: usize) -> String {
    // 400 Kreise of 27 municipalities; Verband = municipality number
    let kreis = 10_000 + m / 27;
    let g = m % 27 + 1;
    format!("{kreis:05}{g:04}{g:03}")
}

fn plz_of(m: usize, k: usize) -> u32 {
    // ~8,200 postcodes: neighbours may share, every 10th municipality has 3
    let base = 10_000 + (m * 6_100 / MUNICIPALITIES) as u32 * 10;
    base + if m.is_multiple_of(10) { (k % 3) as u32 } else { 0 }
}

fn street_name(rng: &mut Rng) -> String {
    let mut s = String::new();
    for i in 0..(2 + rng.below(2)) {
        let syl = SYLLABLES[rng.below(SYLLABLES.len())];
        if i == 0 {
            s.push_str(syl);
        } else {
            s.push_str(&syl.to_lowercase());
        }
    }
    s.push_str(SUFFIXES[rng.below(SUFFIXES.len())]);
    s
}

fn status(key: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .map(|l| l[key.len() + 1..].trim().to_string())
        .unwrap_or_else(|| "?".into())
}

fn rss_kb() -> i64 {
    status("VmRSS").trim_end_matches(" kB").trim().parse().unwrap_or(0)
}

fn main() {
    let files = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);

    // ---- generate ----
    let t = Instant::now();
    let mut authorities =
        String::from("kennung;name;strasse;hausnummer;plz;ort;email;kanal;xta_reader;xta_service;tenant\n");
    let mut rules = String::from("schluessel;einnahmeart;kennung;gueltig_ab;gueltig_bis\n");
    for k in 0..400 {
        let kreis = 10_000 + k;
        writeln!(
            authorities,
            "vbh:k{kreis};Kreiskasse {kreis};Amtsweg;1;{};Kreisstadt {kreis};;xta;r{kreis};;",
            10_000 + k * 10
        )
        .unwrap();
        writeln!(rules, "{kreis:05};*;vbh:k{kreis};;").unwrap();
    }
    for m in (0..MUNICIPALITIES).step_by(5) {
        let a = ars(m);
        writeln!(authorities, "vbh:{a};Stadtkasse Ort{m};Rathausplatz;1;{};Ort{m};;post;;;", plz_of(m, 0)).unwrap();
        writeln!(rules, "{a};*;vbh:{a};;").unwrap();
        if m % 10 == 0 {
            writeln!(rules, "{};GRST;vbh:k{};2020-01-01;", &a[..9], &a[..5]).unwrap();
        }
    }
    let mut streets = String::with_capacity(STREET_ROWS * 60);
    streets.push_str("Name;PostalCode;Locality;RegionalKey;Borough;Suburb\n");
    let mut sample: Vec<(String, u32, String)> = Vec::new();
    let mut all_keys: Vec<String> = Vec::with_capacity(STREET_ROWS);
    for i in 0..STREET_ROWS {
        let m = i % MUNICIPALITIES;
        let k = i / MUNICIPALITIES;
        let name = street_name(&mut rng);
        let plz = plz_of(m, k);
        writeln!(streets, "{name};{plz:05};Ort{m};{};;", ars(m)).unwrap();
        all_keys.push(format!("{name}|{plz:05}|Ort{m}"));
        if i % 1000 == 0 {
            // as in the real data: the same street, PLZ and Ort also under a neighbour
            writeln!(streets, "{name};{plz:05};Ort{m};{};;", ars((m + 1) % MUNICIPALITIES)).unwrap();
        }
        if i % 997 == 0 {
            sample.push((name, plz, format!("Ort{m}")));
        }
    }
    let write = |name: &str, body: &str| {
        let p = files.path().join(name);
        std::fs::write(&p, body).unwrap();
        p
    };
    let sources = ImportSources {
        authorities: write("authorities.csv", &authorities),
        jurisdictions: write("jurisdictions.csv", &rules),
        streets: Some(write("streets.csv", &streets)),
        gv100: None,
    };
    let streets_mb = streets.len() as f64 / 1e6;
    drop(streets);
    println!(
        "generated {STREET_ROWS} street rows ({streets_mb:.1} MB), {MUNICIPALITIES} municipalities, {} query seeds in {:.2?}",
        sample.len(),
        t.elapsed()
    );

    // ---- load ----
    let t = Instant::now();
    let (imported, summary) = directory::import(data.path(), &sources, &mut |_| {}).unwrap();
    let import_time = t.elapsed();
    println!("import (read + validate + index + store copy): {import_time:.2?} — {summary}");
    drop(imported);

    let rss_before = rss_kb();
    let t = Instant::now();
    let dir = directory::open(data.path()).unwrap().unwrap();
    let open_time = t.elapsed();
    let rss_after = rss_kb();
    println!(
        "open (read stored copy + index, as on restart): {open_time:.2?}   goal ≤ 5 s: {}",
        if open_time.as_secs_f64() <= 5.0 && import_time.as_secs_f64() <= 5.0 { "met" } else { "MISSED" }
    );
    println!(
        "memory: VmRSS {} kB before open, {} kB after (one directory ≈ {:.0} MB); VmHWM (peak, incl. generator and import) {}",
        rss_before,
        rss_after,
        (rss_after - rss_before) as f64 / 1024.0,
        status("VmHWM")
    );

    // ---- queries ----
    let mut queries: Vec<(String, String, Option<String>, Option<&str>)> = Vec::with_capacity(1_000_000);
    for i in 0..1_000_000 {
        let (name, plz, ort) = &sample[rng.below(sample.len())];
        let plz = format!("{plz:05}");
        match i % 10 {
            0 => queries.push((plz, ort.clone(), None, None)),
            1 => queries.push(("99999".into(), "Nirgendwo".into(), Some(name.clone()), None)),
            2..=4 => {
                let spelled = name.replace("straße", "str.").to_lowercase();
                queries.push((plz, ort.to_uppercase(), Some(format!("{spelled} {}", 1 + i % 120)), Some("GRST")))
            }
            _ => queries.push((plz, ort.clone(), Some(name.clone()), None)),
        }
    }
    let date = chrono::NaiveDate::from_ymd_opt(2026, 6, 1).unwrap();

    // warm up, count outcomes
    let (mut found, mut ambiguous, mut not_found) = (0, 0, 0);
    for (plz, ort, strasse, ea) in &queries {
        match dir.lookup(&Query { plz, ort, strasse: strasse.as_deref(), einnahmeart: *ea, date }) {
            LookupResult::Found { .. } => found += 1,
            LookupResult::Ambiguous { .. } => ambiguous += 1,
            LookupResult::NotFound => not_found += 1,
        }
    }
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        for (plz, ort, strasse, ea) in &queries {
            black_box(dir.lookup(black_box(&Query { plz, ort, strasse: strasse.as_deref(), einnahmeart: *ea, date })));
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    let rate = queries.len() as f64 / best;
    println!(
        "lookup: {} queries ({found} found, {ambiguous} ambiguous, {not_found} not found), best of 3 on one thread: {:.2} s = {:.0} lookups/s ({:.0} ns each)   goal ≥ 1,000,000/s: {}",
        queries.len(),
        best,
        rate,
        best * 1e9 / queries.len() as f64,
        if rate >= 1e6 { "met" } else { "MISSED" }
    );

    // ---- baseline: a plain HashMap probe of the same raw keys ----
    let mut plain: HashMap<String, u32> = HashMap::with_capacity(all_keys.len());
    for (i, k) in all_keys.into_iter().enumerate() {
        plain.insert(k, (i % MUNICIPALITIES) as u32);
    }
    let keys: Vec<String> =
        queries.iter().map(|(plz, ort, s, _)| format!("{}|{plz}|{ort}", s.as_deref().unwrap_or(""))).collect();
    let mut best_plain = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        for k in &keys {
            black_box(plain.get(black_box(k.as_str())));
        }
        best_plain = best_plain.min(t.elapsed().as_secs_f64());
    }
    println!(
        "baseline: std HashMap<String,u32> ({} keys) probe of the same {} raw keys, no normalisation: {:.0} probes/s ({:.0} ns each); the lookup costs {:.1}× a bare probe",
        plain.len(),
        keys.len(),
        keys.len() as f64 / best_plain,
        best_plain * 1e9 / keys.len() as f64,
        best / best_plain
    );
}
