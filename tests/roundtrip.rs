//! Property test: any request the model can hold is written and read back to the same value.

use amtsbote::xamtshilfe::*;
use proptest::prelude::*;

/// Text as it appears in messages: letters with umlauts, digits, punctuation, and the five
/// characters XML must escape. No leading or trailing space (XML readers trim it).
fn text() -> impl Strategy<Value = String> {
    "[A-Za-zÄÖÜäöüß0-9][A-Za-zÄÖÜäöüß0-9 .,;:/()&<>'\"§€-]{0,30}[A-Za-zäöüß0-9.)]"
}

/// A part of a person's name: DIN 91379 type A (letters, space, apostrophe, hyphen, full stop,
/// comma; no digits or other signs).
fn person() -> impl Strategy<Value = String> {
    "[A-Za-zÄÖÜäöüßéçñ][A-Za-zÄÖÜäöüßéçñ '.,-]{0,30}[A-Za-zäöüß.]"
}

fn opt<T: std::fmt::Debug + Clone>(s: impl Strategy<Value = T>) -> impl Strategy<Value = Option<T>> {
    proptest::option::of(s)
}

fn cents() -> impl Strategy<Value = Cents> {
    (0i64..1_000_000_000).prop_map(Cents)
}

fn date() -> impl Strategy<Value = Date> {
    (1900i32..2100, 1u32..=12, 1u32..=28).prop_map(|(y, m, d)| Date(chrono::NaiveDate::from_ymd_opt(y, m, d).unwrap()))
}

fn code() -> impl Strategy<Value = Code> {
    ("urn:[a-z:-]{1,20}", "[0-9.]{1,5}", "[A-Z0-9]{1,6}", opt(text()))
        .prop_map(|(list_uri, list_version_id, code, name)| Code { list_uri, list_version_id, code, name })
}

fn betrag() -> impl Strategy<Value = Betrag> {
    cents().prop_map(|wert| Betrag { waehrung: "EUR".into(), wert })
}

fn anschrift() -> impl Strategy<Value = Anschrift> {
    (opt(text()), opt("[0-9]{1,3}[a-z]?"), opt("[0-9]{4,6}"), "[0-9]{5}", text(), opt("[A-Z]{2}")).prop_map(
        |(strasse, hausnummer, postfach, postleitzahl, ort, staat)| Anschrift { strasse, hausnummer, postfach, postleitzahl, ort, staat },
    )
}

fn teilnehmer() -> impl Strategy<Value = Teilnehmer> {
    (code(), "[a-z]{2,4}:[0-9]{8,12}", text()).prop_map(|(verzeichnisdienst, kennung, name)| Teilnehmer { verzeichnisdienst, kennung, name })
}

fn schuldner() -> impl Strategy<Value = Schuldner> {
    (any::<bool>(), opt(text()), opt(person()), opt(person()), opt(person()), opt(date()), anschrift()).prop_map(
        |(auskunftssperre, firma, familienname, vorname, geburtsname, geburtsdatum, anschrift)| Schuldner {
            auskunftssperre,
            firma,
            familienname,
            vorname,
            geburtsname,
            geburtsdatum,
            anschrift,
        },
    )
}

fn forderung() -> impl Strategy<Value = Forderung> {
    (
        code(),
        text(),
        opt((date(), date()).prop_map(|(beginn, ende)| Zeitraum { beginn, ende })),
        betrag(),
        opt((opt(date()), cents()).prop_map(|(bis, wert)| Saeumniszuschlaege { bis, waehrung: "EUR".into(), wert })),
        opt(betrag()),
        opt(date()),
    )
        .prop_map(|(einnahmeart, kassenzeichen, zeitraum, hauptforderung, saeumniszuschlaege, kosten, faelligkeit)| Forderung {
            einnahmeart,
            kassenzeichen,
            zeitraum,
            hauptforderung,
            saeumniszuschlaege,
            kosten,
            faelligkeit,
        })
}

fn anhang() -> impl Strategy<Value = Anhang> {
    ("[a-z]{1,10}\\.pdf", proptest::collection::vec(any::<u8>(), 0..200)).prop_map(|(dateiname, bytes)| {
        use base64::Engine;
        Anhang { dateiname, mime_type: "application/pdf".into(), inhalt: base64::engine::general_purpose::STANDARD.encode(bytes) }
    })
}

