//! The typed message model: one struct per element, named as in the XML.
//!
//! Field names follow the XML (serde renames); `@name` is an attribute, `$text` an element's
//! text. Local elements are unqualified, as in XÖV. Reading checks the form of every value
//! (amounts, dates, UUIDs); the rules that need more than one value live in `validate`.

use serde::{Deserialize, Serialize};

use super::values::{Cents, Date, MessageUuid, Timestamp};

/// An XÖV code element: `<x listURI=".." listVersionID=".."><code>..</code><name>..</name></x>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Code {
    #[serde(rename = "@listURI")]
    pub list_uri: String,
    #[serde(rename = "@listVersionID")]
    pub list_version_id: String,
    pub code: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub name: Option<String>,
}

/// An amount with its currency (`<hauptforderung waehrung="EUR">412.50</hauptforderung>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Betrag {
    #[serde(rename = "@waehrung")]
    pub waehrung: String,
    #[serde(rename = "$text")]
    pub wert: Cents,
}

/// Late-payment surcharges, owed up to the date in `bis`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Saeumniszuschlaege {
    #[serde(rename = "@bis", skip_serializing_if = "Option::is_none", default)]
    pub bis: Option<Date>,
    #[serde(rename = "@waehrung")]
    pub waehrung: String,
    #[serde(rename = "$text")]
    pub wert: Cents,
}

/// The XÖV message header `nachrichtenkopf.g2g`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nachrichtenkopf {
    #[serde(rename = "identifikation.nachricht")]
    pub identifikation: Identifikation,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub leser: Option<Teilnehmer>,
    pub autor: Teilnehmer,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identifikation {
    #[serde(rename = "nachrichtenUUID")]
    pub nachrichten_uuid: MessageUuid,
    pub nachrichtentyp: Code,
    pub erstellungszeitpunkt: Timestamp,
}

/// A party of the header (`leser`, `autor`): directory service, identifier, name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Teilnehmer {
    pub verzeichnisdienst: Code,
    /// `praefix:kennung`, e.g. `vbh:057660440000`.
    pub kennung: String,
    pub name: String,
}

/// A postal address. Either street (with house number) or a post-office box.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Anschrift {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub strasse: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub hausnummer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub postfach: Option<String>,
    pub postleitzahl: String,
    pub ort: String,
    /// ISO 3166-1 alpha-2; Germany when absent.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub staat: Option<String>,
}

impl Anschrift {
    /// The line above postcode and place: "Musterweg 3", "Musterweg", or "Postfach 12 34";
    /// `None` when the address has neither street nor post-office box.
    pub fn street_line(&self) -> Option<String> {
        match (&self.strasse, &self.hausnummer, &self.postfach) {
            (Some(s), Some(n), _) => Some(format!("{s} {n}")),
            (Some(s), None, _) => Some(s.clone()),
            (None, _, Some(p)) => Some(format!("Postfach {p}")),
            (None, _, None) => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sachbearbeiter {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub telefon: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub email: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bankverbindung {
    pub iban: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub bic: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub kontoinhaber: Option<String>,
}

/// The requesting authority as the request describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErsuchendeBehoerde {
    pub kennung: String,
    pub name: String,
    pub anschrift: Anschrift,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sachbearbeiter: Option<Sachbearbeiter>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub bankverbindung: Option<Bankverbindung>,
}

/// A debtor: a person (`familienname`, `vorname`) or a firm (`firma`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schuldner {
    /// The address may go to the requested authority only (Auskunftssperre).
    #[serde(rename = "@auskunftssperre", default)]
    pub auskunftssperre: bool,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub firma: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub familienname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub vorname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub geburtsname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub geburtsdatum: Option<Date>,
    pub anschrift: Anschrift,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Zeitraum {
    pub beginn: Date,
    pub ende: Date,
}

/// One claim: kind (Einnahmeart), payment reference, period and amounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forderung {
    pub einnahmeart: Code,
    pub kassenzeichen: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub zeitraum: Option<Zeitraum>,
    pub hauptforderung: Betrag,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub saeumniszuschlaege: Option<Saeumniszuschlaege>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub kosten: Option<Betrag>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub faelligkeit: Option<Date>,
}

impl Forderung {
    /// Main claim + surcharges + costs; `None` on overflow.
    pub fn summe(&self) -> Option<Cents> {
        let mut sum = self.hauptforderung.wert;
        if let Some(s) = &self.saeumniszuschlaege {
            sum = sum.checked_add(s.wert)?;
        }
        if let Some(k) = &self.kosten {
            sum = sum.checked_add(k.wert)?;
        }
        Some(sum)
    }
}

/// An attached document, base64 in the message. Kept as the text it arrived in and decoded
/// only on demand ([`Anhang::decode`]), so a large attachment is held once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Anhang {
    #[serde(rename = "@dateiname")]
    pub dateiname: String,
    #[serde(rename = "@mimeType")]
    pub mime_type: String,
    #[serde(rename = "$text", default)]
    pub inhalt: String,
}

/// What later messages use to name the request they are about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bezug {
    #[serde(rename = "nachrichtenUUID")]
    pub nachrichten_uuid: MessageUuid,
    pub aktenzeichen: String,
}

