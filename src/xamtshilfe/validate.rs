//! The rules a message must meet beyond its structure: sums, minimum amount, code lists,
//! dates, IBAN checksum, identifiers, attachments. Every violation names the element (as a
//! path from the root) and the rule, and all violations of a message are reported at once.

use std::fmt;

use base64::Engine;
use serde::Serialize;

use super::codelist::{CodeList, CodeLists, URI_EINNAHMEART, URI_MASSNAHME, URI_NACHRICHTENTYP, URI_VERZEICHNISDIENST};
use super::model::*;
use super::values::{Cents, check_iban, clip};
use super::{Message, MessageKind};

/// The rule a violation breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// A required part is missing or empty.
    Required,
    /// An amount is negative, zero where it must not be, or in a currency other than EUR.
    Amount,
    /// `gesamtbetrag` is not the sum of the claims.
    Sum,
    /// The total is below the configured minimum.
    MinimumAmount,
    /// A code is not in its code list, or names the wrong list or version.
    CodeList,
    /// A date is impossible or out of order.
    Date,
    Iban,
    /// An identifier, postcode, e-mail address or similar has the wrong form.
    Format,
    Attachment,
    /// The header does not fit the message (type code, reader).
    Header,
    /// Not a rule of its own: the count of the violations beyond those listed.
    Limit,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Required => "required",
            Rule::Amount => "amount",
            Rule::Sum => "sum",
            Rule::MinimumAmount => "minimum-amount",
            Rule::CodeList => "code-list",
            Rule::Date => "date",
            Rule::Iban => "iban",
            Rule::Format => "format",
            Rule::Attachment => "attachment",
            Rule::Header => "header",
            Rule::Limit => "limit",
        }
    }
}

/// One broken rule: where, which rule, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub path: String,
    pub rule: Rule,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} [rule: {}]", self.path, self.message, self.rule.as_str())
    }
}

/// Checks messages against the code lists and the configured minimum amount.
#[derive(Debug, Clone)]
pub struct Validator {
    pub codelists: CodeLists,
    /// Requests for less are rejected (§ 250 AO practice: 36.00 EUR).
    pub min_amount: Cents,
    /// How far in the future `erstellungszeitpunkt` may lie (clock skew), in seconds.
    pub max_clock_skew_secs: i64,
    /// Violations listed for one message; beyond them only a count ([`DEFAULT_MAX_REASONS`]).
    pub max_reasons: usize,
}

/// Reasons listed for one message by default: the first 100, then "… and N more".
pub const DEFAULT_MAX_REASONS: usize = 100;

impl Validator {
    pub fn new(codelists: CodeLists) -> Self {
        Validator { codelists, min_amount: Cents(3600), max_clock_skew_secs: 24 * 3600, max_reasons: DEFAULT_MAX_REASONS }
    }

    /// Every broken rule, in document order: the first `max_reasons`, and then one more entry
    /// that counts the rest (rule `limit`), so a message with 200,000 broken rules gets an
    /// answer of a few kilobytes.
    pub fn validate(&self, message: &Message) -> Vec<Violation> {
        let mut c = Ctx { v: self, out: Vec::new(), path: Vec::new(), more: 0 };
        if let Some(env) = message.envelope() {
            c.header(message.kind(), env.kopf);
        }
        match message {
            Message::Ersuchen(m) => c.at("ersuchen", |c| c.ersuchen(&m.ersuchen, &m.kopf)),
            Message::Ruecknahme(m) => c.at("ruecknahme", |c| {
                c.bezug(&m.ruecknahme.bezug);
                c.opt_text("bemerkung", m.ruecknahme.bemerkung.as_deref());
            }),
            Message::Aenderung(m) => c.at("aenderung", |c| c.aenderung(&m.aenderung, &m.kopf)),
            Message::Sachstandsanfrage(m) => c.at("sachstandsanfrage", |c| {
                c.bezug(&m.sachstandsanfrage.bezug);
                c.opt_text("frage", m.sachstandsanfrage.frage.as_deref());
            }),
            Message::Rueckmeldung(m) => c.at("rueckmeldung", |c| c.rueckmeldung(&m.rueckmeldung)),
            Message::Abgabe(m) => c.at("abgabe", |c| {
                c.bezug(&m.abgabe.bezug);
                c.at("neueBehoerde", |c| c.behoerde(&m.abgabe.neue_behoerde));
                c.text("begruendung", &m.abgabe.begruendung);
            }),
            Message::Rueckgabe(m) => c.at("rueckgabe", |c| {
                c.bezug(&m.rueckgabe.bezug);
                c.text("begruendung", &m.rueckgabe.begruendung);
                c.attachments(&m.rueckgabe.anhang);
            }),
            Message::ZustaendigkeitAnfrage(m) => {
                c.code("einnahmeart", &m.einnahmeart, &self.codelists.einnahmeart, URI_EINNAHMEART);
                c.at("anschrift", |c| c.anschrift(&m.anschrift));
            }
            Message::ZustaendigkeitAntwort(m) => {
                if let Some(b) = &m.behoerde {
                    c.at("behoerde", |c| {
                        c.kennung("kennung", &b.kennung);
                        c.text("name", &b.name);
                        c.at("anschrift", |c| c.anschrift(&b.anschrift));
                    });
                }
            }
        }
        if c.more > 0 {
            let message = format!("… and {} more not listed (the first {} are)", thousands(c.more), c.out.len());
            c.out.push(Violation { path: "/".into(), rule: Rule::Limit, message });
        }
        c.out
    }
}

