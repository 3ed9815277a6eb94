//! The directory: lookup fallback order, rule specificity and validity dates, ambiguity,
//! name normalisation, import errors (file, line, column; nothing changed), atomic
//! replacement under concurrent lookups, and the `amtsbote directory` command line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use amtsbote::directory::{self, Directory, Ebene, ImportError, ImportSources, LookupResult, Query, SharedDirectory};
use chrono::NaiveDate;

const AUTH_HEADER: &str = "kennung;name;strasse;hausnummer;plz;ort;email;kanal;xta_reader;xta_service;tenant\n";
const JUR_HEADER: &str = "schluessel;einnahmeart;kennung;gueltig_ab;gueltig_bis\n";
const STREET_HEADER: &str = "Name;PostalCode;Locality;RegionalKey;Borough;Suburb\n";

fn authorities() -> String {
    let mut s = AUTH_HEADER.to_string();
    for (k, name) in [
        ("gem", "Gemeinde Eigen"),
        ("gem-grst", "Gemeinde Eigen Grundsteuer"),
        ("verband", "Verband Mitte"),
        ("kreis", "Kreiskasse"),
        ("kreis-kfz", "Kreis KFZ"),
        ("alt", "Alte Kasse"),
        ("neu", "Neue Kasse"),
        ("a", "Kasse A"),
        ("b", "Kasse B"),
    ] {
        s.push_str(&format!("{k};{name};Amtsweg;1;11111;Amtsort;{k}@example.org;post;;;\n"));
    }
    s
}

// Kreis 05999; Verband 0100 holds Eigenheim (05999001) and Nachbarn (05999002);
// Fernhof (05999003, Verband 0200) has no rules below the Kreis.
// Zeitstadt (06111000) changes authority on 2027-01-01.
const EIGEN: &str = "059990100001";
const NACHBARN: &str = "059990100002";
const FERNHOF: &str = "059990200003";
const ZEIT: &str = "061110000000";

fn jurisdictions() -> String {
    JUR_HEADER.to_string()
        + "05999001;*;gem;;\n\
           059990100001;GRST;gem-grst;;\n\
           059990100;*;verband;;\n\
           05999;*;kreis;;\n\
           05999;KFZ;kreis-kfz;;\n\
           06111000;*;alt;;2026-12-31\n\
           061110000000;*;neu;2027-01-01;\n"
}

fn streets() -> String {
    STREET_HEADER.to_string()
        + &format!(
            "Hohe Straße;11111;Eigenheim;{EIGEN};;\n\
             Lindenweg;11111;Eigenheim;{EIGEN};;\n\
             Grenzweg;11111;Eigenheim;{EIGEN};;\n\
             Grenzweg;11111;Eigenheim;{NACHBARN};;\n\
             Dorfstraße;22222;Nachbarn;{NACHBARN};;\n\
             Dorfstraße;22223;Nachbarn;{NACHBARN};;\n\
             Hofweg;33333;Fernhof;{FERNHOF};;\n\
             Marktplatz;44444;Zeitstadt;{ZEIT};;\n\
             Teilweg;55555;Teilort;{NACHBARN};;\n\
             Teilgasse;55555;Anderort;{FERNHOF};;\n"
        )
}

fn directory() -> Directory {
    Directory::from_csv(&authorities(), &jurisdictions(), Some(&streets()), &mut |_| {}).unwrap().0
}