/// Declares a message root: the product attributes every header-carrying root has, the
/// header, and the one body element.
macro_rules! nachricht {
    ($(#[$doc:meta])* $name:ident { $body:ident : $body_ty:ty }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        pub struct $name {
            #[serde(rename = "@produkt")]
            pub produkt: String,
            #[serde(rename = "@produkthersteller")]
            pub produkthersteller: String,
            #[serde(rename = "@produktversion", skip_serializing_if = "Option::is_none", default)]
            pub produktversion: Option<String>,
            #[serde(rename = "@standard")]
            pub standard: String,
            #[serde(rename = "@version")]
            pub version: String,
            /// A test message: never processed as production.
            #[serde(rename = "@test", skip_serializing_if = "Option::is_none", default)]
            pub test: Option<bool>,
            #[serde(rename = "nachrichtenkopf.g2g")]
            pub kopf: Nachrichtenkopf,
            pub $body: $body_ty,
        }
    };
}

// ---------------------------------------------------------------------------------------------
// The messages. Each root holds the product attributes, the header and one body element.

nachricht!(
    /// `vollstreckungshilfe.Ersuchen.0101`: the request.
    ErsuchenNachricht { ersuchen: Ersuchen });

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ersuchen {
    pub aktenzeichen: String,
    #[serde(rename = "ersuchendeBehoerde")]
    pub ersuchende_behoerde: ErsuchendeBehoerde,
    #[serde(default)]
    pub schuldner: Vec<Schuldner>,
    #[serde(default)]
    pub forderung: Vec<Forderung>,
    pub gesamtbetrag: Betrag,
    #[serde(default)]
    pub massnahme: Vec<Code>,
    #[serde(rename = "angeordnetVon")]
    pub angeordnet_von: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub bemerkung: Option<String>,
    #[serde(default)]
    pub anhang: Vec<Anhang>,
}

nachricht!(
    /// `vollstreckungshilfe.Ruecknahme.0102`: the requester withdraws the request.
    RuecknahmeNachricht { ruecknahme: Ruecknahme });

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuecknahmeGrund {
    /// The debtor paid.
    Bezahlt,
    /// The claim was cancelled.
    Storniert,
    Sonstiges,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ruecknahme {
    pub bezug: Bezug,
    pub grund: RuecknahmeGrund,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub bemerkung: Option<String>,
}

nachricht!(
    /// `vollstreckungshilfe.Aenderung.0103`: changed amounts or data of a request.
    AenderungNachricht { aenderung: Aenderung });

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Aenderung {
    pub bezug: Bezug,
    /// Replaces the debtors of the request when present.
    #[serde(default)]
    pub schuldner: Vec<Schuldner>,
    /// Replaces the claims of the request when present; then `gesamtbetrag` is required.
    #[serde(default)]
    pub forderung: Vec<Forderung>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub gesamtbetrag: Option<Betrag>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub bemerkung: Option<String>,
}

nachricht!(
    /// `vollstreckungshilfe.Sachstandsanfrage.0104`: the requester asks how things stand.
    SachstandsanfrageNachricht { sachstandsanfrage: Sachstandsanfrage });

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sachstandsanfrage {
    pub bezug: Bezug,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub frage: Option<String>,
}

nachricht!(
    /// `vollstreckungshilfe.Rueckmeldung.0201`: the result of the enforcement.
    RueckmeldungNachricht { rueckmeldung: Rueckmeldung });

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ergebnis {
    /// Collected in full.
    Erledigt,
    /// Collected in part.
    Teilweise,
    /// Nothing collected.
    Erfolglos,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rueckmeldung {
    pub bezug: Bezug,
    pub ergebnis: Ergebnis,
    #[serde(rename = "beigetriebenerBetrag", skip_serializing_if = "Option::is_none", default)]
    pub beigetriebener_betrag: Option<Betrag>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub bemerkung: Option<String>,
    #[serde(default)]
    pub anhang: Vec<Anhang>,
}

nachricht!(
    /// `vollstreckungshilfe.Abgabe.0202`: forwarded to the authority that is responsible.
    AbgabeNachricht { abgabe: Abgabe });

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Abgabe {
    pub bezug: Bezug,
    #[serde(rename = "neueBehoerde")]
    pub neue_behoerde: Behoerde,
    pub begruendung: String,
}

/// An authority named in an answer: identifier, name, address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Behoerde {
    pub kennung: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub anschrift: Option<Anschrift>,
}

nachricht!(
    /// `vollstreckungshilfe.Rueckgabe.0203`: returned unprocessed, with the reason.
    RueckgabeNachricht { rueckgabe: Rueckgabe });

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rueckgabe {
    pub bezug: Bezug,
    pub begruendung: String,
    #[serde(default)]
    pub anhang: Vec<Anhang>,
}

/// `vollstreckungshilfe.ZustaendigkeitAnfrage.001`: who is responsible for this address and
/// kind of claim? No header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZustaendigkeitAnfrage {
    pub einnahmeart: Code,
    pub anschrift: Anschrift,
}

/// The channel by which an authority takes requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kanal {
    Xta,
    Post,
}

/// `vollstreckungshilfe.ZustaendigkeitAntwort.002`: the responsible authority, or nothing
/// when none was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZustaendigkeitAntwort {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub behoerde: Option<ZustaendigeBehoerde>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZustaendigeBehoerde {
    pub kennung: String,
    pub name: String,
    pub anschrift: Anschrift,
    pub kanal: Kanal,
}