/// 199900 → "199,900".
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// The walk through one message: where we are, and what we found.
struct Ctx<'v> {
    v: &'v Validator,
    out: Vec<Violation>,
    /// Where we are: element names, with the 1-based index of repeated ones. Rendered only
    /// when a violation is reported, so a valid message allocates nothing for paths.
    path: Vec<(&'static str, Option<usize>)>,
    /// Violations found beyond `max_reasons`: counted, not listed.
    more: usize,
}

impl Ctx<'_> {
    fn at(&mut self, step: &'static str, f: impl FnOnce(&mut Self)) {
        self.path.push((step, None));
        f(self);
        self.path.pop();
    }

    /// Visits repeated elements, each as `name[n]` (1-based, as in XPath and in the paths of
    /// structural errors).
    fn each<T>(&mut self, name: &'static str, items: &[T], mut f: impl FnMut(&mut Self, &T)) {
        for (i, item) in items.iter().enumerate() {
            self.path.push((name, Some(i + 1)));
            f(self, item);
            self.path.pop();
        }
    }

    fn report(&mut self, element: Option<&str>, rule: Rule, message: String) {
        if self.out.len() >= self.v.max_reasons {
            self.more += 1;
            return;
        }
        let mut path = String::new();
        for (i, (name, index)) in self.path.iter().enumerate() {
            if i > 0 {
                path.push('/');
            }
            path.push_str(name);
            if let Some(n) = index {
                path.push_str(&format!("[{n}]"));
            }
        }
        if let Some(e) = element {
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(e);
        }
        if path.is_empty() {
            path.push('/');
        }
        self.out.push(Violation { path, rule, message });
    }

    /// A value quoted in a reason; withheld inside a debtor and in the address a Zuständigkeit
    /// request asks about (personal data stays out of reports and logs).
    fn show(&self, value: &str) -> String {
        let about_debtor = self.path.iter().any(|(name, _)| *name == "schuldner") || self.path.first().is_some_and(|(name, _)| *name == "anschrift");
        if about_debtor { "(withheld: debtor data)".into() } else { clip(value) }
    }

    fn text(&mut self, element: &str, value: &str) {
        if value.trim().is_empty() {
            self.report(Some(element), Rule::Required, "must not be empty".into());
        }
    }

    fn opt_text(&mut self, element: &str, value: Option<&str>) {
        if let Some(v) = value {
            self.text(element, v);
        }
    }

    /// Checks a code element against its list; `element` is empty when the path already ends
    /// at the code element.
    fn code(&mut self, element: &str, code: &Code, list: &CodeList, uri: &str) {
        let element = (!element.is_empty()).then_some(element);
        if code.list_uri != uri {
            self.report(element, Rule::CodeList, format!("listURI is '{}', expected '{uri}'", clip(&code.list_uri)));
        } else if code.list_version_id != list.version {
            self.report(
                element,
                Rule::CodeList,
                format!("code list version '{}' is not loaded (loaded: {})", clip(&code.list_version_id), list.version),
            );
        } else if !list.contains(code.code.trim()) {
            let known = list.codes.keys().map(String::as_str).collect::<Vec<_>>().join(", ");
            self.report(
                element,
                Rule::CodeList,
                format!("unknown code '{}' (known: {known})", clip(&code.code)),
            );
        }
    }

    fn kennung(&mut self, element: &str, value: &str) {
        let ok = value.split_once(':').is_some_and(|(prefix, id)| {
            !prefix.is_empty()
                && prefix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && !id.is_empty()
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        });
        if !ok {
            self.report(Some(element), Rule::Format, format!("'{}' is not an identifier of the form praefix:kennung (e.g. vbh:057660440000)", clip(value)));
        }
    }

    fn email(&mut self, element: &str, value: &str) {
        let ok = value.split_once('@').is_some_and(|(l, d)| {
            !l.is_empty() && d.contains('.') && !d.starts_with('.') && !d.ends_with('.') && !value.contains(char::is_whitespace)
        });
        if !ok {
            // Not quoted: an address is often a person's name.
            self.report(Some(element), Rule::Format, "is not an e-mail address (local part, @, domain with a dot)".into());
        }
    }

    fn header(&mut self, kind: MessageKind, kopf: &Nachrichtenkopf) {
        self.at("nachrichtenkopf.g2g", |c| {
            c.at("identifikation.nachricht", |c| {
                let typ = &kopf.identifikation.nachrichtentyp;
                let before = c.out.len();
                c.code("nachrichtentyp", typ, &c.v.codelists.nachrichtentyp, URI_NACHRICHTENTYP);
                if c.out.len() == before && typ.code.trim() != kind.nachrichtentyp() {
                    c.report(
                        Some("nachrichtentyp"),
                        Rule::Header,
                        format!("code '{}' does not match the root element {kind} (expected '{}')", clip(&typ.code), kind.nachrichtentyp()),
                    );
                }
                let created = kopf.identifikation.erstellungszeitpunkt.0;
                let limit = chrono::Utc::now() + chrono::Duration::seconds(c.v.max_clock_skew_secs);
                if created > limit {
                    c.report(Some("erstellungszeitpunkt"), Rule::Date, format!("{} lies in the future", kopf.identifikation.erstellungszeitpunkt));
                }
            });
            match &kopf.leser {
                Some(leser) => c.at("leser", |c| c.teilnehmer(leser)),
                // A request may leave the reader to amtsbote; every later message answers a
                // known party.
                None if kind != MessageKind::Ersuchen => c.report(Some("leser"), Rule::Required, "missing: this message must name its reader".into()),
                None => {}
            }
            c.at("autor", |c| c.teilnehmer(&kopf.autor));
        });
    }

    fn teilnehmer(&mut self, t: &Teilnehmer) {
        self.code("verzeichnisdienst", &t.verzeichnisdienst, &self.v.codelists.verzeichnisdienst, URI_VERZEICHNISDIENST);
        self.kennung("kennung", &t.kennung);
        self.text("name", &t.name);
    }

    fn bezug(&mut self, b: &Bezug) {
        self.at("bezug", |c| c.text("aktenzeichen", &b.aktenzeichen));
    }

    fn behoerde(&mut self, b: &Behoerde) {
        self.kennung("kennung", &b.kennung);
        self.text("name", &b.name);
        if let Some(a) = &b.anschrift {
            self.at("anschrift", |c| c.anschrift(a));
        }
    }

    fn anschrift(&mut self, a: &Anschrift) {
        let staat = a.staat.as_deref().map(str::trim).unwrap_or("DE");
        if staat.len() != 2 || !staat.bytes().all(|b| b.is_ascii_uppercase()) {
            self.report(Some("staat"), Rule::Format, format!("'{}' is not an ISO 3166 country code (e.g. DE)", self.show(staat)));
        }
        let plz = a.postleitzahl.trim();
        if staat == "DE" && (plz.len() != 5 || !plz.bytes().all(|b| b.is_ascii_digit())) {
            self.report(Some("postleitzahl"), Rule::Format, format!("'{}' is not a German postcode (five digits)", self.show(plz)));
        } else {
            self.text("postleitzahl", plz);
        }
        self.text("ort", &a.ort);
        match (&a.strasse, &a.postfach) {
            (None, None) => self.report(None, Rule::Required, "needs strasse or postfach".into()),
            (Some(s), _) => self.text("strasse", s),
            (None, Some(p)) => self.text("postfach", p),
        }
        self.opt_text("hausnummer", a.hausnummer.as_deref());
    }

    fn schuldner(&mut self, s: &Schuldner, kopf: &Nachrichtenkopf) {
        match (&s.familienname, &s.firma) {
            (None, None) => self.report(None, Rule::Required, "needs familienname (a person) or firma (a firm)".into()),
            _ => {
                self.opt_text("familienname", s.familienname.as_deref());
                self.opt_text("firma", s.firma.as_deref());
            }
        }
        self.opt_text("vorname", s.vorname.as_deref());
        if let Some(d) = s.geburtsdatum
            && d.0 > kopf.identifikation.erstellungszeitpunkt.0.date_naive()
        {
            self.report(Some("geburtsdatum"), Rule::Date, format!("{} lies after the message was created", self.show(&d.to_string())));
        }
        self.at("anschrift", |c| c.anschrift(&s.anschrift));
    }

    fn betrag(&mut self, element: &str, currency: &str, value: Cents, must_be_positive: bool) {
        if currency.trim() != "EUR" {
            self.report(Some(element), Rule::Amount, format!("currency '{}' is not supported (EUR only)", clip(currency)));
        }
        if value.0 < 0 || (must_be_positive && value.0 == 0) {
            let what = if must_be_positive { "greater than zero" } else { "zero or more" };
            self.report(Some(element), Rule::Amount, format!("{value} must be {what}"));
        }
    }

    fn forderung(&mut self, f: &Forderung) {
        self.code("einnahmeart", &f.einnahmeart, &self.v.codelists.einnahmeart, URI_EINNAHMEART);
        self.text("kassenzeichen", &f.kassenzeichen);
        if let Some(z) = &f.zeitraum
            && z.beginn > z.ende
        {
            self.report(Some("zeitraum"), Rule::Date, format!("beginn {} lies after ende {}", z.beginn, z.ende));
        }
        self.betrag("hauptforderung", &f.hauptforderung.waehrung, f.hauptforderung.wert, true);
        if let Some(s) = &f.saeumniszuschlaege {
            self.betrag("saeumniszuschlaege", &s.waehrung, s.wert, false);
            if let (Some(bis), Some(faellig)) = (s.bis, f.faelligkeit)
                && bis < faellig
            {
                self.report(Some("saeumniszuschlaege/@bis"), Rule::Date, format!("{bis} lies before faelligkeit {faellig}"));
            }
        }
        if let Some(k) = &f.kosten {
            self.betrag("kosten", &k.waehrung, k.wert, false);
        }
    }

    /// Checks the claims and that `gesamtbetrag` is their sum; returns the sum.
    fn claims_and_total(&mut self, claims: &[Forderung], total: &Betrag) -> Option<Cents> {
        self.each("forderung", claims, |c, f| c.forderung(f));
        self.betrag("gesamtbetrag", &total.waehrung, total.wert, true);
        let sum = claims.iter().try_fold(Cents(0), |acc, f| acc.checked_add(f.summe()?));
        match sum {
            Some(sum) if sum != total.wert => {
                self.report(
                    Some("gesamtbetrag"),
                    Rule::Sum,
                    format!("{} given, but the claims add up to {sum} (hauptforderung + saeumniszuschlaege + kosten)", total.wert),
                );
            }
            None => self.report(Some("gesamtbetrag"), Rule::Sum, "the claims add up to more than can be counted".into()),
            _ => {}
        }
        sum
    }

    fn ersuchen(&mut self, e: &Ersuchen, kopf: &Nachrichtenkopf) {
        self.text("aktenzeichen", &e.aktenzeichen);
        self.at("ersuchendeBehoerde", |c| {
            let b = &e.ersuchende_behoerde;
            c.kennung("kennung", &b.kennung);
            c.text("name", &b.name);
            c.at("anschrift", |c| c.anschrift(&b.anschrift));
            if let Some(mail) = &b.email {
                c.email("email", mail);
            }
            if let Some(s) = &b.sachbearbeiter {
                c.at("sachbearbeiter", |c| {
                    c.text("name", &s.name);
                    if let Some(mail) = &s.email {
                        c.email("email", mail);
                    }
                });
            }
            if let Some(bank) = &b.bankverbindung {
                c.at("bankverbindung", |c| {
                    if let Err(e) = check_iban(&bank.iban) {
                        c.report(Some("iban"), Rule::Iban, e);
                    }
                    if let Some(bic) = &bank.bic {
                        let bic = bic.trim();
                        let ok = (bic.len() == 8 || bic.len() == 11)
                            && bic.bytes().take(6).all(|b| b.is_ascii_uppercase())
                            && bic.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
                        if !ok {
                            c.report(Some("bic"), Rule::Format, format!("'{}' is not a BIC (8 or 11 characters)", clip(bic)));
                        }
                    }
                });
            }
        });
        if e.schuldner.is_empty() {
            self.report(Some("schuldner"), Rule::Required, "missing: a request names at least one debtor".into());
        }
        self.each("schuldner", &e.schuldner, |c, s| c.schuldner(s, kopf));
        if e.forderung.is_empty() {
            self.report(Some("forderung"), Rule::Required, "missing: a request names at least one claim".into());
        }
        if let Some(sum) = self.claims_and_total(&e.forderung, &e.gesamtbetrag)
            && sum == e.gesamtbetrag.wert
            && sum < self.v.min_amount
        {
            self.report(
                Some("gesamtbetrag"),
                Rule::MinimumAmount,
                format!("{sum} EUR is below the minimum of {} EUR for a request", self.v.min_amount),
            );
        }
        if e.massnahme.is_empty() {
            self.report(Some("massnahme"), Rule::Required, "missing: a request names at least one measure".into());
        }
        self.each("massnahme", &e.massnahme, |c, m| {
            c.code("", m, &c.v.codelists.massnahme, URI_MASSNAHME);
            let index = c.path.last().and_then(|(_, i)| *i).unwrap_or(1);
            if e.massnahme[..index - 1].iter().any(|earlier| earlier.code.trim() == m.code.trim()) {
                c.report(None, Rule::CodeList, format!("measure '{}' is named twice", clip(&m.code)));
            }
        });
        self.text("angeordnetVon", &e.angeordnet_von);
        self.opt_text("bemerkung", e.bemerkung.as_deref());
        self.attachments(&e.anhang);
    }

    fn aenderung(&mut self, a: &Aenderung, kopf: &Nachrichtenkopf) {
        self.bezug(&a.bezug);
        self.each("schuldner", &a.schuldner, |c, s| c.schuldner(s, kopf));
        match (&a.gesamtbetrag, a.forderung.is_empty()) {
            (Some(total), false) => {
                self.claims_and_total(&a.forderung, total);
            }
            (None, false) => self.report(Some("gesamtbetrag"), Rule::Required, "missing: changed claims need the new total".into()),
            (Some(_), true) => self.report(Some("forderung"), Rule::Required, "missing: a new total needs the changed claims".into()),
            (None, true) => {}
        }
        if a.schuldner.is_empty() && a.forderung.is_empty() && a.bemerkung.is_none() {
            self.report(None, Rule::Required, "changes nothing: needs schuldner, forderung or bemerkung".into());
        }
        self.opt_text("bemerkung", a.bemerkung.as_deref());
    }

    fn rueckmeldung(&mut self, r: &Rueckmeldung) {
        self.bezug(&r.bezug);
        match (r.ergebnis, &r.beigetriebener_betrag) {
            (Ergebnis::Erledigt | Ergebnis::Teilweise, None) => {
                self.report(Some("beigetriebenerBetrag"), Rule::Required, "missing: a result of erledigt or teilweise states the amount collected".into());
            }
            (Ergebnis::Erledigt | Ergebnis::Teilweise, Some(b)) => self.betrag("beigetriebenerBetrag", &b.waehrung, b.wert, true),
            (Ergebnis::Erfolglos, Some(b)) if b.wert.0 != 0 => {
                self.report(Some("beigetriebenerBetrag"), Rule::Amount, format!("{} collected contradicts the result erfolglos", b.wert));
            }
            (Ergebnis::Erfolglos, _) => {}
        }
        self.opt_text("bemerkung", r.bemerkung.as_deref());
        self.attachments(&r.anhang);
    }

    fn attachments(&mut self, items: &[Anhang]) {
        self.each("anhang", items, |c, a| {
            let name = a.dateiname.trim();
            if name.is_empty() || name.len() > 255 || name.contains(['/', '\\', '\0']) || name == "." || name == ".." {
                c.report(Some("@dateiname"), Rule::Attachment, format!("'{}' is not a plain file name", clip(name)));
            }
            if a.mime_type != "application/pdf" {
                c.report(Some("@mimeType"), Rule::Attachment, format!("'{}' is not accepted (application/pdf only)", clip(&a.mime_type)));
            }
            match a.check_base64() {
                Err(e) => c.report(None, Rule::Attachment, e),
                Ok(0) => c.report(None, Rule::Attachment, "is empty".into()),
                Ok(_) if a.mime_type == "application/pdf" && !a.starts_with(b"%PDF-") => {
                    c.report(None, Rule::Attachment, "is not a PDF (does not start with %PDF-)".into());
                }
                Ok(_) => {}
            }
        });
    }
}