fn day(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

fn q<'a>(plz: &'a str, ort: &'a str, strasse: Option<&'a str>, ea: Option<&'a str>) -> Query<'a> {
    Query { plz, ort, strasse, einnahmeart: ea, date: day("2026-06-01") }
}

/// The kennung found, "ambiguous:<kennungs or ags>" or "not_found".
fn answer(d: &Directory, query: &Query) -> String {
    match d.lookup(query) {
        LookupResult::Found { authority, .. } => authority.kennung.clone(),
        LookupResult::Ambiguous { candidates } => {
            let mut v: Vec<String> = candidates
                .iter()
                .map(|c| c.authority.map_or_else(|| c.municipality.ags.clone(), |a| a.kennung.clone()))
                .collect();
            v.sort();
            format!("ambiguous:{}", v.join(","))
        }
        LookupResult::NotFound => "not_found".into(),
    }
}

#[test]
fn street_plz_ort_first_then_plz_ort_then_a_unique_plz() {
    let d = directory();
    // street + PLZ + Ort
    assert_eq!(answer(&d, &q("11111", "Eigenheim", Some("Hohe Straße"), None)), "gem");
    // unknown street: PLZ + Ort — which here spans Eigenheim and Nachbarn (the Grenzweg)
    assert_eq!(answer(&d, &q("11111", "Eigenheim", Some("Unbekannt"), None)), "ambiguous:gem,verband");
    // PLZ + Ort unique
    assert_eq!(answer(&d, &q("22222", "Nachbarn", Some("Unbekannt"), None)), "verband");
    assert_eq!(answer(&d, &q("22222", "Nachbarn", None, None)), "verband");
    // Ort unknown: PLZ alone, used because it maps to exactly one municipality
    assert_eq!(answer(&d, &q("33333", "Irgendwo", None, None)), "kreis");
    // a PLZ alone that spans two municipalities is ambiguous, never a guess
    assert_eq!(answer(&d, &q("55555", "Irgendwo", None, None)), "ambiguous:kreis,verband");
    // but with a matching Ort it is not
    assert_eq!(answer(&d, &q("55555", "Teilort", None, None)), "verband");
    // nothing known
    assert_eq!(answer(&d, &q("99999", "Nirgendwo", Some("Weg"), None)), "not_found");
    assert_eq!(answer(&d, &q("1234", "Eigenheim", None, None)), "not_found");
    assert_eq!(answer(&d, &q("", "", None, None)), "not_found");
}

#[test]
fn most_specific_area_then_specific_einnahmeart() {
    let d = directory();
    let hohe = |ea| answer(&d, &q("11111", "Eigenheim", Some("Hohe Straße"), ea));
    // municipality (AGS `*` and ARS `GRST` are both municipality level)
    assert_eq!(hohe(None), "gem");
    assert_eq!(hohe(Some("GRST")), "gem-grst");
    // a Kreis-level specific rule does not beat a municipality `*` rule: area first
    assert_eq!(hohe(Some("KFZ")), "gem");
    // Gemeindeverband
    assert_eq!(answer(&d, &q("22222", "Nachbarn", None, Some("GRST"))), "verband");
    // Kreis, specific over `*`
    assert_eq!(answer(&d, &q("33333", "Fernhof", None, Some("GRST"))), "kreis");
    assert_eq!(answer(&d, &q("33333", "Fernhof", None, Some("KFZ"))), "kreis-kfz");

    match d.lookup(&q("33333", "Fernhof", Some("Hofweg 3"), Some("KFZ"))) {
        LookupResult::Found { authority, rule, ags } => {
            assert_eq!(authority.name, "Kreis KFZ");
            assert_eq!(ags, "05999003");
            assert_eq!(rule.ebene, Ebene::Kreis);
            assert_eq!(rule.schluessel, "05999");
            assert_eq!(rule.einnahmeart, "KFZ");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn rules_apply_only_on_their_dates() {
    let d = directory();
    let on = |date: &str| {
        answer(
            &d,
            &Query { plz: "44444", ort: "Zeitstadt", strasse: Some("Marktplatz"), einnahmeart: None, date: day(date) },
        )
    };
    assert_eq!(on("2020-01-01"), "alt");
    assert_eq!(on("2026-12-31"), "alt");
    assert_eq!(on("2027-01-01"), "neu");
    assert_eq!(on("2040-01-01"), "neu");

    // a rule that only starts in the future: nothing before it
    let j = JUR_HEADER.to_string() + "06111000;*;neu;2027-01-01;\n";
    let (d, _) = Directory::from_csv(&authorities(), &j, Some(&streets()), &mut |_| {}).unwrap();
    let at = |date| Query { plz: "44444", ort: "Zeitstadt", strasse: None, einnahmeart: None, date: day(date) };
    assert_eq!(answer(&d, &at("2026-12-31")), "not_found");
    assert_eq!(answer(&d, &at("2027-01-01")), "neu");
}

#[test]
fn ambiguity_is_reported_with_all_candidates() {
    let d = directory();
    // the same street, PLZ and Ort in two municipalities
    match d.lookup(&q("11111", "Eigenheim", Some("Grenzweg 7"), None)) {
        LookupResult::Ambiguous { candidates } => {
            let mut ags: Vec<&str> = candidates.iter().map(|c| c.municipality.ags.as_str()).collect();
            ags.sort();
            assert_eq!(ags, ["05999001", "05999002"]);
        }
        other => panic!("{other:?}"),
    }
    // the same street in two postcodes of one municipality: both kept, both unique
    assert_eq!(answer(&d, &q("22222", "Nachbarn", Some("Dorfstraße"), None)), "verband");
    assert_eq!(answer(&d, &q("22223", "Nachbarn", Some("Dorfstraße"), None)), "verband");

    // two equally specific rules naming different authorities
    let j = JUR_HEADER.to_string() + "05999003;*;a;;\n05999003;*;b;2026-01-01;\n";
    let (d2, summary) = Directory::from_csv(&authorities(), &j, Some(&streets()), &mut |_| {}).unwrap();
    assert_eq!(summary.warnings.iter().filter(|w| w.contains("overlapping")).count(), 1, "{:?}", summary.warnings);
    assert_eq!(answer(&d2, &q("33333", "Fernhof", None, None)), "ambiguous:a,b");
    let before = Query { date: day("2025-12-31"), ..q("33333", "Fernhof", None, None) };
    assert_eq!(answer(&d2, &before), "a");

    // the JSON
    let v = d.lookup(&q("11111", "Eigenheim", Some("Grenzweg"), None)).to_json();
    assert_eq!(v["status"], "ambiguous");
    assert_eq!(v["candidates"].as_array().unwrap().len(), 2);
    assert!(v["candidates"][0]["ags"].is_string());
    assert!(v["candidates"][0]["kennung"].is_string());
}

#[test]
fn the_import_summary_counts_and_warns_about_ambiguous_streets() {
    let (_, s) = Directory::from_csv(&authorities(), &jurisdictions(), Some(&streets()), &mut |_| {}).unwrap();
    assert_eq!(s.authorities, 9);
    assert_eq!(s.rules, 7);
    assert_eq!(s.streets, 10);
    assert_eq!(s.municipalities, 4);
    assert_eq!(s.ambiguous_streets, 1);
    assert!(s.warnings.iter().any(|w| w.contains("Grenzweg")), "{:?}", s.warnings);
}

#[test]
fn names_compare_after_normalisation() {
    let d = directory();
    for street in ["Hohe Str.", "hohe strasse", "HOHE  STRASSE", "Hohe Str. 12a", "Hohestraße 1", "Hohe-Straße"] {
        assert_eq!(answer(&d, &q("11111", "eigenheim", Some(street), None)), "gem", "{street}");
    }
    assert_eq!(answer(&d, &q(" 11111 ", "  EIGENHEIM ", Some("Lindenweg 4 a"), None)), "gem");
    assert_eq!(directory::normalize_street("Hohe Str."), directory::normalize_street("Hohe Straße"));
    assert_eq!(directory::normalize_place("Köln"), directory::normalize_place("KOELN"));
    assert_eq!(directory::normalize_place("Düsseldorf"), directory::normalize_place("Dusseldorf").replace("us", "ues"));
}

#[test]
fn the_sample_data_shows_the_documented_cases() {
    let d = Directory::sample();
    assert!(d.is_sample());
    let at =
        |plz, ort, s, ea, date: &str| answer(&d, &Query { plz, ort, strasse: s, einnahmeart: ea, date: day(date) });
    let t = "2026-06-01";
    assert_eq!(at("50667", "Köln", Some("Hohe Str. 1"), Some("GRST"), t), "vbh:053150000001");
    assert_eq!(at("50667", "Köln", Some("Hohe Straße"), None, t), "vbh:053150000000");
    assert_eq!(at("32694", "Dörentrup", Some("Mittelstraße"), None, t), "vbh:057660000000");
    assert_eq!(at("32657", "Lemgo", Some("Mittelstraße"), None, t), "vbh:057660440000");
    assert_eq!(at("32694", "Dörentrup", Some("Grenzweg"), None, t), "ambiguous:vbh:057660000000,vbh:057660440000");
    assert_eq!(at("24106", "Kiel", Some("Holtenauer Str."), None, t), "vbh:010020000000");
    assert_eq!(at("80331", "München", None, None, "2029-12-31"), "vbh:091620000000");
    assert_eq!(at("80331", "München", None, None, "2030-01-01"), "vbh:091620000001");
    for (plz, ort, k) in [
        ("40213", "Düsseldorf", "vbh:051110000000"),
        ("20095", "Hamburg", "vbh:020000000000"),
        ("01067", "Dresden", "vbh:146120000000"),
        ("10115", "Berlin", "vbh:110000000000"),
    ] {
        assert_eq!(at(plz, ort, None, None, t), k);
    }
    assert_eq!(d.tenants().map(|a| a.kennung.as_str()).collect::<Vec<_>>(), ["vbh:057660440000"]);
}

#[test]
fn the_xml_pair_maps_to_a_query_and_an_answer() {
    use amtsbote::xamtshilfe::{Anschrift, Code, Kanal, ZustaendigkeitAnfrage};
    let d = Directory::sample();
    let anfrage = ZustaendigkeitAnfrage {
        einnahmeart: Code { list_uri: "urn:x".into(), list_version_id: "1".into(), code: "GRST".into(), name: None },
        anschrift: Anschrift {
            strasse: Some("Hohe Str.".into()),
            hausnummer: Some("12".into()),
            postfach: None,
            postleitzahl: "50667".into(),
            ort: "Köln".into(),
            staat: None,
        },
    };
    let antwort = d.lookup(&Query::from_anfrage(&anfrage, day("2026-06-01"))).to_antwort();
    let b = antwort.behoerde.unwrap();
    assert_eq!(b.kennung, "vbh:053150000001");
    assert_eq!(b.kanal, Kanal::Xta);
    let none = d.lookup(&q("32694", "Dörentrup", Some("Grenzweg"), None)).to_antwort();
    assert!(none.behoerde.is_none());
}

#[test]
fn progress_is_reported_every_100000_rows() {
    let mut st = String::from(STREET_HEADER);
    for i in 0..200_001 {
        st.push_str(&format!("Weg {i};11111;Eigenheim;{EIGEN};;\n"));
    }
    let mut lines = Vec::new();
    let (d, s) =
        Directory::from_csv(&authorities(), &jurisdictions(), Some(&st), &mut |l| lines.push(l.to_string())).unwrap();
    assert_eq!(lines, ["streets.csv: 100000 rows", "streets.csv: 200000 rows"]);
    assert_eq!(s.streets, 200_001);
    assert_eq!(answer(&d, &q("11111", "Eigenheim", Some("Weg 150000"), None)), "gem");
}

// ---- imports ----

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

fn sources(dir: &Path, auth: &str, jur: &str, streets: Option<&str>) -> ImportSources {
    ImportSources {
        authorities: write(dir, "authorities.csv", auth),
        jurisdictions: write(dir, "jurisdictions.csv", jur),
        streets: streets.map(|s| write(dir, "streets.csv", s)),
        gv100: None,
    }
}

fn row_error(e: ImportError) -> (String, usize, usize, String, String) {
    match e {
        ImportError::Row { file, line, column, field, message } => (file, line, column, field, message),
        other => panic!("expected a row error, got {other}"),
    }
}

#[test]
fn import_errors_name_file_line_and_column() {
    let files = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let f = files.path();

    // kanal
    let bad = authorities().replacen(";post;", ";fax;", 2);
    let e = directory::import(data.path(), &sources(f, &bad, &jurisdictions(), None), &mut |_| {}).unwrap_err();
    let msg = e.to_string();
    let (file, line, column, field, _) = row_error(e);
    assert!(file.ends_with("authorities.csv"), "{file}");
    assert_eq!((line, column, field.as_str()), (2, 8, "kanal"), "{msg}");
    assert!(msg.contains("authorities.csv:2: column 8 (kanal)"), "{msg}");

    // a rule naming an unknown authority
    let jur = jurisdictions() + "05999;*;nobody;;\n";
    let e = directory::import(data.path(), &sources(f, &authorities(), &jur, None), &mut |_| {}).unwrap_err();
    let (file, line, column, field, message) = row_error(e);
    assert!(file.ends_with("jurisdictions.csv"));
    assert_eq!((line, column, field.as_str()), (9, 3, "kennung"));
    assert!(message.contains("nobody"));

    // bad dates, bad keys
    for (row, col) in
        [("05999;*;a;2027-13-01;", 4), ("05999;*;a;2027-01-02;2027-01-01", 5), ("0599;*;a;;", 1), ("05999;;a;;", 2)]
    {
        let jur = JUR_HEADER.to_string() + "05999;*;b;;\n" + row + "\n";
        let e = directory::import(data.path(), &sources(f, &authorities(), &jur, None), &mut |_| {}).unwrap_err();
        let (_, line, column, _, _) = row_error(e);
        assert_eq!((line, column), (3, col), "{row}");
    }

    // a street row: bad RegionalKey on line 4, missing field on line 3
    let st = STREET_HEADER.to_string() + &format!("A;11111;X;{EIGEN};;\nB;11111;X;12345;;\n");
    let e = directory::import(data.path(), &sources(f, &authorities(), &jurisdictions(), Some(&st)), &mut |_| {})
        .unwrap_err();
    let (file, line, column, field, _) = row_error(e);
    assert!(file.ends_with("streets.csv"));
    assert_eq!((line, column, field.as_str()), (3, 4, "RegionalKey"));
    let st = STREET_HEADER.to_string() + "A;11111;X\n";
    let e = directory::import(data.path(), &sources(f, &authorities(), &jurisdictions(), Some(&st)), &mut |_| {})
        .unwrap_err();
    assert_eq!(row_error(e).2, 4);

    // header
    let e = directory::import(
        data.path(),
        &sources(f, &authorities().replace("kanal", "channel"), &jurisdictions(), None),
        &mut |_| {},
    )
    .unwrap_err();
    let (_, line, column, _, _) = row_error(e);
    assert_eq!((line, column), (1, 8));

    // duplicate kennung
    let dup = authorities() + "a;Nochmal A;;;11111;X;;post;;;\n";
    let e = directory::import(data.path(), &sources(f, &dup, &jurisdictions(), None), &mut |_| {}).unwrap_err();
    assert_eq!(row_error(e).1, 11);

    // invalid UTF-8
    let p = f.join("latin1.csv");
    let mut bytes = AUTH_HEADER.as_bytes().to_vec();
    bytes.extend_from_slice(b"a;K\xf6ln;;;11111;X;;post;;;\n");
    std::fs::write(&p, bytes).unwrap();
    let src = ImportSources { authorities: p, ..sources(f, &authorities(), &jurisdictions(), None) };
    let e = directory::import(data.path(), &src, &mut |_| {}).unwrap_err();
    let (_, line, column, _, message) = row_error(e);
    assert_eq!((line, column), (2, 4), "{message}");

    // none of these stored anything
    assert!(directory::open(data.path()).unwrap().is_none());
    assert!(!directory::store_dir(data.path()).join("CURRENT").exists());
}

#[test]
fn a_failed_import_leaves_the_previous_data_in_place() {
    let files = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let shared = SharedDirectory::new(Directory::sample());
    let summary = shared
        .import(data.path(), &sources(files.path(), &authorities(), &jurisdictions(), Some(&streets())), &mut |_| {})
        .unwrap();
    assert_eq!(summary.rules, 7);
    let query = q("11111", "Eigenheim", Some("Hohe Straße"), None);
    assert_eq!(answer(&shared.get(), &query), "gem");

    let stored = std::fs::read_to_string(directory::store_dir(data.path()).join("CURRENT")).unwrap();
    let bad = jurisdictions() + "05999;*;nobody;;\n";
    let e = shared
        .import(data.path(), &sources(files.path(), &authorities(), &bad, Some(&streets())), &mut |_| {})
        .unwrap_err();
    assert!(e.is_data_error());
    // in memory and on disk: unchanged
    assert_eq!(answer(&shared.get(), &query), "gem");
    assert_eq!(std::fs::read_to_string(directory::store_dir(data.path()).join("CURRENT")).unwrap(), stored);
    let reopened = directory::open(data.path()).unwrap().unwrap();
    assert!(!reopened.is_sample());
    assert_eq!(answer(&reopened, &query), "gem");
    assert_eq!(reopened.street_rows(), 10);

    // a later, valid import replaces everything (the streets are gone now)
    shared.import(data.path(), &sources(files.path(), &authorities(), &jurisdictions(), None), &mut |_| {}).unwrap();
    assert_eq!(answer(&shared.get(), &query), "not_found");
    assert_eq!(answer(&directory::open(data.path()).unwrap().unwrap(), &query), "not_found");
    // at most two generations are kept
    let gens = std::fs::read_dir(directory::store_dir(data.path()))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("gen-"))
        .count();
    assert!(gens <= 2, "{gens}");
}

#[test]
fn gv100_municipality_records_are_read() {
    // record type 60: AGS at 1-based columns 11–18, Verband 19–22, name 23–72, PLZ 166–170
    fn record(ags: &str, verband: &str, name: &str, plz: &str) -> String {
        let mut line = format!("60{:8}{ags}{verband}{name:<50}", "20250101");
        while line.chars().count() < 165 {
            line.push(' ');
        }
        line.push_str(plz);
        line.push_str("     ");
        line
    }
    let gv = [
        format!("10{:8}05766{}", "20250101", " ".repeat(60)),
        record("05766044", "0044", "Lemgo, Alte Hansestadt", "32657"),
        record("05999003", "0200", "Fernhof", "33333"),
    ]
    .join("\n");
    let files = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let jur = JUR_HEADER.to_string() + "05766044;*;a;;\n05999;*;kreis;;\n";
    let mut src = sources(files.path(), &authorities(), &jur, None);
    src.gv100 = Some(write(files.path(), "gv100ad.txt", &gv));
    let (d, summary) = directory::import(data.path(), &src, &mut |_| {}).unwrap();
    assert_eq!(summary.municipalities, 2);
    assert_eq!(d.municipality("05766044").unwrap().ars, "057660044044");
    assert_eq!(d.municipality("057660044044").unwrap().name, "Lemgo, Alte Hansestadt");
    assert_eq!(answer(&d, &q("32657", "Lemgo", None, None)), "a");
    assert_eq!(answer(&d, &q("32657", "Lemgo, Alte Hansestadt", None, None)), "a");
    assert_eq!(answer(&d, &q("33333", "Fernhof", None, None)), "kreis");
    // stored and read back
    assert_eq!(answer(&directory::open(data.path()).unwrap().unwrap(), &q("32657", "Lemgo", None, None)), "a");

    // a bad AGS names line and 1-based column
    let bad = gv.replace("05999003", "0599900X");
    src.gv100 = Some(write(files.path(), "gv100ad.txt", &bad));
    let e = directory::import(data.path(), &src, &mut |_| {}).unwrap_err();
    let (_, line, column, _, _) = row_error(e);
    assert_eq!((line, column), (3, 11));
}

#[test]
fn lookups_keep_answering_while_imports_replace_the_directory() {
    // two versions: every street answers "a" in one and "b" in the other
    let files = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let jur = |k: &str| JUR_HEADER.to_string() + &format!("05999;*;{k};;\n");
    let dir_a = files.path().join("a");
    let dir_b = files.path().join("b");
    std::fs::create_dir_all(&dir_a).unwrap();
    std::fs::create_dir_all(&dir_b).unwrap();
    let src_a = sources(&dir_a, &authorities(), &jur("a"), Some(&streets()));
    let src_b = sources(&dir_b, &authorities(), &jur("b"), Some(&streets()));
    let shared = Arc::new(SharedDirectory::new(directory::import(data.path(), &src_a, &mut |_| {}).unwrap().0));
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let shared = shared.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut seen = [0usize; 2];
                while !stop.load(Ordering::Relaxed) {
                    let d = shared.get();
                    let a = answer(&d, &q("33333", "Fernhof", Some("Hofweg"), None));
                    let b = answer(&d, &q("22222", "Nachbarn", Some("Dorfstraße"), None));
                    // both answers from the same version, never a half-built one
                    assert!(a == b && (a == "a" || a == "b"), "{a} / {b}");
                    seen[(a == "b") as usize] += 1;
                }
                seen
            })
        })
        .collect();
    for i in 0..10 {
        let src = if i % 2 == 0 { &src_b } else { &src_a };
        shared.import(data.path(), src, &mut |_| {}).unwrap();
        // a failing import in between changes nothing
        let bad = sources(files.path(), &authorities(), &(jur("a") + "x;*;a;;\n"), None);
        assert!(shared.import(data.path(), &bad, &mut |_| {}).is_err());
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = [0usize; 2];
    for r in readers {
        let seen = r.join().unwrap();
        total[0] += seen[0];
        total[1] += seen[1];
    }
    assert!(total[0] > 0 && total[1] > 0, "{total:?}");
    // the last import (i = 9) was A, and that is what is stored
    assert_eq!(answer(&directory::open(data.path()).unwrap().unwrap(), &q("33333", "Fernhof", None, None)), "a");
}

