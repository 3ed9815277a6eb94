//! xAmtshilfe messages: the typed model, reading (with the guards against hostile input),
//! writing, and the validation rules beyond structure.
//!
//! The way in is [`Checker::check`]: bytes → [`Message`] or a [`Rejection`] whose reasons
//! name the element and the rule. [`read::parse`] reads in one pass with every limit against
//! hostile input (size, XML characters, DOCTYPE, depth, attributes, the lengths and DIN 91379
//! characters of [`fields`], the caps on repeated elements), then [`validate`] checks what a
//! schema cannot (sums, code lists, checksums, dates). [`read::parse_with_serde`] is a second,
//! independent reader the tests compare it against.

pub mod codelist;
mod cursor;
pub mod din91379;
pub mod fields;
pub mod model;
pub mod read;
pub mod validate;
pub mod values;
pub mod write;

use std::fmt;

use serde::Serialize;

pub use codelist::{CodeList, CodeLists};
pub use model::*;
pub use read::{Limits, ReadError, ReaderConfig};
pub use validate::{Rule, Validator, Violation};
pub use values::{Cents, Date, MessageUuid, Timestamp};

/// The kinds of message amtsbote knows, told apart by the root element's local name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    Ersuchen,
    Ruecknahme,
    Aenderung,
    Sachstandsanfrage,
    Rueckmeldung,
    Abgabe,
    Rueckgabe,
    ZustaendigkeitAnfrage,
    ZustaendigkeitAntwort,
}

impl MessageKind {
    pub const ALL: [MessageKind; 9] = [
        MessageKind::Ersuchen,
        MessageKind::Ruecknahme,
        MessageKind::Aenderung,
        MessageKind::Sachstandsanfrage,
        MessageKind::Rueckmeldung,
        MessageKind::Abgabe,
        MessageKind::Rueckgabe,
        MessageKind::ZustaendigkeitAnfrage,
        MessageKind::ZustaendigkeitAntwort,
    ];

    /// The local name of the root element, e.g. `vollstreckungshilfe.Ersuchen.0101`.
    pub fn root_name(self) -> &'static str {
        match self {
            MessageKind::Ersuchen => "vollstreckungshilfe.Ersuchen.0101",
            MessageKind::Ruecknahme => "vollstreckungshilfe.Ruecknahme.0102",
            MessageKind::Aenderung => "vollstreckungshilfe.Aenderung.0103",
            MessageKind::Sachstandsanfrage => "vollstreckungshilfe.Sachstandsanfrage.0104",
            MessageKind::Rueckmeldung => "vollstreckungshilfe.Rueckmeldung.0201",
            MessageKind::Abgabe => "vollstreckungshilfe.Abgabe.0202",
            MessageKind::Rueckgabe => "vollstreckungshilfe.Rueckgabe.0203",
            MessageKind::ZustaendigkeitAnfrage => "vollstreckungshilfe.ZustaendigkeitAnfrage.001",
            MessageKind::ZustaendigkeitAntwort => "vollstreckungshilfe.ZustaendigkeitAntwort.002",
        }
    }

    /// The code of this kind in the `nachrichtentyp` code list (the root name's suffix).
    pub fn nachrichtentyp(self) -> &'static str {
        let root = self.root_name();
        &root[root.rfind('.').map_or(0, |i| i + 1)..]
    }

    pub fn from_root_name(local_name: &str) -> Option<MessageKind> {
        MessageKind::ALL.into_iter().find(|k| k.root_name() == local_name)
    }

    /// Whether messages of this kind carry `nachrichtenkopf.g2g`.
    pub fn has_header(self) -> bool {
        !matches!(self, MessageKind::ZustaendigkeitAnfrage | MessageKind::ZustaendigkeitAntwort)
    }
}

impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.root_name())
    }
}

/// A message of any kind, as read or to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Ersuchen(Box<ErsuchenNachricht>),
    Ruecknahme(Box<RuecknahmeNachricht>),
    Aenderung(Box<AenderungNachricht>),
    Sachstandsanfrage(Box<SachstandsanfrageNachricht>),
    Rueckmeldung(Box<RueckmeldungNachricht>),
    Abgabe(Box<AbgabeNachricht>),
    Rueckgabe(Box<RueckgabeNachricht>),
    ZustaendigkeitAnfrage(Box<ZustaendigkeitAnfrage>),
    ZustaendigkeitAntwort(Box<ZustaendigkeitAntwort>),
}

/// The parts every header-carrying message shares, for code that does not care which it is.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    pub kopf: &'a Nachrichtenkopf,
    pub test: Option<bool>,
}