impl Anhang {
    /// Checks the base64 text without decoding it: alphabet, padding, length. Whitespace
    /// (line breaks) is allowed, as in `xs:base64Binary`. Returns the decoded length.
    pub fn check_base64(&self) -> Result<usize, String> {
        /// 1: base64 alphabet, 2: whitespace, 0: anything else ('=' is handled apart).
        const CLASS: [u8; 256] = {
            let mut t = [0u8; 256];
            let mut i = 0;
            while i < 256 {
                let b = i as u8;
                t[i] = if b.is_ascii_alphanumeric() || b == b'+' || b == b'/' {
                    1
                } else if matches!(b, b' ' | b'\t' | b'\r' | b'\n') {
                    2
                } else {
                    0
                };
                i += 1;
            }
            t
        };
        /// The alphabet as range checks, which the compiler can run on 32 bytes at once.
        fn alphabet(b: u8) -> bool {
            b.is_ascii_uppercase() | b.is_ascii_lowercase() | b.is_ascii_digit() | (b == b'+') | (b == b'/')
        }
        let bytes = self.inhalt.as_bytes();
        let mut count = 0usize;
        let mut i = 0;
        // The body: alphabet and whitespace, until the first '='. Runs of 32 alphabet bytes
        // (nearly all of an attachment) are checked as a block.
        while i < bytes.len() {
            if let Some(block) = bytes.get(i..i + 32)
                && block.iter().fold(true, |ok, &b| ok & alphabet(b))
            {
                i += 32;
                count += 32;
                continue;
            }
            match CLASS[bytes[i] as usize] {
                1 => count += 1,
                2 => {}
                _ => break,
            }
            i += 1;
        }
        // The tail: at most two '=' and whitespace.
        let mut padding = 0usize;
        for (j, &b) in bytes[i..].iter().enumerate() {
            match b {
                b'=' if padding < 2 => padding += 1,
                _ if CLASS[b as usize] == 2 => {}
                _ => return Err(format!("is not base64: unexpected character at position {}", i + j + 1)),
            }
        }
        let total = count + padding;
        if !total.is_multiple_of(4) {
            return Err(format!("is not base64: {total} characters is not a multiple of 4 (truncated?)"));
        }
        Ok(total / 4 * 3 - padding)
    }

    /// Whether the decoded content starts with `prefix` (decodes only the first characters).
    pub fn starts_with(&self, prefix: &[u8]) -> bool {
        let mut head = [0u8; 64];
        let mut len = 0;
        let want = prefix.len().div_ceil(3) * 4;
        for b in self.inhalt.bytes().filter(|b| !b.is_ascii_whitespace()) {
            if len == want.min(head.len()) {
                break;
            }
            head[len] = b;
            len += 1;
        }
        let mut out = [0u8; 48];
        base64::engine::general_purpose::STANDARD
            .decode_slice(&head[..len], &mut out)
            .is_ok_and(|n| out[..n].starts_with(prefix))
    }

    /// Decodes the attachment. The only place its bytes are materialised.
    pub fn decode(&self) -> Result<Vec<u8>, base64::DecodeError> {
        let compact: Vec<u8> = if self.inhalt.bytes().any(|b| b.is_ascii_whitespace()) {
            self.inhalt.bytes().filter(|b| !b.is_ascii_whitespace()).collect()
        } else {
            return base64::engine::general_purpose::STANDARD.decode(&self.inhalt);
        };
        base64::engine::general_purpose::STANDARD.decode(compact)
    }
}