#[test]
fn a_running_process_picks_up_an_import_made_by_another() {
    let files = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let shared = SharedDirectory::new(directory::open_or_sample(data.path()).unwrap());
    assert!(shared.get().is_sample());
    assert!(!shared.reload_if_changed(data.path()).unwrap());
    // "another process": a plain import, not through `shared`
    let (imported, _) = directory::import(
        data.path(),
        &sources(files.path(), &authorities(), &jurisdictions(), Some(&streets())),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(imported.generation(), directory::stored_generation(data.path()).unwrap().as_deref());
    assert!(shared.reload_if_changed(data.path()).unwrap());
    assert!(!shared.get().is_sample());
    assert_eq!(answer(&shared.get(), &q("11111", "Eigenheim", Some("Hohe Straße"), None)), "gem");
    assert!(!shared.reload_if_changed(data.path()).unwrap());
}

#[test]
fn a_comma_separated_quoted_street_file_is_read_too() {
    let st = format!(
        "\u{feff}\"Name\",\"PostalCode\",\"Locality\",\"RegionalKey\",\"Borough\",\"Suburb\"\r\n\"Hohe Straße\",\"11111\",\"Eigenheim\",\"{EIGEN}\",\"\",\"\"\r\n"
    );
    let files = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let (d, s) = directory::import(
        data.path(),
        &sources(files.path(), &authorities(), &jurisdictions(), Some(&st)),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(s.streets, 1);
    assert_eq!(answer(&d, &q("11111", "Eigenheim", Some("Hohe Str."), None)), "gem");
}

// ---- the command line ----

fn amtsbote(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_amtsbote"))
        .args(args)
        .env("AMTSBOTE_DATA_DIR", data_dir)
        .env_remove("AMTSBOTE_CONFIG")
        .output()
        .unwrap()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
}

#[test]
fn cli_lookup_answers_from_the_sample_data_before_any_import() {
    let data = tempfile::tempdir().unwrap();
    let out = amtsbote(
        data.path(),
        &[
            "directory",
            "lookup",
            "--plz",
            "50667",
            "--ort",
            "Köln",
            "--strasse",
            "Hohe Straße",
            "--einnahmeart",
            "GRST",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v = json(&out);
    assert_eq!(v["status"], "found");
    assert_eq!(v["kennung"], "vbh:053150000001");
    assert_eq!(v["kanal"], "xta");
    assert_eq!(v["ags"], "05315000");
    assert_eq!(v["anschrift"]["postleitzahl"], "50667");
    assert_eq!(v["anschrift"]["ort"], "Köln");
    assert_eq!(v["rule"]["einnahmeart"], "GRST");
    assert!(v["name"].as_str().unwrap().contains("Beispiel"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sample data"));

    let out = amtsbote(
        data.path(),
        &["directory", "lookup", "--plz", "32694", "--ort", "Dörentrup", "--strasse", "Grenzweg"],
    );
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out);
    assert_eq!(v["status"], "ambiguous");
    assert_eq!(v["candidates"].as_array().unwrap().len(), 2);

    let out = amtsbote(data.path(), &["directory", "lookup", "--plz", "99999", "--ort", "Nirgendwo"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json(&out), serde_json::json!({"status": "not_found"}));

    let out =
        amtsbote(data.path(), &["directory", "lookup", "--plz", "80331", "--ort", "München", "--date", "2030-01-01"]);
    assert_eq!(json(&out)["kennung"], "vbh:091620000001");

    let out = amtsbote(data.path(), &["directory", "lookup", "--plz", "80331"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn cli_import_then_lookup_in_a_later_process() {
    let files = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let src = sources(files.path(), &authorities(), &jurisdictions(), Some(&streets()));
    let p = |p: &Path| p.to_str().unwrap().to_string();
    let (a, j, s) = (p(&src.authorities), p(&src.jurisdictions), p(src.streets.as_ref().unwrap()));

    let out =
        amtsbote(data.path(), &["directory", "import", "--authorities", &a, "--jurisdictions", &j, "--streets", &s]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("9 authorities") && err.contains("7 rules") && err.contains("10 street rows"), "{err}");
    assert!(err.contains("warning:") && err.contains("Grenzweg"), "{err}");

    let out = amtsbote(
        data.path(),
        &[
            "directory",
            "lookup",
            "--plz",
            "11111",
            "--ort",
            "Eigenheim",
            "--strasse",
            "Hohe Str. 3",
            "--einnahmeart",
            "GRST",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v = json(&out);
    assert_eq!(v["kennung"], "gem-grst");
    assert_eq!(v["kanal"], "post");
    assert_eq!(v["ags"], "05999001");
    assert_eq!(v["rule"]["schluessel"], EIGEN);
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));

    // a bad import: exit 1, file:line: column on stderr, the previous data still answers
    let bad = write(files.path(), "bad.csv", &(jurisdictions() + "05999;*;nobody;;\n"));
    let out =
        amtsbote(data.path(), &["directory", "import", "--authorities", &a, "--jurisdictions", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.csv:9: column 3 (kennung)") && err.contains("nothing was changed"), "{err}");
    let out = amtsbote(
        data.path(),
        &["directory", "lookup", "--plz", "11111", "--ort", "Eigenheim", "--strasse", "Hohe Straße"],
    );
    assert_eq!(json(&out)["kennung"], "gem");

    // a missing file: exit 2
    let out =
        amtsbote(data.path(), &["directory", "import", "--authorities", "/nonexistent/a.csv", "--jurisdictions", &j]);
    assert_eq!(out.status.code(), Some(2));
}