impl Message {
    pub fn kind(&self) -> MessageKind {
        match self {
            Message::Ersuchen(_) => MessageKind::Ersuchen,
            Message::Ruecknahme(_) => MessageKind::Ruecknahme,
            Message::Aenderung(_) => MessageKind::Aenderung,
            Message::Sachstandsanfrage(_) => MessageKind::Sachstandsanfrage,
            Message::Rueckmeldung(_) => MessageKind::Rueckmeldung,
            Message::Abgabe(_) => MessageKind::Abgabe,
            Message::Rueckgabe(_) => MessageKind::Rueckgabe,
            Message::ZustaendigkeitAnfrage(_) => MessageKind::ZustaendigkeitAnfrage,
            Message::ZustaendigkeitAntwort(_) => MessageKind::ZustaendigkeitAntwort,
        }
    }

    /// Header and test flag; `None` for the two directory messages, which have no header.
    pub fn envelope(&self) -> Option<Envelope<'_>> {
        let (kopf, test) = match self {
            Message::Ersuchen(m) => (&m.kopf, m.test),
            Message::Ruecknahme(m) => (&m.kopf, m.test),
            Message::Aenderung(m) => (&m.kopf, m.test),
            Message::Sachstandsanfrage(m) => (&m.kopf, m.test),
            Message::Rueckmeldung(m) => (&m.kopf, m.test),
            Message::Abgabe(m) => (&m.kopf, m.test),
            Message::Rueckgabe(m) => (&m.kopf, m.test),
            Message::ZustaendigkeitAnfrage(_) | Message::ZustaendigkeitAntwort(_) => return None,
        };
        Some(Envelope { kopf, test })
    }

    /// The message's own UUID, when it has a header.
    pub fn uuid(&self) -> Option<MessageUuid> {
        self.envelope().map(|e| e.kopf.identifikation.nachrichten_uuid)
    }

    /// `test="true"` on the root: never processed as production.
    pub fn is_test(&self) -> bool {
        self.envelope().and_then(|e| e.test).unwrap_or(false)
    }
}

/// Why a message was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The bytes are not a readable message of a known kind (hostile, broken, wrong kind).
    #[error("{0}")]
    Unreadable(#[from] ReadError),
    /// The message was read but breaks one or more rules.
    #[error("{}", join_violations(.0))]
    Invalid(Vec<Violation>),
}

impl Rejection {
    /// Every reason, one per entry, each naming the element and the rule.
    pub fn reasons(&self) -> Vec<String> {
        match self {
            Rejection::Unreadable(e) => vec![e.to_string()],
            Rejection::Invalid(v) => v.iter().map(ToString::to_string).collect(),
        }
    }
}

fn join_violations(v: &[Violation]) -> String {
    v.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// Reads and validates messages with one configuration: the accepted namespaces, the limits,
/// the code lists and the minimum amount.
#[derive(Debug, Clone)]
pub struct Checker {
    pub reader: ReaderConfig,
    pub validator: Validator,
}

impl Checker {
    pub fn new(reader: ReaderConfig, validator: Validator) -> Self {
        Checker { reader, validator }
    }

    /// The built-in configuration: namespace `xAmtshilfe110`, 40 MB, the shipped code lists,
    /// 36.00 EUR minimum.
    pub fn with_defaults() -> Self {
        Checker::new(ReaderConfig::default(), Validator::new(CodeLists::builtin()))
    }

    /// Reads and validates one message.
    pub fn check(&self, bytes: &[u8]) -> Result<Message, Rejection> {
        self.check_to_store(bytes).map(|(message, _)| message)
    }

    /// [`Checker::check`], and the payload to store when the message's texts arrived outside
    /// Unicode NFC: the document in NFC (markup is ASCII, so only the texts change), so that
    /// what is kept and sent on holds the same names as the model. `None`: store the bytes.
    pub fn check_to_store(&self, bytes: &[u8]) -> Result<(Message, Option<Vec<u8>>), Rejection> {
        use unicode_normalization::UnicodeNormalization;
        let (message, normalised) = read::parse_noting_nfc(bytes, &self.reader)?;
        let violations = self.validator.validate(&message);
        if !violations.is_empty() {
            return Err(Rejection::Invalid(violations));
        }
        // Rare, and so worth a second read to be sure the NFC document holds the same message.
        let payload = normalised
            .then(|| read::decode(bytes, &self.reader).ok().map(|text| text.nfc().collect::<String>().into_bytes()))
            .flatten()
            .filter(|nfc| read::parse(nfc, &self.reader).is_ok_and(|again| again == message));
        Ok((message, payload))
    }
}