fn ersuchen() -> impl Strategy<Value = ErsuchenNachricht> {
    let kopf = (any::<u128>(), code(), (0i64..4_000_000_000, -12i32..14), opt(teilnehmer()), teilnehmer()).prop_map(
        |(uuid, nachrichtentyp, (secs, offset_h), leser, autor)| {
            let offset = chrono::FixedOffset::east_opt(offset_h * 3600).unwrap();
            let at = chrono::DateTime::from_timestamp_millis(secs * 1000 + 123).unwrap().with_timezone(&offset);
            Nachrichtenkopf {
                identifikation: Identifikation {
                    nachrichten_uuid: MessageUuid(uuid::Uuid::from_u128(uuid)),
                    nachrichtentyp,
                    erstellungszeitpunkt: Timestamp(at),
                },
                leser,
                autor,
            }
        },
    );
    let behoerde = (
        "[a-z]{2,4}:[0-9]{8,12}",
        text(),
        anschrift(),
        opt("[a-z]{1,8}@[a-z]{1,8}\\.de"),
        opt((text(), opt(text()), opt("[a-z]{1,8}@[a-z]{1,8}\\.de")).prop_map(|(name, telefon, email)| Sachbearbeiter { name, telefon, email })),
        opt(("DE[0-9]{20}", opt("[A-Z]{6}[A-Z0-9]{2}"), opt(text())).prop_map(|(iban, bic, kontoinhaber)| Bankverbindung { iban, bic, kontoinhaber })),
    )
        .prop_map(|(kennung, name, anschrift, email, sachbearbeiter, bankverbindung)| ErsuchendeBehoerde {
            kennung,
            name,
            anschrift,
            email,
            sachbearbeiter,
            bankverbindung,
        });
    let body = (
        text(),
        behoerde,
        proptest::collection::vec(schuldner(), 1..3),
        proptest::collection::vec(forderung(), 1..4),
        betrag(),
        proptest::collection::vec(code(), 1..4),
        text(),
        opt(text()),
        proptest::collection::vec(anhang(), 0..3),
    )
        .prop_map(|(aktenzeichen, ersuchende_behoerde, schuldner, forderung, gesamtbetrag, massnahme, angeordnet_von, bemerkung, anhang)| Ersuchen {
            aktenzeichen,
            ersuchende_behoerde,
            schuldner,
            forderung,
            gesamtbetrag,
            massnahme,
            angeordnet_von,
            bemerkung,
            anhang,
        });
    (text(), text(), opt("[0-9.]{1,6}"), opt(any::<bool>()), kopf, body).prop_map(
        |(produkt, produkthersteller, produktversion, test, kopf, ersuchen)| ErsuchenNachricht {
            produkt,
            produkthersteller,
            produktversion,
            standard: "XAmtshilfe".into(),
            version: "1.1.0".into(),
            test,
            kopf,
            ersuchen,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn a_written_request_reads_back_to_the_same_value(m in ersuchen()) {
        let message = Message::Ersuchen(Box::new(m));
        let xml = message.to_xml("xAmtshilfe110").unwrap();
        let back = read::parse(xml.as_bytes(), &ReaderConfig::default());
        prop_assert!(back.is_ok(), "{:?}\n{}", back, xml);
        prop_assert_eq!(back.unwrap(), message.clone());
        // The serde reader, built independently from the same model, reads the same value.
        prop_assert_eq!(read::parse_with_serde(xml.as_bytes(), &ReaderConfig::default()).unwrap(), message);
    }

    #[test]
    fn a_written_answer_reads_back(kennung in "[a-z]{2,4}:[0-9]{8,12}", name in text(), anschrift in anschrift(), post in any::<bool>(), empty in any::<bool>()) {
        let behoerde = (!empty).then_some(ZustaendigeBehoerde { kennung, name, anschrift, kanal: if post { Kanal::Post } else { Kanal::Xta } });
        let message = Message::ZustaendigkeitAntwort(Box::new(ZustaendigkeitAntwort { behoerde }));
        let xml = message.to_xml("xAmtshilfe110").unwrap();
        prop_assert_eq!(read::parse(xml.as_bytes(), &ReaderConfig::default()).unwrap(), message);
    }

    /// Whatever bytes arrive, reading answers with a value or a reason; it never panics.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let _ = Checker::with_defaults().check(&bytes);
    }

    /// Damaging a valid message anywhere gives a value or a reason, never a panic; and
    /// whatever passes the check, the serde reader reads to the same value (the single-pass
    /// reader is the stricter one: it also checks element order).
    #[test]
    fn damaged_requests_never_panic_and_readers_agree(cut in 0usize..4000, pos in 0usize..4000, byte in any::<u8>()) {
        let mut bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/messages/ersuchen.xml")).unwrap();
        let len = bytes.len();
        bytes[pos % len] = byte;
        bytes.truncate(cut % (len + 1));
        // Readers may differ on what validation refuses anyway (whitespace-only text reads as
        // "" here and as the spaces through serde); on accepted messages they must agree.
        if let Ok(m) = Checker::with_defaults().check(&bytes) {
            prop_assert_eq!(read::parse_with_serde(&bytes, &ReaderConfig::default()), Ok(m));
        }
    }
}

#[test]
fn both_readers_read_every_example_alike() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/messages");
    for entry in std::fs::read_dir(dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let config = ReaderConfig::default();
        assert_eq!(read::parse(&bytes, &config).unwrap(), read::parse_with_serde(&bytes, &config).unwrap());
    }
}
